package sim

import (
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
	ext := []string{"version=" + info.Version, "project=" + info.Project, "chip=" + s.Chip, "board=" + s.Board}
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
		txt := []string{"board=" + s.Board, "tcp_check=no", "ssh_upload=no", "auth_upload=" + authUpload}
		if s.Extensions {
			txt = append(txt, "version="+info.Version, "project="+info.Project, "chip="+s.Chip, "api="+ContractAPIVersion)
		}
		out = append(out, mdnsd.Service{Instance: s.Instance, Type: "_arduino._tcp", Port: otaPort, TXT: txt})
	}
	return out
}
