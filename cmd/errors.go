package cmd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
)

// rootCause is the innermost error of a wrap chain (the first of a joined
// set): the reason without the layers of what-was-being-done that only make
// sense inside the program.
func rootCause(err error) error {
	for {
		// A network operation's error reads well on its own ("listen tcp
		// 127.0.0.2:3232: bind: address already in use"); netError rewords it.
		var op *net.OpError
		if errors.As(err, &op) && op == err {
			return err
		}
		var pe *os.PathError
		if errors.As(err, &pe) && pe == err {
			return pe.Err
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			next := u.Unwrap()
			if next == nil {
				return err
			}
			err = next
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			if len(errs) == 0 {
				return err
			}
			err = errs[0]
		default:
			return err
		}
	}
}

// netError says in one line why a socket could not be opened and what to do.
// ok is false when err is not about a socket.
func netError(err error) (msg string, ok bool) {
	var op *net.OpError
	if !errors.As(err, &op) {
		return "", false
	}
	addr := ""
	if op.Addr != nil {
		addr = op.Addr.String()
	}
	what := fmt.Sprintf("cannot %s on %s %s", op.Op, op.Net, addr)
	switch {
	case isErrno(err, errnoAddrInUse):
		return what + ": the address is in use (another simulator running? pick another --base-ip or --ota-port)", true
	case isErrno(err, errnoAddrNotAvail) && strings.HasPrefix(addr, "127."):
		return what + ": the address is not on this machine (on macOS add loopback aliases first: sudo ifconfig lo0 alias 127.0.0.2 up)", true
	case isErrno(err, errnoAddrNotAvail):
		return what + ": the address is not on this machine (give the address of one of its interfaces)", true
	case isErrno(err, errnoAccess) || errors.Is(err, os.ErrPermission):
		return what + ": permission denied (ports below 1024 need privileges: pick another port)", true
	case isErrno(err, errnoTooManyFiles):
		return what + ": too many open files (raise the limit with ulimit -n, or use fewer devices)", true
	}
	return what + ": " + rootCause(op.Err).Error(), true
}

// isErrno reports whether err carries one of the errnos (errno_*.go number
// them per OS).
func isErrno(err error, errnos []syscall.Errno) bool {
	var e syscall.Errno
	return errors.As(err, &e) && slices.Contains(errnos, e)
}
