package upload

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDecideIntermediate: a loader image (Tasmota's minimal, safeboot)
// is a step of the upgrade, never its end, even when its release is the
// expected one.
func TestDecideIntermediate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	before := Facts{Answered: true, Version: "14.2.0", VersionSource: "Status 0", Uptime: time.Hour, UptimeKnown: true, UptimeSource: "Status 0"}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	silent := func(s float64) Observation {
		return Observation{At: at(s), End: at(s + 0.5), Silent: true}
	}
	minimal := func(s float64) Observation {
		return Observation{At: at(s), End: at(s + 0.1), Facts: Facts{Answered: true, Version: "14.3.0", VersionSource: "Status 0", Intermediate: "minimal", Image: "14.3.0(minimal)",
			Uptime: 2 * time.Second, UptimeKnown: true, UptimeSource: "Status 0"}}
	}
	fw := func(s float64, up time.Duration) Observation {
		return Observation{At: at(s), End: at(s + 0.1), Facts: Facts{Answered: true, Version: "14.3.0", VersionSource: "Status 0", Image: "14.3.0(tasmota)",
			Uptime: up, UptimeKnown: true, UptimeSource: "Status 0"}}
	}
	for _, tc := range []struct {
		name     string
		expected Identity
		noWait   bool
		obs      []Observation
		now      float64
		final    bool
		done     bool
		outcome  Outcome
		words    string
	}{
		{name: "minimal is no end", expected: Identity{Version: "14.3.0"}, obs: []Observation{silent(1), silent(2), minimal(3), minimal(40)}, now: 41},
		{name: "minimal is no end with --no-wait-valid", expected: Identity{Version: "14.3.0"}, noWait: true, obs: []Observation{silent(1), silent(2), minimal(3)}, now: 41},
		{name: "stays in minimal", expected: Identity{Version: "14.3.0"}, obs: []Observation{silent(1), silent(2), minimal(3), minimal(80)}, now: 90, final: true, done: true, outcome: OutcomeFailed, words: "minimal image (14.3.0(minimal))"},
		{name: "silent after minimal", expected: Identity{Version: "14.3.0"}, obs: []Observation{minimal(3), silent(10), silent(11)}, now: 90, final: true, done: true, outcome: OutcomeUnreachable, words: "minimal"},
		{name: "minimal, then the firmware", expected: Identity{Version: "14.3.0"}, obs: []Observation{silent(1), silent(2), minimal(3), silent(20), silent(21), fw(25, 2*time.Second), fw(40, 17*time.Second)}, now: 41, done: true, outcome: OutcomeUpdated},
		{name: "no identity: minimal is no return", obs: []Observation{minimal(3)}, now: 40},
		{name: "no identity: stays in minimal", obs: []Observation{minimal(3)}, now: 90, final: true, done: true, outcome: OutcomeFailed},
		{name: "no identity: the firmware", obs: []Observation{minimal(3), fw(30, time.Second)}, now: 40, done: true, outcome: OutcomeUnverified, words: "--expect-version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := VerdictSpec{Expected: tc.expected, Before: before, BeforeAt: t0, Accepted: t0, StabilityWindow: 10 * time.Second, RebootGrace: 15 * time.Second, NoWaitValid: tc.noWait}
			v, done := Decide(spec, tc.obs, at(tc.now), tc.final)
			if done != tc.done || v.Outcome != tc.outcome || !strings.Contains(v.Message, tc.words) {
				t.Fatalf("got %v %s %q, want %v %s %q", done, v.Outcome, v.Message, tc.done, tc.outcome, tc.words)
			}
		})
	}
}

// quietDevice is a family with Traits.QuietProbe: a TCP listener stands
// for its web port; its facts say whether it runs the new image.
type quietDevice struct {
	mu       sync.Mutex
	ln       net.Listener
	addr     string
	accepts  []time.Time
	reads    []time.Time
	sent     time.Time
	back     time.Time // when it came back (zero: never went away)
	away     time.Duration
	version  string
	upSince  time.Time
	finishes int
	finishAt time.Time
	settled  bool // what Finish was told
	expect   bool // Send's image has an app descriptor whose version the device reports
}

func (q *quietDevice) listen(t *testing.T) {
	if err := q.relisten(); err != nil {
		t.Fatal(err)
	}
}

// relisten opens the port again (the device is back).
func (q *quietDevice) relisten() error {
	q.mu.Lock()
	addr := q.addr
	q.mu.Unlock()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.ln, q.addr = ln, ln.Addr().String()
	q.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			q.mu.Lock()
			q.accepts = append(q.accepts, time.Now())
			q.mu.Unlock()
			c.Close()
		}
	}()
	return nil
}

func (q *quietDevice) Protocol() Protocol { return Tasmota }

func (q *quietDevice) Traits() Traits {
	return Traits{QuietProbe: 150 * time.Millisecond, QuietHold: 900 * time.Millisecond, NoImageIdentity: true}
}

func (q *quietDevice) Send(ctx context.Context, t Target, fw *Firmware, _ Credentials, emit Emit) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = time.Now()
	if q.away > 0 {
		// It restarts: its port is gone for a while, then back on the new image.
		q.ln.Close()
		go func() {
			time.Sleep(q.away)
			q.mu.Lock()
			q.version, q.upSince, q.back = "14.3.0", time.Now(), time.Now()
			q.mu.Unlock()
			q.relisten()
		}()
	} else {
		q.version, q.upSince = "14.3.0", time.Now()
	}
	return nil
}

func (q *quietDevice) Finish(_ context.Context, _ Target, _ Credentials, end Ending) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.finishes++
	q.settled = end.Settled
	q.finishAt = time.Now()
	return "put back: test"
}

func (q *quietDevice) Observe(_ context.Context, t Target) (Facts, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reads = append(q.reads, time.Now())
	return Facts{Answered: true, Version: q.version, VersionSource: "Status 0", Uptime: time.Since(q.upSince) + time.Second, UptimeKnown: true, UptimeSource: "Status 0"}, nil
}

// TestRunQuiet: after the upload nothing but TCP connects, at most one per
// QuietProbe, reach the device until it was seen away and back (or the
// hold passed); Finish runs once, after the verdict.
func TestRunQuiet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		away   time.Duration
		expect string
		want   Outcome
		reason Reason
	}{
		{name: "away and back", away: 600 * time.Millisecond, expect: "14.3.0", want: OutcomeUpdated},
		{name: "restart unseen: the hold", expect: "14.3.0", want: OutcomeUpdated},
		{name: "no --expect-version: the descriptor's version is no identity", away: 400 * time.Millisecond, want: OutcomeUnverified, reason: ReasonNoIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := &quietDevice{addr: "127.0.0.1:0", away: tc.away, version: "14.2.0", upSince: time.Now().Add(-time.Hour)}
			q.listen(t)
			host, port, _ := net.SplitHostPort(q.addr)
			var p int
			for _, c := range port {
				p = p*10 + int(c-'0')
			}
			fw := testFirmware(t, "14.3.0") // its descriptor says 14.3.0, which the device also reports
			opts := Options{Transports: map[Protocol]Transport{Tasmota: q}, Observer: q, ExpectVersion: tc.expect,
				StabilityWindow: 300 * time.Millisecond, VerifyTimeout: 20 * time.Second, RebootGrace: 5 * time.Second,
				PollInterval: 20 * time.Millisecond, ProbeTimeout: time.Second, Seed: 1}
			res := Run(context.Background(), fw, []Target{{Name: "plug", Host: host, Port: p, Protocol: Tasmota}}, opts)
			r := res[0]
			if r.Outcome != tc.want || r.Reason != tc.reason {
				t.Fatalf("outcome %s %s (%s), want %s %s", r.Outcome, r.Reason, r.Message, tc.want, tc.reason)
			}
			q.mu.Lock()
			defer q.mu.Unlock()
			// Reads after the upload: only once the device was back, or
			// after the hold.
			for _, at := range q.reads {
				if at.Before(q.sent) {
					continue
				}
				if tc.away > 0 && at.Before(q.back) {
					t.Fatalf("read at %v, before the device was back (%v)", at.Sub(q.sent), q.back.Sub(q.sent))
				}
				if tc.away == 0 && at.Sub(q.sent) < 900*time.Millisecond {
					t.Fatalf("read %v after the upload, within the hold", at.Sub(q.sent))
				}
			}
			var after []time.Time
			for _, a := range q.accepts {
				if a.After(q.sent) {
					after = append(after, a)
				}
			}
			for i := 1; i < len(after); i++ {
				// The connects themselves are spaced; their accepts may
				// land a little closer (scheduling): allow 50 ms.
				if d := after[i].Sub(after[i-1]); d < 100*time.Millisecond {
					t.Fatalf("connects %v apart, want at least QuietProbe", d)
				}
			}
			if tc.away == 0 && len(after) < 2 {
				t.Fatalf("%d connects during the hold", len(after))
			}
			if q.finishes != 1 || !q.settled || len(r.Warnings) == 0 || r.Warnings[len(r.Warnings)-1] != "put back: test" {
				t.Fatalf("finishes %d (settled %v), warnings %q", q.finishes, q.settled, r.Warnings)
			}
			if last := q.reads[len(q.reads)-1]; q.finishAt.Before(last) {
				t.Fatalf("Finish before the last read")
			}
		})
	}
}
