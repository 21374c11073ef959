// Package watch is the MQTT families' Watch plumbing: each Watch's reports
// wait in a queue for its own goroutine, so that its fn may block (even read
// a device) without holding up the messages behind it.
package watch

import (
	"context"
	"sync"

	"github.com/ots-ota/ots-ota/rollout"
)

// Watcher is one Watch.
type Watcher struct {
	devs map[string]bool // nil = every device
	fn   func(rollout.Report)
	ctx  context.Context

	mu    sync.Mutex
	queue []rollout.Report
	wake  chan struct{} // capacity 1
}

// New returns a watcher of every device that calls fn until ctx ends.
func New(ctx context.Context, fn func(rollout.Report)) *Watcher {
	return &Watcher{fn: fn, ctx: ctx, wake: make(chan struct{}, 1)}
}

// Add narrows w to the devices added (by topic); false when dev was added
// already.
func (w *Watcher) Add(dev string) bool {
	if w.devs == nil {
		w.devs = map[string]bool{}
	}
	if w.devs[dev] {
		return false
	}
	w.devs[dev] = true
	return true
}

// Wants says whether w watches dev.
func (w *Watcher) Wants(dev string) bool { return w.devs == nil || w.devs[dev] }

// Push queues r.
func (w *Watcher) Push(r rollout.Report) {
	w.mu.Lock()
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Go runs w on a goroutine of its own until its ctx ends; then it leaves s,
// under mu (the lock that guards s).
func (w *Watcher) Go(mu sync.Locker, s Set) {
	go w.run()
	context.AfterFunc(w.ctx, func() {
		mu.Lock()
		delete(s, w)
		mu.Unlock()
	})
}

func (w *Watcher) run() {
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, r := range q {
			if w.ctx.Err() != nil {
				return
			}
			w.fn(r)
		}
		select {
		case <-w.wake:
		case <-w.ctx.Done():
			return
		}
	}
}

// Set is a family's watchers; the family's lock guards it.
type Set map[*Watcher]struct{}

// Push queues r for every watcher of its device.
func (s Set) Push(r rollout.Report) {
	for w := range s {
		if w.Wants(r.Topic) {
			w.Push(r)
		}
	}
}

// Queued is what waits in w's queue (for tests of a family that never runs
// its watcher).
func (w *Watcher) Queued() []rollout.Report {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queue
}

// LogAttrs are r's log attributes: only what the device told (a fact not
// told is left out, never logged as "").
func LogAttrs(r rollout.Report) []any {
	a := []any{"topic", r.Topic, "kind", r.Kind}
	for _, kv := range [][2]string{{"source", r.Source}, {"words", r.Words}, {"version", r.Facts.Version},
		{"latest", r.Facts.Latest}, {"restart_reason", r.Facts.RestartReason}} {
		if kv[1] != "" {
			a = append(a, kv[0], kv[1])
		}
	}
	if r.Facts.BootCount != nil {
		a = append(a, "boot_count", *r.Facts.BootCount)
	}
	if r.Facts.IP != "" {
		a = append(a, "ip", r.Facts.IP)
	}
	return a
}
