package cmd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// TestNetError checks the explanations with this OS's own errno numbers
// (errno_unix.go, errno_windows.go): on Windows Winsock's, not the invented
// syscall.EADDRINUSE that no socket call returns.
func TestNetError(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 11, 2), Port: 3232}
	for _, tc := range []struct {
		name  string
		errno error
		want  string
	}{
		{"in use", errnoAddrInUse[0], "the address is in use"},
		{"not available", errnoAddrNotAvail[0], "on macOS add loopback aliases"},
		{"access", errnoAccess[0], "permission denied"},
		{"files", errnoTooManyFiles[0], "too many open files"},
		{"other", errors.New("boom"), ": boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("start device: %w", &net.OpError{Op: "listen", Net: "tcp", Addr: addr, Err: os.NewSyscallError("bind", tc.errno)})
			msg, ok := netError(err)
			if !ok || !strings.HasPrefix(msg, "cannot listen on tcp 127.0.11.2:3232: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("netError = %q, %v; want it to contain %q", msg, ok, tc.want)
			}
		})
	}
	if _, ok := netError(errors.New("not a socket")); ok {
		t.Error("netError claimed an error that is not about a socket")
	}
}
