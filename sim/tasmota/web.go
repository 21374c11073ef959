package tasmota

import (
	"fmt"
	"html"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// How Tasmota answers (xdrv_01_9_webserver.ino): WSContentBegin sends the
// headers with an unknown length (chunked to an HTTP/1.1 client, to the
// close otherwise) and WSHeaderSend's Server, Cache-Control, Pragma and
// Expires; WSContentEnd sends the last chunk and closes the client.

// closeWait is HTTP_MAX_CLOSE_WAIT: how long the sync server keeps a
// client whose handler sent nothing before it drops it.
const closeWait = 2000 * time.Millisecond

// restartTick is one second of the firmware's own schedule
// (Every250mSeconds' once-a-second steps: ota_state_flag, restart_flag).
const restartTick = time.Second

// serverHeader is WSHeaderSend's Server: "Tasmota/<version> (<hardware>)"
// in a 32-byte buffer.
func (d *device) serverHeader() string {
	s := "Tasmota/" + d.version + " (" + tasmotafw.Hardware(d.esp8266, d.e.Config().Chip) + ")"
	if len(s) > 31 {
		s = s[:31]
	}
	return s
}

func (d *device) headerSend() []core.Header {
	return []core.Header{{Name: "Server", Value: d.serverHeader()},
		{Name: "Cache-Control", Value: "no-cache, no-store, must-revalidate"},
		{Name: "Pragma", Value: "no-cache"}, {Name: "Expires", Value: "-1"}}
}

// content answers as WSContentBegin … WSContentEnd: chunked (HTTP/1.1) or
// to the close, then the client stopped.
func (d *device) content(r *core.Request, code int, ctype, body string) error {
	hs := append([]core.Header{{Name: "Content-Type", Value: ctype}}, d.headerSend()...)
	if r.Minor() >= 1 {
		hs = append(hs, core.Header{Name: "Accept-Ranges", Value: "none"}, core.Header{Name: "Transfer-Encoding", Value: "chunked"})
		var b strings.Builder
		for rest := body; rest != ""; {
			n := min(len(rest), 500) // CHUNKED_BUFFER_SIZE: the chunk buffer's flushes
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
		body = b.String()
	}
	hs = append(hs, core.Header{Name: "Connection", Value: "close"})
	r.SendRaw(code, r.Minor(), hs, body)
	return core.ErrClose
}

// simple answers as Webserver->send(code, type, text) after WSHeaderSend:
// with Content-Length.
func (d *device) simple(r *core.Request, code int, ctype, body string) error {
	return d.web.Reply(r, code, ctype, body, d.headerSend()...)
}

// silence is a handler that returns without an answer: the sync server
// keeps the client up to HTTP_MAX_CLOSE_WAIT, then drops it.
func (d *device) silence(r *core.Request) error {
	arduino.Drain(r)
	c := r.Conn()
	c.SetReadDeadline(time.Now().Add(d.e.FirmwareDelay(closeWait)))
	io.Copy(io.Discard, c) // until the client closes, or the wait ends
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseRead()
	}
	return core.ErrClose
}

// authenticated is WebAuthenticate(): no web password, or Basic/Digest
// admin:password.
func (d *device) authenticated(r *core.Request) bool {
	pw := d.e.Config().Password
	return pw.IsZero() || d.web.Authenticate(r, webUser, pw.Reveal())
}

// refererOK is the Referer gate of HttpCheckPriviledgedAccess: SetOption128
// off and the uppercased Referer holding the host name or the IPv4 address
// first at index 7 ("http://" is 7 long).
func (d *device) refererOK(r *core.Request) bool {
	d.p.mu.Lock()
	so128 := d.p.so128
	d.p.mu.Unlock()
	if so128 {
		return true
	}
	ref, _ := r.Header("Referer")
	ref = strings.ToUpper(strings.TrimSpace(ref))
	if ref == "" {
		return false
	}
	c := d.e.Config()
	return strings.Index(ref, strings.ToUpper(c.Name)) == 7 || strings.Index(ref, c.IP.String()) == 7
}

// privileged is HttpCheckPriviledgedAccess(autoAuth): the password (a 401
// Basic challenge, realm "Login Required"), then the Referer (nothing at
// all). false: the request was dealt with (answer sent or not).
func (d *device) privileged(r *core.Request, autoAuth bool) (bool, error) {
	if autoAuth && !d.authenticated(r) {
		d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, "", "web password")
		return false, d.web.RequestAuth(r, false, "")
	}
	if !d.refererOK(r) {
		ref, _ := r.Header("Referer")
		d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 0, "",
			fmt.Sprintf("Referer %q denied: Tasmota answers nothing (SetOption128 0)", ref))
		return false, d.silence(r)
	}
	return true, nil
}

func (d *device) routes() []core.Route {
	rs := []core.Route{
		{Method: "GET", Path: "/", Handle: d.handleRoot},
		{Method: "GET", Path: "/up", Handle: d.handleUpgradePage},
		{Method: "GET", Path: "/u1", Handle: d.handleUpgradeStart},
		{Method: "POST", Path: "/u2", Handle: d.handleUpload},
		{Method: "OPTIONS", Path: "/u2", Handle: d.handlePreflight},
		{Method: "GET", Path: "/rs", Handle: d.handleRestorePage},
		{Method: "GET", Path: "/cm", Handle: d.handleCommand},
		{Method: "POST", Path: "/cm", Handle: d.handleCommand},
	}
	if !d.esp8266 {
		rs = append(rs, core.Route{Method: "GET", Path: "/u4", Handle: d.handleSwitchBoot})
	}
	return rs
}

// page is a stand-in for Tasmota's page frame (HTTP_HEADER1 … ) around
// body: the language, the device name and the title as the build has them.
func (d *device) page(title, body string) string {
	return `<!DOCTYPE html><html lang="` + d.l.html + `" class=""><head><meta charset='utf-8'>` +
		`<meta name="viewport" content="width=device-width,initial-scale=1,user-scalable=no"/>` +
		`<title>Tasmota - ` + html.EscapeString(title) + `</title></head><body>` +
		`<div style='text-align:left;display:inline-block;min-width:340px;'><div style='text-align:center;'>` +
		`<h3>Tasmota</h3><h2>Tasmota</h2></div>` + body + `</div></body></html>`
}

// handleRoot is the main page (asks for the password; no Referer gate).
func (d *device) handleRoot(r *core.Request) error {
	if !d.authenticated(r) {
		return d.web.RequestAuth(r, false, "")
	}
	body := `<div style='text-align:right;font-size:11px;'><hr/><a href='https://bit.ly/tasmota' target='_blank'>Tasmota ` +
		d.version + "(" + d.image + `) by Theo Arends</a></div>`
	return d.content(r, 200, arduino.TypeHTML, d.page("Main Menu", body))
}

// handleNotFound is HandleNotFound: 404 text/plain naming the URI, the
// method (GET or POST) and the arguments.
func (d *device) handleNotFound(r *core.Request) error {
	if !d.web.ReadBody(r, nil) {
		return core.ErrClose
	}
	method := "GET"
	if r.Method() != "GET" {
		method = "POST"
	}
	args := arduino.Args(r)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nURI: %s\nMethod: %s\nArguments: %d\n", d.l.fileNotFound, r.Path(), method, len(args))
	for _, a := range args {
		fmt.Fprintf(&b, " %s: %s\n", a.Name, a.Value)
	}
	return d.content(r, 404, arduino.TypePlain, b.String())
}

// handlePreflight is OPTIONS /u2: CORS methods and headers, no checks.
func (d *device) handlePreflight(r *core.Request) error {
	arduino.Drain(r)
	hs := append(d.headerSend(), core.Header{Name: "Access-Control-Allow-Methods", Value: "GET, POST"},
		core.Header{Name: "Access-Control-Allow-Headers", Value: "authorization"})
	return d.web.Reply(r, 200, arduino.TypeHTML, "", hs...)
}

// msgRestart is HTTP_MSG_RSTRT.
func (d *device) msgRestart() string {
	return "<br><div style='text-align:center;'>" + d.l.willRestart + "</div><br>"
}

// restartSoon is restart_flag = 2: the restart two of the firmware's
// seconds later (restart_flag counts down once a second).
func (d *device) restartSoon(reason string) {
	ctx := d.e.BootContext()
	go func() {
		if core.Sleep(ctx, 2*d.e.FirmwareDelay(restartTick)) {
			d.e.RequestReboot(reason)
		}
	}()
}

func quote(s string) string { return strconv.Quote(s) }
