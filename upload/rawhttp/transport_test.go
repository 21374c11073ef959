package rawhttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// --- helpers (prefixed http… so they do not clash with the other transports' tests)

// httpFaulty starts a device with the faults of specs armed.
func httpFaulty(t testing.TB, cfg sim.Config, specs ...string) *sim.Device {
	t.Helper()
	faults, err := sim.ParseFaults(specs)
	if err != nil {
		t.Fatal(err)
	}
	d := startSim(t, cfg)
	d.SetFaults(faults...)
	return d
}

// events collects a transfer's events.
type httpEvents struct {
	mu sync.Mutex
	ev []upload.Event
}

func (l *httpEvents) emit(e upload.Event) {
	l.mu.Lock()
	e.Time = time.Now()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *httpEvents) all() []upload.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]upload.Event(nil), l.ev...)
}

func waitHTTPUploads(t testing.TB, d *sim.Device, n int) sim.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.WaitState(ctx, func(s sim.State) bool { return len(s.Uploads) >= n })
	if err != nil {
		t.Fatalf("wait for %d uploads: %v", n, err)
	}
	return st
}

// waitValid waits until the device serves version, no longer
// pending_verify (until then it answers "OTA begin failed").
func waitValid(t testing.TB, d *sim.Device, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := d.WaitState(ctx, func(s sim.State) bool {
		return s.Up && !s.Refusing && s.Version == version && (s.AppState == sim.StateValid || s.AppState == sim.StateUndefined)
	}); err != nil {
		t.Fatalf("device never came back valid on %s: %v", version, err)
	}
}

// --- uploads against the simulator

func TestHTTPSeedAuth(t *testing.T) {
	fw := simImage(t, "1.0.1", 128<<10)
	d := startSim(t, sim.Config{Personality: sim.Seed, Password: auth.NewSecret("s3cret")})
	tg := httpTarget(t, d.OTAAddr(), "")
	tr := &Transport{}
	for _, tc := range []struct {
		name   string
		cred   upload.Credentials
		status int
		words  string
	}{
		{"missing", upload.Credentials{}, 401, "Authentication required"},
		{"wrong token", upload.Credentials{Token: auth.NewSecret("wrong-token")}, 403, "Invalid credentials"},
		// device-contract §5: a trailing space is part of the value.
		{"trailing space", upload.Credentials{Token: auth.NewSecret("s3cret ")}, 403, "Invalid credentials"},
		{"basic to a bearer device", upload.Credentials{User: "admin", Password: auth.NewSecret("s3cret")}, 403, "Invalid credentials"},
		{"wrong password alone", upload.Credentials{Password: auth.NewSecret("nope-nope")}, 403, "Invalid credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev httpEvents
			err := tr.Send(httpCtx(t), tg, fw, tc.cred, ev.emit)
			de := asDeviceError(t, err)
			if de.Class != upload.ClassAuth || de.Status != tc.status || de.Words != tc.words {
				t.Fatalf("got class %s status %d words %q, want auth %d %q", de.Class, de.Status, de.Words, tc.status, tc.words)
			}
			if de.Class.Retries(3) != 0 {
				t.Errorf("auth failures must not be retried")
			}
			for _, s := range []string{tc.cred.Token.Reveal(), tc.cred.Password.Reveal()} {
				if s == "" {
					continue
				}
				if strings.Contains(de.Error(), s) || strings.Contains(fmt.Sprintf("%+v %v", de, de.Err), s) {
					t.Errorf("secret in error: %q", de.Error())
				}
				for _, e := range ev.all() {
					if strings.Contains(fmt.Sprintf("%+v", e), s) {
						t.Errorf("secret in event %+v", e)
					}
				}
			}
		})
	}
	st := d.State()
	for _, u := range st.Uploads {
		if u.Outcome != "auth_failed" {
			t.Errorf("device saw an upload past auth: %+v", u)
		}
	}

	// The right token, as --token and as --password alone: accepted.
	for i, cred := range []upload.Credentials{{Token: auth.NewSecret("s3cret")}, {Password: auth.NewSecret("s3cret")}} {
		version := fmt.Sprintf("1.0.%d", 2+i)
		fw := simImage(t, version, 128<<10)
		if err := tr.Send(httpCtx(t), tg, fw, cred, nil); err != nil {
			t.Fatalf("right secret (%d): %v", i, err)
		}
		waitValid(t, d, version)
	}
}

func TestHTTPOTS(t *testing.T) {
	d := startSim(t, sim.Config{Personality: sim.OTS, WebPort: 0})
	tr := &Transport{}
	// Port 3232, /update: no auth enforced; a Basic header is accepted.
	fw := simImage(t, "1.0.1", 128<<10)
	if err := tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{User: "admin", Password: auth.NewSecret("x")}, nil); err != nil {
		t.Fatalf("ots /update: %v", err)
	}
	st := waitHTTPUploads(t, d, 1)
	if u := st.Uploads[0]; u.Outcome != "ok" || u.Text != "Update successful, rebooting..." || u.Bytes != fw.Size() {
		t.Fatalf("device record %+v", u)
	}
	waitValid(t, d, "1.0.1")

	// The web app on its own port: POST /ota/upload.
	fw2 := simImage(t, "1.0.2", 128<<10)
	web := httpTarget(t, d.WebAddr(), "/ota/upload")
	if err := tr.Send(httpCtx(t), web, fw2, upload.Credentials{}, nil); err != nil {
		t.Fatalf("ots web /ota/upload: %v", err)
	}
	st = waitHTTPUploads(t, d, 2)
	if u := st.Uploads[1]; u.Outcome != "ok" || u.Path != "/ota/upload" || u.Text != "Upload successful. Rebooting..." {
		t.Fatalf("device record %+v", u)
	}
	waitValid(t, d, "1.0.2")

	// The web app refuses more than 3 MB before reading any of it.
	big := &upload.Firmware{Name: "big.bin", Data: make([]byte, 3<<20+1)}
	big.Data[0] = 0xE9
	de := asDeviceError(t, tr.Send(httpCtx(t), web, big, upload.Credentials{}, nil))
	if de.Class != upload.ClassRejected || de.Status != 400 || de.Words != "Invalid firmware size" {
		t.Fatalf("3 MB + 1 to the web app: %+v", de)
	}
	// A path no handler serves.
	de = asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), "/nope"), fw2, upload.Credentials{}, nil))
	if de.Class != upload.ClassRejected || de.Status != 404 {
		t.Fatalf("unknown path: %+v", de)
	}
}

// "Write failed" mid-upload with the RST right behind the answer (lwIP's
// close with unread data): the device's words must still be reported.
func TestHTTPWriteFailedWithRST(t *testing.T) {
	fw := simImage(t, "1.0.1", 1<<20)
	tr := &Transport{}
	// Early (inside the first TCP window), midway, and at the last chunk.
	for _, fault := range []string{"error@2KiB", "error@30%", "error@99%"} {
		t.Run(fault, func(t *testing.T) {
			tm := httpTiming()
			tm.ErrorCloseDelay = 0
			d := httpFaulty(t, sim.Config{Personality: sim.Seed, Timing: tm}, fault)
			const tries = 4
			for i := range tries {
				de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, nil))
				if de.Class != upload.ClassWriteFailed || de.Status != 500 || de.Words != "Write failed" {
					t.Fatalf("try %d: got %s %d %q (%v), want write-failed 500 \"Write failed\"", i, de.Class, de.Status, de.Words, de.Err)
				}
				st := waitHTTPUploads(t, d, i+1)
				rec := st.Uploads[i]
				// Taken counts what the device's TCP stack acknowledged: what
				// its handler read, plus at most its window.
				if de.Taken < rec.Bytes || de.Taken-rec.Bytes > eraseWindow {
					t.Errorf("try %d: taken %d, the device read %d of %d", i, de.Taken, rec.Bytes, fw.Size())
				}
				if !strings.Contains(de.Error(), "Write failed") {
					t.Errorf("error text %q lacks the device's words", de.Error())
				}
			}
		})
	}
}

// A first byte that is not 0xE9: the device answers Write failed at once.
func TestHTTPWrongMagic(t *testing.T) {
	tm := httpTiming()
	tm.ErrorCloseDelay = 0
	d := startSim(t, sim.Config{Personality: sim.OTS, Timing: tm})
	bad := &upload.Firmware{Name: "bad.bin", Data: make([]byte, 512<<10)}
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), bad, upload.Credentials{}, nil))
	if de.Class != upload.ClassWriteFailed || de.Status != 500 || de.Words != "Write failed" {
		t.Fatalf("got %+v", de)
	}
}

// A corrupted image is received whole and rejected at esp_ota_end.
func TestHTTPEndFailed(t *testing.T) {
	d := startSim(t, sim.Config{Personality: sim.OTS})
	fw := simImage(t, "1.0.1", 128<<10)
	data := append([]byte(nil), fw.Data...)
	data[len(data)/2] ^= 0xFF
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), upload.NewFirmware("c.bin", data, false), upload.Credentials{}, nil))
	if de.Class != upload.ClassRejected || de.Status != 500 || de.Words != "OTA end failed" || de.Taken != int64(len(data)) {
		t.Fatalf("got %+v", de)
	}
}

// The device stops reading mid-upload: the idle timeout fires.
func TestHTTPStallIdleTimeout(t *testing.T) {
	d := httpFaulty(t, sim.Config{Personality: sim.OTS}, "stall@50%:30s")
	fw := simImage(t, "1.0.1", 1<<20)
	tr := &Transport{IdleTimeout: 500 * time.Millisecond, ProgressInterval: 20 * time.Millisecond}
	de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, nil))
	if de.Class != upload.ClassTimeout || de.Status != 0 || de.Taken == 0 || de.Taken >= fw.Size() {
		t.Fatalf("got %+v", de)
	}
	if de.Class.Retries(3) != 3 {
		t.Errorf("a timeout is retried")
	}
}

// The overall timeout bounds a device that keeps stalling.
func TestHTTPOverallTimeout(t *testing.T) {
	d := httpFaulty(t, sim.Config{Personality: sim.OTS}, "stall@10%:30s")
	fw := simImage(t, "1.0.1", 256<<10)
	tr := &Transport{Timeout: 300 * time.Millisecond}
	de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, nil))
	if de.Class != upload.ClassTimeout || !strings.Contains(de.Reason, "overall timeout") {
		t.Fatalf("got %+v", de)
	}
}

// Ctrl-C: the upload stops, and the error says it was interrupted.
func TestHTTPCancel(t *testing.T) {
	d := httpFaulty(t, sim.Config{Personality: sim.OTS}, "stall@10%:30s")
	fw := simImage(t, "1.0.1", 256<<10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	emit := func(e upload.Event) {
		if e.Phase == upload.PhaseErasing || e.Phase == upload.PhaseUploading {
			once.Do(func() { go cancel() })
		}
	}
	err := (&Transport{}).Send(ctx, httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, emit)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want it to wrap context.Canceled", err)
	}
	asDeviceError(t, err)
}

// Faults that end the upload without an answer.
func TestHTTPNoAnswerFaults(t *testing.T) {
	fw := simImage(t, "1.0.1", 1<<20)
	for _, tc := range []struct {
		name  string
		fault string
		boot  time.Duration // the sim's reboot time
		idle  time.Duration
		want  upload.Class
		words string // in the reason
	}{
		// drop: the device resets the connection mid-upload.
		{"drop", "drop@40%", 50 * time.Millisecond, 5 * time.Second, upload.ClassNetwork, "cut the upload at"},
		// power loss: the device goes silent; the idle timeout fires first…
		{"power-loss silent", "power-loss@60%", 10 * time.Second, 500 * time.Millisecond, upload.ClassTimeout, "stopped taking data at"},
		// …or the device comes back first and resets the dead connection.
		{"power-loss back", "power-loss@60%", 200 * time.Millisecond, 10 * time.Second, upload.ClassNetwork, "cut the upload at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := httpTiming()
			tm.BootTime = tc.boot
			d := httpFaulty(t, sim.Config{Personality: sim.OTS, Timing: tm}, tc.fault)
			tr := &Transport{IdleTimeout: tc.idle, ProgressInterval: 20 * time.Millisecond}
			de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, nil))
			if de.Class != tc.want || de.Status != 0 || de.Words != "" || de.Taken == 0 || de.Taken >= fw.Size() {
				t.Fatalf("got %s %d %q taken %d: %s", de.Class, de.Status, de.Words, de.Taken, de.Reason)
			}
			if !strings.Contains(de.Reason, tc.words) {
				t.Errorf("reason %q should say %q", de.Reason, tc.words)
			}
		})
	}
}

// A device whose listener is closed (refuse fault): a refused connect.
func TestHTTPRefused(t *testing.T) {
	d := httpFaulty(t, sim.Config{Personality: sim.OTS}, "refuse:30s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.WaitState(ctx, func(s sim.State) bool { return s.Refusing }); err != nil {
		t.Fatal(err)
	}
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), simImage(t, "1.0.1", 0), upload.Credentials{}, nil))
	if de.Class != upload.ClassNetwork || !strings.Contains(de.Reason, "refused") {
		t.Fatalf("got %+v", de)
	}
	if len(d.State().Uploads) != 0 {
		t.Errorf("an upload reached a refusing device")
	}
}

// Progress: erasing at 0 taken first, then uploading, then finishing with
// every byte; never backwards.
func TestHTTPProgressShowsEraseStall(t *testing.T) {
	tm := httpTiming()
	tm.EraseRate = 4 << 20 // a 2 MiB slot erases in 0.5 s
	tm.WriteRate = 4 << 20
	d := startSim(t, sim.Config{Personality: sim.OTS, Timing: tm})
	fw := simImage(t, "1.0.1", 1<<20)
	var ev httpEvents
	tr := &Transport{ProgressInterval: 10 * time.Millisecond}
	if err := tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, ev.emit); err != nil {
		t.Fatal(err)
	}
	all := ev.all()
	if len(all) < 3 || all[0].Phase != upload.PhaseConnecting || all[1].Phase != upload.PhaseErasing || all[1].Done != 0 {
		t.Fatalf("want connecting, then erasing at 0; got %+v", all)
	}
	last := all[len(all)-1]
	if last.Phase != upload.PhaseFinishing || last.Done != fw.Size() || last.Total != fw.Size() {
		t.Fatalf("last event %+v, want finishing with all %d bytes", last, fw.Size())
	}
	order := map[upload.Phase]int{upload.PhaseConnecting: 0, upload.PhaseErasing: 1, upload.PhaseUploading: 2, upload.PhaseFinishing: 3}
	var prev upload.Event
	sawUploading := false
	for i, e := range all {
		if i > 0 && (e.Done < prev.Done || order[e.Phase] < order[prev.Phase]) {
			t.Fatalf("event %d went backwards: %+v after %+v", i, e, prev)
		}
		if e.Phase == upload.PhaseErasing && e.Done > eraseWindow {
			t.Errorf("erasing with %d taken, more than the device's window", e.Done)
		}
		sawUploading = sawUploading || e.Phase == upload.PhaseUploading
		prev = e
	}
	if !sawUploading {
		t.Errorf("no uploading event in %+v", all)
	}
}

// A device erasing a large slot takes no more than its TCP window until
// the erase ends: an idle timeout shorter than the erase fires with the
// bar at 0 and says the device may still be erasing.
func TestHTTPIdleDuringErase(t *testing.T) {
	tm := httpTiming()
	tm.EraseRate = 64 << 10 // a 2 MiB slot erases in 32 s
	d := startSim(t, sim.Config{Personality: sim.OTS, Timing: tm})
	fw := simImage(t, "1.0.1", 1<<20)
	var ev httpEvents
	tr := &Transport{IdleTimeout: 500 * time.Millisecond, ProgressInterval: 20 * time.Millisecond}
	de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, ev.emit))
	if de.Class != upload.ClassTimeout || de.Taken > eraseWindow || !strings.Contains(de.Reason, "erasing") {
		t.Fatalf("got %s taken %d: %s", de.Class, de.Taken, de.Reason)
	}
	for _, e := range ev.all() {
		if e.Phase != upload.PhaseConnecting && e.Phase != upload.PhaseErasing {
			t.Errorf("event %+v while the device erased", e)
		}
	}
}

// --- the wire, against raw listeners

// rawServer accepts one connection and runs serve on it.
func rawServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readRequest reads the head and body of one request.
func readRequest(br *bufio.Reader) (head []string, body []byte, err error) {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return head, nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		head = append(head, l)
	}
	n := -1
	for _, h := range head[1:] {
		if k, v, _ := strings.Cut(h, ":"); strings.EqualFold(k, "content-length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 {
		return head, nil, errors.New("no content-length")
	}
	body = make([]byte, n)
	_, err = io.ReadFull(br, body)
	return head, body, err
}

func TestHTTPRequestOnTheWire(t *testing.T) {
	fw := &upload.Firmware{Name: "x.bin", Data: []byte("\xe9 some image bytes")}
	for _, tc := range []struct {
		name string
		cred upload.Credentials
		path string
		port bool
		auth string
	}{
		{"token", upload.Credentials{Token: auth.NewSecret("tok"), Password: auth.NewSecret("pw")}, "", true, "Bearer tok"},
		{"basic", upload.Credentials{User: "admin", Password: auth.NewSecret("pw")}, "/ota/upload", true, "Basic YWRtaW46cHc="},
		{"password alone", upload.Credentials{Password: auth.NewSecret("pw")}, "", true, "Bearer pw"},
		{"none", upload.Credentials{}, "/update", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var head []string
			var body []byte
			addr := rawServer(t, func(c net.Conn) {
				var err error
				head, body, err = readRequest(bufio.NewReader(c))
				if err != nil {
					t.Errorf("server read: %v", err)
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")
			})
			tg := httpTarget(t, addr, tc.path)
			var logs bytes.Buffer
			tr := &Transport{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			if err := tr.Send(httpCtx(t), tg, fw, tc.cred, nil); err != nil {
				t.Fatal(err)
			}
			for _, sec := range []string{tc.cred.Token.Reveal(), tc.cred.Password.Reveal()} {
				if sec != "" && strings.Contains(logs.String(), sec) {
					t.Errorf("secret in the debug log: %s", logs.String())
				}
			}
			if logs.Len() == 0 {
				t.Errorf("no debug log")
			}
			path := tc.path
			if path == "" {
				path = "/update"
			}
			want := map[string]string{
				"host": addr, "content-type": "application/octet-stream",
				"content-length": strconv.Itoa(len(fw.Data)), "authorization": tc.auth,
			}
			if head[0] != "POST "+path+" HTTP/1.1" {
				t.Errorf("request line %q", head[0])
			}
			got := map[string]string{}
			size := 0
			for _, h := range head[1:] {
				k, v, _ := strings.Cut(h, ":")
				got[strings.ToLower(k)] = strings.TrimSpace(v)
				size += len(h) + 2
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("header %s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range []string{"transfer-encoding", "expect"} {
				if _, ok := got[k]; ok {
					t.Errorf("header %s must not be sent", k)
				}
			}
			if size > 256 {
				t.Errorf("headers take %d bytes; ESP-IDF's httpd allows 512 in all", size)
			}
			if string(body) != string(fw.Data) {
				t.Errorf("body %q", body)
			}
		})
	}
}

// A device that echoes the secret in its answer: the words are redacted.
func TestHTTPRedactsEchoedSecret(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		head, _, _ := readRequest(bufio.NewReader(c))
		var authz string
		for _, h := range head {
			if k, v, _ := strings.Cut(h, ":"); strings.EqualFold(k, "authorization") {
				authz = strings.TrimSpace(v)
			}
		}
		msg := "bad header " + authz
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
	})
	fw := &upload.Firmware{Data: []byte{0xE9, 1, 2, 3}}
	err := (&Transport{}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{Token: auth.NewSecret("hunter22")}, nil)
	de := asDeviceError(t, err)
	if de.Class != upload.ClassAuth || strings.Contains(de.Error(), "hunter22") || !strings.Contains(de.Words, "[redacted]") {
		t.Fatalf("got %+v", de)
	}
}

// A 200 before the image was sent is not an acceptance.
func TestHTTPEarlyOKIsNotSuccess(t *testing.T) {
	sent := make(chan struct{})
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Then read nothing and keep the connection open.
		<-sent
	})
	fw := &upload.Firmware{Data: make([]byte, 8<<20)}
	de := asDeviceError(t, (&Transport{IdleTimeout: 300 * time.Millisecond}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, nil))
	close(sent)
	if de.Class != upload.ClassEarlyAnswer || de.Status != 200 || !errors.Is(de, upload.ErrEarlyAnswer) || de.Taken >= fw.Size() {
		t.Fatalf("got %+v", de)
	}
}

// Something that is not HTTP on the port.
func TestHTTPNotHTTP(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n")
	})
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, addr, ""), &upload.Firmware{Data: []byte{0xE9}}, upload.Credentials{}, nil))
	if de.Class != upload.ClassRejected || !strings.Contains(de.Reason, "not HTTP") {
		t.Fatalf("got %+v", de)
	}
}

func TestHTTPRejectsBadInputs(t *testing.T) {
	tr := &Transport{}
	tg := upload.Target{Host: "127.0.0.1", Port: 1}
	for _, tc := range []struct {
		name string
		tg   upload.Target
		fw   *upload.Firmware
		cred upload.Credentials
		want upload.Class
	}{
		{"filesystem", tg, &upload.Firmware{Data: []byte{1}, Filesystem: true}, upload.Credentials{}, upload.ClassRejected},
		{"path with space", upload.Target{Host: "127.0.0.1", Port: 1, Path: "/a b"}, &upload.Firmware{Data: []byte{1}}, upload.Credentials{}, upload.ClassRejected},
		{"relative path", upload.Target{Host: "127.0.0.1", Port: 1, Path: "update"}, &upload.Firmware{Data: []byte{1}}, upload.Credentials{}, upload.ClassRejected},
		{"token with newline", tg, &upload.Firmware{Data: []byte{1}}, upload.Credentials{Token: auth.NewSecret("a\r\nX-Evil: 1")}, upload.ClassAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			de := asDeviceError(t, tr.Send(httpCtx(t), tc.tg, tc.fw, tc.cred, nil))
			if de.Class != tc.want || strings.Contains(de.Error(), "Evil") {
				t.Fatalf("got %+v", de)
			}
		})
	}
}

// The device takes the whole image and closes without a word: a network
// failure that may hide an applied image.
func TestHTTPAnswerLostAfterWholeImage(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		readRequest(bufio.NewReader(c))
	})
	fw := &upload.Firmware{Data: make([]byte, 256<<10)}
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, nil))
	if de.Class != upload.ClassNetwork || de.Taken != fw.Size() || !errors.Is(de, upload.ErrAnswerLost) {
		t.Fatalf("got %+v (%v)", de, de.Err)
	}
}

// Many uploads at once share one Firmware read-only (run with -race).
func TestHTTPParallelUploads(t *testing.T) {
	const n = 20
	fw := simImage(t, "1.0.1", 256<<10)
	sum := fw.MD5
	devs := make([]*sim.Device, n)
	for i := range devs {
		devs[i] = startSim(t, sim.Config{Personality: sim.OTS, Seed: int64(i + 1), WebPort: -1})
	}
	tr := &Transport{}
	errs := make(chan error, n)
	ctx := httpCtx(t)
	for _, d := range devs {
		tg := httpTarget(t, d.OTAAddr(), "")
		go func() { errs <- tr.Send(ctx, tg, fw, upload.Credentials{}, nil) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, d := range devs {
		if st := waitHTTPUploads(t, d, 1); st.Uploads[0].Outcome != "ok" || st.Uploads[0].Version != "1.0.1" {
			t.Errorf("%s: %+v", d.Name(), st.Uploads[0])
		}
	}
	if upload.NewFirmware("", fw.Data, false).MD5 != sum {
		t.Fatal("the image changed while it was sent")
	}
}

// An IPv6 device: the address and the Host header are bracketed.
func TestHTTPIPv6Host(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback")
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		head, _, _ := readRequest(bufio.NewReader(c))
		host := ""
		for _, h := range head {
			if k, v, _ := strings.Cut(h, ":"); strings.EqualFold(k, "host") {
				host = strings.TrimSpace(v)
			}
		}
		got <- host
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	}()
	tg := upload.Target{Host: "::1", Port: port}
	if err := (&Transport{}).Send(httpCtx(t), tg, &upload.Firmware{Data: []byte{0xE9}}, upload.Credentials{}, nil); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != "[::1]:"+strconv.Itoa(port) {
		t.Fatalf("Host %q", h)
	}
}

// A failure page that arrives slowly, past the idle timeout in all, is
// read whole while bytes keep coming, and its failure text found at the end.
func TestHTTPFailurePageTrickles(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if _, _, err := readRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html><body>")
		for range 25 { // 2.5 s against an idle timeout of 1 s
			time.Sleep(100 * time.Millisecond)
			io.WriteString(c, "<p>menu</p>\n")
		}
		io.WriteString(c, "Update error: ERROR[10]: Magic byte is not 0xE9\r\n</body></html>")
	})
	fw := &upload.Firmware{Data: append([]byte{0xE9}, make([]byte, 64<<10)...)}
	de := asDeviceError(t, (&Transport{IdleTimeout: time.Second}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, nil))
	if de.Class != upload.ClassRejected || de.Status != 200 || !errors.Is(de, upload.ErrFailurePage) || de.Words != "Update error: ERROR[10]: Magic byte is not 0xE9" || de.Taken != fw.Size() {
		t.Fatalf("got %+v", de)
	}
}

// An answer whose sender then falls silent, the connection open: at the
// idle timeout what arrived is the device's word, not a timeout.
func TestHTTPIdleAfterPartialAnswer(t *testing.T) {
	hold := make(chan struct{})
	addr := rawServer(t, func(c net.Conn) {
		if _, _, err := readRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nUpdate error: Not Enough Space\r\n")
		<-hold
	})
	fw := &upload.Firmware{Data: append([]byte{0xE9}, make([]byte, 4<<10)...)}
	de := asDeviceError(t, (&Transport{IdleTimeout: 500 * time.Millisecond}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, nil))
	close(hold)
	if de.Class != upload.ClassRejected || de.Status != 200 || !errors.Is(de, upload.ErrFailurePage) || de.Words != "Update error: Not Enough Space" {
		t.Fatalf("got %+v", de)
	}
}

// TestHTTPRefusalNeverErasing: a device that refuses the request (401, 403,
// 404) answers before it erases anything: no event says erasing. The tick
// is long so that only the answer's speed on loopback matters.
func TestHTTPRefusalNeverErasing(t *testing.T) {
	fw := simImage(t, "1.0.1", 128<<10)
	d := startSim(t, sim.Config{Personality: sim.Seed, Password: auth.NewSecret("s3cret")})
	tr := &Transport{ProgressInterval: 3 * time.Second}
	for _, tc := range []struct {
		path   string
		cred   upload.Credentials
		status int
	}{
		{"", upload.Credentials{}, 401},
		{"", upload.Credentials{Token: auth.NewSecret("wrong-token")}, 403},
		{"/nope", upload.Credentials{Token: auth.NewSecret("s3cret")}, 404},
	} {
		var ev httpEvents
		de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), tc.path), fw, tc.cred, ev.emit))
		if de.Status != tc.status {
			t.Fatalf("status %d, want %d: %s", de.Status, tc.status, de.Reason)
		}
		for _, e := range ev.all() {
			if e.Phase != upload.PhaseConnecting {
				t.Errorf("%d: event %+v, want none past connecting", tc.status, e)
			}
		}
	}
}

// A secret a device echoes right where its words are cut to length is
// hidden whole: redaction comes before the cut.
func TestHTTPRedactsSecretAtTheCut(t *testing.T) {
	const secret = "Hunter2Secret"
	addr := rawServer(t, func(c net.Conn) {
		head, _, _ := readRequest(bufio.NewReader(c))
		_ = head
		msg := strings.Repeat("x", 190) + " Bearer " + secret + " is wrong"
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
	})
	fw := &upload.Firmware{Data: []byte{0xE9, 1, 2, 3}}
	de := asDeviceError(t, (&Transport{}).Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{Token: auth.NewSecret(secret)}, nil))
	if strings.Contains(de.Words, "Hunter2") || strings.Contains(de.Error(), "Hunter2") {
		t.Fatalf("part of the secret in %q", de.Words)
	}
}
