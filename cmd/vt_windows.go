//go:build windows

package cmd

import (
	"os"

	"golang.org/x/sys/windows"
)

// enableVT turns on the console's handling of escape sequences (Windows 10
// and later), which the progress view moves the cursor with. It reports
// false on a console that has none: that one gets the lines.
func enableVT(f *os.File) bool {
	h := windows.Handle(f.Fd())
	var mode uint32
	if err := windows.GetConsoleMode(h, &mode); err != nil {
		return false
	}
	return windows.SetConsoleMode(h, mode|windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING) == nil
}
