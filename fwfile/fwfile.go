// Package fwfile reads a firmware file (or any small input file ots-ota
// takes: a partition table, a password file) safely: only a regular file,
// so a FIFO or a device can never block a read; at most a size cap, checked
// from the file's size on disk before reading; standard input for "-"; and
// the read stops when the context ends.
//
// Its errors are one line a user can act on. A file over the cap is a
// *TooLargeError, anything that is not a regular file a *NotRegularError.
package fwfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Stdin is the path that names standard input.
const Stdin = "-"

// chunk is how much is read between two looks at the context.
const chunk = 1 << 20

// TooLargeError is a file over the read cap: Size is from stat, or 0 when
// only reading found out (standard input, a file that grew).
type TooLargeError struct {
	Size, Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size == 0 {
		return "more than " + HumanBytes(e.Limit)
	}
	return fmt.Sprintf("file is %s (%d bytes), more than %s", HumanBytes(e.Size), e.Size, HumanBytes(e.Limit))
}

// NotRegularError is a path that names a directory, FIFO, socket or device.
type NotRegularError struct {
	Path string
	Kind string // "a directory", "a FIFO", ...
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("not a regular file (%s)", e.Kind)
}

// Read reads the regular file at path, at most limit bytes. Anything else
// is refused before it is opened; a larger file is refused from its size on
// disk. The read stops with ctx.Err() when ctx ends.
func Read(ctx context.Context, path string, limit int64) ([]byte, error) {
	f, size, err := openRegular(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readSized(ctx, f, size, limit, path)
}

// openRegular opens the regular file at path after the checks Read
// describes, and gives its size on disk.
func openRegular(path string, limit int64) (*os.File, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, pathError(path, err)
	}
	if err := regular(path, st); err != nil {
		return nil, 0, err
	}
	if st.Size() > limit {
		return nil, 0, &TooLargeError{Size: st.Size(), Limit: limit}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, pathError(path, err)
	}
	if st, err = f.Stat(); err != nil {
		f.Close()
		return nil, 0, pathError(path, err)
	} else if err := regular(path, st); err != nil { // replaced since the first look
		f.Close()
		return nil, 0, err
	}
	if st.Size() > limit {
		f.Close()
		return nil, 0, &TooLargeError{Size: st.Size(), Limit: limit}
	}
	return f, st.Size(), nil
}

// ReadStream reads r (standard input) to its end, at most limit bytes. A
// read that blocks is left behind when ctx ends, and ReadStream returns
// ctx.Err() at once: the caller is about to give up on r.
func ReadStream(ctx context.Context, r io.Reader, limit int64, name string) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := readAll(ctx, r, limit, name)
		done <- result{data, err}
	}()
	select {
	case res := <-done:
		return res.data, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ReadArg reads a command-line argument: standard input (stdin) for "-",
// else the file.
func ReadArg(ctx context.Context, arg string, stdin io.Reader, limit int64) ([]byte, error) {
	if arg == Stdin {
		return ReadStream(ctx, stdin, limit, "standard input")
	}
	return Read(ctx, arg, limit)
}

// readAll reads r to the end, at most limit bytes, checking ctx between chunks.
func readAll(ctx context.Context, r io.Reader, limit int64, name string) ([]byte, error) {
	return readSized(ctx, r, 0, limit, name)
}

// readSized is readAll for a reader expected to hold size bytes: the
// buffer is allocated once, with a byte to spare to see the end, so the
// data is copied once (a file that grew meanwhile still reads whole).
func readSized(ctx context.Context, r io.Reader, size, limit int64, name string) ([]byte, error) {
	buf := make([]byte, 0, min(size, limit)+1)
	r = io.LimitReader(r, limit+1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), len(buf)+chunk)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, pathError(name, err)
		}
	}
	if int64(len(buf)) > limit {
		return nil, &TooLargeError{Limit: limit}
	}
	return buf, nil
}

func regular(path string, st os.FileInfo) error {
	if st.Mode().IsRegular() {
		return nil
	}
	return &NotRegularError{Path: path, Kind: Kind(st)}
}

// Kind names what a file is: "a regular file", "a directory", "a FIFO", ...
func Kind(st os.FileInfo) string {
	m := st.Mode()
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

// pathError says in one line why a file could not be read.
func pathError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist", path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: permission denied", path)
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is named already
	}
	return fmt.Errorf("cannot read %s: %v", path, err)
}

// HumanBytes prints sizes the way flash sizes are spoken of (KiB/MiB).
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
