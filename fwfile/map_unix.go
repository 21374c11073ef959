//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package fwfile

import (
	"os"
	"syscall"
)

// Maps tells whether Map maps files (true) or reads them (false).
const Maps = true

func mapFile(f *os.File, size int) ([]byte, func(), error) {
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() { _ = syscall.Munmap(data) }, nil
}
