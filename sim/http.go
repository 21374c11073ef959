package sim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

// Texts the firmware answers with (device-contract.md §2).
const (
	textSeedOK        = "OTA update successful, rebooting..."
	textOTSOK         = "Update successful, rebooting..."
	textWebOK         = "Upload successful. Rebooting..."
	textAuthRequired  = "Authentication required"
	textBadCreds      = "Invalid credentials"
	textBeginFailed   = "OTA begin failed"
	textReceiveFailed = "Receive failed"
	textWriteFailed   = "Write failed"
	textEndFailed     = "OTA end failed"
	textBadSize       = "Invalid firmware size"
)

// webMaxFirmware is the OTS web app's limit on Content-Length (3 MB).
const webMaxFirmware = 3 * 1024 * 1024

// authHeaderMax: the seed reads Authorization into a 128-byte buffer; a
// longer value is truncated, which the seed treats as missing.
const authHeaderMax = 127

func (d *Device) otaRoutes() []route {
	var rs []route
	switch d.s.Personality {
	case Seed:
		rs = append(rs, route{"POST", "/update", func(r *request) error { return d.handleUpdate(r, textSeedOK, true) }})
	case OTS:
		rs = append(rs, route{"POST", "/update", func(r *request) error { return d.handleUpdate(r, textOTSOK, false) }})
	}
	if d.s.Extensions && !d.omits(omitOTAStatus) {
		rs = append(rs, route{"GET", "/ota/status", d.handleOTAStatus})
	}
	return rs
}

// checkBearer is the seed's auth block; false when the request was refused.
func (d *Device) checkBearer(r *request) bool {
	if d.s.Personality != Seed || d.s.Password.IsZero() {
		return true
	}
	v, ok := r.header("Authorization")
	if !ok || len(v) > authHeaderMax {
		d.recordAuthFailure("http", r.path, r.remote, 401, textAuthRequired, "no Authorization header")
		r.sendErr(401, textAuthRequired)
		return false
	}
	if !auth.ConstantTimeEqual(v, "Bearer "+d.s.Password.Reveal()) {
		d.recordAuthFailure("http", r.path, r.remote, 403, textBadCreds, "wrong credentials")
		r.sendErr(403, textBadCreds)
		return false
	}
	return true
}

// handleUpdate is ota_upload_handler (seed / OTS port 3232).
func (d *Device) handleUpdate(r *request, okText string, auth bool) error {
	if auth && !d.checkBearer(r) {
		return errClose
	}
	return d.receiveImage(r, okText)
}

// receiveImage is the body of the firmware's upload handlers: begin (erase),
// 1024-byte recv/write loop, end, set boot, answer, reboot. The answer
// faults change the end of it: early-answer answers before the body is in,
// lose-answer never answers, no-reboot never restarts.
func (d *Device) receiveImage(r *request, okText string) error {
	u := d.newUpload(r.ctx, "http", r.path, r.remote, r.contentLen)
	early, hasEarly := d.armPoint(FaultEarlyAnswer, r.contentLen)
	answered := false
	// answerEarly sends the 200 before the image is in; false when the
	// handler stops here (early-answer:close).
	answerEarly := func() bool {
		answered = true
		d.emit(Event{Event: EventFault, Fault: early.Fault.String(), Protocol: "http", Remote: r.remote,
			Size: r.contentLen, Bytes: u.rec.Bytes})
		r.send(200, typeHTML, okText)
		if early.Mode == ModeClose {
			// The handler returns at once: the unread body makes the close an RST.
			u.endAnswered("aborted", 200, okText, "fault "+early.Fault.String()+": closed after the early answer")
			return false
		}
		return true
	}
	// failed answers an error, unless the 200 went out already: then the
	// device just gives up, and the client hears nothing more.
	failed := func(status int, text, reason string) error {
		if answered {
			u.fail(0, "", reason)
			return errClose
		}
		u.fail(status, text, reason)
		r.sendErr(status, text)
		return errClose
	}
	if hasEarly && early.at <= 0 && !answerEarly() {
		return errClose
	}
	if e := u.begin(false); e != errNone {
		if e == errCanceled {
			u.fail(0, "", "device going down")
			return errClose
		}
		reason := "another upload is running"
		if d.runningPending() {
			reason = "running app is pending_verify (ESP_ERR_OTA_ROLLBACK_INVALID_STATE)"
		}
		return failed(500, textBeginFailed, reason)
	}
	buf := make([]byte, 1024)
	if u.chunk > 0 {
		buf = buf[:u.chunk]
	}
	remaining := r.contentLen
	for remaining > 0 {
		if hasEarly && !answered && u.w.n >= early.at && !answerEarly() {
			return errClose
		}
		n, err := r.recv(buf[:min(remaining, int64(len(buf)))])
		if errors.Is(err, errRecvTimeout) {
			if r.ctx.Err() != nil {
				u.fail(0, "", "device going down")
				return errClose
			}
			continue // the firmware retries a recv timeout forever
		}
		if err != nil || n <= 0 {
			if r.ctx.Err() != nil {
				u.fail(0, "", "device going down")
				return errClose
			}
			// To a socket that is likely gone.
			return failed(500, textReceiveFailed, fmt.Sprintf("receive: %v", orEOF(err)))
		}
		if e := u.write(buf[:n]); e != errNone {
			switch e {
			case errDrop:
				u.fail(0, "", "")
			case errPowerLoss:
				// No answer and no close: the connection just goes quiet
				// and the client's own timeout must notice.
				u.fail(0, "", "")
				d.requestReboot("power_loss")
				<-r.ctx.Done()
			case errCanceled:
				u.fail(0, "", "device going down")
			default: // magic, space, injected write failure
				return failed(500, textWriteFailed, "")
			}
			return errClose
		}
		remaining -= int64(n)
	}
	if hasEarly && !answered && !answerEarly() {
		return errClose
	}
	if answered && early.Mode == ModeDiscard {
		u.endAnswered("discarded", 200, okText, "fault "+early.Fault.String()+": image discarded")
		return nil
	}
	if e := u.end(); e != errNone {
		if e == errCanceled {
			u.fail(0, "", "device going down")
			return errClose
		}
		return failed(500, textEndFailed, "")
	}
	lost, loseAnswer := d.chance(FaultLoseAnswer)
	_, noReboot := d.chance(FaultNoReboot)
	switch {
	case answered:
		u.succeed(200, okText)
	case loseAnswer:
		u.rec.Reason = "fault " + lost.String() + ": answer not sent"
		u.succeed(0, "")
		d.emit(Event{Event: EventFault, Fault: lost.String(), Protocol: "http", Remote: r.remote, Size: r.contentLen, Bytes: u.rec.Bytes})
		if lost.Mode == ModeReset {
			if tc, ok := r.conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			r.conn.Close()
		}
	default:
		u.succeed(200, okText)
		r.send(200, typeHTML, okText)
	}
	if noReboot {
		// The handler returns without esp_restart(): the new image waits
		// in the boot slot, the old one keeps running and serving.
		d.emit(Event{Event: EventFault, Fault: string(FaultNoReboot), Protocol: "http", Remote: r.remote})
		if loseAnswer {
			return errClose
		}
		return nil
	}
	// The handler delays, then calls esp_restart() itself: it never
	// returns, so nothing queued behind it on this server is served, and
	// the socket just dies with the chip.
	if sleepCtx(r.ctx, d.rebootDelay()) {
		d.requestReboot("update")
	}
	<-r.ctx.Done()
	return errClose
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

func (d *Device) runningPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flash.beginBlocked()
}

// handleOTAStatus is GET /ota/status (device-contract.md §4), less the
// keys the device omits.
func (d *Device) handleOTAStatus(r *request) error {
	if d.statusFault(r) {
		return errClose
	}
	st := d.State()
	body, err := d.objectJSON(omitOTAStatus, []jsonField{
		{"project", st.Project}, {"version", st.Version}, {"idf", st.IDFVer}, {"chip", st.Chip},
		{"running", st.Running}, {"boot", st.Boot}, {"state", st.AppState}, {"secure_version", st.SecureVersion},
		{"elf_sha256", st.ELFSHA256}, {"slot_size", st.SlotSize}, {"uptime_s", int64(st.Uptime / time.Second)},
	})
	if err != nil {
		r.sendErr(500, "")
		return errClose
	}
	return r.send(200, typeJSON, string(body))
}

// statusFault answers 500 to a status read the status-error fault fails
// (httpd_resp_send_err's default text, as when the firmware cannot build
// its JSON); true when it did.
func (d *Device) statusFault(r *request) bool {
	if !d.takeStatusFail(r.path) {
		return false
	}
	d.emit(Event{Event: EventFault, Fault: string(FaultStatusError), Protocol: "http", Path: r.path, Remote: r.remote})
	r.sendErr(500, "")
	return true
}
