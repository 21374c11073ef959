package cmd

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/discover"
)

type dialTimeout struct{}

func (dialTimeout) Error() string   { return "i/o timeout" }
func (dialTimeout) Timeout() bool   { return true }
func (dialTimeout) Temporary() bool { return true }

// TestInfoFailureWords: info --json's error object of a device that did
// not answer is one plain line, a failed connect in push's words (it was
// "not reachable at …: " and every note, Go's wrap text included); a name
// that did not resolve carries what to try in hint, not in message.
func TestInfoFailureWords(t *testing.T) {
	const addr = "10.1.2.3:3232"
	notes := []string{"TCP connect to " + addr + ": no route to the device", "GET /api/status: not tried, the OTA port did not answer"}
	noRoute := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}
	cases := []struct {
		name       string
		r          infoResult
		code, msg  string
		hint       string
		wantNoLine bool
	}{
		{"no route", infoResult{Facts: devinfo.Facts{Address: addr, ConnectErr: noRoute, Notes: notes}, timeout: 3 * time.Second},
			"unreachable", "no route to " + addr + ": the device is not on a network this host reaches", "", false},
		{"silent", infoResult{Facts: devinfo.Facts{Address: addr, ConnectErr: &net.OpError{Op: "dial", Net: "tcp", Err: dialTimeout{}},
			Notes: []string{"TCP connect to " + addr + ": timed out"}}, timeout: 3 * time.Second},
			"unreachable", "no answer from " + addr + " within 3s: the device is off, rebooting or out of reach", "", false},
		{"connected, no answer", infoResult{Facts: devinfo.Facts{Address: addr, Notes: []string{"GET /ota/status: timed out", "GET /api/status: timed out"}}},
			"unreachable", "not reachable at " + addr + ": GET /ota/status: timed out", "", false},
		{"nothing listens", infoResult{Facts: devinfo.Facts{Address: addr, NothingListens: true, Notes: notes}},
			"nothing_listens", "nothing listens at " + addr + " (TCP refused, UDP port unreachable)", "", false},
		{"unconfirmed", infoResult{Facts: devinfo.Facts{Address: addr, Unconfirmed: true}},
			"unconfirmed", "espota assumed at " + addr + " (TCP refused), not confirmed", "an ArduinoOTA device shows itself by mDNS: try ots-ota discover", false},
		{"unresolved", infoResult{Error: "x", errJSON: unresolved(&discover.ResolveError{Host: "kitchen.local", Reason: "no mDNS answer"})},
			"unresolved", "cannot resolve kitchen.local: no mDNS answer", "try --interface, the device's IP address, or an inventory entry", false},
		{"answered", infoResult{Facts: devinfo.Facts{Address: addr, Reachable: true}}, "", "", "", true},
	}
	for _, c := range cases {
		e := c.r.failure()
		switch {
		case c.wantNoLine && e != nil:
			t.Errorf("%s: error %+v, want none", c.name, *e)
		case c.wantNoLine:
		case e == nil:
			t.Errorf("%s: no error object", c.name)
		case e.Code != c.code || e.Message != c.msg || (e.Hint == nil) != (c.hint == "") || e.Hint != nil && *e.Hint != c.hint:
			t.Errorf("%s: %s %q hint %v\nwant %s %q hint %q", c.name, e.Code, e.Message, nullOr(e.Hint), c.code, c.msg, c.hint)
		}
	}
}

func nullOr(p *string) string {
	if p == nil {
		return "null"
	}
	return *p
}

// TestDiscoverLineNoProbe: with --no-probe nothing was tried: unconfirmed
// is null, as reachable is (it said false).
func TestDiscoverLineNoProbe(t *testing.T) {
	for _, c := range []struct {
		reachable *bool
		want      string
	}{{nil, `"reachable":null,"unconfirmed":null,`}, {ptr(true), `"reachable":true,"unconfirmed":false,`}} {
		if l := mustLine(t, deviceLineOf(discoverRow{Name: "lab", Reachable: c.reachable})); !strings.Contains(l, c.want) {
			t.Errorf("want %s in %s", c.want, l)
		}
	}
}
