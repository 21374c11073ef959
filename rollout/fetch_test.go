package rollout

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
)

// What the file server saw is told from its record, the name a device
// really asked for included (its .gz fallback on the -minimal URL).
func TestFetchReading(t *testing.T) {
	whole := func(n string) fileserve.Fetch {
		return fileserve.Fetch{Name: n, Method: "GET", Status: 200, Bytes: 300, Length: 300, Duration: time.Millisecond}
	}
	miss := func(n string) fileserve.Fetch { return fileserve.Fetch{Asked: n, Method: "GET", Status: 404} }
	for _, tc := range []struct {
		name string
		fs   []fileserve.Fetch
		want string
	}{
		{"none", nil, ""},
		{"two-step refused, then the minimal's .gz",
			[]fileserve.Fetch{whole("tasmota.bin"), whole("tasmota-minimal.bin"), whole("tasmota-minimal.bin"), miss("tasmota-minimal.bin.gz"), miss("tasmota-minimal.bin.gz")},
			"the file server saw it fetch tasmota.bin (sent whole), then fetch tasmota-minimal.bin 2 times (each sent whole), then ask 2 times for tasmota-minimal.bin.gz, which is not served"},
		{"cut", []fileserve.Fetch{{Name: "fw.bin", Method: "GET", Status: 200, Bytes: 100, Length: 300}},
			"the file server saw it fetch fw.bin (cut after 100 of 300 bytes)"},
		{"wrong path", []fileserve.Fetch{{Status: 404}}, "the file server saw it ask for a name, which is not served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fetchReading(tc.fs); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// A rate comes only from a fetch that delivered the image and lasted
// long enough to measure.
func TestFetchRate(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    fileserve.Fetch
		want float64
	}{
		{"whole, measurable", fileserve.Fetch{Status: 200, Bytes: 100000, Length: 100000, Duration: time.Second}, 100000},
		{"ended at once (buffers)", fileserve.Fetch{Status: 200, Bytes: 300000, Length: 300000, Duration: 2 * time.Millisecond}, 0},
		{"cut", fileserve.Fetch{Status: 200, Bytes: 1000, Length: 300000, Duration: time.Second}, 0},
		{"not found", fileserve.Fetch{Status: 404, Duration: time.Second}, 0},
		{"range part whole", fileserve.Fetch{Status: 206, Bytes: 5000, Length: 5000, Duration: 100 * time.Millisecond}, 50000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fetchRate(tc.f); got != tc.want {
				t.Fatalf("rate = %v, want %v", got, tc.want)
			}
		})
	}
}
