package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// otaErr is why an upload step failed, before it is put in a protocol's words.
type otaErr int

const (
	errNone        otaErr = iota
	errBegin              // esp_ota_begin failed: pending_verify app, or another upload running
	errMagic              // first byte is not 0xE9
	errSpace              // past the end of the slot
	errWrite              // injected flash write failure
	errValidate           // esp_ota_end: the image does not verify
	errEmpty              // esp_ota_end with nothing written
	errDrop               // fault: drop the connection
	errPowerLoss          // fault: the device lost power
	errCanceled           // the device is going down
	errNoPartition        // espota: no partition for the command
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

// upload is one upload session, from the first byte of the request (or the
// espota invitation) to the answer.
type upload struct {
	d      *Device
	ctx    context.Context
	rec    UploadRecord
	target int
	w      *slotWriter
	began  bool
	faults []armedFault
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
func (d *Device) newUpload(ctx context.Context, proto, path, remote string, size int64) *upload {
	u := &upload{d: d, ctx: ctx, rec: UploadRecord{Start: time.Now(), Protocol: proto, Path: path, Remote: remote, Size: size}}
	d.emit(Event{Event: EventUploadStarted, Protocol: proto, Path: path, Remote: remote, Size: size})
	return u
}

// begin is esp_ota_begin (HTTP: erase the whole slot now) or the Arduino
// Updater's begin (espota: erase as it writes).
func (u *upload) begin(sectorErase bool) otaErr {
	d := u.d
	d.mu.Lock()
	if d.otaBusy || (!sectorErase && d.flash.beginBlocked()) {
		d.mu.Unlock()
		return errBegin
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
		if !sleepCtx(u.ctx, rateTime(d.s.SlotSize, d.s.timing.EraseRate)) {
			return errCanceled
		}
		d.pauseEnded(0)
	}
	return errNone
}

func rateTime(n, rate int64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

// write is esp_ota_write of one received chunk, with the faults that fire
// at this point and the flash's pace.
func (u *upload) write(p []byte) otaErr {
	if u.ctx.Err() != nil {
		return errCanceled
	}
	end := u.w.n + int64(len(p))
	for i := range u.faults {
		f := &u.faults[i]
		if f.fired || end < f.at {
			continue
		}
		f.fired = true
		u.d.emit(Event{Event: EventFault, Fault: f.Fault.String(), Protocol: u.rec.Protocol, Remote: u.rec.Remote,
			Size: u.rec.Size, Bytes: u.w.n})
		switch f.Kind {
		case FaultDrop:
			u.rec.Reason = "fault " + f.Fault.String()
			return errDrop
		case FaultPowerLoss:
			u.rec.Reason = "fault " + f.Fault.String()
			return errPowerLoss
		case FaultError:
			u.rec.Reason = "fault " + f.Fault.String()
			return errWrite
		case FaultStall:
			if !sleepCtx(u.ctx, f.Duration) {
				return errCanceled
			}
			u.d.pauseEnded(u.w.n)
		}
	}
	// The esp8266/Arduino Updater also takes gzip (0x1F), which eboot inflates.
	if !u.fs && u.w.n == 0 && len(p) > 0 && p[0] != 0xE9 && !(u.d.s.esp8266 && p[0] == 0x1F) {
		u.rec.Reason = fmt.Sprintf("first byte 0x%02x is not 0xE9", p[0])
		return errMagic
	}
	if err := u.w.write(p); err != nil {
		u.rec.Reason = fmt.Sprintf("image larger than the %d-byte slot", u.d.s.SlotSize)
		return errSpace
	}
	u.rec.Bytes = u.w.n
	n := int64(len(p))
	if u.prepaid > 0 {
		k := min(u.prepaid, n)
		u.prepaid -= k
		n -= k
	}
	return u.pace(int(n))
}

// pace waits until the flash (or a trickle) has taken n more bytes.
func (u *upload) pace(n int) otaErr {
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
			if !sleepCtx(u.ctx, wait) {
				return errCanceled
			}
		}
	}
	return errNone
}

// end is esp_ota_end + esp_ota_set_boot_partition: verify the image and
// make it the boot image. On success the device is due to reboot.
func (u *upload) end() otaErr {
	d := u.d
	if u.w.n == 0 {
		u.rec.Reason = "nothing written"
		return errEmpty
	}
	if u.fs { // a filesystem image: nothing to verify, nothing to boot
		b := u.w.finish()
		d.mu.Lock()
		d.flash.fs = b
		d.notifyLocked()
		d.mu.Unlock()
		return errNone
	}
	if !d.s.esp8266 {
		rep := image.Validate(u.w.bytes(), image.Policy{Chip: d.s.chip, ChipSet: true, SlotSize: d.s.SlotSize})
		if err := endError(rep); err != nil {
			u.rec.Reason = err.Error()
			return errValidate
		}
	}
	b := u.w.finish()
	if d.s.esp8266 && b.info.Version == "" {
		b = d.store.internWith(b.data, &imgInfo{Project: "unknown", Version: "unknown", Chip: "esp8266"})
	}
	d.mu.Lock()
	if u.ctx.Err() != nil {
		d.mu.Unlock()
		return errCanceled
	}
	if lookupBehaviour(d.behaviours, b.info, true) == ForeignELF {
		b = foreignBuild(b)
	}
	d.flash.setBoot(u.target, b)
	d.notifyLocked()
	d.mu.Unlock()
	u.rec.Version = b.info.Version
	return errNone
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

// endAnswered records an upload the device answered 200 early but did not
// install: outcome "discarded" (early-answer:discard) or "aborted"
// (early-answer:close).
func (u *upload) endAnswered(outcome string, status int, text, reason string) {
	if u.rec.Reason == "" {
		u.rec.Reason = reason
	}
	u.finish(outcome, status, text)
	u.d.emit(Event{Event: EventUploadFailed, Protocol: u.rec.Protocol, Path: u.rec.Path, Remote: u.rec.Remote,
		Size: u.rec.Size, Bytes: u.rec.Bytes, Status: status, Text: text, Reason: u.rec.Reason})
}

// succeed records the accepted upload.
func (u *upload) succeed(status int, text string) {
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

// fail records a failed upload: outcome "failed" when the device answered
// (status/text), "aborted" when it did not.
func (u *upload) fail(status int, text, reason string) {
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

func (u *upload) finish(outcome string, status int, text string) {
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
