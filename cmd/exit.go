package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Exit codes, documented in the README.
const (
	ExitOK        = 0
	ExitFailed    = 1 // the command ran and found a problem (an image with errors, a failed device)
	ExitUsage     = 2 // bad flags, arguments or unknown command
	ExitCancelled = 130
)

// usageError marks errors caused by how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// silentError carries an exit code for a failure the command already reported.
type silentError struct{ code int }

func (e silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// exitCode maps an error to the process exit code, in one place.
func exitCode(err error) int {
	var se silentError
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &se):
		return se.code
	case errors.Is(err, context.Canceled):
		return ExitCancelled
	case errors.As(err, &ue), isCobraUsage(err):
		return ExitUsage
	default:
		return ExitFailed
	}
}

// isCobraUsage recognises cobra's and pflag's own usage errors, which are plain errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag",
		"flag needs an argument", "invalid argument", "accepts ", "requires at least",
		"requires at most", "received ", "bad flag syntax", "if any flags in the group"} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, " "+p) {
			return true
		}
	}
	return false
}
