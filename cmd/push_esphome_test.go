package cmd

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// esphomeTestDevice is a minimal ESPHome device for push's tests: its
// native OTA (version 2, extended answer, SHA-256 auth when it has a
// password) on one address, and its _esphomelib._tcp record, which it
// withdraws without a goodbye while it restarts and announces again with
// the TXT of the new build. Written from docs/protocols/esphome.md.
type esphomeTestDevice struct {
	t        *testing.T
	mdns     *mdnsd.Responder
	name     string
	addr     netip.Addr
	password string
	compress bool     // offers a gzip payload (ESP8266)
	txt      []string // before the update
	next     []string // after it
	mu       sync.Mutex
	got      [][]byte // payloads received
}

func startESPHomeDevice(t *testing.T, r *mdnsd.Responder, d *esphomeTestDevice, port int) *esphomeTestDevice {
	t.Helper()
	d.t, d.mdns = t, r
	ln, err := net.Listen("tcp", net.JoinHostPort(d.addr.String(), strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d.announce(d.txt)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if d.serve(c) {
				// Restart: its record unanswered for a while, then back
				// with the new build's TXT (ESP-IDF sends no goodbye).
				r.Withdraw(d.name)
				time.Sleep(1500 * time.Millisecond)
				d.announce(d.next)
			}
		}
	}()
	return d
}

func (d *esphomeTestDevice) announce(txt []string) {
	if err := d.mdns.Add(mdnsd.Host{Name: d.name, Addrs: []netip.Addr{d.addr},
		Services: []mdnsd.Service{{Instance: d.name, Type: "_esphomelib._tcp", Port: 6053, TXT: txt}}}); err != nil {
		d.t.Error(err)
	}
}

func (d *esphomeTestDevice) payloads() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got
}

// serve runs one session; true when the update ended with 0x45.
func (d *esphomeTestDevice) serve(c net.Conn) bool {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	read := func(n int) []byte {
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			return nil
		}
		return b
	}
	if m := read(5); !bytes.Equal(m, []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}) {
		c.Write([]byte{0x80})
		return false
	}
	c.Write([]byte{0x00, 0x02})
	f := read(1)
	if f == nil {
		return false
	}
	flags := byte(0)
	if d.compress {
		flags = 0x01
	}
	c.Write([]byte{0x48, flags})
	if d.password != "" {
		nonce := strings.Repeat("5a", 32)
		c.Write(append([]byte{0x02}, nonce...))
		cn, resp := read(64), read(64)
		sum := sha256.Sum256([]byte(d.password + nonce + string(cn)))
		if string(resp) != hex.EncodeToString(sum[:]) {
			c.Write([]byte{0x82})
			return false
		}
	}
	c.Write([]byte{0x41})
	if t := read(1); t == nil || t[0] != 0 {
		c.Write([]byte{0x8E})
		return false
	}
	sz := read(4)
	if sz == nil {
		return false
	}
	n := int(sz[0])<<24 | int(sz[1])<<16 | int(sz[2])<<8 | int(sz[3])
	c.Write([]byte{0x42})
	sum := read(32)
	c.Write([]byte{0x43})
	var payload []byte
	buf := make([]byte, 1024)
	acked := 0
	for len(payload) < n {
		k, err := c.Read(buf[:min(len(buf), n-len(payload))])
		if err != nil {
			return false
		}
		payload = append(payload, buf[:k]...)
		for acked+8192 <= len(payload) || len(payload) == n && acked < n {
			c.Write([]byte{0x47})
			acked += 8192
		}
	}
	c.Write([]byte{0x44})
	if got := md5.Sum(payload); hex.EncodeToString(got[:]) != string(sum) {
		c.Write([]byte{0x8B})
		return false
	}
	d.mu.Lock()
	d.got = append(d.got, payload)
	d.mu.Unlock()
	c.Write([]byte{0x45})
	read(1)
	return true
}

// readmeSection is the README's ESPHome drop-in section.
func readmeSection(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "## ESPHome devices")
	if !ok {
		t.Fatal("README has no ESPHome devices section")
	}
	sec, _, _ := strings.Cut(after, "\n## ")
	return sec
}

// readmeCommands are the section's `ots-ota push` lines, continuation
// lines joined, as argument lists.
func readmeCommands(sec string) [][]string {
	var out [][]string
	sec = strings.ReplaceAll(sec, "\\\n", " ")
	for _, l := range strings.Split(sec, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "ots-ota push "); ok {
			out = append(out, strings.Fields(rest))
		}
	}
	return out
}

// TestESPHomeReadmeLines runs the README's ESPHome drop-in lines against
// ESPHome devices on mDNS: the image path the section names, the push by
// name with --expect-config-hash, and the inventory group with
// --expect-version. Each device must end updated: its record went away
// and came back with the expected config hash or project version. And
// discover and info show an ESPHome record's TXT, each fact from txt, the
// ESPHome release never read as the firmware's version.
func TestESPHomeReadmeLines(t *testing.T) {
	lo := multicastLo(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := mdnsd.New(mdnsd.Config{Interface: lo})
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { r.Close() })
	go r.Serve(ctx)

	sec := readmeSection(t)
	cmds := readmeCommands(sec)
	if len(cmds) != 2 {
		t.Fatalf("README's ESPHome section has %d push lines, want 2: %q", len(cmds), cmds)
	}
	path := regexp.MustCompile(`\.esphome/build/([a-z-]+)/\.pioenvs/([a-z-]+)/firmware\.bin`)
	m := path.FindStringSubmatch(strings.Join(cmds[0], " "))
	if m == nil || m[1] != m[2] || !strings.Contains(sec, "firmware.ota.bin") {
		t.Fatalf("the push line names no esphome compile output: %q", cmds[0])
	}
	fwESP32 := writeTestFirmware(t, "0.0.1")
	t.Setenv("OTA_PW", "plug-secret")

	t.Run("by name, --expect-config-hash", func(t *testing.T) {
		dev := startESPHomeDevice(t, r, &esphomeTestDevice{name: m[1], addr: netip.MustParseAddr("127.0.75.2"), password: "plug-secret",
			txt:  []string{"version=2026.7.0", "platform=ESP32", "board=esp32dev", "config_hash=0000aaaa", "mac=aabbccddee01"},
			next: []string{"version=2026.7.0", "platform=ESP32", "board=esp32dev", "config_hash=1a2b3c4d", "mac=aabbccddee01"}}, 3232)
		empty := filepath.Join(t.TempDir(), "empty.yaml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"push", "--config", empty, "--interface", lo.Name, "--stability-window", "1s", "--verify-timeout", "40s"}
		for _, a := range cmds[0] {
			switch {
			case path.MatchString(a):
				a = fwESP32
			case a == `"$OTA_PW"`:
				a = os.Getenv("OTA_PW")
			}
			args = append(args, a)
		}
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), args, streams)
		if code != ExitOK || !strings.Contains(out.String(), " updated ") || len(dev.payloads()) != 1 {
			t.Fatalf("exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
		}
		if strings.Contains(out.String()+errOut.String(), "plug-secret") {
			t.Error("the password was printed")
		}
		// Again, with the config hash it now announces: the push identifies
		// nothing new (unverified, same-identity), in --json's contract.
		streams, out, errOut = TestStreams()
		code = Execute(context.Background(), append(args, "--json"), streams)
		requireJSONRun(t, out.Bytes(), code)
		if code != ExitOK || !strings.Contains(out.String(), `"outcome":"unverified"`) || !strings.Contains(out.String(), `"reason":"same-identity"`) ||
			!strings.Contains(out.String(), `"protocol":"esphome"`) || len(dev.payloads()) != 2 {
			t.Fatalf("again: exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
		}
	})

	t.Run("discover and info", func(t *testing.T) {
		startESPHomeDevice(t, r, &esphomeTestDevice{name: "lamp", addr: netip.MustParseAddr("127.0.75.4"),
			txt: []string{"friendly_name=Lamp", "version=2026.7.0", "platform=ESP8266", "board=d1_mini", "mac=aabbccddee04",
				"config_hash=0000dddd", "project_name=acme.lamp", "project_version=3.1", "api_encryption=Noise_NNpsk0_25519_ChaChaPoly_SHA256"}}, 8266)
		empty := filepath.Join(t.TempDir(), "empty.yaml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), []string{"discover", "--config", empty, "--interface", lo.Name, "--no-probe", "--json"}, streams)
		requireJSONRun(t, out.Bytes(), code)
		var line string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `"instance":"lamp"`) {
				line = l
			}
		}
		for _, want := range []string{`"service":"_esphomelib._tcp"`, `"protocol":"esphome"`, `"port":8266`, `"version":"3.1"`, `"chip":"esp8266"`, `"config_hash":"0000dddd"`} {
			if !strings.Contains(line, want) {
				t.Errorf("discover line lacks %s: %s\n%s", want, line, errOut)
			}
		}
		streams, out, errOut = TestStreams()
		code = Execute(context.Background(), []string{"info", "--config", empty, "--interface", lo.Name, "lamp.local"}, streams)
		text := out.String()
		for _, want := range []string{"esphome  (txt)", "3.1  (txt)", "2026.7.0  (txt)", "ESP8266  (txt)", "d1_mini  (txt)", "0000dddd  (txt)", "Lamp  (txt)"} {
			if !strings.Contains(text, want) {
				t.Errorf("info lacks %q (exit %d)\n%s\n%s", want, code, text, errOut)
			}
		}
		if strings.Contains(text, "version    2026.7.0") {
			t.Errorf("info reads the ESPHome release as the version:\n%s", text)
		}
	})

	t.Run("inventory group, --expect-version", func(t *testing.T) {
		yml := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(sec)
		if yml == nil {
			t.Fatal("no inventory in the README's ESPHome section")
		}
		inv := strings.Replace(yml[1], "192.168.1.61", "127.0.75.3", 1)
		cfg := filepath.Join(t.TempDir(), "cfg.yaml")
		if err := os.WriteFile(cfg, []byte(inv), 0o600); err != nil {
			t.Fatal(err)
		}
		data, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266, Version: "2.4.1", Size: 200_000})
		if err != nil {
			t.Fatal(err)
		}
		fw := filepath.Join(t.TempDir(), "firmware.bin")
		if err := os.WriteFile(fw, data, 0o644); err != nil {
			t.Fatal(err)
		}
		dev := startESPHomeDevice(t, r, &esphomeTestDevice{name: "plug-1", addr: netip.MustParseAddr("127.0.75.3"), password: "plug-secret", compress: true,
			txt:  []string{"version=2026.7.0", "platform=ESP8266", "config_hash=0000bbbb", "project_name=acme.plug", "project_version=2.4.0"},
			next: []string{"version=2026.7.0", "platform=ESP8266", "config_hash=0000cccc", "project_name=acme.plug", "project_version=2.4.1"}}, 8266)
		args := []string{"push", "--config", cfg, "--interface", lo.Name, "--stability-window", "1s", "--verify-timeout", "40s"}
		for _, a := range cmds[1] {
			if a == "firmware.bin" {
				a = fw
			}
			args = append(args, a)
		}
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), args, streams)
		if code != ExitOK || !strings.Contains(out.String(), " updated ") || len(dev.payloads()) != 1 {
			t.Fatalf("exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
		}
		// The ESP8266 takes a gzip payload: the device got it compressed.
		if p := dev.payloads()[0]; len(p) < 2 || p[0] != 0x1f || p[1] != 0x8b {
			t.Error("the ESP8266 payload is not gzip")
		}

		// --all without ESPHome asked for leaves ESPHome devices found by
		// mDNS alone out: kitchen-plug gets nothing (plug-1, listed in the
		// inventory, is named there).
		streams, out, errOut = TestStreams()
		empty := filepath.Join(t.TempDir(), "empty.yaml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		code = Execute(context.Background(), []string{"push", "--config", empty, "--interface", lo.Name, "--all", fwESP32}, streams)
		if strings.Contains(out.String(), "kitchen-plug") || strings.Contains(out.String(), "plug-1") || len(dev.payloads()) != 1 {
			t.Errorf("--all: exit %d\n%s\n%s", code, out, errOut)
		}
	})
}

// --expect-config-hash takes 8 hex digits (as esphome config-hash prints
// them); anything else exits 2 before anything is sent.
func TestExpectConfigHashFlag(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	for _, bad := range []string{"xyz", "1a2b3c4", "1a2b3c4d5", "1a2b3c4g"} {
		code, _, errOut := runPushCmd(t, "", "--dry-run", "--expect-config-hash", bad, fw, "127.0.0.1")
		if code != ExitUsage || !strings.Contains(errOut, "--expect-config-hash") || !strings.Contains(errOut, "8 hex digits") {
			t.Errorf("--expect-config-hash %s: exit %d: %s", bad, code, errOut)
		}
	}
	for _, good := range []string{"1a2b3c4d", "0x1A2B3C4D"} {
		if h, err := parseConfigHash(good); err != nil || h != "1a2b3c4d" {
			t.Errorf("parseConfigHash(%q) = %q, %v", good, h, err)
		}
	}
}
