package upload

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
)

// TCP refused plus ICMP port unreachable for one empty datagram: nothing
// listens, not espota (issue 15 Build 2). A quiet UDP port is espota, and
// saw one empty datagram, never an invitation.
func TestChooseProtocolNothingListens(t *testing.T) {
	addr := testnet.DeadAddr(t)
	_, err := ChooseProtocol(httpCtx(t), probeTarget(t, addr), Hint{}, time.Second)
	de := asDeviceError(t, err)
	if de.Class != ClassNothingListens || !strings.HasPrefix(de.Reason, "nothing listens at "+addr+": ") || strings.Contains(de.Reason, "\n") {
		t.Fatalf("got %+v", de)
	}

	quiet, got := testnet.QuietUDP(t)
	d, err := ChooseProtocol(httpCtx(t), probeTarget(t, quiet), Hint{}, time.Second)
	if err != nil || d.Protocol != Espota || !d.Probed {
		t.Fatalf("quiet UDP port: %+v, %v; want espota by probe", d, err)
	}
	if g := got(); len(g) != 1 || len(g[0]) != 0 {
		t.Errorf("the device got %q, want one empty datagram", g)
	}
}

// countingTransport counts Send calls and fails them.
type countingTransport struct {
	p     Protocol
	sends atomic.Int32
}

func (c *countingTransport) Protocol() Protocol { return c.p }
func (c *countingTransport) Send(context.Context, Target, *Firmware, Credentials, Emit) error {
	c.sends.Add(1)
	return &DeviceError{Class: ClassUnreachable, Reason: "counted"}
}

// deadRun runs one target through the runner with the real probe, counting
// probes and sends (an espota send is the invitations).
func deadRun(t *testing.T, tg Target) (Result, int32, int32) {
	t.Helper()
	return deadRunHint(context.Background(), t, tg, Hint{}, time.Second)
}

// deadRunHint is deadRun with a hint and a connect timeout for the probe.
func deadRunHint(ctx context.Context, t *testing.T, tg Target, h Hint, connect time.Duration) (Result, int32, int32) {
	t.Helper()
	o := simOptions()
	espota, http := &countingTransport{p: Espota}, &countingTransport{p: HTTP}
	o.Transports = map[Protocol]Transport{Espota: espota, HTTP: http}
	var probes atomic.Int32
	o.Probe = func(ctx context.Context, t Target) (Protocol, error) {
		probes.Add(1)
		d, err := ChooseProtocol(ctx, t, h, connect)
		return d.Protocol, err
	}
	res := Run(ctx, testFirmware(t, "1.0.1"), []Target{tg}, o)
	if len(res) != 1 {
		t.Fatalf("%d results", len(res))
	}
	return res[0], probes.Load(), espota.sends.Load() + http.sends.Load()
}

// Push to an address where nothing listens: two probe rounds at least
// NothingListensWait apart (a booting device answers the same way), no
// invitation, then unreachable with the one-line reason.
func TestRunNothingListens(t *testing.T) {
	addr := testnet.DeadAddr(t)
	tg := probeTarget(t, addr)
	start := time.Now()
	r, probes, sends := deadRun(t, tg)
	if r.Outcome != OutcomeUnreachable || r.Class != ClassNothingListens || r.Tries != 2 ||
		!strings.HasPrefix(r.Message, "nothing listens at "+addr+": ") {
		t.Errorf("%s (%s) after %d tries: %s", r.Outcome, r.Class, r.Tries, r.Message)
	}
	if probes != 2 || sends != 0 {
		t.Errorf("%d probe rounds and %d sends, want 2 and none", probes, sends)
	}
	if el := time.Since(start); el < NothingListensWait {
		t.Errorf("retried after %v, before the %v a booting device needs", el, NothingListensWait)
	}
}

// --protocol http to a silent device: the probe's connect meets the
// silence, and the try ends unreachable there; the transport never waits
// out a second connect timeout (it is never called).
func TestRunWordHTTPSilent(t *testing.T) {
	addr := testnet.SilentAddr(t)
	r, probes, sends := deadRunHint(context.Background(), t, probeTarget(t, addr), Hint{Protocol: HTTP, From: "--protocol"}, 300*time.Millisecond)
	if r.Outcome != OutcomeUnreachable || r.Class != ClassUnreachable ||
		!strings.HasPrefix(r.Message, "no answer from "+addr+" within 300ms: the device is off, rebooting or out of reach") {
		t.Errorf("%s (%s) after %d tries: %s", r.Outcome, r.Class, r.Tries, r.Message)
	}
	// One probe in the pre-flight, then one a try, as for any silent device.
	if sends != 0 || probes != int32(r.Tries)+1 || r.Tries < 2 {
		t.Errorf("%d probes and %d sends in %d tries; want the pre-flight's and one a try (retried), and no send", probes, sends, r.Tries)
	}
}

// Ctrl-C while a probe waits for the device's answer ends the device as
// a Ctrl-C during the TCP probe always did (not started), never with the
// cut probe read as an answer (a host seen only as _http._tcp was refused).
func TestRunInterruptedProbe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	r, probes, sends := deadRunHint(ctx, t, probeTarget(t, ln.Addr().String()), Hint{Service: "_http._tcp"}, 5*time.Second)
	if r.Outcome != OutcomeNotStarted || !strings.Contains(r.Message, "interrupted") {
		t.Errorf("%s: %s", r.Outcome, r.Message)
	}
	if probes != 1 || sends != 0 {
		t.Errorf("%d probes and %d sends, want 1 and none", probes, sends)
	}
}

// A name that does not resolve fails once, with the resolver's reason.
// ".invalid" never resolves (RFC 6761), but asking may still reach a DNS
// server: only inside a network namespace with loopback alone.
func TestRunUnresolvedOnce(t *testing.T) {
	loopbackOnly(t)
	r, probes, sends := deadRun(t, Target{Name: "nosuch", Host: "nosuch.invalid", Port: 3232})
	if r.Outcome != OutcomeUnreachable || r.Class != ClassUnresolved || r.Tries != 1 ||
		!strings.HasPrefix(r.Message, "cannot resolve nosuch.invalid: ") || strings.Contains(r.Message, "dial ") {
		t.Errorf("%s (%s) after %d tries: %s", r.Outcome, r.Class, r.Tries, r.Message)
	}
	if probes != 1 || sends != 0 {
		t.Errorf("%d lookups and %d sends, want 1 and none", probes, sends)
	}
}

// loopbackOnly skips unless every interface is a loopback one (a fresh
// network namespace): a name lookup there cannot leave the machine.
func loopbackOnly(t *testing.T) {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Skip(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			t.Skip("a name lookup here may reach a DNS server: run inside a network namespace with loopback alone (unshare -n)")
		}
	}
}

func TestResolverReason(t *testing.T) {
	for _, tc := range []struct {
		err  *net.DNSError
		want string
	}{
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, "the system resolver has no such name"},
		{&net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}, "the system resolver timed out"},
		{&net.DNSError{Err: "dial udp 10.255.255.53:53: connect: network is unreachable", Name: "x"}, "the system resolver could not reach a DNS server (network is unreachable)"},
		{&net.DNSError{Err: "server misbehaving", Name: "x"}, "system resolver: server misbehaving"},
	} {
		if got := ResolverReason(tc.err); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.err.Err, got, tc.want)
		}
	}
	if c, r := ClassifyDial("x.invalid:3232", time.Second, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}); c != ClassUnresolved || r != "cannot resolve x.invalid: the system resolver has no such name" {
		t.Errorf("classifyDial: %s %q", c, r)
	}
}

// Without a probe the runner names no protocol of its own: a target left
// to auto takes the one transport configured, and with several it fails
// before anything is sent (it used to be HTTP, whatever was configured).
func TestRunNoProbeNamesNoProtocol(t *testing.T) {
	run := func(trs ...*countingTransport) Result {
		o := simOptions()
		o.Observer, o.Retries = nil, 0
		for _, tr := range trs {
			o.Transports[tr.p] = tr
		}
		res := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{{Name: "d", Host: "127.0.0.1", Port: 3232}}, o)
		return res[0]
	}
	es := &countingTransport{p: Espota}
	if r := run(es); es.sends.Load() != 1 || r.Protocol != Espota {
		t.Errorf("espota alone: %d sends, %s over %q: %s", es.sends.Load(), r.Outcome, r.Protocol, r.Message)
	}
	es, ht := &countingTransport{p: Espota}, &countingTransport{p: HTTP}
	if r := run(es, ht); es.sends.Load()+ht.sends.Load() != 0 || r.Outcome != OutcomeFailed || !strings.Contains(r.Message, "no protocol decided") {
		t.Errorf("two transports: %d sends, %s: %s", es.sends.Load()+ht.sends.Load(), r.Outcome, r.Message)
	}
}
