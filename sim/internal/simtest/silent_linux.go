package simtest

// SilentOrRefused is what a client connecting to a rebooting device sees
// here: Linux lets the sim hold its listeners silent.
const SilentOrRefused = "timeout"
