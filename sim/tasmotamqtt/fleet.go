package tasmotamqtt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/fleetrun"
	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// EventKind names an event. The values are stable (the CLI prints them).
type EventKind string

// Event kinds.
const (
	// EventOnline: connected to the broker, LWT Online published (Text
	// "boot" on a boot's first connection, with INFO1–3; "reconnect" after).
	EventOnline EventKind = "online"
	// EventLinkDown: the link to the broker broke (Text says why).
	EventLinkDown EventKind = "link_down"
	// EventCommand: a command was run (Text: the command line).
	EventCommand EventKind = "command"
	// EventUpgrade: an Upgrade was taken (URL: OtaUrl).
	EventUpgrade EventKind = "upgrade"
	// EventFetching: a download attempt began (URL, Attempt).
	EventFetching EventKind = "fetching"
	// EventFetched: the image was written (Bytes, Version it tells).
	EventFetched EventKind = "fetched"
	// EventFetchFailed: the attempt failed (Text: the updater's words).
	EventFetchFailed EventKind = "fetch_failed"
	// EventFault: a fault acted (Text says how).
	EventFault EventKind = "fault"
	// EventUpgradeFailed: UPGRADE "Failed …" published (or lost, Text).
	EventUpgradeFailed EventKind = "upgrade_failed"
	// EventRestarting: the device restarts (Text: why).
	EventRestarting EventKind = "restarting"
	// EventBooted: a boot reached the network (Version, BootCount).
	EventBooted EventKind = "booted"
	// EventRolledBack: the new image crashed at boot; the old one runs.
	EventRolledBack EventKind = "rolled_back"
	// EventGone: the device will not come back (Text says why).
	EventGone EventKind = "gone"
	// EventStopped: the fleet closed the device.
	EventStopped EventKind = "stopped"
)

// Event is one thing a device did.
type Event struct {
	Time      time.Time `json:"time"`
	Event     EventKind `json:"event"`
	Device    string    `json:"device"` // its %topic%
	Version   string    `json:"version,omitempty"`
	URL       string    `json:"url,omitempty"`
	Attempt   int       `json:"attempt,omitempty"`
	Bytes     int64     `json:"bytes,omitempty"`
	BootCount int       `json:"boot_count,omitempty"`
	Text      string    `json:"text,omitempty"`
}

// Fleet is a set of running devices.
type Fleet struct {
	cfg    Config
	addr   string
	store  *store
	log    *slog.Logger
	devs   []*device
	byTop  map[string]*device
	run    *fleetrun.Runner
	emitMu sync.Mutex
}

// Start connects every device to the broker (each publishes LWT Online and
// INFO1–3, as after a power-on) and returns once all are online. An
// unreachable broker, or one that refuses the devices, is an error naming
// it; devices started so far are stopped again.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	addr, err := mqttlink.BrokerAddr(cfg.Broker)
	if err != nil {
		return nil, err
	}
	if len(cfg.Devices) == 0 {
		return nil, errors.New("no devices")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.InstallVersion == "" {
		cfg.InstallVersion = "unknown"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &Fleet{cfg: cfg, addr: addr, store: newStore(), log: log, byTop: map[string]*device{}}
	macs := f.macs(len(cfg.Devices))
	for i, dc := range cfg.Devices {
		rd, err := cfg.resolve(i, dc, macs[i])
		if err != nil {
			return nil, err
		}
		if rd.has(FaultCrashOnBoot) && rd.Chip == "esp8266" {
			return nil, fmt.Errorf("device %d: fault %s: an ESP8266 has no rollback (a crashing image boot-loops): use %s", i+1, FaultCrashOnBoot, FaultNeverComesBack)
		}
		if f.byTop[rd.Topic] != nil {
			return nil, fmt.Errorf("device %d: topic %q is taken by another device", i+1, rd.Topic)
		}
		d := newDevice(f, i, rd, macs[i])
		f.devs = append(f.devs, d)
		f.byTop[rd.Topic] = d
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

// macs gives each device a MAC in Espressif's range, unique in the fleet,
// varied by Config.Seed.
func (f *Fleet) macs(n int) [][6]byte {
	out := make([][6]byte, n)
	seen := map[uint32]bool{}
	for i := range out {
		h := fnv.New32a()
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], uint64(f.cfg.Seed))
		binary.BigEndian.PutUint64(b[8:], uint64(i))
		h.Write(b[:])
		tail := h.Sum32() & 0xFFFFFF
		for seen[tail] {
			tail = (tail + 1) & 0xFFFFFF
		}
		seen[tail] = true
		out[i] = [6]byte{0x24, 0x0A, 0xC4, byte(tail >> 16), byte(tail >> 8), byte(tail)}
		if f.cfg.Devices[i].Chip == "esp8266" {
			out[i][0], out[i][1], out[i][2] = 0x5C, 0xCF, 0x7F
		}
	}
	return out
}

// Close stops every device: each drops its link as a power cut would (the
// broker publishes their wills).
func (f *Fleet) Close() {
	f.run.Close()
}

// Topics lists the devices' topics in start order.
func (f *Fleet) Topics() []string {
	out := make([]string, len(f.devs))
	for i, d := range f.devs {
		out[i] = d.cfg.Topic
	}
	return out
}

// Commands is how many Upgrade commands the device took (each started an
// upgrade); 0 for an unknown topic.
func (f *Fleet) Commands(topic string) int {
	if d := f.byTop[topic]; d != nil {
		return int(d.upgrades.Load())
	}
	return 0
}

// Running is what the device runs, as INFO1 tells it ("15.4.0(tasmota)");
// "" for an unknown topic.
func (f *Fleet) Running(topic string) string {
	if d := f.byTop[topic]; d != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.versionString()
	}
	return ""
}

// Devices is the resolved configuration of every device (topics, chips,
// versions as started), in start order.
func (f *Fleet) Devices() []Device {
	out := make([]Device, len(f.devs))
	for i, d := range f.devs {
		out[i] = d.cfg
	}
	return out
}

// Counts tells how many devices run each version string, sorted.
func (f *Fleet) Counts() []string {
	var vs []string
	for _, n := range f.Topics() {
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

// node is a device as fleetrun drives it.
type node struct{ *device }

func (n node) Name() string                      { return n.cfg.Topic }
func (n node) PowerOn()                          { n.powerOn() }
func (n node) Connect(ctx context.Context) error { return n.connect(ctx) }
func (n node) Drop()                             { n.dropLink("") }
func (n node) Run(ctx context.Context) {
	fleetrun.Life(ctx, n.live, n.restart, func() { n.dropLink("") }, func() { n.emit(Event{Event: EventStopped}) })
}
