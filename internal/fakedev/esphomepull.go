package fakedev

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A fake ESPHome node with `update: platform: http_request` and `mqtt:`,
// written from the ESPHome facts (the lead's notes for issue 22 and
// docs/protocols/esphome-pull.md: esphome http_request_update.cpp,
// ota_http_request.cpp, mqtt_update.cpp, mqtt_client.cpp) in these words
// (it fetches from loopback only):
//
//   - CONNECT: client id <name>-<mac>, keep alive 15 s, clean session off,
//     will <prefix>/status "offline" retained. On every connection:
//     subscriptions to <prefix>/update/<id>/command at QoS 0, the birth
//     <prefix>/status "online" retained, the Home Assistant discovery
//     config (retained), then each update entity's state, retained:
//     {"installed_version","latest_version","title"[,"release_summary"]
//     [,"release_url"]}, from update_info, all "" until the first good
//     check after a boot.
//   - A check (soon after boot, then every update_interval; needs Wi-Fi,
//     not MQTT) GETs the source URL; a refused manifest or a failed GET
//     changes nothing and publishes nothing. A good one sets update_info
//     (installed_version := the compiled project version) and the state
//     NO_UPDATE (latest "" or equal, a string compare) or AVAILABLE, and
//     publishes the state, every check, changed or not. On a change to
//     AVAILABLE the on_update_available automation runs (AutoInstall).
//   - INSTALL on the command topic: perform() acts only when the state is
//     AVAILABLE, else nothing at all. It publishes the state (the same
//     JSON), then the main loop blocks in the download: GET the firmware
//     URL, 200 and a length, the magic byte, the MD5 of what arrived
//     against ota.md5 (lower-case hex, compared as written). On error the
//     state is AVAILABLE again and published (the same JSON once more);
//     on success a clean reboot: "offline" published, DISCONNECT.
//   - Any other payload on the command topic is logged and ignored.
//     Retained commands run like any other.

// ESPHomePull describes one fake ESPHome node that pulls its updates. The
// zero value of a knob is the default given with it.
type ESPHomePull struct {
	// Name is the node name; default "esphome-" and six hex digits made
	// from the test's name and a counter.
	Name string
	// Prefix is mqtt: topic_prefix; default Name.
	Prefix string
	// ObjectID is the update entity's object id; default "firmware".
	ObjectID string
	// Source is the manifest URL fixed when the node was built (required;
	// http on loopback: the fake never reaches the network).
	Source string
	// Interval is update_interval; default 300 ms (ESPHome's is 6 h).
	Interval time.Duration
	// FirstCheck is how long after a boot the first check comes; default
	// Interval/2. A slow one (longer than Interval) is a device whose
	// network came up late.
	FirstCheck time.Duration
	// Version is esphome: project: version: of the running build; default
	// "1.0.0".
	Version string
	// ChipFamily is the build's variant the manifest is matched against:
	// "ESP32", "ESP32-S3", "ESP8266", …; default "ESP32".
	ChipFamily string
	// RebootTime is how long a restart is silent; default 300 ms.
	RebootTime time.Duration
	// ReconnectDelay after a lost link; default 250 ms.
	ReconnectDelay time.Duration
	// KeepAlive; default 15 s (ESPHome's).
	KeepAlive time.Duration
	// Username and Password for the broker; "" sends none.
	Username, Password string
	// FetchRate limits the download, bytes a second; 0 is unlimited.
	FetchRate int64
	// NoDiscovery: discovery: false (no homeassistant/… config).
	NoDiscovery bool

	// More that real nodes do.
	//
	// SecondEntity is the object id of a second http_request update
	// entity (a beta channel, say) polling SecondSource (default Source).
	// Both tell the one project version as installed_version.
	SecondEntity, SecondSource string
	// ProgressStates: that many more state publishes (the same JSON)
	// during a download. ESPHome's own blocks its main loop in the
	// download, so its progress publishes never go out; this stands for a
	// build whose do (and for any state that lands during a download).
	ProgressStates int
	// CheckTime is how long a manifest check takes on an ESP8266, where
	// it runs inline and blocks the main loop: an INSTALL arriving then
	// is handled after the check published its state (an ESP32 checks in
	// a task of its own; the knob does nothing there).
	CheckTime time.Duration
	// CheckBeforeMQTT: the first check after a boot completes before the
	// MQTT client connects, so the first state after the boot already
	// tells the versions (ESPHome does not promise the "" state).
	CheckBeforeMQTT bool
	// DoubleStates: every state is published twice (a resend after a
	// reconnect race): a client must not take the second for news.
	DoubleStates bool

	// Faults.
	//
	// DownloadCut: a download stops halfway (read error). BadMD5: a byte
	// arrives corrupted, so the MD5 does not match. Both hit the first
	// FaultFetches downloads (0: every one).
	DownloadCut, BadMD5 bool
	FaultFetches        int
	// RollsBack: the new build crashes; the bootloader brings the old one
	// back. With CrashAfter 0 the new build dies before its network is up
	// and tells nothing; else it boots, connects, checks (telling its
	// version, when a check comes in time) and dies CrashAfter after its
	// boot, without DISCONNECT (the broker publishes the will).
	RollsBack  bool
	CrashAfter time.Duration
	// NeverComesBack: after a good download it says "offline" and stays
	// away.
	NeverComesBack bool
	// BrokerDrop: the MQTT link drops halfway through the first download
	// (the broker publishes the will); the device reconnects after the
	// download ends, or only after its reboot.
	BrokerDrop bool
	// Silent: the update entity is not on MQTT (internal): no state, no
	// command subscription, no discovery; the node is "online".
	Silent bool
	// ManifestUnreachable: every check fails to reach the source.
	ManifestUnreachable bool
	// WrongVersion: the image installed tells this version, not the
	// manifest's (its project version differs from what was announced).
	WrongVersion string
	// AutoInstall: an on_update_available automation runs update.perform:
	// it installs whenever a check turns the state AVAILABLE, no INSTALL
	// needed.
	AutoInstall bool
}

// ESPHomeFetch is one download of a firmware.
type ESPHomeFetch struct {
	URL        string
	Start, End time.Time
	Bytes      int64
	Err        string // "" = written
	Auto       bool   // started by AutoInstall, not INSTALL
}

// ESPHomeState is one update entity's state as the device keeps it.
type ESPHomeState struct {
	Installed, Latest, Title string
	// State: "UNKNOWN" (no good check since boot), "NO_UPDATE",
	// "AVAILABLE" or "INSTALLING".
	State string
}

// ESPHomePullDevice is a running fake ESPHome node.
type ESPHomePullDevice struct {
	cfg      ESPHomePull
	addr     string
	mac      string // 12 lower-case hex digits
	clientID string
	entities []*ehpEntity

	mu              sync.Mutex
	running         string // the running build's version; "" while down
	version         string // the flash's, also while down
	boots           int
	boot            int // boot generation: a queued command belongs to one boot
	link            *mqttClient
	log             []string
	failures        []string
	commands        []string
	installCommands int
	installs        int
	autoInstalls    int
	notAvailable    int
	retainedSeen    bool
	badManifests    []string
	manifestGets    int
	checks          int
	fetches         []ESPHomeFetch
	faultHits       int
	dropped         bool
	onlines         int
	lastSaid        map[string]string // per topic, the last payload logged
	said            int               // repeats not logged since

	queue   chan ehpMsg
	ctl     chan string
	online  chan struct{} // closed once first online
	done    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

// ehpEntity is one update entity: its command topic's object id, source
// and update_info.
type ehpEntity struct {
	id, source string
	info       esphomeInfo
	state      string
}

type ehpMsg struct {
	m    mqttMessage
	boot int
}

// ehpBoot is what the next boot runs.
type ehpBoot struct {
	version  string
	newApp   bool   // a new build from an install: RollsBack and NeverComesBack apply
	old      string // the build before it
	rollback string // set: this boot crashes CrashAfter after it began, into rollback
}

var esphomePullSeq struct {
	sync.Mutex
	n int
}

// StartESPHomePull starts fake ESPHome nodes (one default node when none
// is given) against the broker at brokerURL ("tcp://host:port",
// "mqtt://host:port" or "host:port") and waits until each is online with
// its states published. t.Cleanup stops them.
func StartESPHomePull(t testing.TB, brokerURL string, nodes ...ESPHomePull) []*ESPHomePullDevice {
	t.Helper()
	addr := brokerURL
	if scheme, rest, ok := strings.Cut(brokerURL, "://"); ok {
		if scheme != "tcp" && scheme != "mqtt" {
			t.Fatalf("fake esphome-pull: broker %q: only tcp:// or mqtt://", brokerURL)
		}
		addr = rest
	}
	if len(nodes) == 0 {
		nodes = []ESPHomePull{{}}
	}
	var out []*ESPHomePullDevice
	for _, cfg := range nodes {
		d, err := newESPHomePull(t.Name(), addr, cfg)
		if err != nil {
			t.Fatalf("fake esphome-pull: %v", err)
		}
		t.Cleanup(func() {
			d.Close()
			if t.Failed() {
				t.Logf("fake esphome-pull %s:\n  %s", d.cfg.Name, strings.Join(d.Log(), "\n  "))
			}
		})
		d.wg.Add(1)
		go d.run()
		out = append(out, d)
	}
	for _, d := range out {
		if err := d.waitOnline(60 * time.Second); err != nil {
			t.Fatalf("fake esphome-pull %s: %v\n  %s", d.cfg.Name, err, strings.Join(d.Log(), "\n  "))
		}
	}
	return out
}

func newESPHomePull(testName, addr string, cfg ESPHomePull) (*ESPHomePullDevice, error) {
	esphomePullSeq.Lock()
	esphomePullSeq.n++
	seq := esphomePullSeq.n
	esphomePullSeq.Unlock()
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d/%s", testName, seq, cfg.Name)
	mac := fmt.Sprintf("c8c9a3%06x", h.Sum32()&0xFFFFFF)
	if cfg.Name == "" {
		cfg.Name = "esphome-" + mac[6:]
	}
	if cfg.Prefix == "" {
		cfg.Prefix = cfg.Name
	}
	if cfg.ObjectID == "" {
		cfg.ObjectID = "firmware"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 300 * time.Millisecond
	}
	if cfg.FirstCheck == 0 {
		cfg.FirstCheck = cfg.Interval / 2
	}
	if cfg.Version == "" {
		cfg.Version = "1.0.0"
	}
	if cfg.ChipFamily == "" {
		cfg.ChipFamily = "ESP32"
	}
	if cfg.RebootTime == 0 {
		cfg.RebootTime = 300 * time.Millisecond
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = 250 * time.Millisecond
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.SecondEntity != "" && cfg.SecondSource == "" {
		cfg.SecondSource = cfg.Source
	}
	switch {
	case cfg.Source == "":
		return nil, errors.New("no Source: the manifest URL a node is built with")
	case cfg.Prefix == "" || strings.ContainsAny(cfg.Prefix, "+#") || strings.HasSuffix(cfg.Prefix, "/"):
		return nil, fmt.Errorf("topic prefix %q: no wildcards, no trailing /", cfg.Prefix)
	case strings.ContainsAny(cfg.ObjectID+cfg.SecondEntity, "+#/ "):
		return nil, fmt.Errorf("object ids %q, %q: one topic level each", cfg.ObjectID, cfg.SecondEntity)
	case cfg.SecondEntity == cfg.ObjectID:
		return nil, fmt.Errorf("two update entities named %q", cfg.ObjectID)
	}
	d := &ESPHomePullDevice{cfg: cfg, addr: addr, mac: mac, clientID: cfg.Name + "-" + mac,
		version: cfg.Version, queue: make(chan ehpMsg, 256), lastSaid: map[string]string{}, ctl: make(chan string, 4),
		online: make(chan struct{}), done: make(chan struct{})}
	d.entities = append(d.entities, &ehpEntity{id: cfg.ObjectID, source: cfg.Source})
	if cfg.SecondEntity != "" {
		d.entities = append(d.entities, &ehpEntity{id: cfg.SecondEntity, source: cfg.SecondSource})
	}
	return d, nil
}

// Name is the node name; Prefix its topic prefix.
func (d *ESPHomePullDevice) Name() string   { return d.cfg.Name }
func (d *ESPHomePullDevice) Prefix() string { return d.cfg.Prefix }

// Source is the manifest URL the node was built with.
func (d *ESPHomePullDevice) Source() string { return d.cfg.Source }

// ObjectID is the (first) update entity's object id.
func (d *ESPHomePullDevice) ObjectID() string { return d.cfg.ObjectID }

// StatusTopic is <prefix>/status; StateTopic and CommandTopic those of
// the update entity id ("" = the first).
func (d *ESPHomePullDevice) StatusTopic() string { return d.cfg.Prefix + "/status" }
func (d *ESPHomePullDevice) StateTopic(id string) string {
	return d.cfg.Prefix + "/update/" + cmpOr(id, d.cfg.ObjectID) + "/state"
}
func (d *ESPHomePullDevice) CommandTopic(id string) string {
	return d.cfg.Prefix + "/update/" + cmpOr(id, d.cfg.ObjectID) + "/command"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ClientID is the MQTT client id (<name>-<mac>).
func (d *ESPHomePullDevice) ClientID() string { return d.clientID }

// Running is the running build's project version, "" while restarting or
// gone.
func (d *ESPHomePullDevice) Running() string { return locked(&d.mu, &d.running) }

// Boots is how many times the node booted since it started (1 at first).
func (d *ESPHomePullDevice) Boots() int { return locked(&d.mu, &d.boots) }

// State is the update entity id's ("" = the first) state now.
func (d *ESPHomePullDevice) State(id string) ESPHomeState {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.entities {
		if e.id == cmpOr(id, d.cfg.ObjectID) {
			return ESPHomeState{Installed: e.info.Current, Latest: e.info.Latest, Title: e.info.Title, State: e.state}
		}
	}
	return ESPHomeState{}
}

// Commands is every message that reached a command topic, "<topic>
// <payload>", in order.
func (d *ESPHomePullDevice) Commands() []string { return lockedCopy(&d.mu, &d.commands) }

// InstallCommands is how many INSTALL payloads came, acted on or not.
func (d *ESPHomePullDevice) InstallCommands() int { return locked(&d.mu, &d.installCommands) }

// Installs is how many installs an INSTALL started; AutoInstalls those the
// automation started.
func (d *ESPHomePullDevice) Installs() int     { return locked(&d.mu, &d.installs) }
func (d *ESPHomePullDevice) AutoInstalls() int { return locked(&d.mu, &d.autoInstalls) }

// Checks is how many checks ran (manifest GETs tried, good or not);
// ManifestGets how many reached the server.
func (d *ESPHomePullDevice) Checks() int       { return locked(&d.mu, &d.checks) }
func (d *ESPHomePullDevice) ManifestGets() int { return locked(&d.mu, &d.manifestGets) }

// Fetches is every firmware download, in order.
func (d *ESPHomePullDevice) Fetches() []ESPHomeFetch { return lockedCopy(&d.mu, &d.fetches) }

// Onlines is how many times the node said "online" (connections).
func (d *ESPHomePullDevice) Onlines() int { return locked(&d.mu, &d.onlines) }

// InstallWhileNotAvailable is a tripwire: INSTALL commands that came when
// the state was not AVAILABLE (the device ignores them: a client that
// sends one did not wait for latest_version).
func (d *ESPHomePullDevice) InstallWhileNotAvailable() int { return locked(&d.mu, &d.notAvailable) }

// RetainedCommandSeen is a tripwire: a command came with the retain flag
// (it would run again on every reconnect).
func (d *ESPHomePullDevice) RetainedCommandSeen() bool { return locked(&d.mu, &d.retainedSeen) }

// BadManifests is a tripwire: one line per fetched manifest whose shape
// is not what ots-ota writes (see esphomeManifestShape), or that was
// served without a length or a 200.
func (d *ESPHomePullDevice) BadManifests() []string { return lockedCopy(&d.mu, &d.badManifests) }

// Tripwires is every tripwire that fired, one line each; nil when none.
func (d *ESPHomePullDevice) Tripwires() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	if d.notAvailable > 0 {
		out = append(out, fmt.Sprintf("%d INSTALL while not available", d.notAvailable))
	}
	if d.retainedSeen {
		out = append(out, "a retained command")
	}
	for _, b := range d.badManifests {
		out = append(out, "manifest: "+b)
	}
	return out
}

// Log is what the node did, one line an event.
func (d *ESPHomePullDevice) Log() []string { return lockedCopy(&d.mu, &d.log) }

// Flap drops the Wi-Fi for a moment: the link goes without DISCONNECT
// (the broker publishes the will) and comes back with "online" and the
// states as they were: no boot.
func (d *ESPHomePullDevice) Flap() { d.control("flap") }

// Restart is a plain reboot into the same build (a power cycle with a
// clean shutdown): "offline", then a boot with empty states.
func (d *ESPHomePullDevice) Restart() { d.control("restart") }

// CheckNow runs a check at once (as update.check would).
func (d *ESPHomePullDevice) CheckNow() { d.control("check") }

func (d *ESPHomePullDevice) control(what string) {
	select {
	case d.ctl <- what:
	case <-d.done:
	}
}

// Close stops the node: it drops its link as a power cut does.
func (d *ESPHomePullDevice) Close() {
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		close(d.done)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

func (d *ESPHomePullDevice) logf(format string, a ...any) {
	d.log = append(d.log, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, a...))
}

func (d *ESPHomePullDevice) note(format string, a ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logf(format, a...)
}

func (d *ESPHomePullDevice) waitOnline(limit time.Duration) error {
	tm := time.NewTimer(limit)
	defer tm.Stop()
	select {
	case <-d.online:
		return nil
	case <-tm.C:
		d.mu.Lock()
		defer d.mu.Unlock()
		return fmt.Errorf("not online after %s: %s", limit, strings.Join(d.failures, "; "))
	}
}

// run is the node's power: boots, one after the other.
func (d *ESPHomePullDevice) run() {
	defer d.wg.Done()
	plan := ehpBoot{version: d.cfg.Version}
	for {
		next, ok := d.live(plan)
		if !ok {
			return
		}
		if plan, ok = d.reboot(next); !ok {
			return
		}
	}
}

// reboot is the silence of a restart; it returns what boots, ok false
// when the node never comes back (or was closed).
func (d *ESPHomePullDevice) reboot(plan ehpBoot) (ehpBoot, bool) {
	d.mu.Lock()
	d.running = ""
	d.logf("restarting into %s", plan.version)
	d.mu.Unlock()
	if !sleepOrDone(d.done, d.cfg.RebootTime) {
		return plan, false
	}
	if plan.newApp {
		switch {
		case d.cfg.NeverComesBack:
			d.note("the new build never comes back")
			<-d.done
			return plan, false
		case d.cfg.RollsBack && d.cfg.CrashAfter > 0:
			plan.rollback = plan.old
		case d.cfg.RollsBack:
			d.note("the new build crashed before its network was up; the bootloader rolls back")
			if !sleepOrDone(d.done, d.cfg.RebootTime) {
				return plan, false
			}
			plan = ehpBoot{version: plan.old}
		}
	}
	return plan, true
}

// live is one boot: the main loop from power-on until a restart (its plan
// returned) or Close (ok false).
func (d *ESPHomePullDevice) live(plan ehpBoot) (next ehpBoot, ok bool) {
	d.mu.Lock()
	d.boot++
	d.boots++
	boot := d.boot
	d.version, d.running = plan.version, plan.version
	for _, e := range d.entities {
		e.info, e.state = esphomeInfo{}, "UNKNOWN"
	}
	d.logf("boot %s", plan.version)
	d.mu.Unlock()

	var link *mqttClient
	var linkDone <-chan struct{}
	defer func() {
		if link != nil && !ok {
			link.Abort()
		}
		d.setLink(nil)
	}()
	reconnect := time.NewTimer(0)
	defer reconnect.Stop()
	// The scheduler runs an interval start to start: a check that took
	// long is followed by the next one sooner (at once when overdue).
	nextCheck := time.Now().Add(d.cfg.FirstCheck)
	if d.cfg.CheckBeforeMQTT {
		// The first check completed before the MQTT client connected: the
		// first state after the boot already tells the versions.
		if r := d.checkAll(plan.version); r != nil {
			return *r, true
		}
		nextCheck = time.Now().Add(d.cfg.Interval)
	}
	check := time.NewTimer(time.Until(nextCheck))
	defer check.Stop()
	var crash <-chan time.Time
	if plan.rollback != "" {
		tm := time.NewTimer(d.cfg.CrashAfter)
		defer tm.Stop()
		crash = tm.C
	}
	// after handles an install's end: a reboot ends the boot.
	after := func(r *ehpBoot) bool {
		if r == nil {
			return false
		}
		if link != nil {
			// A clean reboot: the shutdown message, then DISCONNECT.
			d.publishOn(link, d.StatusTopic(), "offline", true)
			link.Disconnect()
			link = nil
		}
		return true
	}
	for {
		select {
		case <-d.done:
			return plan, false
		case <-reconnect.C:
			if link != nil {
				continue
			}
			c, err := d.connect(boot)
			if err != nil {
				reconnect.Reset(d.cfg.ReconnectDelay)
				continue
			}
			link, linkDone = c, c.Done()
			d.setLink(c)
			d.onConnect(c)
		case <-linkDone:
			d.note("link lost: %v", link.Err())
			link, linkDone = nil, nil
			d.setLink(nil)
			reconnect.Reset(d.cfg.ReconnectDelay)
		case <-check.C:
			r := d.checkAll(plan.version)
			nextCheck = nextCheck.Add(d.cfg.Interval)
			check.Reset(max(time.Until(nextCheck), 0))
			if after(r) {
				return *r, true
			}
		case m := <-d.queue:
			if m.boot != boot {
				d.note("lost %s %q: it came before a restart", m.m.Topic, m.m.Payload)
				continue
			}
			r := d.command(m.m, plan.version)
			if after(r) {
				return *r, true
			}
		case what := <-d.ctl:
			switch what {
			case "flap":
				if link != nil {
					d.note("Wi-Fi drop")
					link.Abort()
				}
			case "restart":
				r := &ehpBoot{version: plan.version}
				d.note("restart asked")
				after(r)
				return *r, true
			case "check":
				if r := d.checkAll(plan.version); after(r) {
					return *r, true
				}
			}
		case <-crash:
			d.note("the new build crashed; the bootloader rolls back to %s", plan.rollback)
			if link != nil {
				link.Abort()
				link = nil
			}
			return ehpBoot{version: plan.rollback}, true
		}
	}
}

func (d *ESPHomePullDevice) setLink(c *mqttClient) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.link = c
}

// connect dials the broker once (bounded, and cut by Close).
func (d *ESPHomePullDevice) connect(boot int) (*mqttClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	o := mqttOptions{ClientID: d.clientID, KeepAlive: d.cfg.KeepAlive, CleanSession: false,
		WillTopic: d.StatusTopic(), WillPayload: []byte("offline"), WillRetain: true,
		Username: d.cfg.Username, Password: d.cfg.Password, HasUsername: d.cfg.Username != "", HasPassword: d.cfg.Password != ""}
	c, err := mqttDial(ctx, d.addr, o, func(m mqttMessage) {
		select {
		case d.queue <- ehpMsg{m: m, boot: boot}:
		default:
			d.note("dropped %s: queue full", m.Topic)
		}
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.failures = append(d.failures, err.Error())
		if len(d.failures) > 5 {
			d.failures = d.failures[1:]
		}
		d.logf("connect: %v", err)
		return nil, err
	}
	d.logf("connected as %s", d.clientID)
	return c, nil
}

// onConnect: subscriptions, birth, discovery, each entity's state.
func (d *ESPHomePullDevice) onConnect(c *mqttClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !d.cfg.Silent {
		var filters []string
		for _, e := range d.entities {
			filters = append(filters, d.CommandTopic(e.id))
		}
		if _, err := c.Subscribe(ctx, 0, filters...); err != nil {
			d.note("subscribe: %v", err)
		}
	}
	d.mu.Lock()
	d.onlines++
	clear(d.lastSaid) // each connection's states are logged
	d.mu.Unlock()
	d.publishOn(c, d.StatusTopic(), "online", true)
	if !d.cfg.Silent {
		if !d.cfg.NoDiscovery {
			for _, e := range d.entities {
				d.publishOn(c, "homeassistant/update/"+d.cfg.Name+"/"+e.id+"/config", d.discovery(e), true)
			}
		}
		for _, e := range d.entities {
			d.publishState(c, e)
		}
	}
	d.note("online")
	select {
	case <-d.online:
	default:
		close(d.online)
	}
}

func (d *ESPHomePullDevice) discovery(e *ehpEntity) string {
	return jsonOf(map[string]any{"name": e.id, "stat_t": d.StateTopic(e.id), "cmd_t": d.CommandTopic(e.id),
		"avty_t": d.StatusTopic(), "uniq_id": d.mac + "-update-" + e.id, "schema": "json", "payload_install": "INSTALL",
		"dev": map[string]any{"ids": d.mac, "name": d.cfg.Name, "sw": locked(&d.mu, &d.version) + " (ESPHome 2025.11.0)", "mf": "Espressif"}})
}

// stateJSON is mqtt_update.cpp's payload, keys in its order.
func stateJSON(i esphomeInfo) string {
	s := `{"installed_version":` + jsonOf(i.Current) + `,"latest_version":` + jsonOf(i.Latest) + `,"title":` + jsonOf(i.Title)
	if i.Summary != "" {
		s += `,"release_summary":` + jsonOf(i.Summary)
	}
	if i.ReleaseURL != "" {
		s += `,"release_url":` + jsonOf(i.ReleaseURL)
	}
	return s + "}"
}

// publishState publishes e's state, retained, on c (nil: the link now,
// if any); with Silent nothing.
func (d *ESPHomePullDevice) publishState(c *mqttClient, e *ehpEntity) {
	if d.cfg.Silent {
		return
	}
	d.mu.Lock()
	if c == nil {
		c = d.link
	}
	payload := stateJSON(e.info)
	d.mu.Unlock()
	if c == nil {
		d.note("lost state %s: not connected", payload)
		return
	}
	for range 1 + boolInt(d.cfg.DoubleStates) {
		d.publishOn(c, d.StateTopic(e.id), payload, true)
	}
}

// publishOn publishes at QoS 0 (ESPHome's default); on a dead link the
// message is lost, as the firmware's would be.
func (d *ESPHomePullDevice) publishOn(c *mqttClient, topic, payload string, retain bool) {
	err := c.Publish(context.Background(), topic, []byte(payload), 0, retain)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.logf("lost %s %s: %v", topic, payload, err)
		return
	}
	if strings.HasSuffix(topic, "/state") && d.lastSaid[topic] == payload {
		d.said++ // a repeat: counted, not logged again
		return
	}
	if d.said > 0 {
		d.logf("(and %d repeats)", d.said)
		d.said = 0
	}
	d.lastSaid[topic] = payload
	d.logf("published %s %s", topic, payload)
}

// checkAll is each entity's update(): a check of its source. An
// AutoInstall that succeeds returns the reboot.
func (d *ESPHomePullDevice) checkAll(running string) *ehpBoot {
	for _, e := range d.entities {
		if r := d.check(e, running); r != nil {
			return r
		}
	}
	return nil
}

func (d *ESPHomePullDevice) check(e *ehpEntity, running string) *ehpBoot {
	d.mu.Lock()
	d.checks++
	d.mu.Unlock()
	if d.cfg.ManifestUnreachable {
		d.note("check %s: failed to fetch manifest (unreachable)", e.source)
		return nil
	}
	body, problem := d.getManifest(e.source)
	if d.cfg.CheckTime > 0 && d.esp8266() && !sleepOrDone(d.done, d.cfg.CheckTime) {
		return nil
	}
	if problem != "" {
		d.note("check %s: failed to fetch manifest: %s", e.source, problem)
		return nil
	}
	if bad := esphomeManifestShape(body, d.cfg.ChipFamily); len(bad) > 0 {
		d.mu.Lock()
		d.badManifests = append(d.badManifests, e.source+": "+strings.Join(bad, "; "))
		d.mu.Unlock()
	}
	info, refusal := parseESPHomeManifest(body, d.cfg.ChipFamily, e.source)
	if refusal != "" {
		d.note("check %s: failed to parse manifest: %s", e.source, refusal)
		return nil
	}
	info.Current = running
	state := "AVAILABLE"
	if info.Latest == "" || info.Latest == info.Current {
		state = "NO_UPDATE"
	}
	d.mu.Lock()
	became := state == "AVAILABLE" && e.state != "AVAILABLE"
	if e.info != info || e.state != state {
		d.logf("check %s: %s (latest %q, installed %q)", e.id, state, info.Latest, info.Current)
	}
	e.info, e.state = info, state
	d.mu.Unlock()
	d.publishState(nil, e)
	if became && d.cfg.AutoInstall {
		d.note("on_update_available: update.perform %s", e.id)
		return d.perform(e, running, true)
	}
	return nil
}

// command is the MQTT callback of the command topics.
func (d *ESPHomePullDevice) command(m mqttMessage, running string) *ehpBoot {
	d.mu.Lock()
	d.commands = append(d.commands, m.Topic+" "+string(m.Payload))
	if m.Retained {
		d.retainedSeen = true
	}
	d.logf("got %s %q retained=%v", m.Topic, m.Payload, m.Retained)
	var e *ehpEntity
	for _, x := range d.entities {
		if m.Topic == d.CommandTopic(x.id) {
			e = x
		}
	}
	install := string(m.Payload) == "INSTALL"
	if install {
		d.installCommands++
	}
	d.mu.Unlock()
	switch {
	case e == nil:
		return nil
	case !install:
		d.note("unknown update payload %q", m.Payload)
		return nil
	}
	d.mu.Lock()
	available := e.state == "AVAILABLE"
	if !available {
		d.notAvailable++
		d.logf("INSTALL while %s: nothing done", e.state)
	} else {
		d.installs++
	}
	d.mu.Unlock()
	if !available {
		return nil
	}
	return d.perform(e, running, false)
}

// perform installs e's update: state published, the download, then the
// reboot returned, or on failure the state AVAILABLE published again.
func (d *ESPHomePullDevice) perform(e *ehpEntity, running string, auto bool) *ehpBoot {
	d.mu.Lock()
	e.state = "INSTALLING"
	if auto {
		d.autoInstalls++
	}
	info := e.info
	d.mu.Unlock()
	d.publishState(nil, e)
	if u := info.URL; !strings.HasPrefix(u, "http") || !strings.Contains(u, "://") || len(u) < 8 {
		// The OTA component clears such a URL and flash() returns at
		// once, with no OTA callback: the state stays INSTALLING until
		// the next check sets it again.
		d.note("flash: URL not set (%q is no URL): nothing done", u)
		return nil
	}
	f := d.download(info, auto)
	d.mu.Lock()
	d.fetches = append(d.fetches, f)
	d.mu.Unlock()
	if f.Err != "" {
		d.mu.Lock()
		e.state = "AVAILABLE"
		d.logf("install failed: %s", f.Err)
		d.mu.Unlock()
		d.publishState(nil, e)
		return nil
	}
	next := info.Latest
	if d.cfg.WrongVersion != "" {
		next = d.cfg.WrongVersion
	}
	d.note("install done: rebooting into %s", next)
	return &ehpBoot{version: next, newApp: true, old: running}
}

// download is do_ota_: GET, 200 and a length, the magic byte, the MD5.
func (d *ESPHomePullDevice) download(info esphomeInfo, auto bool) (f ESPHomeFetch) {
	f = ESPHomeFetch{URL: info.URL, Start: time.Now(), Auto: auto}
	defer func() { f.End = time.Now() }()
	d.note("fetch %s", info.URL)
	resp, stop, err := esphomeGet(d.done, info.URL, 60*time.Second)
	if err != nil {
		f.Err = "connection error: " + err.Error()
		return f
	}
	defer stop()
	switch {
	case resp.StatusCode != http.StatusOK:
		f.Err = fmt.Sprintf("HTTP %d", resp.StatusCode)
		return f
	case resp.ContentLength <= 0:
		f.Err = "no content length"
		return f
	}
	d.mu.Lock()
	fault := (d.cfg.DownloadCut || d.cfg.BadMD5) && (d.cfg.FaultFetches == 0 || d.faultHits < d.cfg.FaultFetches)
	if fault {
		d.faultHits++
	}
	drop := d.cfg.BrokerDrop && !d.dropped
	d.dropped = d.dropped || drop
	progress := d.cfg.ProgressStates
	d.mu.Unlock()

	h := md5.New()
	half := resp.ContentLength / 2
	buf := make([]byte, 4096)
	var first byte
	start := time.Now()
	for f.Bytes < resp.ContentLength {
		n, rerr := resp.Body.Read(buf[:min(int64(len(buf)), resp.ContentLength-f.Bytes)])
		if n > 0 {
			if f.Bytes == 0 {
				first = buf[0]
			}
			if fault && d.cfg.BadMD5 && f.Bytes <= half && half < f.Bytes+int64(n) {
				buf[half-f.Bytes] ^= 0xFF
			}
			h.Write(buf[:n])
			before := f.Bytes
			f.Bytes += int64(n)
			if progress > 0 {
				// Progress states spread over the download.
				step := resp.ContentLength / int64(progress+1)
				for k := int64(1); k <= int64(progress); k++ {
					if before < k*step && k*step <= f.Bytes {
						for _, e := range d.entities {
							d.mu.Lock()
							installing := e.state == "INSTALLING"
							d.mu.Unlock()
							if installing {
								d.publishState(nil, e)
							}
						}
					}
				}
			}
		}
		if f.Bytes >= half {
			if drop {
				drop = false
				d.mu.Lock()
				c := d.link
				d.logf("broker drop mid-download")
				d.mu.Unlock()
				if c != nil {
					c.Abort()
				}
			}
			if fault && d.cfg.DownloadCut {
				f.Err = "error reading data (cut halfway)"
				return f
			}
		}
		if rerr != nil {
			break
		}
		if d.cfg.FetchRate > 0 {
			ahead := time.Duration(float64(f.Bytes)/float64(d.cfg.FetchRate)*float64(time.Second)) - time.Since(start)
			if ahead > 0 && !sleepOrDone(d.done, ahead) {
				f.Err = "closed"
				return f
			}
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	d.note("fetched %d of %d bytes, MD5 %s", f.Bytes, resp.ContentLength, sum)
	switch {
	case f.Bytes < resp.ContentLength:
		f.Err = "error reading data"
	case first != 0xE9 && !(d.esp8266() && first == 0x1F):
		f.Err = fmt.Sprintf("invalid magic byte %#x", first)
	case len(info.MD5) < 32 || sum != info.MD5[:32]:
		// strncmp over MD5_SIZE (32) characters, case and all.
		f.Err = fmt.Sprintf("MD5 computed %s, expected %s: aborting due to MD5 mismatch", sum, info.MD5)
	}
	return f
}

func (d *ESPHomePullDevice) esp8266() bool { return d.cfg.ChipFamily == "ESP8266" }

// getManifest GETs a manifest; problem is why the device got none. A
// manifest served without a 200 and a length is also a tripwire.
func (d *ESPHomePullDevice) getManifest(u string) (body []byte, problem string) {
	resp, stop, err := esphomeGet(d.done, u, 4500*time.Millisecond) // http_request's default timeout
	if err != nil {
		return nil, err.Error()
	}
	defer stop()
	d.mu.Lock()
	d.manifestGets++
	d.mu.Unlock()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, "reading: " + err.Error()
	}
	if resp.ContentLength < 0 {
		d.mu.Lock()
		d.badManifests = append(d.badManifests, u+": served without Content-Length (a device allocates by it)")
		d.mu.Unlock()
	}
	return body, ""
}

// esphomeGet is the http_request component's GET as a fake makes it:
// http on loopback only (a fake never reaches the network), no proxy,
// redirects followed up to three times (its redirect_limit), to loopback
// only; ESPHome's User-Agent. It is cut when done closes or after
// timeout; stop closes the body.
func esphomeGet(done <-chan struct{}, u string, timeout time.Duration) (*http.Response, func(), error) {
	loop := func(pu *url.URL) error {
		if pu.Scheme != "http" {
			return errNotHTTP
		}
		if ip := net.ParseIP(pu.Hostname()); ip == nil || !ip.IsLoopback() {
			return errNotLoopback
		}
		return nil
	}
	pu, err := url.Parse(u)
	if err != nil {
		return nil, nil, err
	}
	if err := loop(pu); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("User-Agent", "ESPHome/2025.11.0 (https://esphome.io)")
	c := http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) > 3 {
				return errors.New("too many redirects")
			}
			return loop(r.URL)
		}}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, func() { resp.Body.Close(); cancel() }, nil
}
