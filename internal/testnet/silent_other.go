//go:build !linux

package testnet

import "testing"

// SilentAddr skips the test: a silent loopback port needs Linux's listen
// backlog behaviour.
func SilentAddr(t testing.TB) string {
	t.Skip("a silent loopback port needs Linux's listen backlog behaviour")
	return ""
}
