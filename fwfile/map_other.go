//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package fwfile

import (
	"errors"
	"os"
)

// Maps tells whether Map maps files (true) or reads them (false).
const Maps = false

func mapFile(*os.File, int) ([]byte, func(), error) {
	return nil, nil, errors.ErrUnsupported
}
