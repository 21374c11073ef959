// Package fleetrun starts and stops the pulling sims' fleets the same way:
// every device connects first (so that an unreachable broker is one error
// before anything runs), then each runs on its own goroutine until Close or
// the caller's context ends.
package fleetrun

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Device is one simulated device as the runner drives it.
type Device interface {
	Name() string // for an error naming it
	PowerOn()     // the first boot's start
	Connect(ctx context.Context) error
	Drop()                   // break the link without a DISCONNECT (the will)
	Run(ctx context.Context) // the firmware's loop, until ctx ends
}

// connectParallel bounds how many devices connect at once (a broker's listen
// backlog is finite).
const connectParallel = 32

// Runner runs the devices Start started.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start powers on and connects every device, then runs each. A failed
// connection is an error naming the first device that failed, and every
// device's link is dropped again; so is a ctx that ended meanwhile.
func Start(ctx context.Context, devs []Device) (*Runner, error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Runner{cancel: cancel}
	errs := make([]error, len(devs))
	sem := make(chan struct{}, connectParallel)
	var cw sync.WaitGroup
	for i, d := range devs {
		cw.Add(1)
		sem <- struct{}{}
		go func() {
			defer cw.Done()
			defer func() { <-sem }()
			d.PowerOn()
			errs[i] = d.Connect(ctx)
		}()
	}
	cw.Wait()
	if err := errors.Join(errs...); err != nil || ctx.Err() != nil {
		for _, d := range devs {
			d.Drop() // the will: they were never really up
		}
		cancel()
		for i, e := range errs {
			if e != nil {
				return nil, fmt.Errorf("%s: %w", devs[i].Name(), e)
			}
		}
		return nil, ctx.Err()
	}
	for _, d := range devs {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			d.Run(runCtx)
		}()
	}
	go func() { // the caller's context ends the fleet too
		select {
		case <-ctx.Done():
			cancel()
		case <-runCtx.Done():
		}
	}()
	return r, nil
}

// Close stops every device and waits until each has.
func (r *Runner) Close() {
	r.cancel()
	r.wg.Wait()
}

// Counts tells how many devices run each version, as "N × version", sorted.
func Counts(versions []string) []string {
	m := map[string]int{}
	for _, v := range versions {
		m[v]++
	}
	var out []string
	for v, n := range m {
		out = append(out, fmt.Sprintf("%d × %s", n, v))
	}
	sort.Strings(out)
	return out
}

// Life is a device's life after Start's first connect: boots until ctx
// ends. live runs one boot and returns what to boot next; reboot boots it
// (false: the device will not come back). The link is dropped (the will)
// at the end, and stopped told.
func Life[N any](ctx context.Context, live func(context.Context) N, reboot func(context.Context, N) bool, drop, stopped func()) {
	defer stopped()
	for {
		next := live(ctx)
		if ctx.Err() != nil {
			drop()
			return
		}
		if !reboot(ctx, next) {
			drop()
			<-ctx.Done()
			return
		}
	}
}
