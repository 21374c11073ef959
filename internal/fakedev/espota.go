package fakedev

import (
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"time"
)

// EspotaShape is how a fake ArduinoOTA device runs the data phase.
type EspotaShape int

// The shapes (research/espota.md §1.9 for the normal one).
const (
	// EspotaNormal: a decimal count for every read, then OK, then a restart.
	EspotaNormal EspotaShape = iota
	// EspotaEarlyOK: OK once EarlyOKAt of the image was read, then the
	// connection closes; nothing is installed.
	EspotaEarlyOK
	// EspotaCountsNoData: connects back, reads nothing, and sends a count
	// every ChatterEvery until the host goes away.
	EspotaCountsNoData
	// EspotaChatterNoOK: takes every byte with its counts, then repeats
	// the last count every ChatterEvery and never says OK; nothing is
	// installed.
	EspotaChatterNoOK
	// EspotaLoseOK: takes every byte and installs it, then closes without
	// its OK and restarts.
	EspotaLoseOK
)

// EspotaConfig describes a fake ArduinoOTA device (arduino-esp32's
// ArduinoOTA as research/espota.md §1 describes it). Zero knobs take the
// default given with them.
type EspotaConfig struct {
	// Running is the image before the upload; default version "1.0.0".
	Running Build
	// Expect, when set, is the identity of the image the device will
	// receive; nil reads it from the image's app descriptor.
	Expect *Build
	// Password, when set, asks for the MD5 challenge (a 32-hex nonce,
	// cores up to 3.3.0 and ESP8266); "" takes any invitation.
	Password string
	Shape    EspotaShape
	// After is what the device runs after a successful upload; RollsBack
	// and FallsToThird put it back on Running, NeverComesBack leaves it
	// silent. Default InstallsAndKeeps.
	After After
	// EarlyOKAt is EspotaEarlyOK's fraction of the image; default 0.3.
	EarlyOKAt float64
	// ChatterEvery is the pause between repeated counts; default 200 ms.
	ChatterEvery time.Duration
	// ReadTimeout is how long the device waits for data before it resends
	// its last count (three times) and then aborts; default 1 s.
	ReadTimeout time.Duration
	// BytesPerSecond bounds how fast it reads; 0 = as fast as it comes.
	BytesPerSecond int
	// BootTime is how long a restart ignores invitations; default 1 s.
	BootTime time.Duration
	// TellsVersion adds version (and project) to the TXT record the way
	// docs/firmware.md §4 suggests; NoTXT makes TXT return nil always (a
	// device seen by no mDNS browse).
	TellsVersion bool
	NoTXT        bool
}

func (c EspotaConfig) withDefaults() EspotaConfig {
	if c.Running == (Build{}) {
		c.Running = Build{Project: "sketch", Version: "1.0.0", ELF: ELFOf("old")}
	}
	if c.EarlyOKAt == 0 {
		c.EarlyOKAt = 0.3
	}
	if c.ChatterEvery == 0 {
		c.ChatterEvery = 200 * time.Millisecond
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = time.Second
	}
	if c.BootTime == 0 {
		c.BootTime = time.Second
	}
	return c
}

// EspotaDevice is a running fake ArduinoOTA device on 127.0.0.1.
type EspotaDevice struct {
	life
	cfg EspotaConfig
	udp *net.UDPConn

	running    Build
	busy       bool // a transfer runs: ArduinoOTA answers no invitation then
	restarting bool
	uploads    int
	received   []int // bytes taken per transfer
	conns      map[net.Conn]struct{}
}

// StartEspota starts a fake ArduinoOTA device; Close stops it.
func StartEspota(cfg EspotaConfig) (*EspotaDevice, error) {
	cfg = cfg.withDefaults()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	d := &EspotaDevice{cfg: cfg, udp: u, running: cfg.Running, conns: map[net.Conn]struct{}{}, life: newLife()}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.serveUDP()
	}()
	return d, nil
}

// Host is the device's address.
func (d *EspotaDevice) Host() string { return "127.0.0.1" }

// Port is the UDP port invitations go to.
func (d *EspotaDevice) Port() int { return d.udp.LocalAddr().(*net.UDPAddr).Port }

// Uploads is how many transfers began (the device connected back).
func (d *EspotaDevice) Uploads() int { return locked(&d.mu, &d.uploads) }

// Received is how many bytes each transfer took.
func (d *EspotaDevice) Received() []int { return lockedCopy(&d.mu, &d.received) }

// Running is the image the device runs now.
func (d *EspotaDevice) Running() Build { return locked(&d.mu, &d.running) }

// TXT is the record the device's mDNS responder would advertise on
// _arduino._tcp now (nil while it restarts, or with NoTXT): ArduinoOTA's
// keys, and version and project with TellsVersion.
func (d *EspotaDevice) TXT() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.NoTXT || d.restarting {
		return nil
	}
	auth := "no"
	if d.cfg.Password != "" {
		auth = "yes"
	}
	t := map[string]string{"board": "esp32", "tcp_check": "no", "ssh_upload": "no", "auth_upload": auth}
	if d.cfg.TellsVersion {
		t["version"], t["project"] = d.running.Version, d.running.Project
	}
	return t
}

// Close stops the device and waits for its goroutines.
func (d *EspotaDevice) Close() error {
	d.mu.Lock()
	if !d.stopLocked() {
		d.mu.Unlock()
		return nil
	}
	for c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
	d.udp.Close()
	d.wg.Wait()
	return nil
}

func (d *EspotaDevice) record(what string) {
	d.logEvent(Event{What: what, Build: d.running})
}

// invitation is a parsed "<cmd> <port> <size> <md5>\n".
type invitation struct {
	cmd, port, size int
	md5             string
	from            *net.UDPAddr
}

// parseInvitation reads an invitation as ArduinoOTA does: digits for the
// command, port and size, then a 32-character MD5; anything else is
// ignored (ok false).
func parseInvitation(p []byte) (invitation, bool) {
	f := strings.Fields(string(p))
	if len(f) != 4 {
		return invitation{}, false
	}
	var n [3]int
	for i := range 3 {
		v, err := strconv.Atoi(f[i])
		if err != nil || v < 0 {
			return invitation{}, false
		}
		n[i] = v
	}
	if n[0] != 0 && n[0] != 100 || len(f[3]) != 32 {
		return invitation{}, false
	}
	return invitation{cmd: n[0], port: n[1], size: n[2], md5: strings.ToLower(f[3])}, true
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// serveUDP answers invitations and the auth exchange (research/espota.md
// §1.3–§1.5): replies go to the sender, bare ASCII without a newline.
func (d *EspotaDevice) serveUDP() {
	buf := make([]byte, 1500)
	var waitAuth *invitation
	var nonce string
	for {
		n, from, err := d.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		d.mu.Lock()
		ignore := d.busy || d.restarting
		d.mu.Unlock()
		if ignore {
			continue
		}
		pkt := buf[:n]
		if waitAuth != nil {
			// Any packet now is the auth message.
			inv := *waitAuth
			waitAuth = nil
			f := strings.Fields(string(pkt))
			if len(f) != 3 || f[0] != "200" || len(f[1]) != 32 || len(f[2]) != 32 {
				continue
			}
			want := md5hex(md5hex(d.cfg.Password) + ":" + nonce + ":" + f[1])
			if subtle.ConstantTimeCompare([]byte(want), []byte(f[2])) != 1 {
				_, _ = d.udp.WriteToUDP([]byte("Authentication Failed"), from)
				continue
			}
			_, _ = d.udp.WriteToUDP([]byte("OK"), from)
			inv.from = from
			d.begin(inv)
			continue
		}
		inv, ok := parseInvitation(pkt)
		if !ok {
			continue
		}
		inv.from = from
		if d.cfg.Password != "" {
			nonce = md5hex(strconv.FormatInt(time.Now().UnixNano(), 10))
			waitAuth = &inv
			_, _ = d.udp.WriteToUDP([]byte("AUTH "+nonce), from)
			continue
		}
		_, _ = d.udp.WriteToUDP([]byte("OK"), from)
		d.begin(inv)
	}
}

// begin connects back to the invitation's source address and runs the
// transfer in the background (the device answers no invitation meanwhile).
func (d *EspotaDevice) begin(inv invitation) {
	d.mu.Lock()
	d.busy = true
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.transfer(inv)
		d.mu.Lock()
		d.busy = false
		d.mu.Unlock()
	}()
}

func (d *EspotaDevice) transfer(inv invitation) {
	dl := net.Dialer{Timeout: 2 * time.Second, Control: control}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // Close ends a connect under way
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer cancel()
	c, err := dl.DialContext(ctx, "tcp4", net.JoinHostPort(inv.from.IP.String(), strconv.Itoa(inv.port)))
	if err != nil {
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		c.Close()
		return
	}
	d.conns[c] = struct{}{}
	d.uploads++
	d.received = append(d.received, 0)
	idx := len(d.received) - 1
	d.record("upload")
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
		c.Close()
	}()

	cfg := d.cfg
	if cfg.Shape == EspotaCountsNoData {
		d.chatter(c, strconv.Itoa(1460))
		return
	}
	data := make([]byte, 0, inv.size)
	buf := make([]byte, 1460)
	start := time.Now()
	resends := 0
	last := ""
	for len(data) < inv.size {
		_ = c.SetReadDeadline(time.Now().Add(cfg.ReadTimeout))
		n, err := c.Read(buf[:min(len(buf), inv.size-len(data))])
		if n > 0 {
			resends = 0
			data = append(data, buf[:n]...)
			d.mu.Lock()
			d.received[idx] = len(data)
			d.mu.Unlock()
			last = strconv.Itoa(n)
			if _, err := c.Write([]byte(last)); err != nil {
				return
			}
			if cfg.Shape == EspotaEarlyOK && float64(len(data)) >= cfg.EarlyOKAt*float64(inv.size) {
				_, _ = c.Write([]byte("OK"))
				return
			}
			if bps := cfg.BytesPerSecond; bps > 0 {
				due := start.Add(time.Duration(float64(len(data)) / float64(bps) * float64(time.Second)))
				if !d.sleep(time.Until(due)) {
					return
				}
			}
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && last != "" && resends < 3 {
			resends++
			if _, err := c.Write([]byte(last)); err != nil {
				return
			}
			continue
		}
		return // receive error: abort without a word
	}
	if cfg.Shape == EspotaChatterNoOK {
		d.chatter(c, last)
		return
	}
	if md5hex(string(data)) != inv.md5 {
		_, _ = c.Write([]byte("MD5 Check Failed\r\n"))
		return
	}
	if inv.cmd == 0 && data[0] != imageMagic {
		_, _ = c.Write([]byte("Wrong Magic Byte\r\n"))
		return
	}
	b, err := IdentityOf(data)
	if cfg.Expect != nil {
		b, err = *cfg.Expect, nil
	}
	if err != nil && inv.cmd == 0 {
		_, _ = c.Write([]byte("Could Not Activate The Firmware\r\n"))
		return
	}
	if cfg.Shape != EspotaLoseOK {
		_, _ = c.Write([]byte("OK"))
	}
	d.mu.Lock()
	d.record("installed")
	d.mu.Unlock()
	if inv.cmd != 0 {
		b = Build{} // a filesystem image changes no app
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.lifecycle(b)
	}()
}

// chatter repeats count every ChatterEvery until the host goes away.
func (d *EspotaDevice) chatter(c net.Conn, count string) {
	for d.sleep(d.cfg.ChatterEvery) {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(count)); err != nil {
			return
		}
	}
}

// lifecycle restarts the device after an upload of n ("" n: the app stays).
func (d *EspotaDevice) lifecycle(n Build) {
	if d.cfg.After == NeverRestarts {
		return
	}
	if !d.sleep(100 * time.Millisecond) {
		return
	}
	d.mu.Lock()
	old := d.running
	d.restarting = true
	d.record("restart")
	d.mu.Unlock()
	if d.cfg.After == NeverComesBack || !d.sleep(d.cfg.BootTime) {
		return
	}
	next := n
	switch {
	case n == (Build{}):
		next = old
	case d.cfg.After == RollsBack, d.cfg.After == CrashLoopsThenOld, d.cfg.After == PendingThenOld:
		next = old
	case d.cfg.After == FallsToThird:
		next = Build{Project: old.Project, Version: "0.9.0", ELF: ELFOf("factory")}
	case d.cfg.After == RunsForeign:
		next = Build{Project: n.Project, Version: n.Version, ELF: ELFOf("foreign")}
	}
	d.mu.Lock()
	d.running, d.restarting = next, false
	d.record("up")
	d.mu.Unlock()
}

func (d *EspotaDevice) sleep(t time.Duration) bool { return sleepOrDone(d.done, t) }
