package upload_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
)

// The protocols of the Arduino web uploaders (detect's reserved values).
const (
	protoForm       upload.Protocol = "form"
	protoElegantOTA upload.Protocol = "elegantota"
)

// webStub is a test transport for the web uploaders: the smallest client
// their wire takes (a multipart POST /update; ElegantOTA's /ota/start,
// then /ota/upload). It stands in for the real transports, which this
// test does not exercise: it is here to bring a device to the point
// where verification begins.
type webStub struct{ p upload.Protocol }

func (s webStub) Protocol() upload.Protocol { return s.p }

func (s webStub) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, _ upload.Credentials, _ upload.Emit) error {
	base := fmt.Sprintf("http://%s:%d", t.Host, t.Port)
	do := func(req *http.Request) (int, string, error) {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	fail := func(status int, words string) error {
		return &upload.DeviceError{Class: upload.ClassRejected, Status: status, Words: words, Reason: "refused"}
	}
	path := "/update"
	if s.p == protoElegantOTA {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ota/start?mode=fr&hash="+fw.MD5, nil)
		if st, words, err := do(req); err != nil || st != 200 {
			return fail(st, words)
		}
		path = "/ota/upload"
	}
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	pw, _ := mw.CreateFormFile("firmware", "firmware.bin")
	pw.Write(fw.Data)
	mw.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", base)
	st, words, err := do(req)
	switch {
	case err != nil:
		return &upload.DeviceError{Class: upload.ClassNetwork, Reason: err.Error(), Err: err}
	case s.p == protoForm && st == 200 && strings.Contains(words, "Update Success!"),
		s.p == protoElegantOTA && st == 200 && words == "OK":
		return nil
	}
	return fail(st, words)
}

// webFirmware is an app image of project proj, version 1.0.1.
func webFirmware(chip image.Chip) (*upload.Firmware, error) {
	data, err := image.Build(image.BuildOptions{Chip: chip, Project: "proj", Version: "1.0.1", Size: 100 << 10})
	if err != nil {
		return nil, err
	}
	return upload.NewFirmware("fw.bin", data, false), nil
}

// TestVerifyWebUploaders: devices of the web uploader families, written
// independently (package fakedev), through verification. A family that
// tells nothing ends unverified (tells-nothing) although its answer said
// success; a sketch's /ota/status or /api/status, or ESPEasy's /json with
// --expect-version, give the verdict something to compare.
func TestVerifyWebUploaders(t *testing.T) {
	const (
		git    = "mega-20241019"
		built  = "Oct 19 2024 22:36:19"
		other  = "mega-20241101"
		oldGit = "mega-20240822"
	)
	next := &fakedev.EasyBuild{Build: "20241019", GitBuild: git, BuildTime: built, BinaryFilename: "ESP_Easy_mega_20241019_normal_ESP32_4M316k"}
	foreign := &fakedev.EasyBuild{Build: "20241101", GitBuild: other, BuildTime: "Nov  1 2024 08:00:00", BinaryFilename: "x"}
	running := fakedev.Build{Project: "proj", Version: "1.0.0", ELF: fakedev.ELFOf("old")}
	cases := []struct {
		name    string
		cfg     fakedev.WebConfig
		proto   upload.Protocol
		chip    image.Chip
		expect  string
		want    upload.Outcome
		reason  upload.Reason
		source  string
		running string
	}{
		{name: "HTTPUpdateServer tells nothing", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true},
			want: upload.OutcomeUnverified, reason: upload.ReasonTellsNothing},
		{name: "ESP8266HTTPUpdateServer tells nothing, with --expect-version", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, ESP8266: true},
			chip: image.ChipESP8266, expect: "1.0.1", want: upload.OutcomeUnverified, reason: upload.ReasonTellsNothing},
		{name: "ElegantOTA tells nothing", cfg: fakedev.WebConfig{Family: fakedev.ElegantOTA}, proto: protoElegantOTA,
			want: upload.OutcomeUnverified, reason: upload.ReasonTellsNothing},
		{name: "ElegantOTA async with a sketch's /ota/status", cfg: fakedev.WebConfig{Family: fakedev.ElegantOTA, Async: true, OTAStatus: true},
			proto: protoElegantOTA, want: upload.OutcomeUpdated, source: "/ota/status", running: "1.0.1"},
		{name: "HTTPUpdateServer with a sketch's /api/status", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, APIStatus: true},
			want: upload.OutcomeUpdated, source: "/api/status", running: "1.0.1"},
		{name: "HTTPUpdateServer with /ota/status, rolls back", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OTAStatus: true, After: fakedev.RollsBack},
			want: upload.OutcomeRolledBack, source: "/ota/status", running: "1.0.0"},
		// ESPEasy's /json names no version the image carries: without
		// --expect-version it tells nothing to compare.
		{name: "ESPEasy without --expect-version", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: next},
			want: upload.OutcomeUnverified, reason: upload.ReasonTellsNothing},
		{name: "ESPEasy, --expect-version is the Git Build", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: next},
			expect: git, want: upload.OutcomeUpdated, source: "/json", running: git},
		{name: "ESPEasy 8266, --expect-version is the Build Time", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, ESP8266: true, EasyNext: next},
			chip: image.ChipESP8266, expect: built, want: upload.OutcomeUpdated, source: "/json", running: built},
		{name: "ESPEasy before 2021 (no Uptime (ms)): the silence shows the restart", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyOld: true, EasyNext: next},
			expect: git, want: upload.OutcomeUpdated, source: "/json", running: git},
		{name: "ESPEasy comes back on another build", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: foreign},
			expect: git, want: upload.OutcomeRolledBack, source: "/json", running: other},
		{name: "ESPEasy rolls back", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: next, After: fakedev.RollsBack},
			expect: git, want: upload.OutcomeRolledBack, source: "/json", running: oldGit},
		{name: "ESPEasy never restarts", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: next, After: fakedev.NeverRestarts},
			expect: git, want: upload.OutcomeUnchanged, source: "/json", running: oldGit},
	}
	// The devices spend their time restarting: all run at once (t.Parallel
	// runs two at a time on a two-core machine).
	type outcome struct {
		r       upload.Result
		uploads int
		err     error
	}
	done := make([]chan outcome, len(cases))
	for i, c := range cases {
		done[i] = make(chan outcome, 1)
		go func() {
			cfg := c.cfg
			cfg.Running = running
			// Silent long enough for two reads over a second (a restart).
			cfg.BootTime, cfg.RestartDelay = 1300*time.Millisecond, 300*time.Millisecond
			d, err := fakedev.StartWeb(cfg)
			if err != nil {
				done[i] <- outcome{err: err}
				return
			}
			defer d.Close()
			proto := c.proto
			if proto == "" {
				proto = protoForm
			}
			chip := c.chip
			if chip == 0 {
				chip = image.ChipESP32
			}
			fw, err := webFirmware(chip)
			if err != nil {
				done[i] <- outcome{err: err}
				return
			}
			o := upload.SimOptions()
			o.Transports[proto] = webStub{proto}
			o.ExpectVersion = c.expect
			o.Observer = &upload.DeviceObserver{Timeout: 200 * time.Millisecond, ExpectVersion: c.expect}
			o.Retries = 0
			tg := upload.Target{Name: "dev", Host: d.Host(), Port: d.Port(), Protocol: proto}
			r := upload.Run(context.Background(), fw, []upload.Target{tg}, o)[0]
			done[i] <- outcome{r: r, uploads: d.Uploads()}
		}()
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := <-done[i]
			if got.err != nil {
				t.Fatal(got.err)
			}
			r := got.r
			if r.Outcome != c.want || r.Reason != c.reason || r.VersionSource != c.source || r.Running != c.running {
				t.Fatalf("%s %s source %q running %q (%s); want %s %s source %q running %q",
					r.Outcome, r.Reason, r.VersionSource, r.Running, r.Message, c.want, c.reason, c.source, c.running)
			}
			if got.uploads != 1 {
				t.Errorf("%d uploads, want 1", got.uploads)
			}
		})
	}
}
