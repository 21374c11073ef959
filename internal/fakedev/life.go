package fakedev

import (
	"sync"
	"time"
)

// life is what every fake device keeps of its own life: one lock, the
// events so far, and its stop (done closed once, goroutines waited for).
type life struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
	closed bool
	wg     sync.WaitGroup
}

func newLife() life { return life{done: make(chan struct{})} }

// Events is the device's life so far.
func (l *life) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// logEvent adds an event, stamped now; the caller holds mu.
func (l *life) logEvent(e Event) {
	e.At = time.Now()
	l.events = append(l.events, e)
}

// stopLocked marks the device closed and closes done; false when it was
// already. The caller holds mu.
func (l *life) stopLocked() bool {
	if l.closed {
		return false
	}
	l.closed = true
	close(l.done)
	return true
}

// locked reads *v under mu: a device's counters and state, read by a test
// while the device runs.
func locked[T any](mu *sync.Mutex, v *T) T {
	mu.Lock()
	defer mu.Unlock()
	return *v
}

// lockedCopy copies *v under mu, so that the caller holds its own.
func lockedCopy[T any](mu *sync.Mutex, v *[]T) []T {
	mu.Lock()
	defer mu.Unlock()
	return append([]T(nil), (*v)...)
}

// newAppRuns is the boot into a new app, as After has it: up false when
// the device never comes back (or was closed); rolled when the new app
// died before its network was up and the old one booted, a second boot
// of boot later.
func (l *life) newAppRuns(after After, boot time.Duration) (up, rolled bool) {
	switch after {
	case NeverComesBack:
		return false, false
	case RollsBack:
		if !sleepOrDone(l.done, boot) {
			return false, false
		}
		return true, true
	}
	return true, false
}
