package cmd

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/ifaceguard"
	"github.com/ots-ota/ots-ota/partition"
)

func TestMain(m *testing.M) {
	// In-process tests (demo, push) and the processes they start browse
	// loopback only.
	ifaceguard.LoopbackOnly()
	testscript.Main(cleanupM{m}, map[string]func(){
		"ots-ota": func() { os.Exit(mainChecked()) },
	})
}

// sharedImages is the read-only third-party test data, when this checkout has it.
func sharedImages() string {
	p, _ := filepath.Abs(filepath.Join("..", "..", "shared", "testdata", "esp-images"))
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// mdnsScripts advertise or browse by mDNS on loopback: run side by side,
// one's devices answer another's browse (a discover --count 3 satisfied by
// the demo's devices). They run one after another, after the rest.
var mdnsScripts = []string{"demo", "guard", "mdns", "sim_names"}

func TestScripts(t *testing.T) {
	all, err := filepath.Glob(filepath.Join("testdata", "script", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, f := range all {
		if !slices.Contains(mdnsScripts, strings.TrimSuffix(filepath.Base(f), ".txtar")) {
			rest = append(rest, f)
		}
	}
	t.Run("parallel", func(t *testing.T) { testscript.Run(t, scriptParams(rest)) })
	for _, name := range mdnsScripts {
		t.Run(name, func(t *testing.T) {
			testscript.Run(t, scriptParams([]string{filepath.Join("testdata", "script", name+".txtar")}))
		})
	}
}

func scriptParams(files []string) testscript.Params {
	return testscript.Params{
		Files:               files,
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			// The ots-ota processes a script starts open mDNS sockets on
			// loopback only (push group:lab, discover, info --all …).
			e.Setenv(ifaceguard.Env, ifaceguard.LoopbackNames())
			e.Setenv("SHARED", sharedImages())
			e.Setenv("NO_COLOR", "")
			// A race-enabled test binary sleeps 1 s in every process that
			// exits, to let late race reports out; the scripts start
			// hundreds. A race still fails the run (exit 66).
			e.Setenv("GORACE", "atexit_sleep_ms=0")
			e.Setenv("XDG_CONFIG_HOME", filepath.Join(e.WorkDir, ".config"))
			e.Setenv("XDG_CACHE_HOME", filepath.Join(e.WorkDir, ".cache"))
			// Every --json run is checked against docs/schema (mainChecked);
			// a broken contract fails the script, whatever it expected.
			e.Setenv(envSchemaDir, schemaDir())
			violations := filepath.Join(e.WorkDir, ".json-violations")
			e.Setenv(envViolations, violations)
			e.Defer(func() {
				if b, err := os.ReadFile(violations); err == nil && len(b) > 0 {
					e.T().Fatal(string(b))
				}
			})
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "shared":
				return sharedImages() != "", nil
			case "loopback127":
				return loopback127(), nil
			case "mosquitto":
				return condMosquitto()
			case "mdns":
				// Multicast on lo, inside a private network namespace (.ci/run).
				return runtime.GOOS == "linux" && os.Getenv("OTS_OTA_MDNS_TESTS") == "1", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkfile":   cmdMkfile,
			"exitcode": cmdExitcode,
			"waitport": cmdWaitport,
			"mksparse": cmdMksparse,
			"mkflash":  cmdMkflash,
			"httpget":  cmdHTTPGet,
			// rollout's: a mosquitto of the script's own, and a
			// subscriber on # (rollout_script_test.go).
			"mqttbroker": cmdMQTTBroker,
			"waitmqtt":   cmdWaitMQTT,
			"mqttcmds":   cmdMQTTCmds,
			// rollout --family esphome's.
			"freeport":     cmdFreePort,
			"mqttinstalls": cmdMQTTInstalls,
		},
	}
}

// loopback127: 127.0.0.2 and up answer without set-up on Linux only.
func loopback127() bool { return runtime.GOOS == "linux" }

// cmdMkfile writes test inputs: `mkfile KIND OUT [chip project version size]`.
// KIND is app, nodigest, truncated, corrupt-digest, elf, elf-x86-64,
// elf-riscv64, gzip, esp8266 (an esp8266/Arduino sketch), esp8266-gzip or
// partition-table.
func cmdMkfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: mkfile KIND OUT [chip project version size]")
	}
	kind, out := args[0], ts.MkAbs(args[1])
	o := image.BuildOptions{Chip: image.ChipESP32S3, Project: "ots-fw-main", Version: "1.0.1",
		Built: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC), Size: 300_000}
	if len(args) >= 6 {
		c, ok := image.ChipByName(args[2])
		if !ok {
			ts.Fatalf("unknown chip %s", args[2])
		}
		n, err := strconv.Atoi(args[5])
		ts.Check(err)
		o.Chip, o.Project, o.Version, o.Size = c, args[3], args[4], n
	}
	if kind == "esp8266" || kind == "esp8266-gzip" {
		// An esp8266/Arduino sketch image (elf2bin's layout), or gzipped
		// as the core's build can make it.
		data, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266, Project: o.Project, Version: o.Version, Size: 64 << 10})
		ts.Check(err)
		if kind == "esp8266-gzip" {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(data)
			ts.Check(zw.Close())
			data = b.Bytes()
		}
		ts.Check(os.WriteFile(out, data, 0o644))
		return
	}
	if kind == "partition-table" {
		t, err := partition.ParseCSV(strings.NewReader("nvs,data,nvs,0x9000,0x6000\nfactory,app,factory,0x10000,1M\n"))
		ts.Check(err)
		data, err := t.MarshalBinary()
		ts.Check(err)
		ts.Check(os.WriteFile(out, data, 0o644))
		return
	}
	o.NoDigest = kind == "nodigest"
	data, err := image.Build(o)
	ts.Check(err)
	switch kind {
	case "app", "nodigest":
	case "truncated":
		data = data[:1000]
	case "corrupt-digest":
		data[len(data)-1] ^= 0xFF
	case "elf":
		data = append([]byte{0x7F, 'E', 'L', 'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x5E, 0}, make([]byte, 200)...)
	case "elf-riscv64":
		data = append([]byte{0x7F, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xF3, 0}, make([]byte, 200)...)
	case "elf-x86-64":
		data = append([]byte{0x7F, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3E, 0}, make([]byte, 200)...)
	case "gzip":
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(data)
		ts.Check(zw.Close())
		data = b.Bytes()
	default:
		ts.Fatalf("unknown kind %s", kind)
	}
	ts.Check(os.WriteFile(out, data, 0o644))
}

// cmdMksparse makes a sparse file of a given size: `mksparse FILE SIZE`.
func cmdMksparse(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mksparse FILE SIZE")
	}
	n, err := strconv.ParseInt(args[1], 0, 64)
	ts.Check(err)
	f, err := os.Create(ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Check(f.Truncate(n))
	ts.Check(f.Close())
}

// cmdExitcode runs ots-ota and checks its exit status: `exitcode N args...`.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: exitcode N [args...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec("ots-ota", args[1:]...)
	got := 0
	if err != nil {
		if _, scanErr := fmt.Sscanf(err.Error(), "exit status %d", &got); scanErr != nil {
			ts.Fatalf("running ots-ota: %v", err)
		}
	}
	if got != want {
		ts.Fatalf("ots-ota %v: exit code %d, want %d", args[1:], got, want)
	}
}

// cmdWaitport waits until every HOST:PORT accepts TCP connections: `waitport ADDR...`.
func cmdWaitport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: waitport HOST:PORT...")
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range args {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				ts.Fatalf("%s never accepted a connection: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// cmdMkflash lays files out as a merged flash image does, 0xFF between them:
// `mkflash OUT FILE@OFFSET...` (mkflash m.bin boot.bin@0 table.bin@0x8000).
func cmdMkflash(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: mkflash OUT FILE@OFFSET...")
	}
	var out []byte
	for _, arg := range args[1:] {
		name, offText, ok := strings.Cut(arg, "@")
		if !ok {
			ts.Fatalf("mkflash: %s: want FILE@OFFSET", arg)
		}
		off, err := strconv.ParseInt(offText, 0, 64)
		ts.Check(err)
		data, err := os.ReadFile(ts.MkAbs(name))
		ts.Check(err)
		for int64(len(out)) < off {
			out = append(out, 0xFF)
		}
		out = append(out[:off], data...)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), out, 0o644))
}

// cmdHTTPGet asks a device as a browser would and prints the body:
// `httpget URL [Name:Value...]` (credentials as user:password@ in URL, sent
// in a Basic header). The status must be 200; with !, the request must
// fail to connect (nothing listens there any more).
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: httpget URL [Name:Value...]")
	}
	req, err := http.NewRequest("GET", args[0], nil)
	ts.Check(err)
	for _, h := range args[1:] {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			ts.Fatalf("httpget: header %q: want Name:Value", h)
		}
		req.Header.Set(k, strings.TrimSpace(v))
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if neg {
		if err == nil {
			resp.Body.Close()
			ts.Fatalf("httpget %s: answered %s, want no connection", args[0], resp.Status)
		}
		return
	}
	ts.Check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	ts.Check(err)
	_, _ = ts.Stdout().Write(b)
	if resp.StatusCode != http.StatusOK {
		ts.Fatalf("httpget %s: %s", args[0], resp.Status)
	}
}
