//go:build !linux

package simtest

// SilentOrRefused: elsewhere a rebooting device refuses (holdListener).
const SilentOrRefused = "refused"
