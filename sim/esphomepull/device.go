package esphomepull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
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

	// The link to the broker (one per connection).
	linkMu sync.Mutex
	link   *link

	// Per boot, owned by the node's goroutine.
	inbox     *inbox
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

// link is one connection to the broker.
type link struct {
	client mqtt.Client
	conn   net.Conn
	lost   atomic.Bool
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
	d.inbox = newInbox()
	d.firstConn = true
	d.info, d.state, d.checks, d.lastFail, d.dropArmed, d.rollbackTo = updateInfo{}, stateUnknown, 0, "", false, ""
}

// run is the node's life after Start's first connect: boots until the
// fleet closes.
func (d *device) run(ctx context.Context) {
	defer d.emit(Event{Event: EventStopped})
	for {
		next := d.live(ctx)
		if ctx.Err() != nil {
			d.dropLink("")
			return
		}
		if !d.reboot(ctx, next) {
			d.dropLink("")
			<-ctx.Done()
			return
		}
	}
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
		case <-d.inbox.ready():
			for _, m := range d.inbox.take() {
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
func (d *device) handle(ctx context.Context, m message) *installed {
	if m.topic != d.commandTopic() {
		return nil
	}
	if m.payload != "INSTALL" {
		d.emit(Event{Event: EventCommand, Text: fmt.Sprintf("%q ignored: unknown update payload", m.payload)})
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
	if !sleep(ctx, d.cfg.RebootTime) {
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

func (d *device) connected() bool {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.link != nil && !d.link.lost.Load()
}

// connect is MQTTClientComponent's connection: CONNECT with the will
// <prefix>/status "offline" (retained), the subscription to the command
// topic, the birth "online" (retained), then the entity's state
// (send_initial_state, retained).
func (d *device) connect(ctx context.Context) error {
	cfg := d.f.cfg
	l := &link{}
	wake := d.inbox
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://"+d.f.addr).
		SetClientID(d.clientID).
		SetCleanSession(true).
		SetKeepAlive(cfg.KeepAlive).
		SetWill(d.topic("status"), "offline", 0, true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetOrderMatters(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := d.dial(ctx, u.Host)
			if err == nil {
				l.conn = c
			}
			return c, err
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			if l.lost.Swap(true) {
				return // the node's own doing, told already
			}
			why := "the broker closed the connection"
			if err != nil && !errors.Is(err, net.ErrClosed) {
				why += " (" + err.Error() + ")"
			}
			d.emit(Event{Event: EventLinkDown, Text: why})
			wake.wake()
		})
	if cfg.Username != "" {
		opts.SetUsername(cfg.Username)
		opts.SetPassword(cfg.Password.Reveal())
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(6 * time.Second) {
		c.Disconnect(0)
		return fmt.Errorf("cannot reach the broker at %s: no answer", d.f.addr)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("cannot connect to the broker at %s: %v", d.f.addr, err)
	}
	l.client = c
	d.linkMu.Lock()
	d.link = l
	d.linkMu.Unlock()

	in := d.inbox
	st := c.Subscribe(d.commandTopic(), 0, func(_ mqtt.Client, m mqtt.Message) {
		in.put(message{topic: m.Topic(), payload: string(m.Payload()), retained: m.Retained()})
	})
	if !st.WaitTimeout(5*time.Second) || st.Error() != nil {
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

// dial opens the link's socket: loopback only unless allowed.
func (d *device) dial(ctx context.Context, addr string) (net.Conn, error) {
	addr, err := checkAddr(addr, d.f.cfg.AllowNonLoopback)
	if err != nil {
		return nil, err
	}
	var dl net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return dl.DialContext(dctx, "tcp", addr)
}

// checkAddr maps localhost to 127.0.0.1 and refuses host names, and hosts
// outside loopback unless allowed.
func checkAddr(addr string, allowNonLoopback bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "localhost" {
		host, addr = "127.0.0.1", net.JoinHostPort("127.0.0.1", port)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", errors.New("the simulated devices resolve no host names: give an IP address")
	}
	if !ip.IsLoopback() && !allowNonLoopback {
		return "", errors.New("the simulated devices reach loopback only")
	}
	return addr, nil
}

// publish is QoS 0; lost when the link is down (the firmware goes on).
func (d *device) publish(topic, payload string, retained bool) bool {
	d.linkMu.Lock()
	l := d.link
	d.linkMu.Unlock()
	if l == nil || l.lost.Load() {
		return false
	}
	t := l.client.Publish(topic, 0, retained, payload)
	return t.WaitTimeout(5*time.Second) && t.Error() == nil
}

// disconnect is a clean DISCONNECT: no will.
func (d *device) disconnect() {
	d.linkMu.Lock()
	l := d.link
	d.link = nil
	d.linkMu.Unlock()
	if l != nil && !l.lost.Load() {
		l.lost.Store(true)
		l.client.Disconnect(50)
	}
}

// dropLink breaks the link without a DISCONNECT (the broker publishes the
// will), as a power cut or an expired keepalive does. why "" says nothing.
func (d *device) dropLink(why string) {
	d.linkMu.Lock()
	l := d.link
	d.linkMu.Unlock()
	if l == nil || l.lost.Swap(true) {
		return
	}
	if why != "" {
		d.emit(Event{Event: EventLinkDown, Text: why})
	}
	if l.conn != nil {
		_ = l.conn.Close()
	}
	go l.client.Disconnect(0) // paho's goroutines end; the socket is already gone
}

// message is one delivered PUBLISH.
type message struct {
	topic, payload string
	retained       bool
}

// inbox holds delivered messages until the node's loop takes them: paho
// never waits for a node busy downloading.
type inbox struct {
	mu   sync.Mutex
	msgs []message
	sig  chan struct{}
}

func newInbox() *inbox { return &inbox{sig: make(chan struct{}, 1)} }

func (b *inbox) put(m message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.wake()
}

// wake makes the loop look again (a lost link, too).
func (b *inbox) wake() {
	select {
	case b.sig <- struct{}{}:
	default:
	}
}

func (b *inbox) ready() <-chan struct{} { return b.sig }

func (b *inbox) take() []message {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.msgs
	b.msgs = nil
	return m
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// describe is a short form of an error for an event.
func describe(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s, "Get ") {
		return s[i+2:]
	}
	return s
}
