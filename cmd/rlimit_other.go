//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package cmd

// openFileLimit is unknown here (Windows has no such per-process limit on sockets).
func openFileLimit() (uint64, bool) { return 0, false }
