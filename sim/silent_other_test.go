//go:build !linux

package sim

// silentOrRefused: elsewhere a rebooting device refuses (holdListener).
const silentOrRefused = "refused"
