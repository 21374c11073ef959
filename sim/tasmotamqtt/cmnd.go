package tasmotamqtt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// handle is MqttDataHandler → CommandHandler: the command is the topic's
// last level, the payload its data. Retained messages are run like any
// other: the firmware has no check (so a retained Upgrade runs again after
// every reconnect).
func (d *device) handle(ctx context.Context, m mqttlink.Message) {
	name := m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]
	if name == "" {
		return
	}
	line := name
	if m.Payload != "" {
		line += " " + m.Payload
	}
	d.execute(ctx, line, m.Retained)
}

// execute runs one command line and publishes its reply.
func (d *device) execute(ctx context.Context, line string, retained bool) {
	line = strings.TrimSpace(line)
	name, data, _ := strings.Cut(line, " ")
	data = strings.TrimSpace(data)
	cmd := strings.TrimRightFunc(name, func(r rune) bool { return r >= '0' && r <= '9' })
	index, hasIndex := 1, cmd != name
	if hasIndex {
		index, _ = strconv.Atoi(name[len(cmd):])
	}
	text := line
	if retained {
		text += " (retained)"
	}
	d.emit(Event{Event: EventCommand, Text: text})
	switch strings.ToLower(cmd) {
	case "status":
		d.cmdStatus(index, hasIndex, data)
		return
	case "backlog":
		// Queued, split on ';'; the Backlog command replies nothing.
		for _, c := range strings.Split(data, ";") {
			if c = strings.TrimSpace(c); c != "" {
				d.backlog = append(d.backlog, c)
			}
		}
		if index == 0 {
			d.backlogDue = time.Time{} // Backlog0: no wait between them
		}
		return
	case "otaurl":
		d.mu.Lock()
		switch {
		case data == "1":
			d.otaURL = d.cfg.OtaURL
		case data != "":
			d.otaURL = data // kept whole; GetOtaUrl cuts it where it is used
		}
		u := d.otaURL
		d.mu.Unlock()
		d.reply("OtaUrl", object{{"OtaUrl", u}})
		return
	case "upgrade":
		d.cmdUpgrade(data)
		return
	case "setoption":
		if index == 4 {
			d.mu.Lock()
			switch strings.ToLower(data) {
			case "1", "on":
				d.so4 = true
			case "0", "off":
				d.so4 = false
			}
			v := d.so4
			d.mu.Unlock()
			d.reply("SetOption4", object{{"SetOption4", tasmotafw.OnOff(v)}})
			return
		}
	case "restart":
		if data == "1" {
			d.restartFlag = 2
			d.reply("Restart", object{{"Restart", "Restarting"}})
		} else {
			d.reply("Restart", object{{"Restart", "1 to restart"}})
		}
		return
	case "power":
		d.reply("POWER", object{{"POWER", "OFF"}})
		return
	}
	d.reply("Command", object{{"Command", "Unknown"}})
}

// reply publishes a command's answer on stat/<t>/RESULT, or with
// SetOption4 on stat/<t>/<COMMAND>.
func (d *device) reply(command string, o object) {
	d.mu.Lock()
	so4 := d.so4
	d.mu.Unlock()
	sub := "RESULT"
	if so4 {
		sub = strings.ToUpper(command)
	}
	d.publish(d.topic(prefixStat, sub), o.String(), false)
}

// cmdUpgrade is CmndUpgrade: "1", or a version newer than the running
// one, starts the upgrade (ota_state_flag 3).
func (d *device) cmdUpgrade(data string) {
	d.mu.Lock()
	running := d.version
	d.mu.Unlock()
	u := d.getOtaURL()
	if data == "1" || (len(data) >= 3 && tasmotafw.NewerVersion(data, running)) {
		d.otaFlag = 3
		d.dropArmed = d.cfg.has(FaultBrokerDrop)
		d.upgrades.Add(1)
		d.emit(Event{Event: EventUpgrade, URL: u})
		d.reply("Upgrade", object{{"Upgrade", "Version " + running + " from " + u}})
		return
	}
	d.reply("Upgrade", object{{"Upgrade", "1 or >" + running + " to upgrade"}})
}

// A status section: its number, name and topic.
type section struct {
	n     int // -1: the main Status
	name  string
	build func() object
}

func (d *device) sections() []section {
	return []section{
		{-1, "Status", d.statusMain}, {1, "StatusPRM", d.statusPRM}, {2, "StatusFWR", d.statusFWR},
		{3, "StatusLOG", d.statusLOG}, {4, "StatusMEM", d.statusMEM}, {5, "StatusNET", d.statusNET},
		{6, "StatusMQT", d.statusMQT}, {7, "StatusTIM", d.statusTIM}, {10, "StatusSNS", d.statusSNS},
		{11, "StatusSTS", d.statusSTS},
	}
}

// cmdStatus is CmndStatus: "Status" the main section on stat/<t>/STATUS;
// "Status 0" every section, each on its own stat/<t>/STATUSn; "Status0"
// every section merged in one stat/<t>/STATUS0; "Status n" one section.
// STATUS topics do not follow SetOption4.
func (d *device) cmdStatus(index int, hasIndex bool, data string) {
	if d.cfg.has(FaultSilent) {
		d.emit(Event{Event: EventFault, Text: "fault silent: no answer to Status"})
		return
	}
	want := -1
	if data != "" {
		n, err := strconv.Atoi(data)
		if err != nil {
			d.reply("Status", object{{"Command", "Error"}})
			return
		}
		want = n
	}
	secs := d.sections()
	if hasIndex && index == 0 {
		var all object
		for _, s := range secs {
			all = append(all, kv{s.name, s.build()})
		}
		d.publish(d.topic(prefixStat, "STATUS0"), all.String(), false)
		return
	}
	sent := false
	for _, s := range secs {
		if want == 0 || want == s.n {
			sub := "STATUS"
			if s.n > 0 {
				sub += strconv.Itoa(s.n)
			}
			d.publish(d.topic(prefixStat, sub), object{{s.name, s.build()}}.String(), false)
			sent = true
		}
	}
	if !sent {
		d.reply("Status", object{{"Command", "Error"}})
	}
}

// publishInfo is the boot's INFO1–3 (not retained: InfoRetain is off).
func (d *device) publishInfo() {
	d.mu.Lock()
	v := d.versionString()
	reason := d.restartReason
	bc := d.bootCount + 1 // Settings.bootcount counts this boot after BOOT_LOOP_TIME
	d.mu.Unlock()
	module := "ESP32-DevKit"
	if d.esp8266 {
		module = "Sonoff Basic"
	}
	info1 := object{{"Module", module}}
	if d.cfg.has(FaultNoInfo) {
		d.emit(Event{Event: EventFault, Text: "fault no-info: INFO1 without Version"})
	} else {
		info1 = append(info1, kv{"Version", v})
	}
	info1 = append(info1, kv{"FallbackTopic", "cmnd/" + d.clientID + "_fb/"},
		kv{"GroupTopic", topicOf(d.cfg.FullTopic, prefixCmnd, d.cfg.GroupTopic, d.hostname, d.id, "")})
	d.publish(d.topic(prefixTele, "INFO1"), object{{"Info1", info1}}.String(), false)
	d.publish(d.topic(prefixTele, "INFO2"), object{{"Info2", object{{"WebServerMode", "Admin"},
		{"Hostname", d.hostname}, {"IPAddress", d.ip}}}}.String(), false)
	d.publish(d.topic(prefixTele, "INFO3"), object{{"Info3", object{{"RestartReason", reason}, {"BootCount", bc}}}}.String(), false)
	// MqttPublishAllPowerState: the Sonoff Basic's one relay (the ESP32
	// DevKit module has none).
	if d.esp8266 {
		d.reply("POWER", object{{"POWER", "OFF"}})
		d.publish(d.topic(prefixStat, "POWER"), "OFF", false)
	}
	d.tele = 5 // TelePeriod - 5 … the first STATE
}

// state is tele/<t>/STATE.
func (d *device) state() object {
	d.mu.Lock()
	up := time.Since(d.bootAt)
	d.mu.Unlock()
	o := object{{"Time", now()}, {"Uptime", tasmotafw.Uptime(up)}, {"UptimeSec", int64(up / time.Second)}, {"Heap", 25},
		{"SleepMode", "Dynamic"}, {"Sleep", 50}, {"LoadAvg", 19}, {"MqttCount", 1}}
	if d.esp8266 {
		o = append(o, kv{"POWER", "OFF"})
	}
	return append(o, kv{"Wifi", object{{"AP", 1}, {"SSId", "ots-sim"}, {"BSSId", "00:00:00:00:00:00"}, {"Channel", 1},
		{"Mode", "11n"}, {"RSSI", 80}, {"Signal", -60}, {"LinkCount", 1}, {"Downtime", "0T00:00:03"}}})
}

// kv and object write JSON in the firmware's order, without spaces and
// without HTML escapes (the firmware writes "1 or >15.4.0" as it is).
type kv struct {
	k string
	v any
}

type object []kv

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := writeJSON(&b, e.k); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := writeJSON(&b, e.v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeJSON appends v without HTML escapes and without the encoder's
// newline.
func writeJSON(b *bytes.Buffer, v any) error {
	if o, ok := v.(object); ok {
		j, err := o.MarshalJSON()
		b.Write(j)
		return err
	}
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1)
	return nil
}

func (o object) String() string {
	b, err := o.MarshalJSON()
	if err != nil {
		return "{}"
	}
	return string(b)
}

func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05") }

func (d *device) statusMain() object {
	return object{{"Module", 1}, {"DeviceName", "Tasmota"}, {"FriendlyName", []string{"Tasmota"}},
		{"Topic", d.cfg.Topic}, {"ButtonTopic", "0"}, {"Power", "0"}, {"PowerLock", "0"},
		{"PowerOnState", 3}, {"LedState", 1}, {"LedMask", "FFFF"}, {"SaveData", 1}, {"SaveState", 1},
		{"SwitchTopic", "0"}, {"SwitchMode", []int{0, 0, 0, 0, 0, 0, 0, 0}}, {"ButtonRetain", 0},
		{"SwitchRetain", 0}, {"SensorRetain", 0}, {"PowerRetain", 0}, {"InfoRetain", 0}, {"StateRetain", 0},
		{"StatusRetain", 0}}
}

func (d *device) statusPRM() object {
	d.mu.Lock()
	defer d.mu.Unlock()
	up := time.Since(d.bootAt)
	o := object{{"Baudrate", 115200}, {"SerialConfig", "8N1"}, {"GroupTopic", d.cfg.GroupTopic}, {"OtaUrl", d.otaURL},
		{"RestartReason", d.restartReason}, {"Uptime", tasmotafw.Uptime(up)}, {"StartupUTC", d.bootAt.UTC().Format("2006-01-02T15:04:05")},
		{"Sleep", 50}, {"CfgHolder", 4617}, {"BootCount", d.bootCount}, {"BCResetTime", "2026-05-01T00:00:00"},
		{"SaveCount", 10 + d.bootCount}}
	if d.esp8266 {
		o = append(o, kv{"SaveAddress", "F9000"})
	}
	return o
}

// buildDateTime is told per build: derived from what runs.
func (d *device) buildDateTime() string {
	sum := sha256.Sum256([]byte(d.versionString()))
	secs := binary.BigEndian.Uint32(sum[:4]) % (365 * 86400)
	return time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(secs) * time.Second).Format("2006-01-02T15:04:05")
}

func (d *device) statusFWR() object {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := object{{"Version", d.versionString()}, {"BuildDateTime", d.buildDateTime()}}
	if d.esp8266 {
		o = append(o, kv{"BootVersion", 31}, kv{"Core", "2_7_8"}, kv{"SDK", "2.2.2-dev(38a443e)"}, kv{"CpuFrequency", 80})
	} else {
		o = append(o, kv{"Core", "3_1_3"}, kv{"SDK", "5.3.2"}, kv{"CpuFrequency", 160})
	}
	return append(o, kv{"Hardware", tasmotafw.Hardware(d.esp8266, d.cfg.Chip)}, kv{"CR", "404/699"})
}

func (d *device) statusLOG() object {
	return object{{"SerialLog", 2}, {"WebLog", 2}, {"MqttLog", 0}, {"SysLog", 0}, {"LogHost", ""}, {"LogPort", 514},
		{"SSId", []string{"ots-sim", ""}}, {"TelePeriod", 300}, {"Resolution", "558180C0"},
		{"SetOption", []string{"00008009", "2805C80001000600003C5A0A192800000000", "00000080", "00006000", "00004000", "00000000"}}}
}

func (d *device) statusMEM() object {
	d.mu.Lock()
	defer d.mu.Unlock()
	flash := 1024
	if !d.esp8266 {
		flash = 4096
	}
	return object{{"ProgramSize", d.programKiB}, {"Free", d.freeKiB}, {"Heap", 25},
		{"ProgramFlashSize", flash}, {"FlashSize", 4096}, {"FlashChipId", "164020"}, {"FlashFrequency", 40},
		{"FlashMode", "DOUT"}}
}

func (d *device) statusNET() object {
	mac := fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", d.mac[0], d.mac[1], d.mac[2], d.mac[3], d.mac[4], d.mac[5])
	return object{{"Hostname", d.hostname}, {"IPAddress", d.ip}, {"Gateway", "198.18.0.1"}, {"Subnetmask", "255.254.0.0"},
		{"DNSServer1", "198.18.0.1"}, {"DNSServer2", "0.0.0.0"}, {"Mac", mac},
		{"Webserver", 2}, {"HTTP_API", 1}, {"WifiConfig", 4}, {"WifiPower", 17.0}}
}

func (d *device) statusMQT() object {
	host, port, _ := strings.Cut(d.f.addr, ":")
	p, _ := strconv.Atoi(port)
	user := d.f.cfg.Username
	if user == "" {
		user = "DVES_USER"
	}
	return object{{"MqttHost", host}, {"MqttPort", p}, {"MqttClientMask", "DVES_%06X"}, {"MqttClient", d.clientID},
		{"MqttUser", user}, {"MqttCount", 1}, {"MAX_PACKET_SIZE", 1200}, {"KEEPALIVE", int(d.f.cfg.KeepAlive / time.Second)},
		{"SOCKET_TIMEOUT", 4}}
}

func (d *device) statusTIM() object {
	n := now()
	return object{{"UTC", n}, {"Local", n}, {"StartDST", "2026-03-29T02:00:00"}, {"EndDST", "2026-10-25T03:00:00"},
		{"Timezone", "+00:00"}, {"Sunrise", "07:43"}, {"Sunset", "16:15"}}
}

func (d *device) statusSNS() object { return object{{"Time", now()}} }

func (d *device) statusSTS() object {
	d.mu.Lock()
	up := time.Since(d.bootAt)
	d.mu.Unlock()
	return object{{"Time", now()}, {"Uptime", tasmotafw.Uptime(up)}, {"UptimeSec", int64(up / time.Second)}, {"Heap", 25},
		{"SleepMode", "Dynamic"}, {"Sleep", 50}, {"LoadAvg", 19}, {"MqttCount", 1},
		{"Wifi", object{{"AP", 1}, {"SSId", "ots-sim"}, {"BSSId", "00:00:00:00:00:00"}, {"Channel", 1},
			{"Mode", "11n"}, {"RSSI", 80}, {"Signal", -60}, {"LinkCount", 1}, {"Downtime", "0T00:00:03"}}}}
}
