package tasmota

import (
	"fmt"
	"html"
	"net"
	"strconv"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// handleUpgradePage is GET /up (HandleUpgradeFirmware): privileged; the
// page with OtaUrl and the upload form; /u2 now takes firmware.
func (d *device) handleUpgradePage(r *core.Request) error {
	if ok, err := d.privileged(r, true); !ok {
		return err
	}
	d.p.mu.Lock()
	url := d.p.otaURL
	d.p.mu.Unlock()
	// The button submits the form; on the safeboot layout's app
	// (HTTP_FORM_RST_UPG_FCT) it calls the page script's upl() instead,
	// which restarts into safeboot (GET /u4?u4=fct) before it submits.
	submit, factory := "this.form.submit();", ""
	if d.e.Config().Safeboot && !d.runningFactory() {
		submit = "return upl(this);"
		factory = "<div id='f3' style='display:none;'></div>"
	}
	body := "<fieldset><legend><b>&nbsp;" + d.l.otaURLTxt + "&nbsp;</b></legend><form method='get' action='u1'>" +
		"<input id='o' placeholder=\"OTA_URL\" value=\"" + html.EscapeString(url) + "\"><br><br>" +
		"<button type='submit'>" + d.l.startUpgrade + "</button></form></fieldset><br><br>" +
		"<fieldset><legend><b>&nbsp;" + d.l.upgradeByFile + "&nbsp;</b></legend>" +
		"<form method='post' action='u2?fsz=' enctype='multipart/form-data'><br><input type='file' name='u2'><br><br>" +
		"<button type='submit' onclick='this.form.action+=this.form[\"u2\"].files[0].size;" + submit + "'>" + d.l.startUpgrade + "</button></form></fieldset>" + factory
	d.mu.Lock()
	d.uploadType = uplTasmota
	d.mu.Unlock()
	return d.content(r, 200, arduino.TypeHTML, d.page(d.l.firmwareUpgrade, body))
}

// handleRestorePage is GET /rs: privileged; /u2 now restores settings.
func (d *device) handleRestorePage(r *core.Request) error {
	if ok, err := d.privileged(r, true); !ok {
		return err
	}
	d.mu.Lock()
	d.uploadType = uplSettings
	d.mu.Unlock()
	return d.content(r, 200, arduino.TypeHTML, d.page("Restore Configuration",
		"<form method='post' action='u2' enctype='multipart/form-data'><input type='file' name='u2'></form>"))
}

// settingsSize is sizeof(TSettings): a settings restore of more fails 9.
const settingsSize = 4096

// handleUpload is POST /u2: HandleUploadLoop runs over the body as the
// server parses it, with no check at all (so a request the handler then
// refuses has written its image already), then HandleUploadDone:
// privileged, and the page "Upload Successful" or "Upload Failed" with
// the error's text, always 200; success restarts.
func (d *device) handleUpload(r *core.Request) error {
	e, up := d.e, d.up
	d.mu.Lock()
	typ := d.uploadType
	d.mu.Unlock()
	fsz, _ := arduino.ArgValue(arduino.Args(r), "fsz")
	size, _ := strconv.ParseInt(fsz, 10, 64) // atoi: 0 when absent or not a number
	var cut arduino.Cut
	var total int64
	onUpload := func(ph arduino.Phase, p *arduino.Part, data []byte) error {
		if d.uploadErr != 0 {
			// An error stands until a page shows it: the loop ends the
			// update once and ignores the rest, a next part's start too.
			if !d.errSignalled {
				if typ == uplTasmota {
					up.End(false)
				}
				d.errSignalled = true
			}
			return nil
		}
		switch ph {
		case arduino.PhaseStart:
			d.errSignalled = false
			if p.Filename == "" {
				d.uploadErr = 1
			}
		case arduino.PhaseWrite:
			if p.Total == 0 && len(data) > 0 {
				if typ == uplTasmota {
					if data[0] != 0xE9 && data[0] != 0x1F {
						d.uploadErr = 3
						return nil
					}
					if data[0] == 0xE9 && size > d.freeSketchSpace() {
						d.uploadErr = 4
						return nil
					}
					d.upgrading.Store(true)
					if !d.beginUpload() {
						d.uploadErr = 2
						d.upgrading.Store(false)
						e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).
							Fail(0, "", "Update.begin failed: the running image holds the only OTA partition")
						return nil
					}
					up.Session(r)
				}
			}
			total += int64(len(data))
			if typ == uplSettings {
				if total > settingsSize {
					d.uploadErr = 9
				}
				return nil
			}
			n, ct := up.Write(data)
			if ct != arduino.CutNone {
				cut = ct
				return arduino.ErrStop
			}
			if n != len(data) {
				d.uploadErr = 2
			}
		case arduino.PhaseEnd:
			switch {
			case typ == uplSettings:
				d.uploadErr = 8 // the sim keeps no settings file to restore
			case d.corrupt.Load():
				up.End(false)
				d.uploadErr = 6
			case !up.End(true):
				d.uploadErr = 6
			}
		case arduino.PhaseAborted:
			d.uploadErr = 7
			if typ == uplTasmota {
				up.End(false)
			}
		}
		return nil
	}
	if !d.web.ReadBody(r, onUpload) {
		up.Answered(0, "")
		if cut == arduino.CutPowerLoss {
			e.RequestReboot("power_loss")
			<-r.Context().Done()
		}
		if cut == arduino.CutDrop {
			if tc, ok := r.Conn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		return core.ErrClose
	}
	ok, err := d.privileged(r, true)
	if !ok {
		// The image, if one came, is the boot image now; nothing restarts.
		up.Answered(0, "")
		d.upgrading.Store(false)
		return err
	}
	errNo := d.uploadErr
	d.uploadErr = 0
	var body string
	if errNo != 0 {
		text := d.l.uploadError(errNo)
		body = fmt.Sprintf("<div style='text-align:center;'><b>%s <font color='#%06x'>%s</font></b><br><br>%s</div><br>",
			d.l.upload, 0xff5661, d.l.failed, text)
		if !up.Answered(200, text) {
			e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).
				Fail(200, text, fmt.Sprintf("upload error %d", errNo))
		}
		d.upgrading.Store(false)
	} else {
		body = fmt.Sprintf("<div style='text-align:center;'><b>%s <font color='#%06x'>%s</font></b><br>%s</div><br>",
			d.l.upload, 0x47c266, d.l.successful, d.msgRestart())
		if !up.Answered(200, d.l.successful) {
			e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).
				EndAnswered("discarded", 200, d.l.successful, "nothing was written (a settings restore)")
		}
		if d.runningFactory() {
			d.p.mu.Lock()
			d.p.bootFactory = false // the new app boots: Update.end chose it
			d.p.mu.Unlock()
		}
		d.restartSoon("update")
	}
	return d.content(r, 200, arduino.TypeHTML, d.page(d.l.information, body))
}

// beginUpload is Update.begin(maxSketchSpace): (free sketch space - 4 KiB)
// rounded down to a sector. On the safeboot layout the running app has no
// other OTA partition to write (arduino-esp32 3.3's "Partition Could Not
// be Found"), so only safeboot can take an upload.
func (d *device) beginUpload() bool {
	if d.e.Config().Safeboot && !d.runningFactory() {
		return false
	}
	max := (d.freeSketchSpace() - 0x1000) &^ 0xFFF
	return max > 0 && d.up.Begin(max, false)
}

// handleSwitchBoot is GET /u4?u4=fct|ota[&api] (ESP32): fct on the
// safeboot layout while the app runs restarts into safeboot ("false" in
// api mode); ota from safeboot switches back; otherwise "true" (safeboot
// layout) or "none".
func (d *device) handleSwitchBoot(r *core.Request) error {
	if ok, err := d.privileged(r, true); !ok {
		return err
	}
	args := arduino.Args(r)
	u4, _ := arduino.ArgValue(args, "u4")
	_, api := arduino.ArgValue(args, "api")
	single := d.e.Config().Safeboot
	toFactory := u4 == "fct" && single && !d.runningFactory()
	toOTA := u4 == "ota" && !(single && !d.runningFactory())
	d.mu.Lock()
	d.uploadType = uplTasmota
	d.mu.Unlock()
	if toFactory || toOTA {
		d.p.mu.Lock()
		d.p.bootFactory = toFactory
		d.p.mu.Unlock()
		if api {
			d.simple(r, 200, arduino.TypePlain, "false")
			r.Conn().Close()
			d.e.RequestReboot("safeboot")
			return core.ErrClose
		}
		d.restartSoon("safeboot")
		return d.content(r, 200, arduino.TypeHTML, d.page(d.l.information, d.msgRestart()))
	}
	if api {
		answer := "none"
		if single {
			answer = "true"
		}
		return d.simple(r, 200, arduino.TypePlain, answer)
	}
	return d.web.Reply(r, 302, arduino.TypePlain, "", core.Header{Name: "Location", Value: "/"})
}

// handleUpgradeStart is GET /u1?o=URL: privileged; OtaUrl (when given),
// the "Upgrade started" page, then Upgrade 1.
func (d *device) handleUpgradeStart(r *core.Request) error {
	if ok, err := d.privileged(r, true); !ok {
		return err
	}
	if o, _ := arduino.ArgValue(arduino.Args(r), "o"); o != "" {
		d.execute("OtaUrl " + o)
	}
	body := "<div style='text-align:center;'><b>" + d.l.upgradeStarted + " ...</b></div>" + d.msgRestart()
	err := d.content(r, 200, arduino.TypeHTML, d.page(d.l.information, body))
	d.execute("Upgrade 1")
	return err
}
