package core

import (
	"net/netip"
	"strings"

	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// ContractAPIVersion is the value of the "api" TXT key of Extensions.
const ContractAPIVersion = "1"

// mdnsHost is what the device advertises: its firmware's services
// (device-contract.md §1, plus the §4 TXT keys with Extensions).
func (d *Device) mdnsHost() mdnsd.Host {
	return mdnsd.Host{Name: d.s.Name, Addrs: []netip.Addr{d.s.IP}, Services: d.s.fw.Services(d.env)}
}

// contractTXT is the §4 TXT keys of Extensions that tell the running image
// (version, project, chip) less the ones the device omits (Config.Omit
// "txt.KEY"), then more. The version is the running image's, as of the
// boot that registers it.
func (d *Device) contractTXT(more ...string) []string {
	d.mu.Lock()
	info := d.flash.runningInfo()
	d.mu.Unlock()
	items := []string{"version=" + info.Version, "project=" + info.Project, "chip=" + d.s.Chip}
	out := make([]string, 0, len(items)+len(more))
	for _, it := range items {
		k, _, _ := strings.Cut(it, "=")
		if !d.omits(omitTXT + "." + k) {
			out = append(out, it)
		}
	}
	return append(out, more...)
}
