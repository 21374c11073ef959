package cmd

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/ots-ota/ots-ota/fwfile"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

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

// renderBlocks prints one result per line in --json, else one block each,
// a blank line apart.
func renderBlocks[T any](a *app, items []T, render func(io.Writer, T, style)) error {
	st := style{on: a.color()}
	for i, it := range items {
		if a.opts.JSON {
			if err := writeJSON(a.io.Out, it); err != nil {
				return err
			}
			continue
		}
		if i > 0 {
			fmt.Fprintln(a.io.Out)
		}
		render(a.io.Out, it, st)
	}
	return nil
}
