package fakedev

import (
	"strings"
	"testing"
	"time"
)

// e9Image is a payload that passes the fake's checks: 0xE9 first.
func e9Image(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i/509)
	}
	b[0] = 0xE9
	return b
}

func startESPHome(t *testing.T, cfg ESPHomeConfig) *ESPHomeDevice {
	t.Helper()
	d, err := StartESPHome(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestESPHomeShapes(t *testing.T) {
	img := e9Image(50000)
	cases := []struct {
		name string
		cfg  ESPHomeConfig
		s    ehScript
		want string // the transcript, as String prints it
	}{
		{"v2 extended", ESPHomeConfig{}, ehScript{features: 0x06, payload: img},
			"ver=2 answer=48 00 auth=41 nonce=0 acks=7 44=true 45=true err=00@ closed@"},
		{"v1 legacy", ESPHomeConfig{Protocol: 1, NoExtended: true}, ehScript{features: 0x07, payload: img},
			"ver=1 answer=40 auth=41 nonce=0 acks=0 44=true 45=true err=00@ closed@"},
		{"esp8266 gzip", ESPHomeConfig{ESP8266: true}, ehScript{features: 0x07, payload: ehGzip(t, img)},
			"ver=2 answer=48 01 auth=41 nonce=0 acks=1 44=true 45=true err=00@ closed@"},
		{"esp8266 gzip legacy", ESPHomeConfig{ESP8266: true, NoExtended: true}, ehScript{features: 0x03, payload: ehGzip(t, img)},
			"ver=2 answer=46 auth=41 nonce=0 acks=1 44=true 45=true err=00@ closed@"},
		{"sha256 right", ESPHomeConfig{Password: "pw"}, ehScript{features: 0x06, password: "pw", payload: img},
			"ver=2 answer=48 00 auth=02 nonce=64 acks=7 44=true 45=true err=00@ closed@"},
		{"sha256 wrong", ESPHomeConfig{Password: "pw"}, ehScript{features: 0x06, password: "pw", wrongPass: true, payload: img},
			"ver=2 answer=48 00 auth=02 nonce=64 acks=0 44=false 45=false err=82@auth closed@"},
		{"sha256 required", ESPHomeConfig{Password: "pw"}, ehScript{features: 0x04, password: "pw", payload: img},
			"ver=2 answer=48 00 auth=00 nonce=0 acks=0 44=false 45=false err=82@auth closed@"},
		{"md5", ESPHomeConfig{Password: "pw", Auth: "md5"}, ehScript{features: 0x06, password: "pw", payload: img},
			"ver=2 answer=48 00 auth=01 nonce=32 acks=7 44=true 45=true err=00@ closed@"},
		{"sha256-md5 old client", ESPHomeConfig{Password: "pw", Auth: "sha256-md5"}, ehScript{features: 0x00, password: "pw", payload: img},
			"ver=2 answer=40 auth=01 nonce=32 acks=7 44=true 45=true err=00@ closed@"},
		{"noise offered", ESPHomeConfig{Noise: "offered"}, ehScript{features: 0x06, payload: img},
			"ver=2 answer=48 04 auth=41 nonce=0 acks=7 44=true 45=true err=00@ closed@"},
		{"noise required", ESPHomeConfig{Noise: "required"}, ehScript{features: 0x06, payload: img},
			"ver=2 answer= auth=00 nonce=0 acks=0 44=false 45=false err=94@features closed@"},
		{"bad magic", ESPHomeConfig{}, ehScript{badMagic: true},
			"ver=0 answer= auth=00 nonce=0 acks=0 44=false 45=false err=80@magic closed@"},
		{"md5 mismatch", ESPHomeConfig{}, ehScript{features: 0x06, payload: img, md5: strings.Repeat("0", 32)},
			"ver=2 answer=48 00 auth=41 nonce=0 acks=7 44=true 45=false err=8B@end closed@"},
		{"ota type 02", ESPHomeConfig{}, ehScript{features: 0x06, otaType: 2, payload: img},
			"ver=2 answer=48 00 auth=41 nonce=0 acks=0 44=false 45=false err=8E@begin closed@"},
		{"2024 handshake read", ESPHomeConfig{HandshakeTimeout: 300 * time.Millisecond}, ehScript{features: 0x06, payload: img, pauseAt: "features", pause: time.Second},
			"ver=2 answer= auth=00 nonce=0 acks=0 44=false 45=false err=00@ closed@features"},
		{"data timeout", ESPHomeConfig{DataTimeout: 300 * time.Millisecond}, ehScript{features: 0x06, payload: img, pauseAt: "data", pause: time.Second},
			"ver=2 answer=48 00 auth=41 nonce=0 acks=4 44=false 45=false err=FF@data closed@"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startESPHome(t, c.cfg)
			if got := ehPush(t, d.Addr(), c.s).String(); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestESPHomeErrorBytes(t *testing.T) {
	img := e9Image(20000)
	steps := map[byte]string{0x80: "magic", 0x94: "features", 0x82: "auth", 0x8E: "begin", 0x81: "begin", 0x85: "begin",
		0x89: "begin", 0x8A: "begin", 0x83: "data", 0xFF: "data", 0x84: "end", 0x8B: "end", 0x8D: "end", 0x90: "end", 0x93: "end"}
	for b, step := range steps {
		d := startESPHome(t, ESPHomeConfig{Fail: b, FailOnce: true, Password: "pw"})
		tr := ehPush(t, d.Addr(), ehScript{features: 0x06, password: "pw", payload: img})
		if tr.errByte != b || tr.errStep != step {
			t.Errorf("%02X: %v", b, tr)
		}
		if tr := ehPush(t, d.Addr(), ehScript{features: 0x06, password: "pw", payload: img}); !tr.got45 {
			t.Errorf("%02X once: the retry got %v", b, tr)
		}
	}
}

func TestESPHomeRestart(t *testing.T) {
	d := startESPHome(t, ESPHomeConfig{BootTime: 500 * time.Millisecond})
	before := d.TXT()
	if before["project_version"] != "1.0.0" || before["version"] != "2026.7.0" {
		t.Fatalf("before: %v", before)
	}
	if tr := ehPush(t, d.Addr(), ehScript{features: 0x06, payload: e9Image(9000)}); !tr.got45 {
		t.Fatalf("push: %v", tr)
	}
	deadline := time.Now().Add(5 * time.Second)
	sawSilence := false
	for time.Now().Before(deadline) {
		txt := d.TXT()
		if txt == nil {
			sawSilence = true
		} else if sawSilence {
			if txt["project_version"] != "2.0.0" || txt["config_hash"] != "2ec0ffee" || txt["version"] != "2026.7.0" {
				t.Fatalf("after: %v", txt)
			}
			if n, _ := d.Installed(); n != 1 {
				t.Fatalf("installs %d", n)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no silent restart seen (silence %v)", sawSilence)
}
