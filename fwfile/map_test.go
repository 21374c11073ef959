package fwfile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMap(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("firmware"), 3*chunk/8+1) // more than one chunk, not a page multiple
	fw := filepath.Join(dir, "fw.bin")
	empty := filepath.Join(dir, "empty.bin")
	if err := os.WriteFile(fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, arg string
		limit     int64
		want      []byte
		err       string
	}{
		{"file", fw, 4 * chunk, data, ""},
		{"exactly the cap", fw, int64(len(data)), data, ""},
		{"empty", empty, 10, []byte{}, ""},
		{"over the cap", fw, 1024, nil, "more than 1.0 KiB"},
		{"directory", dir, 10, nil, "not a regular file (a directory)"},
		{"stdin", "-", 10, []byte("abc"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, release, err := MapArg(context.Background(), tc.arg, strings.NewReader("abc"), tc.limit)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("MapArg = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			if !bytes.Equal(got, tc.want) {
				t.Errorf("MapArg gave %d bytes, want %d equal to the file's", len(got), len(tc.want))
			}
		})
	}
}

// TestGuardTruncated: a mapped file cut short faults on its lost pages;
// Guard turns that into a *ChangedError rather than a crash.
func TestGuardTruncated(t *testing.T) {
	if !Maps {
		t.Skip("files are read, not mapped, here")
	}
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	data, release, err := Map(context.Background(), fw, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := os.Truncate(fw, 0); err != nil {
		t.Fatal(err)
	}
	var sum byte
	err = Guard(fw, func() {
		for _, b := range data {
			sum ^= b
		}
	})
	var ce *ChangedError
	if !errors.As(err, &ce) || ce.Path != fw || err.Error() != fw+" changed while it was being read" {
		t.Errorf("Guard over a truncated mapping = %v, want a ChangedError for %s", err, fw)
	}
	// Panics that are not faults pass through.
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want the panic to pass through Guard", r)
		}
	}()
	_ = Guard(fw, func() { panic("boom") })
}
