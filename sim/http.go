package sim

import (
	"errors"
	"fmt"
	"github.com/ots-ota/ots-ota/auth"
	"io"
	"time"
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
	if d.s.Extensions {
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
// 1024-byte recv/write loop, end, set boot, answer, reboot.
func (d *Device) receiveImage(r *request, okText string) error {
	u := d.newUpload(r.ctx, "http", r.path, r.remote, r.contentLen)
	if e := u.begin(false); e != errNone {
		if e == errCanceled {
			u.fail(0, "", "device going down")
			return errClose
		}
		reason := "another upload is running"
		if d.runningPending() {
			reason = "running app is pending_verify (ESP_ERR_OTA_ROLLBACK_INVALID_STATE)"
		}
		u.fail(500, textBeginFailed, reason)
		r.sendErr(500, textBeginFailed)
		return errClose
	}
	buf := make([]byte, 1024)
	remaining := r.contentLen
	for remaining > 0 {
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
			u.fail(500, textReceiveFailed, fmt.Sprintf("receive: %v", orEOF(err)))
			r.sendErr(500, textReceiveFailed) // to a socket that is likely gone
			return errClose
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
				u.fail(500, textWriteFailed, "")
				r.sendErr(500, textWriteFailed)
			}
			return errClose
		}
		remaining -= int64(n)
	}
	if e := u.end(); e != errNone {
		if e == errCanceled {
			u.fail(0, "", "device going down")
			return errClose
		}
		u.fail(500, textEndFailed, "")
		r.sendErr(500, textEndFailed)
		return errClose
	}
	u.succeed(200, okText)
	r.send(200, typeHTML, okText)
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

// otaStatus is the body of GET /ota/status (device-contract.md §4).
type otaStatus struct {
	Project       string   `json:"project"`
	Version       string   `json:"version"`
	IDF           string   `json:"idf"`
	Chip          string   `json:"chip"`
	Running       string   `json:"running"`
	Boot          string   `json:"boot"`
	State         AppState `json:"state"`
	SecureVersion uint32   `json:"secure_version"`
	ELFSHA256     string   `json:"elf_sha256"`
	SlotSize      int64    `json:"slot_size"`
	UptimeS       int64    `json:"uptime_s"`
}

func (d *Device) handleOTAStatus(r *request) error {
	st := d.State()
	return r.sendJSON(otaStatus{
		Project: st.Project, Version: st.Version, IDF: st.IDFVer, Chip: st.Chip,
		Running: st.Running, Boot: st.Boot, State: st.AppState, SecureVersion: st.SecureVersion,
		ELFSHA256: st.ELFSHA256, SlotSize: st.SlotSize, UptimeS: int64(st.Uptime / time.Second),
	})
}
