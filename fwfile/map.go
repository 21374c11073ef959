package fwfile

import (
	"context"
	"io"
	"runtime"
	"runtime/debug"
)

// Map gives the contents of the regular file at path, at most limit bytes,
// with the checks of Read. Where the system can map files (Maps), the
// bytes are the file's pages mapped read-only, not a copy on the heap:
// inspecting a 4 MB image then costs one pass over the page cache. Elsewhere
// the file is read as Read does.
//
// data is valid until release is called, and must not be retained past it
// (copy what outlives it). Touch data only inside Guard: a file cut short
// while mapped faults on the missing pages.
func Map(ctx context.Context, path string, limit int64) (data []byte, release func(), err error) {
	f, size, err := openRegular(path, limit)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // a mapping outlives its descriptor
	if Maps && size > 0 && int64(int(size)) == size {
		if data, unmap, err := mapFile(f, int(size)); err == nil {
			return data, unmap, nil
		}
		// Not mappable (some network or special filesystems): read it.
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	data, err = readAll(ctx, f, limit, path)
	if err != nil {
		return nil, nil, err
	}
	return data, func() {}, nil
}

// MapArg is Map for a command-line argument: standard input for "-" (read,
// never mapped), else the file.
func MapArg(ctx context.Context, arg string, stdin io.Reader, limit int64) ([]byte, func(), error) {
	if arg == Stdin {
		data, err := ReadStream(ctx, stdin, limit, "standard input")
		return data, func() {}, err
	}
	return Map(ctx, arg, limit)
}

// ChangedError is a mapped file that shrank while it was being read.
type ChangedError struct{ Path string }

func (e *ChangedError) Error() string {
	return e.Path + " changed while it was being read"
}

// Guard runs f, which reads data from Map(path), and turns a fault on a
// page the file no longer has (it was truncated meanwhile) into a
// *ChangedError instead of a crash. Other panics pass through.
func Guard(path string, f func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if re, ok := r.(runtime.Error); ok {
				if _, fault := re.(interface{ Addr() uintptr }); fault {
					err = &ChangedError{Path: path}
					return
				}
			}
			panic(r)
		}
	}()
	f()
	return nil
}
