package esphome

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

// puller makes a fakeESP poll a manifest as ESPHome's http_request update
// does (facts §1): GET source, take the build of its chip family, state
// available when the version differs; INSTALL fetches the image, checks
// its MD5, and boots the manifest's version (or publishes its state again
// when the MD5 does not match: no reboot).
type puller struct {
	*fakeESP
	source  string
	variant string
	badMD5  bool
	every   time.Duration // update_interval

	url, md5 string // the last manifest's build
}

var loopback = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}

func startPuller(t *testing.T, b *testbroker.Broker, prefix, project, source string, every time.Duration, ids ...string) *puller {
	p := &puller{fakeESP: startESP(t, b, prefix, project, ids...), source: source, variant: "ESP32", every: every}
	p.onInstall = func(*fakeESP) { p.flash() }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(p.every)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				p.poll()
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

func (p *puller) poll() {
	resp, err := loopback.Get(p.source)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	var m struct {
		Name    *string `json:"name"`
		Version *string `json:"version"`
		Builds  []struct {
			ChipFamily string `json:"chipFamily"`
			OTA        struct {
				Path, MD5 string
			} `json:"ota"`
		} `json:"builds"`
	}
	if json.NewDecoder(resp.Body).Decode(&m) != nil || m.Name == nil || m.Version == nil {
		return
	}
	for _, bd := range m.Builds {
		if bd.ChipFamily == p.variant && strings.Contains(bd.OTA.Path, "http") && bd.OTA.MD5 != "" {
			p.mu.Lock()
			p.url, p.md5 = bd.OTA.Path, bd.OTA.MD5
			p.mu.Unlock()
			p.check(*m.Version)
			return
		}
	}
}

func (p *puller) flash() {
	p.mu.Lock()
	u, want, version := p.url, p.md5, p.latest
	p.mu.Unlock()
	resp, err := loopback.Get(u)
	ok := err == nil && resp.StatusCode == http.StatusOK
	if err == nil {
		h := md5.New()
		_, cerr := io.Copy(h, resp.Body)
		resp.Body.Close()
		ok = ok && cerr == nil && hex.EncodeToString(h.Sum(nil)) == want && !p.badMD5
	}
	if !ok {
		p.publishState(p.ids[0]) // AVAILABLE again, no reboot
		return
	}
	p.reboot(version)
	p.poll() // its first check, soon after the boot
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A rollout through the engine with the built-in file server: the
// manifest is published for the wave, each device is commanded only once
// it tells the new latest_version, and the verdicts are the devices'.
func TestRolloutEndToEnd(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "node.ota.bin")
	data := []byte(strings.Repeat("esphome image ", 3000))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	source := "http://" + addr + "/manifest.json"
	cmds := startSpy(t, b, "+/update/+/command")
	var devs []rollout.Device
	var pullers []*puller
	// The canary booted since its last check, and its checks since found
	// no manifest: it tells no version when it is read before the update
	// (its check comes later), yet its update is shown.
	for i, name := range []string{"fresh", "good", "badmd5", "two"} {
		var ids []string
		if name == "two" {
			ids = []string{"firmware", "firmware_beta"}
		}
		every := 100 * time.Millisecond
		if name == "fresh" {
			every = time.Second
		}
		p := startPuller(t, b, name, "1.0.0", source, every, ids...)
		if name != "fresh" {
			p.check("1.0.0") // its check of a manifest it had before
		}
		pullers = append(pullers, p)
		devs = append(devs, rollout.Device{Name: fmt.Sprintf("dev%d", i), Topic: name})
	}
	pullers[2].badMD5 = true
	plan := rollout.Plan{Canary: 1, Waves: []rollout.Step{{Percent: 100}}, MaxFailures: upload.FailureBudget{Set: true, N: 2}}
	st, err := rollout.CreateState(filepath.Join(dir, "state"), rollout.Meta{Family: "esphome", Firmware: img, Expect: "1.1.0", Plan: plan,
		ServeAddr: addr, Broker: b.URL(), ClientID: "otsotae2e", Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: 10 * time.Second, ChipFamily: "ESP32"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := rollout.Run(ctx, rollout.Config{Family: f, Devices: devs, Plan: plan, Expect: "1.1.0", ImagePath: img,
		Serve: fileserve.Config{Addr: addr}, MaxFetches: 1, Timeout: 2 * time.Second, RebootWindow: 500 * time.Millisecond,
		Stability: 200 * time.Millisecond, ReadTimeout: 2 * time.Second, State: st})
	if err != nil {
		t.Fatal(err)
	}
	want := []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeUpdated, upload.OutcomeUnchanged, upload.OutcomeRefused}
	for i, r := range res {
		if r.Outcome != want[i] || strings.Contains(r.Message, "\n") {
			t.Errorf("%s: %s (%s), want %s", r.Device, r.Outcome, r.Message, want[i])
		}
	}
	if r := res[0]; r.Running != "1.1.0" || r.VersionSource != "state" {
		t.Errorf("canary: running %q from %q", r.Running, r.VersionSource)
	}
	if r := res[2]; !strings.Contains(r.Message, "took the command") || !strings.Contains(r.Message, "1.0.0") {
		t.Errorf("bad MD5: %s", r.Message)
	}
	if r := res[3]; !strings.Contains(r.Message, "not commanded: dev3 has 2 update entities (firmware, firmware_beta)") {
		t.Errorf("two entities: %s", r.Message)
	}
	// One INSTALL per device, each acted on (the device was ready); none
	// to the device with two entities.
	for i, p := range pullers[:3] {
		if ins := p.installsSeen(); len(ins) != 1 || !ins[0] {
			t.Errorf("device %d: INSTALLs (acted on) %v", i, ins)
		}
	}
	if ins := pullers[3].installsSeen(); len(ins) != 0 {
		t.Errorf("two entities: INSTALLs %v", ins)
	}
	if ms := cmds.atLeast(t, 3); len(ms) != 3 {
		t.Errorf("%d commands", len(ms))
	}
	noRetainedCommands(t, b)
}
