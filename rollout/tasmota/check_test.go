package tasmota

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://10.0.0.2:8070/Zm9vYmFy/fw.bin", true},
		{"https://ota.example/Zm9vYmFy/fw.bin", true},
		{"http://proxy/ota files/Zm9vYmFy/fw.bin", false},
		{"http://proxy/ota%20files/Zm9vYmFy/fw.bin", false},
		{"http://proxy/a;Restart 1", false},
		{"ftp://proxy/fw.bin", false},
		{"http:///fw.bin", false},
		{"http://proxy/" + strings.Repeat("a", 100) + "/fw.bin", false},
	} {
		f := New(nil, Options{})
		err := f.CheckURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q) = %v", tc.url, err)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("not one line: %q", err)
		}
	}
}

// An ESP8266 fetches over plain HTTP only: with an https URL it is refused
// before any command; an ESP32 is not.
func TestScreenHTTPS(t *testing.T) {
	img := rollout.Image{Name: "fw.bin", Size: 600 << 10}
	esp8266, esp32 := rollout.Facts{Chip: "esp8266"}, rollout.Facts{Chip: "esp32"}
	f := New(nil, Options{})
	if err := f.CheckURL("http://h/Zm9vYmFy/fw.bin"); err != nil {
		t.Fatal(err)
	}
	if r := f.Screen(esp8266, img, nil); r != "" {
		t.Errorf("http, ESP8266 refused: %s", r)
	}
	if err := f.CheckURL("https://h/Zm9vYmFy/fw.bin"); err != nil {
		t.Fatal(err)
	}
	if r := f.Screen(esp8266, img, nil); !strings.Contains(r, "plain HTTP") {
		t.Errorf("https, ESP8266: %q", r)
	}
	if r := f.Screen(esp32, rollout.Image{Name: "fw.bin", Size: 600 << 10}, nil); r != "" {
		t.Errorf("https, ESP32 refused: %s", r)
	}
}

// A command refused before it is sent says so (rollout.ErrNotSent).
func TestCommandRefusedIsNotSent(t *testing.T) {
	f := New(nil, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, tc := range []struct {
		d   rollout.Device
		url string
	}{
		{rollout.Device{Topic: "dev"}, "http://h/x;Restart 1"},
		{rollout.Device{Topic: "dev"}, "http://h/100%25/fw.bin"},
		{rollout.Device{Topic: "tasmotas/#"}, "http://h/fw.bin"},
		{rollout.Device{Topic: "dev", FullTopic: "%prefix%/nodevice/"}, "http://h/fw.bin"},
	} {
		if err := f.Command(ctx, tc.d, tc.url); !errors.Is(err, rollout.ErrNotSent) {
			t.Errorf("%+v %q: %v", tc.d, tc.url, err)
		}
	}
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func cut(b []byte) []byte { return b[:len(b)-5] }

// A .gz beside the image must unpack to the image's bytes (or to the
// -minimal image's, for its .gz): another build's leftover is refused.
func TestCheckCompanions(t *testing.T) {
	img := bytes.Repeat([]byte{0xE9, 1, 2, 3}, 4096)
	minimal := bytes.Repeat([]byte{0xE9, 9}, 1024)
	other := append(bytes.Clone(img), 7)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		bad   string // the name the error must give ("" = accepted)
	}{
		{"none", nil, ""},
		{"right gz", map[string][]byte{"fw.bin.gz": gz(t, img)}, ""},
		{"stale gz", map[string][]byte{"fw.bin.gz": gz(t, other)}, "fw.bin.gz"},
		{"short gz", map[string][]byte{"fw.bin.gz": gz(t, img[:100])}, "fw.bin.gz"},
		{"not gzip", map[string][]byte{"fw.bin.gz": img}, "fw.bin.gz"},
		{"minimal and its gz", map[string][]byte{"fw-minimal.bin": minimal, "fw-minimal.bin.gz": gz(t, minimal)}, ""},
		{"minimal gz of another", map[string][]byte{"fw-minimal.bin": minimal, "fw-minimal.bin.gz": gz(t, img)}, "fw-minimal.bin.gz"},
		{"minimal gz alone", map[string][]byte{"fw-minimal.bin.gz": gz(t, minimal)}, ""},
		{"minimal gz alone, cut", map[string][]byte{"fw-minimal.bin.gz": cut(gz(t, minimal))}, "fw-minimal.bin.gz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			imgPath := filepath.Join(dir, "fw.bin")
			if err := os.WriteFile(imgPath, img, 0o644); err != nil {
				t.Fatal(err)
			}
			comps := map[string]string{}
			for n, b := range tc.files {
				comps[n] = filepath.Join(dir, n)
				if err := os.WriteFile(comps[n], b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := New(nil, Options{}).CheckCompanions(imgPath, comps)
			switch {
			case tc.bad == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.bad != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.bad+" ") || strings.Contains(err.Error(), "\n")):
				t.Fatalf("err = %v, want one line about %s", err, tc.bad)
			}
		})
	}
}

// ESP8266 Tasmota asks for "<image>.gz" on its last tries: when that is
// not served, its final "Not Found (404)" hides the real failure, which is
// no reason to give the device up as refusing the image.
func TestGzFallbackNotDecisive(t *testing.T) {
	const u = "http://10.0.0.2:8070/Zm9vYmFy/fw.bin"
	failed := func(f *Family, dev, words string) rollout.Report {
		r := rollout.Report{Topic: dev, Kind: rollout.ReportFailed, Words: words}
		f.mu.Lock()
		f.gzFallbackLocked(dev, &r)
		f.mu.Unlock()
		return r
	}
	f := New(nil, Options{})
	f.told("plain", u)
	f.told("esp32", u)
	f.chips["esp32"] = "esp32"
	// Not told what is served: judged from the words as before.
	if r := failed(f, "plain", "Failed File Not Found (404)"); r.Class != "" {
		t.Fatalf("not told what is served: %+v", r)
	}
	if err := f.CheckCompanions(filepath.Join(t.TempDir(), "fw.bin"), map[string]string{}); err != nil {
		t.Fatal(err)
	}
	r := failed(f, "plain", "Failed File Not Found (404)")
	// The device's words stay its own: what the server saw is the engine's.
	if r.Class != upload.ClassNetwork || r.Words != "Failed File Not Found (404)" {
		t.Fatalf("no .gz served: %+v", r)
	}
	for _, tc := range []struct{ dev, words string }{
		{"esp32", "Failed File Not Found (404)"}, // an ESP32 never asks for .gz
		{"plain", "Failed Wrong MD5"},
		{"nobody", "Failed File Not Found (404)"}, // never commanded here
	} {
		if r := failed(f, tc.dev, tc.words); r.Class != "" || r.Words != tc.words {
			t.Errorf("%s %q: %+v", tc.dev, tc.words, r)
		}
	}
	// With the .gz served, a 404 is decisive again.
	dir := t.TempDir()
	img := filepath.Join(dir, "fw.bin")
	data := bytes.Repeat([]byte{0xE9}, 100)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img+".gz", gz(t, data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckCompanions(img, map[string]string{"fw.bin.gz": img + ".gz"}); err != nil {
		t.Fatal(err)
	}
	// The image's .gz alone: a device on the -minimal URL asks for
	// fw-minimal.bin.gz, still not served.
	if r := failed(f, "plain", "Failed File Not Found (404)"); r.Class != upload.ClassNetwork || r.Words != "Failed File Not Found (404)" {
		t.Fatalf("only fw.bin.gz served: %+v", r)
	}
	min := filepath.Join(dir, "fw-minimal.bin")
	if err := os.WriteFile(min, data[:50], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(min+".gz", gz(t, data[:50]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckCompanions(img, map[string]string{"fw.bin.gz": img + ".gz", "fw-minimal.bin": min, "fw-minimal.bin.gz": min + ".gz"}); err != nil {
		t.Fatal(err)
	}
	if r := failed(f, "plain", "Failed File Not Found (404)"); r.Class != "" {
		t.Fatalf("both .gz served: %+v", r)
	}
}

// The report log line holds only what the device told: no words="" or
// version="" for facts it did not tell.
func TestReportLogOnlyTold(t *testing.T) {
	var buf bytes.Buffer
	f := New(nil, Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	f.emit(rollout.Report{Topic: "sec_2059A5", Kind: rollout.ReportOnline, Source: "LWT"})
	n := int64(3)
	f.emit(rollout.Report{Topic: "sec_2059A5", Kind: rollout.ReportBooted, Source: "INFO1", Facts: rollout.Facts{Version: "15.5.0(tasmota)", BootCount: &n}})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log: %q", buf.String())
	}
	if strings.Contains(lines[0], `=""`) || strings.Contains(lines[0], "words") || strings.Contains(lines[0], "version") || !strings.Contains(lines[0], "kind=online") {
		t.Errorf("online report logged %q", lines[0])
	}
	if strings.Contains(lines[1], `=""`) || !strings.Contains(lines[1], "version=15.5.0(tasmota)") || !strings.Contains(lines[1], "boot_count=3") || strings.Contains(lines[1], "words") {
		t.Errorf("booted report logged %q", lines[1])
	}
}
