package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, documented in the README's table. Keep both in step.
const (
	ExitOK     = 0
	ExitFailed = 1 // the command ran and found a problem (an image with errors, a failed device)
	ExitUsage  = 2 // bad flags, arguments, config values or unknown command: nothing was done
	// ExitUnverified is push's with --require-verified: a device took the
	// image but showed no version (ExitFailed wins when both apply).
	ExitUnverified = 3
	ExitCancelled  = 130 // interrupted by SIGINT or SIGTERM
)

// usageError marks errors caused by how the command was called (exit 2).
// Every flag, argument and config check returns one; nothing else decides
// that an error is a usage error.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// asUsage makes err a usage error unless it already carries an exit code.
func asUsage(err error) error {
	var ue usageError
	var se silentError
	if err == nil || errors.As(err, &ue) || errors.As(err, &se) || errors.Is(err, context.Canceled) {
		return err
	}
	return usageError{err}
}

// silentError carries an exit code for a failure the command already
// reported on stderr (or in its table). json is what --json says of it:
// nil when the command, or one it ran, wrote its error lines itself.
type silentError struct {
	code int
	json *errorObject
}

func (e silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// errInterrupted is the cause of the context Main cancels on SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// exitCode maps an error to the process exit code, in one place.
func exitCode(err error) int {
	var se silentError
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &se):
		return se.code
	case errors.Is(err, context.Canceled), errors.Is(err, errInterrupted):
		return ExitCancelled
	case errors.As(err, &ue):
		return ExitUsage
	default:
		return ExitFailed
	}
}

// Main runs ots-ota with the process's arguments and streams and returns the
// exit code. The first SIGINT or SIGTERM cancels the commands' context (with
// errInterrupted as its cause); a second one ends the process at once.
func Main() int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigs; ok {
			signal.Stop(sigs) // the next signal takes the default action: exit now
			cancel(errInterrupted)
		}
	}()
	code := Execute(ctx, os.Args[1:], System())
	signal.Stop(sigs)
	return code
}

// interrupted reports whether ctx ended because of SIGINT or SIGTERM (or any
// cancellation that is not a deadline).
func interrupted(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded)
}
