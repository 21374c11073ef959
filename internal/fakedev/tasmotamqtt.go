package fakedev

import (
	"cmp"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A fake Tasmota that pulls its image, driven over MQTT, written from the
// Tasmota MQTT facts (docs/protocols/tasmota-mqtt.md: arendst/Tasmota
// xdrv_02_9_mqtt.ino, support_command.ino, support_tasmota.ino,
// support_wifi.ino; esp8266/Arduino ESP8266httpUpdate.cpp) in these words
// (it fetches from loopback only):
//
//   - CONNECT: client id DVES_XXXXXX, keep alive 30 s, clean session, will
//     tele/<t>/LWT "Offline" at QoS 1, retained. On every connection:
//     tele/<t>/LWT "Online" retained, an empty cmnd/<t>/POWER, then
//     subscriptions to cmnd/<t>/#, the group and the fallback topic at
//     QoS 0. Only on the first connection after a boot: INFO1, INFO2,
//     INFO3 (wrapped {"Info1":{…}}, or flat before 9.5 with no BootCount).
//   - Commands come on <cmnd FullTopic><Command>; replies go to
//     stat/<t>/RESULT, Status to stat/<t>/STATUS<n>. Retained commands run
//     like any other (there is no retain check).
//   - Upgrade 1 replies {"Upgrade":"Version <release> from <OtaUrl>"};
//     three seconds later the first GET, then a try every two seconds up to
//     OTA_ATTEMPTS-1 (ESP8266 9, ESP32 4); one stat/<t>/UPGRADE at the end,
//     two seconds after the last try: "Successful. Restarting" or
//     "Failed <the updater's words>", and on failure it keeps running.
//   - ESP8266: once headers, size and room are fine the updater closes
//     every other socket, the MQTT one with no DISCONNECT, so the broker
//     publishes the will as the body starts; after the download the device
//     reconnects at once (LWT Online, no INFO). A try refused for room
//     sets the loader flag: later tries fetch "<name>-minimal<ext>", and
//     from the sixth try ".gz" is appended. The minimal build, once online,
//     fetches the stored OtaUrl.
//   - ESP32 with one app slot (TwoStep): Upgrade restarts into safeboot,
//     which fetches the stored OtaUrl.
//   - A planned restart (after "Successful. Restarting", Restart 1)
//     disconnects cleanly: no will, the retained LWT stays "Online" until
//     the next boot says it again.

// TasmotaMQTT describes a fake pulling Tasmota. The zero value of a knob
// is the default given with it.
type TasmotaMQTT struct {
	// Topic is %topic%; default "tasmota_" and the last six hex digits of
	// the device's MAC (made from the test's name and a counter).
	Topic string
	// FullTopic is the pattern (%prefix%, %topic%, %hostname%, %id%);
	// default "%prefix%/%topic%/".
	FullTopic string
	// GroupTopic; default "tasmotas".
	GroupTopic string
	// Version is what INFO1 and StatusFWR tell: "<release>(<image>)";
	// default "14.2.0(tasmota)".
	Version string
	// CodeCores is appended to the Version INFO1 and StatusFWR tell
	// (GetCodeCores: "single-core" on ESP32 solo builds, else "").
	CodeCores string
	// NextVersion is what a fetched full image runs; default Version (a
	// rebuild of the same release). A minimal step tells NextVersion's
	// release with "(minimal)".
	NextVersion string
	// Hardware is StatusFWR.Hardware; it also picks the chip. Default
	// "ESP32-D0WD-V3" when Version's image starts with "tasmota32", else
	// "ESP8266EX".
	Hardware string
	// FreeKiB is StatusMEM.Free, the free sketch space: a larger image is
	// refused ("Not Enough space"). Default 1000 (ESP8266) or 1920 (ESP32).
	FreeKiB int64
	// OtaUrl is the stored OtaUrl at start; default Tasmota's own.
	OtaUrl string
	// BootCount at start; default 17.
	BootCount int
	// RebootTime is how long a restart is silent; default four ticks.
	RebootTime time.Duration

	// Username and Password for the broker; "" sends none.
	Username, Password string
	// KeepAlive; default 30 s.
	KeepAlive time.Duration
	// FlatInfo: a 9.3-era build: INFO1–3 without the {"InfoN":…} wrapper,
	// INFO3 without BootCount, and Status0 answered like Status 0.
	FlatInfo bool

	// Tick is Tasmota's once-a-second state machine, shortened for tests;
	// default 1 s. The upgrade's delays are counted in ticks.
	Tick time.Duration
	// BacklogDelay between Backlog's commands; default Tick/5 (200 ms,
	// SetOption34).
	BacklogDelay time.Duration
	// ReconnectDelay after a link the device did not drop itself was lost;
	// default ten ticks (MQTT_RETRY_SECS).
	ReconnectDelay time.Duration
	// FetchRate limits the download, bytes a second; 0 is unlimited.
	FetchRate int64

	// Faults.
	//
	// DownloadCut: a fetch stops halfway ("Update error: Stream Read
	// Timeout"). BadMD5: the image arrives corrupted, the updater reports
	// the MD5 mismatch (against x-MD5 when the server sent it). Both hit
	// the first FaultFetches fetches (0: every one).
	DownloadCut, BadMD5 bool
	FaultFetches        int
	// RollsBack: the new build crashes and the old one comes back with a
	// crash restart reason ("Exception" on ESP8266, or a crash dump object
	// with CrashDump; "Software reset CPU" on ESP32, which cannot tell a
	// crash from a restart). With CrashAfter 0 the new build dies before
	// its network is up and tells nothing; else it boots, reports (INFO1
	// with the new version) and crashes CrashAfter later, without
	// DISCONNECT, so the broker publishes the will.
	RollsBack, CrashDump bool
	CrashAfter           time.Duration
	// NeverComesBack: after "Successful. Restarting" it disconnects and
	// stays away.
	NeverComesBack bool
	// TwoStep: the full image does not fit. ESP8266: the first try is
	// refused for room, then it fetches -minimal, boots "(minimal)" and
	// fetches the full image. ESP32: Upgrade restarts into safeboot,
	// which fetches the image.
	TwoStep bool
	// BrokerDrop: the MQTT link drops halfway through the first fetch
	// (the will fires) and comes back a tick after the download, with no
	// restart and so no INFO.
	BrokerDrop bool
	// LoseOutcome: the link drops as the download starts and comes back
	// only after stat/<t>/UPGRADE was published, so that is lost (a
	// message published while disconnected is gone).
	LoseOutcome bool
	// AbruptRestart: restarts cut the link with no DISCONNECT (a watchdog
	// or a power cut rather than EspRestart), so the broker publishes the
	// will.
	AbruptRestart bool
	// Silent: Status commands get no answer.
	Silent bool
}

// TasmotaMQTTDevice is a running fake pulling Tasmota.
type TasmotaMQTTDevice struct {
	cfg      TasmotaMQTT
	addr     string
	esp8266  bool
	mac      string // 12 upper-case hex digits
	clientID string
	hostname string

	mu            sync.Mutex
	running       string // version text; "" while down
	version       string // the flash's version text, also while down
	otaURL        string
	bootCount     int
	bootAt        time.Time
	restartReason any // string, or a crash dump object
	mqttCount     int
	link          *mqttClient
	linkReady     chan struct{} // closed once the link's on-connect work is done
	conn          int           // connection count: a command queued on an older link is lost
	hold          chan struct{} // a download keeps heldLink's successor from connecting until closed
	holdOpen      bool
	heldLink      *mqttClient
	firstOnline   chan struct{}
	boot          int // boot generation: an upgrade belongs to one boot
	upgrading     bool
	loader        bool // RtcSettings.ota_loader: survives a soft restart
	commands      []string
	upgrades      int
	fetches       []string
	faultHits     int
	dropped       bool   // BrokerDrop done
	rollbackTo    string // RollsBack with CrashAfter: the build the crash brings back
	statusDuring  int
	statuses      int
	retainedSeen  bool
	log           []string
	failures      []string

	queue   chan queued
	restart chan bootPlan
	done    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

type queued struct {
	m     mqttMessage
	conn  int
	ready chan struct{}
}

// bootPlan is what the next boot runs.
type bootPlan struct {
	version string
	newApp  bool // a new final build: RollsBack and NeverComesBack apply
	abrupt  bool
	crash   bool // boots after a crash: the restart reason says so
}

var tasmotaMQTTSeq struct {
	sync.Mutex
	n int
}

// StartTasmotaMQTT starts a fake pulling Tasmota against the broker at
// brokerAddr (host:port) and waits until its first connection is done
// (LWT, subscriptions, INFO1–3). t.Cleanup stops it.
func StartTasmotaMQTT(t testing.TB, brokerAddr string, cfg TasmotaMQTT) *TasmotaMQTTDevice {
	t.Helper()
	d, err := newTasmotaMQTT(t.Name(), brokerAddr, cfg)
	if err != nil {
		t.Fatalf("fake tasmota-mqtt: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			t.Logf("fake tasmota-mqtt %s:\n  %s", d.cfg.Topic, strings.Join(d.Log(), "\n  "))
		}
	})
	d.wg.Add(2)
	go d.life()
	go d.commandsLoop()
	if err := d.waitReady(60 * time.Second); err != nil {
		t.Fatalf("fake tasmota-mqtt %s: %v\n  %s", d.cfg.Topic, err, strings.Join(d.Log(), "\n  "))
	}
	return d
}

func newTasmotaMQTT(name, addr string, cfg TasmotaMQTT) (*TasmotaMQTTDevice, error) {
	if cfg.Version == "" {
		cfg.Version = "14.2.0(tasmota)"
	}
	if cfg.NextVersion == "" {
		cfg.NextVersion = cfg.Version
	}
	if cfg.Hardware == "" {
		cfg.Hardware = "ESP8266EX"
		if _, img := splitVersion(cfg.Version); strings.HasPrefix(img, "tasmota32") {
			cfg.Hardware = "ESP32-D0WD-V3"
		}
	}
	d := &TasmotaMQTTDevice{addr: addr, esp8266: strings.HasPrefix(strings.ToUpper(cfg.Hardware), "ESP8266"),
		queue: make(chan queued, 1024), restart: make(chan bootPlan), done: make(chan struct{})}
	tasmotaMQTTSeq.Lock()
	tasmotaMQTTSeq.n++
	seq := tasmotaMQTTSeq.n
	tasmotaMQTTSeq.Unlock()
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d/%s", name, seq, cfg.Topic)
	d.mac = fmt.Sprintf("AABBCC%06X", h.Sum32()&0xFFFFFF)
	if cfg.Topic == "" {
		cfg.Topic = "tasmota_" + d.mac[6:]
	}
	if cfg.FullTopic == "" {
		cfg.FullTopic = "%prefix%/%topic%/"
	}
	if cfg.GroupTopic == "" {
		cfg.GroupTopic = "tasmotas"
	}
	if cfg.FreeKiB == 0 {
		cfg.FreeKiB = 1920
		if d.esp8266 {
			cfg.FreeKiB = 1000
		}
	}
	if cfg.OtaUrl == "" {
		cfg.OtaUrl = "http://ota.tasmota.com/tasmota32/release/tasmota32.bin"
		if d.esp8266 {
			cfg.OtaUrl = "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
		}
	}
	if cfg.BootCount == 0 {
		cfg.BootCount = 17
	}
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.RebootTime == 0 {
		cfg.RebootTime = 4 * cfg.Tick
	}
	if cfg.BacklogDelay == 0 {
		cfg.BacklogDelay = cfg.Tick / 5
	}
	if cfg.ReconnectDelay == 0 {
		cfg.ReconnectDelay = 10 * cfg.Tick
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	switch {
	case strings.ContainsAny(cfg.Topic, "+#/") || cfg.Topic == "":
		return nil, fmt.Errorf("topic %q: one level without wildcards", cfg.Topic)
	case !strings.Contains(cfg.FullTopic, "%topic%") && !strings.Contains(cfg.FullTopic, "%id%") && !strings.Contains(cfg.FullTopic, "%hostname%"):
		return nil, fmt.Errorf("full topic %q names no device", cfg.FullTopic)
	}
	d.cfg = cfg
	d.clientID = "DVES_" + d.mac[6:]
	d.hostname = fmt.Sprintf("%s-%04d", d.cfg.Topic, h.Sum32()%10000)
	d.version, d.running = cfg.Version, ""
	d.otaURL = cfg.OtaUrl
	d.bootCount = cfg.BootCount
	d.bootAt = time.Now().Add(-time.Hour)
	d.restartReason = d.softRestart()
	d.linkReady = make(chan struct{})
	d.firstOnline = make(chan struct{})
	return d, nil
}

// splitVersion cuts "14.2.0(tasmota)" into "14.2.0" and "tasmota".
func splitVersion(v string) (release, image string) {
	if i := strings.IndexByte(v, '('); i >= 0 {
		return v[:i], strings.TrimSuffix(v[i+1:], ")")
	}
	return v, ""
}

func (d *TasmotaMQTTDevice) softRestart() string {
	if d.esp8266 {
		return "Software/System restart"
	}
	return "Software reset CPU"
}

// Topic is the device's %topic%.
func (d *TasmotaMQTTDevice) Topic() string { return d.cfg.Topic }

// ClientID is the MQTT client id (DVES_XXXXXX).
func (d *TasmotaMQTTDevice) ClientID() string { return d.clientID }

// CommandTopic is where a command goes: CommandTopic("Backlog").
func (d *TasmotaMQTTDevice) CommandTopic(cmd string) string {
	return d.topicFor("cmnd", d.cfg.Topic) + cmd
}

// StatTopic and TeleTopic are the device's stat/ and tele/ topics.
func (d *TasmotaMQTTDevice) StatTopic(sub string) string {
	return d.topicFor("stat", d.cfg.Topic) + sub
}
func (d *TasmotaMQTTDevice) TeleTopic(sub string) string {
	return d.topicFor("tele", d.cfg.Topic) + sub
}

// Commands is every message that reached the device on a command topic,
// "<topic> <payload>" (the topic alone for an empty payload), in order.
func (d *TasmotaMQTTDevice) Commands() []string { return lockedCopy(&d.mu, &d.commands) }

// Upgrades is how many Upgrade commands the device took.
func (d *TasmotaMQTTDevice) Upgrades() int { return locked(&d.mu, &d.upgrades) }

// Running is the version the device runs ("14.3.0(tasmota)"), "" while it
// is restarting or gone.
func (d *TasmotaMQTTDevice) Running() string { return locked(&d.mu, &d.running) }

// OtaURL is the stored OtaUrl now.
func (d *TasmotaMQTTDevice) OtaURL() string { return locked(&d.mu, &d.otaURL) }

// BootCount is the boot counter now.
func (d *TasmotaMQTTDevice) BootCount() int { return locked(&d.mu, &d.bootCount) }

// Fetches is every URL the device fetched, in order.
func (d *TasmotaMQTTDevice) Fetches() []string { return lockedCopy(&d.mu, &d.fetches) }

// Upgrading: an upgrade runs (the Status tripwire is armed).
func (d *TasmotaMQTTDevice) Upgrading() bool { return locked(&d.mu, &d.upgrading) }

// StatusDuringUpgrade is the tripwire: Status commands that came while an
// upgrade ran. Tasmota's maintainers report they can break the flash; a
// client must send none.
func (d *TasmotaMQTTDevice) StatusDuringUpgrade() int { return locked(&d.mu, &d.statusDuring) }

// Statuses is how many Status commands came at all.
func (d *TasmotaMQTTDevice) Statuses() int { return locked(&d.mu, &d.statuses) }

// RetainedCommandSeen: a command came with the retain flag (delivered from
// the broker's store on a subscribe): it would run on every reconnect.
func (d *TasmotaMQTTDevice) RetainedCommandSeen() bool { return locked(&d.mu, &d.retainedSeen) }

// Log is what the device did, one line an event.
func (d *TasmotaMQTTDevice) Log() []string { return lockedCopy(&d.mu, &d.log) }

// Close stops the device: it drops its link as a power cut does.
func (d *TasmotaMQTTDevice) Close() {
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		close(d.done)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// logf records an event; the caller holds mu.
func (d *TasmotaMQTTDevice) logf(format string, a ...any) {
	d.log = append(d.log, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, a...))
}

func (d *TasmotaMQTTDevice) note(format string, a ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logf(format, a...)
}

func (d *TasmotaMQTTDevice) ticks(n int) time.Duration { return time.Duration(n) * d.cfg.Tick }

// topicFor is GetTopic_P: the FullTopic with its tokens replaced, "#"
// removed, "//" folded, a trailing "/"; for cmnd a pattern without
// %prefix% gets "/%prefix%" appended.
func (d *TasmotaMQTTDevice) topicFor(prefix, topic string) string {
	ft := d.cfg.FullTopic
	if prefix == "cmnd" && !strings.Contains(ft, "%prefix%") {
		ft += "/%prefix%"
	}
	ft = strings.NewReplacer("%prefix%", prefix, "%topic%", topic, "%hostname%", d.hostname, "%id%", d.mac).Replace(ft)
	ft = strings.ReplaceAll(ft, "#", "")
	for strings.Contains(ft, "//") {
		ft = strings.ReplaceAll(ft, "//", "/")
	}
	if !strings.HasSuffix(ft, "/") {
		ft += "/"
	}
	return ft
}

func (d *TasmotaMQTTDevice) groupPrefix() string    { return d.topicFor("cmnd", d.cfg.GroupTopic) }
func (d *TasmotaMQTTDevice) fallbackPrefix() string { return "cmnd/" + d.clientID + "_fb/" }

// waitReady waits for the first connection's on-connect work.
func (d *TasmotaMQTTDevice) waitReady(max time.Duration) error {
	tm := time.NewTimer(max)
	defer tm.Stop()
	select {
	case <-d.firstOnline:
		return nil
	case <-tm.C:
		d.mu.Lock()
		defer d.mu.Unlock()
		return fmt.Errorf("not online after %s: %s", max, strings.Join(d.failures, "; "))
	}
}

// life is the device's power and network: connect, serve, restart.
func (d *TasmotaMQTTDevice) life() {
	defer d.wg.Done()
	d.mu.Lock()
	d.running = d.version
	d.logf("boot %s", d.version)
	d.mu.Unlock()
	first := true
	for {
		c, plan, ok := d.connect()
		if !ok {
			return
		}
		if c == nil {
			// A restart came while the link was down.
			if !d.reboot(plan) {
				return
			}
			first = true
			continue
		}
		d.online(c, first)
		first = false
		select {
		case <-d.done:
			c.Abort()
			return
		case <-c.Done():
			d.linkDown(c, "link lost: %v", c.Err())
			plan, restart, ok := d.awaitReconnect(c)
			if !ok {
				return
			}
			if restart {
				if !d.reboot(plan) {
					return
				}
				first = true
			}
		case plan := <-d.restart:
			if plan.abrupt || d.cfg.AbruptRestart {
				c.Abort()
			} else {
				c.Disconnect()
			}
			d.linkDown(c, "restart: link closed (abrupt %v)", plan.abrupt || d.cfg.AbruptRestart)
			if !d.reboot(plan) {
				return
			}
			first = true
		}
	}
}

// awaitReconnect waits until the device may connect again: a tick after
// the download that holds the link down, else ReconnectDelay. A restart
// asked meanwhile is handed back (restart true); ok false: closed.
func (d *TasmotaMQTTDevice) awaitReconnect(c *mqttClient) (plan bootPlan, restart, ok bool) {
	d.mu.Lock()
	hold := d.hold
	if d.heldLink != c {
		hold = nil
	}
	d.mu.Unlock()
	wait := d.cfg.ReconnectDelay
	if hold != nil {
		select {
		case <-hold:
		case <-d.done:
			return plan, false, false
		case plan = <-d.restart:
			return plan, true, true
		}
		wait = d.ticks(1)
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-tm.C:
		return plan, false, true
	case <-d.done:
		return plan, false, false
	case plan = <-d.restart:
		return plan, true, true
	}
}

// connect tries the broker until it answers; a restart asked meanwhile is
// handed back instead (c nil). ok false: the device was closed.
func (d *TasmotaMQTTDevice) connect() (c *mqttClient, plan bootPlan, ok bool) {
	for {
		// A download blocks the firmware's loop: no connect until it ends.
		d.mu.Lock()
		hold, open := d.hold, d.holdOpen
		d.mu.Unlock()
		if open {
			select {
			case <-hold:
			case <-d.done:
				return nil, bootPlan{}, false
			case p := <-d.restart:
				return nil, p, true
			}
			if !sleepOrDone(d.done, d.ticks(1)) {
				return nil, bootPlan{}, false
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		go func() {
			select {
			case <-d.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		o := mqttOptions{ClientID: d.clientID, KeepAlive: d.cfg.KeepAlive, CleanSession: true,
			WillTopic: d.TeleTopic("LWT"), WillPayload: []byte("Offline"), WillQoS: 1, WillRetain: true,
			Username: d.cfg.Username, Password: d.cfg.Password, HasUsername: d.cfg.Username != "", HasPassword: d.cfg.Password != ""}
		ready := make(chan struct{})
		d.mu.Lock()
		d.conn++
		conn := d.conn
		d.mu.Unlock()
		cl, err := mqttDial(ctx, d.addr, o, func(m mqttMessage) {
			select {
			case d.queue <- queued{m: m, conn: conn, ready: ready}:
			default:
				d.note("dropped %s: command queue full", m.Topic)
			}
		})
		cancel()
		if err == nil {
			d.mu.Lock()
			d.link, d.linkReady = cl, ready
			d.mqttCount++
			d.logf("connected as %s", d.clientID)
			d.mu.Unlock()
			return cl, bootPlan{}, true
		}
		d.mu.Lock()
		d.failures = append(d.failures, err.Error())
		if len(d.failures) > 5 {
			d.failures = d.failures[1:]
		}
		d.logf("connect: %v", err)
		d.mu.Unlock()
		tm := time.NewTimer(d.cfg.ReconnectDelay)
		select {
		case <-d.done:
			tm.Stop()
			return nil, bootPlan{}, false
		case p := <-d.restart:
			tm.Stop()
			return nil, p, true
		case <-tm.C:
		}
	}
}

// online is MqttConnected: LWT Online, the empty POWER, subscriptions,
// and on the first connection after a boot INFO1–3.
func (d *TasmotaMQTTDevice) online(c *mqttClient, first bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.publishOn(c, d.TeleTopic("LWT"), "Online", true)
	d.publishOn(c, d.CommandTopic("POWER"), "", false)
	filters := []string{d.topicFor("cmnd", d.cfg.Topic) + "#"}
	if strings.Contains(d.cfg.FullTopic, "%topic%") {
		filters = append(filters, d.groupPrefix()+"#", d.fallbackPrefix()+"#")
	}
	if _, err := c.Subscribe(ctx, 0, filters...); err != nil {
		d.note("subscribe: %v", err)
	}
	if first {
		d.mu.Lock()
		v, boots, reason := d.running, d.bootCount, d.restartReason
		d.mu.Unlock()
		module := "Generic"
		if !d.esp8266 {
			module = "ESP32-DevKit"
		}
		info1 := fmt.Sprintf(`"Module":%s,"Version":%s,"FallbackTopic":%s,"GroupTopic":%s`,
			jsonOf(module), jsonOf(v+d.cfg.CodeCores), jsonOf(d.fallbackPrefix()), jsonOf(d.groupPrefix()))
		info2 := fmt.Sprintf(`"WebServerMode":"Admin","Hostname":%s,"IPAddress":"127.0.0.1"`, jsonOf(d.hostname))
		info3 := `"RestartReason":` + jsonOf(reason)
		if d.cfg.FlatInfo {
			d.publishOn(c, d.TeleTopic("INFO1"), "{"+info1+"}", false)
			d.publishOn(c, d.TeleTopic("INFO2"), "{"+info2+"}", false)
			d.publishOn(c, d.TeleTopic("INFO3"), "{"+info3+"}", false)
		} else {
			d.publishOn(c, d.TeleTopic("INFO1"), `{"Info1":{`+info1+"}}", false)
			d.publishOn(c, d.TeleTopic("INFO2"), `{"Info2":{`+info2+"}}", false)
			d.publishOn(c, d.TeleTopic("INFO3"), `{"Info3":{`+info3+fmt.Sprintf(`,"BootCount":%d}}`, boots), false)
		}
	}
	d.mu.Lock()
	ready, loader := d.linkReady, d.loader
	_, img := splitVersion(d.running)
	d.logf("online (first after boot %v)", first)
	d.mu.Unlock()
	close(ready)
	select {
	case <-d.firstOnline:
	default:
		close(d.firstOnline)
	}
	d.mu.Lock()
	back, boot := d.rollbackTo, d.boot
	d.rollbackTo = ""
	d.mu.Unlock()
	if first && back != "" {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if sleepOrDone(d.done, d.cfg.CrashAfter) && d.current(boot) {
				d.note("the new build crashed; the old one boots")
				d.requestRestart(bootPlan{version: back, abrupt: true, crash: true})
			}
		}()
	}
	if first && loader && (img == "minimal" || img == "safeboot") {
		// A loader build at network-up with ota_loader set (ESP8266) or
		// the factory flag (ESP32 safeboot): fetch the stored OtaUrl.
		d.startUpgrade(true)
	}
}

// linkDown forgets a link that is gone.
func (d *TasmotaMQTTDevice) linkDown(c *mqttClient, format string, a ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link == c {
		d.link = nil
	}
	d.logf(format, a...)
}

// publishOn publishes at QoS 0 (PubSubClient publishes nothing else); on
// a dead link the message is lost, as the firmware's would be.
func (d *TasmotaMQTTDevice) publishOn(c *mqttClient, topic, payload string, retain bool) {
	err := c.Publish(context.Background(), topic, []byte(payload), 0, retain)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.logf("lost %s %s: %v", topic, payload, err)
		return
	}
	d.logf("published %s %s", topic, payload)
}

// publish publishes on the current link, if any.
func (d *TasmotaMQTTDevice) publish(topic, payload string) {
	d.mu.Lock()
	c := d.link
	if c == nil {
		d.logf("lost %s %s: not connected", topic, payload)
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.publishOn(c, topic, payload, false)
}

// reboot is the silence of a restart and the boot after it; false when
// the device never comes back (or was closed).
func (d *TasmotaMQTTDevice) reboot(plan bootPlan) bool {
	d.mu.Lock()
	d.running = ""
	d.boot++
	d.hold, d.holdOpen, d.heldLink = nil, false, nil
	old := d.version
	d.logf("restarting into %s", plan.version)
	d.mu.Unlock()
	if !sleepOrDone(d.done, d.cfg.RebootTime) {
		return false
	}
	next, reason := plan.version, any(d.softRestart())
	if plan.newApp {
		switch {
		case d.cfg.NeverComesBack:
			d.note("the new build never comes back")
			<-d.done
			return false
		case d.cfg.RollsBack && d.cfg.CrashAfter > 0:
			d.mu.Lock()
			d.rollbackTo = old // online arms the crash
			d.mu.Unlock()
		case d.cfg.RollsBack:
			// The new build died before its network was up; the old one
			// boots a while later.
			d.note("the new build crashed; the old one boots")
			if !sleepOrDone(d.done, d.cfg.RebootTime) {
				return false
			}
			next, plan.crash = old, true
		}
	}
	if plan.crash {
		reason = d.crashReason()
	}
	_, img := splitVersion(next)
	d.mu.Lock()
	d.version, d.running = next, next
	d.bootCount++
	d.bootAt = time.Now()
	d.restartReason = reason
	d.mqttCount = 0
	if img != "minimal" && img != "safeboot" {
		d.upgrading = false
		d.loader = false
	}
	d.logf("boot %s", next)
	d.mu.Unlock()
	return true
}

// crashReason is what the build after a crash tells.
func (d *TasmotaMQTTDevice) crashReason() any {
	switch {
	case !d.esp8266:
		return "Software reset CPU"
	case d.cfg.CrashDump:
		return map[string]any{"Exception": 28, "Reason": "Exception", "EPC": []string{"40221c5e", "00000000", "00000000"},
			"EXCVADDR": "00000000", "DEPC": "00000000", "CallChain": []string{"40221c5e", "4021a8b1"}}
	}
	return "Exception"
}

// requestRestart hands a restart to life; false when the device closed.
func (d *TasmotaMQTTDevice) requestRestart(p bootPlan) bool {
	select {
	case d.restart <- p:
		return true
	case <-d.done:
		return false
	}
}

// commandsLoop runs the commands in the order they came.
func (d *TasmotaMQTTDevice) commandsLoop() {
	defer d.wg.Done()
	for {
		var q queued
		select {
		case <-d.done:
			return
		case q = <-d.queue:
		}
		// Commands run from the firmware's loop, after MqttConnected.
		select {
		case <-q.ready:
		case <-d.done:
			return
		}
		d.mu.Lock()
		stale := q.conn != d.conn
		d.mu.Unlock()
		if stale {
			d.note("lost %s %q: its link is gone", q.m.Topic, q.m.Payload)
			continue
		}
		d.received(q.m)
	}
}

// received is MqttDataHandler: which topic, which command.
func (d *TasmotaMQTTDevice) received(m mqttMessage) {
	d.mu.Lock()
	line := m.Topic
	if len(m.Payload) > 0 {
		line += " " + string(m.Payload)
	}
	d.commands = append(d.commands, line)
	if m.Retained {
		d.retainedSeen = true
	}
	d.logf("got %s %q retained=%v", m.Topic, m.Payload, m.Retained)
	d.mu.Unlock()
	if len(m.Payload) >= 1200 {
		d.note("dropped: payload of %d bytes (MQTT_MAX_PACKET_SIZE)", len(m.Payload))
		return
	}
	var cmd string
	for _, p := range []string{d.topicFor("cmnd", d.cfg.Topic), d.groupPrefix(), d.fallbackPrefix()} {
		if rest, ok := strings.CutPrefix(m.Topic, p); ok {
			cmd = rest
			break
		}
	}
	if cmd == "" {
		return
	}
	if i := strings.LastIndexByte(cmd, '/'); i >= 0 {
		cmd = cmd[i+1:]
	}
	d.execute(cmd, strings.TrimSpace(string(m.Payload)))
}

// splitCommand cuts "Status0" into "STATUS" and index "0".
func splitCommand(cmd string) (name, index string) {
	i := len(cmd)
	for i > 0 && cmd[i-1] >= '0' && cmd[i-1] <= '9' {
		i--
	}
	return strings.ToUpper(cmd[:i]), cmd[i:]
}

// execute runs one command and publishes its reply.
func (d *TasmotaMQTTDevice) execute(cmd, arg string) {
	name, index := splitCommand(cmd)
	result := d.StatTopic("RESULT")
	switch name {
	case "BACKLOG":
		var cmds []string
		for _, c := range strings.Split(arg, ";") {
			if c = strings.TrimSpace(c); c != "" {
				cmds = append(cmds, c)
			}
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for i, c := range cmds {
				if i > 0 && !sleepOrDone(d.done, d.cfg.BacklogDelay) {
					return
				}
				w, a, _ := strings.Cut(c, " ")
				d.execute(w, strings.TrimSpace(a))
			}
		}()
	case "STATUS":
		d.status(index, arg)
	case "OTAURL":
		d.mu.Lock()
		switch arg {
		case "":
		case "1":
			d.otaURL = d.cfg.OtaUrl
		default:
			d.otaURL = arg
		}
		u := d.otaURL
		d.mu.Unlock()
		d.publish(result, jsonOf(map[string]string{"OtaUrl": u}))
	case "UPGRADE":
		d.mu.Lock()
		release, _ := splitVersion(d.version)
		u := d.otaURL
		d.mu.Unlock()
		if arg == "1" || len(arg) >= 3 && newerRelease(arg, release) {
			d.mu.Lock()
			d.upgrades++
			d.mu.Unlock()
			d.publish(result, jsonOf(map[string]string{"Upgrade": "Version " + release + " from " + u}))
			d.startUpgrade(false)
			return
		}
		d.publish(result, jsonOf(map[string]string{"Upgrade": "1 or >" + release + " to upgrade"}))
	case "RESTART":
		if arg == "1" {
			d.publish(result, `{"Restart":"Restarting"}`)
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				if sleepOrDone(d.done, d.ticks(2)) {
					d.mu.Lock()
					v := d.version
					d.mu.Unlock()
					d.requestRestart(bootPlan{version: v})
				}
			}()
			return
		}
		d.publish(result, `{"Restart":"1 to restart"}`)
	default:
		d.publish(result, `{"Command":"Unknown"}`)
	}
}

// newerRelease: a is a newer dotted release than b.
func newerRelease(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x > y
		}
	}
	return false
}

// status answers Status: Status0 (index 0) one merged STATUS0 (9.5 on),
// Status 0 every section on its own topic, Status n one section, a bare
// Status the first section.
func (d *TasmotaMQTTDevice) status(index, arg string) {
	d.mu.Lock()
	d.statuses++
	during := d.upgrading
	if during {
		d.statusDuring++
	}
	d.logf("Status%s %s (during an upgrade: %v)", index, arg, during)
	d.mu.Unlock()
	if d.cfg.Silent {
		return
	}
	sections := d.statusSections()
	switch {
	case index == "0" && !d.cfg.FlatInfo:
		parts := make([]string, 0, len(sections))
		for _, s := range sections {
			parts = append(parts, fmt.Sprintf("%q:%s", s.key, s.body))
		}
		d.publish(d.StatTopic("STATUS0"), "{"+strings.Join(parts, ",")+"}")
	case index == "0" || arg == "0":
		for _, s := range sections {
			d.publish(d.StatTopic("STATUS"+s.n), fmt.Sprintf("{%q:%s}", s.key, s.body))
		}
	case arg == "" && (index == "" || index == "1"):
		s := sections[0]
		d.publish(d.StatTopic("STATUS"), fmt.Sprintf("{%q:%s}", s.key, s.body))
	default:
		for _, s := range sections {
			if s.n == arg && arg != "" {
				d.publish(d.StatTopic("STATUS"+s.n), fmt.Sprintf("{%q:%s}", s.key, s.body))
				return
			}
		}
		s := sections[0]
		d.publish(d.StatTopic("STATUS"), fmt.Sprintf("{%q:%s}", s.key, s.body))
	}
}

type statusSection struct{ n, key, body string }

func (d *TasmotaMQTTDevice) statusSections() []statusSection {
	d.mu.Lock()
	v, ota, boots, up, reason, mqttCount := d.running, d.otaURL, d.bootCount, time.Since(d.bootAt), d.restartReason, d.mqttCount
	d.mu.Unlock()
	if r, ok := reason.(string); !ok || r == "" {
		reason = "Exception"
	}
	now := time.Now().UTC()
	fwr := map[string]any{"Version": v + d.cfg.CodeCores, "BuildDateTime": "2024-10-20T10:00:00", "Core": "3_1_0", "SDK": "5.3.1",
		"CpuFrequency": 160, "Hardware": d.cfg.Hardware, "CR": "380/699"}
	if d.esp8266 {
		fwr["BootVersion"], fwr["Core"], fwr["SDK"], fwr["CpuFrequency"] = 31, "2_7_8", "2.2.2-dev(38a443e)", 80
	}
	wifi := map[string]any{"AP": 1, "SSId": "fake", "BSSId": "AA:BB:CC:00:00:01", "Channel": 6, "Mode": "11n", "RSSI": 80, "Signal": -60}
	return []statusSection{
		{"", "Status", jsonOf(map[string]any{"Module": 0, "DeviceName": "Tasmota", "FriendlyName": []string{"Tasmota"},
			"Topic": d.cfg.Topic, "ButtonTopic": "0", "Power": "", "PowerLock": "0", "PowerOnState": 3, "LedState": 1,
			"SaveData": 1, "SaveState": 1, "ButtonRetain": 0, "SwitchRetain": 0, "SensorRetain": 0, "PowerRetain": 0,
			"InfoRetain": 0, "StateRetain": 0})},
		{"1", "StatusPRM", jsonOf(map[string]any{"Baudrate": 115200, "SerialConfig": "8N1", "GroupTopic": d.cfg.GroupTopic,
			"OtaUrl": ota, "RestartReason": reason, "Uptime": uptimeText(up), "StartupUTC": now.Add(-up).Format("2006-01-02T15:04:05"),
			"Sleep": 50, "CfgHolder": 4617, "BootCount": boots, "BCResetTime": "2024-10-20T10:00:00", "SaveCount": 120})},
		{"2", "StatusFWR", jsonOf(fwr)},
		{"3", "StatusLOG", jsonOf(map[string]any{"SerialLog": 2, "WebLog": 2, "MqttLog": 0, "SysLog": 0, "LogHost": "",
			"LogPort": 514, "SSId": []string{"fake", ""}, "TelePeriod": 300, "Resolution": "558180C0", "SetOption": []string{"00008009"}})},
		{"4", "StatusMEM", jsonOf(map[string]any{"ProgramSize": 620, "Free": d.cfg.FreeKiB, "Heap": 25, "ProgramFlashSize": 4096,
			"FlashSize": 4096, "FlashChipId": "1640EF", "FlashFrequency": 40, "FlashMode": "DOUT"})},
		{"5", "StatusNET", jsonOf(map[string]any{"Hostname": d.hostname, "IPAddress": "127.0.0.1", "Gateway": "127.0.0.1",
			"Subnetmask": "255.0.0.0", "DNSServer1": "127.0.0.1", "Mac": macColons(d.mac), "Webserver": 2, "HTTP_API": 1,
			"WifiConfig": 4, "WifiPower": 17.0})},
		{"6", "StatusMQT", jsonOf(map[string]any{"MqttHost": "127.0.0.1", "MqttPort": 1883, "MqttClientMask": "DVES_%06X",
			"MqttClient": d.clientID, "MqttUser": d.cfg.Username, "MqttCount": mqttCount, "MAX_PACKET_SIZE": 1200,
			"KEEPALIVE": int(d.cfg.KeepAlive / time.Second), "SOCKET_TIMEOUT": 4})},
		{"7", "StatusTIM", jsonOf(map[string]any{"UTC": now.Format("2006-01-02T15:04:05"), "Local": now.Format("2006-01-02T15:04:05"),
			"StartDST": "2024-03-31T02:00:00", "EndDST": "2024-10-27T03:00:00", "Timezone": "+00:00", "Sunrise": "06:00", "Sunset": "18:00"})},
		{"10", "StatusSNS", jsonOf(map[string]any{"Time": now.Format("2006-01-02T15:04:05")})},
		{"11", "StatusSTS", jsonOf(map[string]any{"Time": now.Format("2006-01-02T15:04:05"), "Uptime": uptimeText(up),
			"UptimeSec": int64(up / time.Second), "Heap": 25, "SleepMode": "Dynamic", "Sleep": 50, "LoadAvg": 19,
			"MqttCount": mqttCount, "Wifi": wifi})},
	}
}

func macColons(m string) string {
	var parts []string
	for i := 0; i+2 <= len(m); i += 2 {
		parts = append(parts, m[i:i+2])
	}
	return strings.Join(parts, ":")
}

// OTA_ATTEMPTS (tasmota.h): the counter starts there and a try runs while
// it stays above 0 after its decrement.
func (d *TasmotaMQTTDevice) otaAttempts() int {
	if d.esp8266 {
		return 10
	}
	return 5
}

// startUpgrade sets ota_state_flag to 3 (from Upgrade 1, or from a loader
// build at network-up) unless an upgrade's state machine runs already.
func (d *TasmotaMQTTDevice) startUpgrade(atBoot bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.upgrading && !atBoot {
		d.logf("upgrade already running")
		return
	}
	d.upgrading = true
	boot := d.boot
	d.wg.Add(1)
	go d.upgrade(boot)
}

// current: the boot an upgrade belongs to still runs.
func (d *TasmotaMQTTDevice) current(boot int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.boot == boot && d.running != ""
}

// upgrade is the ota_state_flag machine: three ticks to the first try,
// a try every two ticks, the outcome two ticks after the last.
func (d *TasmotaMQTTDevice) upgrade(boot int) {
	defer d.wg.Done()
	if !sleepOrDone(d.done, d.ticks(3)) || !d.current(boot) {
		return
	}
	d.mu.Lock()
	_, img := splitVersion(d.version)
	inLoader := img == "minimal" || img == "safeboot"
	if !d.esp8266 && d.cfg.TwoStep && !inLoader {
		// One app slot: the app writes the factory flag and restarts into
		// safeboot, which does the download.
		release, _ := splitVersion(d.version)
		d.loader = true
		d.logf("one app slot: restarting into safeboot")
		d.mu.Unlock()
		d.requestRestart(bootPlan{version: release + "(safeboot)"})
		return
	}
	d.loader = false // flag 3 → 2 (and the loader build's own clear at network-up)
	d.mu.Unlock()
	counter := d.otaAttempts()
	var words string
	var fetched bool
	var minimal bool
	try := 0
	for {
		counter--
		if counter <= 0 {
			break
		}
		d.mu.Lock()
		u := d.otaURL
		minimal = d.esp8266 && d.loader && !inLoader
		d.mu.Unlock()
		if minimal {
			u = minimalURL(u)
		}
		if d.esp8266 && counter < d.otaAttempts()/2 {
			if strings.Contains(strings.ToLower(u), ".gz") {
				counter = 1 // the last try
			} else {
				u += ".gz"
			}
		}
		var tooBig bool
		words, tooBig = d.fetch(u, inLoader, minimal)
		if !d.current(boot) {
			return
		}
		try++
		d.note("try %d: %s", try, cmp.Or(words, "written"))
		if words == "" {
			fetched = true
			break
		}
		if tooBig && d.esp8266 && !inLoader {
			d.mu.Lock()
			d.loader = true // ota_loader: the minimal image next
			d.mu.Unlock()
		}
		if counter > 1 && !sleepOrDone(d.done, d.ticks(2)) {
			return
		}
	}
	// 92 → 91 → 90: time for MQTT to come back, then one outcome. The
	// fake waits for its link (the firmware's two seconds are its
	// reconnect's time; a loaded test machine may need more), except
	// with LoseOutcome.
	if !sleepOrDone(d.done, d.ticks(2)) || !d.current(boot) {
		return
	}
	if !d.cfg.LoseOutcome && !d.awaitLink(30*time.Second) {
		return
	}
	if !fetched {
		d.publish(d.StatTopic("UPGRADE"), jsonOf(map[string]string{"Upgrade": "Failed " + words}))
		d.release(true)
		d.mu.Lock()
		d.upgrading = false
		d.loader = false
		d.logf("upgrade failed: %s", words)
		d.mu.Unlock()
		return
	}
	d.publish(d.StatTopic("UPGRADE"), `{"Upgrade":"Successful. Restarting"}`)
	d.release(true)
	if !sleepOrDone(d.done, d.ticks(2)) || !d.current(boot) {
		return
	}
	next := d.cfg.NextVersion
	if minimal {
		release, _ := splitVersion(d.cfg.NextVersion)
		next = release + "(minimal)"
	}
	d.requestRestart(bootPlan{version: next, newApp: !minimal})
}

// fetch is one try of the updater: "" when the image was written, else
// the updater's words; tooBig when refused for room.
func (d *TasmotaMQTTDevice) fetch(u string, inLoader, minimal bool) (words string, tooBig bool) {
	d.mu.Lock()
	d.fetches = append(d.fetches, u)
	version := d.version
	d.logf("fetch %s", u)
	d.mu.Unlock()
	chip := "ESP32"
	if d.esp8266 {
		chip = "ESP8266"
	}
	free := d.cfg.FreeKiB * 1024
	if inLoader {
		free += 1 << 20 // the loader build is small: room for the full image
	}
	resp, stop, err := updaterGet(d.done, u, 60*time.Second, chip, map[string]string{"STA-MAC": macColons(d.mac), "AP-MAC": macColons(d.mac),
		"free-space": strconv.FormatInt(free, 10), "sketch-size": "634880", "sketch-md5": "0123456789abcdef0123456789abcdef",
		"chip-size": "4194304", "sdk-version": "fake", "mode": "sketch", "version": version})
	if err != nil {
		return "HTTP error: connection failed", false
	}
	defer stop()
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "File Not Found (404)", false
	case resp.StatusCode == http.StatusForbidden:
		return "Forbidden (403)", false
	case resp.StatusCode != http.StatusOK:
		return "Wrong HTTP Code", false
	case resp.ContentLength <= 0:
		return "Server Did Not Report Size", false
	case resp.ContentLength > free, d.cfg.TwoStep && d.esp8266 && !inLoader && !minimal:
		return "Not Enough space", true
	}
	// ESP8266: WiFiClient::stopAllExcept closes the MQTT socket (no
	// DISCONNECT) once code, size and room are fine; it comes back after
	// the download.
	if d.esp8266 || d.cfg.LoseOutcome {
		d.dropLink("the updater closed every other socket")
	}
	defer d.release(false)
	want := resp.Header.Get("x-MD5")
	if want != "" && len(want) != 32 {
		return "Wrong MD5", false
	}
	head := make([]byte, 4)
	if n, _ := io.ReadFull(resp.Body, head); n < 4 {
		return "Verify Bin Header Failed", false
	}
	if head[0] != 0xE9 && !(d.esp8266 && head[0] == 0x1F && head[1] == 0x8B) {
		return "Verify Bin Header Failed", false
	}
	d.mu.Lock()
	fault := (d.cfg.DownloadCut || d.cfg.BadMD5) && (d.cfg.FaultFetches == 0 || d.faultHits < d.cfg.FaultFetches)
	if fault {
		d.faultHits++
	}
	drop := d.cfg.BrokerDrop && !d.dropped
	d.dropped = d.dropped || drop
	d.mu.Unlock()

	h, sent := md5.New(), md5.New() // what arrived, what the server sent
	h.Write(head)
	sent.Write(head)
	got := int64(len(head))
	half := resp.ContentLength / 2
	buf := make([]byte, 4096)
	start := time.Now()
	var cut bool
	for got < resp.ContentLength {
		n, rerr := resp.Body.Read(buf[:min(int64(len(buf)), resp.ContentLength-got)])
		if n > 0 {
			sent.Write(buf[:n])
			if fault && d.cfg.BadMD5 && got <= half && half < got+int64(n) {
				buf[half-got] ^= 0xFF // a corrupted byte
			}
			h.Write(buf[:n])
			got += int64(n)
		}
		if got >= half {
			if drop {
				drop = false
				d.dropLink("broker drop")
			}
			if fault && d.cfg.DownloadCut {
				cut = true
				break
			}
		}
		if rerr != nil {
			break
		}
		if d.cfg.FetchRate > 0 {
			ahead := time.Duration(float64(got)/float64(d.cfg.FetchRate)*float64(time.Second)) - time.Since(start)
			if ahead > 0 && !sleepOrDone(d.done, ahead) {
				return "HTTP error: connection lost", false
			}
		}
	}
	// The download is over: the firmware's MqttCheck reconnects a tick
	// later (release), after LoseOutcome only once the outcome is lost.
	d.mu.Lock()
	d.logf("fetched %d of %d bytes", got, resp.ContentLength)
	d.mu.Unlock()
	calc := hex.EncodeToString(h.Sum(nil))
	switch {
	case cut || got < resp.ContentLength:
		return "Update error: Stream Read Timeout", false
	case fault && d.cfg.BadMD5 || want != "" && !strings.EqualFold(want, calc):
		if want == "" {
			// No x-MD5: a real device could not tell; the fault says it
			// did, against what the server sent.
			want = hex.EncodeToString(sent.Sum(nil))
		}
		if d.esp8266 {
			return fmt.Sprintf("Update error: MD5 Failed: expected:%s, calculated:%s", strings.ToLower(want), calc), false
		}
		return "Update error: MD5 Check Failed", false
	}
	return "", false
}

// awaitLink waits until a link is up and its on-connect work done; false
// when the device closed.
func (d *TasmotaMQTTDevice) awaitLink(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		d.mu.Lock()
		up, ready := d.link != nil, d.linkReady
		d.mu.Unlock()
		if up {
			select {
			case <-ready:
				return true
			default:
			}
		}
		if time.Now().After(deadline) {
			return true // published and lost, as the firmware's would be
		}
		if !sleepOrDone(d.done, 5*time.Millisecond) {
			return false
		}
	}
}

// dropLink cuts the MQTT link without DISCONNECT (the broker publishes the
// will); it stays down until the download ends (release).
func (d *TasmotaMQTTDevice) dropLink(why string) {
	d.mu.Lock()
	c := d.link
	if !d.holdOpen {
		d.hold, d.holdOpen = make(chan struct{}), true
	}
	if c != nil {
		d.heldLink = c
	}
	d.logf("link dropped: %s", why)
	d.mu.Unlock()
	if c != nil {
		c.Abort()
	}
}

// release ends a download's hold on the link: the device reconnects a tick
// later. With LoseOutcome only the outcome's publish (force) does.
func (d *TasmotaMQTTDevice) release(force bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.holdOpen && (force || !d.cfg.LoseOutcome) {
		close(d.hold)
		d.holdOpen = false
	}
}
