package wled

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestImage: the sim's WLED builds are valid images and carry the
// metadata where WLED's builds do; the hash guards the structure.
func TestImage(t *testing.T) {
	for _, chip := range []string{"esp32", "esp32s3", "esp8266"} {
		t.Run(chip, func(t *testing.T) {
			b, err := Image(ImageOptions{Chip: chip, Version: "16.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			img, err := image.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if !img.ChecksumOK || img.Digest != nil && !img.DigestOK || img.CRCPresent && !img.CRCOK {
				t.Errorf("image does not verify: checksum %v digest %v crc %v", img.ChecksumOK, img.DigestOK, img.CRCOK)
			}
			m, ok := findMetadata(b)
			if !ok || m.version != "16.0.1" || m.release != DefaultRelease(chip) || m.descVersion != 1 {
				t.Fatalf("metadata %+v %v", m, ok)
			}
			at := bytes.Index(b, []byte("STSW"))
			want := metaAtESP32
			if chip == "esp8266" {
				want = metaAtESP8266
			}
			if at != want {
				t.Errorf("metadata at %#x, want %#x", at, want)
			}
			bad := bytes.Clone(b)
			binary.LittleEndian.PutUint32(bad[at+metaOffHash:], 1)
			if _, ok := findMetadata(bad); ok {
				t.Error("a structure whose hash does not match was taken")
			}
		})
	}
	if djb2("") != 5381 || djb2("a") != 5381*33+'a' {
		t.Error("djb2")
	}
}

// TestUploadAnswers: every answer of POST /update on both lines and cores.
func TestUploadAnswers(t *testing.T) {
	type tc struct {
		name    string
		parts   func(v variant) []part
		status  int
		text    string // in the page
		install string // the version /json/info tells after the reboot
	}
	img := func(t *testing.T, v variant, o ImageOptions) []byte { return v.image(t, o) }
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			rel := DefaultRelease(v.chip)
			newer := "16.0.2"
			cases := []tc{
				{"matching release", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{Version: newer}))}
				}, 200, page(textUpdateOK, textRebooting), newer},
				{"skipValidation first, no metadata", func(v variant) []part {
					return []part{field("skipValidation", "1"), file(img(t, v, ImageOptions{Version: newer, NoMetadata: true}))}
				}, 200, page(textUpdateOK, textRebooting), "?"},
				{"no metadata", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{NoMetadata: true}))}
				}, 500, page(textUpdateFailed, textNoMetadata+textIgnoreHint), ""},
				{"skipValidation after the file", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{NoMetadata: true})), field("skipValidation", "1")}
				}, 500, page(textUpdateFailed, textNoMetadata+textIgnoreHint), ""},
				{"skipValidation empty", func(v variant) []part {
					return []part{field("skipValidation", ""), file(img(t, v, ImageOptions{NoMetadata: true}))}
				}, 500, page(textUpdateFailed, textNoMetadata+textIgnoreHint), ""},
				{"other release", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{Release: "ESP32_WROVER"}))}
				}, 500, page(textUpdateFailed, fmt.Sprintf("Firmware release name mismatch: current='%s', uploaded='ESP32_WROVER'.", rel)+textIgnoreHint), ""},
				{"other release, skipValidation", func(v variant) []part {
					return []part{field("skipValidation", "1"), file(img(t, v, ImageOptions{Release: "ESP32_WROVER", Version: newer}))}
				}, 200, page(textUpdateOK, textRebooting), newer},
				{"_V4 suffix", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{Release: rel + "_V4", Version: newer}))}
				}, 200, page(textUpdateOK, textRebooting), newer},
				{"safe version above the device's", func(v variant) []part {
					return []part{file(img(t, v, ImageOptions{Version: "17.0.0", DescVersion: 2, Safe: [3]byte{16, 5, 0}}))}
				}, 500, page(textUpdateFailed, fmt.Sprintf("Cannot update from this version: requires at least 16.5.0, current='%s'.", v.version)+textIgnoreHint), ""},
				{"too short for the check", func(v variant) []part {
					return []part{file(append([]byte{0xE9}, make([]byte, 300)...))}
				}, 500, page(textUpdateFailed, textNeverArrived), ""},
				{"no file part", func(v variant) []part {
					return []part{field("skipValidation", "1")}
				}, 500, page(textUpdateFailed, textInternal), ""},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if c.name == "too short for the check" && v.chip == "esp8266" {
						c.parts = func(v variant) []part { return []part{file(append([]byte{0xE9}, make([]byte, 0x1100)...))} }
					}
					d := simtest.Start(t, v.config())
					r := post(t, d, "/update", c.parts(v)...)
					if r.Status != c.status || !strings.Contains(r.Body, c.text) || r.CType != "text/html" {
						t.Fatalf("got %d %q %q, want %d with %q", r.Status, r.CType, r.Body, c.status, c.text)
					}
					if r.Header.Get("Content-Length") != "" {
						t.Errorf("a template answer carries Content-Length %s", r.Header.Get("Content-Length"))
					}
					if c.install == "" {
						if st := d.State(); st.BootCount != 1 || !st.Up {
							t.Errorf("a refused upload changed the device: %+v", st)
						}
						if got := info(t, d)["ver"]; got != v.version {
							t.Errorf("ver %v after a refusal", got)
						}
						return
					}
					rebooted(t, d, 1)
					in := info(t, d)
					switch {
					case c.install != "?" && in["ver"] != c.install:
						t.Errorf("ver %v, want %s", in["ver"], c.install)
					case c.install == "?" && in["ver"] == v.version && !v.line16():
						t.Logf("ver %v", in["ver"])
					}
				})
			}
		})
	}
}

// TestReleaseV4BeforeFix: 0.15.2 to 0.15.4 compare the names as they are.
func TestReleaseV4BeforeFix(t *testing.T) {
	v := variant{"0.15.4", "0.15.4", "esp32"}
	d := simtest.Start(t, v.config())
	r := post(t, d, "/update", file(v.image(t, ImageOptions{Release: "ESP32_V4"})))
	want := "Firmware release name mismatch: current='ESP32', uploaded='ESP32_V4'."
	if r.Status != 500 || !strings.Contains(r.Body, want) {
		t.Fatalf("got %d %q", r.Status, r.Body)
	}
}

// TestGates: the subnet gate (16.x), the PIN and the OTA lock, each a 401
// page, in WLED's order; and what they leave alone.
func TestGates(t *testing.T) {
	far := netip.MustParseAddr("127.0.1.5") // the device; clients come from 127.0.0.1
	cases := []struct {
		name    string
		v       variant
		cfg     func(c *core.Config)
		status  int
		sub     string
		getPage int // GET /update's status
	}{
		{"16.x client on another subnet", variants[1], func(c *core.Config) { c.IP = far }, 401, textNotSubnet, 200},
		{"16.x client on another subnet, PIN set", variants[1], func(c *core.Config) { c.IP = far; c.SettingsPIN = true }, 401, textUnlockCfg, 401},
		{"16.x any subnet, client not private", variants[1], func(c *core.Config) { c.IP = far; c.OTAAnySubnet = true }, 401, textNotSubnet, 200},
		{"16.x any subnet, same subnet", variants[1], func(c *core.Config) { c.OTAAnySubnet = true }, 200, textUpdateOK, 200},
		{"16.x subnet given holds the client", variants[1], func(c *core.Config) {
			c.IP = far
			c.Subnet = netip.MustParsePrefix("127.0.0.0/16")
		}, 200, textUpdateOK, 200},
		{"0.15.x has no subnet gate", variants[0], func(c *core.Config) { c.IP = far }, 200, textUpdateOK, 200},
		{"PIN", variants[0], func(c *core.Config) { c.SettingsPIN = true }, 401, textUnlockCfg, 401},
		{"PIN esp8266 16.x", variants[3], func(c *core.Config) { c.SettingsPIN = true }, 401, textUnlockCfg, 401},
		{"OTA lock", variants[1], func(c *core.Config) { c.OTALock = true }, 401, textUnlockOTA, 401},
		{"OTA lock and PIN", variants[2], func(c *core.Config) { c.OTALock = true; c.SettingsPIN = true }, 401, textUnlockCfg, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			c.cfg(&cfg)
			d := simtest.Start(t, cfg)
			r := post(t, d, "/update", file(c.v.image(t, ImageOptions{Version: "16.0.2"})))
			if r.Status != c.status || !strings.Contains(r.Body, c.sub) {
				t.Fatalf("got %d %q, want %d %q", r.Status, r.Body, c.status, c.sub)
			}
			if c.status == 401 {
				if !strings.Contains(r.Body, page(textAccessDenied, c.sub)) {
					t.Errorf("page %q", r.Body)
				}
				if rec := simtest.LastUpload(t, d); rec.Outcome != "auth_failed" || rec.Status != 401 {
					t.Errorf("record %+v", rec)
				}
			}
			code, _, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/update")
			if err != nil || code != c.getPage {
				t.Errorf("GET /update: %d %v, want %d", code, err, c.getPage)
			}
		})
	}
}

// TestConcurrent: a second upload while one runs is 503 with an empty
// body; the first carries on and installs.
func TestConcurrent(t *testing.T) {
	for _, v := range []variant{variants[1], variants[2]} {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			var ev simtest.EventLog
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			img := v.image(t, ImageOptions{Version: "16.0.2", Size: 300 << 10})
			body, ct := form(t, file(img))
			c, err := net.Dial("tcp", d.OTAAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, len(body))
			half := len(body) / 2
			if _, err := c.Write(body[:half]); err != nil {
				t.Fatal(err)
			}
			ev.WaitCount(t, core.EventUploadStarted, 1) // the first update has begun
			r := post(t, d, "/update", file(img))
			if r.Status != 503 || r.Body != "" || r.Header.Get("Content-Length") != "0" {
				t.Fatalf("second upload: %d %q %v", r.Status, r.Body, r.Header)
			}
			if _, err := c.Write(body[half:]); err != nil {
				t.Fatal(err)
			}
			var all bytes.Buffer
			all.ReadFrom(c)
			if !strings.Contains(all.String(), "200 OK") || !strings.Contains(all.String(), textUpdateOK) {
				t.Fatalf("first upload: %q", all.String())
			}
			rebooted(t, d, 1)
			if got := info(t, d)["ver"]; got != "16.0.2" {
				t.Errorf("ver %v", got)
			}
		})
	}
}

// TestInfo: /json/info tells ver, vid, release, brand and the rest;
// uptime restarts at the reboot, ver and vid follow the new image.
func TestInfo(t *testing.T) {
	cfg := variants[0].config()
	d := simtest.Start(t, cfg)
	in := info(t, d)
	want := map[string]any{"ver": "0.15.5", "vid": float64(2508020), "release": "ESP32", "brand": "WLED",
		"product": "FOSS", "arch": "esp32", "name": "WLED", "repo": "wled/WLED", "ip": "127.0.0.1"}
	for k, v := range want {
		if in[k] != v {
			t.Errorf("%s = %v, want %v", k, in[k], v)
		}
	}
	mac, _ := in["mac"].(string)
	if len(mac) != 12 || strings.ToLower(mac) != mac {
		t.Errorf("mac %q", mac)
	}
	if _, ok := in["uptime"].(float64); !ok {
		t.Errorf("uptime %v", in["uptime"])
	}
	time.Sleep(1100 * time.Millisecond)
	before := info(t, d)["uptime"].(float64)
	if before < 1 {
		t.Errorf("uptime %v after a second", before)
	}
	r := post(t, d, "/update", file(variants[0].image(t, ImageOptions{Version: "16.0.1", DescVersion: 2, Safe: [3]byte{0, 15, 3}})))
	if r.Status != 200 {
		t.Fatalf("upload: %d %q", r.Status, r.Body)
	}
	rebooted(t, d, 1)
	after := info(t, d)
	if after["ver"] != "16.0.1" || after["vid"] != float64(2605010) || after["uptime"].(float64) >= before || after["mac"] != mac {
		t.Errorf("after: ver %v vid %v uptime %v (before %v) mac %v", after["ver"], after["vid"], after["uptime"], before, after["mac"])
	}
	if after["cn"] != "Niji" || after["deviceId"] == nil {
		t.Errorf("the 16.x build tells cn %v deviceId %v", after["cn"], after["deviceId"])
	}
	// A custom build of a version the sim does not know keeps the code.
	r = post(t, d, "/update", file(variants[0].image(t, ImageOptions{Version: "16.1.0-custom"})))
	if r.Status != 200 {
		t.Fatalf("upload: %d %q", r.Status, r.Body)
	}
	rebooted(t, d, 2)
	if in := info(t, d); in["ver"] != "16.1.0-custom" || in["vid"] != float64(2605010) {
		t.Errorf("custom build: %v %v", in["ver"], in["vid"])
	}
	for _, p := range []string{"/json", "/json/si", "/json/state"} {
		if code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+p); err != nil || code != 200 || !strings.HasPrefix(body, "{") {
			t.Errorf("%s: %d %v %q", p, code, err, body)
		}
	}
	if code, body, _ := simtest.GetGo(t, "http://"+d.OTAAddr()+"/json/nope"); code != 501 || body != `{"error":4}` {
		t.Errorf("/json/nope: %d %q", code, body)
	}
}

// TestRebootAfterAnswer: the answer comes whole, then the reset, then the
// device is silent until it is back.
func TestRebootAfterAnswer(t *testing.T) {
	cfg := variants[1].config()
	var ev simtest.EventLog
	cfg.OnEvent = ev.Add
	tm := *simtest.Timing()
	tm.BootTime = 500 * time.Millisecond
	tm.ProtocolDelayScale = 1
	cfg.Timing = &tm
	d := simtest.Start(t, cfg)
	r := post(t, d, "/update", file(variants[1].image(t, ImageOptions{Version: "16.0.2"})))
	if r.Status != 200 || ev.Count(core.EventReboot) != 0 {
		t.Fatalf("got %d %q; reboots before the answer: %d", r.Status, r.Body, ev.Count(core.EventReboot))
	}
	ev.WaitCount(t, core.EventReboot, 1)
	if _, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s core.State) bool { return !s.Up }); err == nil {
		if s := simtest.ProbeTCP(d.OTAAddr(), 200*time.Millisecond); s == "answered" {
			t.Errorf("the device answered while it boots")
		}
	}
	rebooted(t, d, 1)
}

// TestGzip: 16.x on ESP8266 takes a gzipped image and checks its inflated
// head; 0.15.x finds no metadata in it.
func TestGzip(t *testing.T) {
	for _, c := range []struct {
		v      variant
		status int
		text   string
	}{
		{variants[3], 200, textUpdateOK},
		{variants[2], 500, textNoMetadata},
	} {
		t.Run(c.v.name, func(t *testing.T) {
			d := simtest.Start(t, c.v.config())
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(c.v.image(t, ImageOptions{Version: "16.0.2"}))
			zw.Close()
			r := post(t, d, "/update", file(z.Bytes()))
			if r.Status != c.status || !strings.Contains(r.Body, c.text) {
				t.Fatalf("got %d %q", r.Status, r.Body)
			}
		})
	}
}

// TestBootloader: POST /updatebootloader on 16.x ESP32 builds only.
func TestBootloader(t *testing.T) {
	cases := []struct {
		name   string
		v      variant
		chip   string
		noBL   bool
		data   []byte
		status int
		text   string
	}{
		{"esp32", variants[1], "esp32", false, append([]byte{0xE9}, make([]byte, 100)...), 200, page(textBLUpdated, textRebooting)},
		{"esp32 not an image", variants[1], "esp32", false, make([]byte, 100), 500, page(textBLFailed, "Invalid header")},
		{"esp32 too large", variants[1], "esp32", false, append([]byte{0xE9}, make([]byte, 0x8000)...), 500, "Bootloader file too large: 32769 bytes (max: 32768 bytes)"},
		{"esp32s3", variants[1], "esp32s3", false, []byte{0xE9, 1}, 500, "Bootloader update not supported on this chip"},
		{"absent", variants[1], "esp32", true, []byte{0xE9}, 404, ""},
		{"0.15.x", variants[0], "esp32", false, []byte{0xE9}, 404, ""},
		{"esp8266", variants[3], "esp8266", false, []byte{0xE9}, 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			cfg.Chip, cfg.NoBootloaderOTA = c.chip, c.noBL
			d := simtest.Start(t, cfg)
			r := post(t, d, "/updatebootloader", part{"update", "bootloader.bin", c.data})
			if r.Status != c.status || !strings.Contains(r.Body, c.text) {
				t.Fatalf("got %d %q", r.Status, r.Body)
			}
		})
	}
}

// TestChecks: what no WLED build is.
func TestChecks(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(c *core.Config)
		err  string
	}{
		{"before 0.15.2", func(c *core.Config) { c.Version = "0.15.1" }, "before 0.15.2"},
		{"subnet on 0.15", func(c *core.Config) { c.Version = "0.15.5"; c.OTAAnySubnet = true }, "no subnet gate"},
		{"bootloader on esp8266", func(c *core.Config) { c.Chip = "esp8266"; c.NoBootloaderOTA = true }, "NoBootloaderOTA"},
		{"not a version", func(c *core.Config) { c.Version = "main" }, "want a version"},
		{"knob of another personality", func(c *core.Config) { c.Language = "de" }, "Language"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := simtest.Config(WLED)
			c.cfg(&cfg)
			_, err := core.Start(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want %q", err, c.err)
			}
		})
	}
}

// TestServices: _http._tcp and _wled._tcp on the web port, the latter with
// TXT mac=, the MAC /json/info tells.
func TestServices(t *testing.T) {
	cfg := variants[1].config()
	e, err := core.IdleEnv(cfg, 80, -1)
	if err != nil {
		t.Fatal(err)
	}
	got := Firmware.Services(e)
	if len(got) != 2 || got[0].Type != "_http._tcp" || got[1].Type != "_wled._tcp" || got[0].Port != 80 || got[1].Port != 80 ||
		len(got[1].TXT) != 1 || !strings.HasPrefix(got[1].TXT[0], "mac=") {
		t.Fatalf("services %+v", got)
	}
	d := simtest.Start(t, cfg)
	if mac := info(t, d)["mac"]; "mac="+fmt.Sprint(mac) != got[1].TXT[0] {
		t.Errorf("TXT %s, /json/info mac %v", got[1].TXT[0], mac)
	}
}

// TestFaults: a flash write failing is Update's error in the 500 page.
func TestFaults(t *testing.T) {
	cfg := variants[1].config()
	cfg.Faults = []core.Fault{simtest.MustFault(t, "error@50%")}
	d := simtest.Start(t, cfg)
	r := post(t, d, "/update", file(variants[1].image(t, ImageOptions{Version: "16.0.2"})))
	if r.Status != 500 || !strings.Contains(r.Body, page(textUpdateFailed, "Flash Write Failed")) {
		t.Fatalf("got %d %q", r.Status, r.Body)
	}
}

// TestAddMetadata: any image the image package builds takes WLED's
// metadata and stays valid; a device of that release takes it.
func TestAddMetadata(t *testing.T) {
	for _, v := range []variant{variants[1], variants[3]} {
		t.Run(v.name, func(t *testing.T) {
			base, err := core.Image(v.chip, "my-fork", "16.0.3", 0)
			if err != nil {
				t.Fatal(err)
			}
			b, err := AddMetadata(base, "16.0.3", DefaultRelease(v.chip))
			if err != nil {
				t.Fatal(err)
			}
			img, err := image.Parse(b)
			if err != nil || !img.ChecksumOK || img.Digest != nil && !img.DigestOK || img.CRCPresent && !img.CRCOK {
				t.Fatalf("does not verify: %v %+v", err, img)
			}
			d := simtest.Start(t, v.config())
			if r := post(t, d, "/update", file(b)); r.Status != 200 {
				t.Fatalf("got %d %q", r.Status, r.Body)
			}
			rebooted(t, d, 1)
			if got := info(t, d)["ver"]; got != "16.0.3" {
				t.Errorf("ver %v", got)
			}
		})
	}
	if _, err := AddMetadata([]byte("nope"), "1", "x"); err == nil {
		t.Error("took a file that is no image")
	}
}

// TestMessageFraming: WLED's message pages have no length: chunked to an
// HTTP/1.1 client, plain to the close for HTTP/1.0.
func TestMessageFraming(t *testing.T) {
	cfg := variants[1].config()
	cfg.OTALock = true
	d := simtest.Start(t, cfg)
	for _, c := range []struct {
		proto   string
		chunked bool
	}{{"HTTP/1.1", true}, {"HTTP/1.0", false}} {
		conn, err := net.Dial("tcp", d.OTAAddr())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /update %s\r\nHost: x\r\n\r\n", c.proto)
		var b bytes.Buffer
		b.ReadFrom(conn)
		conn.Close()
		raw := b.String()
		head, body, _ := strings.Cut(raw, "\r\n\r\n")
		if !strings.HasPrefix(head, c.proto+" 401 Unauthorized") || strings.Contains(head, "Content-Length") ||
			strings.Contains(head, "Transfer-Encoding: chunked") != c.chunked || !strings.Contains(body, page(textAccessDenied, textUnlockOTA)) ||
			strings.HasSuffix(body, "0\r\n\r\n") != c.chunked {
			t.Errorf("%s: %q", c.proto, raw)
		}
	}
}
