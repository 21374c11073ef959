//go:build windows

package cmd

import "syscall"

// The socket errors netError explains, as Winsock numbers them. Go's
// syscall.EADDRINUSE and friends are invented values on Windows that no
// socket call returns, so matching them would never fire.
// https://learn.microsoft.com/windows/win32/winsock/windows-sockets-error-codes-2
const (
	wsaeacces        syscall.Errno = 10013
	wsaemfile        syscall.Errno = 10024
	wsaeaddrinuse    syscall.Errno = 10048
	wsaeaddrnotavail syscall.Errno = 10049
	wsaenobufs       syscall.Errno = 10055 // what Windows says when it runs out of sockets
)

var (
	errnoAddrInUse    = []syscall.Errno{wsaeaddrinuse}
	errnoAddrNotAvail = []syscall.Errno{wsaeaddrnotavail}
	errnoAccess       = []syscall.Errno{wsaeacces, syscall.ERROR_ACCESS_DENIED}
	errnoTooManyFiles = []syscall.Errno{wsaemfile, wsaenobufs}
)
