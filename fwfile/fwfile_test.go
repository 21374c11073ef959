package fwfile

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.bin")
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(small, []byte("firmware"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		limit      int64
		want       string // data, or the error's text
		check      func(error) bool
	}{
		{"regular", small, 100, "firmware", nil},
		{"exactly the cap", small, 8, "firmware", nil},
		{"over the cap, from stat", big, 1024, "file is 2.9 KiB (3000 bytes), more than 1.0 KiB",
			func(err error) bool {
				var e *TooLargeError
				return errors.As(err, &e) && e.Size == 3000 && e.Limit == 1024
			}},
		{"directory", dir, 100, "not a regular file (a directory)",
			func(err error) bool { var e *NotRegularError; return errors.As(err, &e) && e.Path == dir }},
		{"missing", filepath.Join(dir, "nope.bin"), 100, filepath.Join(dir, "nope.bin") + " does not exist", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Read(context.Background(), tc.path, tc.limit)
			got := string(data)
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("Read = %q, want %q", got, tc.want)
			}
			if tc.check != nil && !tc.check(err) {
				t.Errorf("Read error %v (%T) has the wrong type or fields", err, err)
			}
		})
	}
}

func TestReadCancelled(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(p, make([]byte, 3*chunk), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Read(ctx, p, 4*chunk); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestReadStream(t *testing.T) {
	data, err := ReadArg(context.Background(), "-", strings.NewReader("abc"), 10)
	if err != nil || string(data) != "abc" {
		t.Errorf("ReadArg(-) = %q, %v", data, err)
	}
	// Only reading can tell a stream is too large: Size stays 0.
	_, err = ReadStream(context.Background(), bytes.NewReader(make([]byte, 11)), 10, "standard input")
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Size != 0 || err.Error() != "more than 10 B" {
		t.Errorf("ReadStream(11 bytes, cap 10) = %v", err)
	}
}

// TestReadStreamBlocked: a stream that never delivers does not hold the
// caller once ctx ends.
func TestReadStreamBlocked(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ReadStream(ctx, r, 10, "standard input")
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadStream = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadStream still blocked after the context ended")
	}
}
