package broker

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

// opErr wraps errno as the net package does for a dial or a read.
func opErr(op string, errno error) error {
	return &net.OpError{Op: op, Net: "tcp", Err: &os.SyscallError{Syscall: op, Err: errno}}
}

// The words of a refused or broken connection come from the system's
// error numbers as the rest of ots-ota reads them (detect), so that
// Windows' own numbers give the same words (words_windows_test.go).
func TestNetWords(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&dialError{opErr("connect", syscall.ECONNREFUSED)}, "connection refused"},
		{opErr("read", syscall.ECONNRESET), "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"},
		{opErr("read", syscall.ECONNABORTED), "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"},
		{opErr("write", syscall.EPIPE), "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"},
		{fmt.Errorf("read: %w", io.EOF), "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"},
	} {
		if got := netWords(tc.err); got != tc.want {
			t.Errorf("netWords(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// A link that worked and was closed gets no hint about the URL: the
// listener was right a moment ago.
func TestLostWords(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{opErr("read", syscall.ECONNRESET), "the broker closed the connection"},
		{fmt.Errorf("read: %w", io.EOF), "the broker closed the connection"},
		{&dialError{opErr("connect", syscall.ECONNREFUSED)}, "connection refused"},
	} {
		if got := lostWords(tc.err); got != tc.want {
			t.Errorf("lostWords(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
