package esphome

import (
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func startNode(t *testing.T, p core.Personality, password string, o Options) *core.Device {
	t.Helper()
	cfg := simtest.Config(p)
	cfg.Options = o
	if password != "" {
		cfg.Password = auth.NewSecret(password)
	}
	if p == ESP8266 {
		cfg.Chip = "esp8266"
	}
	return simtest.Start(t, cfg)
}

func txtOf(d *core.Device) map[string]string {
	m := map[string]string{}
	for _, s := range core.PeekAt(d).Services() {
		for _, it := range s.TXT {
			k, v, _ := strings.Cut(it, "=")
			m[k] = v
		}
	}
	return m
}

// TestByteExchange runs the table of answer variants, auth, compression
// and errors against both personalities.
func TestByteExchange(t *testing.T) {
	img32 := simtest.ImageOf(t, "esp32s3", "2.0.0", 0)
	img8266 := simtest.ImageOf(t, "esp8266", "2.0.0", 0)
	notE9 := append([]byte{0x00}, img32[1:]...)
	cases := []struct {
		name     string
		p        core.Personality
		pass     string
		o        Options
		s        script
		ver      byte
		answer   []byte
		authKind byte
		nonce    int
		errByte  byte
		errStep  string
		ok       bool
	}{
		{name: "v2 extended", p: ESP32, s: script{features: 0x06, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "v1 extended", p: ESP32, o: Options{Version: 1}, s: script{features: 0x06, payload: img32}, ver: 1, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "v2 not extended", p: ESP32, o: Options{NoExtended: true}, s: script{features: 0x07, payload: img32}, ver: 2, answer: []byte{0x40}, authKind: 0x41, ok: true},
		{name: "old client", p: ESP32, s: script{features: 0x00, payload: img32}, ver: 2, answer: []byte{0x40}, authKind: 0x41, ok: true},
		{name: "esp32 no compression", p: ESP32, s: script{features: 0x07, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "esp8266 gzip extended", p: ESP8266, s: script{features: 0x07, payload: gz(t, img8266)}, ver: 2, answer: []byte{0x48, 0x01}, authKind: 0x41, ok: true},
		{name: "esp8266 gzip legacy", p: ESP8266, o: Options{NoExtended: true}, s: script{features: 0x03, payload: gz(t, img8266)}, ver: 2, answer: []byte{0x46}, authKind: 0x41, ok: true},
		{name: "esp8266 plain", p: ESP8266, s: script{features: 0x06, payload: img8266}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "esp8266 compression off", p: ESP8266, o: Options{Compression: "off"}, s: script{features: 0x07, payload: img8266}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "partition access flag", p: ESP32, o: Options{PartitionAccess: true}, s: script{features: 0x06, payload: img32}, ver: 2, answer: []byte{0x48, 0x02}, authKind: 0x41, ok: true},
		{name: "noise offered, plaintext client", p: ESP32, o: Options{Noise: NoiseOffered}, s: script{features: 0x06, payload: img32}, ver: 2, answer: []byte{0x48, 0x04}, authKind: 0x41, ok: true},
		{name: "noise required", p: ESP32, o: Options{Noise: NoiseRequired}, s: script{features: 0x06, payload: img32}, ver: 2, errByte: 0x94, errStep: "features"},

		{name: "sha256 right", p: ESP32, pass: "pw", s: script{features: 0x06, password: "pw", payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x02, nonce: 64, ok: true},
		{name: "sha256 wrong", p: ESP32, pass: "pw", s: script{features: 0x06, password: "pw", wrongPass: true, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x02, nonce: 64, errByte: 0x82, errStep: "auth"},
		{name: "sha256 missing", p: ESP32, pass: "pw", s: script{features: 0x06, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x02, nonce: 64},
		{name: "sha256 required", p: ESP32, pass: "pw", s: script{features: 0x04, password: "pw", payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, errByte: 0x82, errStep: "auth"},
		{name: "md5 right", p: ESP32, pass: "pw", o: Options{Auth: AuthMD5}, s: script{features: 0x06, password: "pw", payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x01, nonce: 32, ok: true},
		{name: "md5 wrong", p: ESP32, pass: "pw", o: Options{Auth: AuthMD5}, s: script{features: 0x06, password: "pw", wrongPass: true, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x01, nonce: 32, errByte: 0x82, errStep: "auth"},
		{name: "sha256-md5 old client", p: ESP32, pass: "pw", o: Options{Auth: AuthSHA256MD5}, s: script{features: 0x00, password: "pw", payload: img32}, ver: 2, answer: []byte{0x40}, authKind: 0x01, nonce: 32, ok: true},
		{name: "sha256-md5 new client", p: ESP32, pass: "pw", o: Options{Auth: AuthSHA256MD5}, s: script{features: 0x06, password: "pw", payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x02, nonce: 64, ok: true},
		{name: "2024 md5", p: ESP8266, pass: "pw", o: Options{Mode2024: true, Version: 1}, s: script{features: 0x07, password: "pw", payload: gz(t, img8266)}, ver: 1, answer: []byte{0x46}, authKind: 0x01, nonce: 32, ok: true},

		{name: "bad magic", p: ESP32, s: script{badMagic: true}, errByte: 0x80, errStep: "magic"},
		{name: "ota type 01", p: ESP32, s: script{features: 0x06, otaType: 1, payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x8E, errStep: "begin"},
		{name: "esp32 md5 mismatch", p: ESP32, s: script{features: 0x06, md5: strings.Repeat("0", 32), payload: img32}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x8B, errStep: "end"},
		{name: "esp8266 md5 mismatch", p: ESP8266, s: script{features: 0x06, md5: strings.Repeat("0", 32), payload: img8266}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x8B, errStep: "end"},
		{name: "esp8266 2024 md5 mismatch", p: ESP8266, o: Options{Mode2024: true}, s: script{features: 0x00, md5: strings.Repeat("0", 32), payload: img8266}, ver: 2, answer: []byte{0x40}, authKind: 0x41, errByte: 0x84, errStep: "end"},
		{name: "esp32 not an image", p: ESP32, s: script{features: 0x06, payload: notE9}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x80, errStep: "data"},
		{name: "esp8266 not an image", p: ESP8266, s: script{features: 0x06, payload: notE9}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x84, errStep: "end"},
		{name: "esp8266 2024 not an image", p: ESP8266, o: Options{Mode2024: true}, s: script{features: 0x00, payload: notE9}, ver: 2, answer: []byte{0x40}, authKind: 0x41, errByte: 0x83, errStep: "data"},
		{name: "esp32 invalid image", p: ESP32, s: script{features: 0x06, payload: simtest.Corrupt(slices.Clone(img32), 30000)}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x84, errStep: "end"},
		{name: "esp32 too big", p: ESP32, s: script{features: 0x06, payload: make([]byte, 3<<20)}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x89, errStep: "begin"},
		{name: "esp8266 too big", p: ESP8266, s: script{features: 0x06, payload: make([]byte, 3<<20)}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0x88, errStep: "begin"},
		{name: "2024 slow client", p: ESP32, o: Options{Mode2024: true}, s: script{features: 0x00, payload: img32, pauseAt: "features", pause: 1500 * time.Millisecond}, ver: 2, errByte: 0xFF, errStep: "features"},
		{name: "current waits for a slow client", p: ESP32, s: script{features: 0x06, payload: img32, pauseAt: "features", pause: 1500 * time.Millisecond}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, ok: true},
		{name: "data timeout", p: ESP32, o: Options{DataTimeout: 300 * time.Millisecond}, s: script{features: 0x06, payload: img32, pauseAt: "data", pause: time.Second}, ver: 2, answer: []byte{0x48, 0x00}, authKind: 0x41, errByte: 0xFF, errStep: "data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startNode(t, c.p, c.pass, c.o)
			tr := push(t, d.OTAAddr(), c.s)
			if tr.ver != c.ver || string(tr.answer) != string(c.answer) || tr.errByte != c.errByte || tr.errStep != c.errStep ||
				tr.got45 != c.ok || tr.nonceLen != c.nonce || c.authKind != 0 && tr.authKind != c.authKind {
				t.Fatalf("got %v\nwant ver=%d answer=% X auth=%02X nonce=%d err=%02X@%s ok=%v", tr, c.ver, c.answer,
					c.authKind, c.nonce, c.errByte, c.errStep, c.ok)
			}
			if c.ok && tr.ver == 2 {
				if want := (len(c.s.payload) + 8191) / 8192; tr.acks != want {
					t.Errorf("%d acks, want %d", tr.acks, want)
				}
			}
			if c.ok && tr.ver == 1 && tr.acks != 0 {
				t.Errorf("v1 sent %d acks", tr.acks)
			}
			if c.ok {
				st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
				if err != nil {
					t.Fatalf("no reboot: %v", err)
				}
				if got := txtOf(d)["config_hash"]; !c.o.Mode2024 && got != ConfigHashOf("", "2.0.0") {
					t.Errorf("config_hash %q after the update (state %+v)", got, st.Version)
				}
			}
		})
	}
}

// TestEveryErrorByte arms each error byte the firmware can send and finds
// it at its step.
func TestEveryErrorByte(t *testing.T) {
	img32 := simtest.ImageOf(t, "esp32s3", "2.0.0", 0)
	img8266 := simtest.ImageOf(t, "esp8266", "2.0.0", 0)
	steps := map[Step]string{StepMagic: "magic", StepFeature: "features", StepAuth: "auth", StepType: "begin",
		StepBegin: "begin", StepData: "data", StepEnd: "end"}
	seen := map[byte]bool{}
	for _, p := range []core.Personality{ESP32, ESP8266} {
		for b := 0x80; b <= 0xFF; b++ {
			if b > 0x94 && b < 0xFF {
				continue
			}
			o := Options{Fail: byte(b), PartitionAccess: true}
			if b == 0x94 {
				o.Noise = NoiseRequired
			}
			if b == 0x87 {
				o = Options{Fail: byte(b), Mode2024: true}
			}
			pass := ""
			if b == 0x82 {
				pass = "pw"
			}
			cfg := simtest.Config(p)
			cfg.Options, cfg.Password = o, auth.NewSecret(pass)
			if p == ESP8266 {
				cfg.Chip = "esp8266"
			}
			if _, err := core.Resolve(cfg); err != nil {
				if b == 0x8C || p == ESP32 && b >= 0x85 && b <= 0x88 || p == ESP8266 && (b == 0x89 || b == 0x8A) {
					continue // not from this build: refused, as it should be
				}
				t.Fatalf("%s %02X refused: %v", p, b, err)
			}
			t.Run(string(p)+"/"+strings.ToUpper(hexByte(byte(b))), func(t *testing.T) {
				img := img32
				if p == ESP8266 {
					img = img8266
				}
				d := simtest.Start(t, cfg)
				features := byte(0x06)
				if o.Mode2024 {
					features = 0x02
				}
				tr := push(t, d.OTAAddr(), script{features: features, password: pass, payload: img})
				if tr.errByte != byte(b) || tr.errStep != steps[FailStep(byte(b))] {
					t.Fatalf("got %v, want %02X at %s", tr, b, FailStep(byte(b)))
				}
				if st := d.State(); st.BootCount != 1 || st.Version != "1.0.0" {
					t.Errorf("after %02X: boot %d, version %s", b, st.BootCount, st.Version)
				}
			})
			seen[byte(b)] = true
		}
	}
	for b := 0x80; b <= 0x94; b++ {
		if !seen[byte(b)] && b != 0x8C {
			t.Errorf("error byte %02X never armed", b)
		}
	}
	if !seen[0xFF] {
		t.Error("FF never armed")
	}
}

func hexByte(b byte) string {
	return strings.ToUpper(string("0123456789abcdef"[b>>4]) + string("0123456789abcdef"[b&15]))
}

// TestFailCount: a fault for the first session only; the retry installs.
func TestFailCount(t *testing.T) {
	img := simtest.ImageOf(t, "esp32s3", "2.0.0", 0)
	d := startNode(t, ESP32, "", Options{Fail: 0x83, FailCount: 1})
	if tr := push(t, d.OTAAddr(), script{features: 0x06, payload: img}); tr.errByte != 0x83 {
		t.Fatalf("first: %v", tr)
	}
	if tr := push(t, d.OTAAddr(), script{features: 0x06, payload: img}); !tr.got45 {
		t.Fatalf("second: %v", tr)
	}
}

// TestLatencyDelaysAnswers: under a latency fault the 47s come late but
// all of them, before 44 and 45, whether the client waits for each (as
// espota2.py) or streams the image and reads them after (as ots-ota).
func TestLatencyDelaysAnswers(t *testing.T) {
	img := simtest.ImageOf(t, "esp32s3", "2.0.0", 0)
	for _, stream := range []bool{false, true} {
		cfg := simtest.Config(ESP32)
		cfg.Faults = []core.Fault{simtest.MustFault(t, "latency:20ms")}
		d := simtest.Start(t, cfg)
		tr := push(t, d.OTAAddr(), script{features: 0x06, payload: img, stream: stream})
		if want := (len(img) + 8191) / 8192; !tr.got45 || tr.acks != want {
			t.Errorf("stream %v: %v, want %d acks then 45", stream, tr, want)
		}
	}
}

// TestIdentityAcrossUpdate: TXT version stays the ESPHome release while
// project_version and config_hash follow the image; the restart is
// silent and the record comes back.
func TestIdentityAcrossUpdate(t *testing.T) {
	for _, p := range []core.Personality{ESP32, ESP8266} {
		t.Run(string(p), func(t *testing.T) {
			chip := "esp32s3"
			if p == ESP8266 {
				chip = "esp8266"
			}
			img := simtest.ImageOf(t, chip, "1.4.0", 0)
			o := Options{ProjectName: "acme.lamp", FriendlyName: "Lamp", APIEncryption: true,
				Identities: map[string]Identity{"1.4.0": {ConfigHash: "0badc0de"}}}
			d := startNode(t, p, "", o)
			before := txtOf(d)
			want := map[string]string{"version": DefaultRelease, "project_name": "acme.lamp", "project_version": "1.0.0",
				"config_hash": ConfigHashOf("acme.lamp", "1.0.0"), "friendly_name": "Lamp", "network": "wifi",
				"api_encryption": "Noise_NNpsk0_25519_ChaChaPoly_SHA256"}
			for k, v := range want {
				if before[k] != v {
					t.Errorf("before: %s=%q, want %q (%v)", k, before[k], v, before)
				}
			}
			if len(before["mac"]) != 12 || before["platform"] == "" || before["board"] == "" {
				t.Errorf("before: %v", before)
			}
			payload := img
			if p == ESP8266 {
				payload = gz(t, img)
			}
			if tr := push(t, d.OTAAddr(), script{features: 0x07, payload: payload}); !tr.got45 {
				t.Fatalf("push: %v", tr)
			}
			ctx := simtest.Ctx(t, 10*time.Second)
			if _, err := d.WaitState(ctx, func(s core.State) bool { return s.Phase == core.PhaseBooting }); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WaitState(ctx, func(s core.State) bool { return s.Up && s.BootCount == 2 }); err != nil {
				t.Fatal(err)
			}
			after := txtOf(d)
			if after["project_version"] != "1.4.0" || after["config_hash"] != "0badc0de" || after["version"] != DefaultRelease ||
				after["mac"] != before["mac"] {
				t.Errorf("after: %v", after)
			}
		})
	}
}

// TestSecondClientWaits: one client at a time; a second one queued behind
// a failed session is served next, one queued behind a successful update
// is reset by the reboot without an answer.
func TestSecondClientWaits(t *testing.T) {
	img := simtest.ImageOf(t, "esp32s3", "2.0.0", 0)
	t.Run("behind a failed session", func(t *testing.T) {
		d := startNode(t, ESP32, "", Options{})
		c1 := dial(t, d.OTAAddr())
		c1.Write(magic)
		var b [2]byte
		if _, err := readFor(c1, b[:], 5*time.Second); err != nil || b[0] != 0 {
			t.Fatalf("first client: % X %v", b, err)
		}
		c2 := dial(t, d.OTAAddr())
		c2.Write(magic)
		if n, _ := readFor(c2, b[:1], 300*time.Millisecond); n != 0 {
			t.Fatal("second client answered while the first is served")
		}
		c1.Close()
		if _, err := readFor(c2, b[:], 5*time.Second); err != nil || b[0] != 0 || b[1] != 2 {
			t.Fatalf("second client after the first left: % X %v", b, err)
		}
	})
	t.Run("behind an update", func(t *testing.T) {
		d := startNode(t, ESP32, "", Options{})
		done := make(chan transcript, 1)
		go func() {
			done <- push(t, d.OTAAddr(), script{features: 0x06, payload: img, pauseAt: "data", pause: 500 * time.Millisecond})
		}()
		time.Sleep(200 * time.Millisecond) // the first push is in its data phase (it pauses 500 ms half-way)
		c2 := dial(t, d.OTAAddr())
		c2.Write(magic)
		if tr := <-done; !tr.got45 {
			t.Fatalf("first push: %v", tr)
		}
		var b [2]byte
		n, err := readFor(c2, b[:], 10*time.Second)
		if n != 0 || err == nil {
			t.Fatalf("queued client got % X (%v)", b[:n], err)
		}
		if st := d.State(); st.BootCount != 2 {
			t.Errorf("boot count %d", st.BootCount)
		}
	})
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readFor(c net.Conn, b []byte, d time.Duration) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	return io.ReadFull(c, b)
}

func TestParseOption(t *testing.T) {
	cases := []struct {
		spec string
		want func(Options) bool
		bad  bool
	}{
		{spec: "version=1", want: func(o Options) bool { return o.Version == 1 }},
		{spec: "version=3", bad: true},
		{spec: "extended=false", want: func(o Options) bool { return o.NoExtended }},
		{spec: "auth=MD5", want: func(o Options) bool { return o.Auth == AuthMD5 }},
		{spec: "mode=2024", want: func(o Options) bool { return o.Mode2024 }},
		{spec: "fail=8b", want: func(o Options) bool { return o.Fail == 0x8B }},
		{spec: "fail=0xFF", want: func(o Options) bool { return o.Fail == 0xFF }},
		{spec: "fail=7F", bad: true},
		{spec: "api-encryption", want: func(o Options) bool { return o.APIEncryption }},
		{spec: "data-timeout=2s", want: func(o Options) bool { return o.DataTimeout == 2*time.Second }},
		{spec: "data-timeout=soon", bad: true},
		{spec: "identity=1.4.0:v1.4:0badc0de", want: func(o Options) bool {
			return o.Identities["1.4.0"] == Identity{ProjectVersion: "v1.4", ConfigHash: "0badc0de"}
		}},
		{spec: "identity=1.4.0", bad: true},
		{spec: "mac=A0:B1:C2:D3:E4:F5", want: func(o Options) bool { return o.MAC == "a0b1c2d3e4f5" }},
		{spec: "project", bad: true},
		{spec: "colour=red", bad: true},
	}
	for _, c := range cases {
		var o Options
		err := ParseOption(&o, c.spec)
		if (err != nil) != c.bad || !c.bad && !c.want(o) {
			t.Errorf("%s: %+v, %v", c.spec, o, err)
		}
	}
}

// TestCheckRefuses: combinations no ESPHome build has are refused at start.
func TestCheckRefuses(t *testing.T) {
	for _, c := range []struct {
		p    core.Personality
		pass string
		o    Options
	}{
		{ESP32, "", Options{Fail: 0x88}},
		{ESP8266, "", Options{Fail: 0x89}},
		{ESP32, "", Options{Fail: 0x8C}},
		{ESP32, "", Options{Fail: 0x82}},
		{ESP32, "", Options{Fail: 0x8E, NoExtended: true}},
		{ESP32, "", Options{Fail: 0x90}},
		{ESP32, "", Options{Fail: 0x94}},
		{ESP32, "", Options{Mode2024: true, Auth: AuthSHA256}},
		{ESP32, "pw", Options{Noise: NoiseRequired}},
		{ESP32, "", Options{Version: 3}},
		{ESP32, "", Options{MAC: "xyz"}},
	} {
		cfg := simtest.Config(c.p)
		cfg.Options, cfg.Password = c.o, auth.NewSecret(c.pass)
		if c.p == ESP8266 {
			cfg.Chip = "esp8266"
		}
		if _, err := core.Resolve(cfg); err == nil {
			t.Errorf("%s %+v accepted", c.p, c.o)
		}
	}
	cfg := simtest.Config(core.Personality("esphome"))
	cfg.Options = struct{}{}
	if _, err := core.Resolve(cfg); err == nil {
		t.Error("foreign options accepted")
	}
}
