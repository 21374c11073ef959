package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/sim/tasmotamqtt"
)

// rolloutFleet is a broker, a simulated Tasmota fleet that pulls, and a
// subscriber on cmnd/#, for one test.
type rolloutFleet struct {
	url   string
	fleet *tasmotamqtt.Fleet
	watch *brokerLog
	fw    string // an ESP32 image that tells 15.5.0
	state string

	mu     sync.Mutex
	events []tasmotamqtt.Event
	seen   chan struct{}
}

func startRolloutFleet(t *testing.T, devs []tasmotamqtt.Device) *rolloutFleet {
	t.Helper()
	return startRolloutFleetAuth(t, devs, "", "")
}

// startRolloutFleetAuth: the broker wants user and password (when user
// is not ""), and the devices log in with them.
func startRolloutFleetAuth(t *testing.T, devs []tasmotamqtt.Device, user, password string) *rolloutFleet {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("OTS_OTA_STATE_DIR", "")
	t.Setenv("OTS_OTA_MQTT_PASSWORD", "")
	opts := []testbroker.Option{testbroker.KeepLogs()}
	if user != "" {
		opts = append(opts, testbroker.WithUser(user, password))
	}
	b := testbroker.Start(t, opts...)
	rf := &rolloutFleet{url: b.URL(), seen: make(chan struct{}, 1)}
	if user == "" {
		rf.watch = watchBroker(t, b.URL(), "cmnd/#")
	}
	for i := range devs {
		// Quick devices: a restart takes half a second, flash is fast.
		devs[i].RebootTime, devs[i].FlashRate = 500*time.Millisecond, 2<<20
	}
	ctx, cancel := context.WithCancel(context.Background())
	f, err := tasmotamqtt.Start(ctx, tasmotamqtt.Config{Broker: b.URL(), Devices: devs, Tick: 100 * time.Millisecond,
		Username: user, Password: auth.NewSecret(password),
		OnEvent: func(e tasmotamqtt.Event) {
			rf.mu.Lock()
			rf.events = append(rf.events, e)
			rf.mu.Unlock()
			select {
			case rf.seen <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); f.Close() })
	rf.fleet = f
	dir := t.TempDir()
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32, Project: "tasmota32", Version: "15.5.0", Size: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	rf.fw = filepath.Join(dir, "tasmota32.bin")
	if err := os.WriteFile(rf.fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rf.state = filepath.Join(dir, "state")
	return rf
}

// waitEvent waits until the fleet told an event of kind (60 s at most).
func (rf *rolloutFleet) waitEvent(t *testing.T, kind tasmotamqtt.EventKind) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		rf.mu.Lock()
		ok := slices.ContainsFunc(rf.events, func(e tasmotamqtt.Event) bool { return e.Event == kind })
		rf.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-rf.seen:
		case <-deadline:
			t.Fatalf("no %s event from the fleet in 60 s", kind)
		}
	}
}

// rollout runs ots-ota rollout --json against the fleet (the broker and
// state directory filled in; with --resume only the state directory); ctx
// may be cancelled to stand for Ctrl-C. The lines are checked against the
// schema.
func (rf *rolloutFleet) rollout(t *testing.T, ctx context.Context, args ...string) (int, []map[string]any, string) {
	t.Helper()
	full := []string{"rollout", "--json", "--state-dir", rf.state, "--stability-window", "1s", "--verify-timeout", "10s"}
	if !slices.Contains(args, "--resume") {
		full = append(full, "--broker", rf.url, "--serve-addr", "127.0.0.1", "--family", "tasmota", "--expect-version", "15.5.0", rf.fw)
	}
	return runJSON(t, ctx, append(full, args...))
}

// status runs ots-ota rollout status --json.
func (rf *rolloutFleet) status(t *testing.T) (int, []map[string]any) {
	t.Helper()
	code, lines, _ := runJSON(t, context.Background(), []string{"rollout", "status", "--json", "--state-dir", rf.state})
	return code, lines
}

func runJSON(t *testing.T, ctx context.Context, args []string) (int, []map[string]any, string) {
	t.Helper()
	streams, out, errOut := TestStreams()
	code := Execute(ctx, args, streams)
	requireJSONRun(t, out.Bytes(), code)
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		lines = append(lines, m)
	}
	return code, lines, errOut.String()
}

// outcomes is each device's outcome as the result lines tell it.
func outcomes(lines []map[string]any) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		if l["type"] == "result" {
			out[l["address"].(string)] = l["outcome"].(string)
		}
	}
	return out
}

func waveStates(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		if l["type"] == "wave" {
			out = append(out, l["state"].(string))
		}
	}
	return out
}

// checkCommands: the subscriber saw at most max Upgrade commands per
// device, none retained, and the devices took as many as they were sent.
func (rf *rolloutFleet) checkCommands(t *testing.T, max int) map[string]int {
	t.Helper()
	msgs := rf.watch.fence(t, rf.url, "cmnd/test-fence/Fence")
	got := map[string]int{}
	for _, m := range msgs {
		if m.Retained {
			t.Errorf("a retained command: %s %q", m.Topic, m.Payload)
		}
		parts := strings.Split(m.Topic, "/")
		if len(parts) == 3 && strings.EqualFold(parts[2], "Backlog") && strings.Contains(strings.ToLower(string(m.Payload)), "upgrade") {
			got[parts[1]]++
		}
	}
	for topic, n := range got {
		if n > max {
			t.Errorf("%s got %d Upgrade commands, at most %d allowed", topic, n, max)
		}
		if took := rf.fleet.Commands(topic); took != n {
			t.Errorf("%s: %d commands sent, the device took %d", topic, n, took)
		}
	}
	return got
}

// TestRolloutCanaryWaves: a canary, then two waves, every device updated
// with one command each; the wave lines tell each wave's start and pass.
func TestRolloutCanaryWaves(t *testing.T) {
	rf := startRolloutFleet(t, make([]tasmotamqtt.Device, 5))
	// A device long gone leaves its retained Offline on the broker: --all
	// leaves it out, and says so.
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(strings.Replace(rf.url, "mqtt://", "tcp://", 1)).SetClientID("ghost-publisher"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	if tok := pub.Publish("tele/ghost_1/LWT", 1, true, "Offline"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	pub.Disconnect(50)
	code, lines, errOut := rf.rollout(t, context.Background(), "--all", "--canary", "1", "--waves", "50%,100%", "--discover-wait", "1s")
	if code != ExitOK {
		t.Fatalf("exit %d, want 0\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "left out 1 device(s) whose LWT on the broker says Offline: ghost_1") {
		t.Errorf("the device left out is not named:\n%s", errOut)
	}
	got := outcomes(lines)
	if _, ok := got["ghost_1"]; ok {
		t.Errorf("ghost_1 was in the rollout: %v", got)
	}
	for _, topic := range rf.fleet.Topics() {
		if got[topic] != "updated" {
			t.Errorf("%s: %q, want updated", topic, got[topic])
		}
		if v := rf.fleet.Running(topic); !strings.HasPrefix(v, "15.5.0") {
			t.Errorf("%s runs %s", topic, v)
		}
	}
	if w := waveStates(lines); !slices.Equal(w, []string{"started", "passed", "started", "passed", "started", "passed"}) {
		t.Errorf("waves %v, want three started and passed", w)
	}
	if n := rf.checkCommands(t, 1); len(n) != 5 {
		t.Errorf("%d devices commanded, want 5", len(n))
	}
	code, lines = rf.status(t)
	if code != ExitOK || len(lines) != 2 || lines[0]["state"] != "finished" || lines[0]["waves_passed"] != float64(3) {
		t.Errorf("status: exit %d, %v", code, lines)
	}
	// Finished: the broker keeps no session for it, queuing the fleet's
	// reports for a client that never comes back.
	if sessionKept(t, rf.url, clientIDOf(t, rf.state)) {
		t.Error("the finished rollout's MQTT session is still kept on the broker")
	}
}

// TestRolloutCanaryFails: a canary that rolls back stops the rollout:
// the others are not-started and never commanded, exit 1.
func TestRolloutCanaryFails(t *testing.T) {
	devs := make([]tasmotamqtt.Device, 3)
	devs[0] = tasmotamqtt.Device{Topic: "canary_1", Faults: []tasmotamqtt.Fault{tasmotamqtt.FaultCrashOnBoot}}
	devs[1], devs[2] = tasmotamqtt.Device{Topic: "rest_1"}, tasmotamqtt.Device{Topic: "rest_2"}
	rf := startRolloutFleet(t, devs)
	code, lines, errOut := rf.rollout(t, context.Background(), "--canary", "1", "canary_1", "rest_1", "rest_2")
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	got := outcomes(lines)
	if got["canary_1"] != "rolled-back" || got["rest_1"] != "not-started" || got["rest_2"] != "not-started" {
		t.Errorf("outcomes %v", got)
	}
	if w := waveStates(lines); !slices.Equal(w, []string{"started", "stopped"}) {
		t.Errorf("waves %v, want the canary started and stopped", w)
	}
	cmds := rf.checkCommands(t, 1)
	if cmds["rest_1"]+cmds["rest_2"] != 0 || cmds["canary_1"] != 1 {
		t.Errorf("commands %v: only the canary may be commanded", cmds)
	}
	if !strings.Contains(lines[len(lines)-2]["error"].(map[string]any)["message"].(string), "not updated") {
		t.Errorf("error line %v", lines[len(lines)-2])
	}
}

// TestRolloutResume: Ctrl-C once a device was commanded (exit 130, the
// state kept), then --resume: every device updated, none commanded twice,
// and status says finished.
func TestRolloutResume(t *testing.T) {
	devs := make([]tasmotamqtt.Device, 4)
	for i := range devs {
		devs[i].FlashRate = 64 << 10 // slow enough to be caught in flight
	}
	rf := startRolloutFleet(t, devs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var code int
	var lines []map[string]any
	go func() {
		defer close(done)
		code, lines, _ = rf.rollout(t, ctx, "--all", "--waves", "100%", "--discover-wait", "1s")
	}()
	rf.waitEvent(t, tasmotamqtt.EventFetching)
	cancel()
	<-done
	if code != ExitCancelled {
		t.Fatalf("exit %d, want 130", code)
	}
	s := lines[len(lines)-1]
	if s["interrupted"] != true || s["id"] == nil {
		t.Errorf("summary %v", s)
	}
	code, lines = rf.status(t)
	if code != ExitOK || lines[0]["state"] != "interrupted" || len(lines[0]["in_flight"].([]any)) == 0 {
		t.Errorf("status after Ctrl-C: exit %d, %v", code, lines)
	}
	code, lines, errOut := rf.rollout(t, context.Background(), "--resume")
	if code != ExitOK {
		t.Fatalf("resume: exit %d, want 0\n%s", code, errOut)
	}
	got := outcomes(lines)
	for _, topic := range rf.fleet.Topics() {
		if got[topic] != "updated" {
			t.Errorf("%s: %q after --resume, want updated", topic, got[topic])
		}
	}
	rf.checkCommands(t, 1)
	code, lines = rf.status(t)
	if code != ExitOK || lines[0]["state"] != "finished" {
		t.Errorf("status after --resume: exit %d, %v", code, lines)
	}
}

// TestRolloutBrokerSecret: the broker's password works from the
// environment and never shows: not on stdout or stderr (with -vv), not in
// JSON, not in the state file; a wrong one is exit 1 before anything is
// published, naming the broker, not the password.
func TestRolloutBrokerSecret(t *testing.T) {
	const secret = "Mqtt-s3cret-Pw-4821"
	rf := startRolloutFleetAuth(t, make([]tasmotamqtt.Device, 2), "ota", secret)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("wrong-"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := rf.rollout(t, context.Background(), "--all", "--discover-wait", "1s", "--mqtt-user", "ota", "--mqtt-password-file", pwFile)
	if code != ExitFailed || !strings.Contains(errOut, "127.0.0.1") || strings.Contains(errOut, secret) {
		t.Errorf("wrong password: exit %d, want 1 naming the broker and not the password:\n%s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(rf.state, "rollouts")); err == nil {
		if l, _ := os.ReadDir(filepath.Join(rf.state, "rollouts")); len(l) > 0 {
			t.Errorf("a refused login left a state file: %v", l)
		}
	}
	t.Setenv("OTS_OTA_MQTT_PASSWORD", secret)
	streams, out, errBuf := TestStreams()
	code = Execute(context.Background(), []string{"rollout", "-vv", "--json", "--state-dir", rf.state, "--stability-window", "1s",
		"--broker", rf.url, "--mqtt-user", "ota", "--serve-addr", "127.0.0.1", "--family", "tasmota", "--expect-version", "15.5.0",
		"--all", "--discover-wait", "1s", rf.fw}, streams)
	requireJSONRun(t, out.Bytes(), code)
	if code != ExitOK {
		t.Fatalf("exit %d, want 0\n%s", code, errBuf)
	}
	if strings.Contains(out.String()+errBuf.String(), secret) {
		t.Errorf("the password printed")
	}
	files, _ := filepath.Glob(filepath.Join(rf.state, "rollouts", "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v, want one", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "ota@") {
		t.Errorf("the state file holds the credentials:\n%s", b)
	}
}

// TestRolloutInventoryPublicURL: devices named by the inventory (a group,
// mqtt_topic: and one device's own full_topic:), told --public-url rather
// than the bound address: results carry the inventory's names, every
// command's URL starts with the public base, and all are updated.
func TestRolloutInventoryPublicURL(t *testing.T) {
	devs := []tasmotamqtt.Device{{Topic: "barn_pump"}, {Topic: "shed_light", FullTopic: "farm/%prefix%/%topic%/"}, {Topic: "other"}}
	rf := startRolloutFleet(t, devs)
	dir := os.Getenv("XDG_CONFIG_HOME")
	cfg := `inventory:
  devices:
    - {name: pump, address: 10.8.0.21, mqtt_topic: barn_pump}
    - {name: light, address: 10.8.0.22, mqtt_topic: shed_light, full_topic: "farm/%prefix%/%topic%/"}
    - {name: other, address: 10.8.0.23, mqtt_topic: other}
  groups:
    farm: [pump, light]
`
	if err := os.MkdirAll(filepath.Join(dir, "ots-ota"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ots-ota", "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	public := fmt.Sprintf("http://localhost:%d", port)
	code, lines, errOut := runJSON(t, context.Background(), []string{"rollout", "--json", "--state-dir", rf.state, "--stability-window", "1s",
		"--broker", rf.url, "--serve-addr", fmt.Sprintf("127.0.0.1:%d", port), "--public-url", public + "/",
		"--family", "tasmota", "--expect-version", "15.5.0", "--group", "farm", rf.fw})
	if code != ExitOK {
		t.Fatalf("exit %d, want 0\n%s", code, errOut)
	}
	names := map[string]string{}
	for _, l := range lines {
		if l["type"] == "result" {
			names[l["device"].(string)] = l["address"].(string) + " " + l["outcome"].(string)
		}
	}
	if names["pump"] != "barn_pump updated" || names["light"] != "shed_light updated" || len(names) != 2 {
		t.Errorf("results %v, want pump and light updated", names)
	}
	n := 0
	for _, m := range rf.watch.fence(t, rf.url, "cmnd/test-fence/Fence") {
		if strings.Contains(string(m.Payload), "Upgrade") {
			n++
			if !strings.Contains(string(m.Payload), "OtaUrl "+public+"/") {
				t.Errorf("%s told %q, not the public URL", m.Topic, m.Payload)
			}
		}
	}
	// The watcher hears cmnd/#: the FullTopic device's commands go to
	// farm/cmnd/shed_light/, which it does not, so one here.
	if n != 1 || rf.fleet.Commands("shed_light") != 1 || rf.fleet.Commands("other") != 0 {
		t.Errorf("%d commands under cmnd/#, shed_light took %d, other %d", n, rf.fleet.Commands("shed_light"), rf.fleet.Commands("other"))
	}
}

// sessionKept reports whether the broker still keeps a session under
// clientID: a QoS 1 message published now under tele/ is queued for it
// only then, and handed over when the client connects again. It takes
// the session over (and ends it): only for a rollout that is over.
func sessionKept(t *testing.T, url, clientID string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := broker.Connect(ctx, broker.Config{URL: url, ClientID: fmt.Sprintf("test-pub-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, "tele/session_probe/INFO2", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c, err := broker.Connect(ctx, broker.Config{URL: url, ClientID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Close()
		_ = broker.Forget(ctx, broker.Config{URL: url, ClientID: clientID})
	}()
	got := make(chan string, 16)
	if err := c.Subscribe(ctx, "tele/#", func(m broker.Message) { got <- m.Topic }); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "tele/session_fence/INFO2", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	kept := false
	for {
		select {
		case topic := <-got:
			switch topic {
			case "tele/session_probe/INFO2":
				kept = true
			case "tele/session_fence/INFO2":
				return kept
			}
		case <-ctx.Done():
			t.Fatal("the fence never arrived")
		}
	}
}

// clientIDOf is the MQTT client id the rollout's state file records.
func clientIDOf(t *testing.T, state string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(state, "rollouts", "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v, want one", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.ClientID == "" {
		t.Fatalf("no client id in the state file: %v", err)
	}
	return rec.ClientID
}

// TestRolloutResumeKeepsSettings: a rollout started with its own bounds,
// interrupted, then resumed without them goes on with the saved ones
// (the verdicts name the 2s stability window, not the 30s default); a
// bound typed again wins, said in one line, and is kept in the file.
func TestRolloutResumeKeepsSettings(t *testing.T) {
	devs := make([]tasmotamqtt.Device, 3)
	for i := range devs {
		devs[i].FlashRate = 64 << 10 // slow enough to be caught in flight
	}
	rf := startRolloutFleet(t, devs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var code int
	go func() {
		defer close(done)
		code, _, _ = runJSON(t, ctx, []string{"rollout", "--json", "--state-dir", rf.state, "--broker", rf.url,
			"--serve-addr", "127.0.0.1", "--family", "tasmota", "--expect-version", "15.5.0", rf.fw, "--all", "--waves", "100%",
			"--discover-wait", "1s", "--stability-window", "2s", "--verify-timeout", "15s", "--max-fetches", "1", "--retries", "0"})
	}()
	rf.waitEvent(t, tasmotamqtt.EventFetching)
	cancel()
	<-done
	if code != ExitCancelled {
		t.Fatalf("exit %d, want 130", code)
	}
	code, lines, errOut := runJSON(t, context.Background(), []string{"rollout", "--json", "--state-dir", rf.state, "--resume", "--max-fetches", "2"})
	if code != ExitOK {
		t.Fatalf("resume: exit %d, want 0\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "--max-fetches 2 (was 1)") || strings.Contains(errOut, "stability-window") {
		t.Errorf("resume stderr: want one line naming --max-fetches 2 (was 1) alone:\n%s", errOut)
	}
	n := 0
	for _, l := range lines {
		if l["type"] != "result" {
			continue
		}
		n++
		if msg, _ := l["message"].(string); !strings.Contains(msg, "the 2s stability window") {
			t.Errorf("%v: %q, want the saved 2s stability window", l["address"], msg)
		}
	}
	if n != len(devs) {
		t.Errorf("%d results, want %d", n, len(devs))
	}
	files, _ := filepath.Glob(filepath.Join(rf.state, "rollouts", "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Settings map[string]any `json:"settings"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"max_fetches": 2.0, "retries": 0.0, "verify_timeout": "15s", "stability_window": "2s"}
	for k, v := range want {
		if rec.Settings[k] != v {
			t.Errorf("state settings %s = %v, want %v (all: %v)", k, rec.Settings[k], v, rec.Settings)
		}
	}
}
