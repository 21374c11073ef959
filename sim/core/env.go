package core

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"time"
)

// Env is what a personality's code sees of its device: its settings, the
// running image, the armed faults, events, upload sessions and resets.
// Its methods are safe for concurrent use.
type Env struct{ d *Device }

// Config is the device's Config with the defaults applied. Read it, do not
// change it.
func (e *Env) Config() *Config { return &e.d.s.Config }

// Platform is what the device's firmware is built on (for a firmware built
// for both cores, the chip decided).
func (e *Env) Platform() Platform { return e.d.s.platform }

// Timing is the device's timing with the defaults applied.
func (e *Env) Timing() Timing { return e.d.s.timing }

// FirmwareDelay is a fixed sleep of the firmware's own code (a delay(100)
// before ESP.restart(), say) scaled by Timing.ProtocolDelayScale.
func (e *Env) FirmwareDelay(d time.Duration) time.Duration {
	if sc := e.d.s.timing.ProtocolDelayScale; sc > 0 {
		return time.Duration(float64(d) * sc)
	}
	return d
}

// Logger is the device's logger (debug logs; discarded by default).
func (e *Env) Logger() *slog.Logger { return e.d.log }

// Context ends when the device is closed.
func (e *Env) Context() context.Context { return e.d.ctx }

// BootContext ends when this boot does (the next reset, or the device
// closing): the life of a firmware's own task, such as a download it runs.
func (e *Env) BootContext() context.Context {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	if e.d.bootCtx == nil {
		return e.d.ctx
	}
	return e.d.bootCtx
}

// State is a snapshot of the device.
func (e *Env) State() State { return e.d.State() }

// Port is the port a server on p listens on: the configured one, or the
// one picked at the first boot; -1 for a web port turned off.
func (e *Env) Port(p Port) int {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	return e.d.ports[p]
}

// Omits reports whether the device leaves out field (Config.Omit).
func (e *Env) Omits(field string) bool { return e.d.omits(field) }

// ObjectJSON encodes fields in order, less the ones the device omits
// (prefix is the endpoint's name in Config.Omit: "ota-status").
func (e *Env) ObjectJSON(prefix string, fields []JSONField) ([]byte, error) {
	return e.d.objectJSON(prefix, fields)
}

// ContractTXT is the TXT items of Extensions that tell the running image
// (version=, project=, chip=) less the omitted ones, then more.
func (e *Env) ContractTXT(more ...string) []string { return e.d.contractTXT(more...) }

// Emit reports an event; Time, Device and (when empty) Addr are filled in.
func (e *Env) Emit(ev Event) { e.d.emit(ev) }

// RequestReboot resets the device soon (reason as in EventReboot); one
// pending reset is enough.
func (e *Env) RequestReboot(reason string) { e.d.requestReboot(reason) }

// RebootDelay picks the delay between a success reply and the reset
// (Timing.RebootDelayMin..Max, from the device's seeded source).
func (e *Env) RebootDelay() time.Duration { return e.d.rebootDelay() }

// Faults returns the armed faults.
func (e *Env) Faults() []Fault { return e.d.Faults() }

// Latency is the sum of the armed latency faults: the delay of every reply.
func (e *Env) Latency() time.Duration { return e.d.latency() }

// Chance draws whether a fault of kind acts on this session.
func (e *Env) Chance(kind FaultKind) (Fault, bool) { return e.d.chance(kind) }

// ArmPoint draws whether a point fault of kind acts on an upload of size
// bytes, and where (the first such fault that does).
func (e *Env) ArmPoint(kind FaultKind, size int64) (ArmedFault, bool) {
	return e.d.armPoint(kind, size)
}

// TakeStatusFail reports whether this read of the status endpoint path
// fails (status-error): each path fails the armed count of reads.
func (e *Env) TakeStatusFail(path string) bool { return e.d.takeStatusFail(path) }

// NewUpload records the start of an upload session and announces it
// (EventUploadStarted). proto is "http" or "espota", path the HTTP path.
func (e *Env) NewUpload(ctx context.Context, proto, path, remote string, size int64) *Upload {
	return e.d.newUpload(ctx, proto, path, remote, size)
}

// RecordAuthFailure logs a rejected request or session (EventAuthFailed
// and an upload record with outcome "auth_failed").
func (e *Env) RecordAuthFailure(proto, path, remote string, status int, text, reason string) {
	e.d.recordAuthFailure(proto, path, remote, status, text, reason)
}

// BeginBlocked reports esp_ota_begin's refusal while the running image is
// still pending_verify (ESP_ERR_OTA_ROLLBACK_INVALID_STATE).
func (e *Env) BeginBlocked() bool { return e.d.runningPending() }

// FilesystemSize is the size of the data (spiffs) partition, 0 when the
// platform's table has none.
func (e *Env) FilesystemSize() int64 {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	return e.d.flash.fsSize
}

// Hold keeps a connection open but dead until the device is back from its
// reset, then resets it (a connection the firmware handed to no server,
// such as espota's data connection on a power loss).
func (e *Env) Hold(c net.Conn) { e.d.leaveConn(c) }

// RunningImage is the bytes of the image the device runs (read-only, shared
// with the device's store): what a firmware reads of itself, such as a
// build tag compiled into it.
func (e *Env) RunningImage() []byte {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	if b := e.d.flash.slots[e.d.flash.running]; b != nil {
		return b.data
	}
	return nil
}

// Persistent is the firmware's state that outlives a reset (its settings
// in flash, RTC memory): made by mk at the first call of the device's
// life, the same value at every later call, every boot.
func (e *Env) Persistent(mk func() any) any {
	e.d.persistMu.Lock()
	defer e.d.persistMu.Unlock()
	if e.d.persist == nil {
		e.d.persist = mk()
	}
	return e.d.persist
}

// MAC is the device's station MAC address: Espressif's OUI and three bytes
// derived from the device's name, so a device keeps it across runs.
func (e *Env) MAC() net.HardwareAddr {
	sum := sha256.Sum256([]byte(e.d.s.Name))
	oui := []byte{0x24, 0x0A, 0xC4}
	if e.d.s.platform == PlatformESP8266 {
		oui = []byte{0x5C, 0xCF, 0x7F}
	}
	return append(net.HardwareAddr(oui), sum[:3]...)
}
