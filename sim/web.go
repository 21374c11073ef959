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
		rs = append(rs,
			route{"GET", "/api/status", d.handleAPIStatus},
			route{"POST", "/ota/upload", d.handleWebUpload},
		)
	}
	return rs
}

func (d *Device) handleIndex(r *request) error {
	title := html.EscapeString(d.s.Instance)
	body := fmt.Sprintf("<!DOCTYPE html><html><head><title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>",
		title, title, html.EscapeString(d.s.Name))
	return r.send(200, typeHTML, body)
}

// apiStatus is the OTS web app's GET /api/status (camelCase, as the
// firmware's JSON is).
type apiStatus struct {
	FirmwareVersion string `json:"firmwareVersion"`
	Mode            string `json:"mode"`
	IP              string `json:"ip"`
	Hostname        string `json:"hostname"`
	SerialNumber    string `json:"serialNumber"`
	OwnerName       string `json:"ownerName"`
	WifiConnected   bool   `json:"wifiConnected"`
	RSSI            int    `json:"rssi"`
	Uptime          int64  `json:"uptime"`
	FreeHeap        int    `json:"freeHeap"`
}

func (d *Device) handleAPIStatus(r *request) error {
	st := d.State()
	return r.sendJSON(apiStatus{
		FirmwareVersion: st.Version,
		Mode:            "STA",
		IP:              d.s.IP.String(),
		Hostname:        d.s.Name,
		SerialNumber:    d.s.SerialNumber,
		OwnerName:       d.s.OwnerName,
		WifiConnected:   true,
		RSSI:            -52,
		Uptime:          int64(st.Uptime / time.Second),
		FreeHeap:        183_452,
	})
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
