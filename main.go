// Command ots-ota updates the firmware of ESP32 devices over the network.
package main

import (
	"os"

	"github.com/ots-ota/ots-ota/cmd"
)

func main() { os.Exit(cmd.Main()) }
