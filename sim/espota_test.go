package sim

import (
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ots-ota/ots-ota/auth"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A minimal espota host, written from research/espota.md §1 (not from the
// sim/espota engine): UDP invitation, optional auth, TCP accept, 1024-byte
// chunks each followed by a count read, then wait for OK or an error text.

func md5hex(b []byte) string    { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

type espotaResult struct {
	udpReply string // the device's reply to the invitation (or auth)
	final    string // what followed the last chunk: "OK" or the error text
	sent     int
	acked    int // the sum of the counts the device sent
}

var errNoConnectBack = errors.New("no connection from the device")

func espotaPush(t *testing.T, device string, img []byte, password string) (espotaResult, error) {
	t.Helper()
	return espotaPushCmd(t, device, 0, img, password)
}

// espotaPushCmd is espotaPush with the invitation's command (100: spiffs).
func espotaPushCmd(t *testing.T, device string, cmd int, img []byte, password string) (espotaResult, error) {
	t.Helper()
	var res espotaResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	u, err := net.Dial("udp", device)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	sum := md5hex(img)
	fmt.Fprintf(u, "%d %d %d %s\n", cmd, port, len(img), sum)
	buf := make([]byte, 128)
	u.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := u.Read(buf)
	if err != nil {
		return res, fmt.Errorf("invitation: %w", err)
	}
	res.udpReply = string(buf[:n])
	if nonce, ok := strings.CutPrefix(res.udpReply, "AUTH "); ok {
		var cnonce, response string
		switch len(nonce) {
		case 32: // MD5, core ≤ 3.3.0 and ESP8266
			cnonce = md5hex([]byte("fw.bin" + strconv.Itoa(len(img)) + sum + device))
			response = md5hex([]byte(md5hex([]byte(password)) + ":" + nonce + ":" + cnonce))
		case 64: // PBKDF2-HMAC-SHA256, core ≥ 3.3.1
			cnonce = sha256hex([]byte("fw.bin" + strconv.Itoa(len(img)) + sum + device))
			dk, err := pbkdf2.Key(sha256.New, sha256hex([]byte(password)), []byte(nonce+":"+cnonce), 10000, 32)
			if err != nil {
				t.Fatal(err)
			}
			response = sha256hex([]byte(hex.EncodeToString(dk) + ":" + nonce + ":" + cnonce))
		default:
			return res, fmt.Errorf("nonce of %d characters", len(nonce))
		}
		fmt.Fprintf(u, "200 %s %s\n", cnonce, response)
		u.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := u.Read(buf)
		if err != nil {
			return res, fmt.Errorf("auth: %w", err)
		}
		res.udpReply = string(buf[:n])
	}
	if res.udpReply != "OK" {
		return res, nil
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return res, errNoConnectBack
	}
	defer c.Close()
	for off := 0; off < len(img); off += 1024 {
		end := min(off+1024, len(img))
		if _, err := c.Write(img[off:end]); err != nil {
			return res, fmt.Errorf("send at %d: %w", off, err)
		}
		res.sent = end
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf[:10])
		if err != nil {
			return res, fmt.Errorf("count after %d: %w", end, err)
		}
		if n, err := strconv.Atoi(string(buf[:n])); err == nil {
			res.acked += n
		}
		if s := string(buf[:n]); strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
			// an error text instead of a count: read the rest of it
			rest := readAll(c)
			res.final = strings.TrimLeft(s+rest, "0123456789")
			return res, nil
		}
	}
	res.final = strings.TrimLeft(readAll(c), "0123456789")
	return res, nil
}

func readAll(c net.Conn) string {
	var out []byte
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out)
		}
	}
}

func TestArduinoNoTCPOnOTAPort(t *testing.T) {
	d := startDevice(t, testConfig(Arduino))
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
		p        Personality
		core     string
		password string
		nonce    int
	}{
		{"arduino, no auth", Arduino, "", "", 0},
		{"arduino 3.3.1+, PBKDF2", Arduino, "", "admin", 64},
		{"arduino 3.3.0, MD5", Arduino, "3.3.0", "admin", 32},
		{"esp8266, no auth", ESP8266, "", "", 0},
		{"esp8266, MD5", ESP8266, "", "admin", 32},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ev eventLog
			cfg := testConfig(c.p)
			cfg.Core, cfg.Password = c.core, auth.NewSecret(c.password)
			cfg.OnEvent = ev.add
			d := startDevice(t, cfg)
			img := testImage(t, "1.0.1")
			if c.password != "" {
				res, err := espotaPush(t, d.OTAAddr(), img, "wrong")
				if err != nil || res.udpReply != "Authentication Failed" {
					t.Fatalf("wrong password: %+v %v", res, err)
				}
				// The engine reports the failure after it replied.
				if st := waitUploads(t, d, 1); st.Uploads[0].Outcome != "auth_failed" {
					t.Errorf("record: %+v", st.Uploads[0])
				}
			}
			res, err := espotaPush(t, d.OTAAddr(), img, c.password)
			if err != nil || res.udpReply != "OK" || res.final != "OK" || res.sent != len(img) {
				t.Fatalf("push: %+v %v", res, err)
			}
			st, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1")
			if err != nil {
				t.Fatal(err)
			}
			// Arduino's default.csv: the sketch runs from app0, the update
			// goes to app1; the ESP-IDF layout: factory, then ota_0.
			want := "ota_0"
			if c.p == Arduino {
				want = "app1"
			}
			if st.BootCount != 2 || st.Running != want || st.AppState == StatePendingVerify {
				t.Errorf("after update: %+v", st)
			}
			if e, ok := ev.find(EventUploadFinished); !ok || e.Protocol != "espota" || e.Version != "1.0.1" {
				t.Errorf("finished event: %+v", e)
			}
		})
	}
}

func TestEspotaErrors(t *testing.T) {
	good := testImage(t, "1.0.1")
	notESP := append([]byte{0x00}, good[1:]...)
	cases := []struct {
		name  string
		p     Personality
		img   []byte
		final string
	}{
		// The current core's Updater takes a first byte other than 0xE9 for
		// an encrypted image (U_AES_DECRYPT_AUTO) and has no key.
		{"esp32 magic", Arduino, notESP, "Decryption error\r\n"},
		{"esp8266 magic", ESP8266, notESP, "ERROR[10]: Magic byte is not 0xE9\n"},
		{"esp32 wrong chip", Arduino, testImageOf(t, "esp32c3", "1.0.1", 0), "Could Not Activate The Firmware\r\n"},
		{"esp32 corrupt", Arduino, corrupt(good, len(good)-3), "Could Not Activate The Firmware\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startDevice(t, testConfig(c.p))
			res, err := espotaPush(t, d.OTAAddr(), c.img, "")
			if err != nil || res.final != c.final {
				t.Fatalf("got %+v %v, want final %q", res, err, c.final)
			}
			if rec := lastUpload(t, d); rec.Outcome != "failed" || rec.Text != strings.TrimSpace(strings.TrimPrefix(c.final, "ERROR[10]: ")) {
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
		d := startDevice(t, testConfig(Arduino))
		d.SetFaults(mustFault(t, "no-connect-back"))
		res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), "")
		if !errors.Is(err, errNoConnectBack) || res.udpReply != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
	})
	t.Run("lose-ok", func(t *testing.T) {
		d := startDevice(t, testConfig(Arduino))
		d.SetFaults(mustFault(t, "lose-ok"))
		res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), "")
		if err != nil || res.final != "" || res.sent != len(testImage(t, "1.0.1")) {
			t.Fatalf("%+v %v", res, err)
		}
		if _, err := d.WaitVersion(ctxFor(t, 5*time.Second), "1.0.1"); err != nil {
			t.Fatalf("the image should be applied without the OK: %v", err)
		}
	})
	t.Run("drop", func(t *testing.T) {
		d := startDevice(t, testConfig(ESP8266))
		d.SetFaults(mustFault(t, "drop@50%"))
		_, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), "")
		if err == nil {
			t.Fatal("no error through a dropped connection")
		}
		if rec := lastUpload(t, d); rec.Outcome != "aborted" {
			t.Errorf("record: %+v", rec)
		}
	})
	t.Run("esp8266 has no rollback", func(t *testing.T) {
		cfg := testConfig(ESP8266)
		cfg.Behaviours = map[string]Behaviour{"1.0.1": CrashOnBoot}
		d := startDevice(t, cfg)
		res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), "")
		if err != nil || res.final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Phase == PhaseDown })
		if err != nil {
			t.Fatal(err)
		}
		if st.DownReason != "boot_loop" || st.Version != "1.0.1" {
			t.Errorf("%s %s", st.DownReason, st.Version)
		}
	})
}
