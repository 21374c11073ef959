package tasmota

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/ots-ota/ots-ota/sim/core"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/internal/ordered"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// otaURLMax is the longest OtaUrl the sim keeps (the research notes'
// limit of Tasmota's setting; a longer one is cut).
const otaURLMax = 100

// backlogDelay is SetOption34's default: the wait between backlog commands.
const backlogDelay = 200 * time.Millisecond

// handleCommand is /cm?cmnd=…: the Referer gate (never a challenge), then
// the password by Basic header or user=admin&password=… (401 JSON WARNING,
// translated), then the command's JSON lines joined in one object.
func (d *device) handleCommand(r *core.Request) error {
	if !d.web.ReadBody(r, nil) {
		return core.ErrClose
	}
	if ok, err := d.privileged(r, false); !ok {
		return err
	}
	args := arduino.Args(r)
	if !d.authenticated(r) {
		user, _ := arduino.ArgValue(args, "user")
		pass, _ := arduino.ArgValue(args, "password")
		pw := d.e.Config().Password
		if user != webUser || pass != pw.Reveal() {
			d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, "", "web password")
			return d.content(r, 401, arduino.TypeJSON, `{"WARNING":"`+d.l.needUserPassword+`"}`)
		}
	}
	cmnd, _ := arduino.ArgValue(args, "cmnd")
	if strings.TrimSpace(cmnd) == "" {
		return d.content(r, 200, arduino.TypeJSON, `{"WARNING":"`+d.l.enterCommand+` cmnd="}`)
	}
	out := d.execute(cmnd)
	return d.content(r, 200, arduino.TypeJSON, "{"+out+"}")
}

// execute runs one command and returns what its response adds to /cm's
// object (its JSON without the outer braces; "" for none).
func (d *device) execute(line string) string {
	line = strings.TrimSpace(line)
	name, data, _ := strings.Cut(line, " ")
	data = strings.TrimSpace(data)
	// The command's index: trailing digits of its name (Status0, Backlog2).
	cmd := strings.TrimRightFunc(name, func(r rune) bool { return r >= '0' && r <= '9' })
	index := 1
	if cmd != name {
		index, _ = strconv.Atoi(name[len(cmd):])
	}
	switch strings.ToLower(cmd) {
	case "status":
		return d.cmdStatus(index, data)
	case "otaurl":
		return d.cmdOtaURL(data)
	case "upgrade":
		return d.cmdUpgrade(data)
	case "backlog":
		for _, c := range strings.Split(data, ";") {
			if c = strings.TrimSpace(c); c != "" && !strings.HasPrefix(strings.ToLower(c), "reset") {
				select {
				case d.backlog <- c:
				default:
				}
			}
		}
		return ""
	case "setoption":
		if index == 128 {
			d.p.mu.Lock()
			if data == "1" || strings.EqualFold(data, "on") {
				d.p.so128 = true
			} else if data == "0" || strings.EqualFold(data, "off") {
				d.p.so128 = false
			}
			v := d.p.so128
			d.p.mu.Unlock()
			return `"SetOption128":"` + tasmotafw.OnOff(v) + `"`
		}
	case "restart":
		if data == "1" {
			d.restartSoon("restart")
			return `"Restart":"Restarting"`
		}
		return `"Restart":"1 to restart"`
	case "power":
		return `"POWER":"OFF"`
	}
	return `"Command":"Unknown"`
}

// runBacklog executes queued commands, the first at once, then one every
// SetOption34 milliseconds.
func (d *device) runBacklog(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-d.backlog:
			d.execute(c)
			if !core.Sleep(ctx, d.e.FirmwareDelay(backlogDelay)) {
				return
			}
		}
	}
}

// cmdOtaURL is OtaUrl: show, set ("1" the default), cut to otaURLMax.
func (d *device) cmdOtaURL(data string) string {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	switch {
	case data == "1":
		d.p.otaURL = tasmotafw.DefaultOtaURL(d.esp8266)
	case data != "":
		if len(data) > otaURLMax {
			data = data[:otaURLMax]
		}
		d.p.otaURL = data
	}
	return `"OtaUrl":` + quote(d.p.otaURL)
}

// cmdUpgrade is Upgrade: "1" (or a version above the running one) starts
// the upgrade from OtaUrl.
func (d *device) cmdUpgrade(data string) string {
	if data != "1" && !(data != "" && tasmotafw.NewerVersion(data, d.version)) {
		return `"Upgrade":"1 or >` + d.version + ` to upgrade"`
	}
	d.p.mu.Lock()
	url := d.p.otaURL
	d.p.mu.Unlock()
	d.startUpgrade()
	return `"Upgrade":"Version ` + d.version + ` from ` + strings.ReplaceAll(url, `"`, `\"`) + `"`
}

// cmdStatus is Status: no argument the Status block alone, 0 (or Status0)
// every block, n one block.
func (d *device) cmdStatus(index int, data string) string {
	if d.upgrading.Load() {
		if f, ok := d.e.Chance(core.FaultStatusDuringUpgrade); ok {
			d.corrupt.Store(true)
			d.e.Emit(core.Event{Event: core.EventFault, Fault: f.String(), Protocol: "http"})
		}
	}
	payload := -99
	if data != "" {
		n, err := strconv.Atoi(data)
		if err != nil {
			return `"Command":"Error"`
		}
		payload = n
	}
	if index == 0 {
		payload = 0
	}
	type block struct {
		n    int
		name string
		obj  func() object
	}
	blocks := []block{
		{-99, "Status", d.statusMain}, {1, "StatusPRM", d.statusPRM}, {2, "StatusFWR", d.statusFWR},
		{3, "StatusLOG", d.statusLOG}, {4, "StatusMEM", d.statusMEM}, {5, "StatusNET", d.statusNET},
		{7, "StatusTIM", d.statusTIM}, {10, "StatusSNS", d.statusSNS}, {11, "StatusSTS", d.statusSTS},
	}
	var parts []string
	for _, b := range blocks {
		if payload == 0 || payload == b.n {
			v, _ := json.Marshal(b.obj())
			parts = append(parts, quote(b.name)+":"+string(v))
		}
	}
	if len(parts) == 0 {
		return `"Command":"Error"`
	}
	return strings.Join(parts, ",")
}

// kv and object write JSON in the device's order, without spaces.
type kv struct {
	k string
	v any
}

type object []kv

func (o object) MarshalJSON() ([]byte, error) {
	return ordered.Marshal(o, func(e kv) (string, any) { return e.k, e.v })
}

// buildEpoch is where the sim's build times start.
var buildEpoch = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

// buildDateTime is GetBuildDateAndTime() of the running image: the sim
// derives it from the image's bytes (every build differs, the same build
// tells the same).
func (d *device) buildDateTime() string {
	img := d.e.RunningImage()
	sum := sha256.Sum256(img[:min(len(img), 64<<10)])
	secs := binary.BigEndian.Uint32(sum[:4]) % (365 * 86400)
	return buildEpoch.Add(time.Duration(secs) * time.Second).Format("2006-01-02T15:04:05")
}

func (d *device) statusMain() object {
	return object{{"Module", 0}, {"DeviceName", "Tasmota"}, {"FriendlyName", []string{"Tasmota"}},
		{"Topic", "tasmota_" + d.macTail()}, {"ButtonTopic", "0"}, {"Power", "0"}, {"PowerLock", "0"},
		{"PowerOnState", 3}, {"LedState", 1}, {"LedMask", "FFFF"}, {"SaveData", 1}, {"SaveState", 1},
		{"SwitchTopic", "0"}, {"SwitchMode", []int{0, 0, 0, 0, 0, 0, 0, 0}}, {"ButtonRetain", 0},
		{"SwitchRetain", 0}, {"SensorRetain", 0}, {"PowerRetain", 0}, {"InfoRetain", 0}, {"StateRetain", 0},
		{"StatusRetain", 0}}
}

// macTail is the MAC's last three bytes in upper hex (the default topic).
func (d *device) macTail() string {
	m := d.e.MAC()
	return fmt.Sprintf("%02X%02X%02X", m[3], m[4], m[5])
}

func (d *device) restartReason(st core.State) string {
	switch {
	case st.BootCount <= 1 && d.esp8266:
		return "Power On"
	case st.BootCount <= 1:
		return "Vbat power on reset"
	case d.esp8266:
		return "Software/System restart"
	}
	return "Software reset CPU"
}

func (d *device) statusPRM() object {
	st := d.e.State()
	d.p.mu.Lock()
	url := d.p.otaURL
	d.p.mu.Unlock()
	started := time.Now().Add(-st.Uptime).UTC().Format("2006-01-02T15:04:05")
	o := object{{"Baudrate", 115200}, {"SerialConfig", "8N1"}, {"GroupTopic", "tasmotas"}, {"OtaUrl", url},
		{"RestartReason", d.restartReason(st)}, {"Uptime", tasmotafw.Uptime(st.Uptime)}, {"StartupUTC", started},
		{"Sleep", 50}, {"CfgHolder", 4617}, {"BootCount", st.BootCount}, {"BCResetTime", "2026-05-01T00:00:00"},
		{"SaveCount", 10 + st.BootCount}}
	if d.esp8266 {
		o = append(o, kv{"SaveAddress", "F9000"})
	}
	return o
}

func (d *device) statusFWR() object {
	o := object{{"Version", d.version + "(" + d.image + ")"}, {"BuildDateTime", d.buildDateTime()}}
	if d.esp8266 {
		o = append(o, kv{"BootVersion", 31}, kv{"Core", "2_7_8"}, kv{"SDK", "2.2.2-dev(38a443e)"}, kv{"CpuFrequency", 80})
	} else {
		o = append(o, kv{"Core", "3_1_3"}, kv{"SDK", "5.3.2"}, kv{"CpuFrequency", 160})
	}
	return append(o, kv{"Hardware", tasmotafw.Hardware(d.esp8266, d.e.Config().Chip)}, kv{"CR", "404/699"})
}

func (d *device) statusLOG() object {
	return object{{"SerialLog", 2}, {"WebLog", 2}, {"MqttLog", 0}, {"SysLog", 0}, {"LogHost", ""}, {"LogPort", 514},
		{"SSId", []string{"ots-sim", ""}}, {"TelePeriod", 300}, {"Resolution", "558180C0"},
		{"SetOption", []string{"00008009", "2805C80001000600003C5A0A192800000000", "00000080", "00006000", "00004000", "00000000"}}}
}

func (d *device) statusMEM() object {
	size := len(d.e.RunningImage()) / 1024
	return object{{"ProgramSize", size}, {"Free", int(d.freeSketchSpace() / 1024)}, {"Heap", 25},
		{"ProgramFlashSize", 1024}, {"FlashSize", 4096}, {"FlashChipId", "164020"}, {"FlashFrequency", 40},
		{"FlashMode", "DOUT"}}
}

func (d *device) statusNET() object {
	c := d.e.Config()
	ip := c.IP.String()
	d.p.mu.Lock()
	so128 := d.p.so128
	d.p.mu.Unlock()
	return object{{"Hostname", c.Name}, {"IPAddress", ip}, {"Gateway", ip}, {"Subnetmask", "255.255.255.0"},
		{"DNSServer1", ip}, {"DNSServer2", "0.0.0.0"}, {"Mac", strings.ToUpper(d.e.MAC().String())},
		{"Webserver", 2}, {"HTTP_API", boolInt(so128)}, {"WifiConfig", 4}, {"WifiPower", 17.0}}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (d *device) statusTIM() object {
	now := time.Now().UTC()
	return object{{"UTC", now.Format("2006-01-02T15:04:05")}, {"Local", now.Format("2006-01-02T15:04:05")},
		{"StartDST", "2026-03-29T02:00:00"}, {"EndDST", "2026-10-25T03:00:00"}, {"Timezone", "+00:00"},
		{"Sunrise", "07:43"}, {"Sunset", "16:15"}}
}

func (d *device) statusSNS() object {
	return object{{"Time", time.Now().UTC().Format("2006-01-02T15:04:05")}}
}

func (d *device) statusSTS() object {
	st := d.e.State()
	return object{{"Time", time.Now().UTC().Format("2006-01-02T15:04:05")}, {"Uptime", tasmotafw.Uptime(st.Uptime)},
		{"UptimeSec", int64(st.Uptime / time.Second)}, {"Heap", 25}, {"SleepMode", "Dynamic"}, {"Sleep", 50},
		{"LoadAvg", 19}, {"MqttCount", 0},
		{"Wifi", object{{"AP", 1}, {"SSId", "ots-sim"}, {"BSSId", "00:00:00:00:00:00"}, {"Channel", 1},
			{"Mode", "11n"}, {"RSSI", 80}, {"Signal", -60}, {"LinkCount", 1}, {"Downtime", "0T00:00:03"}}}}
}
