package esphomepull

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/fleetrun"
	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// EventKind names an event. The values are stable (the CLI prints them);
// those the tasmota-mqtt fleet has too mean the same.
type EventKind string

// Event kinds.
const (
	// EventOnline: connected to the broker, "online" published (Text
	// "boot" on a boot's first connection, "reconnect" after).
	EventOnline EventKind = "online"
	// EventLinkDown: the link to the broker broke (Text says why).
	EventLinkDown EventKind = "link_down"
	// EventCommand: a command came on the command topic (Text: the payload,
	// and why it did nothing when it did nothing).
	EventCommand EventKind = "command"
	// EventChecked: a check's outcome changed, or the boot's first check
	// (Version: latest_version; Text "available" or "no update").
	EventChecked EventKind = "checked"
	// EventCheckFailed: a check failed (Text says why; told again only when
	// the reason changes).
	EventCheckFailed EventKind = "check_failed"
	// EventUpgrade: an install began (URL: the image, Version: the
	// manifest's).
	EventUpgrade EventKind = "upgrade"
	// EventFetching: the download began (URL).
	EventFetching EventKind = "fetching"
	// EventFetched: the image was written and its MD5 matched (Bytes).
	EventFetched EventKind = "fetched"
	// EventFetchFailed: the download or its check failed (Text says why).
	EventFetchFailed EventKind = "fetch_failed"
	// EventFault: a fault acted (Text says how).
	EventFault EventKind = "fault"
	// EventUpgradeFailed: the install failed; the state was published again
	// (Text says why).
	EventUpgradeFailed EventKind = "upgrade_failed"
	// EventRestarting: the node reboots (Text: why).
	EventRestarting EventKind = "restarting"
	// EventBooted: a boot reached the network (Version: the project version
	// it runs, BootCount).
	EventBooted EventKind = "booted"
	// EventRolledBack: the new image crashed at boot; the old one runs.
	EventRolledBack EventKind = "rolled_back"
	// EventGone: the node will not come back (Text says why).
	EventGone EventKind = "gone"
	// EventStopped: the fleet closed the node.
	EventStopped EventKind = "stopped"
)

// Event is one thing a node did.
type Event struct {
	Time      time.Time `json:"time"`
	Event     EventKind `json:"event"`
	Device    string    `json:"device"` // its name (the topic prefix)
	Version   string    `json:"version,omitempty"`
	URL       string    `json:"url,omitempty"`
	Bytes     int64     `json:"bytes,omitempty"`
	BootCount int       `json:"boot_count,omitempty"`
	Text      string    `json:"text,omitempty"`
}

// Fleet is a set of running nodes.
type Fleet struct {
	cfg    Config
	addr   string
	images *images
	client *http.Client
	conns  chan struct{} // MaxConns slots; nil = no bound
	log    *slog.Logger
	devs   []*device
	byName map[string]*device
	run    *fleetrun.Runner
	emitMu sync.Mutex
}

// maxFirstCheck is the scheduler's MAX_INTERVAL_DELAY.
const maxFirstCheck = 5 * time.Second

// Start connects every node to the broker (each publishes "online" and its
// empty state, as after a power-on) and returns once all are online. An
// unreachable broker, or one that refuses the nodes, is an error naming
// it; nodes connected so far are stopped again.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	addr, err := mqttlink.BrokerAddr(cfg.Broker)
	if err != nil {
		return nil, err
	}
	if len(cfg.Devices) == 0 {
		return nil, errors.New("no devices")
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = DefaultReconnectWait
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &Fleet{cfg: cfg, addr: addr, images: newImages(), client: newClient(cfg.AllowNonLoopback), log: log, byName: map[string]*device{}}
	if cfg.MaxConns > 0 {
		f.conns = make(chan struct{}, cfg.MaxConns)
	}
	for i, dc := range cfg.Devices {
		rd, err := cfg.resolve(i, dc)
		if err != nil {
			return nil, err
		}
		if f.byName[rd.Name] != nil {
			return nil, fmt.Errorf("device %d: node name %q is taken by another device", i+1, rd.Name)
		}
		if rd.FirstCheck == 0 {
			// The scheduler's first run of an interval: a random offset
			// below min(interval/2, 5 s).
			rd.FirstCheck = f.spread(i, min(rd.UpdateInterval/2, maxFirstCheck))
		}
		d := newDevice(f, i, rd)
		f.devs = append(f.devs, d)
		f.byName[rd.Name] = d
	}
	nodes := make([]fleetrun.Device, len(f.devs))
	for i, d := range f.devs {
		nodes[i] = node{d}
	}
	if f.run, err = fleetrun.Start(ctx, nodes); err != nil {
		return nil, err
	}
	return f, nil
}

// spread is a point in [10ms, within] that varies per node and Seed, so
// that a fleet's checks do not all fall on the same instant.
func (f *Fleet) spread(i int, within time.Duration) time.Duration {
	const least = 10 * time.Millisecond
	if within <= least {
		return least
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d", f.cfg.Seed, i)
	return least + time.Duration(h.Sum64()%uint64(within-least))
}

// Close stops every node: each drops its link as a power cut would (the
// broker publishes their wills).
func (f *Fleet) Close() {
	f.run.Close()
}

// Names lists the nodes' names in start order.
func (f *Fleet) Names() []string {
	out := make([]string, len(f.devs))
	for i, d := range f.devs {
		out[i] = d.cfg.Name
	}
	return out
}

// Installs is how many installs the node began (INSTALL taken, or an
// automatic one); 0 for an unknown name.
func (f *Fleet) Installs(name string) int {
	if d := f.byName[name]; d != nil {
		return int(d.installs.Load())
	}
	return 0
}

// Running is the project version the node runs; "" for an unknown name.
func (f *Fleet) Running(name string) string {
	if d := f.byName[name]; d != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.version
	}
	return ""
}

// Devices is the resolved configuration of every node, in start order.
func (f *Fleet) Devices() []Device {
	out := make([]Device, len(f.devs))
	for i, d := range f.devs {
		out[i] = d.cfg
	}
	return out
}

// Counts tells how many nodes run each version, sorted.
func (f *Fleet) Counts() []string {
	var vs []string
	for _, n := range f.Names() {
		vs = append(vs, f.Running(n))
	}
	return fleetrun.Counts(vs)
}

func (f *Fleet) emit(e Event) {
	if f.cfg.OnEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	f.emitMu.Lock()
	defer f.emitMu.Unlock()
	f.cfg.OnEvent(e)
}

// conn takes one of MaxConns slots for an HTTP request; the func gives it
// back. false: ctx ended first.
func (f *Fleet) conn(ctx context.Context) (func(), bool) {
	if f.conns == nil {
		return func() {}, true
	}
	select {
	case f.conns <- struct{}{}:
		return func() { <-f.conns }, true
	case <-ctx.Done():
		return nil, false
	}
}

// node is a device as fleetrun drives it.
type node struct{ *device }

func (n node) Name() string                      { return n.cfg.Name }
func (n node) PowerOn()                          { n.powerOn() }
func (n node) Connect(ctx context.Context) error { return n.connect(ctx) }
func (n node) Drop()                             { n.dropLink("") }
func (n node) Run(ctx context.Context) {
	fleetrun.Life(ctx, n.live, n.reboot, func() { n.dropLink("") }, func() { n.emit(Event{Event: EventStopped}) })
}
