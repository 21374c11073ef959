package wled

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// The texts of WLED's answers (wled_server.cpp, ota_update.cpp).
const (
	textAccessDenied = "Access Denied"
	textNotSubnet    = "Client is not on local subnet."
	textUnlockCfg    = "Please unlock settings using PIN code!"
	textUnlockOTA    = "Please unlock OTA in security settings!"
	textUpdateOK     = "Update successful!"
	textUpdateFailed = "Update failed!"
	textRebooting    = "Rebooting now..."
	textInternal     = "Internal server fault"
	textNoMetadata   = "This firmware file is missing compatibility metadata."
	textIgnoreHint   = " Enable 'Ignore firmware validation' to proceed anyway."
	textNeverArrived = "Release check data never arrived?"
	textBLUpdated    = "Bootloader updated successfully!"
	textBLFailed     = "Bootloader update failed!"
)

// Where the upload handler looks for the metadata: once 512 bytes past
// this offset have arrived (METADATA_OFFSET, METADATA_SEARCH_RANGE).
const (
	metaOffsetESP32   = 256
	metaOffsetESP8266 = 0x1000
	metaSearchRange   = 512
)

// resetWait is WLED::reset()'s wait for the answer to flush before
// ESP.restart().
const resetWait = 450 * time.Millisecond

// msgPage is data/msg.htm as the build stores it (html-minify, then the
// <h2>…</body> part replaced by %MSG%); the minified form is derived.
const msgPage = `<!DOCTYPE html><html lang="en"><head><meta content='width=device-width' name='viewport'><title>WLED Message</title><script>function B(){window.history.back()};function RS(){window.location="../settings"}function RP(){top.location.href="../"}</script><style>@import url("style.css");</style></head><body><h2>%MSG%</body></html>`

// message is serveMessage's page: the head line, the sub line, and what
// optionType adds (msgProcessor): 254 a Back button, 120…179 a reload of
// the parent after optionType-120 seconds.
func message(head, sub string, option int) string {
	b := head + "</h2>" + sub
	switch {
	case option < 60:
		b += fmt.Sprintf("<script>setTimeout(RS,%d)</script>", option*1000)
	case option >= 120 && option < 180:
		b += fmt.Sprintf("<script>setTimeout(RP,%d)</script>", (option-120)*1000)
	case option == 254:
		b += `<br><br><button type="button" class="bt" onclick="B()">Back</button>`
	}
	return strings.Replace(msgPage, "%MSG%", b, 1)
}

// serveMessage answers as WLED's serveMessage does: send_P with a template
// processor, for which ESPAsyncWebServer knows no length
// (AsyncAbstractResponse: no Content-Length, chunked): chunked to an
// HTTP/1.1 client, to the close to an HTTP/1.0 one.
func (d *device) serveMessage(r *core.Request, code int, head, sub string, option int) error {
	body := message(head, sub, option)
	hs := []core.Header{{Name: "Connection", Value: "close"}}
	if r.Minor() >= 1 {
		hs = append(hs, core.Header{Name: "Accept-Ranges", Value: "none"}, core.Header{Name: "Transfer-Encoding", Value: "chunked"})
		body = fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	hs = append(hs, core.Header{Name: "Content-Type", Value: arduino.TypeHTML})
	r.SendRaw(code, r.Minor(), hs, body)
	return core.ErrClose
}

// gate is the upload handler's privilege checks at a file's first chunk:
// the refusal's sub line, or "".
func (d *device) gate(remote string) string {
	c := d.e.Config()
	if d.line16 {
		client := remoteAddr(remote)
		same := d.subnet.Contains(client)
		if (!c.OTAAnySubnet && !same && !c.SettingsPIN) || (c.OTAAnySubnet && !inLocalSubnet(client, same)) {
			return textNotSubnet
		}
	}
	if c.SettingsPIN {
		return textUnlockCfg
	}
	if c.OTALock {
		return textUnlockOTA
	}
	return ""
}

// remoteAddr is the client's IPv4 address as the device sees it.
func remoteAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// inLocalSubnet is WLED's inLocalSubnet: the private ranges, or the
// device's own network (the soft AP's 4.3.2.0/24 counts only while the AP
// is up, which the sim's devices never are).
func inLocalSubnet(a netip.Addr, same bool) bool {
	for _, p := range []string{"10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12"} {
		if netip.MustParsePrefix(p).Contains(a) {
			return true
		}
	}
	return same
}

// upload is the UpdateContext of one POST /update.
type upload struct {
	replySent, updateStarted, uploadComplete, releaseOK bool
	errorMessage                                        string
	metaBuf                                             []byte
	gzip                                                bool
	gzHead                                              []byte // the first bytes of a gzip upload, to inflate at the end
	gzFinal                                             []byte // its last chunk, written once validated
	answered                                            func() error
}

// handleUpdate is POST /update: multipart, any field name; the fields
// before the file part are the request's params when its first chunk
// arrives (skipValidation=1 skips the release check).
func (d *device) handleUpdate(r *core.Request) error {
	params := map[string]string{}
	var ctx *upload
	var cut arduino.Cut
	onData := func(p *arduino.Part, data []byte, final bool) error {
		index := p.Total
		if index == 0 {
			if ctx != nil {
				return nil // a second file part: the sim ignores it
			}
			ctx = &upload{}
			if sub := d.gate(r.Remote()); sub != "" {
				d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, sub, "WLED refused the upload: "+sub)
				ctx.replySent = true
				ctx.answered = func() error { return d.serveMessage(r, 401, textAccessDenied, sub, 254) }
				return nil
			}
		}
		if ctx == nil || ctx.replySent || ctx.errorMessage != "" {
			return nil
		}
		if index == 0 {
			if !d.beginOTA(r, ctx, params) {
				return nil
			}
			if d.line16 && d.esp8266 && len(data) >= 2 && data[0] == 0x1F && data[1] == 0x8B {
				ctx.gzip = true
			}
		}
		if ctx.gzip && len(ctx.gzHead) < 64<<10 {
			ctx.gzHead = append(ctx.gzHead, data[:min(len(data), 64<<10-len(ctx.gzHead))]...)
		}
		if !ctx.releaseOK && !ctx.gzip {
			off := int64(metaOffsetESP32)
			if d.esp8266 {
				off = metaOffsetESP8266
			}
			if index+int64(len(data)) > off {
				if index+int64(len(data))-off >= metaSearchRange {
					search := data
					if len(ctx.metaBuf) > 0 {
						ctx.metaBuf = append(ctx.metaBuf, data...)
						search = ctx.metaBuf
					}
					ok, msg := d.validate(search)
					ctx.metaBuf = nil
					if !ok {
						ctx.errorMessage = msg + textIgnoreHint
						return nil
					}
					ctx.releaseOK = true
				} else {
					ctx.metaBuf = append(ctx.metaBuf, data...)
				}
			}
		}
		if final && ctx.gzip && !ctx.releaseOK {
			ctx.gzFinal = append([]byte(nil), data...)
			return nil
		}
		if final && !ctx.releaseOK {
			ctx.errorMessage = textNeverArrived
			return nil
		}
		if !d.up.HasError() {
			if _, ct := d.up.Write(data); ct != arduino.CutNone {
				cut = ct
				return arduino.ErrStop
			}
		}
		if final {
			ctx.uploadComplete = true
		}
		return nil
	}
	field := func(name, value string) { params[name] = value }
	if !arduino.ReadAsyncForm(r, field, onData) {
		return d.dropped(r, ctx, cut)
	}
	if ctx == nil {
		// No file part: no context was made.
		return d.serveMessage(r, 500, textUpdateFailed, textInternal, 254)
	}
	if ctx.answered != nil {
		return ctx.answered()
	}
	if ctx.replySent {
		return core.ErrClose
	}
	if ctx.gzip && ctx.errorMessage == "" {
		d.validateGzip(ctx)
	}
	if ctx.errorMessage != "" {
		d.endOTA(ctx) // the disconnect after the answer ends it
		d.recordFailure(r, ctx.errorMessage)
		return d.serveMessage(r, 500, textUpdateFailed, ctx.errorMessage, 254)
	}
	if !ctx.updateStarted {
		return d.serveMessage(r, 500, textUpdateFailed, "Internal software failure", 254)
	}
	installed := d.endOTA(ctx)
	if !installed {
		text := d.up.ErrorString()
		d.recordFailure(r, text)
		return d.serveMessage(r, 500, textUpdateFailed, text, 254)
	}
	return d.succeed(r)
}

// beginOTA is ota_update.cpp's beginOTA: 503 while another update runs,
// the skipValidation param, Update.begin(Content-Length).
func (d *device) beginOTA(r *core.Request, ctx *upload, params map[string]string) bool {
	if d.up.Running() {
		ctx.replySent = true
		ctx.answered = func() error {
			d.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).
				Fail(503, "", "another upload is running")
			return d.web.Reply(r, 503, "", "")
		}
		return false
	}
	if params["skipValidation"] == "1" {
		ctx.releaseOK = true
	}
	size := r.ContentLength()
	if size <= 0 {
		size = d.up.SketchSpace()
	}
	if !d.up.Begin(size, false) {
		ctx.errorMessage = d.up.ErrorString()
		return false
	}
	d.up.Session(r)
	ctx.updateStarted = true
	return true
}

// endOTA is endOTA: Update.end(uploadComplete); true when the image is
// the boot image now.
func (d *device) endOTA(ctx *upload) bool {
	if !ctx.updateStarted {
		return false
	}
	ctx.updateStarted = false
	return d.up.End(ctx.uploadComplete)
}

// validate is validateOTA on the bytes searched: the metadata, its release
// against the device's, and (desc_version 2) its safe-update version
// against the device's version.
func (d *device) validate(b []byte) (bool, string) {
	v, _ := parseVersion(d.ver)
	m, ok := d.findMetadata(b, v)
	if !ok {
		return false, textNoMetadata
	}
	uploaded, current := m.release, d.release
	if v.less(version{0, 15, 5}) {
		if uploaded == "" {
			return false, "" // refused, without a message
		}
	} else {
		uploaded, current = strings.TrimSuffix(uploaded, "_V4"), strings.TrimSuffix(current, "_V4")
	}
	if uploaded != current {
		return false, fmt.Sprintf("Firmware release name mismatch: current='%s', uploaded='%s'.", d.release, m.release)
	}
	if m.descVersion > 1 {
		own := []int{v.major, v.minor, v.patch}
		for i, s := range m.safe {
			if int(s) > own[i] {
				return false, fmt.Sprintf("Cannot update from this version: requires at least %d.%d.%d, current='%s'.",
					m.safe[0], m.safe[1], m.safe[2], d.ver)
			}
			if int(s) < own[i] {
				break
			}
		}
	}
	return true, ""
}

// findMetadata is the device's findWledMetadata: 0.15.2 and 0.15.3 skip a
// structure newer than desc_version 2.
func (d *device) findMetadata(b []byte, v version) (metadata, bool) {
	for len(b) >= metaSize {
		m, ok := findMetadata(b)
		if !ok {
			return metadata{}, false
		}
		if v.less(version{0, 15, 4}) && m.descVersion > 2 {
			i := bytes.Index(b, encodeMetadata(m)[:4])
			b = b[i+1:]
			continue
		}
		return m, true
	}
	return metadata{}, false
}

// validateGzip is validateGzippedOTA (16.x on ESP8266): inflate the head of
// what was written, look for the metadata there, and write the last chunk
// only when it passed.
func (d *device) validateGzip(ctx *upload) {
	zr, err := gzip.NewReader(bytes.NewReader(ctx.gzHead))
	if err != nil {
		ctx.errorMessage = "Invalid gzip header in OTA firmware"
		return
	}
	head := make([]byte, metaOffsetESP8266+metaSearchRange)
	if _, err := io.ReadFull(zr, head); err != nil {
		ctx.errorMessage = "Not enough decompressed data for validation"
		return
	}
	if ok, msg := d.validate(head); !ok {
		ctx.errorMessage = msg + textIgnoreHint
		return
	}
	ctx.releaseOK = true
	if !d.up.HasError() {
		d.up.Write(ctx.gzFinal)
	}
	ctx.uploadComplete = true
}

// recordFailure closes the upload record of a refused or failed upload.
func (d *device) recordFailure(r *core.Request, text string) {
	if !d.up.Answered(500, text) {
		d.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()).Fail(500, text, "WLED refused the image")
	}
}

// succeed answers 200 and resets 450 ms later (doReboot, served by the
// main loop: WLED::reset()). Faults lose-answer and no-reboot change it.
func (d *device) succeed(r *core.Request) error {
	e := d.e
	lost, loseAnswer := e.Chance(core.FaultLoseAnswer)
	_, noReboot := e.Chance(core.FaultNoReboot)
	if loseAnswer {
		e.Emit(core.Event{Event: core.EventFault, Fault: lost.String(), Protocol: "http", Remote: r.Remote()})
		d.up.Answered(0, "")
		if lost.Mode == core.ModeReset {
			if tc, ok := r.Conn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		r.Conn().Close()
	} else {
		d.up.Answered(200, textUpdateOK)
		d.serveMessage(r, 200, textUpdateOK, textRebooting, 131)
		r.Conn().Close()
	}
	if noReboot {
		e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultNoReboot), Protocol: "http", Remote: r.Remote()})
		return core.ErrClose
	}
	if core.Sleep(r.Context(), e.FirmwareDelay(resetWait)) {
		e.RequestReboot("update")
	}
	return core.ErrClose
}

// dropped ends a request the server dropped (a fault cut it, the client
// went away): the disconnect runs endOTA, which fails the update.
func (d *device) dropped(r *core.Request, ctx *upload, cut arduino.Cut) error {
	if ctx != nil && ctx.updateStarted {
		ctx.uploadComplete = false
		d.endOTA(ctx)
	}
	d.up.Answered(0, "")
	switch cut {
	case arduino.CutDrop:
		if tc, ok := r.Conn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	case arduino.CutPowerLoss:
		d.e.RequestReboot("power_loss")
		<-r.Context().Done()
	}
	return core.ErrClose
}

// handleUpdatePage is GET /update: the OTA lock's refusal, or the update
// page (serveSettings with the PIN check).
func (d *device) handleUpdatePage(r *core.Request) error {
	c := d.e.Config()
	switch {
	case c.OTALock:
		return d.serveMessage(r, 401, textAccessDenied, textUnlockOTA, 254)
	case c.SettingsPIN:
		return d.web.Reply(r, 401, arduino.TypeHTML, pinPage)
	}
	return d.web.Reply(r, 200, arduino.TypeHTML, updatePage(d.ver))
}

// pinPage stands in for the settings PIN page.
const pinPage = `<!DOCTYPE html><html><head><title>PIN required</title></head><body><form method="post" action="./settings?pin"><input type="password" name="PIN" maxlength="4"><button type="submit">Submit</button></form></body></html>`

// updatePage stands in for data/update.htm: the form as WLED's, a hidden
// skipValidation before the file input named "update".
func updatePage(ver string) string {
	return `<!DOCTYPE html><html><head><title>WLED Software Update</title></head><body><h2>WLED Software Update</h2>` +
		`Installed version: <span class="sip">WLED ` + ver + `</span><br>` +
		`<form method='POST' action='./update' id='uf' enctype='multipart/form-data'>` +
		`<input type="hidden" name="skipValidation" value="" id="sV">` +
		`<input type='file' name='update' required><br>` +
		`<input type='checkbox' onchange="sV.value=checked?1:''" id="skipValidation"><label for='skipValidation'>Ignore firmware validation</label><br>` +
		`<button type="submit">Update!</button></form></body></html>`
}

// handleBootloader is POST /updatebootloader (16.x, ESP32): the same
// gates; chips whose bootloader update WLED has not validated refuse;
// the others take an image of at most 32 KiB whose header starts 0xE9
// (verifyBootloaderImage checks more: segments, chip id, size). The sim
// keeps no bootloader: a taken one changes nothing but the restart.
func (d *device) handleBootloader(r *core.Request) error {
	var sub, failure string
	var n int64
	var head []byte
	first := true
	onData := func(p *arduino.Part, data []byte, final bool) error {
		if first {
			first = false
			sub = d.gate(r.Remote())
			if sub == "" && d.blUnsupported() {
				failure = "Bootloader update not supported on this chip"
			}
		}
		if n == 0 && len(head) < 24 {
			head = append(head, data[:min(len(data), 24-len(head))]...)
		}
		n += int64(len(data))
		return nil
	}
	if !arduino.ReadAsyncForm(r, nil, onData) {
		return core.ErrClose
	}
	switch {
	case first:
		return d.serveMessage(r, 500, textBLFailed, textInternal, 254)
	case sub != "":
		d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, sub, "WLED refused the bootloader upload: "+sub)
		return d.serveMessage(r, 401, textAccessDenied, sub, 254)
	case failure != "":
	case n > 0x8000:
		failure = fmt.Sprintf("Bootloader file too large: %d bytes (max: %d bytes)", n, 0x8000)
	case n == 0:
		failure = "No bootloader data received"
	case n < 24:
		failure = "Too small"
	case head[0] != 0xE9:
		failure = "Invalid header"
	}
	if failure != "" {
		return d.serveMessage(r, 500, textBLFailed, failure, 254)
	}
	d.serveMessage(r, 200, textBLUpdated, textRebooting, 131)
	r.Conn().Close()
	if core.Sleep(r.Context(), d.e.FirmwareDelay(resetWait)) {
		d.e.RequestReboot("bootloader update")
	}
	return core.ErrClose
}

// blUnsupported: BOOTLOADER_OTA_UNSUPPORTED (ESP32-S3, -C3, -C6, -P4, -C5).
func (d *device) blUnsupported() bool {
	switch d.e.Config().Chip {
	case "esp32", "esp32s2":
		return false
	}
	return true
}
