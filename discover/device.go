package discover

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
)

// Default services browsed: the contract's two (device-contract.md §1),
// WLED's own, which names its family by itself (docs/protocols/README.md),
// and ESPHome's native API record (docs/protocols/esphome.md).
var DefaultServices = []string{"_ota._tcp", "_arduino._tcp", "_wled._tcp", devinfo.ESPHomeService}

// webService is resolved alongside, only to learn each host's web port.
const webService = "_http._tcp"

// Device is one service instance found by mDNS.
type Device struct {
	// Instance is the instance name as advertised ("OTS Firmware Main").
	Instance string `json:"instance"`
	// Service is the service type without domain ("_ota._tcp").
	Service string `json:"service"`
	// Host is the target host name from SRV, with ".local" and no final dot.
	Host string `json:"host"`
	Port int    `json:"port"`
	// Addrs are the host's addresses (IPv6 link-local ones with a zone), sorted.
	Addrs []netip.Addr `json:"addrs"`
	// TXT is the parsed TXT record (devinfo.ParseTXT); nil when the
	// device advertises none.
	TXT map[string]string `json:"txt,omitempty"`
	// WebPort is the port of the host's _http._tcp service, 0 when none.
	WebPort int `json:"web_port,omitempty"`
	// Interfaces the device was heard on.
	Interfaces []string `json:"interfaces"`
	// Seen is when its records were last heard.
	Seen time.Time `json:"seen"`

	fqdn, hostFQDN string // lower-case wire names, for the cache
}

// Key identifies the instance: its service instance name, lower-case.
func (d Device) Key() string { return strings.ToLower(d.Instance + "." + d.Service) }

// Addr is the first address, preferring IPv4.
func (d Device) Addr() netip.Addr {
	for _, a := range d.Addrs {
		if a.Is4() {
			return a
		}
	}
	if len(d.Addrs) > 0 {
		return d.Addrs[0]
	}
	return netip.Addr{}
}

// OTAPort is the port d's device takes updates on: the record's own port,
// except for ESPHome's _esphomelib._tcp, whose record names the native API
// port (6053): its OTA port is not advertised, so it is the default of the
// platform TXT names (ESP32 3232, ESP8266 8266), 0 when TXT names none.
func (d Device) OTAPort() int {
	if d.Service == devinfo.ESPHomeService {
		return devinfo.ESPHomeOTAPort(d.TXT["platform"])
	}
	return d.Port
}

// Target describes d for devinfo.Query.
func (d Device) Target() devinfo.Target {
	t := devinfo.Target{Name: d.Instance, Host: d.Host, Port: d.OTAPort(), TXT: d.TXT, WebPort: d.WebPort, Service: d.Service}
	if a := d.Addr(); a.IsValid() {
		t.Host = a.String()
	}
	if d.WebPort == 0 {
		t.WebPort = -1 // no _http._tcp advertised: do not guess port 80
	}
	return t
}

// same reports whether two snapshots of a device differ in what a user
// sees (not in Seen).
func same(a, b Device) bool {
	return a.Instance == b.Instance && a.Service == b.Service && a.Host == b.Host && a.Port == b.Port &&
		a.WebPort == b.WebPort && slices.Equal(a.Addrs, b.Addrs) && maps.Equal(a.TXT, b.TXT) &&
		slices.Equal(a.Interfaces, b.Interfaces)
}

// EventKind is what happened to a device.
type EventKind string

// Event kinds.
const (
	Added   EventKind = "added"
	Changed EventKind = "changed"
	Removed EventKind = "removed"
)

// Event is one change seen while watching.
type Event struct {
	Kind   EventKind `json:"event"`
	Device Device    `json:"device"`
	// Reason of a removal: "goodbye" (the device withdrew its records) or
	// "expired" (its SRV or address records lived out their TTL).
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// unescapeLabel turns a presentation-format label ("OTS\ Firmware\ Main",
// "caf\195\169") back into its text.
func unescapeLabel(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			if n < 256 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// splitInstance splits "Name._svc._tcp.local." into the instance label
// (unescaped) and the service type ("_svc._tcp").
func splitInstance(fqdn string) (instance, service string, ok bool) {
	// Find the first unescaped dot.
	for i := 0; i < len(fqdn); i++ {
		switch fqdn[i] {
		case '\\':
			i++
		case '.':
			rest := strings.TrimSuffix(strings.TrimSuffix(fqdn[i+1:], "."), ".local")
			return unescapeLabel(fqdn[:i]), rest, true
		}
	}
	return "", "", false
}

// hostName renders an SRV target without the final dot.
func hostName(fqdn string) string { return strings.TrimSuffix(unescapeLabel(fqdn), ".") }
