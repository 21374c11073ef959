package fakedev

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const modulePath = "github.com/ots-ota/ots-ota"

// TestNoModuleImports: the fakes must share no code with the client or the
// simulator, so they cannot agree with their bugs.
func TestNoModuleImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	self := modulePath + "/internal/fakedev"
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p, std, _ := strings.Cut(line, " ")
		n++
		switch {
		case p == self:
		case p == modulePath || strings.HasPrefix(p, modulePath+"/"):
			t.Errorf("fakedev depends on %s: it must import nothing of this module", p)
		case std != "true" && !strings.HasPrefix(p, "golang.org/x/sys/"):
			t.Errorf("fakedev depends on %s: standard library only", p)
		}
	}
	if n < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", n, out)
	}
}

// testImage is a minimal ESP32-family app image: header, one segment whose
// data starts with esp_app_desc_t at 0x20, filler up to size.
func testImage(version, project string, elf byte, size int) []byte {
	b := make([]byte, max(size, 0x20+256))
	b[0] = 0xE9
	b[1] = 1
	binary.LittleEndian.PutUint16(b[12:], 9) // esp32s3
	binary.LittleEndian.PutUint32(b[24:], 0x3C000020)
	binary.LittleEndian.PutUint32(b[28:], uint32(len(b)-32))
	d := b[0x20:]
	binary.LittleEndian.PutUint32(d, appDescMagic)
	copy(d[16:48], version)
	copy(d[48:80], project)
	for i := range 32 {
		d[144+i] = elf
	}
	for i := 0x20 + 256; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func TestIdentityOf(t *testing.T) {
	b, err := IdentityOf(testImage("1.0.1", "proj", 0xab, 4096))
	if err != nil {
		t.Fatal(err)
	}
	want := Build{Project: "proj", Version: "1.0.1", ELF: strings.Repeat("ab", 32)}
	if b != want {
		t.Fatalf("got %+v, want %+v", b, want)
	}
	b, err = IdentityOf(testImage("1.0.1", "proj", 0, 4096))
	if err != nil || b.ELF != "" {
		t.Fatalf("no elf: got %+v, %v", b, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 4096), append([]byte{0xE9}, make([]byte, 4095)...)} {
		if _, err := IdentityOf(bad); err == nil {
			t.Errorf("IdentityOf(%d bytes starting %x) = nil error", len(bad), bad[:min(1, len(bad))])
		}
	}
}

func getJSON(t *testing.T, url string) (map[string]any, int) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: %v in %q", url, err, body)
		}
	}
	return m, resp.StatusCode
}

func post(t *testing.T, d *HTTPDevice, img []byte, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/update", d.Port()), bytes.NewReader(img))
	req.Header.Set("Content-Type", "application/octet-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHTTPStatusFieldsOmitted(t *testing.T) {
	d, err := StartHTTP(HTTPConfig{OTAStatus: true, Omit: FieldUptime | FieldELF, APIStatus: true, FailFirstStatus: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d/ota/status", d.Port())
	if _, code := getJSON(t, url); code != 500 {
		t.Fatalf("first read: %d, want 500", code)
	}
	m, code := getJSON(t, url)
	if code != 200 || m["version"] != "1.0.0" || m["state"] != "valid" || m["chip"] != "esp32s3" {
		t.Fatalf("second read: %d %v", code, m)
	}
	for _, k := range []string{"uptime_s", "elf_sha256"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s told though omitted: %v", k, m)
		}
	}
	api := fmt.Sprintf("http://127.0.0.1:%d/api/status", d.WebPort())
	getJSON(t, api) // the 500 once
	m, code = getJSON(t, api)
	if _, ok := m["uptime"]; code != 200 || m["firmwareVersion"] != "1.0.0" || ok {
		t.Fatalf("/api/status: %d %v", code, m)
	}
}

func TestHTTPUploadInstallsAndRestartsSilently(t *testing.T) {
	d, err := StartHTTP(HTTPConfig{OTAStatus: true, Token: "s3cret", BootTime: 1500 * time.Millisecond, PendingFor: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	img := testImage("1.0.1", "ots-fw-main", 0x11, 20000)
	if code, body := post(t, d, img, ""); code != 401 || body != "Authentication required" {
		t.Fatalf("no token: %d %q", code, body)
	}
	if code, body := post(t, d, img, "wrong"); code != 403 || body != "Invalid credentials" {
		t.Fatalf("wrong token: %d %q", code, body)
	}
	if code, body := post(t, d, img, "s3cret"); code != 200 || body != "OTA update successful, rebooting..." {
		t.Fatalf("upload: %d %q", code, body)
	}
	if n := d.Uploads(); n != 3 {
		t.Fatalf("Uploads = %d, want 3", n)
	}
	waitFor(t, "the restart", func() bool {
		ev := d.Events()
		return ev[len(ev)-1].What == "restart"
	})
	if silentConnects {
		// Silent, not refusing: the connect must time out.
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.Port()), 400*time.Millisecond)
		if err == nil {
			c.Close()
			t.Fatal("a restarting device accepted a connection")
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("connect to a restarting device: %v, want a timeout", err)
		}
	}
	waitFor(t, "valid on 1.0.1", func() bool {
		b, st := d.Running()
		return b.Version == "1.0.1" && st == "valid"
	})
	m, code := getJSON(t, fmt.Sprintf("http://127.0.0.1:%d/ota/status", d.Port()))
	if code != 200 || m["version"] != "1.0.1" || m["elf_sha256"] != strings.Repeat("11", 32) || m["running"] != "ota_1" {
		t.Fatalf("after the update: %d %v", code, m)
	}
	if up, _ := m["uptime_s"].(float64); up > 5 {
		t.Fatalf("uptime_s %v after a restart", up)
	}
}

// TestHTTPLifecycles: what each After does, step by step.
func TestHTTPLifecycles(t *testing.T) {
	old := Build{Project: "ots-fw-main", Version: "1.0.1", ELF: ELFOf("older build")}
	const n = "2222" // the uploaded image's ELF prefix
	o := old.ELF[:4]
	f := ELFOf("foreign")[:4]
	third := ELFOf("factory")[:4]
	for _, c := range []struct {
		name   string
		after  After
		answer Answer
		want   string // the events, each what:elf prefix
	}{
		{"installs and keeps", InstallsAndKeeps, AnswerNormal, "upload:O installed:O restart:O up:N state:N"},
		{"never restarts", NeverRestarts, AnswerNormal, "upload:O installed:O"},
		{"rolls back to a same-version build", RollsBack, AnswerNormal, "upload:O installed:O restart:O up:N restart:N up:O"},
		{"falls to a third image", FallsToThird, AnswerNormal, "upload:O installed:O restart:O up:N restart:N up:T"},
		{"crash-loops then old", CrashLoopsThenOld, AnswerNormal, "upload:O installed:O restart:O up:N restart:N up:N restart:N up:N restart:N up:O"},
		{"pending then old", PendingThenOld, AnswerNormal, "upload:O installed:O restart:O up:N restart:N up:O"},
		{"runs a foreign elf", RunsForeign, AnswerNormal, "upload:O installed:O restart:O up:F"},
		{"never comes back", NeverComesBack, AnswerNormal, "upload:O installed:O restart:O"},
		{"answer lost", InstallsAndKeeps, AnswerLost, "upload:O installed:O restart:O up:N state:N"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d, err := StartHTTP(HTTPConfig{Running: old, OTAStatus: true, After: c.after, Answer: c.answer,
				BootTime: 200 * time.Millisecond, CrashAfter: 100 * time.Millisecond, PendingFor: 100 * time.Millisecond, RestartDelay: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			code, body := post(t, d, testImage("1.0.1", "ots-fw-main", 0x22, 8000), "")
			switch {
			case c.answer == AnswerLost && code != 0:
				t.Fatalf("lost answer: got %d %q", code, body)
			case c.answer == AnswerNormal && code != 200:
				t.Fatalf("upload: %d %q", code, body)
			}
			want := strings.NewReplacer("O", o, "N", n, "F", f, "T", third).Replace(c.want)
			var got string
			waitFor(t, want, func() bool {
				var seen []string
				for _, e := range d.Events() {
					seen = append(seen, e.What+":"+e.Build.ELF[:4])
				}
				got = strings.Join(seen, " ")
				return got == want
			})
			time.Sleep(500 * time.Millisecond) // and nothing after it
			if ev := d.Events(); len(ev) != len(strings.Fields(want)) {
				t.Fatalf("more happened: %v", ev[len(strings.Fields(want)):])
			}
		})
	}
}

func TestHTTPEarlyAnswer(t *testing.T) {
	d, err := StartHTTP(HTTPConfig{OTAStatus: true, Answer: AnswerEarly, EarlyHold: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 200)
	n, _ := io.ReadAtLeast(c, b, 12)
	if !strings.HasPrefix(string(b[:n]), "HTTP/1.1 200") {
		t.Fatalf("answer %q", b[:n])
	}
	time.Sleep(700 * time.Millisecond)
	if b, _ := d.Running(); b.Version != "1.0.0" {
		t.Fatalf("runs %s after an early answer", b.Version)
	}
}

// An espota client written from research/espota.md §1, for the fake's own tests.
func espotaPush(t *testing.T, d *EspotaDevice, img []byte, password string) (counts string, err error) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: d.Port()})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	sum := md5.Sum(img)
	fmt.Fprintf(u, "0 %d %d %s\n", ln.Addr().(*net.TCPAddr).Port, len(img), hex.EncodeToString(sum[:]))
	_ = u.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 128)
	n, err := u.Read(buf)
	if err != nil {
		return "", err
	}
	if nonce, ok := strings.CutPrefix(string(buf[:n]), "AUTH "); ok {
		cnonce := md5hex("cnonce")
		fmt.Fprintf(u, "200 %s %s\n", cnonce, md5hex(md5hex(password)+":"+nonce+":"+cnonce))
		if n, err = u.Read(buf); err != nil {
			return "", err
		}
	}
	if string(buf[:n]) != "OK" {
		return "", fmt.Errorf("device answered %q", buf[:n])
	}
	_ = ln.SetDeadline(time.Now().Add(3 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return "", err
	}
	defer c.Close()
	go func() { _, _ = c.Write(img) }()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c)
	return string(all), err
}

func TestEspotaMD5Vector(t *testing.T) {
	// research/espota.md §1.5's test vector.
	if got := md5hex(md5hex("admin") + ":0123456789abcdef0123456789abcdef:fedcba9876543210fedcba9876543210"); got != "199cd366606a4c7b55e82b1277ecd8ec" {
		t.Fatalf("response %s", got)
	}
}

func TestEspotaShapes(t *testing.T) {
	img := testImage("1.0.1", "sketch", 0x33, 30000)
	for _, c := range []struct {
		name     string
		cfg      EspotaConfig
		okAt     int // -1: no OK
		installs bool
	}{
		{"normal with password", EspotaConfig{Password: "admin"}, len(img), true},
		{"early OK", EspotaConfig{Shape: EspotaEarlyOK}, len(img) * 3 / 10, false},
		{"lose OK", EspotaConfig{Shape: EspotaLoseOK}, -1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.BootTime = 200 * time.Millisecond
			c.cfg.TellsVersion = true
			d, err := StartEspota(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			out, err := espotaPush(t, d, img, "admin")
			if err != nil && !strings.Contains(out, "OK") { // a close with unread data resets
				t.Fatalf("push: %v (got %q)", err, out)
			}
			head, _, ok := strings.Cut(out, "OK")
			sum := 0
			for _, r := range head {
				if r < '0' || r > '9' {
					t.Fatalf("not a count: %q", out)
				}
			}
			// Counts run together; each is at most 1460, so count by the received total.
			if rec := d.Received(); len(rec) == 1 {
				sum = rec[0]
			}
			switch {
			case c.okAt < 0 && ok:
				t.Fatalf("OK sent: %q", out)
			case c.okAt >= 0 && !ok:
				t.Fatalf("no OK: %q", out)
			case c.okAt >= 0 && (sum < c.okAt || c.okAt < len(img) && sum >= len(img)):
				t.Fatalf("OK after %d bytes, want about %d", sum, c.okAt)
			}
			want := "1.0.0"
			if c.installs {
				want = "1.0.1"
			}
			waitFor(t, "runs "+want, func() bool { return d.Running().Version == want && d.TXT()["version"] == want })
			if d.Uploads() != 1 {
				t.Fatalf("Uploads %d", d.Uploads())
			}
		})
	}
}

func TestEspotaCountsWithoutData(t *testing.T) {
	d, err := StartEspota(EspotaConfig{Shape: EspotaCountsNoData, ChatterEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, _ := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer ln.Close()
	u, _ := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: d.Port()})
	defer u.Close()
	fmt.Fprintf(u, "0 %d 100000 %s\n", ln.Addr().(*net.TCPAddr).Port, strings.Repeat("0", 32))
	_ = ln.SetDeadline(time.Now().Add(3 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Whatever is written, the device takes no more than its window.
	big := make([]byte, 8<<20)
	_ = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	n, _ := c.Write(big)
	if n >= len(big) {
		t.Fatalf("wrote all %d bytes to a device that reads nothing", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 64)
	m, err := io.ReadAtLeast(c, b, 12)
	if err != nil || strings.Trim(string(b[:m]), "0123456789") != "" {
		t.Fatalf("chatter %q, %v", b[:m], err)
	}
	if rec := d.Received(); len(rec) != 1 || rec[0] != 0 {
		t.Fatalf("received %v", rec)
	}
}

func TestOTSAsShippedShape(t *testing.T) {
	c := OTSAsShipped(Build{Project: "ots-fw-main", Version: "1.0.0"}, 0.1)
	if c.OTAStatus || !c.APIStatus || c.APIUptime || c.BytesPerSecond != 100_000 || c.EraseStall <= 0 {
		t.Fatalf("shape: %+v", c)
	}
}
