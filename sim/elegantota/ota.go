package elegantota

import (
	"context"
	"net"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// The answers.
const (
	textOK         = "OK"
	textBadMD5     = "MD5 parameter invalid"
	textChunkWrite = "Failed to write chunked data to free space"
)

// rebootAfter is loop()'s wait between a successful upload and
// ESP.restart() (more than 2000 ms).
const rebootAfter = 2000 * time.Millisecond

// setErr stores _update_error_str: printError and "\n".
func (d *device) setErr() {
	s := d.up.PrintError() + "\n"
	d.mu.Lock()
	d.errStr = s
	d.mu.Unlock()
}

func (d *device) errText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errStr
}

// handleStart is GET /ota/start: begin the update.
func (d *device) handleStart(r *core.Request) error {
	if !d.authOK(r) {
		return d.challenge(r)
	}
	args := arduino.Args(r)
	mode, _ := arduino.ArgValue(args, "mode")
	fs := mode == "fs"
	if hash, ok := arduino.ArgValue(args, "hash"); ok && len(hash) != 32 {
		return d.web.Reply(r, 400, arduino.TypePlain, textBadMD5)
	}
	// Update.setMD5(hash) took it; begin() clears it again.
	up := d.up
	size := arduino.SizeUnknown
	if up.ESP8266() {
		size = up.SketchSpace()
		if fs {
			size = d.e.FilesystemSize()
		}
	}
	if !up.Begin(size, fs) {
		if up.HasError() {
			d.setErr()
		}
		// Begun already: begin() says no and sets no error, so the answer
		// is 200 "OK" and the running update carries on.
	}
	if up.HasError() {
		return d.web.Reply(r, 400, arduino.TypePlain, d.errText())
	}
	return d.web.Reply(r, 200, arduino.TypePlain, textOK)
}

// handleUpload is POST /ota/upload.
func (d *device) handleUpload(r *core.Request) error {
	e, up := d.e, d.up
	early, hasEarly := e.ArmPoint(core.FaultEarlyAnswer, r.ContentLength())
	answered := false
	var cut arduino.Cut
	var written int64
	// answerEarly sends 200 "OK" before the image is in (early-answer);
	// false when the request stops here.
	answerEarly := func() bool {
		answered = true
		e.Emit(core.Event{Event: core.EventFault, Fault: early.Fault.String(), Protocol: "http", Remote: r.Remote(),
			Size: r.ContentLength(), Bytes: written})
		d.reply(r, 200, textOK)
		return early.Mode != core.ModeClose
	}
	write := func(data []byte) error {
		if hasEarly && !answered && written+int64(len(data)) >= early.At && !answerEarly() {
			return arduino.ErrStop
		}
		if answered && early.Mode == core.ModeDiscard {
			return nil
		}
		up.Session(r)
		n, c := up.Write(data)
		written += int64(n)
		if c != arduino.CutNone {
			cut = c
			return arduino.ErrStop
		}
		if n != len(data) {
			return errWriteFailed
		}
		return nil
	}
	var ok bool
	if d.async {
		authed := d.authOK(r)
		ok = arduino.ReadAsync(r, func(p *arduino.Part, data []byte, final bool) error {
			if !authed {
				return nil // requestAuthentication(), replaced by the handler's
			}
			if len(data) > 0 {
				if err := write(data); err == errWriteFailed {
					return nil // send(400, …), replaced; final is skipped
				} else if err != nil {
					return err
				}
			}
			if final && !(answered && early.Mode == core.ModeDiscard) && !up.End(true) {
				d.setErr()
			}
			return nil
		})
	} else {
		ok = d.web.ReadBody(r, func(ph arduino.Phase, p *arduino.Part, data []byte) error {
			switch ph {
			case arduino.PhaseStart:
				// An unauthenticated start only returns: the writes that
				// follow still reach a begun update.
				if hasEarly && early.At <= 0 && !answerEarly() {
					return arduino.ErrStop
				}
			case arduino.PhaseWrite:
				if err := write(data); err != nil && err != errWriteFailed {
					return err
				}
			case arduino.PhaseEnd:
				if !(answered && early.Mode == core.ModeDiscard) && !up.End(true) {
					d.setErr()
				}
			case arduino.PhaseAborted:
				// "Update Failed Unexpectedly (likely broken connection)":
				// logged, and the update stays begun.
			}
			return nil
		})
	}
	if !ok {
		return d.dropped(r, cut)
	}
	if answered {
		return d.afterEarly(r, early)
	}
	if !d.authOK(r) {
		// A sync upload's bytes reached a begun update all the same.
		up.Answered(401, "")
		return d.challenge(r)
	}
	if up.HasError() {
		text := d.errText()
		up.Answered(400, text)
		return d.reply(r, 400, text)
	}
	installed := up.Installed()
	lost, loseAnswer := e.Chance(core.FaultLoseAnswer)
	_, noReboot := e.Chance(core.FaultNoReboot)
	var err error
	switch {
	case loseAnswer:
		e.Emit(core.Event{Event: core.EventFault, Fault: lost.String(), Protocol: "http", Remote: r.Remote()})
		d.record(r, installed, 0, "", "fault "+lost.String()+": answer not sent")
		if lost.Mode == core.ModeReset {
			if tc, ok := r.Conn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		} else if !noReboot && !e.Config().NoLoop {
			// Silent: the connection stays open until the chip restarts.
			d.scheduleReboot(r.Context())
			<-r.Context().Done()
			return core.ErrClose
		}
		err = core.ErrClose
	default:
		d.record(r, installed, 200, textOK, "")
		err = d.reply(r, 200, textOK)
	}
	if noReboot {
		e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultNoReboot), Protocol: "http", Remote: r.Remote()})
	} else {
		d.scheduleReboot(r.Context())
	}
	return err
}

var errWriteFailed = writeFailed{}

type writeFailed struct{}

func (writeFailed) Error() string { return "Update.write took less than it was given" }

// reply is the upload route's answer: Connection: close, and on the async
// server Access-Control-Allow-Origin: *.
func (d *device) reply(r *core.Request, code int, text string) error {
	hs := []core.Header{{Name: "Connection", Value: "close"}}
	if d.async {
		hs = append(hs, core.Header{Name: "Access-Control-Allow-Origin", Value: "*"})
	}
	return d.web.Reply(r, code, arduino.TypePlain, text, hs...)
}

// record ends the upload's record: installed, or answered 200 with nothing
// installed (no /ota/start before it: the silent 200).
func (d *device) record(r *core.Request, installed bool, status int, text, reason string) {
	if installed {
		d.up.Answered(status, text)
		return
	}
	if d.up.Running() {
		// Answered while the update still runs (a body with no file
		// part): the update stays begun for the next upload.
		d.up.Discard(r, status, text, "no file part: the begun update stays open")
		return
	}
	if reason == "" {
		reason = "nothing was begun (no /ota/start): nothing written, the device restarts into the image it runs"
	}
	d.up.Discard(r, status, text, reason)
}

// scheduleReboot is the reboot flag loop() acts on 2 s later; a sketch
// without ElegantOTA.loop() (Config.NoLoop) never restarts. A later success
// moves the time.
func (d *device) scheduleReboot(ctx context.Context) {
	if d.e.Config().NoLoop {
		return
	}
	d.mu.Lock()
	if d.rebootAt != nil {
		close(d.rebootAt)
	}
	stop := make(chan struct{})
	d.rebootAt = stop
	d.mu.Unlock()
	wait := d.e.FirmwareDelay(rebootAfter)
	go func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			d.e.RequestReboot("update")
		case <-stop:
		case <-ctx.Done():
		}
	}()
}

// afterEarly ends a request answered early: the rest was read, and the
// image installed (restart 2 s later) or discarded.
func (d *device) afterEarly(r *core.Request, early core.ArmedFault) error {
	up := d.up
	switch {
	case early.Mode == core.ModeDiscard:
		d.record(r, false, 200, textOK, "fault "+early.Fault.String()+": image discarded")
		return core.ErrClose
	case !up.Installed():
		up.Answered(0, "")
		return core.ErrClose
	}
	up.Answered(200, textOK)
	d.scheduleReboot(r.Context())
	return core.ErrClose
}

// dropped ends a request dropped without an answer: the update stays
// begun (the broken-connection branch only logs), a power loss resets.
func (d *device) dropped(r *core.Request, cut arduino.Cut) error {
	switch cut {
	case arduino.CutDrop:
		if tc, ok := r.Conn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	case arduino.CutPowerLoss:
		d.up.Answered(0, "")
		d.e.RequestReboot("power_loss")
		<-r.Context().Done()
	}
	return core.ErrClose
}
