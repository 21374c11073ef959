package detect

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
)

// recordingProxy forwards loopback TCP to addr and records every HTTP
// request the client sends through it: what a device's request log would
// show.
func recordingProxy(t *testing.T, addr string, rec *recorder) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				var sent bytes.Buffer
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(c, up)
					c.Close()
					close(done)
				}()
				_, _ = io.Copy(io.MultiWriter(up, &sent), c)
				<-done
				br := bufio.NewReader(&sent)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						if err != io.EOF {
							rec.add(seen{method: "UNPARSED", target: err.Error(), header: http.Header{}})
						}
						return
					}
					n, _ := io.Copy(io.Discard, r.Body)
					rec.add(seen{method: r.Method, target: r.RequestURI, header: r.Header, body: n})
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestDetectSimPersonalities: detection of every simulated personality
// asks allowed probes only, with no credentials, and changes nothing on
// the device (no event but ready). The requests are read from a recording
// proxy in front of the device's HTTP ports; espota devices are probed
// directly (a proxy would accept the TCP connect they refuse).
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
			rec := &recorder{}
			host, p, _ := net.SplitHostPort(d.OTAAddr())
			port, _ := strconv.Atoi(p)
			tg := Target{Host: host, Port: port, WebPort: -1}
			if tc.cfg.Personality.HTTP() {
				tg = Target{Host: "127.0.0.1", Port: recordingProxy(t, d.OTAAddr(), rec), WebPort: -1}
				if w := d.WebAddr(); w != "" {
					tg.WebPort = recordingProxy(t, w, rec)
				}
			}
			det := Detector{ConnectTimeout: time.Second, RequestTimeout: time.Second}
			for _, ev := range []Evidence{{}, {Word: HTTP, WordFrom: "--protocol"}} {
				if ev.Word == HTTP && !tc.cfg.Personality.HTTP() {
					continue
				}
				dec := det.Detect(context.Background(), tg, ev)
				if dec.Protocol != tc.want || dec.Refused || dec.Failure != nil {
					t.Fatalf("%+v: got %+v (failure %v), want %s", ev, dec, dec.Failure, tc.want)
				}
			}
			time.Sleep(50 * time.Millisecond) // let the proxy log and a stray event show up
			reqs := rec.all()
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
