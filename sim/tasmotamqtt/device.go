package tasmotamqtt

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// device is one simulated Tasmota across its boots.
type device struct {
	f       *Fleet
	cfg     Device // as configured (resolved)
	idx     int
	mac     [6]byte
	esp8266 bool
	// clientID is MqttClient (MQTT_CLIENT_ID "DVES_%06X"), hostname
	// WIFI_HOSTNAME "%s-%04d", id NetworkUniqueId (the MAC in hex).
	clientID, hostname, id, ip string

	upgrades atomic.Int64

	mu sync.Mutex // guards what Fleet's getters read
	// What runs and what survives a restart: the settings (OtaUrl,
	// BootCount, SetOption4), the RTC memory (ota_loader).
	version, image string
	programKiB     int
	freeKiB        int
	otaURL         string
	// bootCount is Settings.bootcount: a boot counts once it has run
	// BOOT_LOOP_TIME (10 s); INFO3 tells it +1 before that.
	bootCount     int
	so4           bool
	otaLoader     bool
	restartReason any // a string, or a crash dump object
	bootAt        time.Time

	link mqttlink.Slot // the link to the broker (one per connection)

	// Per boot, owned by the boot's goroutine.
	inbox       *mqttlink.Inbox
	firstConn   bool // Mqtt.initial_connection_state: INFO1–3 not sent yet this boot
	backlog     []string
	backlogDue  time.Time
	otaFlag     int
	otaRetry    int
	otaOK       bool
	otaErr      string
	restartFlag int
	retryWait   int
	uptime      int  // the boot's seconds (ticks)
	tele        int  // ticks to the next tele/<t>/STATE; 0 = none due
	dropArmed   bool // FaultBrokerDrop: this Upgrade's fetch drops the link
	pending     *install
}

// install is an image written, to run from the next boot.
type install struct {
	info *imageInfo
}

func newDevice(f *Fleet, idx int, cfg Device, mac [6]byte) *device {
	tail := fmt.Sprintf("%02X%02X%02X", mac[3], mac[4], mac[5])
	chipID := uint32(mac[3])<<16 | uint32(mac[4])<<8 | uint32(mac[5])
	d := &device{
		f: f, cfg: cfg, idx: idx, mac: mac, esp8266: cfg.Chip == "esp8266",
		clientID:   "DVES_" + tail,
		hostname:   fmt.Sprintf("tasmota-%s-%04d", tail, chipID&0x1FFF),
		id:         fmt.Sprintf("%02X%02X%02X%02X%02X%02X", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]),
		ip:         netip.AddrFrom4([4]byte{198, 18, byte(idx >> 8), byte(idx)}).String(), // RFC 2544's range: no device's real address
		version:    cfg.Version,
		image:      cfg.Image,
		programKiB: cfg.ProgramKiB,
		freeKiB:    cfg.FreeKiB,
		otaURL:     cfg.OtaURL,
		bootCount:  cfg.BootCount,
		so4:        cfg.SetOption4,
	}
	return d
}

// chipID is ESP.getChipId(): the MAC's last three bytes.
func (d *device) chipID() uint32 {
	return uint32(d.mac[3])<<16 | uint32(d.mac[4])<<8 | uint32(d.mac[5])
}

// getOtaURL is GetOtaUrl: OtaUrl with a "%04d" (chip id & 0x1FFF) or "%d"
// (chip id) filled, cut to TOPSZ-1 characters.
func (d *device) getOtaURL() string {
	d.mu.Lock()
	u := d.otaURL
	d.mu.Unlock()
	switch {
	case strings.Contains(u, "%04d"):
		u = strings.Replace(u, "%04d", fmt.Sprintf("%04d", d.chipID()&0x1FFF), 1)
	case strings.Contains(u, "%d"):
		u = strings.Replace(u, "%d", fmt.Sprint(d.chipID()), 1)
	}
	if len(u) > topSize-1 {
		u = u[:topSize-1]
	}
	return u
}

// topSize is TOPSZ.
const topSize = 151

// versionString is INFO1's and Status 2's Version: "<version>(<image>)".
// Called with d.mu held.
func (d *device) versionString() string { return d.version + "(" + d.image + ")" }

// imageName is the CODE_IMAGE_STR a build with this project tells: a
// loader named as Tasmota names its files ("tasmota-minimal",
// "tasmota32-safeboot") tells "minimal" / "safeboot", as the firmware does.
func imageName(project string) string {
	if i := strings.LastIndexByte(project, '-'); i >= 0 {
		if p := project[i+1:]; p == "minimal" || p == "safeboot" {
			return p
		}
	}
	return project
}

func (d *device) isMinimal() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.image == "minimal" || d.image == "safeboot"
}

func (d *device) emit(e Event) {
	e.Device = d.cfg.Topic
	d.f.emit(e)
}

// powerOn is the first boot's start: the boot counter and reason.
func (d *device) powerOn() {
	d.mu.Lock()
	d.bootAt = time.Now()
	d.restartReason = "Vbat power on reset"
	if d.esp8266 {
		d.restartReason = "Power On"
	}
	d.mu.Unlock()
	d.startBoot()
}

// startBoot resets what a boot starts without; a minimal build told to
// go on (RtcSettings.ota_loader) fetches OtaUrl once the network is up.
func (d *device) startBoot() {
	d.inbox = mqttlink.NewInbox()
	d.firstConn = true
	d.backlog, d.otaFlag, d.restartFlag, d.retryWait, d.dropArmed, d.pending = nil, 0, 0, 0, false, nil
	d.uptime, d.tele = 0, 0
	if d.isMinimal() {
		d.mu.Lock()
		if d.otaLoader {
			d.otaLoader = false
			d.otaFlag = 3
		}
		d.mu.Unlock()
	}
}

// live runs one boot from its first connection to its restart (the
// install to boot, nil for a plain restart).
func (d *device) live(ctx context.Context) *install {
	tick := time.NewTicker(d.f.cfg.Tick)
	defer tick.Stop()
	var backlogTimer <-chan time.Time
	for {
		if len(d.backlog) > 0 && backlogTimer == nil {
			backlogTimer = time.After(max(time.Until(d.backlogDue), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.inbox.Ready():
			for _, m := range d.inbox.Take() {
				d.handle(ctx, m)
			}
		case <-backlogTimer:
			backlogTimer = nil
			if len(d.backlog) > 0 {
				line := d.backlog[0]
				d.backlog = d.backlog[1:]
				d.execute(ctx, line, false)
				d.backlogDue = time.Now().Add(d.f.cfg.Tick / 5) // SetOption34: 200 ms
			}
		case <-tick.C:
			d.everySecond()
			// Every250mSeconds: the upgrade at x.0, the restart at x.25,
			// MqttCheck at x.75.
			d.otaStep(ctx)
			if d.restartFlag > 0 && len(d.backlog) == 0 {
				if d.restartFlag--; d.restartFlag <= 0 {
					return d.pending
				}
			}
			d.mqttCheck(ctx)
		}
	}
}

// bootLoopTime is BOOT_LOOP_TIME: a boot that ran this long counts.
const bootLoopTime = 10

// telePeriod is TelePeriod's default.
const telePeriod = 300

// everySecond is the boot's clock: the boot counter, and tele/<t>/STATE
// five seconds after the boot's first connection, then every TelePeriod.
func (d *device) everySecond() {
	d.uptime++
	if d.uptime == bootLoopTime {
		d.mu.Lock()
		d.bootCount++
		d.mu.Unlock()
	}
	if d.tele > 0 {
		if d.tele--; d.tele == 0 {
			d.publish(d.topic(prefixTele, "STATE"), d.state().String(), false)
			d.tele = telePeriod
		}
	}
}

// restart is EspRestart: a clean MQTT DISCONNECT (WifiShutdown →
// MqttDisconnect: the broker does not publish the will), the reboot, and
// the next boot's first connection. false: the device stays away.
func (d *device) restart(ctx context.Context, next *install) bool {
	d.disconnect()
	loader := d.isMinimal()
	d.mu.Lock()
	old := d.versionString()
	if loader && d.uptime < bootLoopTime {
		// A real loader's boot outlasts BOOT_LOOP_TIME (Wi-Fi association,
		// the OTA state machine's seconds, the download, the 2 s before the
		// restart), which the sim's fast boot skips: it counts.
		d.bootCount++
	}
	d.mu.Unlock()
	reboot := d.cfg.RebootTime
	reason := "Software reset CPU"
	if d.esp8266 {
		reason = "Software/System restart"
	}
	if next != nil {
		switch {
		case next.info.foreign:
			d.emit(Event{Event: EventGone, Text: "an image for another chip was written: the ESP8266 cannot boot it"})
			return false
		case d.cfg.has(FaultNeverComesBack):
			d.emit(Event{Event: EventGone, Text: "fault never-comes-back: the new image never reaches the network"})
			return false
		case d.cfg.has(FaultCrashOnBoot):
			// The new image crashes before it is marked valid; the
			// bootloader boots the old one. Two boots' time.
			if !mqttlink.Sleep(ctx, reboot) {
				return false
			}
			reboot = d.cfg.RebootTime
			// A panic resets through a software CPU reset: the old image
			// tells the same reason as after any restart.
			d.emit(Event{Event: EventRolledBack, Version: old, Text: "fault crash-on-boot: the new image crashed at boot; the bootloader runs the old one"})
		default:
			d.mu.Lock()
			d.image, d.version = imageName(next.info.project), next.info.version
			if d.image == "" {
				d.image = "tasmota"
				if !d.esp8266 {
					d.image = "tasmota32"
				}
			}
			if d.version == "" {
				d.version = d.f.cfg.InstallVersion
			}
			if d.esp8266 {
				// The sketch area stays; what the new sketch takes moves.
				d.freeKiB = max(d.freeKiB+d.programKiB-next.info.sizeKiB, 0)
				d.programKiB = next.info.sizeKiB
			}
			d.mu.Unlock()
		}
	}
	if !mqttlink.Sleep(ctx, reboot) {
		return false
	}
	d.mu.Lock()
	d.bootAt = time.Now()
	d.restartReason = reason
	d.mu.Unlock()
	d.startBoot()
	// Network up: the first connection attempt; MqttCheck retries.
	if err := d.connect(ctx); err != nil {
		d.retryWait = mqttRetryTicks
	}
	return true
}

// mqttRetryTicks is MQTT_RETRY_SECS.
const mqttRetryTicks = 10

// mqttCheck is MqttCheck: a lost link is noticed here; the first
// reconnect goes at once, later ones every MQTT_RETRY_SECS.
func (d *device) mqttCheck(ctx context.Context) {
	if d.connected() {
		return
	}
	if d.retryWait > 0 {
		d.retryWait--
		return
	}
	if err := d.connect(ctx); err != nil {
		d.retryWait = mqttRetryTicks
	}
}

func (d *device) connected() bool { return d.link.Up() }

// connect is MqttReconnect and MqttConnected: CONNECT with the will, LWT
// Online, the empty POWER publish, the subscriptions, and on the boot's
// first connection INFO1–3.
func (d *device) connect(ctx context.Context) error {
	cfg := d.f.cfg
	l, err := mqttlink.Dial(ctx, mqttlink.Options{
		Addr: d.f.addr, ClientID: d.clientID, KeepAlive: cfg.KeepAlive,
		WillTopic: d.topic(prefixTele, "LWT"), WillPayload: "Offline", WillQoS: 1,
		Username: cfg.Username, Password: cfg.Password.Reveal(),
		AllowNonLoopback: cfg.AllowNonLoopback,
		OnLost:           func(why string) { d.emit(Event{Event: EventLinkDown, Text: why}) },
	})
	if err != nil {
		return err
	}
	d.link.Set(l)

	d.publish(d.topic(prefixTele, "LWT"), "Online", true)
	d.publish(d.topic(prefixCmnd, "POWER"), "", false) // for iobroker (SetOption90 off)
	subs := []string{d.topic(prefixCmnd, "#")}
	if strings.Contains(d.cfg.FullTopic, "%topic%") {
		subs = append(subs, topicOf(d.cfg.FullTopic, prefixCmnd, d.cfg.GroupTopic, d.hostname, d.id, "#"),
			"cmnd/"+d.clientID+"_fb/#")
	}
	for _, s := range subs {
		if !l.Subscribe(s, d.inbox) {
			d.dropLink("")
			return fmt.Errorf("the broker at %s did not take the subscription to %s", d.f.addr, s)
		}
	}
	first := d.firstConn
	if first {
		d.firstConn = false
		d.publishInfo()
	}
	d.mu.Lock()
	v := d.versionString()
	bc := d.bootCount + 1
	d.mu.Unlock()
	how := "reconnect"
	if first {
		how = "boot"
		d.emit(Event{Event: EventBooted, Version: v, BootCount: bc})
	}
	d.emit(Event{Event: EventOnline, Version: v, Text: how})
	return nil
}

// publish is MqttPublishPayload: QoS 0; lost when the link is down (the
// firmware logs it and goes on).
func (d *device) publish(topic, payload string, retained bool) bool {
	return d.link.Publish(topic, payload, retained)
}

// disconnect is MqttDisconnect: a clean DISCONNECT, no will.
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

// topic is the device's topic for prefix and subtopic.
func (d *device) topic(prefix, subtopic string) string {
	return topicOf(d.cfg.FullTopic, prefix, d.cfg.Topic, d.hostname, d.id, subtopic)
}
