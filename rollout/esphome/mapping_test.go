package esphome

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/internal/watch"
)

// step is one message to the family (or an INSTALL sent).
type step struct {
	topic, payload string
	retained       bool
	install        bool // Command's bookkeeping before this step's message
}

func st(installed, latest string) string {
	return fmt.Sprintf(`{"installed_version":%q,"latest_version":%q,"title":"node"}`, installed, latest)
}

func live(p string) step     { return step{topic: "n/update/fw/state", payload: p} }
func retained(p string) step { return step{topic: "n/update/fw/state", payload: p, retained: true} }

// The report each message makes, fed to the family as its broker client
// would: retained messages make none, a boot is an empty installed
// version after a told one, or another version than the last told, or
// the first version after an empty state; the first state after INSTALL
// is started.
func TestReportMapping(t *testing.T) {
	for _, c := range []struct {
		name  string
		steps []step
		want  []string // "kind version"
	}{
		{"retained only", []step{retained(st("1.0.0", "1.0.0")), {topic: "n/status", payload: "online", retained: true}}, nil},
		{"a check, nothing new", []step{retained(st("1.0.0", "1.0.0")), live(st("1.0.0", "1.1.0"))}, []string{"status 1.0.0"}},
		{"the first ever heard is live", []step{live(st("1.0.0", "1.0.0"))}, []string{"status 1.0.0"}},
		{"empty after told, then the new version", []step{retained(st("1.0.0", "1.1.0")), live(st("", "")), live(st("1.1.0", "1.1.0"))},
			[]string{"status ", "booted 1.1.0"}},
		{"empty after told, then the same version", []step{retained(st("1.0.0", "1.1.0")), live(st("", "")), live(st("1.0.0", "1.1.0"))},
			[]string{"status ", "booted 1.0.0"}},
		{"installed changed with no empty state seen", []step{retained(st("1.0.0", "1.1.0")), live(st("1.1.0", "1.1.0"))}, []string{"booted 1.1.0"}},
		{"retained empty, then its first check", []step{retained(st("", "")), live(st("1.0.0", "1.0.0"))}, []string{"booted 1.0.0"}},
		{"retained new version after an outage is no boot", []step{retained(st("1.0.0", "1.1.0")), retained(st("1.1.0", "1.1.0")), live(st("1.1.0", "1.1.0"))},
			[]string{"status 1.1.0"}},
		{"a copy of the same message", []step{retained(st("1.0.0", "1.1.0")), live(st("1.1.0", "1.1.0")), live(st("1.1.0", "1.1.0"))},
			[]string{"booted 1.1.0", "status 1.1.0"}},
		{"empty twice", []step{retained(st("1.0.0", "1.1.0")), live(st("", "")), live(st("", ""))}, []string{"status ", "status "}},
		{"the whole update", []step{
			retained(st("1.0.0", "1.0.0")), live(st("1.0.0", "1.1.0")),
			{topic: "n/update/fw/state", payload: st("1.0.0", "1.1.0"), install: true}, live(st("1.0.0", "1.1.0")),
			{topic: "n/status", payload: "offline"}, {topic: "n/status", payload: "online"},
			live(st("", "")), live(st("1.1.0", "1.1.0")),
		}, []string{"status 1.0.0", "started 1.0.0", "status 1.0.0", "offline ", "online ", "status ", "success ", "booted 1.1.0"}},
		{"INSTALL, then a boot: no started", []step{retained(st("1.0.0", "1.1.0")), {topic: "n/update/fw/state", payload: st("", ""), install: true}, live(st("1.1.0", "1.1.0"))},
			[]string{"status ", "success ", "booted 1.1.0"}},
		{"INSTALL, then a boot into the same version: no success", []step{retained(st("1.0.0", "1.1.0")), {topic: "n/update/fw/state", payload: st("1.0.0", "1.1.0"), install: true},
			live(st("", "")), live(st("1.0.0", "1.1.0"))},
			[]string{"started 1.0.0", "status ", "booted 1.0.0"}},
		{"status words", []step{{topic: "n/status", payload: "Online"}, {topic: "n/status", payload: "sleeping"}, {topic: "n/status", payload: "offline", retained: true}},
			[]string{"online "}},
		{"garbage", []step{live("INSTALL"), live(`{"installed_version":`), {topic: "n/update/fw/command", payload: "INSTALL"}, {topic: "n/update/+/state", payload: st("1", "1")}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := New(Config{})
			now := time.Now()
			f.filters[statusTopic("n")] = &filterState{at: now}
			f.filters[statesFilter("n")] = &filterState{at: now}
			var got []rollout.Report
			w := watch.New(context.Background(), nil)
			w.Add("n")
			f.watchers[w] = struct{}{}
			for i, s := range c.steps {
				at := now.Add(time.Duration(i+1) * time.Second)
				if s.install {
					f.mu.Lock()
					ds := f.devLocked("n")
					ds.commanded, ds.cmdEntity, ds.awaitStart = at.Add(-time.Millisecond), "fw", true
					f.mu.Unlock()
				}
				filter := statesFilter("n")
				if strings.HasSuffix(s.topic, "/status") {
					filter = statusTopic("n")
				}
				f.arrive(filter, broker.Message{Topic: s.topic, Payload: []byte(s.payload), Retained: s.retained, At: at})
			}
			got = w.Queued()
			var kinds []string
			for _, r := range got {
				kinds = append(kinds, string(r.Kind)+" "+r.Facts.Version)
				if r.Topic != "n" || r.At.IsZero() || strings.Contains(r.Words, "\n") {
					t.Errorf("report %+v", r)
				}
			}
			if !reflect.DeepEqual(kinds, c.want) {
				t.Fatalf("reports %q, want %q", kinds, c.want)
			}
		})
	}
}

// A message the family took through another of its filters (a device's
// own and the wildcard both match) is taken once.
func TestOverlappingFiltersTakeOnce(t *testing.T) {
	f := New(Config{})
	now := time.Now()
	f.filters[statesFilter("n")] = &filterState{at: now}
	f.filters[wildStates] = &filterState{at: now}
	w := watch.New(context.Background(), nil)
	f.watchers[w] = struct{}{}
	m := broker.Message{Topic: "n/update/fw/state", Payload: []byte(st("1.0.0", "1.0.0")), At: now}
	f.arrive(statesFilter("n"), m)
	f.arrive(wildStates, m)
	if len(w.Queued()) != 1 {
		t.Fatalf("reports %+v", w.Queued())
	}
}

// A node that booted before the command and checks for the first time
// only after it: its first version is that earlier boot's, dated at its
// empty state, so no restart after the command is claimed (the demo's
// canary once ended "restarted without installing the image").
func TestFirstCheckAfterCommandIsNoRestart(t *testing.T) {
	f := New(Config{})
	now := time.Now()
	f.filters[statusTopic("n")] = &filterState{at: now}
	f.filters[statesFilter("n")] = &filterState{at: now}
	w := watch.New(context.Background(), nil)
	w.Add("n")
	f.watchers[w] = struct{}{}
	at := func(s float64) time.Time { return now.Add(time.Duration(s * float64(time.Second))) }
	f.arrive(statesFilter("n"), broker.Message{Topic: "n/update/fw/state", Payload: []byte(st("", "")), Retained: true, At: at(1)})
	f.mu.Lock()
	ds := f.devLocked("n")
	ds.commanded, ds.cmdEntity, ds.awaitStart = at(2), "fw", true
	f.mu.Unlock()
	f.arrive(statesFilter("n"), broker.Message{Topic: "n/update/fw/state", Payload: []byte(st("1.0.0", "1.1.0")), At: at(3)})
	var booted []rollout.Report
	for _, r := range w.Queued() {
		if r.Kind == rollout.ReportBooted {
			booted = append(booted, r)
		}
	}
	if len(booted) != 1 || !booted[0].At.Equal(at(1)) || booted[0].Facts.Version != "1.0.0" {
		t.Fatalf("reports %+v: want one booted 1.0.0 dated at its empty state", w.Queued())
	}
	// After the command, a real restart: empty, then the new version,
	// dated at the empty state (after the command).
	f.arrive(statesFilter("n"), broker.Message{Topic: "n/update/fw/state", Payload: []byte(st("", "")), At: at(10)})
	f.arrive(statesFilter("n"), broker.Message{Topic: "n/update/fw/state", Payload: []byte(st("1.1.0", "1.1.0")), At: at(12)})
	last := w.Queued()[len(w.Queued())-1]
	if last.Kind != rollout.ReportBooted || last.Facts.Version != "1.1.0" || !last.At.Equal(at(10)) {
		t.Fatalf("last report %+v: want booted 1.1.0 at its empty state", last)
	}
}
