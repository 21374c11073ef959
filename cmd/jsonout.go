package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"time"
)

// jsonSchemaVersion is the "schema" of every --json line (docs/json.md).
// Output before it had none: call that 1. Bump it with every change to what
// a line holds, an added field included, and update docs/schema/ with it.
const jsonSchemaVersion = 2

// lineHead starts every --json line: what kind of line it is, and the
// version of the contract it follows.
type lineHead struct {
	Type   string `json:"type"`
	Schema int    `json:"schema"`
}

func head(typ string) lineHead { return lineHead{Type: typ, Schema: jsonSchemaVersion} }

// errorObject is how --json tells a failure: the error field of an error
// line, of an info line whose device failed, and each inspect finding. Code
// is stable; Message is one line for a person (stderr's, where stderr says
// it in a line); Hint is what to do, null when there is nothing to add.
type errorObject struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Hint    *string `json:"hint"`
}

func newErrorObject(code, message, hint string) errorObject {
	return errorObject{Code: code, Message: message, Hint: nullString(hint)}
}

// errorLine is a command's failure: {"type":"error",...}. A run that exits
// other than 0 prints at least one, before its summary; one that exits 0
// prints none.
type errorLine struct {
	lineHead
	Command string      `json:"command"`
	Error   errorObject `json:"error"`
}

// codedError gives an error its code in --json ("mdns", "no_devices" …);
// errors without one are "failed" (usage errors "usage").
type codedError struct {
	code string
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

func withCode(code string, err error) error { return codedError{code: code, err: err} }

// errorCode is err's code in an error line.
func errorCode(err error) string {
	var ue usageError
	var ce codedError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, errInterrupted):
		return "interrupted"
	case errors.As(err, &ue):
		return "usage"
	case errors.As(err, &ce):
		return ce.code
	}
	return "failed"
}

// summaryHead starts every summary line, the last line of a --json run.
type summaryHead struct {
	lineHead
	Command    string `json:"command"`
	ExitCode   int    `json:"exit_code"`
	DurationMS int64  `json:"duration_ms"`
	// timed: the command measured DurationMS itself (push: the rollout).
	timed bool
}

func (s *summaryHead) head() *summaryHead { return s }

// summaryLine is a command's summary: summaryHead and the command's own
// counts, null where the run ended before it knew them.
type summaryLine interface{ head() *summaryHead }

// countSummary is the summary of inspect (files) and info (devices).
type countSummary struct {
	summaryHead
	Count  *int `json:"count"`
	Failed *int `json:"failed"`
}

type discoverSummary struct {
	summaryHead
	Count  *int `json:"count"`  // devices listed; null with --watch
	Events *int `json:"events"` // --watch: events printed; null without
}

type simSummary struct {
	summaryHead
	Count *int `json:"count"` // devices started
}

type demoSummary struct {
	summaryHead
	Steps *int `json:"steps"`
}

// newSummary is command's summary with nothing known yet.
func newSummary(command string) summaryLine {
	switch command {
	case "push":
		return &pushSummary{}
	case "inspect", "info":
		return &countSummary{}
	case "discover":
		return &discoverSummary{}
	case "sim":
		return &simSummary{}
	case "demo":
		return &demoSummary{}
	case "rollout":
		return &rolloutSummary{}
	case "rollout status":
		return &rolloutStatusSummary{}
	}
	return &summaryHead{}
}

// summaryAs is the run's summary, for the command to fill in as it learns.
func summaryAs[T summaryLine](a *app) T {
	if a.summary == nil {
		a.summary = newSummary(a.commandName())
	}
	s, _ := a.summary.(T)
	return s
}

// commandName is the command being run as the user typed it: "push",
// "sim image"; "" before one is known.
func (a *app) commandName() string {
	if a.cmd == nil {
		return ""
	}
	return commandWords(a.cmd.CommandPath())
}

func commandWords(path string) string {
	if _, rest, ok := strings.Cut(path, " "); ok {
		return rest
	}
	return path
}

// writeLine writes one --json line, with the run's secrets redacted from
// its string values, whole (lines from several goroutines never interleave).
func (a *app) writeLine(v any) {
	b, err := marshalLine(v)
	if err == nil {
		b, err = redactJSON(b, a.secrets.Redact)
	}
	if err != nil {
		return
	}
	a.outMu.Lock()
	defer a.outMu.Unlock()
	_, _ = a.io.Out.Write(append(b, '\n'))
}

func marshalLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// redactJSON applies redact to every string value of the JSON text in b,
// keys and order kept. Redacting the text instead would miss a secret
// JSON escapes, and a short secret could cut a key ("exit_code").
func redactJSON(b []byte, redact func(string) string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out bytes.Buffer
	// Per open container: is it an object, and how many tokens it holds.
	type level struct {
		object bool
		n      int
	}
	var stack []level
	var scratch bytes.Buffer
	enc := json.NewEncoder(&scratch)
	enc.SetEscapeHTML(false)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		key := false
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			out.WriteByte(byte(d))
			continue
		}
		if len(stack) > 0 {
			l := &stack[len(stack)-1]
			switch {
			case l.object && l.n%2 == 1:
				out.WriteByte(':')
			case l.n > 0:
				out.WriteByte(',')
			}
			key = l.object && l.n%2 == 0
			l.n++
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, level{object: d == '{'})
			out.WriteByte(byte(d))
			continue
		}
		if s, ok := tok.(string); ok && !key {
			tok = redact(s)
		}
		scratch.Reset()
		if err := enc.Encode(tok); err != nil {
			return nil, err
		}
		out.Write(bytes.TrimSuffix(scratch.Bytes(), []byte("\n")))
	}
	return out.Bytes(), nil
}

// jsonFailure writes an error line now (with --json; otherwise nothing).
func (a *app) jsonFailure(e errorObject) {
	if !a.opts.JSON {
		return
	}
	a.jsonErrors++
	a.writeLine(errorLine{lineHead: head("error"), Command: a.commandName(), Error: e})
}

// endJSON ends a --json run: the error line its failure still lacks, then
// its summary. msg and hint are what stderr said of err.
func (a *app) endJSON(command string, code int, err error, msg, hint string) {
	var se silentError
	switch {
	case code == ExitOK:
	case errors.As(err, &se):
		if se.json != nil {
			a.writeLine(errorLine{lineHead: head("error"), Command: command, Error: *se.json})
		}
	case a.jsonErrors == 0:
		a.writeLine(errorLine{lineHead: head("error"), Command: command, Error: newErrorObject(errorCode(err), msg, hint)})
	}
	s := a.summary
	if s == nil {
		s = newSummary(command)
	}
	h := s.head()
	h.lineHead, h.Command, h.ExitCode = head("summary"), command, code
	if !h.timed {
		h.DurationMS = time.Since(a.start).Milliseconds()
	}
	a.writeLine(s)
}

// Helpers for "null when unknown".

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nullPositive is n, or null when n is 0 (or less): for counts and ports
// where 0 stands for "not told".
func nullPositive[T int | int64](n T) *T {
	if n <= 0 {
		return nil
	}
	return &n
}

// bytesPerSecond is a rate in bytes per second as a whole number, null when unknown.
func bytesPerSecond(bps float64) *int64 {
	if bps <= 0 || math.IsInf(bps, 0) || math.IsNaN(bps) {
		return nil
	}
	n := int64(math.Round(bps))
	return &n
}

// listOf is s, or an empty list: lists are [] when empty, never null.
func listOf[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
