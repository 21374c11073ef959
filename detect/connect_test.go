package detect

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
)

// silentDial is a connect that meets silence until its context ends, as
// to a rebooting device; it counts the connects.
func silentDial(n *atomic.Int32) func(ctx context.Context, _, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		n.Add(1)
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
	}
}

// The paths that skip the port probe (the word http, a host seen only as
// _http._tcp) end as the port probe would when the first probe cannot
// connect: one connect timeout, then unreachable, never raw HTTP chosen
// for a transport that would wait out a second timeout.
func TestDetectFirstConnectFails(t *testing.T) {
	for _, ev := range []Evidence{
		{Word: HTTP, WordFrom: "--protocol"},
		{Word: HTTP, WordFrom: "the URL (/update)"},
		{Service: "_http._tcp"},
	} {
		var n atomic.Int32
		det := Detector{ConnectTimeout: 50 * time.Millisecond, RequestTimeout: time.Second, Dial: silentDial(&n)}
		d := det.Detect(context.Background(), Target{Host: "192.0.2.1", Port: 3232, WebPort: -1}, ev)
		if d.Failure == nil || d.Failure.Kind != FailUnreachable || d.Protocol != "" || d.Refused ||
			!strings.HasPrefix(d.Failure.Reason, "no answer from 192.0.2.1:3232 within 50ms: the device is off, rebooting or out of reach") {
			t.Errorf("%+v: got %+v (failure %+v)", ev, d, d.Failure)
		}
		if n.Load() != 1 {
			t.Errorf("%+v: %d connects, want 1", ev, n.Load())
		}
	}
	// Refused, and the UDP port unreachable: nothing listens, as the port
	// probe says. Refused with the UDP port quiet: no HTTP server, and a
	// hint at espota; the word http still sends nothing over espota.
	dead := testnet.DeadAddr(t)
	det := Detector{ConnectTimeout: time.Second, RequestTimeout: time.Second}
	d := det.Detect(context.Background(), Target{Host: "127.0.0.1", Port: testnet.PortOf(t, dead), WebPort: -1}, Evidence{Word: HTTP, WordFrom: "--protocol"})
	if d.Failure == nil || d.Failure.Kind != FailNothingListens || !strings.HasPrefix(d.Failure.Reason, "nothing listens at "+dead) {
		t.Errorf("refused, UDP unreachable: %+v (failure %+v)", d, d.Failure)
	}
	quiet, got := testnet.QuietUDP(t)
	d = det.Detect(context.Background(), Target{Host: "127.0.0.1", Port: testnet.PortOf(t, quiet), WebPort: -1}, Evidence{Word: HTTP, WordFrom: "--protocol"})
	if d.Failure == nil || d.Failure.Kind != FailNetwork || d.Protocol != "" ||
		d.Failure.Reason != "connection refused by "+quiet+": no HTTP server listens there; if it is an ArduinoOTA device, give HOST:PORT with --protocol espota" {
		t.Errorf("refused, UDP quiet: %+v (failure %+v)", d, d.Failure)
	}
	if g := got(); len(g) != 1 || len(g[0]) != 0 {
		t.Errorf("the UDP port got %q, want one empty datagram", g)
	}
}

// A Ctrl-C during any probe ends detection interrupted: a probe cut by
// the cancel is no silence to decide on (it used to read as "no HTTP
// answer": raw HTTP, or a refusal; a cut UDP wait read as espota).
func TestDetectInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   Evidence
	}{
		{"the word http", Evidence{Word: HTTP, WordFrom: "--protocol"}},
		{"_http._tcp", Evidence{Service: "_http._tcp"}},
		{"plain address", Evidence{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec := &recorder{}
			port := serveHTTP(t, rec, func(w http.ResponseWriter, r *http.Request) {
				cancel() // Ctrl-C while the device thinks
				<-r.Context().Done()
			})
			det := Detector{ConnectTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second}
			d := det.Detect(ctx, Target{Host: "127.0.0.1", Port: port, WebPort: -1}, tc.ev)
			if d.Failure == nil || d.Failure.Kind != FailInterrupted || !errors.Is(d.Failure, context.Canceled) || d.Protocol != "" || d.Refused {
				t.Fatalf("got %+v (failure %+v), want interrupted", d, d.Failure)
			}
			if n := len(rec.all()); n != 1 {
				t.Errorf("%d requests after the interrupt's, want 1 in all", n)
			}
		})
	}
	// Cut during the UDP wait after a refusal: not espota.
	quiet, _ := testnet.QuietUDP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	det := Detector{ConnectTimeout: time.Second, UDPWait: 5 * time.Second, OnProbe: func(_ string, p Probe) {
		if p.Kind == KindUDP {
			cancel()
		}
	}}
	d := det.Detect(ctx, Target{Host: "127.0.0.1", Port: testnet.PortOf(t, quiet), WebPort: -1}, Evidence{})
	if d.Failure == nil || d.Failure.Kind != FailInterrupted || d.Protocol != "" {
		t.Fatalf("cut UDP wait: got %+v (failure %+v), want interrupted", d, d.Failure)
	}
}

// Notes on probes that got no answer are plain words, never Go's error
// chain ("send: write tcp 127.0.0.1:5→127.0.0.1:80: broken pipe").
func TestConnNote(t *testing.T) {
	op := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, Err: err}
	}
	for _, tc := range []struct {
		err      error
		timedOut bool
		want     string
	}{
		{op("dial", os.NewSyscallError("connect", syscall.ECONNREFUSED)), false, "connection refused"},
		{op("write", os.NewSyscallError("write", syscall.ECONNRESET)), false, "connection reset by the device"},
		{op("dial", context.DeadlineExceeded), true, "timed out"},
		{op("dial", context.Canceled), false, "cancelled"},
		{op("dial", &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}), false, "cannot resolve x.invalid: the system resolver has no such name"},
		{op("write", os.NewSyscallError("write", errors.New("some odd failure"))), false, "some odd failure"},
	} {
		got := connNote(tc.err, tc.timedOut)
		if got != tc.want || strings.Contains(got, "127.0.0.1") || strings.Contains(got, "write") {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}
