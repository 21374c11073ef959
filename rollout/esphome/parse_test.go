package esphome

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ots-ota/ots-ota/rollout"
)

func TestParseState(t *testing.T) {
	for _, c := range []struct {
		in   string
		want State
		ok   bool
	}{
		{`{"installed_version":"1.0.0","latest_version":"1.1.0","title":"Node"}`, State{"1.0.0", "1.1.0", "Node"}, true},
		{`{"installed_version":"1.0.0","latest_version":"1.1.0","title":"Node","release_summary":"s","release_url":"http://x"}`, State{"1.0.0", "1.1.0", "Node"}, true},
		{`{"installed_version":"","latest_version":"","title":""}`, State{}, true},
		{` {"latest_version":"2"} `, State{Latest: "2"}, true},
		{`{"installed_version":1.5,"latest_version":null,"title":["x"]}`, State{}, true},
		{`{}`, State{}, true},
		{``, State{}, false},
		{`null`, State{}, false},
		{`"1.0.0"`, State{}, false},
		{`[{"installed_version":"1"}]`, State{}, false},
		{`{"installed_version":"1"`, State{}, false},
		{`INSTALL`, State{}, false},
	} {
		got, ok := ParseState([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("ParseState(%q) = %+v %v, want %+v %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for in, want := range map[string]rollout.ReportKind{
		"online": rollout.ReportOnline, "offline": rollout.ReportOffline, " Online\n": rollout.ReportOnline,
		"": "", "Offline now": "", "1": "",
	} {
		if got := parseStatus([]byte(in)); got != want {
			t.Errorf("parseStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseTopic(t *testing.T) {
	for _, c := range []struct {
		topic      string
		kind       topicKind
		prefix, id string
	}{
		{"node/status", topicStatus, "node", ""},
		{"home/attic/node/status", topicStatus, "home/attic/node", ""},
		{"node/update/firmware/state", topicState, "node", "firmware"},
		{"a/update/b/update/fw/state", topicState, "a/update/b", "fw"},
		{"node/update//state", topicNone, "", ""},
		{"node/update/firmware/command", topicNone, "", ""},
		{"node/sensor/t/state", topicNone, "", ""},
		{"status", topicNone, "", ""},
		{"update/fw/state", topicNone, "", ""},
	} {
		k, p, id := parseTopic(c.topic)
		if k != c.kind || p != c.prefix || id != c.id {
			t.Errorf("parseTopic(%q) = %v %q %q, want %v %q %q", c.topic, k, p, id, c.kind, c.prefix, c.id)
		}
	}
}

// The image package's chip words (and display names) to ESPHome's
// chipFamily, as ESPHOME_VARIANT spells it.
func TestChipFamily(t *testing.T) {
	for _, c := range []struct {
		chip, want string
		ok         bool
	}{
		{"esp32", "ESP32", true},
		{"esp32s2", "ESP32-S2", true},
		{"esp32s3", "ESP32-S3", true},
		{"ESP32-S3", "ESP32-S3", true},
		{"esp32c2", "ESP32-C2", true},
		{"esp32c3", "ESP32-C3", true},
		{"esp32c5", "ESP32-C5", true},
		{"esp32c6", "ESP32-C6", true},
		{"esp32c61", "ESP32-C61", true},
		{"esp32h2", "ESP32-H2", true},
		{"esp32p4", "ESP32-P4", true},
		{"esp8266", "ESP8266", true},
		{"esp8285", "ESP8266", true},
		{"esp32h4", "", false},
		{"rp2040", "", false},
		{"", "", false},
	} {
		got, ok := ChipFamily(c.chip)
		if got != c.want || ok != c.ok {
			t.Errorf("ChipFamily(%q) = %q %v, want %q %v", c.chip, got, ok, c.want, c.ok)
		}
	}
}

const (
	imgURL = "http://10.0.0.2:8070/fw-0123456789abcdefghij/node.ota.bin"
	imgMD5 = "0123456789abcdef0123456789abcdef"
)

// The manifest, byte for byte, as ESPHome's http_request update reads it.
func TestAnnounceManifest(t *testing.T) {
	img := rollout.Image{Name: "node.ota.bin", Size: 1 << 20, Chip: "esp32s3", MD5: imgMD5}
	for _, c := range []struct {
		name string
		cfg  Config
		img  rollout.Image
		devs []rollout.Device
		want map[string]string // name → body
		err  string
	}{
		{name: "defaults", cfg: Config{Expect: "1.1.0"}, img: img, devs: []rollout.Device{{Topic: "a"}},
			want: map[string]string{"manifest.json": `{"name":"node","version":"1.1.0","builds":[{"chipFamily":"ESP32-S3","ota":{"path":"` + imgURL + `","md5":"` + imgMD5 + `","summary":"ots-ota rollout 1.1.0"}}]}` + "\n"}},
		{name: "given", cfg: Config{Expect: "2024.6<b>", Title: "Kitchen & hall", Summary: "fixes \"x\"", ChipFamily: "ESP32-C3"}, img: img,
			devs: []rollout.Device{{Topic: "a", Manifest: "canary.json"}, {Topic: "b", Manifest: "canary.json"}, {Topic: "c"}},
			want: map[string]string{
				"canary.json":   `{"name":"Kitchen & hall","version":"2024.6<b>","builds":[{"chipFamily":"ESP32-C3","ota":{"path":"` + imgURL + `","md5":"` + imgMD5 + `","summary":"fixes \"x\""}}]}` + "\n",
				"manifest.json": `{"name":"Kitchen & hall","version":"2024.6<b>","builds":[{"chipFamily":"ESP32-C3","ota":{"path":"` + imgURL + `","md5":"` + imgMD5 + `","summary":"fixes \"x\""}}]}` + "\n",
			}},
		{name: "esp8266", cfg: Config{Expect: "3"}, img: rollout.Image{Name: "fw", Chip: "esp8266"},
			want: map[string]string{"manifest.json": `{"name":"fw","version":"3","builds":[{"chipFamily":"ESP8266","ota":{"path":"` + imgURL + `","md5":"` + imgMD5 + `","summary":"ots-ota rollout 3"}}]}` + "\n"}},
		{name: "chip family given for an unknown chip", cfg: Config{Expect: "3", ChipFamily: "RP2040"}, img: rollout.Image{Name: "fw.bin"},
			want: map[string]string{"manifest.json": `{"name":"fw","version":"3","builds":[{"chipFamily":"RP2040","ota":{"path":"` + imgURL + `","md5":"` + imgMD5 + `","summary":"ots-ota rollout 3"}}]}` + "\n"}},
		{name: "unknown chip", cfg: Config{Expect: "3"}, img: rollout.Image{Name: "fw.bin", Chip: "esp32h4"}, err: "no ESPHome chip family is known for an esp32h4 image: give --chip-family"},
		{name: "no chip", cfg: Config{Expect: "3"}, img: rollout.Image{Name: "fw.bin"}, err: "give --chip-family"},
		{name: "no version", cfg: Config{}, img: img, err: "ESPHome needs --expect-version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := New(c.cfg)
			got, err := f.Announce(c.devs, c.img, imgURL, imgMD5)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("names %v, want %v", keys(got), keys(c.want))
			}
			for n, w := range c.want {
				if string(got[n]) != w {
					t.Errorf("%s:\n got %s\nwant %s", n, got[n], w)
				}
				// What ESPHome requires of it.
				var m struct {
					Name    *string `json:"name"`
					Version *string `json:"version"`
					Builds  []struct {
						ChipFamily *string `json:"chipFamily"`
						OTA        *struct {
							Path *string `json:"path"`
							MD5  *string `json:"md5"`
						} `json:"ota"`
					} `json:"builds"`
				}
				if err := json.Unmarshal(got[n], &m); err != nil || m.Name == nil || m.Version == nil || *m.Version != c.cfg.Expect ||
					len(m.Builds) != 1 || m.Builds[0].ChipFamily == nil || m.Builds[0].OTA == nil || m.Builds[0].OTA.Path == nil ||
					*m.Builds[0].OTA.Path != imgURL || m.Builds[0].OTA.MD5 == nil {
					t.Errorf("%s: not a manifest ESPHome takes: %s (%v)", n, got[n], err)
				}
			}
		})
	}
}

func TestAnnounceRefuses(t *testing.T) {
	f := New(Config{Expect: "1"})
	img := rollout.Image{Name: "fw.bin", Chip: "esp32"}
	for _, c := range []struct{ url, md5, err string }{
		{"/fw.bin", imgMD5, "must be http:// or https://"},
		{"ftp://h/fw.bin", imgMD5, "must be http:// or https://"},
		{"http://h/f w.bin", imgMD5, "may not hold a space"},
		{imgURL, "0123", "not 32 lower-case hex"},
		{imgURL, strings.ToUpper(imgMD5), "not 32 lower-case hex"},
	} {
		if _, err := f.Announce(nil, img, c.url, c.md5); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Announce(%q, %q): %v, want %q", c.url, c.md5, err, c.err)
		}
	}
	if err := f.CheckURL("https://cdn.example/x/fw.bin"); err != nil {
		t.Errorf("CheckURL https: %v", err)
	}
}

func keys(m any) []string {
	var out []string
	switch m := m.(type) {
	case map[string][]byte:
		for k := range m {
			out = append(out, k)
		}
	case map[string]string:
		for k := range m {
			out = append(out, k)
		}
	}
	return out
}

// Facts from a state: installed_version is Version and Release; a
// version that is no clean text is shown cleaned and names no release.
func TestFacts(t *testing.T) {
	for _, c := range []struct {
		st   State
		want rollout.Facts
	}{
		{State{"1.0.0", "1.1.0", "n"}, rollout.Facts{Version: "1.0.0", Release: "1.0.0", Latest: "1.1.0"}},
		{State{}, rollout.Facts{}},
		{State{Installed: "1.0\x1b[31m"}, rollout.Facts{Version: "1.0 [31m"}},
		{State{Installed: "1.0 "}, rollout.Facts{Version: "1.0"}},
	} {
		if got := facts(c.st); got != c.want {
			t.Errorf("facts(%+v) = %+v, want %+v", c.st, got, c.want)
		}
	}
}

func FuzzParseState(f *testing.F) {
	for _, s := range []string{
		`{"installed_version":"1.0.0","latest_version":"1.1.0","title":"Node"}`,
		`{"installed_version":"","latest_version":"","title":""}`,
		`{"installed_version":1}`, `null`, `[]`, ``, `{"latest_version":"\u0000\n"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok := ParseState(b)
		if !ok && st != (State{}) {
			t.Fatalf("not ok, yet told %+v", st)
		}
		fa := facts(st)
		for _, s := range []string{fa.Version, fa.Latest, stateWords(st)} {
			if strings.ContainsAny(s, "\n\r\x00\x1b") || !utf8.ValidString(s) || utf8.RuneCountInString(s) > 2*maxText+40 {
				t.Fatalf("not one clean line: %q", s)
			}
		}
		if fa.Release != "" && fa.Release != st.Installed {
			t.Fatalf("release %q of installed %q", fa.Release, st.Installed)
		}
	})
}
