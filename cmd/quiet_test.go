package cmd

import "time"

// The stand-in Tasmota devices restart within a second: the quiet rule's
// connects come every 250 ms, and a device not seen away is read after
// 3 s (ten times its restart delay) instead of 10 s.
func init() {
	tasmotaQuiet.probe, tasmotaQuiet.hold = 250*time.Millisecond, 3*time.Second
}
