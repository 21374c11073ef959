package cmd

import (
	"bytes"
	"io"
	"os"

	"golang.org/x/term"
)

// IOStreams is where a command reads and writes. Results go to Out; logs,
// progress and errors go to ErrOut.
type IOStreams struct {
	In         io.Reader
	Out        io.Writer
	ErrOut     io.Writer
	OutTTY     bool
	ErrTTY     bool
	NoColorEnv bool // the environment forbids colour: NO_COLOR non-empty, or TERM=dumb
	// DumbTerm: TERM=dumb, a terminal that moves no cursor (Emacs's shell
	// buffer, some CI log viewers): progress comes as lines there.
	DumbTerm bool

	// words rewrites flag names in messages for the command the user typed
	// (the espota drop-in runs push through Execute); nil = as is.
	words func(string) string
}

// System returns the process's streams with terminal detection.
func System() *IOStreams {
	return &IOStreams{
		In:         os.Stdin,
		Out:        os.Stdout,
		ErrOut:     os.Stderr,
		OutTTY:     term.IsTerminal(int(os.Stdout.Fd())),
		ErrTTY:     term.IsTerminal(int(os.Stderr.Fd())),
		NoColorEnv: envForbidsColor(os.Getenv),
		DumbTerm:   dumbTerminal(os.Getenv),
	}
}

// envForbidsColor applies no-color.org (a NO_COLOR that is set and not empty)
// and dumbTerminal.
func envForbidsColor(getenv func(string) string) bool {
	return getenv("NO_COLOR") != "" || dumbTerminal(getenv)
}

// dumbTerminal: the terminfo convention that TERM=dumb has no escape
// sequences, colour or cursor movement.
func dumbTerminal(getenv func(string) string) bool { return getenv("TERM") == "dumb" }

// TestStreams returns buffer-backed streams that are not terminals.
func TestStreams() (*IOStreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return &IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut}, &out, &errOut
}
