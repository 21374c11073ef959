package cmd

import (
	"bytes"
	"io"

	"github.com/ots-ota/ots-ota/fwfile"
)

// humanBytes prints sizes the way flash sizes are spoken of (KiB/MiB), as
// fwfile's messages do.
func humanBytes(n int64) string { return fwfile.HumanBytes(n) }

// style wraps text in ANSI colour when allowed.
type style struct{ on bool }

func (s style) wrap(code, text string) string {
	if !s.on {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}
func (s style) red(t string) string    { return s.wrap("31", t) }
func (s style) yellow(t string) string { return s.wrap("33", t) }
func (s style) green(t string) string  { return s.wrap("32", t) }
func (s style) bold(t string) string   { return s.wrap("1", t) }

// renderBlocks prints one block per result, a blank line apart (--json
// writes lines instead: a.writeLine). What devices told is redacted here,
// as it is printed (a.secrets): the results themselves keep it as told.
func renderBlocks[T any](a *app, items []T, render func(io.Writer, T, style)) error {
	st := style{on: a.color()}
	for i, it := range items {
		var b bytes.Buffer
		if i > 0 {
			b.WriteByte('\n')
		}
		render(&b, it, st)
		if _, err := io.WriteString(a.io.Out, a.secrets.Redact(b.String())); err != nil {
			return err
		}
	}
	return nil
}

// lineRedactor writes what it is given to w line by line, each line with
// the run's secrets redacted: for output written piecemeal (a tabwriter, a
// stream of events) that must still never print a secret. Close writes a
// last line without its newline.
type lineRedactor struct {
	a   *app
	w   io.Writer
	buf []byte
}

func (l *lineRedactor) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if _, err := io.WriteString(l.w, l.a.secrets.Redact(string(l.buf[:i+1]))); err != nil {
			return len(p), err
		}
		l.buf = l.buf[i+1:]
	}
}

func (l *lineRedactor) Close() error {
	if len(l.buf) == 0 {
		return nil
	}
	_, err := io.WriteString(l.w, l.a.secrets.Redact(string(l.buf)))
	l.buf = nil
	return err
}
