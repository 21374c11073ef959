package cmd

import (
	"encoding/json"
	"fmt"
	"io"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// humanBytes prints sizes the way flash sizes are spoken of (KiB/MiB).
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

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
