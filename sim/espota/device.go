package espota

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// The personality around the wire server (server.go): a sketch running
// ArduinoOTA on a device of the core, its Update class on the core's flash.

// The espota personalities.
const (
	// ArduinoSketch is an arduino-esp32 sketch with ArduinoOTA: espota on
	// UDP 3232 (personality "arduino").
	ArduinoSketch core.Personality = "arduino"
	// ESP8266Sketch is an esp8266/Arduino sketch with ArduinoOTA: espota on
	// UDP 8266 (personality "esp8266").
	ESP8266Sketch core.Personality = "esp8266"
)

// The firmwares of the espota personalities.
var (
	ArduinoFirmware core.Firmware = otaFirmware{ESP32}
	ESP8266Firmware core.Firmware = otaFirmware{ESP8266}
)

// otaFirmware is a sketch running ArduinoOTA on one of the two cores.
type otaFirmware struct{ flavor Flavor }

func (f otaFirmware) Traits() core.Traits {
	if f.flavor == ESP8266 {
		return core.Traits{Name: ESP8266Sketch, Platform: core.PlatformESP8266, Protocol: "espota", OTAPort: 8266}
	}
	return core.Traits{Name: ArduinoSketch, Platform: core.PlatformArduinoESP32, Protocol: "espota", OTAPort: 3232,
		Knobs: []core.Knob{{Field: "RollbackLater", Why: "the others confirm themselves already"}}}
}

// Check checks the arduino-esp32 core version (Config.Core).
func (f otaFirmware) Check(c *core.Config) error {
	if f.flavor == ESP32 && c.Core != "" {
		if _, err := coreAtMost330(c.Core); err != nil {
			return err
		}
	}
	return nil
}

// md5Auth reports whether the sketch answers espota's MD5 challenge rather
// than PBKDF2: every ESP8266, and arduino-esp32 up to core 3.3.0.
func (f otaFirmware) md5Auth(c *core.Config) bool {
	if f.flavor == ESP8266 {
		return true
	}
	old, _ := coreAtMost330(c.Core) // checked by Check; "" is the newest
	return c.Core != "" && old
}

// Servers: the espota server on the OTA port's UDP socket.
func (f otaFirmware) Servers(e *core.Env) []core.Server {
	return []core.Server{{Name: "espota", Port: core.PortOTA, Packet: func(pc net.PacketConn) core.PacketServer {
		return newEspotaRunner(e, f, pc)
	}}}
}

// Services is ArduinoOTA's MDNS.enableArduino(port, auth), plus the §4
// TXT keys with Extensions.
func (f otaFirmware) Services(e *core.Env) []mdnsd.Service {
	c := e.Config()
	authUpload := "no"
	if !c.Password.IsZero() {
		authUpload = "yes"
	}
	// The order the sketch adds the items in: ESPmDNS passes board,
	// tcp_check, ssh_upload, auth_upload to mdns_service_add (auth_upload
	// set to yes in place after); ESP8266mDNS adds tcp_check, ssh_upload,
	// board, auth_upload one by one. A sketch's own items come after.
	txt := []string{"board=" + c.Board, "tcp_check=no", "ssh_upload=no", "auth_upload=" + authUpload}
	if f.flavor == ESP8266 {
		txt = []string{"tcp_check=no", "ssh_upload=no", "board=" + c.Board, "auth_upload=" + authUpload}
	}
	if c.Extensions {
		txt = append(txt, e.ContractTXT("api="+core.ContractAPIVersion)...)
	}
	// Both responders keep TXT items in a list they prepend to
	// (ESP-IDF mdns allocate_txt_base and mdns_service_txt_item_set,
	// LEAmDNS stcMDNSServiceTxts::add), so the wire order is reversed.
	slices.Reverse(txt)
	return []mdnsd.Service{{Instance: c.Instance, Type: "_arduino._tcp", Port: uint16(e.Port(core.PortOTA)), TXT: txt}}
}

// espotaRebootDelay is ArduinoOTA's pause between the final OK and
// ESP.restart() (stop, delay(10), end callback, delay(100)).
const espotaRebootDelay = 110 * time.Millisecond

// espotaRunner is one espota server on the device's UDP socket, alive for
// one boot (or until the faults change).
type espotaRunner struct {
	e       *core.Env
	key     espotaKey // the fault settings it was made with
	pc      net.PacketConn
	srv     *Server
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	once    sync.Once
}

func newEspotaRunner(e *core.Env, f otaFirmware, pc net.PacketConn) *espotaRunner {
	ctx, cancel := context.WithCancel(e.Context())
	r := &espotaRunner{e: e, pc: pc, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	c := e.Config()
	a := &espotaUpdater{e: e, ctx: ctx, flavor: f.flavor}
	r.key = espotaKeyOf(e)
	cfg := Config{
		Flavor:        f.flavor,
		Legacy:        f.md5Auth(c),
		Latency:       r.key.latency,
		NoConnectBack: r.key.noConnectBack,
		LoseFinalOK:   r.key.loseOK,
		DelayScale:    e.Timing().ProtocolDelayScale,
		LocalIP:       net.IP(c.IP.AsSlice()),
		DialControl:   core.LWIPSockopts,
		Hold:          e.Hold,
		Logger:        e.Logger().With("server", "espota"),
		OnEvent:       a.onEvent,
		RecvTimeout:   0, // ArduinoOTA's 1000 ms
	}
	cfg.Password = c.Password
	r.srv = NewServer(cfg, a)
	return r
}

// espotaKey is what the espota engine takes from the faults. A fault acting
// on every session is the engine's switch; one acting on some sessions is
// drawn per session by the updater.
type espotaKey struct {
	latency               time.Duration
	noConnectBack, loseOK bool
}

func espotaKeyOf(e *core.Env) espotaKey {
	k := espotaKey{latency: e.Latency()}
	for _, f := range e.Faults() {
		switch {
		case f.Kind == core.FaultNoConnectBack && f.Chance >= 1:
			k.noConnectBack = true
		case f.Kind == core.FaultLoseOK && f.Chance >= 1:
			k.loseOK = true
		}
	}
	return k
}

func (r *espotaRunner) Start() {
	r.started = true
	go func() {
		defer close(r.done)
		if err := r.srv.Serve(r.ctx, r.pc); err != nil {
			r.e.Logger().Warn("espota serve", "err", err)
		}
	}()
}

// Stale: the faults the engine holds (latency, no-connect-back, lose-ok)
// changed.
func (r *espotaRunner) Stale() bool { return r.key != espotaKeyOf(r.e) }

// Stop ends the server (aborting a running transfer); the socket stays
// open, it is the device's.
func (r *espotaRunner) Stop() {
	r.once.Do(func() {
		r.cancel()
		if r.started {
			<-r.done
		}
	})
}

// espotaUpdater is the device's Update class for the espota engine. All
// calls come from the Serve goroutine.
type espotaUpdater struct {
	e      *core.Env
	ctx    context.Context
	flavor Flavor
	remote string // UDP peer of the last invitation
	// restarting: a reboot was requested (after the final OK, or a power
	// loss): the device answers nothing more until the runner is replaced.
	restarting atomic.Bool
	u          *core.Upload
	sum        hash.Hash
	// head holds the first sector of an ESP32 app image: the Updater
	// buffers 4096 bytes (SPI_FLASH_SEC_SIZE) and looks at the first byte
	// only when it writes them (_writeBuffer).
	head    []byte
	flushed bool
	size    int
	// noReboot: this update's success does not restart the sketch
	// (no-reboot: ArduinoOTA.setRebootOnSuccess(false)).
	noReboot bool
}

// Shape draws this update's wire faults (trickle, early-ok, chatter).
func (a *espotaUpdater) Shape() Shape {
	var sh Shape
	if a.u == nil {
		return sh
	}
	sh.ReadMax = a.u.Chunk()
	size := int64(a.size)
	if f, ok := a.e.ArmPoint(core.FaultEarlyOK, size); ok {
		a.e.Emit(core.Event{Event: core.EventFault, Fault: f.Fault.String(), Protocol: "espota", Remote: a.remote, Size: size})
		sh.EarlyOK, sh.EarlyOKAt, sh.EarlyOKClose = true, int(f.At), f.Mode == core.ModeClose
	}
	if f, ok := a.e.ArmPoint(core.FaultChatter, size); ok {
		a.e.Emit(core.Event{Event: core.EventFault, Fault: f.Fault.String(), Protocol: "espota", Remote: a.remote, Size: size})
		sh.Chatter, sh.ChatterAt, sh.ChatterEvery = true, int(f.At), f.Duration
	}
	return sh
}

// updaterSector is arduino-esp32's Updater buffer, SPI_FLASH_SEC_SIZE.
const updaterSector = 4096

func (a *espotaUpdater) updErr(k UpdateErrKind) *UpdateError {
	return NewUpdateError(a.flavor, k)
}

func (a *espotaUpdater) Begin(size, cmd int) error {
	a.u = a.e.NewUpload(a.ctx, "espota", "", a.remote, int64(size))
	a.noReboot = false
	a.sum = md5.New()
	fail := func(err error, reason string) error {
		text := ""
		if a.flavor == ESP8266 {
			text = err.Error() // ESP8266 answers "ERR: …" over UDP
		}
		a.u.Fail(0, text, reason)
		return err
	}
	a.head, a.flushed, a.size = a.head[:0], a.flavor == ESP8266 || cmd != CmdFlash, size
	if cmd != CmdFlash {
		if a.flavor == ESP8266 {
			return fail(a.updErr(ErrKindSpace), "no filesystem area")
		}
		fsSize := a.e.FilesystemSize()
		switch {
		case fsSize == 0:
			return fail(a.updErr(ErrKindNoPartition), "no spiffs partition")
		case size == 0:
			return fail(a.updErr(ErrKindSize), "size 0")
		case int64(size) > fsSize:
			err := a.updErr(ErrKindSize)
			return fail(err, fmt.Sprintf("Update.begin: %s (%d bytes do not fit the %d-byte spiffs partition)", err, size, fsSize))
		}
		a.u.ToFilesystem()
		if e := a.u.Begin(true); e != core.OTANone {
			return fail(a.updErr(ErrKindAborted), "another upload is running")
		}
		return nil
	}
	switch {
	case size == 0:
		return fail(a.updErr(ErrKindSize), "size 0")
	case int64(size) > a.e.Config().SlotSize:
		k := ErrKindSize // ESP32 Update.begin: "too large"
		if a.flavor == ESP8266 {
			k = ErrKindSpace
		}
		err := a.updErr(k)
		return fail(err, fmt.Sprintf("Update.begin: %s (%d bytes do not fit the %d-byte slot)", err, size, a.e.Config().SlotSize))
	}
	if f, hit := a.e.Chance(core.FaultNoConnectBack); hit && f.Chance < 1 {
		// Begin failing is what makes ESP32 skip the connect-back.
		a.e.Emit(core.Event{Event: core.EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
		a.u.Fail(0, "", "fault "+f.String())
		return fmt.Errorf("fault %s: %w", f, ErrDisconnect)
	}
	if e := a.u.Begin(true); e != core.OTANone {
		return fail(a.updErr(ErrKindAborted), "another upload is running")
	}
	return nil
}

func (a *espotaUpdater) Write(p []byte) error {
	if a.u == nil {
		return a.updErr(ErrKindAborted)
	}
	a.sum.Write(p)
	if !a.flushed {
		// Update.write: bytes that fit the sector buffer are only copied
		// (and acknowledged); the write that overflows it, or completes
		// the image, writes the sector. With the default decrypt mode
		// (U_AES_DECRYPT_AUTO) and no key, a first byte other than 0xE9
		// means "encrypted image": decrypting fails before the magic check.
		if n := len(a.head) + len(p); n <= updaterSector && n < a.size {
			a.head = append(a.head, p...)
			if a.u.Chunk() > 0 {
				// A trickle is the sketch taking data slowly, buffered or not.
				if e := a.u.Pace(len(p)); e != core.OTANone {
					a.u.Fail(0, "", "device going down")
					return fmt.Errorf("stopped: %w", ErrDisconnect)
				}
				a.u.Prepay(int64(len(p)))
			}
			return nil
		}
		a.flushed = true
		p = append(a.head, p...)
		if p[0] != 0xE9 {
			a.u.SetReason(fmt.Sprintf("first byte 0x%02x is not 0xE9: taken for an encrypted image, and no key is set", p[0]))
			err := a.updErr(ErrKindDecrypt)
			a.u.Fail(0, err.Error(), "")
			return err
		}
	}
	e := a.u.Write(p)
	var err error
	switch e {
	case core.OTANone:
		return nil
	case core.OTAMagic:
		err = a.updErr(ErrKindMagicByte)
	case core.OTASpace:
		err = a.updErr(ErrKindSpace)
	case core.OTAWrite:
		err = a.updErr(ErrKindWrite)
	case core.OTAPowerLoss:
		a.u.Fail(0, "", "")
		a.restarting.Store(true)
		a.e.RequestReboot("power_loss")
		return fmt.Errorf("power loss: %w", ErrPowerLoss)
	default: // drop, canceled
		a.u.Fail(0, "", "")
		return fmt.Errorf("connection dropped: %w", ErrDisconnect)
	}
	a.u.Fail(0, err.Error(), "")
	return err
}

func (a *espotaUpdater) End(md5hex string) error {
	if a.u == nil {
		return a.updErr(ErrKindAborted)
	}
	got := hex.EncodeToString(a.sum.Sum(nil))
	if got != md5hex {
		err := NewMD5Error(a.flavor, md5hex, got)
		a.u.Fail(0, err.Msg, "md5 mismatch")
		return err
	}
	if e := a.u.End(); e != core.OTANone {
		if e == core.OTACanceled {
			a.u.Fail(0, "", "device going down")
			return fmt.Errorf("stopped: %w", ErrDisconnect)
		}
		// esp_ota_set_boot_partition verifies the image.
		err := a.updErr(ErrKindActivate)
		a.u.Fail(0, err.Msg, "")
		return err
	}
	a.u.Succeed(0, "OK")
	if f, hit := a.e.Chance(core.FaultNoReboot); hit {
		a.noReboot = true
		a.e.Emit(core.Event{Event: core.EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
	}
	if f, hit := a.e.Chance(core.FaultLoseOK); hit && f.Chance < 1 {
		a.e.Emit(core.Event{Event: core.EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
		a.scheduleReboot()
		return fmt.Errorf("fault %s: %w", f, ErrDisconnect)
	}
	return nil
}

func (a *espotaUpdater) Abort() {
	if a.u != nil && !a.u.Done() {
		a.u.Fail(0, "", "aborted (receive timeout, host gone or device stopping)")
	}
}

// Restarting is espota.Restarter: a reboot is on its way.
func (a *espotaUpdater) Restarting() bool { return a.restarting.Load() }

func (a *espotaUpdater) scheduleReboot() {
	e := a.e
	if a.noReboot {
		return
	}
	a.restarting.Store(true)
	delay := min(espotaRebootDelay, max(e.Timing().RebootDelayMax, time.Millisecond))
	time.AfterFunc(delay, func() { e.RequestReboot("update") })
}

func (a *espotaUpdater) onEvent(e Event) {
	remote := ""
	if e.Remote != nil {
		remote = e.Remote.String()
	}
	switch e.Kind {
	case EventInvitation:
		a.remote = remote
	case EventAuthFailed:
		a.e.RecordAuthFailure("espota", "", remote, 0, "Authentication Failed", "wrong password")
	case EventUploadFinished:
		a.scheduleReboot()
	case EventUploadFailed:
		if a.u != nil && !a.u.Done() {
			a.u.Fail(0, "", e.Message)
		}
	}
}

// coreAtMost330 reports whether an arduino-esp32 core version is ≤ 3.3.0,
// the last release with MD5 OTA auth.
func coreAtMost330(v string) (bool, error) {
	var n [3]int
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".", 3)
	for i, p := range parts {
		if p == "" {
			return false, fmt.Errorf("bad core version %q", v)
		}
		for _, ch := range p {
			if ch < '0' || ch > '9' {
				return false, fmt.Errorf("bad core version %q", v)
			}
			n[i] = n[i]*10 + int(ch-'0')
			if n[i] > 1000 {
				return false, fmt.Errorf("bad core version %q", v)
			}
		}
	}
	for i, want := range [3]int{3, 3, 0} {
		if n[i] != want {
			return n[i] < want, nil
		}
	}
	return true, nil
}
