package espota_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/espota"
)

// TestGenuineEspota runs the real espota.py (arduino-esp32, 2025-10 or
// later) against the simulated ESP32 on loopback. It is opt-in because the
// script is not part of this repository: set OTS_OTA_ESPOTA_PY to its path
// (and have python3 on PATH).
func TestGenuineEspota(t *testing.T) {
	python, script := espotaScript(t, "OTS_OTA_ESPOTA_PY")
	tests := []interopCase{
		{"no auth", espota.Config{}, nil, 0, true},
		{"pbkdf2", espota.Config{Password: auth.NewSecret("admin")}, []string{"-a", "admin"}, 0, true},
		{"pbkdf2 stored md5 hash: sha256 try fails, re-invitation, md5 retry", espota.Config{PasswordHash: auth.NewSecret(md5OfAdmin)}, []string{"-a", "admin"}, 0, true},
		{"pbkdf2 -m", espota.Config{PasswordHash: auth.NewSecret(md5OfAdmin)}, []string{"-a", "admin", "-m"}, 0, true},
		{"legacy md5", espota.Config{Legacy: true, Password: auth.NewSecret("admin")}, []string{"-a", "admin"}, 0, true},
		{"wrong password", espota.Config{Password: auth.NewSecret("admin")}, []string{"-a", "nope"}, 1, false},
		{"spiffs", espota.Config{}, []string{"-s"}, 0, true},
	}
	runInterop(t, python, script, espota.ESP32, []string{"-t", "2"}, tests)
}

// TestGenuineEspota8266 does the same with the esp8266/Arduino espota.py
// (or arduino-pico's copy of it): set OTS_OTA_ESPOTA8266_PY.
func TestGenuineEspota8266(t *testing.T) {
	python, script := espotaScript(t, "OTS_OTA_ESPOTA8266_PY")
	tests := []interopCase{
		{"no auth", espota.Config{}, nil, 0, true},
		{"md5 auth", espota.Config{Password: auth.NewSecret("admin")}, []string{"-a", "admin"}, 0, true},
		{"wrong password", espota.Config{Password: auth.NewSecret("admin")}, []string{"-a", "nope"}, 1, false},
		{"spiffs", espota.Config{}, []string{"-s"}, 0, true},
	}
	runInterop(t, python, script, espota.ESP8266, nil, tests)
}

type interopCase struct {
	name    string
	cfg     espota.Config
	args    []string
	wantRC  int
	applied bool
}

func espotaScript(t *testing.T, env string) (python, script string) {
	t.Helper()
	script = os.Getenv(env)
	if script == "" {
		t.Skipf("set %s=/path/to/espota.py to run a genuine espota.py against the simulator", env)
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	return python, script
}

func runInterop(t *testing.T, python, script string, f espota.Flavor, extra []string, tests []interopCase) {
	dir := t.TempDir()
	img := image(50*1024 + 123)
	file := filepath.Join(dir, "firmware.bin")
	if err := os.WriteFile(file, img, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Flavor = f
			cfg.DelayScale = 0.05
			d := startDevice(t, cfg, nil)
			args := []string{script, "-i", "127.0.0.1", "-I", "127.0.0.1", "-p", strconv.Itoa(d.addr.Port),
				"-P", strconv.Itoa(freeTCPPort(t)), "-f", file, "-d"}
			args = append(append(args, extra...), tt.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, python, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			rc := 0
			if ee, ok := err.(*exec.ExitError); ok {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("run espota.py: %v", err)
			}
			if rc != tt.wantRC {
				t.Fatalf("espota.py rc %d, want %d; output:\n%s\nevents: %v", rc, tt.wantRC, out.String(), d.kinds())
			}
			if tt.applied {
				d.waitEvent(t, espota.EventUploadFinished, 5*time.Second)
				if !bytes.Equal(d.u.bytes(), img) {
					t.Errorf("device holds %d bytes, not the image", len(d.u.bytes()))
				}
			} else if c := d.u.counts(); c.began != 0 {
				t.Errorf("Begin ran: %+v", c)
			}
			t.Logf("espota.py output:\n%s", out.String())
		})
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
