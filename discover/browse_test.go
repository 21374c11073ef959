package discover

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// recall browses a fleet of n devices runs times, each with a fresh
// session, and fails unless every run finds all of them. It logs the time
// until the last one was found.
func recall(t *testing.T, n, runs int, base, prefix string) {
	ifi := mdnsLoopback(t)
	startFleet(t, ifi, n, base, prefix, uniqueInstances(prefix))
	// The devices probe their names before they answer (ESP-IDF: three
	// probes 250 ms apart): measure a network whose devices are up.
	if _, err := Browse(context.Background(), loCfg(ifi, "_ota._tcp"), BrowseOptions{Timeout: 10 * time.Second,
		Until: func(ds []Device) bool { return len(ours(ds, prefix)) == n }}); err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	for run := range runs {
		start := time.Now()
		var all time.Duration
		found := map[string]bool{}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Watch(ctx, loCfg(ifi, "_ota._tcp"), func(e Event) {
			if e.Kind != Added || len(ours([]Device{e.Device}, prefix)) == 0 {
				return
			}
			found[e.Device.Instance] = true
			if len(found) == n {
				all = time.Since(start)
				cancel()
			}
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != n {
			t.Fatalf("run %d: found %d of %d devices", run+1, len(found), n)
		}
		times = append(times, all)
	}
	slices.Sort(times)
	t.Logf("%d devices: all found in each of %d runs; median %v, worst %v, best %v",
		n, runs, times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), times[0].Round(time.Millisecond))
	if os.Getenv("OTS_OTA_BENCH_OUT") != "" {
		fmt.Fprintf(os.Stderr, "DISCOVERY n=%d runs=%d median=%v worst=%v\n", n, runs, times[len(times)/2], times[len(times)-1])
	}
}

func TestRecall100(t *testing.T) {
	recall(t, 100, 20, "127.43.1.2", "rec100")
}

func TestRecall250(t *testing.T) {
	runs := 20
	if s := os.Getenv("OTS_OTA_RECALL_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	recall(t, 250, runs, "127.43.2.2", "rec250")
}

func TestBrowseFields(t *testing.T) {
	ifi := mdnsLoopback(t)
	startFleet(t, ifi, 3, "127.43.3.2", "fields", uniqueInstances("fields"))
	// Until, not Count: devices of tests in other packages share lo. Both
	// families: the IPv6 socket on lo must not get in the way.
	cfg := loCfg(ifi)
	cfg.IPv4Only = false
	ds, err := Browse(context.Background(), cfg, BrowseOptions{Timeout: 3 * time.Second,
		Until: func(ds []Device) bool { return len(ours(ds, "fields")) == 3 }})
	if err != nil {
		t.Fatal(err)
	}
	ds = ours(ds, "fields")
	if len(ds) != 3 {
		t.Fatalf("found %d: %+v", len(ds), ds)
	}
	d := ds[0]
	if d.Instance != "fields-001" || d.Service != "_ota._tcp" || d.Host != "fields-01.local" || d.Port != 3232 ||
		d.Addr().String() != "127.43.3.2" || d.TXT["version"] != "1.0.0" || d.TXT["auth"] != "none" ||
		!slices.Equal(d.Interfaces, []string{ifi.Name}) {
		t.Errorf("device %+v", d)
	}
}
