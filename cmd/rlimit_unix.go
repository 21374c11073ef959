//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package cmd

import "syscall"

// openFileLimit is the soft RLIMIT_NOFILE (Go raises it to the hard limit at
// start-up, so this is what the process may really open).
func openFileLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
