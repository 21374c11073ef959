// Package familytest is what the MQTT families' tests share: a bound on
// every wait, the reports a Watch delivered, a log destination. Only tests
// import it.
package familytest

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/rollout"
)

// Wait bounds every wait on an event.
const Wait = 20 * time.Second

// Ctx is a context that ends after Wait or with the test.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

// Reports keeps what a Watch delivered, in order.
type Reports struct {
	mu  sync.Mutex
	got []rollout.Report
	ch  chan struct{}
}

// NewReports returns an empty Reports.
func NewReports() *Reports { return &Reports{ch: make(chan struct{}, 10000)} }

// Add is a Watch's fn.
func (r *Reports) Add(rep rollout.Report) {
	r.mu.Lock()
	r.got = append(r.got, rep)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

// Snapshot is the reports so far.
func (r *Reports) Snapshot() []rollout.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// Arrived is signalled once per report added.
func (r *Reports) Arrived() <-chan struct{} { return r.ch }

// Until waits (Wait at most) until pred holds over the reports so far.
func (r *Reports) Until(t *testing.T, what string, pred func([]rollout.Report) bool) []rollout.Report {
	t.Helper()
	deadline := time.After(Wait)
	for {
		got := r.Snapshot()
		if pred(got) {
			return got
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no %s; reports: %+v", what, got)
		}
	}
}

// HasKind holds when a report of kind k is among them.
func HasKind(k rollout.ReportKind) func([]rollout.Report) bool {
	return func(rs []rollout.Report) bool {
		return slices.ContainsFunc(rs, func(r rollout.Report) bool { return r.Kind == k })
	}
}

// SyncBuffer is a log destination safe for concurrent writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
