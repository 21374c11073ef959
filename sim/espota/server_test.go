package espota_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/espota"
)

const (
	password     = "admin"
	md5OfAdmin   = "21232f297a57a5a743894a0e4a801fc3"
	sha256OfPass = "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918"
	short        = 150 * time.Millisecond // "no reply" window
)

// checkSuccess asserts a clean upload: digits (the counts the device
// reported, run together) then "OK", and the Updater holding the image.
func checkSuccess(t *testing.T, d *device, img []byte, got string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("upload: %v (received %q)", err, got)
	}
	d.waitEvent(t, espota.EventUploadFinished, 2*time.Second)
	digits, ok := strings.CutSuffix(got, "OK")
	if !ok {
		t.Fatalf("stream %q does not end in OK", got)
	}
	cs := d.progressCounts()
	if want := concatCounts(cs); digits != want {
		t.Errorf("counts on the wire %q, device reported %q", digits, want)
	}
	sum := 0
	for _, c := range cs {
		sum += c
	}
	if sum != len(img) {
		t.Errorf("counts add up to %d, want %d", sum, len(img))
	}
	if !bytes.Equal(d.u.bytes(), img) {
		t.Errorf("updater got %d bytes, not the image (%d)", len(d.u.bytes()), len(img))
	}
	if c := d.u.counts(); c != (counts{1, 1, 0}) {
		t.Errorf("updater calls %+v, want begin 1 end 1 abort 0", c)
	}
}

func TestUploadNoAuth(t *testing.T) {
	for _, f := range []espota.Flavor{espota.ESP32, espota.ESP8266} {
		t.Run(f.String(), func(t *testing.T) {
			d := startDevice(t, testConfig(f), nil)
			h := newHost(t, d.addr)
			img := image(10000)
			// Uppercase md5: the device keeps it and Update compares case-insensitively;
			// the engine hands End the lowercase form.
			h.send(h.invitation(espota.CmdFlash, len(img), strings.ToUpper(md5hex(img))))
			h.expectReply("OK")
			c := h.mustAccept()
			got, err := lockstep(c, img, 1024, 3*time.Second)
			checkSuccess(t, d, img, got, err)
			if got := d.u.lastEndMD5(); got != md5hex(img) {
				t.Errorf("End got %q, want lowercase %q", got, md5hex(img))
			}
			inv := d.waitEvent(t, espota.EventInvitation, time.Second)
			if inv.Cmd != 0 || inv.Size != len(img) || inv.Port != h.port() {
				t.Errorf("invitation event %+v", inv)
			}
		})
	}
}

func TestUploadFilesystemCmd(t *testing.T) {
	d := startDevice(t, testConfig(espota.ESP32), nil)
	h := newHost(t, d.addr)
	img := []byte("not an app image, no magic needed")
	h.send(h.invitation(espota.CmdFS, len(img), md5hex(img)))
	h.expectReply("OK")
	got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
	checkSuccess(t, d, img, got, err)
	if got := d.u.beginCmd(); got != espota.CmdFS {
		t.Errorf("Begin cmd %d, want 100", got)
	}
}

func TestAuthVariants(t *testing.T) {
	tests := []struct {
		name     string
		cfg      espota.Config
		nonceLen int
		passHash string // what the host feeds into the response
	}{
		{"esp32 legacy md5", espota.Config{Flavor: espota.ESP32, Legacy: true, Password: auth.NewSecret(password)}, 32, md5OfAdmin},
		{"esp8266 md5", espota.Config{Flavor: espota.ESP8266, Password: auth.NewSecret(password)}, 32, md5OfAdmin},
		{"esp32 pbkdf2", espota.Config{Flavor: espota.ESP32, Password: auth.NewSecret(password)}, 64, sha256OfPass},
		{"esp32 pbkdf2 with stored md5 hash (espota -m / fallback)", espota.Config{Flavor: espota.ESP32, PasswordHash: auth.NewSecret(md5OfAdmin)}, 64, md5OfAdmin},
		{"esp32 legacy with stored hash", espota.Config{Flavor: espota.ESP32, Legacy: true, PasswordHash: auth.NewSecret(md5OfAdmin)}, 32, md5OfAdmin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.RecvTimeout, cfg.DelayScale = 100*time.Millisecond, 0.01
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			img := image(3000)
			h.send(h.invitation(espota.CmdFlash, len(img), md5hex(img)))
			reply, ok := h.recv(2 * time.Second)
			if !ok {
				t.Fatal("no AUTH reply")
			}
			nonce, isAuth := strings.CutPrefix(reply, "AUTH ")
			if !isAuth || len(nonce) != tt.nonceLen || strings.Trim(nonce, "0123456789abcdef") != "" {
				t.Fatalf("reply %q, want AUTH with %d lowercase hex", reply, tt.nonceLen)
			}
			h.authenticate(h.udp, reply, tt.passHash)
			h.expectReply("OK")
			got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
			checkSuccess(t, d, img, got, err)
			d.waitEvent(t, espota.EventAuthOK, time.Second)
		})
	}
}

func TestWrongPassword(t *testing.T) {
	tests := []struct {
		name     string
		cfg      espota.Config
		passHash string
	}{
		{"esp32 pbkdf2", espota.Config{Flavor: espota.ESP32}, sha256hex([]byte("wrong"))},
		{"esp32 pbkdf2 md5-hash host against sha device", espota.Config{Flavor: espota.ESP32}, md5OfAdmin},
		{"esp32 legacy", espota.Config{Flavor: espota.ESP32, Legacy: true}, md5hex([]byte("wrong"))},
		{"esp8266", espota.Config{Flavor: espota.ESP8266}, md5hex([]byte("wrong"))},
		{"uppercase response", espota.Config{Flavor: espota.ESP32, Legacy: true}, strings.ToUpper(md5OfAdmin)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Password = auth.NewSecret(password)
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			h.send(h.invitation(0, 100, md5hex(image(100))))
			reply, _ := h.recv(2 * time.Second)
			h.authenticate(h.udp, reply, tt.passHash)
			h.expectReply("Authentication Failed")
			d.waitEvent(t, espota.EventAuthFailed, time.Second)
			if _, err := h.accept(short); err == nil {
				t.Fatal("device connected back after a failed auth")
			}
			if c := d.u.counts(); c.began != 0 {
				t.Errorf("Begin called after failed auth: %+v", c)
			}
			// Back in IDLE: a new invitation gets a fresh nonce.
			h.send(h.invitation(0, 100, md5hex(image(100))))
			again, ok := h.recv(2 * time.Second)
			if !ok || !strings.HasPrefix(again, "AUTH ") || again == reply {
				t.Fatalf("second invitation got %q (first %q)", again, reply)
			}
		})
	}
}

func TestMalformedInvitationsGetNoReply(t *testing.T) {
	for _, f := range []espota.Flavor{espota.ESP32, espota.ESP8266} {
		t.Run(f.String(), func(t *testing.T) {
			cfg := testConfig(f)
			cfg.Password = auth.NewSecret(password)
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			sum := md5hex(image(10))
			bad := []string{
				"",
				"hello",
				"5 1234 10 " + sum + "\n",   // cmd not 0/100
				"200 1234 10 " + sum + "\n", // auth message while idle
				"0 1234 10 " + sum[:31] + "\n",
				"0 1234 10 " + sum + "0\n",
				"0 1234 10\n",
				"0 1234 10 " + sum[:16] + " " + sum[16:] + "\n",
			}
			for _, b := range bad {
				h.send(b)
				h.expectNoReply(h.udp, short)
			}
			d.waitEvent(t, espota.EventIgnored, time.Second)
			h.send(h.invitation(0, 10, sum))
			if r, ok := h.recv(2 * time.Second); !ok || !strings.HasPrefix(r, "AUTH ") {
				t.Fatalf("valid invitation after junk got %q, %v", r, ok)
			}
		})
	}
}

func TestAuthMessageWrongLengthsGetNoReply(t *testing.T) {
	tests := []struct {
		name string
		cfg  espota.Config
		msg  func(nonce string) string
	}{
		{"legacy short cnonce", espota.Config{Legacy: true}, func(string) string {
			return "200 " + strings.Repeat("a", 31) + " " + strings.Repeat("b", 32) + "\n"
		}},
		{"legacy CRLF", espota.Config{Legacy: true}, func(string) string {
			return "200 " + strings.Repeat("a", 32) + " " + strings.Repeat("b", 32) + "\r\n"
		}},
		// An old espota (recv(37)) keeps 32 characters of a 64-hex nonce and
		// answers with 32-character fields: the new device stays silent.
		{"pbkdf2 device, md5-length answer", espota.Config{}, func(nonce string) string {
			c := md5hex([]byte("x"))
			return "200 " + c + " " + md5hex([]byte(md5OfAdmin+":"+nonce[:32]+":"+c)) + "\n"
		}},
		{"esp8266 64-length answer", espota.Config{Flavor: espota.ESP8266}, func(string) string {
			return "200 " + strings.Repeat("a", 64) + " " + strings.Repeat("b", 64) + "\n"
		}},
		{"first field not 200", espota.Config{Legacy: true}, func(string) string {
			return "201 " + strings.Repeat("a", 32) + " " + strings.Repeat("b", 32) + "\n"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Password = auth.NewSecret(password)
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			inv := h.invitation(0, 10, md5hex(image(10)))
			h.send(inv)
			reply, _ := h.recv(2 * time.Second)
			h.send(tt.msg(strings.TrimPrefix(reply, "AUTH ")))
			h.expectNoReply(h.udp, short)
			// The device went back to IDLE: the next invitation is answered.
			h.send(inv)
			if r, ok := h.recv(2 * time.Second); !ok || !strings.HasPrefix(r, "AUTH ") || r == reply {
				t.Fatalf("after the bad auth message: %q, %v", r, ok)
			}
		})
	}
}

func TestResentInvitationDuringWaitAuth(t *testing.T) {
	cfg := testConfig(espota.ESP32)
	cfg.Password = auth.NewSecret(password)
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	inv := h.invitation(0, 10, md5hex(image(10)))
	h.send(inv)
	first, _ := h.recv(2 * time.Second)
	h.send(inv) // parsed as an auth message: no reply, back to IDLE
	h.expectNoReply(h.udp, short)
	h.send(inv)
	second, ok := h.recv(2 * time.Second)
	if !ok || !strings.HasPrefix(second, "AUTH ") || second == first {
		t.Fatalf("third invitation got %q, %v (first %q)", second, ok, first)
	}
	// The old nonce is dead: answering it fails.
	h.authenticate(h.udp, first, sha256OfPass)
	h.expectReply("Authentication Failed")
}

func TestMD5Mismatch(t *testing.T) {
	tests := []struct {
		flavor espota.Flavor
		want   func(img []byte, sent string) string
	}{
		{espota.ESP32, func([]byte, string) string { return "MD5 Check Failed\r\n" }},
		{espota.ESP8266, func(img []byte, sent string) string {
			return "ERROR[7]: MD5 verification failed: expected: " + sent + ", calculated: " + md5hex(img) + "\n"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.flavor.String(), func(t *testing.T) {
			d := startDevice(t, testConfig(tt.flavor), nil)
			h := newHost(t, d.addr)
			img := image(5000)
			wrong := md5hex([]byte("something else"))
			h.send(h.invitation(0, len(img), wrong))
			h.expectReply("OK")
			got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			want := tt.want(img, wrong)
			digits, ok := strings.CutSuffix(got, want)
			if !ok || digits != concatCounts(d.progressCounts()) {
				t.Fatalf("stream %q, want counts then %q", got, want)
			}
			ev := d.waitEvent(t, espota.EventUploadFailed, time.Second)
			if !strings.Contains(ev.Message, "MD5") {
				t.Errorf("failure event %q", ev.Message)
			}
		})
	}
}

func TestBeginFailure(t *testing.T) {
	t.Run("esp32 no connect-back", func(t *testing.T) {
		u := &fakeUpdater{beginErr: espota.NewUpdateError(espota.ESP32, espota.ErrKindSize)}
		d := startDevice(t, testConfig(espota.ESP32), u)
		h := newHost(t, d.addr)
		h.send(h.invitation(0, 1<<30, md5hex(nil)))
		h.expectReply("OK") // ESP32 says OK before Update.begin
		if _, err := h.accept(300 * time.Millisecond); err == nil {
			t.Fatal("device connected back although Begin failed")
		}
		ev := d.waitEvent(t, espota.EventUploadFailed, time.Second)
		if !strings.Contains(ev.Message, "Bad Size Given") {
			t.Errorf("event %q", ev.Message)
		}
		if c := u.counts(); c != (counts{1, 0, 0}) {
			t.Errorf("calls %+v", c)
		}
	})
	t.Run("esp8266 ERR reply", func(t *testing.T) {
		u := &fakeUpdater{beginErr: espota.NewUpdateError(espota.ESP8266, espota.ErrKindSpace)}
		cfg := testConfig(espota.ESP8266)
		cfg.Password = auth.NewSecret(password)
		d := startDevice(t, cfg, u)
		h := newHost(t, d.addr)
		h.send(h.invitation(0, 1<<30, md5hex(nil)))
		reply, _ := h.recv(2 * time.Second)
		h.authenticate(h.udp, reply, md5OfAdmin)
		h.expectReply("ERR: ERROR[4]: Not Enough Space\n")
		if _, err := h.accept(short); err == nil {
			t.Fatal("device connected back although Begin failed")
		}
		d.waitEvent(t, espota.EventUploadFailed, time.Second)
	})
}

// The ESP32 answers OK before Update.begin; the ESP8266 only after it.
func TestOKVersusBeginOrder(t *testing.T) {
	for _, f := range []espota.Flavor{espota.ESP32, espota.ESP8266} {
		t.Run(f.String(), func(t *testing.T) {
			gate := make(chan struct{})
			u := &fakeUpdater{beginGate: gate}
			d := startDevice(t, testConfig(f), u)
			h := newHost(t, d.addr)
			img := image(100)
			h.send(h.invitation(0, len(img), md5hex(img)))
			if f == espota.ESP32 {
				h.expectReply("OK") // while Begin is still blocked
				close(gate)
			} else {
				h.expectNoReply(h.udp, short)
				close(gate)
				h.expectReply("OK")
			}
			got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
			checkSuccess(t, d, img, got, err)
		})
	}
}

func TestWriteFailure(t *testing.T) {
	tests := []struct {
		flavor espota.Flavor
		want   string
	}{
		{espota.ESP32, "Wrong Magic Byte\r\n"},
		{espota.ESP8266, "ERROR[10]: Magic byte is not 0xE9\n"},
	}
	for _, tt := range tests {
		t.Run(tt.flavor.String(), func(t *testing.T) {
			d := startDevice(t, testConfig(tt.flavor), nil)
			h := newHost(t, d.addr)
			img := image(4000)
			img[0] = 0x00
			c := h.startUpload(img)
			got, err := lockstep(c, img, 1024, 3*time.Second)
			// No count for the failing read, just the error text, then close.
			if got != tt.want {
				t.Fatalf("stream %q (err %v), want %q", got, err, tt.want)
			}
			d.waitEvent(t, espota.EventUploadFailed, time.Second)
			if c := d.u.counts(); c != (counts{1, 0, 0}) {
				t.Errorf("calls %+v: no End and no Abort after a Write error", c)
			}
		})
	}
}

func TestWriteNotEnoughSpaceWhenHostSendsTooMuch(t *testing.T) {
	d := startDevice(t, testConfig(espota.ESP32), nil)
	h := newHost(t, d.addr)
	img := image(1000)
	h.send(h.invitation(0, 500, md5hex(img[:500]))) // announces less than it sends
	h.expectReply("OK")
	got, _ := lockstep(h.mustAccept(), img, 1000, 3*time.Second)
	if got != "Not Enough Space\r\n" {
		t.Fatalf("stream %q", got)
	}
	if c := d.u.counts(); c != (counts{1, 0, 1}) {
		t.Errorf("calls %+v", c)
	}
}

func TestDisconnectFaultInWrite(t *testing.T) {
	u := &fakeUpdater{writeErr: func(total int, _ []byte) error {
		if total >= 2048 {
			return fmt.Errorf("power cut: %w", espota.ErrDisconnect)
		}
		return nil
	}}
	d := startDevice(t, testConfig(espota.ESP32), u)
	h := newHost(t, d.addr)
	img := image(5000)
	h.send(h.invitation(0, len(img), md5hex(img)))
	h.expectReply("OK")
	got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
	if got != concatCounts(d.progressCounts()) || got == "" {
		t.Fatalf("stream %q: want the counts before the drop and no text", got)
	}
	if err != nil && isTimeout(err) {
		t.Fatalf("connection left open: %v", err)
	}
	ev := d.waitEvent(t, espota.EventUploadFailed, time.Second)
	if !strings.Contains(ev.Message, "dropped") {
		t.Errorf("event %q", ev.Message)
	}
	if c := d.u.counts(); c != (counts{1, 0, 0}) {
		t.Errorf("calls %+v", c)
	}
}

// dropOnEnd turns End into a link drop.
type dropOnEnd struct{ *fakeUpdater }

func (d dropOnEnd) End(string) error {
	return fmt.Errorf("reboot mid-verify: %w", espota.ErrDisconnect)
}

func TestDisconnectOnEnd(t *testing.T) {
	u := &fakeUpdater{flavor: espota.ESP32}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := espota.NewServer(testConfig(espota.ESP32), dropOnEnd{u})
	go func() { _ = srv.Serve(ctx, pc) }()
	h := newHost(t, pc.LocalAddr().(*net.UDPAddr))
	img := image(3000)
	h.send(h.invitation(0, len(img), md5hex(img)))
	h.expectReply("OK")
	got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
	if strings.Trim(got, "0123456789") != "" || strings.Contains(got, "OK") {
		t.Fatalf("stream %q after a drop in End", got)
	}
	if err != nil && isTimeout(err) {
		t.Fatalf("connection left open: %v", err)
	}
}

func TestNoConnectBackFault(t *testing.T) {
	cfg := testConfig(espota.ESP32)
	cfg.NoConnectBack = true
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	h.send(h.invitation(0, 100, md5hex(image(100))))
	h.expectReply("OK")
	if _, err := h.accept(300 * time.Millisecond); err == nil {
		t.Fatal("device connected back despite NoConnectBack")
	}
	d.waitEvent(t, espota.EventUploadFailed, time.Second)
	if c := d.u.counts(); c != (counts{1, 0, 1}) {
		t.Errorf("calls %+v, want begin+abort", c)
	}
	// Still alive for the next try.
	h.send(h.invitation(0, 100, md5hex(image(100))))
	h.expectReply("OK")
}

func TestLoseFinalOKFault(t *testing.T) {
	for _, f := range []espota.Flavor{espota.ESP32, espota.ESP8266} {
		t.Run(f.String(), func(t *testing.T) {
			cfg := testConfig(f)
			cfg.LoseFinalOK = true
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			img := image(4000)
			h.send(h.invitation(0, len(img), md5hex(img)))
			h.expectReply("OK")
			got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			if got != concatCounts(d.progressCounts()) {
				t.Fatalf("stream %q, want only counts", got)
			}
			d.waitEvent(t, espota.EventUploadFinished, time.Second)
			if c := d.u.counts(); c != (counts{1, 1, 0}) || !bytes.Equal(d.u.bytes(), img) {
				t.Errorf("update not applied: %+v", c)
			}
		})
	}
}

// A host that streams without waiting sees the counts run together.
func TestCountsRunTogether(t *testing.T) {
	d := startDevice(t, testConfig(espota.ESP32), nil)
	h := newHost(t, d.addr)
	img := image(64 * 1024)
	c := h.startUpload(img)
	if _, err := c.Write(img); err != nil {
		t.Fatalf("write: %v", err)
	}
	var got bytes.Buffer
	if err := readAll(c, &got, 3*time.Second); err != nil {
		t.Fatalf("read: %v", err)
	}
	checkSuccess(t, d, img, got.String(), nil)
	for _, n := range d.progressCounts() {
		if n <= 0 || n > 1460 {
			t.Errorf("ESP32 count %d outside 1..1460", n)
		}
	}
	if len(d.progressCounts()) < len(img)/1460 {
		t.Errorf("%d counts for %d bytes", len(d.progressCounts()), len(img))
	}
}

func TestReceiveTimeout(t *testing.T) {
	t.Run("esp32 resends the last count 3 times then closes", func(t *testing.T) {
		d := startDevice(t, testConfig(espota.ESP32), nil)
		h := newHost(t, d.addr)
		img := image(5000)
		c := h.startUpload(img)
		if _, err := c.Write(img[:1024]); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := readAll(c, &got, 3*time.Second); err != nil {
			t.Fatalf("read: %v", err)
		}
		cs := d.progressCounts()
		last := strconv.Itoa(cs[len(cs)-1])
		if want := concatCounts(cs) + strings.Repeat(last, 3); got.String() != want {
			t.Fatalf("stream %q, want %q", got.String(), want)
		}
		ev := d.waitEvent(t, espota.EventUploadFailed, time.Second)
		if !strings.Contains(ev.Message, "timeout") {
			t.Errorf("event %q", ev.Message)
		}
		if c := d.u.counts(); c != (counts{1, 0, 1}) {
			t.Errorf("calls %+v", c)
		}
	})
	t.Run("esp32 nothing sent: closes after one timeout", func(t *testing.T) {
		d := startDevice(t, testConfig(espota.ESP32), nil)
		h := newHost(t, d.addr)
		h.send(h.invitation(0, 100, md5hex(image(100))))
		h.expectReply("OK")
		c := h.mustAccept()
		var got bytes.Buffer
		if err := readAll(c, &got, 3*time.Second); err != nil || got.Len() != 0 {
			t.Fatalf("got %q, %v", got.String(), err)
		}
		d.waitEvent(t, espota.EventUploadFailed, time.Second)
	})
	t.Run("esp8266 waits while connected, no resends", func(t *testing.T) {
		d := startDevice(t, testConfig(espota.ESP8266), nil)
		h := newHost(t, d.addr)
		img := image(5000)
		c := h.startUpload(img)
		if _, err := c.Write(img[:1024]); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		err := readAll(c, &got, 500*time.Millisecond) // 5 × RecvTimeout
		if !isTimeout(err) {
			t.Fatalf("connection should still be open, got %v", err)
		}
		if got.String() != concatCounts(d.progressCounts()) {
			t.Fatalf("stream %q: resent counts?", got.String())
		}
		// The rest still goes through.
		got.Reset()
		if _, err := c.Write(img[1024:]); err != nil {
			t.Fatal(err)
		}
		if err := readAll(c, &got, 3*time.Second); err != nil || !strings.HasSuffix(got.String(), "OK") {
			t.Fatalf("after the stall: %q, %v", got.String(), err)
		}
		d.waitEvent(t, espota.EventUploadFinished, time.Second)
	})
	t.Run("host closes early", func(t *testing.T) {
		d := startDevice(t, testConfig(espota.ESP8266), nil)
		h := newHost(t, d.addr)
		img := image(5000)
		c := h.startUpload(img)
		if _, err := c.Write(img[:1000]); err != nil {
			t.Fatal(err)
		}
		c.Close()
		ev := d.waitEvent(t, espota.EventUploadFailed, 2*time.Second)
		if !strings.Contains(ev.Message, "closed") {
			t.Errorf("event %q", ev.Message)
		}
		if c := d.u.counts(); c != (counts{1, 0, 1}) {
			t.Errorf("calls %+v", c)
		}
	})
}

// ESP8266 sends every reply to the invitation's source; ESP32 answers the
// datagram it is replying to.
func TestReplyAddressing(t *testing.T) {
	t.Run("esp8266 replies go to the invitation socket", func(t *testing.T) {
		cfg := testConfig(espota.ESP8266)
		cfg.Password = auth.NewSecret(password)
		d := startDevice(t, cfg, nil)
		h := newHost(t, d.addr)
		other := newUDP(t, "127.0.0.1")
		inv := h.invitation(0, 100, md5hex(image(100)))

		h.send(inv)
		reply, _ := h.recv(2 * time.Second)
		h.authenticate(other, reply, md5hex([]byte("wrong")))
		h.expectReply("Authentication Failed")
		h.expectNoReply(other, short)

		// A correct auth from the other socket: OK still goes to the first.
		h.send(inv)
		reply, _ = h.recv(2 * time.Second)
		h.authenticate(other, reply, md5OfAdmin)
		h.expectReply("OK")
		h.expectNoReply(other, 50*time.Millisecond)
		img := image(100)
		got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
		checkSuccess(t, d, img, got, err)
	})
	t.Run("esp32 replies go to the auth socket", func(t *testing.T) {
		cfg := testConfig(espota.ESP32)
		cfg.Password = auth.NewSecret(password)
		d := startDevice(t, cfg, nil)
		h := newHost(t, d.addr)
		other := newUDP(t, "127.0.0.1")
		inv := h.invitation(0, 100, md5hex(image(100)))

		h.send(inv)
		reply, _ := h.recv(2 * time.Second)
		h.authenticate(other, reply, sha256hex([]byte("wrong")))
		if r, ok := h.recvOn(other, 2*time.Second); !ok || r != "Authentication Failed" {
			t.Fatalf("auth socket got %q, %v", r, ok)
		}
		h.expectNoReply(h.udp, short)

		h.send(inv)
		reply, _ = h.recv(2 * time.Second)
		h.authenticate(other, reply, sha256OfPass)
		if r, ok := h.recvOn(other, 2*time.Second); !ok || r != "OK" {
			t.Fatalf("auth socket got %q, %v", r, ok)
		}
		img := image(100)
		got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
		checkSuccess(t, d, img, got, err)
	})
}

// The connect-back goes to the IP the answered datagram came from, from
// LocalIP. Needs 127.0.0.2/3, which Linux loopback has without setup.
func TestConnectBackAddresses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.2 and 127.0.0.3 on loopback (Linux only)")
	}
	cfg := testConfig(espota.ESP32)
	cfg.Password = auth.NewSecret(password)
	cfg.LocalIP = net.ParseIP("127.0.0.3")
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	// Listener on 127.0.0.2 with the same port as h's listener is not
	// guaranteed free; use its own port and invite with it.
	ln2, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	}
	defer ln2.Close()
	h.ln.Close()
	h.ln = ln2
	authSock := newUDP(t, "127.0.0.2")
	img := image(200)
	h.send(h.invitation(0, len(img), md5hex(img))) // from 127.0.0.1
	reply, _ := h.recv(2 * time.Second)
	h.authenticate(authSock, reply, sha256OfPass) // from 127.0.0.2
	if r, ok := h.recvOn(authSock, 2*time.Second); !ok || r != "OK" {
		t.Fatalf("got %q, %v", r, ok)
	}
	c := h.mustAccept()
	if ip := c.RemoteAddr().(*net.TCPAddr).IP; !ip.Equal(net.ParseIP("127.0.0.3")) {
		t.Errorf("device dialled from %v, want LocalIP 127.0.0.3", ip)
	}
	got, err := lockstep(c, img, 1024, 3*time.Second)
	checkSuccess(t, d, img, got, err)
}

func TestBusyDeviceIgnoresInvitations(t *testing.T) {
	for _, f := range []espota.Flavor{espota.ESP32, espota.ESP8266} {
		t.Run(f.String(), func(t *testing.T) {
			cfg := testConfig(f)
			cfg.RecvTimeout = 2 * time.Second // no resends while we probe
			d := startDevice(t, cfg, nil)
			h := newHost(t, d.addr)
			other := newHost(t, d.addr)
			img := image(3000)
			c := h.startUpload(img)
			if _, err := c.Write(img[:1000]); err != nil {
				t.Fatal(err)
			}
			other.send(other.invitation(0, 10, md5hex(image(10))))
			other.expectNoReply(other.udp, short)
			var got bytes.Buffer
			if _, err := c.Write(img[1000:]); err != nil {
				t.Fatal(err)
			}
			if err := readAll(c, &got, 3*time.Second); err != nil {
				t.Fatal(err)
			}
			checkSuccess(t, d, img, got.String(), nil)
			// ESP32 queued it, ESP8266 dropped it; after the "reboot" neither answers.
			other.expectNoReply(other.udp, short)
			// And the device is idle again.
			other.send(other.invitation(0, 10, md5hex(image(10))))
			other.expectReply("OK")
		})
	}
}

// After a failed update the ESP32 processes the datagrams that queued up
// while it was busy, as the device does on its next handle().
func TestESP32QueuedInvitationAnsweredAfterFailure(t *testing.T) {
	d := startDevice(t, testConfig(espota.ESP32), nil)
	h := newHost(t, d.addr)
	other := newHost(t, d.addr)
	img := image(3000)
	c := h.startUpload(img)
	other.send(other.invitation(0, 10, md5hex(image(10))))
	other.expectNoReply(other.udp, 50*time.Millisecond)
	c.Close() // the update fails
	d.waitEvent(t, espota.EventUploadFailed, 2*time.Second)
	other.expectReply("OK")
}

func TestLatency(t *testing.T) {
	const lat = 80 * time.Millisecond
	cfg := testConfig(espota.ESP32)
	cfg.Latency = lat
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	img := image(3000)
	start := time.Now()
	h.send(h.invitation(0, len(img), md5hex(img)))
	h.expectReply("OK")
	if el := time.Since(start); el < lat {
		t.Errorf("UDP reply after %v, want ≥ %v", el, lat)
	}
	c := h.mustAccept()
	start = time.Now()
	if _, err := c.Write(img[:1000]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "1000" {
		t.Fatalf("count %q, %v", buf[:n], err)
	}
	if el := time.Since(start); el < lat {
		t.Errorf("count after %v, want ≥ %v", el, lat)
	}
	got, err := lockstep(c, img[1000:], 1024, 3*time.Second)
	if err != nil || !strings.HasSuffix(got, "OK") {
		t.Fatalf("rest: %q, %v", got, err)
	}
	d.waitEvent(t, espota.EventUploadFinished, time.Second)
}

func TestServeStopsOnCancelMidTransfer(t *testing.T) {
	u := &fakeUpdater{flavor: espota.ESP8266}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	srv := espota.NewServer(testConfig(espota.ESP8266), u)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc) }()
	h := newHost(t, pc.LocalAddr().(*net.UDPAddr))
	img := image(3000)
	c := h.startUpload(img)
	if _, err := c.Write(img[:100]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := srv.Serve(ctx, pc); err == nil {
		t.Error("a second concurrent Serve should fail")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if c := u.counts(); c != (counts{1, 0, 1}) {
		t.Errorf("calls %+v, want the update aborted", c)
	}
	var got bytes.Buffer
	if err := readAll(c, &got, 2*time.Second); isTimeout(err) {
		t.Error("connection left open after Serve stopped")
	}
}

func TestServeStopsWhenConnClosed(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := espota.NewServer(espota.Config{}, &fakeUpdater{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), pc) }()
	time.Sleep(20 * time.Millisecond)
	pc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not stop")
	}
	if err := espota.NewServer(espota.Config{}, nil).Serve(context.Background(), pc); err == nil {
		t.Error("nil Updater accepted")
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsHoldNoSecrets(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(espota.ESP32)
	cfg.Password = auth.NewSecret("s3cret-pw")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	img := image(500)
	h.send(h.invitation(0, len(img), md5hex(img)))
	reply, _ := h.recv(2 * time.Second)
	h.authenticate(h.udp, reply, sha256hex([]byte("s3cret-pw")))
	h.expectReply("OK")
	got, err := lockstep(h.mustAccept(), img, 1024, 3*time.Second)
	checkSuccess(t, d, img, got, err)
	out := logs.String()
	if out == "" {
		t.Fatal("no logs at debug level")
	}
	for _, secret := range []string{"s3cret-pw", sha256hex([]byte("s3cret-pw"))} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret:\n%s", out)
		}
	}
}

func TestESP8266FinalOKDelay(t *testing.T) {
	cfg := testConfig(espota.ESP8266)
	cfg.DelayScale = 0.2 // 200 ms before the OK
	d := startDevice(t, cfg, nil)
	h := newHost(t, d.addr)
	img := image(1000)
	c := h.startUpload(img)
	if _, err := c.Write(img); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "1000" {
		t.Fatalf("first read %q, %v: the count must not be combined with OK", buf[:n], err)
	}
	start := time.Now()
	var rest bytes.Buffer
	if err := readAll(c, &rest, 3*time.Second); err != nil || rest.String() != "OK" {
		t.Fatalf("then %q, %v", rest.String(), err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("OK and close came %v after the count, want ≥ the scaled 2 × 200 ms", el)
	}
	d.waitEvent(t, espota.EventUploadFinished, time.Second)
}

func TestErrorsHelpers(t *testing.T) {
	e := espota.NewUpdateError(espota.ESP32, espota.ErrKindWrite)
	if e.Error() != "Flash Write Failed" || e.Code != 1 {
		t.Errorf("%+v", e)
	}
	var ue *espota.UpdateError
	if !errors.As(fmt.Errorf("x: %w", e), &ue) {
		t.Error("UpdateError not found through wrapping")
	}
	if espota.EventUploadFailed.String() != "upload_failed" || espota.EventKind(99).String() == "" {
		t.Error("event kind names")
	}
}
