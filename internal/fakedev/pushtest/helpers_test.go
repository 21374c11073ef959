package pushtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/espota"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
)

// Short timings in place of push's defaults. The shapes keep their order:
// a device's restart (fakedev's BootTime, 1.2–2.5 s) outlasts the probe
// timeout, and the verify timeout outlasts every restart.
const (
	connectTimeout = 2 * time.Second
	idleTimeout    = 3 * time.Second
	espotaIdle     = 2 * time.Second
	stability      = 1500 * time.Millisecond
	verifyTimeout  = 12 * time.Second
	// Room for a loaded machine: a fake that restarts late must not read
	// as unchanged (real devices restart 0.5-1 s after answering).
	rebootGrace  = 4 * time.Second
	pollInterval = 100 * time.Millisecond
	// runBound is how long any run may take here: a run still going then
	// hangs.
	runBound = 30 * time.Second
)

// options are upload.Options as cmd/push.go builds them (transports on one
// espota connect-back listener, the protocol probe, the device observer,
// ProbeTimeout = min(connect timeout, 1 s)), with push's flag defaults for
// everything the tests do not shorten.
func options(t *testing.T) upload.Options {
	t.Helper()
	ln, err := espota.NewListener("", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	probeTimeout := min(connectTimeout, time.Second)
	return upload.Options{
		Parallel: 8, Retries: 3,
		StabilityWindow: stability, VerifyTimeout: verifyTimeout,
		RebootGrace: rebootGrace, PollInterval: pollInterval,
		ProbeTimeout: probeTimeout,
		Observer:     &upload.DeviceObserver{Timeout: probeTimeout},
		Transports: map[upload.Protocol]upload.Transport{
			upload.HTTP:   &rawhttp.Transport{ConnectTimeout: connectTimeout, IdleTimeout: idleTimeout},
			upload.Espota: &espota.Transport{Listener: ln, ConnectTimeout: connectTimeout, IdleTimeout: espotaIdle},
		},
		Probe: func(ctx context.Context, t upload.Target) (upload.Protocol, error) {
			d, err := upload.ChooseProtocol(ctx, t, upload.Hint{Protocol: upload.Auto}, connectTimeout)
			return d.Protocol, err
		},
	}
}

var images sync.Map

// firmware is an esp32s3 app image of project ots-fw-main; a different
// seed gives another ELF SHA-256 for the same version (a rebuild).
func firmware(t *testing.T, version string, seed int64, size int) *upload.Firmware {
	t.Helper()
	type key struct {
		v    string
		s    int64
		size int
	}
	k := key{version, seed, size}
	if fw, ok := images.Load(k); ok {
		return fw.(*upload.Firmware)
	}
	chip, ok := image.ChipByName("esp32s3")
	if !ok {
		t.Fatal("no esp32s3")
	}
	b, err := image.Build(image.BuildOptions{Chip: chip, Project: "ots-fw-main", Version: version, Seed: seed, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	fw := upload.NewFirmware("firmware.bin", b, false)
	images.Store(k, fw)
	return fw
}

// identity is what a device running fw tells, read by fakedev itself.
func identity(t *testing.T, fw *upload.Firmware) fakedev.Build {
	t.Helper()
	b, err := fakedev.IdentityOf(fw.Data)
	if err != nil || b.ELF == "" {
		t.Fatalf("image identity: %+v, %v", b, err)
	}
	return b
}

func old(version, name string) fakedev.Build {
	return fakedev.Build{Project: "ots-fw-main", Version: version, ELF: fakedev.ELFOf(name)}
}

func startHTTP(t *testing.T, cfg fakedev.HTTPConfig) *fakedev.HTTPDevice {
	t.Helper()
	d, err := fakedev.StartHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func startEspota(t *testing.T, cfg fakedev.EspotaConfig) *fakedev.EspotaDevice {
	t.Helper()
	d, err := fakedev.StartEspota(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// httpTarget is the device as push's TARGET parsing gives it: protocol
// auto (the probe decides), its web port for /api/status.
func httpTarget(name string, d *fakedev.HTTPDevice) upload.Target {
	return upload.Target{Name: name, Host: d.Host(), Port: d.Port(), WebPort: d.WebPort(), Protocol: upload.Auto}
}

func espotaTarget(name string, d *fakedev.EspotaDevice) upload.Target {
	return upload.Target{Name: name, Host: d.Host(), Port: d.Port(), Protocol: upload.Auto}
}

// run is one push. It fails the test when the run outlasts runBound (then
// it interrupts it, as Ctrl-C would, and still returns the results).
type runResult struct {
	results []upload.Result
	events  []upload.FleetEvent
	done    map[string]time.Time // when each device's result came
	took    time.Duration
}

func run(t *testing.T, fw *upload.Firmware, targets []upload.Target, o upload.Options) runResult {
	t.Helper()
	var mu sync.Mutex
	rr := runResult{done: map[string]time.Time{}}
	o.OnEvent = func(e upload.FleetEvent) {
		mu.Lock()
		defer mu.Unlock()
		rr.events = append(rr.events, e)
		if e.Phase == upload.PhaseDone {
			rr.done[e.Target] = e.Time
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	ch := make(chan []upload.Result, 1)
	go func() { ch <- upload.Run(ctx, fw, targets, o) }()
	select {
	case rr.results = <-ch:
	case <-time.After(runBound):
		t.Errorf("push still running after %s: it hangs", runBound)
		cancel()
		select {
		case rr.results = <-ch:
		case <-time.After(runBound):
			t.Fatalf("push still running %s after it was interrupted", runBound)
		}
	}
	rr.took = time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	for _, r := range rr.results {
		t.Logf("%s: %s (tries %d) %s", r.Device, r.OutcomeText(), r.Tries, r.Message)
	}
	return rr
}

func (rr runResult) result(t *testing.T, device string) upload.Result {
	t.Helper()
	for _, r := range rr.results {
		if r.Device == device {
			return r
		}
	}
	t.Fatalf("no result for %s", device)
	return upload.Result{}
}

func wantOutcome(t *testing.T, r upload.Result, want upload.Outcome) {
	t.Helper()
	if r.Outcome != want {
		t.Errorf("%s: outcome %s (%s), want %s", r.Device, r.OutcomeText(), r.Message, want)
	}
}

// wantReason checks the unverified reason code in the JSON result
// ("reason", issue 13 §4).
func wantReason(t *testing.T, r upload.Result, code string) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"reason":"`+code+`"`) {
		t.Errorf("%s: JSON result %s has no \"reason\":%q", r.Device, b, code)
	}
}

// wantUploads checks how many uploads reached the device.
func wantUploads(t *testing.T, name string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("%s received %d uploads, want %d", name, got, want)
	}
}

// lastUp is when the device last came up running version ("" any), zero
// when it never did.
func lastUp(events []fakedev.Event, version string) time.Time {
	var at time.Time
	for _, e := range events {
		if e.What == "up" && (version == "" || e.Build.Version == version) {
			at = e.At
		}
	}
	return at
}

// life is the fake's events, one line, times relative to the first.
func life(events []fakedev.Event) string {
	var b strings.Builder
	for i, e := range events {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s@%s", e.What, e.Build.Version, e.At.Sub(events[0].At).Round(10*time.Millisecond))
	}
	return b.String()
}
