//go:build race

package cmd

// raceEnabled: the test binary runs with -race, so the ots-ota binary built
// for the signal tests is too (it reuses the packages -race already built).
const raceEnabled = true
