package esphomepull

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// updateState is UpdateState.
type updateState int

const (
	stateUnknown updateState = iota // no check yet this boot
	stateNoUpdate
	stateAvailable
	stateInstalling
)

func (s updateState) String() string {
	switch s {
	case stateNoUpdate:
		return "no update"
	case stateAvailable:
		return "available"
	case stateInstalling:
		return "installing"
	}
	return "unknown"
}

// updateInfo is UpdateInfo: empty from boot until the first check.
type updateInfo struct {
	current, latest, title, summary, releaseURL string
	firmwareURL, md5                            string
}

// device is one simulated node across its boots.
type device struct {
	f        *Fleet
	cfg      Device // as configured (resolved)
	idx      int
	clientID string
	source   string // the manifest URL it was built with

	installs atomic.Int64

	mu        sync.Mutex // guards what Fleet's getters read
	version   string     // the project version that runs
	bootCount int

	link mqttlink.Slot // the link to the broker (one per connection)

	// Per boot, owned by the node's goroutine.
	inbox     *mqttlink.Inbox
	firstConn bool
	info      updateInfo
	state     updateState
	checks    int    // checks this boot
	lastFail  string // the last check's error, "" after a good one
	dropArmed bool   // FaultBrokerDrop: this install's download drops the link
	// rollbackTo: FaultCrashOnBoot's new image runs this boot, and crashes
	// back to this version.
	rollbackTo string
}

func newDevice(f *Fleet, idx int, cfg Device) *device {
	d := &device{f: f, cfg: cfg, idx: idx, version: cfg.Version, bootCount: cfg.BootCount, source: cfg.ManifestURL}
	// ESPHome's client id: the node's name and its MAC.
	d.clientID = fmt.Sprintf("%s-240ac4%06x", cfg.Name, (uint32(f.cfg.Seed)*2654435761+uint32(idx))&0xFFFFFF)
	if cfg.has(FaultManifestUnreachable) {
		d.source = unreachable(cfg.ManifestURL)
	}
	return d
}

// unreachable is the manifest URL with its port replaced by 1, where
// nothing answers: a node built with the wrong source URL.
func unreachable(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.Host = net.JoinHostPort(u.Hostname(), "1")
	return u.String()
}

func (d *device) emit(e Event) {
	e.Device = d.cfg.Name
	d.f.emit(e)
}

func (d *device) topic(sub string) string { return d.cfg.Name + "/" + sub }

func (d *device) stateTopic() string   { return d.topic("update/" + d.cfg.Entity + "/state") }
func (d *device) commandTopic() string { return d.topic("update/" + d.cfg.Entity + "/command") }

// powerOn is the first boot's start.
func (d *device) powerOn() {
	d.mu.Lock()
	d.bootCount++
	d.mu.Unlock()
	d.startBoot()
}

// startBoot resets what a boot starts without: update_info is empty.
func (d *device) startBoot() {
	d.inbox = mqttlink.NewInbox()
	d.firstConn = true
	d.info, d.state, d.checks, d.lastFail, d.dropArmed, d.rollbackTo = updateInfo{}, stateUnknown, 0, "", false, ""
}

// live runs one boot from its first connection to its reboot (the image
// installed, to boot next).
func (d *device) live(ctx context.Context) *installed {
	check := time.NewTimer(d.cfg.FirstCheck)
	defer check.Stop()
	var crashC <-chan time.Time
	if d.rollbackTo != "" {
		after := d.cfg.CrashAfter
		if after == 0 {
			after = d.cfg.FirstCheck / 2
		}
		crash := time.NewTimer(after)
		defer crash.Stop()
		crashC = crash.C
	}
	var reconnect *time.Timer
	var reconnectC <-chan time.Time
	defer func() {
		if reconnect != nil {
			reconnect.Stop()
		}
	}()
	for {
		if reconnectC == nil && !d.connected() {
			reconnect = time.NewTimer(d.f.cfg.ReconnectWait)
			reconnectC = reconnect.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.inbox.Ready():
			for _, m := range d.inbox.Take() {
				if next := d.handle(ctx, m); next != nil {
					return next
				}
			}
		case <-check.C:
			turned := d.check(ctx)
			check.Reset(d.cfg.UpdateInterval)
			if turned && d.cfg.has(FaultAutoInstall) {
				d.emit(Event{Event: EventFault, Version: d.info.latest, Text: "fault auto-install: an automation installs the update it found, without INSTALL"})
				if next := d.install(ctx); next != nil {
					return next
				}
			}
		case <-crashC:
			return &installed{version: d.rollbackTo, crash: true}
		case <-reconnectC:
			reconnect, reconnectC = nil, nil
			if !d.connected() {
				if err := d.connect(ctx); err != nil {
					d.f.log.Debug("reconnect failed", "device", d.cfg.Name, "err", err)
				}
			}
		}
	}
}

// handle is the command topic's callback: INSTALL performs the install,
// which acts only when an update is available.
func (d *device) handle(ctx context.Context, m mqttlink.Message) *installed {
	if m.Topic != d.commandTopic() {
		return nil
	}
	if m.Payload != "INSTALL" {
		d.emit(Event{Event: EventCommand, Text: fmt.Sprintf("%q ignored: unknown update payload", m.Payload)})
		return nil
	}
	if d.state != stateAvailable {
		d.emit(Event{Event: EventCommand, Text: "INSTALL ignored: the state is " + d.state.String()})
		return nil
	}
	d.emit(Event{Event: EventCommand, Text: "INSTALL"})
	return d.install(ctx)
}

// reboot is App.safe_reboot(): the shutdown message "offline", a clean
// DISCONNECT, the reboot, and the next boot's first connection; or, when a
// crashing image ends the boot, a crash (the link lost: the will) and the
// bootloader's rollback. false: the node stays away.
func (d *device) reboot(ctx context.Context, next *installed) bool {
	rollback := ""
	switch {
	case next != nil && next.crash:
		d.dropLink("fault crash-on-boot: the new image crashed before it was marked valid")
		d.mu.Lock()
		d.version = next.version
		d.mu.Unlock()
		d.emit(Event{Event: EventRolledBack, Version: next.version, Text: "fault crash-on-boot: the bootloader boots the old image again"})
	default:
		d.publish(d.topic("status"), "offline", true)
		d.disconnect()
		if next == nil {
			break
		}
		if d.cfg.has(FaultNeverComesBack) {
			d.emit(Event{Event: EventGone, Text: "fault never-comes-back: the new image never reaches the network"})
			return false
		}
		d.mu.Lock()
		if d.cfg.has(FaultCrashOnBoot) {
			rollback = d.version
		}
		d.version = next.version
		d.mu.Unlock()
	}
	if !mqttlink.Sleep(ctx, d.cfg.RebootTime) {
		return false
	}
	d.mu.Lock()
	d.bootCount++
	d.mu.Unlock()
	d.startBoot()
	d.rollbackTo = rollback
	if err := d.connect(ctx); err != nil {
		d.f.log.Debug("first connection after boot failed", "device", d.cfg.Name, "err", err)
	}
	return true
}

func (d *device) connected() bool { return d.link.Up() }

// connect is MQTTClientComponent's connection: CONNECT with the will
// <prefix>/status "offline" (retained), the subscription to the command
// topic, the birth "online" (retained), then the entity's state
// (send_initial_state, retained).
func (d *device) connect(ctx context.Context) error {
	cfg := d.f.cfg
	wake := d.inbox
	l, err := mqttlink.Dial(ctx, mqttlink.Options{
		Addr: d.f.addr, ClientID: d.clientID, KeepAlive: cfg.KeepAlive,
		WillTopic: d.topic("status"), WillPayload: "offline", WillQoS: 0,
		Username: cfg.Username, Password: cfg.Password.Reveal(),
		AllowNonLoopback: cfg.AllowNonLoopback,
		OnLost: func(why string) {
			d.emit(Event{Event: EventLinkDown, Text: why})
			wake.Wake()
		},
	})
	if err != nil {
		return err
	}
	d.link.Set(l)
	if !l.Subscribe(d.commandTopic(), d.inbox) {
		d.dropLink("")
		return fmt.Errorf("the broker at %s did not take the subscription to %s", d.f.addr, d.commandTopic())
	}
	d.publish(d.topic("status"), "online", true)
	d.publishState()
	first := d.firstConn
	d.firstConn = false
	d.mu.Lock()
	v, bc := d.version, d.bootCount
	d.mu.Unlock()
	how := "reconnect"
	if first {
		how = "boot"
		d.emit(Event{Event: EventBooted, Version: v, BootCount: bc})
	}
	d.emit(Event{Event: EventOnline, Version: v, Text: how})
	return nil
}

// stateJSON is what mqtt_update.cpp publishes: the versions and the title
// always, the summary and the release URL when the manifest gave them.
// Nothing tells the state itself (installing, progress, an error).
type stateJSON struct {
	Installed  string `json:"installed_version"`
	Latest     string `json:"latest_version"`
	Title      string `json:"title"`
	Summary    string `json:"release_summary,omitempty"`
	ReleaseURL string `json:"release_url,omitempty"`
}

// publishState publishes the entity's state (retained), unless the node is
// silent.
func (d *device) publishState() {
	if d.cfg.has(FaultSilent) {
		return
	}
	b, _ := json.Marshal(stateJSON{Installed: d.info.current, Latest: d.info.latest, Title: d.info.title,
		Summary: d.info.summary, ReleaseURL: d.info.releaseURL})
	d.publish(d.stateTopic(), string(b), true)
}

// publish is QoS 0; lost when the link is down (the firmware goes on).
func (d *device) publish(topic, payload string, retained bool) bool {
	return d.link.Publish(topic, payload, retained)
}

// disconnect is a clean DISCONNECT: no will.
func (d *device) disconnect() { d.link.Disconnect() }

// dropLink breaks the link without a DISCONNECT (the broker publishes the
// will), as a power cut or an expired keepalive does. why "" says nothing.
func (d *device) dropLink(why string) {
	d.link.Drop(func() {
		if why != "" {
			d.emit(Event{Event: EventLinkDown, Text: why})
		}
	})
}

// describe is a short form of an error for an event.
func describe(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "Get ") {
		return s[i+2:]
	}
	return s
}
