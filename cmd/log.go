package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

// lineHandler writes log records for people: "ots-ota: warning: msg k=v".
// With timings (-vv) each line carries the time since the command started.
type lineHandler struct {
	mu      *sync.Mutex
	w       io.Writer
	level   slog.Level
	timings bool
	start   time.Time
	attrs   []slog.Attr
	group   string
	// secrets are redacted from every line (nil: none).
	secrets *auth.Redactor
}

func newLineHandler(w io.Writer, level slog.Level, timings bool, start time.Time) *lineHandler {
	return &lineHandler{mu: &sync.Mutex{}, w: w, level: level, timings: timings, start: start}
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("ots-ota: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	case r.Level >= slog.LevelInfo:
		b.WriteString("info: ")
	default:
		b.WriteString("debug: ")
	}
	if h.timings {
		fmt.Fprintf(&b, "[+%.3fs] ", r.Time.Sub(h.start).Seconds())
	}
	b.WriteString(r.Message)
	closed := false
	write := func(a slog.Attr) {
		if err, ok := a.Value.Any().(error); ok && errors.Is(err, net.ErrClosed) {
			closed = true
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		v := a.Value.Resolve().String()
		if v == "" || strings.ContainsAny(v, " \t\"=") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", key, v)
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(func(a slog.Attr) bool { write(a); return true })
	// A socket closed under a server is how every server here stops: never
	// worth a warning.
	if closed && r.Level < slog.LevelError {
		return nil
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, h.secrets.Redact(b.String()))
	return err
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
