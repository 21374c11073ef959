package fakedev

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"net"
	"strings"
	"time"
)

// ESPHomeConfig describes a fake ESPHome node taking native OTA
// (research/uploaders.md §8 alone). Zero knobs take the default given.
type ESPHomeConfig struct {
	// ESP8266: an ESP8266 node (offers gzip payloads); else ESP32.
	ESP8266 bool
	// Protocol is the OTA protocol version, 1 or 2 (default 2: a 47 per 8 KiB).
	Protocol int
	// NoExtended: answers 40/46 even to a client flagging 0x04.
	NoExtended bool
	// NoCompression: an ESP8266 build that offers no gzip.
	NoCompression bool
	// Password, when set, challenges. Auth: "sha256" (default: 02 + 64-hex
	// nonce, 82 to a client without the 0x02 flag), "md5" (01 + 32-hex
	// nonce always), "sha256-md5" (SHA-256 if flagged, else MD5).
	Password, Auth string
	// Noise: "" none, "offered" (48 carries 0x04), "required" (94 to a
	// plaintext client).
	Noise string
	// Fail is an error byte answered at the step where the firmware sends
	// it (0 = none): 80 magic, 94 features, 82 auth, 8E after the size,
	// 81 and 85–8A begin, 83 and FF half-way through the data, 84, 8B,
	// 8D, 8F–93 at the end. FailOnce limits it to the first session.
	Fail     byte
	FailOnce bool
	// HandshakeTimeout: each handshake read gives up after it (2024
	// firmware: 1 s); default 20 s from the connect.
	HandshakeTimeout time.Duration
	// DataTimeout ends the data phase with FF after this long without
	// data; default 90 s.
	DataTimeout time.Duration
	// Release is the TXT version (the ESPHome release); default 2026.7.0.
	Release string
	// Running is the project_version and config_hash before the update
	// (default 1.0.0 / 00c0ffee); New what the uploaded image brings
	// (default 2.0.0 / 2ec0ffee).
	Running, New ESPHomeIdentity
	// MaxSize is the largest size begin takes (default 1 MiB); more is
	// 89 (ESP32) or 88 (ESP8266).
	MaxSize int
	// BootTime is how long the restart is silent; default 300 ms.
	BootTime time.Duration
}

// ESPHomeIdentity is what the TXT record tells of the running image.
type ESPHomeIdentity struct{ ProjectVersion, ConfigHash string }

func (c ESPHomeConfig) withDefaults() ESPHomeConfig {
	if c.Protocol == 0 {
		c.Protocol = 2
	}
	if c.Auth == "" {
		c.Auth = "sha256"
	}
	if c.DataTimeout == 0 {
		c.DataTimeout = 90 * time.Second
	}
	if c.Release == "" {
		c.Release = "2026.7.0"
	}
	if c.Running == (ESPHomeIdentity{}) {
		c.Running = ESPHomeIdentity{"1.0.0", "00c0ffee"}
	}
	if c.New == (ESPHomeIdentity{}) {
		c.New = ESPHomeIdentity{"2.0.0", "2ec0ffee"}
	}
	if c.MaxSize == 0 {
		c.MaxSize = 1 << 20
	}
	if c.BootTime == 0 {
		c.BootTime = 300 * time.Millisecond
	}
	return c
}

// ESPHomeDevice is a running fake ESPHome node on 127.0.0.1.
type ESPHomeDevice struct {
	life
	cfg        ESPHomeConfig
	p          *port
	running    ESPHomeIdentity
	restarting bool
	sessions   int
	failed     bool
	received   []byte // the last image accepted (inflated when gzip)
	installs   int
}

// StartESPHome starts a fake ESPHome node; Close stops it.
func StartESPHome(cfg ESPHomeConfig) (*ESPHomeDevice, error) {
	cfg = cfg.withDefaults()
	p, err := listenPort()
	if err != nil {
		return nil, err
	}
	d := &ESPHomeDevice{cfg: cfg, p: p, running: cfg.Running, life: newLife()}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := p.Accept()
			if err != nil {
				return
			}
			if d.serve(c) {
				d.restart()
			}
		}
	}()
	return d, nil
}

// Addr is the OTA address, 127.0.0.1:PORT.
func (d *ESPHomeDevice) Addr() string { return d.p.Addr().String() }

// Sessions is how many connections the device served.
func (d *ESPHomeDevice) Sessions() int { return locked(&d.mu, &d.sessions) }

// Installed is how many images it accepted, and the last one (inflated).
func (d *ESPHomeDevice) Installed() (int, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.installs, d.received
}

// TXT is the _esphomelib._tcp record now; nil while the node restarts.
func (d *ESPHomeDevice) TXT() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.restarting || d.closed {
		return nil
	}
	platform := "ESP32"
	if d.cfg.ESP8266 {
		platform = "ESP8266"
	}
	return map[string]string{"version": d.cfg.Release, "platform": platform, "mac": "a0b1c2d3e4f5",
		"config_hash": d.running.ConfigHash, "project_name": "fake.node", "project_version": d.running.ProjectVersion}
}

// Close stops the device.
func (d *ESPHomeDevice) Close() error {
	d.mu.Lock()
	first := d.stopLocked()
	d.mu.Unlock()
	if first {
		d.p.Close()
		d.wg.Wait()
	}
	return nil
}

// restart is the silent reboot after an accepted image.
func (d *ESPHomeDevice) restart() {
	d.p.quiesce()
	d.mu.Lock()
	d.restarting = true
	d.logEvent(Event{What: "restart"})
	d.mu.Unlock()
	if !sleepOrDone(d.done, d.cfg.BootTime) {
		return
	}
	d.mu.Lock()
	d.running, d.restarting = d.cfg.New, false
	d.logEvent(Event{What: "up"})
	d.mu.Unlock()
	d.p.resume()
}

// failing reports whether cfg.Fail answers at this step.
func (d *ESPHomeDevice) failing(steps ...byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.Fail == 0 || d.cfg.FailOnce && d.failed {
		return false
	}
	for _, b := range steps {
		if b == d.cfg.Fail {
			d.failed = true
			return true
		}
	}
	return false
}

// serve runs one session; true when an image was accepted (restart).
func (d *ESPHomeDevice) serve(c net.Conn) bool {
	defer c.Close()
	d.mu.Lock()
	d.sessions++
	d.mu.Unlock()
	cfg := d.cfg
	start := time.Now()
	deadline := func() time.Time {
		if cfg.HandshakeTimeout > 0 {
			return time.Now().Add(cfg.HandshakeTimeout)
		}
		return start.Add(20 * time.Second)
	}
	read := func(n int, until time.Time) ([]byte, bool) {
		b := make([]byte, n)
		_ = c.SetReadDeadline(until)
		_, err := io.ReadFull(c, b)
		return b, err == nil
	}
	send := func(b ...byte) { _, _ = c.Write(b) }
	m, ok := read(5, deadline())
	if !ok {
		return false
	}
	if !bytes.Equal(m, []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}) || d.failing(0x80) {
		send(0x80)
		return false
	}
	send(0x00, byte(cfg.Protocol))
	f, ok := read(1, deadline())
	if !ok {
		return false
	}
	feat := f[0]
	if cfg.Noise == "required" && feat&0x08 == 0 || d.failing(0x94) {
		send(0x94)
		return false
	}
	gzipOK := cfg.ESP8266 && !cfg.NoCompression
	extended := feat&0x04 != 0 && !cfg.NoExtended
	switch {
	case extended:
		var flags byte
		if gzipOK && feat&0x01 != 0 {
			flags |= 0x01
		}
		if cfg.Noise != "" {
			flags |= 0x04
		}
		send(0x48, flags)
		if cfg.Noise != "" && feat&0x08 != 0 {
			return false // no Noise here
		}
	case gzipOK && feat&0x01 != 0:
		send(0x46)
	default:
		send(0x40)
	}
	if cfg.Password != "" {
		var kind byte = 0x02
		var h func() hash.Hash = sha256.New
		switch {
		case cfg.Auth == "md5", cfg.Auth == "sha256-md5" && feat&0x02 == 0:
			kind, h = 0x01, md5.New
		case feat&0x02 == 0:
			send(0x82)
			return false
		}
		r := make([]byte, 8)
		_, _ = rand.Read(r)
		hn := h()
		hn.Write(r)
		nonce := hex.EncodeToString(hn.Sum(nil))
		send(append([]byte{kind}, nonce...)...)
		in, ok := read(2*len(nonce), deadline())
		if !ok {
			return false
		}
		hr := h()
		hr.Write([]byte(cfg.Password + nonce))
		hr.Write(in[:len(nonce)])
		if !strings.EqualFold(string(in[len(nonce):]), hex.EncodeToString(hr.Sum(nil))) || d.failing(0x82) {
			send(0x82)
			return false
		}
	}
	send(0x41)
	long := func() time.Time { return time.Now().Add(cfg.DataTimeout) }
	if extended {
		t, ok := read(1, long())
		if !ok {
			send(0xFF)
			return false
		}
		if t[0] != 0 {
			send(0x8E)
			return false
		}
	}
	sz, ok := read(4, long())
	if !ok {
		send(0xFF)
		return false
	}
	size := int(binary.BigEndian.Uint32(sz))
	if d.failing(0x8E, 0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A) {
		send(d.cfg.Fail)
		return false
	}
	if size > cfg.MaxSize || size == 0 {
		if cfg.ESP8266 {
			send(0x88)
		} else {
			send(0x89)
		}
		return false
	}
	send(0x42)
	want, ok := read(32, long())
	if !ok {
		send(0xFF)
		return false
	}
	send(0x43)
	midFail := d.failing(0x83, 0xFF)
	img := make([]byte, 0, size)
	buf := make([]byte, 1024)
	acked := 0
	for len(img) < size {
		if midFail && len(img) >= size/2 {
			send(d.cfg.Fail)
			return false
		}
		_ = c.SetReadDeadline(long())
		n, err := c.Read(buf[:min(len(buf), size-len(img))])
		if n == 0 && err != nil {
			send(0xFF)
			return false
		}
		img = append(img, buf[:n]...)
		for cfg.Protocol == 2 && (acked+8192 <= len(img) || len(img) == size && acked < size) {
			send(0x47)
			acked += 8192
		}
	}
	send(0x44)
	sum := md5.Sum(img)
	if d.failing(0x84, 0x8B, 0x8D, 0x8F, 0x90, 0x91, 0x92, 0x93) {
		send(d.cfg.Fail)
		return false
	}
	if !strings.EqualFold(string(want), hex.EncodeToString(sum[:])) {
		send(0x8B)
		return false
	}
	inner := img
	if gzipOK && len(img) > 1 && img[0] == 0x1F && img[1] == 0x8B {
		zr, err := gzip.NewReader(bytes.NewReader(img))
		if err == nil {
			inner, err = io.ReadAll(io.LimitReader(zr, 16<<20))
		}
		if err != nil {
			inner = nil
		}
	}
	if len(inner) == 0 || inner[0] != 0xE9 {
		send(0x84)
		return false
	}
	send(0x45)
	d.mu.Lock()
	d.installs++
	d.received = inner
	d.logEvent(Event{What: "installed"})
	d.mu.Unlock()
	_, _ = read(1, time.Now().Add(cfg.DataTimeout)) // the final 00; not fatal
	return true
}
