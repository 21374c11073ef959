//go:build !linux

package core

import "net"

// holdListener is Linux-only (a full accept queue drops SYNs there).
// Elsewhere a rebooting device closes its listeners and connection attempts
// are refused; docs/device-behaviour.md says so.
func holdListener(*net.TCPListener) (release func() error, ok bool) { return nil, false }
