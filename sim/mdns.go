package sim

import (
	"slices"
	"strings"

	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// ContractAPIVersion is the value of the "api" TXT key of Extensions.
const ContractAPIVersion = "1"

// services is what the firmware registers with mDNS (device-contract.md §1),
// plus the §4 TXT keys with Extensions. The TXT version is the running
// image's, as of the boot that registered it.
func (d *Device) services() []mdnsd.Service {
	d.mu.Lock()
	info := d.flash.runningInfo()
	otaPort, webPort := uint16(d.otaPort), d.webPort
	d.mu.Unlock()
	s := d.s
	ext := d.txtKeys([]string{"version=" + info.Version, "project=" + info.Project, "chip=" + s.Chip}, "board="+s.Board)
	var out []mdnsd.Service
	web := func() {
		if webPort >= 0 {
			out = append(out, mdnsd.Service{Instance: s.Instance, Type: "_http._tcp", Port: uint16(webPort)})
		}
	}
	switch s.Personality {
	case Seed:
		ota := mdnsd.Service{Instance: s.Instance, Type: "_ota._tcp", Port: otaPort}
		if s.Extensions {
			auth := "none"
			if !s.Password.IsZero() {
				auth = "bearer"
			}
			ota.TXT = append(ext, "auth="+auth, "path=/update", "api="+ContractAPIVersion)
		}
		out = append(out, ota)
		web()
	case OTS:
		out = append(out, mdnsd.Service{Instance: s.Instance, Type: "_arduino._tcp", Port: otaPort})
		web()
		if s.Extensions {
			out = append(out, mdnsd.Service{Instance: s.Instance, Type: "_ota._tcp", Port: otaPort,
				TXT: append(ext, "auth=none", "path=/update", "api="+ContractAPIVersion)})
		}
	default: // ArduinoOTA: MDNS.enableArduino(port, auth)
		authUpload := "no"
		if !s.Password.IsZero() {
			authUpload = "yes"
		}
		// The order the sketch adds the items in: ESPmDNS passes board,
		// tcp_check, ssh_upload, auth_upload to mdns_service_add (auth_upload
		// set to yes in place after); ESP8266mDNS adds tcp_check, ssh_upload,
		// board, auth_upload one by one. A sketch's own items come after.
		txt := []string{"board=" + s.Board, "tcp_check=no", "ssh_upload=no", "auth_upload=" + authUpload}
		if s.esp8266 {
			txt = []string{"tcp_check=no", "ssh_upload=no", "board=" + s.Board, "auth_upload=" + authUpload}
		}
		if s.Extensions {
			txt = append(txt, d.txtKeys([]string{"version=" + info.Version, "project=" + info.Project, "chip=" + s.Chip}, "api="+ContractAPIVersion)...)
		}
		// Both responders keep TXT items in a list they prepend to
		// (ESP-IDF mdns allocate_txt_base and mdns_service_txt_item_set,
		// LEAmDNS stcMDNSServiceTxts::add), so the wire order is reversed.
		slices.Reverse(txt)
		out = append(out, mdnsd.Service{Instance: s.Instance, Type: "_arduino._tcp", Port: otaPort, TXT: txt})
	}
	return out
}

// txtKeys is items less the TXT keys the device omits (Config.Omit "txt.KEY"),
// then more.
func (d *Device) txtKeys(items []string, more ...string) []string {
	out := make([]string, 0, len(items)+len(more))
	for _, it := range items {
		k, _, _ := strings.Cut(it, "=")
		if !d.omits(omitTXT + "." + k) {
			out = append(out, it)
		}
	}
	return append(out, more...)
}
