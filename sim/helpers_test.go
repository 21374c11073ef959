package sim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// testTiming is FastTiming with a stability window long enough to observe
// pending_verify.
func testTiming() *Timing {
	t := FastTiming()
	return &t
}

func testConfig(p Personality) Config {
	return Config{Personality: p, Timing: testTiming(), Seed: 1}
}

func startDevice(t testing.TB, cfg Config) *Device {
	t.Helper()
	if cfg.Timing == nil {
		cfg.Timing = testTiming()
	}
	d, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// imageCache keeps built test images: building a 1 MB image takes a while
// under -race.
var imageCache sync.Map

type imgKey struct {
	chip, version string
	size          int
}

func testImage(t testing.TB, version string) []byte { return testImageOf(t, "esp32s3", version, 0) }

func testImageOf(t testing.TB, chip, version string, size int) []byte {
	t.Helper()
	k := imgKey{chip: chip, version: version, size: size}
	if b, ok := imageCache.Load(k); ok {
		return b.([]byte)
	}
	b, err := Image(chip, "ots-fw-main", version, size)
	if err != nil {
		t.Fatalf("build image: %v", err)
	}
	imageCache.Store(k, b)
	return b
}

// reply is an HTTP response read by rawPost.
type reply struct {
	status   int
	ctype    string
	body     string
	header   http.Header
	writeErr error // what the client's write of the body ended with
	readErr  error
}

// rawPost sends a request over a plain TCP connection, writing the body in
// one goroutine and reading the response in another, like a careful client
// must against a device that answers mid-upload and closes.
func rawPost(t testing.TB, addr, method, path string, headers map[string]string, body []byte) reply {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var hb strings.Builder
	fmt.Fprintf(&hb, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, addr)
	if _, ok := headers["Content-Length"]; !ok && body != nil {
		fmt.Fprintf(&hb, "Content-Length: %d\r\n", len(body))
	}
	for k, v := range headers {
		if v == "" {
			continue
		}
		fmt.Fprintf(&hb, "%s: %s\r\n", k, v)
	}
	hb.WriteString("\r\n")
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte(hb.String()))
		if err == nil && len(body) > 0 {
			_, err = c.Write(body)
		}
		werr <- err
	}()
	var r reply
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.readErr = err
	} else {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		r.status, r.ctype, r.body, r.header, r.readErr = resp.StatusCode, resp.Header.Get("Content-Type"), string(b), resp.Header, err
	}
	c.Close() // unblock the writer
	r.writeErr = <-werr
	return r
}

// postGo uploads with Go's http.Client (fresh transport, no keep-alive reuse).
func postGo(t testing.TB, url string, body []byte, hdr map[string]string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func getGo(t testing.TB, url string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// eventLog collects events.
type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) kinds() []EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var k []EventKind
	for _, e := range l.ev {
		k = append(k, e.Event)
	}
	return k
}

func (l *eventLog) find(k EventKind) (Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if e.Event == k {
			return e, true
		}
	}
	return Event{}, false
}

// waitCount waits until at least n events of kind k arrived: events are
// emitted after the state change that waiters see, so a test that has seen
// the state must still wait for the event.
func (l *eventLog) waitCount(t testing.TB, k EventKind, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.count(k) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s event(s) expected, have %v", n, k, l.kinds())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *eventLog) count(k EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.ev {
		if e.Event == k {
			n++
		}
	}
	return n
}

func lastUpload(t testing.TB, d *Device) UploadRecord {
	t.Helper()
	st := d.State()
	if len(st.Uploads) == 0 {
		t.Fatalf("no upload recorded")
	}
	return st.Uploads[len(st.Uploads)-1]
}

func waitUploads(t testing.TB, d *Device, n int) State {
	t.Helper()
	st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return len(s.Uploads) >= n })
	if err != nil {
		t.Fatalf("wait for %d uploads: %v", n, err)
	}
	return st
}

func slot(st State, label string) SlotState {
	for _, s := range st.Slots {
		if s.Label == label {
			return s
		}
	}
	return SlotState{}
}

// corrupt returns a copy of b with one byte flipped at off.
func corrupt(b []byte, off int) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0xFF
	return c
}

func itoa(n int) string { return strconv.Itoa(n) }

var _ = image.ChipESP32

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// probeTCP says what a client trying to connect sees: "accepted",
// "refused" or "timeout" (after wait). A rebooting or dead device times
// out, as a chip off the network does, where the OS lets the sim do that.
func probeTCP(addr string, wait time.Duration) string {
	c, err := net.DialTimeout("tcp", addr, wait)
	switch {
	case err == nil:
		c.Close()
		return "accepted"
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return err.Error()
}

// otaStatus decodes GET /ota/status (device-contract.md §4).
type otaStatus struct {
	Project       string   `json:"project"`
	Version       string   `json:"version"`
	IDF           string   `json:"idf"`
	Chip          string   `json:"chip"`
	Running       string   `json:"running"`
	Boot          string   `json:"boot"`
	State         AppState `json:"state"`
	SecureVersion uint32   `json:"secure_version"`
	ELFSHA256     string   `json:"elf_sha256"`
	SlotSize      int64    `json:"slot_size"`
	UptimeS       int64    `json:"uptime_s"`
}

// apiStatus decodes the OTS web app's GET /api/status.
type apiStatus struct {
	FirmwareVersion string `json:"firmwareVersion"`
	Mode            string `json:"mode"`
	IP              string `json:"ip"`
	SerialNumber    string `json:"serialNumber"`
	OwnerName       string `json:"ownerName"`
}
