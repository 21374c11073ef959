package espota

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestArduinoNoTCPOnOTAPort(t *testing.T) {
	d := simtest.Start(t, simtest.Config(ArduinoSketch))
	if d.WebAddr() != "" {
		t.Errorf("an ArduinoOTA sketch has no web server: %q", d.WebAddr())
	}
	c, err := net.DialTimeout("tcp", d.OTAAddr(), time.Second)
	if err == nil {
		c.Close()
		t.Fatal("TCP connect to the espota port was accepted")
	}
}

func TestEspotaPersonalities(t *testing.T) {
	cases := []struct {
		name     string
		p        core.Personality
		core     string
		password string
		nonce    int
	}{
		{"arduino, no auth", ArduinoSketch, "", "", 0},
		{"arduino 3.3.1+, PBKDF2", ArduinoSketch, "", "admin", 64},
		{"arduino 3.3.0, MD5", ArduinoSketch, "3.3.0", "admin", 32},
		{"esp8266, no auth", ESP8266Sketch, "", "", 0},
		{"esp8266, MD5", ESP8266Sketch, "", "admin", 32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ev simtest.EventLog
			cfg := simtest.Config(c.p)
			cfg.Core, cfg.Password = c.core, auth.NewSecret(c.password)
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			img := simtest.Image(t, "1.0.1")
			if c.password != "" {
				res, err := simtest.EspotaPush(t, d.OTAAddr(), img, "wrong")
				if err != nil || res.UDPReply != "Authentication Failed" {
					t.Fatalf("wrong password: %+v %v", res, err)
				}
				// The engine reports the failure after it replied.
				if st := simtest.WaitUploads(t, d, 1); st.Uploads[0].Outcome != "auth_failed" {
					t.Errorf("record: %+v", st.Uploads[0])
				}
			}
			res, err := simtest.EspotaPush(t, d.OTAAddr(), img, c.password)
			if err != nil || res.UDPReply != "OK" || res.Final != "OK" || res.Sent != len(img) {
				t.Fatalf("push: %+v %v", res, err)
			}
			st, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1")
			if err != nil {
				t.Fatal(err)
			}
			// Arduino's default.csv: the sketch runs from app0, the update
			// goes to app1; the ESP-IDF layout: factory, then ota_0.
			want := "ota_0"
			if c.p == ArduinoSketch {
				want = "app1"
			}
			if st.BootCount != 2 || st.Running != want || st.AppState == core.StatePendingVerify {
				t.Errorf("after update: %+v", st)
			}
			if e, ok := ev.Find(core.EventUploadFinished); !ok || e.Protocol != "espota" || e.Version != "1.0.1" {
				t.Errorf("finished event: %+v", e)
			}
		})
	}
}

func TestEspotaErrors(t *testing.T) {
	good := simtest.Image(t, "1.0.1")
	notESP := append([]byte{0x00}, good[1:]...)
	cases := []struct {
		name  string
		p     core.Personality
		img   []byte
		final string
	}{
		// The current core's Updater takes a first byte other than 0xE9 for
		// an encrypted image (U_AES_DECRYPT_AUTO) and has no key.
		{"esp32 magic", ArduinoSketch, notESP, "Decryption error\r\n"},
		{"esp8266 magic", ESP8266Sketch, notESP, "ERROR[10]: Magic byte is not 0xE9\n"},
		{"esp32 wrong chip", ArduinoSketch, simtest.ImageOf(t, "esp32c3", "1.0.1", 0), "Could Not Activate The Firmware\r\n"},
		{"esp32 corrupt", ArduinoSketch, simtest.Corrupt(good, len(good)-3), "Could Not Activate The Firmware\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := simtest.Start(t, simtest.Config(c.p))
			res, err := simtest.EspotaPush(t, d.OTAAddr(), c.img, "")
			if err != nil || res.Final != c.final {
				t.Fatalf("got %+v %v, want final %q", res, err, c.final)
			}
			if rec := simtest.LastUpload(t, d); rec.Outcome != "failed" || rec.Text != strings.TrimSpace(strings.TrimPrefix(c.final, "ERROR[10]: ")) {
				t.Errorf("record: %+v", rec)
			}
			if st := d.State(); st.Version != "1.0.0" || st.BootCount != 1 {
				t.Errorf("state: %s, %d boots", st.Version, st.BootCount)
			}
		})
	}
}

func TestEspotaFaults(t *testing.T) {
	t.Run("no-connect-back", func(t *testing.T) {
		d := simtest.Start(t, simtest.Config(ArduinoSketch))
		d.SetFaults(simtest.MustFault(t, "no-connect-back"))
		res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), "")
		if !errors.Is(err, simtest.ErrNoConnectBack) || res.UDPReply != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
	})
	t.Run("lose-ok", func(t *testing.T) {
		d := simtest.Start(t, simtest.Config(ArduinoSketch))
		d.SetFaults(simtest.MustFault(t, "lose-ok"))
		res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), "")
		if err != nil || res.Final != "" || res.Sent != len(simtest.Image(t, "1.0.1")) {
			t.Fatalf("%+v %v", res, err)
		}
		if _, err := d.WaitVersion(simtest.Ctx(t, 5*time.Second), "1.0.1"); err != nil {
			t.Fatalf("the image should be applied without the OK: %v", err)
		}
	})
	t.Run("drop", func(t *testing.T) {
		d := simtest.Start(t, simtest.Config(ESP8266Sketch))
		d.SetFaults(simtest.MustFault(t, "drop@50%"))
		_, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), "")
		if err == nil {
			t.Fatal("no error through a dropped connection")
		}
		if rec := simtest.LastUpload(t, d); rec.Outcome != "aborted" {
			t.Errorf("record: %+v", rec)
		}
	})
	t.Run("esp8266 has no rollback", func(t *testing.T) {
		cfg := simtest.Config(ESP8266Sketch)
		cfg.Behaviours = map[string]core.Behaviour{"1.0.1": core.CrashOnBoot}
		d := simtest.Start(t, cfg)
		res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), "")
		if err != nil || res.Final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s core.State) bool { return s.Phase == core.PhaseDown })
		if err != nil {
			t.Fatal(err)
		}
		if st.DownReason != "boot_loop" || st.Version != "1.0.1" {
			t.Errorf("%s %s", st.DownReason, st.Version)
		}
	})
}
