package rawhttp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
)

// The upload port (3232): POST /update, and GET /ota/status with Extensions.

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

func (d *rawDevice) otaRoutes() []core.Route {
	var rs []core.Route
	switch d.p {
	case Seed:
		rs = append(rs, core.Route{Method: "POST", Path: "/update",
			Handle: func(r *core.Request) error { return d.handleUpdate(r, textSeedOK, true) }})
	case OTS:
		rs = append(rs, core.Route{Method: "POST", Path: "/update",
			Handle: func(r *core.Request) error { return d.handleUpdate(r, textOTSOK, false) }})
	}
	if d.e.Config().Extensions && !d.e.Omits(omitOTAStatus) {
		rs = append(rs, core.Route{Method: "GET", Path: "/ota/status", Handle: d.handleOTAStatus})
	}
	return rs
}

// checkBearer is the seed's auth block; false when the request was refused.
func (d *rawDevice) checkBearer(r *core.Request) bool {
	c := d.e.Config()
	if d.p != Seed || c.Password.IsZero() {
		return true
	}
	v, ok := r.Header("Authorization")
	if !ok || len(v) > authHeaderMax {
		d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, textAuthRequired, "no Authorization header")
		r.SendErr(401, textAuthRequired)
		return false
	}
	if !auth.ConstantTimeEqual(v, "Bearer "+c.Password.Reveal()) {
		d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 403, textBadCreds, "wrong credentials")
		r.SendErr(403, textBadCreds)
		return false
	}
	return true
}

// handleUpdate is ota_upload_handler (seed / OTS port 3232).
func (d *rawDevice) handleUpdate(r *core.Request, okText string, auth bool) error {
	if auth && !d.checkBearer(r) {
		return core.ErrClose
	}
	return d.receiveImage(r, okText)
}

// receiveImage is the body of the firmware's upload handlers: begin (erase),
// 1024-byte recv/write loop, end, set boot, answer, reboot. The answer
// faults change the end of it: early-answer answers before the body is in,
// lose-answer never answers, no-reboot never restarts.
func (d *rawDevice) receiveImage(r *core.Request, okText string) error {
	e := d.e
	ctx, size := r.Context(), r.ContentLength()
	u := e.NewUpload(ctx, "http", r.Path(), r.Remote(), size)
	early, hasEarly := e.ArmPoint(core.FaultEarlyAnswer, size)
	answered := false
	// answerEarly sends the 200 before the image is in; false when the
	// handler stops here (early-answer:close).
	answerEarly := func() bool {
		answered = true
		e.Emit(core.Event{Event: core.EventFault, Fault: early.Fault.String(), Protocol: "http", Remote: r.Remote(),
			Size: size, Bytes: u.Written()})
		r.Send(200, core.TypeHTML, okText)
		if early.Mode == core.ModeClose {
			// The handler returns at once: the unread body makes the close an RST.
			u.EndAnswered("aborted", 200, okText, "fault "+early.Fault.String()+": closed after the early answer")
			return false
		}
		return true
	}
	// failed answers an error, unless the 200 went out already: then the
	// device just gives up, and the client hears nothing more.
	failed := func(status int, text, reason string) error {
		if answered {
			u.Fail(0, "", reason)
			return core.ErrClose
		}
		u.Fail(status, text, reason)
		r.SendErr(status, text)
		return core.ErrClose
	}
	if hasEarly && early.At <= 0 && !answerEarly() {
		return core.ErrClose
	}
	if st := u.Begin(false); st != core.OTANone {
		if st == core.OTACanceled {
			u.Fail(0, "", "device going down")
			return core.ErrClose
		}
		reason := "another upload is running"
		if e.BeginBlocked() {
			reason = "running app is pending_verify (ESP_ERR_OTA_ROLLBACK_INVALID_STATE)"
		}
		return failed(500, textBeginFailed, reason)
	}
	buf := make([]byte, 1024)
	if c := u.Chunk(); c > 0 {
		buf = buf[:c]
	}
	remaining := size
	for remaining > 0 {
		if hasEarly && !answered && u.Written() >= early.At && !answerEarly() {
			return core.ErrClose
		}
		n, err := r.Recv(buf[:min(remaining, int64(len(buf)))])
		if errors.Is(err, core.ErrRecvTimeout) {
			if ctx.Err() != nil {
				u.Fail(0, "", "device going down")
				return core.ErrClose
			}
			continue // the firmware retries a recv timeout forever
		}
		if err != nil || n <= 0 {
			if ctx.Err() != nil {
				u.Fail(0, "", "device going down")
				return core.ErrClose
			}
			// To a socket that is likely gone.
			return failed(500, textReceiveFailed, fmt.Sprintf("receive: %v", orEOF(err)))
		}
		if st := u.Write(buf[:n]); st != core.OTANone {
			switch st {
			case core.OTADrop:
				u.Fail(0, "", "")
			case core.OTAPowerLoss:
				// No answer and no close: the connection just goes quiet
				// and the client's own timeout must notice.
				u.Fail(0, "", "")
				e.RequestReboot("power_loss")
				<-ctx.Done()
			case core.OTACanceled:
				u.Fail(0, "", "device going down")
			default: // magic, space, injected write failure
				return failed(500, textWriteFailed, "")
			}
			return core.ErrClose
		}
		remaining -= int64(n)
	}
	if hasEarly && !answered && !answerEarly() {
		return core.ErrClose
	}
	if answered && early.Mode == core.ModeDiscard {
		u.EndAnswered("discarded", 200, okText, "fault "+early.Fault.String()+": image discarded")
		return nil
	}
	if st := u.End(); st != core.OTANone {
		if st == core.OTACanceled {
			u.Fail(0, "", "device going down")
			return core.ErrClose
		}
		return failed(500, textEndFailed, "")
	}
	lost, loseAnswer := e.Chance(core.FaultLoseAnswer)
	_, noReboot := e.Chance(core.FaultNoReboot)
	switch {
	case answered:
		u.Succeed(200, okText)
	case loseAnswer:
		u.SetReason("fault " + lost.String() + ": answer not sent")
		u.Succeed(0, "")
		e.Emit(core.Event{Event: core.EventFault, Fault: lost.String(), Protocol: "http", Remote: r.Remote(), Size: size, Bytes: u.Written()})
		if lost.Mode == core.ModeReset {
			if tc, ok := r.Conn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			r.Conn().Close()
		}
	default:
		u.Succeed(200, okText)
		r.Send(200, core.TypeHTML, okText)
	}
	if noReboot {
		// The handler returns without esp_restart(): the new image waits
		// in the boot slot, the old one keeps running and serving.
		e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultNoReboot), Protocol: "http", Remote: r.Remote()})
		if loseAnswer {
			return core.ErrClose
		}
		return nil
	}
	// The handler delays, then calls esp_restart() itself: it never
	// returns, so nothing queued behind it on this server is served, and
	// the socket just dies with the chip.
	if core.Sleep(ctx, e.RebootDelay()) {
		e.RequestReboot("update")
	}
	<-ctx.Done()
	return core.ErrClose
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// handleOTAStatus is GET /ota/status (device-contract.md §4), less the
// keys the device omits.
func (d *rawDevice) handleOTAStatus(r *core.Request) error {
	if d.statusFault(r) {
		return core.ErrClose
	}
	st := d.e.State()
	body, err := d.e.ObjectJSON(omitOTAStatus, []core.JSONField{
		{Key: "project", Val: st.Project}, {Key: "version", Val: st.Version}, {Key: "idf", Val: st.IDFVer},
		{Key: "chip", Val: st.Chip}, {Key: "running", Val: st.Running}, {Key: "boot", Val: st.Boot},
		{Key: "state", Val: st.AppState}, {Key: "secure_version", Val: st.SecureVersion},
		{Key: "elf_sha256", Val: st.ELFSHA256}, {Key: "slot_size", Val: st.SlotSize},
		{Key: "uptime_s", Val: int64(st.Uptime / time.Second)},
	})
	if err != nil {
		r.SendErr(500, "")
		return core.ErrClose
	}
	return r.Send(200, core.TypeJSON, string(body))
}

// statusFault answers 500 to a status read the status-error fault fails
// (httpd_resp_send_err's default text, as when the firmware cannot build
// its JSON); true when it did.
func (d *rawDevice) statusFault(r *core.Request) bool {
	if !d.e.TakeStatusFail(r.Path()) {
		return false
	}
	d.e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultStatusError), Protocol: "http", Path: r.Path(), Remote: r.Remote()})
	r.SendErr(500, "")
	return true
}
