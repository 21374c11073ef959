package cmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/internal/buildinfo"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// goodLines are one line of each kind, made by the code that writes them,
// with the schema file that must accept it.
func goodLines(t *testing.T) map[string]struct {
	file string
	line any
} {
	t.Helper()
	uptime := int64(42)
	res := upload.Result{Device: "kitchen", Addr: "127.0.0.1:3232", Protocol: upload.HTTP, From: "1.0.0", To: "1.0.1", Running: "1.0.1",
		Outcome: upload.OutcomeUpdated, State: "valid", VersionSource: "/ota/status", Tries: 1, Duration: 1500 * time.Millisecond,
		Bytes: ptr(int64(1000)), Rate: 49056986.42868493}
	push := &pushSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "push"}, Counts: map[string]int{"updated": 1},
		Devices: []resultLine{resultOf(res)}}
	return map[string]struct {
		file string
		line any
	}{
		"progress": {"push.json", progressOf(upload.FleetEvent{Event: upload.Event{Time: time.Now(), Target: "kitchen",
			Phase: upload.PhaseUploading, Done: 512, Total: 1000, Try: 1}, Addr: "127.0.0.1:3232", Protocol: upload.HTTP})},
		"result":       {"push.json", resultOf(res)},
		"push summary": {"push.json", push},
		"error": {"push.json", errorLine{lineHead: head("error"), Command: "push",
			Error: newErrorObject("chip_mismatch", "fw.bin: image is built for ESP32-S3, the device is ESP32", "")}},
		"info": {"info.json", infoLineOf(infoResult{Facts: devinfo.Facts{Target: "kitchen", Address: "127.0.0.1:3232", Reachable: true,
			Protocol: devinfo.Fact{Value: "http", Source: devinfo.FromProbe}, Uptime: devinfo.Fact{Value: "42", Source: devinfo.FromOTAStatus},
			OTA: &devinfo.OTAStatus{Version: "1.0.1", UptimeS: &uptime}}})},
		"device": {"discover.json", deviceLineOf(discoverRow{Name: "kitchen", Addrs: []string{"127.0.0.1"}, Port: 3232,
			Sources: []string{"inventory"}})},
		"watch": {"discover.json", watchLineOf(discover.Event{Kind: discover.Removed, Time: time.Now(), Reason: "goodbye",
			Device: discover.Device{Instance: "kitchen", Service: "_ota._tcp", Port: 3232, Seen: time.Now()}})},
		"sim event": {"sim.json", simLineOf(sim.Event{Event: sim.EventUploadFailed, Time: time.Now(), Device: "ots-sim-1",
			Protocol: "http", Status: 500, Text: "Write failed"})},
		"file": {"inspect.json", inspectLine{head("file"), inspectResult{File: "fw.bin", Kind: "unknown",
			Errors: []findingResult{{Code: "not_app_image", Message: "not an image"}}, Warnings: []findingResult{}}}},
		"summary": {"inspect.json", &countSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "inspect", ExitCode: 1},
			Count: ptr(1), Failed: ptr(1)}},
		"info summary": {"info.json", &countSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "info", ExitCode: 1},
			Count: ptr(2), Failed: ptr(1)}},
		"discover summary": {"discover.json", &discoverSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "discover"},
			Count: ptr(1)}},
		"watch summary": {"discover.json", &discoverSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "discover"},
			Events: ptr(3)}},
		"sim error": {"sim.json", simErrorLine{errorLine: errorLine{lineHead: head("error"), Command: "sim",
			Error: newErrorObject("sim_start", "127.0.0.2:3232 is taken", "")}, Event: "error", Time: time.Now(),
			Device: nullString("ots-sim-1"), Text: "127.0.0.2:3232 is taken"}},
		"sim summary":     {"sim.json", &simSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "sim"}, Count: ptr(2)}},
		"step":            {"demo.json", stepLine{lineHead: head("step"), Step: 1, Title: "Check the image", Command: nullString("ots-ota inspect fw.bin")}},
		"note":            {"demo.json", noteLine{lineHead: head("note"), Step: 2, Message: "no device answered"}},
		"demo summary":    {"demo.json", &demoSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "demo"}, Steps: ptr(5)}},
		"espota summary":  {"espota.json", &summaryHead{lineHead: head("summary"), Command: "espota", ExitCode: 1}},
		"version":         {"version.json", versionLineOf(buildinfo.Info{Version: "1.2.3", Commit: "abc123", Date: "2026-01-02T03:04:05Z", Go: "go1.26.0"})},
		"version summary": {"version.json", &summaryHead{lineHead: head("summary"), Command: "version"}},
		"image": {"sim-image.json", imageLine{lineHead: head("image"), File: "fw.bin", Size: 300000, Chip: "ESP32-S3", Project: "ots-fw-main",
			Version: "1.0.1"}},
		"image summary": {"sim-image.json", &summaryHead{lineHead: head("summary"), Command: "sim image"}},
		"rollout progress": {"rollout.json", progressOf(upload.FleetEvent{Event: upload.Event{Time: time.Now(), Target: "plug-1",
			Phase: upload.PhaseRebooting, Try: 1}, Addr: "tasmota_A1", Protocol: "tasmota-mqtt"})},
		"wave": {"rollout.json", waveOf(rollout.WaveEvent{Index: 0, Of: 3, Canary: true, Devices: []string{"plug-1"}, State: "stopped",
			Reason: "the canary plug-1 ended failed"}, time.Now())},
		"rollout result": {"rollout.json", resultOf(upload.Result{Device: "plug-1", Addr: "tasmota_A1", Protocol: "tasmota-mqtt",
			From: "15.4.0(tasmota)", To: "15.5.0", Running: "15.5.0(tasmota)", Outcome: upload.OutcomeUpdated, VersionSource: "INFO1",
			Tries: 1, Duration: time.Minute, Canary: true})},
		"rollout summary": {"rollout.json", &rolloutSummary{summaryHead: summaryHead{lineHead: head("summary"), Command: "rollout", ExitCode: 130},
			ID: ptr("20261207-235012-ab12"), Resumed: ptr(false), Interrupted: ptr(true), Firmware: ptr("tasmota.bin"), Size: ptr(int64(600_000)),
			Counts: map[string]int{"cancelled": 1}, Devices: []resultLine{resultOf(upload.Result{Device: "plug-1", Addr: "tasmota_A1",
				Protocol: "tasmota-mqtt", Outcome: upload.OutcomeCancelled, Tries: 1})}}},
		"rollout status": {"rollout-status.json", rolloutStatusLineOf(rolloutStand{sum: rollout.Summary{ID: "20261207-235012-ab12",
			Path: "/s/rollouts/20261207-235012-ab12.json", Created: time.Now(), Updated: time.Now(), Family: "tasmota", Firmware: "/fw/tasmota.bin",
			Expect: "15.5.0", Devices: 3, Phases: map[string]int{"done": 1, "commanded": 1, "pending": 1},
			Outcomes: map[upload.Outcome]int{upload.OutcomeUpdated: 1}}, state: "interrupted", waves: 3, passed: 1, inFlight: []string{"plug-2"},
			rec: rollout.Record{Firmware: rollout.FileRecord{SHA256: "ab", Size: 600_000}, Broker: "mqtt://127.0.0.1:1883"}})},
		"rollout status summary": {"rollout-status.json", &rolloutStatusSummary{summaryHead: summaryHead{lineHead: head("summary"),
			Command: "rollout status"}, Count: ptr(1)}},
	}
}

// TestJSONSchemasRejectBadLines: the schemas accept the lines the code
// writes, and refuse a line with a key too many, a value of the wrong type,
// a required key missing, or another schema version.
func TestJSONSchemasRejectBadLines(t *testing.T) {
	if err := loadSchemas(); err != nil {
		t.Fatal(err)
	}
	for file := range schemaIDs {
		if _, err := schema(file); err != nil {
			t.Errorf("%s does not compile: %v", file, err)
		}
	}
	for name, c := range goodLines(t) {
		b, err := marshalLine(c.line)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkLine(c.file, b); err != nil {
			t.Errorf("%s: the schema refuses a good line: %v\n%s", name, err, b)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		bad := map[string]func(map[string]any){
			"an extra key":           func(m map[string]any) { m["extra"] = 1 },
			"schema 1":               func(m map[string]any) { m["schema"] = 1 },
			"type as a number":       func(m map[string]any) { m["type"] = 7 },
			"a missing required key": func(m map[string]any) { delete(m, keys[len(keys)/2]) },
			// The wrong type for a field whose type is not a string: a
			// number as a string, as info's uptime_s was.
			"a number as a string": func(m map[string]any) {
				for _, k := range keys {
					if _, ok := m[k].(float64); ok && k != "schema" {
						m[k] = "1"
						return
					}
				}
				m["schema"] = "2"
			},
		}
		for what, mutate := range bad {
			mm := map[string]any{}
			for k, v := range m {
				mm[k] = v
			}
			mutate(mm)
			bb, _ := json.Marshal(mm)
			if err := checkLine(c.file, bb); err == nil {
				t.Errorf("%s with %s passes %s:\n%s", name, what, c.file, bb)
			}
		}
	}
	// Today's complaints, one each: unknown as "", a string uptime, a
	// float rate, a string byte count; sim's event without type.
	if err := checkLine("sim.json", []byte(strings.Replace(mustLine(t, goodLines(t)["sim event"].line), `"type":"upload_failed",`, ``, 1))); err == nil {
		t.Error("sim.json accepts an event without type")
	}
	for _, c := range []struct{ file, line, field string }{
		{"info.json", strings.Replace(mustLine(t, goodLines(t)["info"].line), `"board":null`, `"board":{"value":"","source":""}`, 1), "board/value"},
		{"info.json", strings.Replace(mustLine(t, goodLines(t)["info"].line), `"uptime_s":{"value":42`, `"uptime_s":{"value":"42"`, 1), "uptime_s/value"},
		{"push.json", strings.Replace(mustLine(t, goodLines(t)["result"].line), `"rate":49056986`, `"rate":49056986.42868493`, 1), "rate"},
		{"push.json", strings.Replace(mustLine(t, goodLines(t)["push summary"].line), `"bytes":1000`, `"bytes":"1000"`, 1), "devices/0/bytes"},
	} {
		err := checkLine(c.file, []byte(c.line))
		if err == nil {
			t.Errorf("%s accepts %s", c.file, c.line)
			continue
		}
		// The failure names the field, without the complaints of the
		// other kinds of line the schema lists.
		if !strings.Contains(err.Error(), "at '/"+c.field) || strings.Contains(err.Error(), "value must be '") {
			t.Errorf("%s: the failure does not name %s alone: %v", c.file, c.field, err)
		}
	}
}

func mustLine(t *testing.T, v any) string {
	t.Helper()
	b, err := marshalLine(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestJSONRunRules: the rules of a whole run, beyond each line's schema.
func TestJSONRunRules(t *testing.T) {
	file := `{"type":"file","schema":2,"file":"a","ok":true,"kind":"app","chip":null,"project":null,"version":null,"idf_ver":null,"date":null,"time":null,"secure_version":null,"elf_sha256":null,"size":null,"image_len":null,"segments":null,"entry":null,"checksum_ok":null,"sha256":null,"sha256_ok":null,"layout":null,"signature":null,"signature_blocks":null,"slot_size":null,"slot_percent":null,"app_offset":null,"errors":[],"warnings":[]}`
	sum := func(cmd string, code int) string {
		return `{"type":"summary","schema":2,"command":"` + cmd + `","exit_code":` + string(rune('0'+code)) + `,"duration_ms":1,"count":1,"failed":0}`
	}
	errLine := func(cmd string) string {
		return `{"type":"error","schema":2,"command":"` + cmd + `","error":{"code":"failed","message":"x","hint":null}}`
	}
	cases := []struct {
		name string
		out  []string
		code int
		ok   bool
	}{
		{"ok", []string{file, sum("inspect", 0)}, 0, true},
		{"failed, said", []string{file, errLine("inspect"), sum("inspect", 1)}, 1, true},
		{"no summary", []string{file}, 0, false},
		{"nothing", nil, 0, false},
		{"summary not last", []string{sum("inspect", 0), file}, 0, false},
		{"another exit code", []string{file, sum("inspect", 0)}, 1, false},
		{"failed, not said", []string{file, sum("inspect", 1)}, 1, false},
		{"an error, exit 0", []string{file, errLine("inspect"), sum("inspect", 0)}, 0, false},
		{"not JSON", []string{"hello", sum("inspect", 0)}, 0, false},
		{"a line of another command", []string{`{"type":"step","schema":2,"step":1,"title":"t","command":null}`, sum("inspect", 0)}, 0, false},
	}
	for _, c := range cases {
		out := ""
		if c.out != nil {
			out = strings.Join(c.out, "\n") + "\n"
		}
		err := checkJSONRun([]byte(out), c.code)
		if (err == nil) != c.ok {
			t.Errorf("%s: checkJSONRun = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// TestPushJSONLocalChecks: an image that fails its local checks is said on
// stdout with --json (it was said on stderr only): an error line per
// finding, with inspect's code, then the summary; exit 1, nothing sent.
func TestPushJSONLocalChecks(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	code, out, errOut := runPushCmd(t, "", "--json", "--chip", "esp32", fw, "127.0.0.1:9")
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `{"type":"error","schema":2,"command":"push","error":{"code":"chip_mismatch",`) ||
		!strings.HasPrefix(lines[1], `{"type":"summary","schema":2,"command":"push","exit_code":1,`) {
		t.Errorf("want the finding's error line and the summary, got:\n%s", out)
	}
}

// TestRedactJSON: secrets leave string values, never keys or the JSON
// itself, even a secret of one letter or one that JSON escapes.
func TestRedactJSON(t *testing.T) {
	var r auth.Redactor
	r.Add(auth.NewSecret("x"))
	r.Add(auth.NewSecret(`q"uote\s3cret`))
	in := `{"type":"summary","exit_code":0,"message":"e-x-it q\"uote\\s3cret","list":["x",1.5,null,true],"m":{"x":"x"}}`
	got, err := redactJSON([]byte(in), r.Redact)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"summary","exit_code":0,"message":"e-[redacted]-it [redacted]","list":["[redacted]",1.5,null,true],"m":{"x":"[redacted]"}}`
	if string(got) != want {
		t.Errorf("redactJSON:\n got %s\nwant %s", got, want)
	}
}

// TestJSONDocs: docs/json.md names every field of every schema, the README
// links it, and the README's outcome table lists every outcome push's
// schema allows (planned, of --dry-run, was missing).
func TestJSONDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "json.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(schemaDir(), "*.json"))
	var props func(v any)
	missing, seen := map[string]bool{}, map[string]bool{}
	props = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if p, ok := v["properties"].(map[string]any); ok {
				for k := range p {
					seen[k] = true
					if !strings.Contains(string(doc), "`"+k+"`") {
						missing[k] = true
					}
				}
			}
			for _, x := range v {
				props(x)
			}
		case []any:
			for _, x := range v {
				props(x)
			}
		}
	}
	var outcomes []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		props(v)
		if filepath.Base(f) == "push.json" {
			for _, o := range v["$defs"].(map[string]any)["outcome"].(map[string]any)["enum"].([]any) {
				outcomes = append(outcomes, o.(string))
			}
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d field names found in the schemas", len(seen))
	}
	for k := range missing {
		t.Errorf("docs/json.md does not document the field %q", k)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "(docs/json.md)") {
		t.Error("the README does not link docs/json.md")
	}
	if len(outcomes) == 0 {
		t.Fatal("no outcomes in push.json")
	}
	for _, o := range outcomes {
		if !regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(o) + "` \\|").Match(readme) {
			t.Errorf("the README's outcome table does not list %q", o)
		}
	}
}

// TestJSONOutputIsChecked: the commands that need no device, in-process:
// version, sim image, and failures before any work.
func TestJSONOutputIsChecked(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	img := filepath.Join(t.TempDir(), "fw.bin")
	for _, c := range []struct {
		args  []string
		first string // how the output starts
	}{
		{[]string{"--json", "version"}, `{"type":"version","schema":2,"version":"`},
		{[]string{"--json", "sim", "image", "-o", img}, `{"type":"image","schema":2,"file":"` + img + `",`},
		{[]string{"--json", "discover", "--inventory-only"}, `{"type":"summary","schema":2,"command":"discover","exit_code":0,`},
		{[]string{"--json", "info"}, `{"type":"error","schema":2,"command":"info","error":{"code":"usage",`},
		{[]string{"--json", "no-such-command"}, `{"type":"error","schema":2,"command":"ots-ota","error":{"code":"usage",`},
		{[]string{"--json", "espota", "-f", "fw.bin"}, `{"type":"error","schema":2,"command":"espota","error":{"code":"usage",`},
		// A flag that does not parse, before --json: still JSON (it printed
		// nothing on stdout).
		{[]string{"push", "--bogus", "--json", "fw.bin", "127.0.0.2"},
			`{"type":"error","schema":2,"command":"push","error":{"code":"usage","message":"unknown flag: --bogus",`},
		// help and completion: usage errors in JSON, as every command's.
		{[]string{"--json", "help", "nosuch"}, `{"type":"error","schema":2,"command":"help","error":{"code":"usage",`},
		{[]string{"--json", "completion"}, `{"type":"error","schema":2,"command":"completion","error":{"code":"usage",`},
		{[]string{"--json", "sim", "help", "nosuch"}, `{"type":"error","schema":2,"command":"sim","error":{"code":"usage",`},
	} {
		streams, out, _ := TestStreams()
		code := Execute(context.Background(), c.args, streams)
		if err := checkJSONRun(out.Bytes(), code); err != nil {
			t.Errorf("%v (exit %d): %v\n%s", c.args, code, err, out)
		}
		if !strings.HasPrefix(out.String(), c.first) {
			t.Errorf("%v: want output starting %s, got:\n%s", c.args, c.first, out)
		}
	}
	// espota's usage errors point to espota's help, not to the push
	// command line it built.
	{
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), []string{"--json", "espota", "-i", "bad host!", "-f", "fw.bin"}, streams)
		if err := checkJSONRun(out.Bytes(), code); err != nil || code != ExitFailed {
			t.Errorf("espota -i 'bad host!': exit %d: %v\n%s", code, err, out)
		}
		for _, o := range []string{out.String(), errOut.String()} {
			if !strings.Contains(o, "run 'ots-ota espota --help' for usage") || strings.Contains(o, "push --help") {
				t.Errorf("espota -i 'bad host!': want espota's help named:\n%s", o)
			}
		}
	}
	// OTS_OTA_JSON asks for JSON as --json does, a bad flag or not.
	t.Setenv("OTS_OTA_JSON", "1")
	streams, out, _ := TestStreams()
	code := Execute(context.Background(), []string{"push", "--bogus", "fw.bin", "127.0.0.2"}, streams)
	if err := checkJSONRun(out.Bytes(), code); err != nil || code != ExitUsage {
		t.Errorf("OTS_OTA_JSON=1 push --bogus: exit %d: %v\n%s", code, err, out)
	}
	// What help and completion print when they work is text, not JSON.
	for _, args := range [][]string{{"--json", "help", "push"}, {"--json", "completion", "bash"}, {"--json", "push", "--help"}} {
		streams, out, _ := TestStreams()
		if code := Execute(context.Background(), args, streams); code != ExitOK || strings.Contains(out.String(), `"type":`) {
			t.Errorf("%v: exit %d, output:\n%.300s", args, code, out)
		}
	}
}
