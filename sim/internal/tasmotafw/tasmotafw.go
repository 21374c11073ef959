// Package tasmotafw is the firmware logic that both Tasmota personalities
// share: sim/tasmota (commands over HTTP, the web upload) and
// sim/tasmotamqtt (commands over MQTT). The same firmware behaves the same
// over either transport: how it derives the minimal image's URL, compares
// versions, names its hardware, tells its uptime, fetches an image by URL
// and words the fetch's errors. It is no personality of its own, and
// written from Tasmota's source, never from the client (upload/).
package tasmotafw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The HTTP updater's own words in ESPhttpUpdate.getLastErrorString() (the
// same on both cores), which UPGRADE "Failed …" and the sim's events carry.
const (
	ErrNotEnoughSpace = "Not Enough space" // HTTP_UE_TOO_LESS_SPACE
	ErrNoSize         = "Server Did Not Report Size"
	ErrNotFound       = "File Not Found (404)"
	ErrForbidden      = "Forbidden (403)"
	ErrWrongCode      = "Wrong HTTP Code"
	ErrHeader         = "Verify Bin Header Failed"
	ErrConnect        = "HTTP error: connection failed"
)

// MinimalURL is the OTA URL of the minimal image (support_tasmota.ino):
// within the file name (after the last '/'), cut at its last '-' or else
// its first '.', insert "-minimal", keep the type from the first '.':
// tasmota.bin.gz → tasmota-minimal.bin.gz, tasmota-DE.bin →
// tasmota-minimal.bin, fw-1.2.bin → fw-minimal.bin.
func MinimalURL(u string) string {
	b := strings.LastIndexByte(u, '/') + 1
	e := strings.IndexByte(u[b:], '.')
	if e < 0 {
		e = len(u)
	} else {
		e += b
	}
	typ := u[e:]
	p := strings.LastIndexByte(u[b:], '-')
	if p < 0 {
		p = e
	} else {
		p += b
	}
	return u[:p] + "-minimal" + typ
}

// NewerVersion is NewerVersion(): a above b, dotted versions compared
// numerically.
func NewerVersion(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x > y
		}
	}
	return false
}

// DefaultOtaURL is OTA_URL of the release builds.
func DefaultOtaURL(esp8266 bool) string {
	if esp8266 {
		return "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
	}
	return "http://ota.tasmota.com/tasmota32/release/tasmota32.bin"
}

// Hardware is GetDeviceHardware() on chip.
func Hardware(esp8266 bool, chip string) string {
	if esp8266 {
		return "ESP8266EX"
	}
	if chip == "esp32" {
		return "ESP32-D0WD-V3"
	}
	return strings.ToUpper(strings.Replace(chip, "esp32", "ESP32-", 1))
}

// Uptime is GetUptime(): "<days>T<hh>:<mm>:<ss>".
func Uptime(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("%dT%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}

// OnOff is how the firmware answers a switch's state.
func OnOff(b bool) string {
	if b {
		return "ON"
	}
	return "OFF"
}

// Client is the device's HTTP client for an upgrade by URL: one
// connection per fetch, no redirects followed, to loopback only unless
// allowNonLoopback.
func Client(allowNonLoopback bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: 5 * time.Second,
		Proxy:                 nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "localhost" {
				host, addr = "127.0.0.1", net.JoinHostPort("127.0.0.1", port)
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return nil, errors.New("the sim resolves no host names")
			}
			if !ip.IsLoopback() && !allowNonLoopback {
				return nil, errors.New("the sim fetches from loopback only")
			}
			c, err := dialer.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				// A device's receive window is a few KiB (lwIP's
				// TCP_WND): the server cannot run megabytes ahead of what
				// it has written to flash. 32 KiB, not lwIP's 5760 bytes:
				// loopback's delayed ACKs make so small a window far
				// slower than a device on Wi-Fi.
				_ = tc.SetReadBuffer(32 << 10)
			}
			return c, err
		},
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
