//go:build windows

package broker

import (
	"syscall"
	"testing"
)

// Winsock's numbers, which syscall.ECONNREFUSED and ECONNRESET do not
// match on Windows.
func TestNetWordsWindows(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  string
	}{
		{10061, "connection refused"}, // WSAECONNREFUSED
		{10054, "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"}, // WSAECONNRESET
		{10053, "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"}, // WSAECONNABORTED
	} {
		if got := netWords(&dialError{opErr("connect", tc.errno)}); got != tc.want {
			t.Errorf("errno %d: %q, want %q", tc.errno, got, tc.want)
		}
	}
}
