package detect

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
)

// TestDetectSimPersonalities: detection of every simulated personality
// asks allowed probes only, with no credentials, and changes nothing on
// the device (no event but ready). The requests are the device's own
// request log (sim.Config.OnRequest), which sees every HTTP request any
// personality receives, refused ones included.
func TestDetectSimPersonalities(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sim.Config
		want Protocol
	}{
		{"seed", sim.Config{Personality: sim.Seed, Password: auth.NewSecret("pw")}, HTTP},
		{"seed extensions", sim.Config{Personality: sim.Seed, Extensions: true}, HTTP},
		{"ots", sim.Config{Personality: sim.OTS}, HTTP},
		{"ots extensions", sim.Config{Personality: sim.OTS, Extensions: true}, HTTP},
		{"arduino", sim.Config{Personality: sim.Arduino, Password: auth.NewSecret("pw")}, Espota},
		{"esp8266", sim.Config{Personality: sim.ESP8266}, Espota},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []sim.EventKind
			cfg := tc.cfg
			tm := sim.FastTiming()
			cfg.Timing, cfg.Seed = &tm, 1
			rec := &recorder{}
			cfg.OnRequest = func(r sim.HTTPRequest) {
				h := http.Header{}
				for _, kv := range r.Headers {
					h.Add(kv.Name, kv.Value)
				}
				rec.add(seen{method: r.Method, target: r.URI, header: h})
			}
			cfg.OnEvent = func(e sim.Event) {
				mu.Lock()
				events = append(events, e.Event)
				mu.Unlock()
			}
			d, err := sim.Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			host, p, _ := net.SplitHostPort(d.OTAAddr())
			port, _ := strconv.Atoi(p)
			tg := Target{Host: host, Port: port, WebPort: -1}
			if w := d.WebAddr(); w != "" {
				_, wp, _ := net.SplitHostPort(w)
				tg.WebPort, _ = strconv.Atoi(wp)
			}
			var sent atomic.Int32 // HTTP probes detection sent
			det := Detector{ConnectTimeout: time.Second, RequestTimeout: time.Second, OnProbe: func(_ string, p Probe) {
				if p.Kind == KindHTTP {
					sent.Add(1)
				}
			}}
			for _, ev := range []Evidence{{}, {Word: HTTP, WordFrom: "--protocol"}} {
				if ev.Word == HTTP && !tc.cfg.Personality.HTTP() {
					continue
				}
				dec := det.Detect(context.Background(), tg, ev)
				if dec.Protocol != tc.want || dec.Refused || dec.Failure != nil {
					t.Fatalf("%+v: got %+v (failure %v), want %s", ev, dec, dec.Failure, tc.want)
				}
			}
			// The device logs a request as it reads it, which may be after
			// the answer reached detection: wait until it logged as many
			// as were sent (a generous deadline; more would be a defect).
			deadline := time.Now().Add(10 * time.Second)
			for len(rec.all()) < int(sent.Load()) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			reqs := rec.all()
			if len(reqs) != int(sent.Load()) {
				t.Errorf("the device logged %d requests, detection sent %d HTTP probes", len(reqs), sent.Load())
			}
			checkProbes(t, tc.name, reqs)
			if tc.cfg.Personality.HTTP() && len(reqs) == 0 {
				t.Error("the device saw no request: the test shows nothing")
			}
			mu.Lock()
			defer mu.Unlock()
			for _, k := range events {
				if k != sim.EventReady {
					t.Errorf("detection caused a device event %s (all: %v)", k, events)
				}
			}
			if n := len(d.State().Uploads); n != 0 {
				t.Errorf("detection started %d uploads", n)
			}
		})
	}
}
