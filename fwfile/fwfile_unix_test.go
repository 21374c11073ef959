//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package fwfile

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadFIFO: a FIFO is refused before it is opened, so the read cannot
// block waiting for a writer.
func TestReadFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	_, err := Read(context.Background(), p, 100)
	var e *NotRegularError
	if !errors.As(err, &e) || e.Kind != "a FIFO" {
		t.Errorf("Read(FIFO) = %v, want a NotRegularError for a FIFO", err)
	}
}
