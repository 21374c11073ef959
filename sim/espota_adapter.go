package sim

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/sim/espota"
)

// espotaRebootDelay is ArduinoOTA's pause between the final OK and
// ESP.restart() (stop, delay(10), end callback, delay(100)).
const espotaRebootDelay = 110 * time.Millisecond

// espotaRunner is one espota server on the device's UDP socket, alive for
// one boot (or until the faults change).
type espotaRunner struct {
	d       *Device
	key     espotaKey // the fault settings it was made with
	pc      net.PacketConn
	srv     *espota.Server
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	once    sync.Once
}

func (d *Device) newEspotaRunner(pc net.PacketConn) *espotaRunner {
	ctx, cancel := context.WithCancel(d.ctx)
	r := &espotaRunner{d: d, pc: pc, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	flavor := espota.ESP32
	if d.s.esp8266 {
		flavor = espota.ESP8266
	}
	a := &espotaUpdater{d: d, ctx: ctx, flavor: flavor}
	r.key = d.espotaKey()
	cfg := espota.Config{
		Flavor:        flavor,
		Legacy:        d.s.md5Auth,
		Latency:       r.key.latency,
		NoConnectBack: r.key.noConnectBack,
		LoseFinalOK:   r.key.loseOK,
		DelayScale:    d.s.timing.ProtocolDelayScale,
		LocalIP:       net.IP(d.s.IP.AsSlice()),
		DialControl:   lwipSockopts,
		Hold:          d.leaveConn,
		Logger:        d.log.With("server", "espota"),
		OnEvent:       a.onEvent,
		RecvTimeout:   0, // ArduinoOTA's 1000 ms
	}
	cfg.Password = d.s.Password
	r.srv = espota.NewServer(cfg, a)
	return r
}

// espotaKey is what the espota engine takes from the faults. A fault acting
// on every session is the engine's switch; one acting on some sessions is
// drawn per session by the updater.
type espotaKey struct {
	latency               time.Duration
	noConnectBack, loseOK bool
}

func (d *Device) espotaKey() espotaKey {
	k := espotaKey{latency: d.latency()}
	for _, f := range d.Faults() {
		switch {
		case f.Kind == FaultNoConnectBack && f.Chance >= 1:
			k.noConnectBack = true
		case f.Kind == FaultLoseOK && f.Chance >= 1:
			k.loseOK = true
		}
	}
	return k
}

func (r *espotaRunner) start() {
	r.started = true
	go func() {
		defer close(r.done)
		if err := r.srv.Serve(r.ctx, r.pc); err != nil {
			r.d.log.Warn("espota serve", "err", err)
		}
	}()
}

// stop ends the server (aborting a running transfer); the socket stays
// open, it is the device's.
func (r *espotaRunner) stop() {
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
	d      *Device
	ctx    context.Context
	flavor espota.Flavor
	remote string // UDP peer of the last invitation
	// restarting: a reboot was requested (after the final OK, or a power
	// loss): the device answers nothing more until the runner is replaced.
	restarting atomic.Bool
	u          *upload
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
func (a *espotaUpdater) Shape() espota.Shape {
	var sh espota.Shape
	if a.u == nil {
		return sh
	}
	sh.ReadMax = a.u.chunk
	size := int64(a.size)
	if f, ok := a.d.armPoint(FaultEarlyOK, size); ok {
		a.d.emit(Event{Event: EventFault, Fault: f.Fault.String(), Protocol: "espota", Remote: a.remote, Size: size})
		sh.EarlyOK, sh.EarlyOKAt, sh.EarlyOKClose = true, int(f.at), f.Mode == ModeClose
	}
	if f, ok := a.d.armPoint(FaultChatter, size); ok {
		a.d.emit(Event{Event: EventFault, Fault: f.Fault.String(), Protocol: "espota", Remote: a.remote, Size: size})
		sh.Chatter, sh.ChatterAt, sh.ChatterEvery = true, int(f.at), f.Duration
	}
	return sh
}

// updaterSector is arduino-esp32's Updater buffer, SPI_FLASH_SEC_SIZE.
const updaterSector = 4096

func (a *espotaUpdater) updErr(k espota.UpdateErrKind) *espota.UpdateError {
	return espota.NewUpdateError(a.flavor, k)
}

func (a *espotaUpdater) Begin(size, cmd int) error {
	a.u = a.d.newUpload(a.ctx, "espota", "", a.remote, int64(size))
	a.noReboot = false
	a.sum = md5.New()
	fail := func(err error, reason string) error {
		text := ""
		if a.flavor == espota.ESP8266 {
			text = err.Error() // ESP8266 answers "ERR: …" over UDP
		}
		a.u.fail(0, text, reason)
		return err
	}
	a.head, a.flushed, a.size = a.head[:0], a.flavor == espota.ESP8266 || cmd != espota.CmdFlash, size
	if cmd != espota.CmdFlash {
		if a.flavor == espota.ESP8266 {
			return fail(a.updErr(espota.ErrKindSpace), "no filesystem area")
		}
		a.d.mu.Lock()
		fsSize := a.d.flash.fsSize
		a.d.mu.Unlock()
		switch {
		case fsSize == 0:
			return fail(a.updErr(espota.ErrKindNoPartition), "no spiffs partition")
		case size == 0:
			return fail(a.updErr(espota.ErrKindSize), "size 0")
		case int64(size) > fsSize:
			err := a.updErr(espota.ErrKindSize)
			return fail(err, fmt.Sprintf("Update.begin: %s (%d bytes do not fit the %d-byte spiffs partition)", err, size, fsSize))
		}
		a.u.fs = true
		if e := a.u.begin(true); e != errNone {
			return fail(a.updErr(espota.ErrKindAborted), "another upload is running")
		}
		return nil
	}
	switch {
	case size == 0:
		return fail(a.updErr(espota.ErrKindSize), "size 0")
	case int64(size) > a.d.s.SlotSize:
		k := espota.ErrKindSize // ESP32 Update.begin: "too large"
		if a.flavor == espota.ESP8266 {
			k = espota.ErrKindSpace
		}
		err := a.updErr(k)
		return fail(err, fmt.Sprintf("Update.begin: %s (%d bytes do not fit the %d-byte slot)", err, size, a.d.s.SlotSize))
	}
	if f, hit := a.d.chance(FaultNoConnectBack); hit && f.Chance < 1 {
		// Begin failing is what makes ESP32 skip the connect-back.
		a.d.emit(Event{Event: EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
		a.u.fail(0, "", "fault "+f.String())
		return fmt.Errorf("fault %s: %w", f, espota.ErrDisconnect)
	}
	if e := a.u.begin(true); e != errNone {
		return fail(a.updErr(espota.ErrKindAborted), "another upload is running")
	}
	return nil
}

func (a *espotaUpdater) Write(p []byte) error {
	if a.u == nil {
		return a.updErr(espota.ErrKindAborted)
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
			if a.u.chunk > 0 {
				// A trickle is the sketch taking data slowly, buffered or not.
				if e := a.u.pace(len(p)); e != errNone {
					a.u.fail(0, "", "device going down")
					return fmt.Errorf("stopped: %w", espota.ErrDisconnect)
				}
				a.u.prepaid += int64(len(p))
			}
			return nil
		}
		a.flushed = true
		p = append(a.head, p...)
		if p[0] != 0xE9 {
			a.u.rec.Reason = fmt.Sprintf("first byte 0x%02x is not 0xE9: taken for an encrypted image, and no key is set", p[0])
			err := a.updErr(espota.ErrKindDecrypt)
			a.u.fail(0, err.Error(), "")
			return err
		}
	}
	e := a.u.write(p)
	var err error
	switch e {
	case errNone:
		return nil
	case errMagic:
		err = a.updErr(espota.ErrKindMagicByte)
	case errSpace:
		err = a.updErr(espota.ErrKindSpace)
	case errWrite:
		err = a.updErr(espota.ErrKindWrite)
	case errPowerLoss:
		a.u.fail(0, "", "")
		a.restarting.Store(true)
		a.d.requestReboot("power_loss")
		return fmt.Errorf("power loss: %w", espota.ErrPowerLoss)
	default: // drop, canceled
		a.u.fail(0, "", "")
		return fmt.Errorf("connection dropped: %w", espota.ErrDisconnect)
	}
	a.u.fail(0, err.Error(), "")
	return err
}

func (a *espotaUpdater) End(md5hex string) error {
	if a.u == nil {
		return a.updErr(espota.ErrKindAborted)
	}
	got := hex.EncodeToString(a.sum.Sum(nil))
	if got != md5hex {
		err := espota.NewMD5Error(a.flavor, md5hex, got)
		a.u.fail(0, err.Msg, "md5 mismatch")
		return err
	}
	if e := a.u.end(); e != errNone {
		if e == errCanceled {
			a.u.fail(0, "", "device going down")
			return fmt.Errorf("stopped: %w", espota.ErrDisconnect)
		}
		// esp_ota_set_boot_partition verifies the image.
		err := a.updErr(espota.ErrKindActivate)
		a.u.fail(0, err.Msg, "")
		return err
	}
	a.u.succeed(0, "OK")
	if f, hit := a.d.chance(FaultNoReboot); hit {
		a.noReboot = true
		a.d.emit(Event{Event: EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
	}
	if f, hit := a.d.chance(FaultLoseOK); hit && f.Chance < 1 {
		a.d.emit(Event{Event: EventFault, Fault: f.String(), Protocol: "espota", Remote: a.remote})
		a.scheduleReboot()
		return fmt.Errorf("fault %s: %w", f, espota.ErrDisconnect)
	}
	return nil
}

func (a *espotaUpdater) Abort() {
	if a.u != nil && !a.u.done {
		a.u.fail(0, "", "aborted (receive timeout, host gone or device stopping)")
	}
}

// Restarting is espota.Restarter: a reboot is on its way.
func (a *espotaUpdater) Restarting() bool { return a.restarting.Load() }

func (a *espotaUpdater) scheduleReboot() {
	d := a.d
	if a.noReboot {
		return
	}
	a.restarting.Store(true)
	delay := min(espotaRebootDelay, max(d.s.timing.RebootDelayMax, time.Millisecond))
	time.AfterFunc(delay, func() { d.requestReboot("update") })
}

func (a *espotaUpdater) onEvent(e espota.Event) {
	remote := ""
	if e.Remote != nil {
		remote = e.Remote.String()
	}
	switch e.Kind {
	case espota.EventInvitation:
		a.remote = remote
	case espota.EventAuthFailed:
		a.d.recordAuthFailure("espota", "", remote, 0, "Authentication Failed", "wrong password")
	case espota.EventUploadFinished:
		a.scheduleReboot()
	case espota.EventUploadFailed:
		if a.u != nil && !a.u.done {
			a.u.fail(0, "", e.Message)
		}
	}
}
