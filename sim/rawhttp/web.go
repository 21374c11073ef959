package rawhttp

import (
	"fmt"
	"html"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
)

// The web server on port 80. The OTS firmware's web app serves the
// configuration page, GET /api/status and POST /ota/upload; the seed
// advertises _http._tcp on 80 too but exposes no version there, so it
// serves only its page.

func (d *rawDevice) webRoutes() []core.Route {
	rs := []core.Route{{Method: "GET", Path: "/", Handle: d.handleIndex}}
	if d.p == OTS {
		if !d.e.Omits(omitAPIStatus) {
			rs = append(rs, core.Route{Method: "GET", Path: "/api/status", Handle: d.handleAPIStatus})
		}
		rs = append(rs, core.Route{Method: "POST", Path: "/ota/upload", Handle: d.handleWebUpload})
	}
	return rs
}

func (d *rawDevice) handleIndex(r *core.Request) error {
	c := d.e.Config()
	title := html.EscapeString(c.Instance)
	body := fmt.Sprintf("<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>",
		title, title, html.EscapeString(c.Name))
	return r.Send(200, core.TypeHTML, body)
}

// handleAPIStatus is the OTS web app's GET /api/status (camelCase, as the
// firmware's JSON is). The firmware as shipped tells no uptime there
// (device-contract.md §1): only Config.APIUptime adds it.
func (d *rawDevice) handleAPIStatus(r *core.Request) error {
	if d.statusFault(r) {
		return core.ErrClose
	}
	c := d.e.Config()
	st := d.e.State()
	fields := []core.JSONField{
		{Key: "firmwareVersion", Val: st.Version}, {Key: "mode", Val: "STA"}, {Key: "ip", Val: c.IP.String()},
		{Key: "hostname", Val: c.Name}, {Key: "serialNumber", Val: c.SerialNumber}, {Key: "ownerName", Val: c.OwnerName},
		{Key: "wifiConnected", Val: true}, {Key: "rssi", Val: -52},
	}
	if c.APIUptime {
		fields = append(fields, core.JSONField{Key: "uptime", Val: int64(st.Uptime / time.Second)})
	}
	fields = append(fields, core.JSONField{Key: "freeHeap", Val: 183_452})
	body, err := d.e.ObjectJSON(omitAPIStatus, fields)
	if err != nil {
		r.SendErr(500, "")
		return core.ErrClose
	}
	return r.Send(200, core.TypeJSON, string(body))
}

// handleWebUpload is the web app's upload handler: the size check first,
// then the same receive loop as port 3232.
func (d *rawDevice) handleWebUpload(r *core.Request) error {
	if size := r.ContentLength(); size <= 0 || size > webMaxFirmware {
		u := d.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), size)
		u.Fail(400, textBadSize, "content length out of range")
		r.SendErr(400, textBadSize)
		return core.ErrClose
	}
	return d.receiveImage(r, textWebOK)
}
