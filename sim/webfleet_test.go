package sim

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestWebUploaderFleet: a fleet of each web-uploader personality, on both
// chips, listens where the real sketches do (80, or 8080 where this process
// may not bind 80) and answers GET /update there.
func TestWebUploaderFleet(t *testing.T) {
	skipWithoutLoopbackRange(t)
	cases := []struct {
		p    Personality
		chip string
		page string
	}{
		{HTTPUpdateServer, "", "name='firmware'"},
		{HTTPUpdateServer, "esp8266", "name='firmware'"},
		{ESPEasy, "esp8266", "name='firmware'"},
		{ElegantOTA, "", ""}, // gzip
	}
	for i, c := range cases {
		t.Run(string(c.p)+"/"+c.chip, func(t *testing.T) {
			tmpl := simtest.Config(c.p)
			tmpl.Chip = c.chip
			f, err := StartFleet(context.Background(), FleetConfig{
				N: 2, BaseIP: simtest.MustAddr(t, "127.42.9."+strconv.Itoa(10+4*i)), Template: tmpl,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, d := range f.Devices() {
				_, port, _ := net.SplitHostPort(d.OTAAddr())
				if port != "80" && port != "8080" {
					t.Errorf("%s listens on %s", d.Name(), d.OTAAddr())
				}
				code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/update")
				if err != nil || code != 200 || !strings.Contains(body, c.page) {
					t.Errorf("%s: GET /update: %d %v", d.Name(), code, err)
				}
			}
		})
	}
}
