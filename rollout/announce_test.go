package rollout

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// fakeStore is an in-memory Store whose objects a loopback HTTP server
// serves at the URLs it gives, so the fake devices fetch from it.
type fakeStore struct {
	name string
	srv  *httptest.Server

	mu      sync.Mutex
	objs    map[string][]byte
	puts    int   // PutImage calls
	putErr  error // PutImage's
	fileErr error // PutFile's, GetFile's and DeleteFile's
}

func newFakeStore(t *testing.T, name string) *fakeStore {
	s := &fakeStore{name: name, objs: map[string][]byte{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b, ok := s.objs[strings.TrimPrefix(r.URL.Path, "/")]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *fakeStore) PutImage(_ context.Context, files map[string]string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if s.putErr != nil {
		return nil, s.putErr
	}
	h := sha256.New()
	data := map[string][]byte{}
	for _, n := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[n])
		if err != nil {
			return nil, err
		}
		data[n] = b
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	dir := "fw-" + hex.EncodeToString(h.Sum(nil))[:26]
	urls := map[string]string{}
	for n, b := range data {
		s.objs[dir+"/"+n] = b
		urls[n] = s.srv.URL + "/" + dir + "/" + n
	}
	return urls, nil
}

func (s *fakeStore) PutFile(_ context.Context, name string, body []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fileErr != nil {
		return "", s.fileErr
	}
	s.objs[name] = bytes.Clone(body)
	return s.srv.URL + "/" + name, nil
}

func (s *fakeStore) GetFile(_ context.Context, name string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fileErr != nil {
		return nil, false, s.fileErr
	}
	b, ok := s.objs[name]
	return bytes.Clone(b), ok, nil
}

func (s *fakeStore) DeleteFile(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fileErr != nil {
		return s.fileErr
	}
	delete(s.objs, name)
	return nil
}

func (s *fakeStore) String() string { return "fake://" + s.name }

func (s *fakeStore) get(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[name]
	return b, ok
}

func (s *fakeStore) set(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == nil {
		delete(s.objs, name)
		return
	}
	s.objs[name] = b
}

func (s *fakeStore) putImages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// announceFamily is the fake family with announcements (one file per
// distinct Device.Manifest, "" = manifest.json) and a Ready that waits
// until the device's file announces the target, as it reads it (look).
type announceFamily struct {
	*fakeFamily
	look       func(name string) ([]byte, bool)
	readyWait  time.Duration
	never      map[string]bool      // topics that never see it
	self       map[string]bool      // topics that install it on their own once announced
	barrier    int                  // Ready answers only once this many were in Ready at once
	readyDelay time.Duration        // Ready answers no sooner
	readyAt    map[string]time.Time // when Ready answered each device, ready
	readies    map[string]int       // Ready calls per device

	am        sync.Mutex
	in, maxIn int
	calls     [][]string // the devices of each Announce
}

func manifestOf(d Device) string { return cmp.Or(d.Manifest, "manifest.json") }

func (a *announceFamily) Announce(devs []Device, img Image, url, md5 string) (map[string][]byte, error) {
	by := map[string][]string{}
	var all []string
	for _, d := range devs {
		by[manifestOf(d)] = append(by[manifestOf(d)], d.Topic)
		all = append(all, d.Topic)
	}
	a.am.Lock()
	a.calls = append(a.calls, all)
	a.am.Unlock()
	files := map[string][]byte{}
	for name, topics := range by {
		files[name] = fmt.Appendf(nil, `{"version":"14.3.0","name":%q,"url":%q,"md5":%q,"devices":%q}`, img.Name, url, md5, topics)
	}
	return files, nil
}

func (a *announceFamily) Ready(ctx context.Context, d Device) error {
	a.am.Lock()
	a.in++
	a.maxIn = max(a.maxIn, a.in)
	if a.readies == nil {
		a.readies = map[string]int{}
	}
	a.readies[d.Topic]++
	a.am.Unlock()
	defer func() {
		a.am.Lock()
		a.in--
		a.am.Unlock()
	}()
	if a.self[d.Topic] {
		a.mu.Lock()
		fd := a.devs[d.Topic]
		a.mu.Unlock()
		a.restartInto(fd, "14.3.0") // an install-on-available automation
		return fmt.Errorf("%s installed it on its own: %w", d.Topic, ErrTookAnnouncement)
	}
	deadline := time.Now().Add(a.readyWait)
	if a.readyDelay > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.readyDelay):
		}
	}
	for {
		a.am.Lock()
		met := a.maxIn >= a.barrier
		a.am.Unlock()
		if b, ok := a.look(manifestOf(d)); ok && met && !a.never[d.Topic] && bytes.Contains(b, []byte(`"version":"14.3.0"`)) {
			a.am.Lock()
			if a.readyAt == nil {
				a.readyAt = map[string]time.Time{}
			}
			a.readyAt[d.Topic] = time.Now()
			a.am.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the device did not see 14.3.0 announced within %v", a.readyWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// httpLook reads a file the built-in server serves openly.
func httpLook(base string) func(string) ([]byte, bool) {
	return func(name string) ([]byte, bool) {
		resp, err := http.Get(base + "/" + name)
		if err != nil {
			return nil, false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b, resp.StatusCode == 200
	}
}

// freeAddr is a loopback address with a port free now: the built-in
// server needs a fixed one for announcements.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// announceRig is a rig whose family announces, through st (nil: the
// built-in server on a fixed port).
func announceRig(t *testing.T, plan Plan, st *fakeStore, manifests []string, bs ...behaviour) (*rig, *announceFamily) {
	t.Helper()
	r := newRigWith(t, plan, func(devs []Device) {
		for i := range devs {
			if i < len(manifests) {
				devs[i].Manifest = manifests[i]
			}
		}
	}, bs...)
	a := &announceFamily{fakeFamily: r.f, readyWait: 5 * time.Second}
	r.cfg.Family = a
	if st != nil {
		r.cfg.Store = st
		a.look = st.get
	} else {
		addr := freeAddr(t)
		r.cfg.Serve.Addr = addr
		a.look = httpLook("http://" + addr)
	}
	return r, a
}

func (r *rig) urlsTold(topic string) []string {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return slices.Clone(r.f.devs[topic].urls)
}

// Each wave's announcement is written when the wave starts, never before:
// with one manifest per cohort, a device of the second wave finds its own
// unchanged while the canary is commanded. What was written stays once
// the rollout completed; with a store, the state keeps what each name
// held before, the image is uploaded once and devices are told the
// store's URL as it gave it.
func TestAnnouncePerWave(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"store", "built-in"} {
		t.Run(mode, func(t *testing.T) {
			var st *fakeStore
			if mode == "store" {
				st = newFakeStore(t, "a")
				st.set("manifest.json", []byte("old"))
			}
			plan := Plan{Canary: 1, Waves: []Step{{Percent: 100}}}
			r, a := announceRig(t, plan, st, []string{"canary.json", "", ""}, succeed, succeed, succeed)
			r.cfg.MaxFetches = 1
			var sawMu sync.Mutex
			var saw []string
			last := map[string][]byte{}
			r.f.afterCommand = func(topic string) {
				b, ok := a.look("manifest.json")
				c, _ := a.look("canary.json")
				sawMu.Lock()
				saw = append(saw, fmt.Sprintf("%s %v %s", topic, ok, b))
				last["manifest.json"], last["canary.json"] = b, c
				sawMu.Unlock()
			}
			// With a store nothing is seen of the fetches: a device keeps
			// its slot until its verdict, which comes a stability window
			// after its boot at the earliest; with the file server it
			// gives the slot up at its boot.
			var bootMu sync.Mutex
			booted := map[string]time.Time{}
			r.f.onReport = func(rep Report) {
				if rep.Kind == ReportBooted {
					bootMu.Lock()
					booted[rep.Topic] = rep.At
					bootMu.Unlock()
				}
			}
			var early []string
			r.f.beforeCommand = func(topic string, n int) {
				bootMu.Lock()
				defer bootMu.Unlock()
				for _, d := range r.devs {
					at, ok := booted[d.Topic]
					if d.Topic != topic && r.f.commands(d.Topic) > 0 && (!ok || time.Since(at) < r.cfg.Stability) {
						early = append(early, topic+" while "+d.Topic+" has no verdict")
					}
				}
			}
			res := r.run(context.Background())
			for i, x := range res {
				if x.Outcome != upload.OutcomeUpdated {
					t.Fatalf("device %d: %s (%s)", i, x.Outcome, x.Message)
				}
			}
			canary := r.devs[0].Topic
			sawMu.Lock()
			first := saw[0]
			sawMu.Unlock()

			want := canary + " false "
			if st != nil {
				want = canary + " true old"
			}
			if first != want {
				t.Errorf("when the canary was commanded the second wave's manifest read %q, want %q", first, want)
			}
			// The built-in server stops with the run: what it served last
			// is read while the last device is commanded.
			sawMu.Lock()
			defer sawMu.Unlock()
			for _, name := range []string{"canary.json", "manifest.json"} {
				b, ok := last[name], last[name] != nil
				if st != nil {
					b, ok = a.look(name)
				}
				if !ok || !bytes.Contains(b, []byte(`"version":"14.3.0"`)) {
					t.Errorf("%s after the rollout: %v %q", name, ok, b)
				}
				if name == "canary.json" && bytes.Contains(b, []byte(r.devs[1].Topic)) {
					t.Errorf("the canary's manifest names a device of the next wave: %s", b)
				}
			}
			a.am.Lock()
			calls := slices.Clone(a.calls)
			a.am.Unlock()
			if len(calls) != 3 || len(calls[0]) != 3 || !slices.Equal(calls[1], []string{canary}) || len(calls[2]) != 2 {
				t.Errorf("Announce calls: %v (want all once, then each wave's)", calls)
			}
			rec := r.cfg.State.Record()
			if len(rec.Announcements) != 2 {
				t.Fatalf("state announcements: %+v", rec.Announcements)
			}
			for _, an := range rec.Announcements {
				if an.State != AnnouncementWritten || an.URL == "" || !strings.HasSuffix(an.URL, "/"+an.Name) {
					t.Errorf("state: %+v", an)
				}
				if wantPrev := st != nil && an.Name == "manifest.json"; an.Existed != wantPrev || wantPrev && string(an.Previous) != "old" {
					t.Errorf("%s: existed %v previous %q", an.Name, an.Existed, an.Previous)
				}
			}
			if st == nil {
				return
			}
			if len(early) > 0 {
				t.Errorf("commanded before the one before had its verdict: %v", early)
			}
			if n := st.putImages(); n != 1 {
				t.Errorf("PutImage called %d times", n)
			}
			if rec.Store == nil || rec.Store.Name != "fake://a" || rec.Store.URLs["fw.bin"] == "" {
				t.Fatalf("state store: %+v", rec.Store)
			}
			for _, d := range r.devs {
				if u := r.urlsTold(d.Topic); len(u) != 1 || u[0] != rec.Store.URLs["fw.bin"] {
					t.Errorf("%s told %q, want the store's %q", d.Topic, u, rec.Store.URLs["fw.bin"])
				}
			}
			if res[0].Bytes != nil || res[0].Rate != 0 {
				t.Errorf("bytes or rate told though nothing is seen of a store's fetch: %+v", res[0])
			}
		})
	}
}

// A gate that stops the rollout puts back what each announcement held
// before (or removes it), says so, and records it.
func TestAnnounceRevertOnCanaryFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store bool
		prev  []byte
		said  string
		state string
	}{
		{"store, was there", true, []byte(`{"version":"14.2.0"}`), "manifest manifest.json put back", AnnouncementPutBack},
		{"store, was not", true, nil, "manifest manifest.json removed", AnnouncementRemoved},
		{"built-in", false, nil, "manifest manifest.json removed", AnnouncementRemoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st *fakeStore
			if tc.store {
				st = newFakeStore(t, "r")
				st.set("manifest.json", tc.prev)
			}
			plan := Plan{Canary: 1, Waves: []Step{{Percent: 100}}}
			r, a := announceRig(t, plan, st, nil, failAlways, succeed)
			var during []byte
			r.f.afterCommand = func(string) { during, _ = a.look("manifest.json") }
			res := r.run(context.Background())
			if res[0].Outcome != upload.OutcomeFailed || res[1].Outcome != upload.OutcomeNotStarted || r.f.commands(r.devs[1].Topic) != 0 {
				t.Fatalf("results %s, %s", res[0].Outcome, res[1].Outcome)
			}
			if !bytes.Contains(during, []byte("14.3.0")) {
				t.Errorf("during the canary the manifest read %q", during)
			}
			if tc.store {
				if b, ok := st.get("manifest.json"); ok != (tc.prev != nil) || !bytes.Equal(b, tc.prev) {
					t.Errorf("after the stop: %v %q, want %q", ok, b, tc.prev)
				}
			}
			var stopped *WaveEvent
			for i := range r.waves {
				if r.waves[i].State == "stopped" {
					stopped = &r.waves[i]
				}
			}
			if stopped == nil || !strings.HasSuffix(stopped.Reason, "; "+tc.said) {
				t.Errorf("stopped wave event: %+v, want it to end %q", stopped, tc.said)
			}
			rec := r.cfg.State.Record()
			if len(rec.Announcements) != 1 || rec.Announcements[0].State != tc.state {
				t.Errorf("state: %+v", rec.Announcements)
			}
			if len(rec.Waves) == 0 || !strings.Contains(rec.Waves[0].Reason, tc.said) {
				t.Errorf("state waves: %+v", rec.Waves)
			}
		})
	}
}

// A device that never shows it saw the announcement ends failed (timeout)
// with the family's words, is never commanded, and counts against the
// budget: a canary's stops the rollout. Ready is asked of all of a wave's
// devices at once, whatever --max-fetches.
func TestReadyBeforeTheSlot(t *testing.T) {
	t.Parallel()
	t.Run("timeout", func(t *testing.T) {
		plan := Plan{Canary: 1, Waves: []Step{{Percent: 100}}}
		r, a := announceRig(t, plan, newFakeStore(t, "t"), nil, succeed, succeed)
		a.readyWait = 150 * time.Millisecond
		a.never = map[string]bool{r.devs[0].Topic: true}
		res := r.run(context.Background())
		x := res[0]
		if x.Outcome != upload.OutcomeFailed || x.Class != upload.ClassTimeout || x.Tries != 0 || r.f.commands(r.devs[0].Topic) != 0 ||
			!strings.Contains(x.Message, "did not see 14.3.0 announced") || strings.Contains(x.Message, "\n") {
			t.Errorf("never ready: %s class %s tries %d (%s)", x.Outcome, x.Class, x.Tries, x.Message)
		}
		if res[1].Outcome != upload.OutcomeNotStarted || r.f.commands(r.devs[1].Topic) != 0 {
			t.Errorf("after the canary: %s", res[1].Outcome)
		}
		if x.Duration < a.readyWait {
			t.Errorf("ended before its slot: duration %v, not from its read (its wait alone was %v)", x.Duration, a.readyWait)
		}
		if rec := r.cfg.State.Record(); rec.Devices[0].Phase != PhaseDone || len(rec.Devices[0].Commands) != 0 {
			t.Errorf("state: %+v", rec.Devices[0])
		}
	})
	t.Run("budget", func(t *testing.T) {
		r, a := announceRig(t, Plan{}, newFakeStore(t, "b"), nil, succeed, succeed, succeed)
		a.readyWait = 150 * time.Millisecond
		a.never = map[string]bool{r.devs[0].Topic: true, r.devs[1].Topic: true}
		r.cfg.MaxFetches = 1
		r.cfg.Plan.MaxFailures = upload.FailureBudget{Set: true, N: 1}
		res := r.run(context.Background())
		if res[0].Outcome != upload.OutcomeFailed || res[1].Outcome != upload.OutcomeFailed {
			t.Errorf("never ready: %s, %s", res[0].Outcome, res[1].Outcome)
		}
		if rec := r.cfg.State.Record(); !strings.Contains(rec.Stopped, "2 of") {
			t.Errorf("the budget did not count them: stopped %q", rec.Stopped)
		}
	})
	t.Run("installed on its own", func(t *testing.T) {
		// The announcement was its command: none is sent, and its boot
		// on the target since the read makes it updated.
		r, a := announceRig(t, Plan{}, newFakeStore(t, "s"), nil, succeed, succeed)
		a.self = map[string]bool{r.devs[0].Topic: true}
		res := r.run(context.Background())
		if x := res[0]; x.Outcome != upload.OutcomeUpdated || r.f.commands(r.devs[0].Topic) != 0 {
			t.Errorf("on its own: %s after %d commands (%s)", x.Outcome, r.f.commands(r.devs[0].Topic), x.Message)
		}
		if x := res[1]; x.Outcome != upload.OutcomeUpdated || r.f.commands(r.devs[1].Topic) != 1 {
			t.Errorf("commanded: %s after %d commands (%s)", x.Outcome, r.f.commands(r.devs[1].Topic), x.Message)
		}
		if rec := r.cfg.State.Record(); rec.Devices[0].Phase != PhaseDone || len(rec.Devices[0].Commands) != 1 {
			t.Errorf("state: the announcement not recorded as its command: %+v", rec.Devices[0])
		}
	})
	t.Run("no longer ready at its command", func(t *testing.T) {
		// Restarted while it waited for a slot: not commanded then, but
		// waited for again, once; a second time it is refused.
		r, a := announceRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, newFakeStore(t, "n"), nil, succeed, succeed)
		var mu sync.Mutex
		refused := map[string]int{}
		r.f.refuseCommand = func(topic string) error {
			mu.Lock()
			defer mu.Unlock()
			if topic == r.devs[0].Topic && refused[topic] == 0 || topic == r.devs[1].Topic {
				refused[topic]++
				return fmt.Errorf("%s tells no latest 14.3.0 any more (restarted): %w %w", topic, ErrNotSent, ErrNotReady)
			}
			return nil
		}
		res := r.run(context.Background())
		a.am.Lock()
		n0, n1 := a.readies[r.devs[0].Topic], a.readies[r.devs[1].Topic]
		a.am.Unlock()
		if x := res[0]; x.Outcome != upload.OutcomeUpdated || r.f.commands(r.devs[0].Topic) != 1 || n0 != 2 {
			t.Errorf("waited again: %s after %d commands, %d waits (%s)", x.Outcome, r.f.commands(r.devs[0].Topic), n0, x.Message)
		}
		if x := res[1]; x.Outcome != upload.OutcomeRefused || r.f.commands(r.devs[1].Topic) != 0 || n1 != 2 ||
			!strings.Contains(x.Message, "not commanded: ") || !strings.Contains(x.Message, "any more") {
			t.Errorf("twice not ready: %s after %d commands, %d waits (%s)", x.Outcome, r.f.commands(r.devs[1].Topic), n1, x.Message)
		}
		if rec := r.cfg.State.Record(); len(rec.Devices[1].Commands) != 0 {
			t.Errorf("state: a command recorded that was not sent: %+v", rec.Devices[1])
		}
	})
	t.Run("duration from the slot", func(t *testing.T) {
		// The wait for the announcement is no part of the update's
		// duration: it runs from the slot (just after Ready) to the verdict.
		r, a := announceRig(t, Plan{}, newFakeStore(t, "d"), nil, succeed)
		a.readyDelay = 300 * time.Millisecond
		res := r.run(context.Background())
		a.am.Lock()
		at, ok := a.readyAt[r.devs[0].Topic]
		a.am.Unlock()
		if x := res[0]; x.Outcome != upload.OutcomeUpdated || !ok || x.Duration > time.Since(at) {
			t.Errorf("%s (ready %v): duration %v, longer than since it was ready (%v)", x.Outcome, ok, x.Duration, time.Since(at))
		}
	})
	t.Run("all at once", func(t *testing.T) {
		r, a := announceRig(t, Plan{}, newFakeStore(t, "c"), nil, succeed, succeed, succeed)
		r.cfg.MaxFetches = 1
		a.barrier = 3
		a.readyWait = 10 * time.Second
		res := r.run(context.Background())
		for i, x := range res {
			if x.Outcome != upload.OutcomeUpdated {
				t.Errorf("device %d: %s (%s)", i, x.Outcome, x.Message)
			}
		}
	})
}

// An interrupted rollout keeps its announcements; --resume writes them
// again, uploads nothing again, and refuses another store (or none).
func TestResumeReannounces(t *testing.T) {
	t.Parallel()
	st := newFakeStore(t, "s")
	plan := Plan{Canary: 1, Waves: []Step{{Percent: 100}}}
	r, _ := announceRig(t, plan, st, []string{"canary.json"}, succeed, succeed)
	ctx, cancel := context.WithCancel(context.Background())
	r.f.afterCommand = cancelOn(r.devs[0].Topic, cancel)
	res := r.run(ctx)
	if res[0].Outcome != upload.OutcomeCancelled || res[1].Outcome != upload.OutcomeNotStarted {
		t.Fatalf("first run: %s, %s", res[0].Outcome, res[1].Outcome)
	}
	if _, ok := st.get("canary.json"); !ok {
		t.Fatalf("an interrupted rollout took its announcement back")
	}
	if _, ok := st.get("manifest.json"); ok {
		t.Fatalf("the second wave announced before it started")
	}
	r.f.afterCommand = nil
	r.cfg.State = r.reopenState(t)
	st.set("canary.json", nil) // lost meanwhile: the resumed run writes it again

	for _, other := range []*fakeStore{newFakeStore(t, "other"), nil} {
		r.cfg.Store = nil
		if other != nil {
			r.cfg.Store = other
		}
		_, err := Run(context.Background(), r.cfg)
		if err == nil || !strings.Contains(err.Error(), "same --store") || strings.Contains(err.Error(), "\n") {
			t.Errorf("resumed with store %v: %v", other, err)
		}
	}
	if r.f.commands(r.devs[1].Topic) != 0 || r.f.commands(r.devs[0].Topic) != 1 {
		t.Fatalf("commanded by a refused run")
	}
	r.cfg.Store = st
	res = r.run(context.Background())
	for i, x := range res {
		if x.Outcome != upload.OutcomeUpdated {
			t.Errorf("resumed, device %d: %s (%s)", i, x.Outcome, x.Message)
		}
	}
	if n := st.putImages(); n != 1 {
		t.Errorf("PutImage called %d times, want once", n)
	}
	if r.f.commands(r.devs[0].Topic) != 1 {
		t.Errorf("the canary commanded again")
	}
	for _, name := range []string{"canary.json", "manifest.json"} {
		if b, ok := st.get(name); !ok || !bytes.Contains(b, []byte("14.3.0")) {
			t.Errorf("%s after the resumed run: %v %q", name, ok, b)
		}
	}
}

// A store that cannot take the image ends the run before anything is
// told or recorded; so does a built-in server without a fixed port when
// devices poll an announcement.
func TestStoreAndAnnounceRefusals(t *testing.T) {
	t.Run("PutImage", func(t *testing.T) {
		st := newFakeStore(t, "e")
		st.putErr = errors.New("fake://e: access denied")
		r, _ := announceRig(t, Plan{}, st, nil, succeed)
		_, err := Run(context.Background(), r.cfg)
		if err == nil || !strings.Contains(err.Error(), "access denied") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Run = %v", err)
		}
		if r.f.commands(r.devs[0].Topic) != 0 || r.f.watches != 0 || !r.cfg.State.Untouched() {
			t.Errorf("commanded, watched or recorded as commanded")
		}
		if rec := r.cfg.State.Record(); rec.Store != nil || len(rec.Announcements) != 0 {
			t.Errorf("state: store %+v announcements %+v", rec.Store, rec.Announcements)
		}
		if _, ok := st.get("manifest.json"); ok {
			t.Errorf("announced without an image")
		}
	})
	t.Run("URLChecker", func(t *testing.T) {
		st := newFakeStore(t, "u")
		r := newRig(t, Plan{}, succeed)
		c := &checkingFamily{fakeFamily: r.f, urlErr: errors.New("no such URL")}
		r.cfg.Family, r.cfg.Store = c, st
		if _, err := Run(context.Background(), r.cfg); err == nil || err.Error() != "no such URL" {
			t.Fatalf("Run = %v", err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.urls) != 1 || !strings.HasPrefix(c.urls[0], st.srv.URL+"/") {
			t.Errorf("checked %q", c.urls)
		}
		if r.f.commands(r.devs[0].Topic) != 0 {
			t.Errorf("commanded")
		}
	})
	t.Run("port", func(t *testing.T) {
		r, _ := announceRig(t, Plan{}, nil, nil, succeed)
		r.cfg.Serve.Addr = "127.0.0.1:0"
		_, err := Run(context.Background(), r.cfg)
		if err == nil || !strings.Contains(err.Error(), "fixed port") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("Run = %v", err)
		}
		if r.f.watches != 0 {
			t.Errorf("watched")
		}
	})
}
