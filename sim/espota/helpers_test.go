package espota_test

// A minimal espota host written from the protocol facts (research/espota.md
// §1, §2) for these tests only, plus a recording fake Updater. Nothing here
// is shared with product code; the auth math is redone with the stdlib so a
// bug in package auth cannot hide behind the same bug here.

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/espota"
)

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// clientResponse computes the host's answer to nonce the way espota does,
// choosing the variant from the nonce length. passHash is md5hex or
// sha256hex of the password (or the -m fallback).
func clientResponse(t *testing.T, passHash, nonce string) (cnonce, response string) {
	t.Helper()
	switch len(nonce) {
	case 32:
		cnonce = md5hex([]byte("fw.bin1234" + nonce))
		return cnonce, md5hex([]byte(passHash + ":" + nonce + ":" + cnonce))
	case 64:
		cnonce = sha256hex([]byte("fw.bin1234" + nonce))
		salt := nonce + ":" + cnonce
		dk, err := pbkdf2.Key(sha256.New, passHash, []byte(salt), 10000, 32)
		if err != nil {
			t.Fatalf("pbkdf2: %v", err)
		}
		return cnonce, sha256hex([]byte(hex.EncodeToString(dk) + ":" + salt))
	}
	t.Fatalf("invalid nonce length %d (%q)", len(nonce), nonce)
	return "", ""
}

// image returns n bytes starting with the ESP image magic 0xE9.
func image(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	if n > 0 {
		b[0] = 0xE9
	}
	return b
}

// fakeUpdater records what the engine asks of the Update class.
type fakeUpdater struct {
	flavor espota.Flavor

	mu       sync.Mutex
	data     bytes.Buffer
	size     int
	cmd      int
	began    int
	ended    int
	aborted  int
	endMD5   string
	beginErr error
	// beginGate, if set, blocks Begin until closed.
	beginGate chan struct{}
	// writeErr, if set, is consulted before each write (total so far).
	writeErr func(total int, p []byte) error
}

func (u *fakeUpdater) Begin(size, cmd int) error {
	if u.beginGate != nil {
		<-u.beginGate
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.began++
	if u.beginErr != nil {
		return u.beginErr
	}
	u.size, u.cmd = size, cmd
	u.data.Reset()
	return nil
}

func (u *fakeUpdater) Write(p []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.writeErr != nil {
		if err := u.writeErr(u.data.Len(), p); err != nil {
			return err
		}
	}
	if u.cmd == espota.CmdFlash && u.data.Len() == 0 && p[0] != 0xE9 {
		return espota.NewUpdateError(u.flavor, espota.ErrKindMagicByte)
	}
	u.data.Write(p)
	return nil
}

func (u *fakeUpdater) End(md5Hex string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ended++
	u.endMD5 = md5Hex
	if got := md5hex(u.data.Bytes()); got != md5Hex {
		return espota.NewMD5Error(u.flavor, md5Hex, got)
	}
	return nil
}

func (u *fakeUpdater) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.aborted++
}

type counts struct{ began, ended, aborted int }

func (u *fakeUpdater) counts() counts {
	u.mu.Lock()
	defer u.mu.Unlock()
	return counts{u.began, u.ended, u.aborted}
}

func (u *fakeUpdater) lastEndMD5() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.endMD5
}

func (u *fakeUpdater) beginCmd() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cmd
}

func (u *fakeUpdater) bytes() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return bytes.Clone(u.data.Bytes())
}

// device is a running espota.Server on 127.0.0.1.
type device struct {
	addr   *net.UDPAddr
	u      *fakeUpdater
	mu     sync.Mutex
	events []espota.Event
	notify chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// testConfig returns fast timings for tests.
func testConfig(f espota.Flavor) espota.Config {
	return espota.Config{Flavor: f, RecvTimeout: 100 * time.Millisecond, DelayScale: 0.01}
}

func startDevice(t *testing.T, cfg espota.Config, u *fakeUpdater) *device {
	t.Helper()
	if u == nil {
		u = &fakeUpdater{}
	}
	u.flavor = cfg.Flavor
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	d := &device{addr: pc.LocalAddr().(*net.UDPAddr), u: u, notify: make(chan struct{}, 1), done: make(chan error, 1)}
	user := cfg.OnEvent
	cfg.OnEvent = func(e espota.Event) {
		d.mu.Lock()
		d.events = append(d.events, e)
		d.mu.Unlock()
		select {
		case d.notify <- struct{}{}:
		default:
		}
		if user != nil {
			user(e)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	srv := espota.NewServer(cfg, u)
	go func() { d.done <- srv.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		pc.Close()
	})
	return d
}

// waitEvent waits for the first event of kind k and returns it.
func (d *device) waitEvent(t *testing.T, k espota.EventKind, timeout time.Duration) espota.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		for _, e := range d.events {
			if e.Kind == k {
				d.mu.Unlock()
				return e
			}
		}
		d.mu.Unlock()
		select {
		case <-d.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s event within %v; events: %v", k, timeout, d.kinds())
		}
	}
}

func (d *device) kinds() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ks []string
	for _, e := range d.events {
		ks = append(ks, e.Kind.String())
	}
	return ks
}

// progressCounts is the sequence of counts the device acknowledged.
func (d *device) progressCounts() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var c []int
	for _, e := range d.events {
		if e.Kind == espota.EventProgress {
			c = append(c, e.Count)
		}
	}
	return c
}

func concatCounts(c []int) string {
	var b strings.Builder
	for _, n := range c {
		fmt.Fprint(&b, n)
	}
	return b.String()
}

// host is the uploader side: one UDP socket (plus extras when a test wants
// them) and a TCP listener for the connect-back.
type host struct {
	t   *testing.T
	dev *net.UDPAddr
	udp *net.UDPConn
	ln  *net.TCPListener
}

func newHost(t *testing.T, dev *net.UDPAddr) *host {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen tcp: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return &host{t: t, dev: dev, udp: newUDP(t, "127.0.0.1"), ln: ln}
}

func newUDP(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatalf("listen udp %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (h *host) port() int { return h.ln.Addr().(*net.TCPAddr).Port }

func (h *host) invitation(cmd, size int, md5Hex string) string {
	return fmt.Sprintf("%d %d %d %s\n", cmd, h.port(), size, md5Hex)
}

func (h *host) send(msg string) { h.sendFrom(h.udp, msg) }

// startUpload invites a device without a password to take img and accepts its connect-back.
func (h *host) startUpload(img []byte) *net.TCPConn {
	h.t.Helper()
	h.send(h.invitation(0, len(img), md5hex(img)))
	h.expectReply("OK")
	return h.mustAccept()
}

func (h *host) sendFrom(c *net.UDPConn, msg string) {
	h.t.Helper()
	if _, err := c.WriteToUDP([]byte(msg), h.dev); err != nil {
		h.t.Fatalf("send: %v", err)
	}
}

// recvOn reads one datagram from the device on c; ok is false on timeout.
func (h *host) recvOn(c *net.UDPConn, timeout time.Duration) (string, bool) {
	h.t.Helper()
	buf := make([]byte, 512)
	deadline := time.Now().Add(timeout)
	for {
		_ = c.SetReadDeadline(deadline)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "", false
			}
			h.t.Fatalf("recv: %v", err)
		}
		if from.Port == h.dev.Port && from.IP.Equal(h.dev.IP) {
			return string(buf[:n]), true
		}
	}
}

func (h *host) recv(timeout time.Duration) (string, bool) { return h.recvOn(h.udp, timeout) }

func (h *host) expectReply(want string) {
	h.t.Helper()
	got, ok := h.recv(2 * time.Second)
	if !ok {
		h.t.Fatalf("no reply, want %q", want)
	}
	if got != want {
		h.t.Fatalf("reply %q, want %q", got, want)
	}
}

func (h *host) expectNoReply(c *net.UDPConn, d time.Duration) {
	h.t.Helper()
	if got, ok := h.recvOn(c, d); ok {
		h.t.Fatalf("unexpected reply %q", got)
	}
}

// authenticate answers an "AUTH <nonce>" reply on c.
func (h *host) authenticate(c *net.UDPConn, reply, passHash string) {
	h.t.Helper()
	nonce, ok := strings.CutPrefix(reply, "AUTH ")
	if !ok {
		h.t.Fatalf("reply %q is not an auth request", reply)
	}
	cnonce, resp := clientResponse(h.t, passHash, nonce)
	h.sendFrom(c, "200 "+cnonce+" "+resp+"\n")
}

func (h *host) accept(timeout time.Duration) (*net.TCPConn, error) {
	_ = h.ln.SetDeadline(time.Now().Add(timeout))
	c, err := h.ln.AcceptTCP()
	if err == nil {
		h.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func (h *host) mustAccept() *net.TCPConn {
	h.t.Helper()
	c, err := h.accept(3 * time.Second)
	if err != nil {
		h.t.Fatalf("device did not connect back: %v", err)
	}
	return c
}

// lockstep uploads data like espota: send a chunk, wait for a reply, repeat;
// then read until the device closes. It returns everything the device sent
// and the first error that ended reading (nil on a clean EOF).
func lockstep(c net.Conn, data []byte, chunk int, timeout time.Duration) (string, error) {
	var got bytes.Buffer
	buf := make([]byte, 64)
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.Write(data[off:end]); err != nil {
			return got.String(), fmt.Errorf("write: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.String(), fmt.Errorf("read reply: %w", err)
		}
	}
	err := readAll(c, &got, timeout)
	return got.String(), err
}

// readAll reads until EOF (nil) or another error.
func readAll(c net.Conn, got *bytes.Buffer, timeout time.Duration) error {
	buf := make([]byte, 256)
	for {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
