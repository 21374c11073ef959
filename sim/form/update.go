package form

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// The answers of POST /update.
const (
	textSuccess     = `<META http-equiv="refresh" content="15;URL=/">Update Success! Rebooting...`
	textErrorPrefix = "Update error: "
	textWrongOrigin = "Update error: Wrong origin received!"
)

// restartDelay is the delay(100) between the success answer and
// ESP.restart().
const restartDelay = 100 * time.Millisecond

// handleUpdate is POST /update: the server reads the whole multipart body
// through the upload callback, then the handler answers from what the
// callback left (HTTPUpdateServer's setup()).
func (d *device) handleUpdate(r *core.Request) error {
	e, w, up := d.e, d.web, d.up
	c := e.Config()
	ct, _ := r.Header("Content-Type")
	if !strings.HasPrefix(strings.TrimSpace(ct), "multipart/") && r.ContentLength() > arduino.PlainMax {
		// The server reads the body into one String the heap cannot hold:
		// the request ends without an answer (issue 18).
		u := e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength())
		w.ReadBody(r, nil)
		u.Fail(0, "", "not a multipart body: the server holds it in RAM and never answers")
		return core.ErrClose
	}
	early, hasEarly := e.ArmPoint(core.FaultEarlyAnswer, r.ContentLength())
	answered, discard := false, false
	var cut arduino.Cut
	// answerEarly sends the success answer before the image is in (the
	// early-answer fault); false when the request stops here.
	answerEarly := func() bool {
		answered = true
		e.Emit(core.Event{Event: core.EventFault, Fault: early.Fault.String(), Protocol: "http", Remote: r.Remote(),
			Size: r.ContentLength()})
		w.Reply(r, 200, arduino.TypeHTML, textSuccess, d.cors()...)
		switch early.Mode {
		case core.ModeClose:
			return false
		case core.ModeDiscard:
			discard = true
		}
		return true
	}
	onUpload := func(ph arduino.Phase, p *arduino.Part, data []byte) error {
		switch ph {
		case arduino.PhaseStart:
			d.updaterError = ""
			d.authenticated = !d.credentials() || w.Authenticate(r, c.Username, c.Password.Reveal())
			if !d.authenticated {
				return nil
			}
			if d.csrf {
				origin, _ := r.Header("Origin")
				host, _ := r.Header("Host")
				if strings.TrimSpace(origin) != "http://"+strings.TrimSpace(host) {
					d.authenticated = false
					return nil
				}
			}
			d.begin(p.Name)
			up.Session(r)
			if hasEarly && early.At <= 0 && !answerEarly() {
				return arduino.ErrStop
			}
		case arduino.PhaseWrite:
			if !d.authenticated || d.updaterError != "" {
				return nil
			}
			if hasEarly && !answered && p.Total+int64(len(data)) >= early.At && !answerEarly() {
				return arduino.ErrStop
			}
			if discard {
				return nil
			}
			n, ct := up.Write(data)
			if ct != arduino.CutNone {
				cut = ct
				return arduino.ErrStop
			}
			if n != len(data) {
				d.updaterError = up.PrintError()
			}
		case arduino.PhaseEnd:
			if d.authenticated && d.updaterError == "" && !discard && !up.End(true) {
				d.updaterError = up.PrintError()
			}
		case arduino.PhaseAborted:
			if d.authenticated {
				up.End(false)
			}
		}
		return nil
	}
	if !w.ReadBody(r, onUpload) {
		return d.dropped(r, cut)
	}
	if answered {
		return d.afterEarly(r, early, discard)
	}
	if !d.authenticated {
		if d.csrf && !d.credentials() {
			origin, _ := r.Header("Origin")
			e.RecordAuthFailure("http", r.Path(), r.Remote(), 200, textWrongOrigin, fmt.Sprintf("Origin %q is not http:// and the Host", origin))
			return w.Reply(r, 200, arduino.TypeHTML, textWrongOrigin, d.cors()...)
		}
		e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, "", "not authenticated")
		return w.RequestAuth(r, false, "", d.cors()...)
	}
	if up.HasError() {
		text := textErrorPrefix + d.updaterError
		if !up.Answered(200, text) {
			// It failed before a byte was written (its begin).
			e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).Fail(200, text, "Update.begin failed")
		}
		return w.Reply(r, 200, arduino.TypeHTML, text, d.cors()...)
	}
	return d.succeed(r)
}

// begin is the upload callback's UPLOAD_FILE_START: the filesystem for a
// part named "filesystem", else the firmware. A firmware's begin error is
// kept; a filesystem's is not (the first write then reports it).
func (d *device) begin(name string) {
	up := d.up
	if name != "filesystem" {
		if !up.Begin(up.SketchSpace(), false) {
			d.updaterError = up.PrintError()
		}
		return
	}
	switch {
	case d.p == ESPEasy && !d.esp8266:
		// ESPEasy's ESP32 copy has the filesystem branch commented out
		// ("TODO"): nothing is begun, every write returns 0, and
		// hasError() stays false.
	default:
		// ESP8266: FS_end - FS_start; arduino-esp32: SPIFFS.totalBytes(),
		// here the whole spiffs partition (whether a full image fits what
		// SPIFFS reports is unconfirmed).
		up.Begin(d.e.FilesystemSize(), true)
	}
}

// succeed is the handler's success branch: the answer, 100 ms, the socket
// closed, ESP.restart(). The lose-answer and no-reboot faults change it.
func (d *device) succeed(r *core.Request) error {
	e, up := d.e, d.up
	installed := up.Installed()
	lost, loseAnswer := e.Chance(core.FaultLoseAnswer)
	_, noReboot := e.Chance(core.FaultNoReboot)
	switch {
	case loseAnswer:
		e.Emit(core.Event{Event: core.EventFault, Fault: lost.String(), Protocol: "http", Remote: r.Remote()})
		d.record(r, installed, 0, "", "fault "+lost.String()+": answer not sent")
		if lost.Mode == core.ModeReset {
			if tc, ok := r.Conn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			r.Conn().Close()
		}
	default:
		d.record(r, installed, 200, textSuccess, "")
		d.web.Reply(r, 200, arduino.TypeHTML, textSuccess, d.cors()...)
	}
	if noReboot {
		e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultNoReboot), Protocol: "http", Remote: r.Remote()})
		return core.ErrClose
	}
	return d.restart(r)
}

// record ends the upload's record: installed, or answered with nothing
// installed (a filesystem part ESPEasy ignores, a POST without a file).
func (d *device) record(r *core.Request, installed bool, status int, text, reason string) {
	if installed {
		d.up.Answered(status, text)
		return
	}
	if reason == "" {
		reason = "nothing was written: the device restarts into the image it runs"
	}
	d.up.Discard(r, status, text, reason)
}

// restart is delay(100), client().stop(), ESP.restart(): nothing queued
// behind it is served.
func (d *device) restart(r *core.Request) error {
	ctx := r.Context()
	if core.Sleep(ctx, d.e.FirmwareDelay(restartDelay)) {
		r.Conn().Close()
		d.e.RequestReboot("update")
	}
	<-ctx.Done()
	return core.ErrClose
}

// afterEarly ends a request answered early (early-answer): install and
// restart, or install nothing.
func (d *device) afterEarly(r *core.Request, early core.ArmedFault, discard bool) error {
	up := d.up
	switch {
	case discard:
		d.record(r, false, 200, textSuccess, "fault "+early.Fault.String()+": image discarded")
		return core.ErrClose
	case up.HasError() || !up.Installed():
		up.Answered(0, "")
		return core.ErrClose
	}
	up.Answered(200, textSuccess)
	return d.restart(r)
}

// dropped ends a request the server dropped without an answer: a body that
// was no form, a client gone mid-upload, a fault.
func (d *device) dropped(r *core.Request, cut arduino.Cut) error {
	up := d.up
	switch cut {
	case arduino.CutDrop:
		if d.authenticated {
			up.End(false) // the callback's UPLOAD_FILE_ABORTED
		}
		up.Answered(0, "")
		if tc, ok := r.Conn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	case arduino.CutPowerLoss:
		up.Answered(0, "")
		d.e.RequestReboot("power_loss")
		<-r.Context().Done()
	default:
		if d.authenticated && up.Running() {
			up.End(false) // the device closed the connection itself
		}
		up.Answered(0, "")
	}
	return core.ErrClose
}
