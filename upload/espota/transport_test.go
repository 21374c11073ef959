package espota

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// Helpers are prefixed espota so they cannot clash with the HTTP
// transport's tests in this package.

const espotaTestPassword = "s3cret-canary"

func espotaTarget(d *sim.Device) upload.Target {
	ap := netip.MustParseAddrPort(d.OTAAddr())
	return upload.Target{Name: d.Name(), Host: ap.Addr().String(), Port: int(ap.Port()), Protocol: upload.Espota}
}

// espotaFast is a transport with test-sized timeouts.
func espotaFast() *Transport {
	return &Transport{ConnectTimeout: 2 * time.Second, AcceptTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second, AuthTimeout: 3 * time.Second}
}

// espotaEvents collects the events of one Send.
type espotaEvents struct {
	mu sync.Mutex
	ev []upload.Event
}

func (e *espotaEvents) add(ev upload.Event) { e.mu.Lock(); e.ev = append(e.ev, ev); e.mu.Unlock() }

func (e *espotaEvents) all() []upload.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]upload.Event(nil), e.ev...)
}

func (e *espotaEvents) phases() []upload.Phase {
	var out []upload.Phase
	for _, ev := range e.all() {
		if len(out) == 0 || out[len(out)-1] != ev.Phase {
			out = append(out, ev.Phase)
		}
	}
	return out
}

func espotaSend(t testing.TB, tr *Transport, tg upload.Target, fw *upload.Firmware, password string) (*espotaEvents, error) {
	t.Helper()
	ev := &espotaEvents{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := tr.Send(ctx, tg, fw, upload.Credentials{Password: auth.NewSecret(password)}, ev.add)
	if err != nil {
		var de *upload.DeviceError
		if !errors.As(err, &de) {
			t.Fatalf("Send returned %T %v, want a *DeviceError", err, err)
		}
	}
	espotaNoSecret(t, err, ev)
	return ev, err
}

// espotaNoSecret fails when the password shows in an error or an event.
func espotaNoSecret(t testing.TB, err error, ev *espotaEvents) {
	t.Helper()
	if err != nil && strings.Contains(fmt.Sprintf("%v %+v", err, err), espotaTestPassword) {
		t.Errorf("the password appears in the error: %v", err)
	}
	for _, e := range ev.all() {
		if strings.Contains(fmt.Sprintf("%+v", e), espotaTestPassword) {
			t.Errorf("the password appears in an event: %+v", e)
		}
	}
}

func espotaWantClass(t testing.TB, err error, want upload.Class) *upload.DeviceError {
	t.Helper()
	var de *upload.DeviceError
	if !errors.As(err, &de) {
		t.Fatalf("got %v, want a %s failure", err, want)
	}
	if de.Class != want {
		t.Fatalf("class %s (%v), want %s", de.Class, de, want)
	}
	if de.Reason == "" {
		t.Errorf("no reason: %+v", de)
	}
	return de
}

func espotaWaitVersion(t testing.TB, d *sim.Device, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.WaitVersion(ctx, v); err != nil {
		t.Fatal(err)
	}
}

func espotaRecords(d *sim.Device, outcome string) int {
	n := 0
	for _, u := range d.State().Uploads {
		if u.Outcome == outcome {
			n++
		}
	}
	return n
}

func espotaWaitRecords(t testing.TB, d *sim.Device, n int) []sim.UploadRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.WaitState(ctx, func(s sim.State) bool { return len(s.Uploads) >= n })
	if err != nil {
		t.Fatalf("wait for %d upload records: %v", n, err)
	}
	return st.Uploads
}

func TestEspotaUploadPersonalities(t *testing.T) {
	for _, c := range []struct {
		name     string
		p        sim.Personality
		core     string
		password string
		auth     string // expected auth message, "" = none
	}{
		{"arduino no auth", sim.Arduino, "", "", ""},
		{"arduino PBKDF2", sim.Arduino, "", espotaTestPassword, "PBKDF2-HMAC-SHA256"},
		{"arduino 3.3.0 MD5", sim.Arduino, "3.3.0", espotaTestPassword, "MD5"},
		{"esp8266 no auth", sim.ESP8266, "", "", ""},
		{"esp8266 MD5", sim.ESP8266, "", espotaTestPassword, "MD5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startSim(t, sim.Config{Personality: c.p, Core: c.core, Password: auth.NewSecret(c.password)})
			fw := simImage(t, "1.0.1", 100<<10)
			ev, err := espotaSend(t, espotaFast(), espotaTarget(d), fw, c.password)
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			espotaWaitVersion(t, d, "1.0.1")
			if n := espotaRecords(d, "ok"); n != 1 {
				t.Errorf("%d accepted uploads on the device, want 1", n)
			}
			var authMsg string
			var last upload.Event
			var done int64
			for _, e := range ev.all() {
				if e.Phase == upload.PhaseAuth {
					authMsg = e.Message
				}
				if e.Done < done || (e.Total != 0 && e.Done > e.Total) {
					t.Errorf("progress went from %d to %d of %d", done, e.Done, e.Total)
				}
				done = e.Done
				last = e
			}
			if c.auth == "" && authMsg != "" || c.auth != "" && !strings.Contains(authMsg, "("+c.auth+")") {
				t.Errorf("auth event %q, want %q", authMsg, c.auth)
			}
			if last.Phase != upload.PhaseFinishing || last.Done != fw.Size() || last.Total != fw.Size() {
				t.Errorf("last event %+v, want finishing at %d", last, fw.Size())
			}
			want := []upload.Phase{upload.PhaseConnecting, upload.PhaseErasing}
			if c.auth != "" {
				want = []upload.Phase{upload.PhaseConnecting, upload.PhaseAuth, upload.PhaseConnecting, upload.PhaseErasing}
			}
			if got := ev.phases(); len(got) < len(want) || fmt.Sprint(got[:len(want)]) != fmt.Sprint(want) {
				t.Errorf("phases %v, want them to start with %v", got, want)
			}
		})
	}
}

// A wrong password is one auth attempt: on PBKDF2 devices the SHA-256
// password hash, a fresh invitation, then the MD5 password hash (two
// failures on the device), on MD5 devices one failure. No retry, nothing
// uploaded, no secret in the error.
func TestEspotaWrongPassword(t *testing.T) {
	for _, c := range []struct {
		name     string
		p        sim.Personality
		core     string
		failures int
	}{
		{"arduino PBKDF2", sim.Arduino, "", 2},
		{"arduino MD5", sim.Arduino, "3.3.0", 1},
		{"esp8266", sim.ESP8266, "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startSim(t, sim.Config{Personality: c.p, Core: c.core, Password: auth.NewSecret("the-right-one")})
			_, err := espotaSend(t, espotaFast(), espotaTarget(d), simImage(t, "1.0.1", 0), espotaTestPassword)
			de := espotaWantClass(t, err, upload.ClassAuth)
			if de.Words != "Authentication Failed" {
				t.Errorf("words %q", de.Words)
			}
			if upload.ClassAuth.Retries(3) != 0 {
				t.Error("auth failures must not be retried")
			}
			recs := espotaWaitRecords(t, d, c.failures)
			time.Sleep(100 * time.Millisecond) // nothing more may follow
			if n := espotaRecords(d, "auth_failed"); n != c.failures || len(d.State().Uploads) != c.failures {
				t.Errorf("device saw %d auth failures (%+v), want %d and nothing else", n, recs, c.failures)
			}
			if v := d.State().Version; v != "1.0.0" {
				t.Errorf("version %s after a refused password", v)
			}
		})
	}
}

// Without a password for a device that asks for one: refused locally, and
// the device is not left waiting for auth (which would swallow the next
// invitation).
func TestEspotaMissingPassword(t *testing.T) {
	d := startSim(t, sim.Config{Personality: sim.Arduino, Password: auth.NewSecret(espotaTestPassword)})
	tr := espotaFast()
	_, err := espotaSend(t, tr, espotaTarget(d), simImage(t, "1.0.1", 0), "")
	if de := espotaWantClass(t, err, upload.ClassAuth); !strings.Contains(de.Reason, "--password") {
		t.Errorf("reason %q should say what to pass", de.Reason)
	}
	tr.InviteTries, tr.ConnectTimeout = 1, time.Second // a swallowed invitation would fail now
	if _, err := espotaSend(t, tr, espotaTarget(d), simImage(t, "1.0.1", 0), espotaTestPassword); err != nil {
		t.Fatalf("the next upload: %v", err)
	}
	espotaWaitVersion(t, d, "1.0.1")
}

func TestEspotaFaults(t *testing.T) {
	big := simImage(t, "1.0.1", 200<<10)
	for _, c := range []struct {
		name    string
		p       sim.Personality
		fault   string
		class   upload.Class
		words   string
		applied bool // the device runs the new image afterwards
		check   func(t *testing.T, de *upload.DeviceError)
	}{
		{name: "no-connect-back", p: sim.Arduino, fault: "no-connect-back", class: upload.ClassNoConnectBack,
			check: func(t *testing.T, de *upload.DeviceError) {
				for _, w := range []string{"never connected back to 127.0.0.1:", "firewall", "NAT/WSL/VPN", "1.25 MiB"} {
					if !strings.Contains(de.Reason, w) {
						t.Errorf("reason %q lacks %q", de.Reason, w)
					}
				}
			}},
		{name: "lose-ok", p: sim.Arduino, fault: "lose-ok", class: upload.ClassNetwork, applied: true,
			check: func(t *testing.T, de *upload.DeviceError) {
				if !errors.Is(de, ErrNoOK) || de.Taken != big.Size() {
					t.Errorf("want ErrNoOK with all %d bytes taken: %+v", big.Size(), de)
				}
			}},
		{name: "esp8266 lose-ok", p: sim.ESP8266, fault: "lose-ok", class: upload.ClassNetwork, applied: true,
			check: func(t *testing.T, de *upload.DeviceError) {
				if !errors.Is(de, ErrNoOK) {
					t.Errorf("want ErrNoOK: %+v", de)
				}
			}},
		{name: "drop", p: sim.Arduino, fault: "drop@50%", class: upload.ClassNetwork,
			check: func(t *testing.T, de *upload.DeviceError) {
				if errors.Is(de, ErrNoOK) || de.Taken >= big.Size() {
					t.Errorf("a drop at 50%% is not a lost OK: %+v", de)
				}
			}},
		{name: "esp8266 drop", p: sim.ESP8266, fault: "drop@30%", class: upload.ClassNetwork},
		{name: "stall", p: sim.Arduino, fault: "stall@50%:20s", class: upload.ClassTimeout,
			check: func(t *testing.T, de *upload.DeviceError) {
				// Taken is what the device's TCP stack acknowledged: with
				// lwIP's 5.7 KB window near the stall point, with a big
				// kernel buffer possibly all of it.
				if de.Taken == 0 || !strings.Contains(de.Reason, "idle-timeout") {
					t.Errorf("%+v", de)
				}
			}},
		{name: "esp8266 stall", p: sim.ESP8266, fault: "stall@10%:20s", class: upload.ClassTimeout},
		{name: "error early", p: sim.Arduino, fault: "error@2%", class: upload.ClassWriteFailed, words: "Flash Write Failed"},
		{name: "esp8266 error early", p: sim.ESP8266, fault: "error@2%", class: upload.ClassWriteFailed, words: "ERROR[1]: Flash Write Failed"},
		{name: "power-loss", p: sim.Arduino, fault: "power-loss@40%", class: upload.ClassNetwork},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := sim.ParseFault(c.fault)
			if err != nil {
				t.Fatal(err)
			}
			d := startSim(t, sim.Config{Personality: c.p, Faults: []sim.Fault{f}})
			tr := espotaFast()
			tr.AcceptTimeout = time.Second
			tr.IdleTimeout = time.Second
			start := time.Now()
			_, err = espotaSend(t, tr, espotaTarget(d), big, "")
			de := espotaWantClass(t, err, c.class)
			if de.Words != c.words {
				t.Errorf("words %q, want %q", de.Words, c.words)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("took %v", el)
			}
			if c.check != nil {
				c.check(t, de)
			}
			if c.applied {
				espotaWaitVersion(t, d, "1.0.1")
			} else if v := d.State().Version; v != "1.0.0" {
				t.Errorf("device runs %s", v)
			}
		})
	}
}

// The device's own words for images it refuses, classified as rejections.
func TestEspotaRejectedImages(t *testing.T) {
	good := simImage(t, "1.0.1", 0)
	notApp := append([]byte{0x00}, good.Data[1:]...)
	otherChip, err := sim.Image("esp32c3", "ots-fw-main", "1.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		p     sim.Personality
		data  []byte
		words string
	}{
		// arduino-esp32's Updater checks the first byte once its 4096-byte
		// buffer is full; newer cores (and the stricter sim) try to decrypt
		// an image that does not start with 0xE9 and answer Decryption
		// error, older ones Wrong Magic Byte.
		{"esp32 magic", sim.Arduino, notApp, "Decryption error|Wrong Magic Byte"},
		{"esp8266 magic", sim.ESP8266, notApp, "ERROR[10]: Magic byte is not 0xE9"},
		{"esp32 wrong chip", sim.Arduino, otherChip, "Could Not Activate The Firmware"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startSim(t, sim.Config{Personality: c.p})
			_, err := espotaSend(t, espotaFast(), espotaTarget(d), upload.NewFirmware("x.bin", c.data, false), "")
			de := espotaWantClass(t, err, upload.ClassRejected)
			if !slices.Contains(strings.Split(c.words, "|"), de.Words) {
				t.Errorf("words %q, want %q", de.Words, c.words)
			}
			if upload.ClassRejected.Retries(3) != 0 {
				t.Error("rejections must not be retried")
			}
		})
	}
}

// An image larger than the slot: ESP32's Update.begin fails after the UDP
// OK, so the device never connects back; ESP8266 answers ERR over UDP.
func TestEspotaTooLarge(t *testing.T) {
	fw := simImage(t, "1.0.1", 300<<10)
	t.Run("esp32", func(t *testing.T) {
		d := startSim(t, sim.Config{Personality: sim.Arduino, SlotSize: 256 << 10})
		tr := espotaFast()
		tr.AcceptTimeout = 500 * time.Millisecond
		_, err := espotaSend(t, tr, espotaTarget(d), fw, "")
		de := espotaWantClass(t, err, upload.ClassNoConnectBack)
		if !strings.Contains(de.Reason, "app slot") {
			t.Errorf("reason %q", de.Reason)
		}
	})
	t.Run("esp8266", func(t *testing.T) {
		d := startSim(t, sim.Config{Personality: sim.ESP8266, SlotSize: 256 << 10})
		_, err := espotaSend(t, espotaFast(), espotaTarget(d), fw, "")
		de := espotaWantClass(t, err, upload.ClassRejected)
		if !strings.Contains(de.Words, "Not Enough Space") {
			t.Errorf("words %q", de.Words)
		}
	})
}

func TestEspotaUnreachable(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		tr := &Transport{ConnectTimeout: 300 * time.Millisecond, InviteTries: 3}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		_, err = espotaSend(t, tr, upload.Target{Host: "127.0.0.1", Port: port}, simImage(t, "1.0.1", 0), "")
		de := espotaWantClass(t, err, upload.ClassUnreachable)
		if !strings.Contains(de.Reason, "3 espota invitations") {
			t.Errorf("reason %q", de.Reason)
		}
	})
	t.Run("closed port", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		// espota.py's 10 invitations over a long wait (the drop-in's -t 10
		// gives 25 s a try): two port-unreachable answers in a row end it.
		tr := &Transport{ConnectTimeout: 30 * time.Second, InviteTries: 10}
		start := time.Now()
		_, err = espotaSend(t, tr, upload.Target{Host: "127.0.0.1", Port: port}, simImage(t, "1.0.1", 0), "")
		// ICMP port unreachable: nothing listens (retried once, later).
		de := espotaWantClass(t, err, upload.ClassNothingListens)
		if !strings.Contains(de.Reason, "UDP port unreachable") {
			t.Errorf("reason %q", de.Reason)
		}
		if took := time.Since(start); took >= 15*time.Second {
			t.Errorf("took %v: a port nothing listens on must not cost the whole invitation wait", took)
		}
	})
}

// The invitation's bytes, read by a raw UDP socket standing in for the
// device: "<cmd> <port> <size> <md5>\n", command 100 for a filesystem.
func TestEspotaInvitationBytes(t *testing.T) {
	for _, fs := range []bool{false, true} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ln, err := NewListener("127.0.0.1", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fw := upload.NewFirmware("littlefs.bin", []byte("a filesystem image"), fs)
		tr := &Transport{Listener: ln, ConnectTimeout: 200 * time.Millisecond, InviteTries: 2}
		go func() {
			_ = tr.Send(context.Background(), upload.Target{Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port}, fw, upload.Credentials{}, nil)
		}()
		buf := make([]byte, 256)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		cmd := 0
		if fs {
			cmd = 100
		}
		want := fmt.Sprintf("%d %d %d %s\n", cmd, ln.Port(), len(fw.Data), fw.MD5)
		if got := string(buf[:n]); got != want {
			t.Errorf("invitation %q, want %q", got, want)
		}
	}
}

// A filesystem image goes with command 100. arduino-esp32 writes it to the
// spiffs partition; a device without one (Update.begin fails) never
// connects back, and ESP8266 says so over UDP.
func TestEspotaFilesystem(t *testing.T) {
	fs := upload.NewFirmware("littlefs.bin", make([]byte, 48<<10), true)
	t.Run("esp32", func(t *testing.T) {
		d := startSim(t, sim.Config{Personality: sim.Arduino})
		tr := espotaFast()
		tr.AcceptTimeout = 500 * time.Millisecond
		_, err := espotaSend(t, tr, espotaTarget(d), fs, "")
		recs := espotaWaitRecords(t, d, 1)
		switch {
		case err == nil:
			t.Log("written to the spiffs partition")
			if recs[0].Outcome != "ok" || recs[0].Size != fs.Size() {
				t.Errorf("accepted, but the device recorded %+v", recs[0])
			}
		default:
			// A simulated device without a spiffs partition.
			t.Log("refused: no spiffs partition")
			espotaWantClass(t, err, upload.ClassNoConnectBack)
			if !strings.Contains(recs[0].Reason, "spiffs") {
				t.Errorf("the device refused for another reason than the filesystem: %+v", recs[0])
			}
		}
		if v := d.State().Version; v != "1.0.0" {
			t.Errorf("a filesystem upload changed the app to %s", v)
		}
	})
	t.Run("esp8266", func(t *testing.T) {
		d := startSim(t, sim.Config{Personality: sim.ESP8266})
		_, err := espotaSend(t, espotaFast(), espotaTarget(d), fs, "")
		if err != nil {
			de := espotaWantClass(t, err, upload.ClassRejected)
			if !strings.HasPrefix(de.Words, "ERR: ") || !strings.Contains(de.Reason, "filesystem") {
				t.Errorf("words %q, reason %q", de.Words, de.Reason)
			}
		}
	})
}

// Several devices at once through one listener: one TCP port, each
// connect-back handed to its own upload by source address; two devices on
// the same IP (different ports) take turns.
func TestEspotaParallelSharedListener(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
	tm := sim.FastTiming()
	fleet, err := sim.StartFleet(context.Background(), sim.FleetConfig{
		N: 6, BaseIP: netip.MustParseAddr("127.77.0.2"), WebPort: -1, Seed: 7,
		Template: sim.Config{Personality: sim.Arduino, Timing: &tm},
		Configure: func(i int, c *sim.Config) {
			switch i % 3 {
			case 1:
				c.Password = auth.NewSecret(espotaTestPassword)
			case 2:
				c.Personality = sim.ESP8266
				c.Password = auth.NewSecret(espotaTestPassword)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	// Two more on 127.0.0.1, sharing an IP.
	devs := append([]*sim.Device(nil), fleet.Devices()...)
	devs = append(devs, startSim(t, sim.Config{Personality: sim.Arduino}), startSim(t, sim.Config{Personality: sim.Arduino, Name: "twin"}))

	ln, err := NewListener("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tr := espotaFast()
	tr.Listener = ln
	fw := simImage(t, "1.0.1", 200<<10)
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = espotaSend(t, tr, espotaTarget(d), fw, espotaTestPassword)
		}()
	}
	wg.Wait()
	for i, d := range devs {
		if errs[i] != nil {
			t.Errorf("%s: %v", d.Name(), errs[i])
			continue
		}
		espotaWaitVersion(t, d, "1.0.1")
	}
	ln.mu.Lock()
	n := len(ln.lns)
	ln.mu.Unlock()
	if n != 1 || ln.Port() == 0 {
		t.Errorf("%d sockets on port %d, want one listener for the fleet", n, ln.Port())
	}
}

// A connection from an address nobody waits for is closed, and does not
// disturb the upload that waits.
func TestEspotaListenerStrangers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
	ln, err := NewListener("127.0.0.1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A fleet: another device was served before.
	other, err := ln.reserve(context.Background(), netip.MustParseAddr("127.0.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	other.release()
	turn, err := ln.reserve(context.Background(), netip.MustParseAddr("127.0.0.9"))
	if err != nil {
		t.Fatal(err)
	}
	defer turn.release()
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(ln.Port()))
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.8")}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("a stranger's connection stayed open: %v", err)
	}
	c.Close()
	if r := turn.refused(); len(r) != 1 || r[0] != "127.0.0.8" {
		t.Errorf("refused %v", r)
	}
	s := &espotaSession{cfg: &Transport{AcceptTimeout: time.Second}, fw: upload.NewFirmware("fw.bin", []byte{0xE9}, false),
		local: turn.local, device: netip.MustParseAddrPort("127.0.0.9:3232")}
	de := espotaWantClass(t, s.noConnectBack(errNoConnectBack, turn.refused()), upload.ClassNoConnectBack)
	if !strings.Contains(de.Reason, "came from 127.0.0.8, not from 127.0.0.9") {
		t.Errorf("reason %q", de.Reason)
	}
	go func() {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}).Dial("tcp", addr)
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	got, err := turn.accept(context.Background(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ap := netip.MustParseAddrPort(got.RemoteAddr().String()); ap.Addr() != netip.MustParseAddr("127.0.0.9") {
		t.Errorf("handed %s", ap)
	}
	got.Close()
}

func TestEspotaCancel(t *testing.T) {
	f, _ := sim.ParseFault("stall@20%:30s")
	d := startSim(t, sim.Config{Personality: sim.ESP8266, Faults: []sim.Fault{f}})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	err := espotaFast().Send(ctx, espotaTarget(d), simImage(t, "1.0.1", 200<<10), upload.Credentials{}, nil)
	// The stall lasts 30 s and the idle rule ends the upload after 3 s
	// with a timeout, not context.Canceled: the error proves the cancel
	// ended it, and the bound, loose enough for a loaded CI machine,
	// only catches a cancel that waits out the stall.
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("cancel took %v", el)
	}
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
}

// A write failure in the middle of the image: the device prints the error
// and closes with unread data queued, so the close is an RST right behind
// the words. Read concurrently they usually survive; when the RST overtakes
// them (on loopback, about half the time) the failure is a reset, never a
// success and never a lost OK.
func TestEspotaMidUploadError(t *testing.T) {
	fw := simImage(t, "1.0.1", 200<<10)
	f, err := sim.ParseFault("error@30%")
	if err != nil {
		t.Fatal(err)
	}
	words := 0
	for i := 0; i < 6; i++ {
		d := startSim(t, sim.Config{Personality: sim.Arduino, Faults: []sim.Fault{f}})
		_, err := espotaSend(t, espotaFast(), espotaTarget(d), fw, "")
		var de *upload.DeviceError
		if !errors.As(err, &de) {
			t.Fatalf("got %v", err)
		}
		switch {
		case de.Class == upload.ClassWriteFailed && de.Words == "Flash Write Failed":
			words++
		case de.Class == upload.ClassNetwork && de.Words == "" && strings.Contains(de.Reason, "reset") && !errors.Is(de, ErrNoOK):
		default:
			t.Errorf("try %d: %s %q %q", i, de.Class, de.Words, de.Reason)
		}
		if de.Taken >= fw.Size() {
			t.Errorf("taken %d of %d", de.Taken, fw.Size())
		}
		d.Close()
	}
	t.Logf("the words survived the reset %d of 6 times", words)
}

// One listener serves every espota upload of a fleet; the runner closes it
// at the end.
func ExampleListener() {
	ln, err := NewListener("", 0, nil) // --host-ip, --host-port
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	tr := &Transport{Listener: ln, IdleTimeout: 30 * time.Second}
	fw := upload.NewFirmware("firmware.bin", []byte{0xE9 /* … */}, false)
	targets := []upload.Target{{Host: "127.0.0.2"}, {Host: "127.0.0.3", Port: 8266}}
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := tr.Send(context.Background(), tg, fw, upload.Credentials{Password: auth.NewSecret("…")}, func(e upload.Event) {})
			switch {
			case err == nil:
				fmt.Println(tg.Host, "accepted")
			case errors.Is(err, ErrNoOK):
				// All bytes taken, no OK: only the version after the reboot tells.
				fmt.Println(tg.Host, "no OK:", err)
			default:
				fmt.Println(tg.Host, err)
			}
		}()
	}
	wg.Wait()
}

// One device behind NAT: its connect-back comes from another address, and
// is taken all the same when the listener serves that device alone.
func TestEspotaConnectBackThroughNAT(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
	fw := upload.NewFirmware("fw.bin", append([]byte{0xE9}, make([]byte, 9000)...), false)
	tg := espotaFakeDeviceFrom(t, "127.0.0.66", func(c net.Conn, size int) {
		readAllCounting(c, size)
		fmt.Fprint(c, "OK")
	})
	tr := &Transport{ConnectTimeout: time.Second, AcceptTimeout: 2 * time.Second}
	if err := tr.Send(context.Background(), tg, fw, upload.Credentials{}, nil); err != nil {
		t.Fatal(err)
	}
}
