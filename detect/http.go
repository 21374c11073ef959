package detect

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Answer is what a device answered one HTTP probe.
type Answer struct {
	// Status is the HTTP status; 0 when the answer was not HTTP or none.
	Status int
	// Header holds the response headers (canonical keys).
	Header http.Header
	// Body is the body, gunzipped when the device sent it gzip-encoded
	// (ElegantOTA always does), cut at maxBody.
	Body []byte
	// Gzip: the body came with Content-Encoding: gzip.
	Gzip bool
	// Raw holds the first bytes of an answer that is not HTTP.
	Raw []byte
	// None: no answer at all (refused, silence, or closed before a byte).
	None bool
	// Note says in a few words what went wrong, for logs.
	Note string

	// connErr is the connect's error when it failed (None is then set);
	// connTimedOut: the connect's own deadline passed.
	connErr      error
	connTimedOut bool
}

// maxBody bounds what is read (and gunzipped) of an answer: the pages
// fingerprinted are a few KiB; ElegantOTA's gzipped page is under 100 KiB.
const maxBody = 512 << 10

// request sends one probe to addr and reads the answer, within timeout,
// its connect within connect. It writes the request by hand so that what
// goes on the wire is exactly the probe: no Authorization, no cookies, no
// Accept-Encoding, no body, one request per connection. Redirects are not
// followed.
func request(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string, p Probe, connect, timeout time.Duration) Answer {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cctx, ccancel := context.WithTimeout(rctx, connect)
	c, err := dial(cctx, "tcp", addr)
	timedOut := cctx.Err() != nil && ctx.Err() == nil
	ccancel()
	if err != nil {
		return Answer{None: true, Note: "connect: " + connNote(err, timedOut), connErr: err, connTimedOut: timedOut}
	}
	defer c.Close()
	if dl, ok := rctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(rctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	host, _, _ := net.SplitHostPort(addr)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ots-ota\r\nAccept: */*\r\nConnection: close\r\n", p.Method, p.Target, addr)
	if p.Referer {
		// Tasmota serves /cm only to a Referer naming the device
		// (uploaders.md §6).
		fmt.Fprintf(&b, "Referer: http://%s/\r\n", hostForURL(host))
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		return Answer{None: true, Note: "could not send the request: " + connNote(err, rctx.Err() != nil)}
	}
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		if rctx.Err() != nil {
			return Answer{None: true, Note: "no answer within " + timeout.String()}
		}
		return Answer{None: true, Note: "closed without an answer"}
	}
	if first[0] != 'H' {
		// Not HTTP: ESPHome's native OTA answers any 5 bytes that are not
		// its magic with one error byte (0x80) and closes.
		raw, _ := br.Peek(br.Buffered())
		return Answer{Raw: bytes.Clone(raw[:min(len(raw), 16)]), Note: "not an HTTP answer"}
	}
	method := p.Method
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		raw, _ := br.Peek(br.Buffered())
		return Answer{Raw: bytes.Clone(raw[:min(len(raw), 16)]), Note: "not an HTTP answer"}
	}
	defer resp.Body.Close()
	a := Answer{Status: resp.StatusCode, Header: resp.Header}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if strings.EqualFold(strings.TrimSpace(resp.Header.Get("Content-Encoding")), "gzip") {
		a.Gzip = true
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			// A body cut at maxBody still gives its beginning.
			plain, _ := io.ReadAll(io.LimitReader(zr, maxBody))
			body = plain
		}
	}
	a.Body = body
	return a
}

// connNote words a failed connect or send in a few plain words, for the
// notes of a decision: never Go's chain of operation and addresses.
func connNote(err error, timedOut bool) string {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case IsRefused(err):
		return "connection refused"
	case IsReset(err):
		return "connection reset by the device"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s: %s", dnsErr.Name, ResolverReason(dnsErr))
	case timedOut, errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case IsUnreachable(err):
		return "no route to the device"
	}
	for errors.Unwrap(err) != nil {
		err = errors.Unwrap(err)
	}
	return err.Error()
}

// hostForURL puts an IPv6 literal in brackets.
func hostForURL(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}
