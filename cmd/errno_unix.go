//go:build !windows

package cmd

import "syscall"

// The socket errors netError explains, as this OS numbers them.
var (
	errnoAddrInUse    = []syscall.Errno{syscall.EADDRINUSE}
	errnoAddrNotAvail = []syscall.Errno{syscall.EADDRNOTAVAIL}
	errnoAccess       = []syscall.Errno{syscall.EACCES, syscall.EPERM}
	errnoTooManyFiles = []syscall.Errno{syscall.EMFILE, syscall.ENFILE}
)
