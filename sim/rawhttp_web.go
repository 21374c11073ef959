package sim

import (
	"fmt"
	"html"
	"time"
)

// The web server on port 80. The OTS firmware's web app serves the
// configuration page, GET /api/status and POST /ota/upload; the seed
// advertises _http._tcp on 80 too but exposes no version there, so it
// serves only its page.

func (d *rawDevice) webRoutes() []Route {
	rs := []Route{{"GET", "/", d.handleIndex}}
	if d.p == OTS {
		if !d.e.Omits(omitAPIStatus) {
			rs = append(rs, Route{"GET", "/api/status", d.handleAPIStatus})
		}
		rs = append(rs, Route{"POST", "/ota/upload", d.handleWebUpload})
	}
	return rs
}

func (d *rawDevice) handleIndex(r *Request) error {
	c := d.e.Config()
	title := html.EscapeString(c.Instance)
	body := fmt.Sprintf("<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>",
		title, title, html.EscapeString(c.Name))
	return r.Send(200, TypeHTML, body)
}

// handleAPIStatus is the OTS web app's GET /api/status (camelCase, as the
// firmware's JSON is). The firmware as shipped tells no uptime there
// (device-contract.md §1): only Config.APIUptime adds it.
func (d *rawDevice) handleAPIStatus(r *Request) error {
	if d.statusFault(r) {
		return ErrClose
	}
	c := d.e.Config()
	st := d.e.State()
	fields := []JSONField{
		{"firmwareVersion", st.Version}, {"mode", "STA"}, {"ip", c.IP.String()}, {"hostname", c.Name},
		{"serialNumber", c.SerialNumber}, {"ownerName", c.OwnerName}, {"wifiConnected", true}, {"rssi", -52},
	}
	if c.APIUptime {
		fields = append(fields, JSONField{"uptime", int64(st.Uptime / time.Second)})
	}
	fields = append(fields, JSONField{"freeHeap", 183_452})
	body, err := d.e.ObjectJSON(omitAPIStatus, fields)
	if err != nil {
		r.SendErr(500, "")
		return ErrClose
	}
	return r.Send(200, TypeJSON, string(body))
}

// handleWebUpload is the web app's upload handler: the size check first,
// then the same receive loop as port 3232.
func (d *rawDevice) handleWebUpload(r *Request) error {
	if size := r.ContentLength(); size <= 0 || size > webMaxFirmware {
		u := d.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), size)
		u.Fail(400, textBadSize, "content length out of range")
		r.SendErr(400, textBadSize)
		return ErrClose
	}
	return d.receiveImage(r, textWebOK)
}
