//go:build !windows

package cmd

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalWatch: Ctrl-C is how `discover --watch` ends: promptly, exit 0,
// nothing on stderr. A plain discover interrupted mid-browse exits 130.
func TestSignalWatch(t *testing.T) {
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" || !loopback127() {
		t.Skip("multicast test: run with OTS_OTA_MDNS_TESTS=1 inside unshare -n (see .ci/run)")
	}
	dir := t.TempDir()
	s := startOts(t, dir, "sim", "-n", "2", "--personality", "arduino", "--fast", "--base-ip", "127.0.9.70", "--json")
	s.waitLines(t, `"event":"ready"`, 2)

	w := startOts(t, dir, "discover", "--watch", "--interface", "lo", "--json")
	w.waitLines(t, `"event":"added"`, 2)
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if _, code := w.wait(t); code != 0 || w.stderr.Len() != 0 {
		t.Errorf("watch: exit %d, stderr %q", code, w.stderr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("watch took %v to stop", d)
	}

	d := startOts(t, dir, "discover", "--interface", "lo", "--timeout", "30s")
	time.Sleep(300 * time.Millisecond)
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if _, code := d.wait(t); code != 130 || !strings.Contains(d.stderr.String(), "interrupted") {
		t.Errorf("discover: exit %d, stderr %q", code, d.stderr)
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	s.wait(t)
}
