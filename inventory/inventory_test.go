package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `# my ots-ota config
timeout: 5s   # flags may live here too

inventory:
  # the workshop is on another VLAN: mDNS cannot see it
  devices:
    - name: workshop
      address: 10.20.0.7   # static lease
      port: 3232
      protocol: http
      web_port: 80
      auth: {env: WORKSHOP_TOKEN}
    - name: garage
      address: garage.local
      auth:
        file: ~/.config/ots-ota/garage.token
  groups:
    outside: [workshop, garage]
`

func TestParse(t *testing.T) {
	inv, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 2 || inv.Devices[0] != (Device{Name: "workshop", Address: "10.20.0.7", Port: 3232, Protocol: "http", WebPort: 80, Auth: AuthRef{Env: "WORKSHOP_TOKEN"}}) {
		t.Fatalf("devices %+v", inv.Devices)
	}
	g, err := inv.Group("outside")
	if err != nil || len(g) != 2 || g[1].Name != "garage" || g[1].Auth.File == "" {
		t.Fatalf("group %+v %v", g, err)
	}
	if _, err := inv.Group("inside"); err == nil || !strings.Contains(err.Error(), "groups: outside") {
		t.Errorf("unknown group: %v", err)
	}
	if inv, err := Parse([]byte("timeout: 2s\n")); err != nil || len(inv.Devices) != 0 {
		t.Errorf("no section: %v %v", inv, err)
	}
	if inv, err := Parse([]byte("inventory:\n")); err != nil || len(inv.Devices) != 0 {
		t.Errorf("empty section: %v %v", inv, err)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"inline password":       {"inventory:\n  devices:\n    - name: a\n      address: 10.0.0.1\n      password: hunter2\n", `line 5: "password" holds a secret inline`},
		"inline token":          {"inventory:\n  devices:\n    - name: a\n      address: 10.0.0.1\n      auth: {token: x}\n", `"token" holds a secret inline`},
		"unknown key":           {"inventory:\n  devices:\n    - name: a\n      address: 10.0.0.1\n      colour: red\n", `line 5: device: unknown key "colour" (known: name, address`},
		"a list, not a section": {"inventory:\n  - host: 1.2.3.4\n", "line 2: inventory: want keys (devices, groups)"},
		"devices not a list":    {"inventory:\n  devices: {a: 1}\n", "line 2: inventory.devices: want a list of devices"},
		"port not a number":     {"inventory:\n  devices:\n    - name: a\n      address: b\n      port: abc\n", `line 5: text "abc" where a whole number belongs`},
		"group not a list":      {"inventory:\n  devices:\n    - {name: a, address: b}\n  groups:\n    g: a\n", `line 5: group "g": want a list of device names`},
		"auth typo":             {"inventory:\n  devices:\n    - name: a\n      address: b\n      auth: {enf: X}\n", `line 5: auth: unknown key "enf"`},
		"duplicate":             {"inventory:\n  devices:\n    - {name: a, address: 10.0.0.1}\n    - {name: A, address: 10.0.0.2}\n", "listed twice"},
		"no address":            {"inventory:\n  devices:\n    - {name: a}\n", "no address"},
		"url address":           {"inventory:\n  devices:\n    - {name: a, address: 'http://10.0.0.1:3232'}\n", "neither an IP address nor a host name"},
		"bad protocol":          {"inventory:\n  devices:\n    - {name: a, address: x, protocol: ftp}\n", `protocol "ftp"`},
		"both auth":             {"inventory:\n  devices:\n    - {name: a, address: x, auth: {env: A, file: b}}\n", "pick one"},
		"bad group":             {"inventory:\n  devices:\n    - {name: a, address: x}\n  groups:\n    g: [a, b]\n", `group "g": no device named "b"`},
		"bad port":              {"inventory:\n  devices:\n    - {name: a, address: x, port: 70000}\n", "port out of range"},
		"not yaml":              {"inventory: [\n", "not valid YAML"},
		"topic wildcard":        {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: 'plug/+'}\n", `mqtt_topic "plug/+": a device's topic has no wildcard`},
		"topic space":           {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: 'my plug'}\n", "no space"},
		"topic empty level":     {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: 'plug/'}\n", "empty topic level"},
		"topic twice":           {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: p}\n    - {name: b, address: y, mqtt_topic: p}\n", `device "b": mqtt_topic "p" is a's too`},
		"full topic wildcard":   {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: p, full_topic: '%prefix%/+/%topic%'}\n", "no + wildcard"},
		"full topic space":      {"inventory:\n  devices:\n    - {name: a, address: x, mqtt_topic: p, full_topic: '%prefix%/a b/%topic%'}\n", "no space"},
		"full topic alone":      {"inventory:\n  devices:\n    - {name: a, address: x, full_topic: '%prefix%/%topic%/'}\n", "full_topic without mqtt_topic"},
		"manifest folder":       {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, manifest: 'site/m.json'}\n", `manifest "site/m.json": a file name of letters`},
		"manifest dot":          {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, manifest: '.m.json'}\n", "does not start with '.'"},
		"manifest alone":        {"inventory:\n  devices:\n    - {name: a, address: x, manifest: m.json}\n", "manifest without mqtt_topic"},
		"entity topic level":    {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, entity: 'update/firmware'}\n", `entity "update/firmware": an object id of letters`},
		"entity wildcard":       {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, entity: '+'}\n", `entity "+": an object id of letters`},
		"entity space":          {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, entity: 'My Firmware'}\n", "firmware for name: Firmware"},
		"entity alone":          {"inventory:\n  devices:\n    - {name: a, address: x, entity: firmware}\n", "entity without mqtt_topic"},
		"entity typo":           {"inventory:\n  devices:\n    - {name: a, mqtt_topic: p, entity_id: firmware}\n", `unknown key "entity_id"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Error("secret in error")
			}
		})
	}
}

func TestAddKeepsCommentsAndDedups(t *testing.T) {
	found := []Device{
		{Name: "workshop-dup", Address: "10.20.0.7", Port: 3232},                 // same address as workshop: skipped
		{Name: "ots-sim-01", Address: "127.0.0.2", Port: 3232, Protocol: "http"}, // new
		{Name: "garage", Address: "127.0.0.3", Port: 3232},                       // name taken by another device: renamed
	}
	out, added, err := AddToYAML([]byte(sample), found)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 || added[0].Name != "ots-sim-01" || added[1].Name != "garage-2" {
		t.Fatalf("added %+v", added)
	}
	s := string(out)
	for _, keep := range []string{"# my ots-ota config", "# flags may live here too", "# the workshop is on another VLAN", "# static lease", "timeout: 5s", "WORKSHOP_TOKEN", "outside:"} {
		if !strings.Contains(s, keep) {
			t.Errorf("lost %q:\n%s", keep, s)
		}
	}
	inv, err := Parse(out)
	if err != nil {
		t.Fatalf("result does not parse: %v\n%s", err, s)
	}
	if len(inv.Devices) != 4 || inv.Devices[2].Address != "127.0.0.2" || inv.Devices[2].Protocol != "http" {
		t.Errorf("devices %+v", inv.Devices)
	}
	// Adding the same again changes nothing.
	out2, added2, err := AddToYAML(out, found)
	if err != nil || len(added2) != 0 || string(out2) != s {
		t.Errorf("second add: %v %+v", err, added2)
	}
}

func TestAddFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "config.yaml")
	added, err := Add(p, []Device{{Name: "a", Address: "127.0.0.2"}})
	if err != nil || len(added) != 1 {
		t.Fatalf("%v %v", added, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file %v %v", st, err)
	}
	inv, err := Load(p)
	if err != nil || len(inv.Devices) != 1 {
		t.Fatalf("%+v %v", inv, err)
	}
	if inv, err := Load(filepath.Join(t.TempDir(), "none.yaml")); err != nil || len(inv.Devices) != 0 {
		t.Errorf("missing file: %v %v", inv, err)
	}
	// Refuses to rewrite a file with an inline secret.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("inventory:\n  devices:\n    - {name: a, address: x, password: p}\n"), 0o600)
	if _, err := Add(bad, []Device{{Name: "b", Address: "y"}}); err == nil {
		t.Error("rewrote a file with an inline secret")
	}
}

// TestErrorsOneLine: several problems are one line, the first and a count
// (review 68 #6).
func TestErrorsOneLine(t *testing.T) {
	for doc, want := range map[string]string{
		"inventory: {devices: [{name: a, address: 127.0.0.77, port: 70000, protocol: ftp}]}":              "port out of range, and 1 more problem",
		"inventory: {devices: [{name: a, address: x}, {name: a, address: y}], groups: {g: [a, nobody]}}":  "listed twice, and 1 more problem",
		"inventory: {devices: [{name: a, address: x, port: -1, protocol: ftp, auth: {env: A, file: B}}]}": "and 2 more problems",
	} {
		_, err := Parse([]byte(doc))
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want one line with %q", doc, err, want)
		}
	}
}

// A URL with credentials as an address is refused without printing them
// (issue 14: nothing from a URL's userinfo is ever printed).
func TestValidateHidesUserinfo(t *testing.T) {
	for _, addr := range []string{"http://admin:Hunter2Secret@127.0.0.1/update", "admin:Hunter2Secret@127.0.0.1"} {
		inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: a, address: '" + addr + "'}\n"))
		if err == nil {
			err = inv.Validate()
		}
		if err == nil || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("%s: err %v", addr, err)
		}
	}
}

func TestInventoryChip(t *testing.T) {
	inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: a, address: 10.0.0.1, chip: esp8266}\n"))
	if err != nil || inv.Validate() != nil || inv.Devices[0].Chip != "esp8266" {
		t.Fatalf("chip not read: %v %+v", err, inv)
	}
	inv, err = Parse([]byte("inventory:\n  devices:\n    - {name: a, address: 10.0.0.1, chip: esp99}\n"))
	if err == nil {
		err = inv.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), `chip "esp99"`) {
		t.Fatalf("unknown chip accepted: %v", err)
	}
}

// TestInventoryManifest: manifest: is read for a device reached over MQTT
// (rollout --family esphome's per-device manifest).
func TestInventoryManifest(t *testing.T) {
	inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: a, mqtt_topic: barn, manifest: canary.json}\n    - {name: b, mqtt_topic: shed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := inv.Devices[0].Manifest; m != "canary.json" {
		t.Errorf("manifest %q, want canary.json", m)
	}
	if m := inv.Devices[1].Manifest; m != "" {
		t.Errorf("manifest %q where none was written", m)
	}
}

// TestInventoryEntity: entity: names the update entity rollout --family
// esphome commands on a device with more than one.
func TestInventoryEntity(t *testing.T) {
	inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: a, mqtt_topic: barn, entity: firmware_beta-2}\n    - {name: b, mqtt_topic: shed}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e := inv.Devices[0].Entity; e != "firmware_beta-2" {
		t.Errorf("entity %q, want firmware_beta-2", e)
	}
	if e := inv.Devices[1].Entity; e != "" {
		t.Errorf("entity %q where none was written", e)
	}
}

func TestInventoryMQTTTopic(t *testing.T) {
	inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: a, address: 10.0.0.1, mqtt_topic: site2/plug_1, full_topic: 'home/%prefix%/%topic%/'}\n    - {name: b, address: 10.0.0.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := inv.Devices[0]; d.MQTTTopic != "site2/plug_1" || d.FullTopic != "home/%prefix%/%topic%/" {
		t.Fatalf("topic not read: %+v", d)
	}
	if d := inv.Devices[1]; d.MQTTTopic != "" || d.FullTopic != "" {
		t.Fatalf("topic where none was written: %+v", d)
	}
}

// TestInventoryMQTTOnly: a device reached over MQTT only needs no address
// when it has an mqtt_topic; any other still does, and is told how to fix it.
func TestInventoryMQTTOnly(t *testing.T) {
	inv, err := Parse([]byte("inventory:\n  devices:\n    - {name: barn, mqtt_topic: barn_pump}\n    - {name: lab, address: 10.0.0.1, mqtt_topic: lab_plug}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Devices[0].MQTTOnly() || inv.Devices[1].MQTTOnly() {
		t.Errorf("MQTTOnly: %v %v", inv.Devices[0].MQTTOnly(), inv.Devices[1].MQTTOnly())
	}
	for _, y := range []string{"{name: a}", "{name: a, address: ' '}", "{name: a, full_topic: '%prefix%/%topic%/'}"} {
		_, err := Parse([]byte("inventory:\n  devices:\n    - " + y + "\n"))
		if err == nil || !strings.Contains(err.Error(), "no address: give address:, or mqtt_topic: for a device reached over MQTT only") {
			t.Errorf("%s: %v", y, err)
		}
	}
	// A saved inventory writes no empty address for it.
	out, added, err := AddToYAML([]byte("inventory:\n  devices:\n    - {name: barn, mqtt_topic: barn_pump}\n"), []Device{{Name: "lab", Address: "10.0.0.9"}})
	if err != nil || len(added) != 1 || strings.Contains(string(out), `address: ""`) {
		t.Errorf("add beside an MQTT-only device: %v %v\n%s", err, added, out)
	}
}
