package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// OTAErr is why an upload step failed, before it is put in a protocol's words.
type OTAErr int

// Upload step outcomes.
const (
	OTANone      OTAErr = iota
	OTABegin            // esp_ota_begin failed: pending_verify app, or another upload running
	OTAMagic            // first byte is not 0xE9
	OTASpace            // past the end of the slot
	OTAWrite            // injected flash write failure
	OTAValidate         // esp_ota_end: the image does not verify
	OTAEmpty            // esp_ota_end with nothing written
	OTADrop             // fault: drop the connection
	OTAPowerLoss        // fault: the device lost power
	OTACanceled         // the device is going down
)

// endError turns a validation report into the error esp_ota_end would
// return, or nil. A missing app description does not stop esp_ota_end
// (only esp_https_ota reads it), so it is not an error here.
func endError(rep *image.Report) error {
	for _, f := range rep.Errors {
		if f.Code == image.CodeNoAppDesc {
			continue
		}
		return fmt.Errorf("%s: %s", f.Code, f.Message)
	}
	return nil
}

// Upload is one upload session, from the first byte of the request (or the
// espota invitation) to the answer: the flash side of a firmware's upload
// handler. Its methods are called from the handler's goroutine only.
type Upload struct {
	d      *Device
	ctx    context.Context
	rec    UploadRecord
	target int
	w      *slotWriter
	began  bool
	faults []ArmedFault
	rate   int64
	// chunk caps the bytes taken per read (trickle); 0 = the protocol's.
	chunk int
	// prepaid: bytes already paced before they reached write (espota's
	// buffered first sector under a trickle).
	prepaid int64
	next    time.Time // pacing: when the flash is free again
	// espota: the Arduino Updater erases sector by sector as it writes.
	sectorErase bool
	erased      int64
	done        bool
	// fs: the image goes to the data/spiffs partition (espota command
	// 100), not to an app slot.
	fs bool
}

// newUpload records the start of an upload and announces it.
func (d *Device) newUpload(ctx context.Context, proto, path, remote string, size int64) *Upload {
	u := &Upload{d: d, ctx: ctx, rec: UploadRecord{Start: time.Now(), Protocol: proto, Path: path, Remote: remote, Size: size}}
	d.emit(Event{Event: EventUploadStarted, Protocol: proto, Path: path, Remote: remote, Size: size})
	return u
}

// Begin is esp_ota_begin (sectorErase false: erase the whole slot now) or
// the Arduino Updater's begin (sectorErase: erase as it writes).
func (u *Upload) Begin(sectorErase bool) OTAErr {
	d := u.d
	d.mu.Lock()
	if d.otaBusy || (!sectorErase && d.flash.beginBlocked()) {
		d.mu.Unlock()
		return OTABegin
	}
	d.otaBusy = true
	u.began = true
	limit := d.s.SlotSize
	if u.fs {
		u.target = -1
		limit = d.flash.fsSize
	} else {
		u.target = d.flash.nextUpdateSlot()
		d.flash.erase(u.target)
	}
	u.faults = armUpload(d.faults, u.rec.Size, d.rnd.Float64)
	u.rate = d.s.timing.WriteRate
	for _, f := range d.faults {
		if (f.Kind == FaultSlow || f.Kind == FaultTrickle) && (u.rate == 0 || f.Rate < u.rate) {
			u.rate = f.Rate
		}
		if f.Kind == FaultTrickle {
			// A quarter second's worth per read, at least a byte: progress
			// never pauses long, however slow.
			c := int(max(1, min(f.Rate/4, 1024)))
			if u.chunk == 0 || c < u.chunk {
				u.chunk = c
			}
		}
	}
	d.notifyLocked()
	d.mu.Unlock()
	u.w = newSlotWriter(d.store, limit)
	u.sectorErase = sectorErase
	if !sectorErase && d.s.timing.EraseRate > 0 {
		if !Sleep(u.ctx, rateTime(d.s.SlotSize, d.s.timing.EraseRate)) {
			return OTACanceled
		}
		d.pauseEnded(0)
	}
	return OTANone
}

func rateTime(n, rate int64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

// Write is esp_ota_write of one received chunk, with the faults that fire
// at this point and the flash's pace.
func (u *Upload) Write(p []byte) OTAErr {
	if u.ctx.Err() != nil {
		return OTACanceled
	}
	end := u.w.n + int64(len(p))
	for i := range u.faults {
		f := &u.faults[i]
		if f.fired || end < f.At {
			continue
		}
		f.fired = true
		u.d.emit(Event{Event: EventFault, Fault: f.Fault.String(), Protocol: u.rec.Protocol, Remote: u.rec.Remote,
			Size: u.rec.Size, Bytes: u.w.n})
		switch f.Kind {
		case FaultDrop:
			u.rec.Reason = "fault " + f.Fault.String()
			return OTADrop
		case FaultPowerLoss:
			u.rec.Reason = "fault " + f.Fault.String()
			return OTAPowerLoss
		case FaultError:
			u.rec.Reason = "fault " + f.Fault.String()
			return OTAWrite
		case FaultStall:
			if !Sleep(u.ctx, f.Duration) {
				return OTACanceled
			}
			u.d.pauseEnded(u.w.n)
		}
	}
	// The esp8266/Arduino Updater also takes gzip (0x1F), which eboot inflates.
	if !u.fs && u.w.n == 0 && len(p) > 0 && p[0] != 0xE9 && !(u.d.s.platform == PlatformESP8266 && p[0] == 0x1F) {
		u.rec.Reason = fmt.Sprintf("first byte 0x%02x is not 0xE9", p[0])
		return OTAMagic
	}
	if err := u.w.write(p); err != nil {
		u.rec.Reason = fmt.Sprintf("image larger than the %d-byte slot", u.d.s.SlotSize)
		return OTASpace
	}
	u.rec.Bytes = u.w.n
	n := int64(len(p))
	if u.prepaid > 0 {
		k := min(u.prepaid, n)
		u.prepaid -= k
		n -= k
	}
	return u.Pace(int(n))
}

// Pace waits until the flash (or a trickle) has taken n more bytes.
func (u *Upload) Pace(n int) OTAErr {
	cost := rateTime(int64(n), u.rate)
	if u.sectorErase && u.d.s.timing.EraseRate > 0 {
		for u.erased < u.w.n {
			u.erased += 4096
			cost += rateTime(4096, u.d.s.timing.EraseRate)
		}
	}
	if cost > 0 {
		now := time.Now()
		if u.next.Before(now) {
			u.next = now
		}
		u.next = u.next.Add(cost)
		if wait := time.Until(u.next); wait > time.Millisecond {
			if !Sleep(u.ctx, wait) {
				return OTACanceled
			}
		}
	}
	return OTANone
}

// End is esp_ota_end + esp_ota_set_boot_partition: verify the image and
// make it the boot image. On success the device is due to reboot.
func (u *Upload) End() OTAErr {
	d := u.d
	if u.w.n == 0 {
		u.rec.Reason = "nothing written"
		return OTAEmpty
	}
	if u.fs { // a filesystem image: nothing to verify, nothing to boot
		b := u.w.finish()
		d.mu.Lock()
		d.flash.fs = b
		d.notifyLocked()
		d.mu.Unlock()
		return OTANone
	}
	if d.s.platform != PlatformESP8266 {
		rep := image.Validate(u.w.bytes(), image.Policy{Chip: d.s.chip, ChipSet: true, SlotSize: d.s.SlotSize})
		if err := endError(rep); err != nil {
			u.rec.Reason = err.Error()
			return OTAValidate
		}
	}
	b := u.w.finish()
	if d.s.platform == PlatformESP8266 && b.info.Version == "" {
		b = d.store.internWith(b.data, &imgInfo{Project: "unknown", Version: "unknown", Chip: "esp8266"})
	}
	d.mu.Lock()
	if u.ctx.Err() != nil {
		d.mu.Unlock()
		return OTACanceled
	}
	if lookupBehaviour(d.behaviours, b.info, true) == ForeignELF {
		b = foreignBuild(b)
	}
	d.flash.setBoot(u.target, b)
	d.notifyLocked()
	d.mu.Unlock()
	u.rec.Version = b.info.Version
	return OTANone
}

// foreignBuild is what a ForeignELF image installs as: another build of
// the same version, whose ELF SHA-256 (and image hash) differ from the one
// sent. The bytes are shared; only what the device knows of them differs.
func foreignBuild(b *blob) *blob {
	in := b.info
	elf := sha256.Sum256([]byte("foreign build of " + in.ELFSHA256))
	in.ELFSHA256 = hex.EncodeToString(elf[:])
	return &blob{data: b.data, sum: sha256.Sum256(append(b.sum[:], "foreign"...)), info: in}
}

// EndAnswered records an upload the device answered 200 early but did not
// install: outcome "discarded" (early-answer:discard) or "aborted"
// (early-answer:close).
func (u *Upload) EndAnswered(outcome string, status int, text, reason string) {
	if u.rec.Reason == "" {
		u.rec.Reason = reason
	}
	u.finish(outcome, status, text)
	u.d.emit(Event{Event: EventUploadFailed, Protocol: u.rec.Protocol, Path: u.rec.Path, Remote: u.rec.Remote,
		Size: u.rec.Size, Bytes: u.rec.Bytes, Status: status, Text: text, Reason: u.rec.Reason})
}

// Succeed records the accepted upload.
func (u *Upload) Succeed(status int, text string) {
	u.finish("ok", status, text)
	d := u.d
	if u.fs {
		d.emit(Event{Event: EventUploadFinished, Protocol: u.rec.Protocol, Remote: u.rec.Remote,
			Size: u.rec.Size, Bytes: u.rec.Bytes, Text: text, Slot: fsLabel})
		return
	}
	d.mu.Lock()
	info := d.flash.slots[u.target].info
	d.mu.Unlock()
	d.emit(Event{Event: EventUploadFinished, Protocol: u.rec.Protocol, Path: u.rec.Path, Remote: u.rec.Remote,
		Size: u.rec.Size, Bytes: u.rec.Bytes, Status: status, Text: text, Project: info.Project,
		Version: info.Version, Slot: d.flash.label(u.target)})
}

// Fail records a failed upload: outcome "failed" when the device answered
// (status/text), "aborted" when it did not. reason is kept unless one was
// set already.
func (u *Upload) Fail(status int, text, reason string) {
	if reason != "" && u.rec.Reason == "" {
		u.rec.Reason = reason
	}
	outcome := "failed"
	if status == 0 && text == "" {
		outcome = "aborted"
	}
	u.finish(outcome, status, text)
	u.d.emit(Event{Event: EventUploadFailed, Protocol: u.rec.Protocol, Path: u.rec.Path, Remote: u.rec.Remote,
		Size: u.rec.Size, Bytes: u.rec.Bytes, Status: status, Text: text, Reason: u.rec.Reason})
}

func (u *Upload) finish(outcome string, status int, text string) {
	if u.done {
		return
	}
	u.done = true
	u.rec.Duration = time.Since(u.rec.Start)
	u.rec.Outcome, u.rec.Status, u.rec.Text = outcome, status, text
	d := u.d
	d.mu.Lock()
	if u.began {
		d.otaBusy = false
	}
	d.uploads = append(d.uploads, u.rec)
	if len(d.uploads) > maxUploadLog {
		d.uploads = d.uploads[len(d.uploads)-maxUploadLog:]
	}
	d.notifyLocked()
	d.mu.Unlock()
}

// Done reports whether the session was recorded (succeeded or failed).
func (u *Upload) Done() bool { return u.done }

// Written is how many image bytes were written so far.
func (u *Upload) Written() int64 { return u.rec.Bytes }

// Chunk caps the bytes a handler takes per read (a trickle fault); 0 =
// the protocol's own.
func (u *Upload) Chunk() int { return u.chunk }

// Prepay counts n bytes as paced already (a handler that buffers bytes
// and paced them when it took them).
func (u *Upload) Prepay(n int64) { u.prepaid += n }

// ToFilesystem sends the image to the data (spiffs) partition instead of
// an app slot; call it before Begin.
func (u *Upload) ToFilesystem() { u.fs = true }

// SetReason says why the session fails, in place of any reason given so far.
func (u *Upload) SetReason(reason string) { u.rec.Reason = reason }

// recordAuthFailure logs a rejected request or espota session.
func (d *Device) recordAuthFailure(proto, path, remote string, status int, text, reason string) {
	rec := UploadRecord{Start: time.Now(), Protocol: proto, Path: path, Remote: remote, Outcome: "auth_failed",
		Status: status, Text: text, Reason: reason}
	d.mu.Lock()
	d.uploads = append(d.uploads, rec)
	if len(d.uploads) > maxUploadLog {
		d.uploads = d.uploads[len(d.uploads)-maxUploadLog:]
	}
	d.notifyLocked()
	d.mu.Unlock()
	d.emit(Event{Event: EventAuthFailed, Protocol: proto, Path: path, Remote: remote, Status: status, Text: text, Reason: reason})
}
