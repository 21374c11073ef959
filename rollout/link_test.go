package rollout

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// A broker outage makes the rollout wait: no read made while the link is
// down counts against a device, devices in flight are watched again once
// it is back (their reports from the gap are lost), and none is commanded
// again.
func TestLinkOutage(t *testing.T) {
	const outage = 2 * time.Second // longer than a device's bound: the run must wait it out
	cases := []struct {
		name   string
		bs     []behaviour
		arm    func(r *rig)
		want   []upload.Outcome
		source string // dev0's version source ("" = not checked)
		msg    string // a part of dev0's message ("" = not checked)
	}{
		{name: "down before the first read", bs: []behaviour{succeed, succeed},
			arm: func(r *rig) {
				r.f.setLink(false)
				time.AfterFunc(outage, func() { r.f.setLink(true) })
			},
			want: []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeUpdated}},
		{name: "down during a read", bs: []behaviour{succeed, succeed},
			arm: func(r *rig) {
				var once sync.Once
				r.f.duringPreflight = func(topic string) {
					once.Do(func() {
						r.f.setLink(false)
						time.AfterFunc(outage, func() { r.f.setLink(true) })
					})
				}
			},
			want: []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeUpdated}},
		{name: "down in flight, its reports lost: the read after the outage tells", bs: []behaviour{succeed},
			arm: func(r *rig) {
				var once sync.Once
				r.f.afterCommand = func(string) {
					once.Do(func() {
						r.f.setLink(false)
						time.AfterFunc(outage, func() { r.f.setLink(true) })
					})
				}
			},
			want: []upload.Outcome{upload.OutcomeUpdated}, source: "Status 2"},
		{name: "a blip before a failed download: not commanded again", bs: []behaviour{failThenSucceed},
			arm: func(r *rig) {
				hold := make(chan struct{})
				r.f.devs[r.devs[0].Topic].hold = hold
				var once sync.Once
				r.f.afterCommand = func(string) {
					once.Do(func() {
						r.f.setLink(false)
						r.f.setLink(true)
						close(hold)
					})
				}
			},
			want: []upload.Outcome{upload.OutcomeFailed}, msg: "not commanded again: it was in flight while the link to the devices was down"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // mostly waiting out the outage
			r := newRig(t, Plan{}, c.bs...)
			r.cfg.Family = linkFake{r.f}
			r.cfg.Timeout = time.Second
			c.arm(r)
			res := r.run(context.Background())
			for i, got := range res {
				if got.Outcome != c.want[i] {
					t.Errorf("%s: %s (%s), want %s", got.Device, got.Outcome, got.Message, c.want[i])
				}
				if n := r.f.commands(r.devs[i].Topic); n != 1 {
					t.Errorf("%s commanded %d times", got.Device, n)
				}
			}
			if c.source != "" && res[0].VersionSource != c.source {
				t.Errorf("%s told by %q, want %q", res[0].Device, res[0].VersionSource, c.source)
			}
			if c.msg != "" && !strings.Contains(res[0].Message, c.msg) {
				t.Errorf("message %q, want it to say %q", res[0].Message, c.msg)
			}
		})
	}
}
