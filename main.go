// Command ots-ota updates the firmware of ESP32 devices over the network.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ots-ota/ots-ota/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cmd.Execute(ctx, os.Args[1:], cmd.System())
	stop()
	os.Exit(code)
}
