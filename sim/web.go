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

func (d *Device) webRoutes() []route {
	rs := []route{{"GET", "/", d.handleIndex}}
	if d.s.Personality == OTS {
		if !d.omits(omitAPIStatus) {
			rs = append(rs, route{"GET", "/api/status", d.handleAPIStatus})
		}
		rs = append(rs, route{"POST", "/ota/upload", d.handleWebUpload})
	}
	return rs
}

func (d *Device) handleIndex(r *request) error {
	title := html.EscapeString(d.s.Instance)
	body := fmt.Sprintf("<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>",
		title, title, html.EscapeString(d.s.Name))
	return r.send(200, typeHTML, body)
}

// handleAPIStatus is the OTS web app's GET /api/status (camelCase, as the
// firmware's JSON is). The firmware as shipped tells no uptime there
// (device-contract.md §1): only Config.APIUptime adds it.
func (d *Device) handleAPIStatus(r *request) error {
	if d.statusFault(r) {
		return errClose
	}
	st := d.State()
	fields := []jsonField{
		{"firmwareVersion", st.Version}, {"mode", "STA"}, {"ip", d.s.IP.String()}, {"hostname", d.s.Name},
		{"serialNumber", d.s.SerialNumber}, {"ownerName", d.s.OwnerName}, {"wifiConnected", true}, {"rssi", -52},
	}
	if d.s.APIUptime {
		fields = append(fields, jsonField{"uptime", int64(st.Uptime / time.Second)})
	}
	fields = append(fields, jsonField{"freeHeap", 183_452})
	body, err := d.objectJSON(omitAPIStatus, fields)
	if err != nil {
		r.sendErr(500, "")
		return errClose
	}
	return r.send(200, typeJSON, string(body))
}

// handleWebUpload is the web app's upload handler: the size check first,
// then the same receive loop as port 3232.
func (d *Device) handleWebUpload(r *request) error {
	if r.contentLen <= 0 || r.contentLen > webMaxFirmware {
		u := d.newUpload(r.ctx, "http", r.path, r.remote, r.contentLen)
		u.fail(400, textBadSize, "content length out of range")
		r.sendErr(400, textBadSize)
		return errClose
	}
	return d.receiveImage(r, textWebOK)
}
