//go:build windows

package cmd

import (
	"os"

	"golang.org/x/sys/windows"
)

// enableVT turns on the console's handling of escape sequences (Windows 10
// and later), which the progress view moves the cursor with; restore puts
// the console's mode back as it was, so the shell that ran ots-ota gets
// its console as it left it. ok is false on a console that has none: that
// one gets the lines.
func enableVT(f *os.File) (restore func(), ok bool) {
	h := windows.Handle(f.Fd())
	var mode uint32
	if err := windows.GetConsoleMode(h, &mode); err != nil {
		return func() {}, false
	}
	if mode&windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING != 0 {
		return func() {}, true
	}
	if windows.SetConsoleMode(h, mode|windows.ENABLE_VIRTUAL_TERMINAL_PROCESSING) != nil {
		return func() {}, false
	}
	return func() { _ = windows.SetConsoleMode(h, mode) }, true
}
