package cmd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

// brokerLog records every message a broker delivers under a filter.
type brokerLog struct {
	mu   sync.Mutex
	msgs []broker.Message
	got  chan struct{} // a message arrived
}

// watchBroker subscribes to filter on b, as a test subscriber.
func watchBroker(t *testing.T, url, filter string) *brokerLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Connect(ctx, broker.Config{URL: url, ClientID: fmt.Sprintf("test-watch-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	l := &brokerLog{got: make(chan struct{}, 1)}
	if err := c.Subscribe(ctx, filter, func(m broker.Message) {
		l.mu.Lock()
		l.msgs = append(l.msgs, m)
		l.mu.Unlock()
		select {
		case l.got <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// fence publishes a message on topic and waits until the log has it: every
// message published before it has been delivered by then (one publisher's
// QoS 1 messages arrive in order, and the broker forwards in order).
func (l *brokerLog) fence(t *testing.T, url, topic string) []broker.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Connect(ctx, broker.Config{URL: url, ClientID: fmt.Sprintf("test-fence-%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(ctx, topic, []byte("fence")); err != nil {
		t.Fatal(err)
	}
	for {
		l.mu.Lock()
		for i, m := range l.msgs {
			if m.Topic == topic {
				out := append([]broker.Message(nil), l.msgs[:i]...)
				l.mu.Unlock()
				return out
			}
		}
		l.mu.Unlock()
		select {
		case <-l.got:
		case <-ctx.Done():
			t.Fatalf("the fence message on %s never arrived", topic)
		}
	}
}

const rolloutTestConfig = `inventory:
  devices:
    - {name: plug-1, address: 10.0.0.1, mqtt_topic: tasmota_A1}
    - {name: plug-2, address: 10.0.0.2, mqtt_topic: tasmota_A2}
    - {name: lamp, address: 10.0.0.3}
    - {name: odd, address: 10.0.0.4, mqtt_topic: odd_1, full_topic: 'home/%prefix%/'}
    - {name: node-1, mqtt_topic: node1, protocol: esphome, manifest: canary.json}
  groups:
    plugs: [plug-1, plug-2]
    mixed: [plug-1, lamp]
`

// TestRolloutUsage: every usage error exits 2 before anything is done:
// nothing is published on the broker (a subscriber on # sees only the
// fence), no state file is made, and a password never shows.
func TestRolloutUsage(t *testing.T) {
	b := testbroker.Start(t)
	watch := watchBroker(t, b.URL(), "#")
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("OTS_OTA_MQTT_PASSWORD", "")
	t.Setenv("OTS_OTA_STATE_DIR", "")
	if err := os.MkdirAll(filepath.Join(home, "ots-ota"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "ots-ota", "config.yaml"), []byte(rolloutTestConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	fw := writeTestFirmware(t, "1.0.1")
	notPEM := filepath.Join(dir, "ca.txt")
	pwFile := filepath.Join(dir, "pw")
	for f, body := range map[string]string{notPEM: "not a certificate\n", pwFile: "pw-from-file-77\n"} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const secret = "Hunter2-broker-pw"
	const s3secret = "S3-secret-Zq81-never-shown"
	s3File := filepath.Join(dir, "s3secret")
	if err := os.WriteFile(s3File, []byte(s3secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTS_OTA_S3_ACCESS_KEY", "")
	t.Setenv("OTS_OTA_S3_SECRET_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	serve := freeServeAddr(t)
	esp := []string{"rollout", fw, "--family", "esphome", "--expect-version", "2025.1.0", "--broker", b.URL(), "--state-dir", state,
		"--serve-addr", serve}
	espWith := func(extra ...string) []string { return append(append([]string{}, esp...), extra...) }
	s3 := func(extra ...string) []string {
		return append([]string{"rollout", fw, "--family", "esphome", "--expect-version", "2025.1.0", "--broker", b.URL(), "--state-dir", state,
			"--store", "s3://fw-bucket/site", "--s3-endpoint", "http://127.0.0.1:9", "--public-url", "http://127.0.0.1:8/fw",
			"--s3-access-key", "AKIDTEST"}, extra...)
	}
	s3env := map[string]string{"OTS_OTA_S3_SECRET_KEY": s3secret}
	good := []string{"rollout", fw, "--family", "tasmota", "--expect-version", "15.5.0", "--broker", b.URL(), "--state-dir", state}
	with := func(extra ...string) []string { return append(append([]string{}, good...), extra...) }
	without := func(flag string, extra ...string) []string {
		var out []string
		for i := 0; i < len(good); i++ {
			if good[i] == flag {
				i++
				continue
			}
			out = append(out, good[i])
		}
		return append(out, extra...)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"nothing", []string{"rollout"}, nil, "rollout needs a FIRMWARE file"},
		{"no family", without("--family", "plug-1"), nil, "--family is required"},
		{"family case", with("--family", "Tasmota", "plug-1"), nil, "family names are lower case: --family tasmota"},
		{"family case esphome", with("--family", "ESPHome", "plug-1"), nil, "family names are lower case: --family esphome"},
		{"family unknown", with("--family", "wled", "plug-1"), nil, "--family wled: want tasmota or esphome"},
		{"esphome no expect", append(without("--expect-version", "node1"), "--family", "esphome", "--serve-addr", serve), nil, "--expect-version is required with --family esphome: it is the manifest's version, and must equal the image's esphome: project: version:"},
		{"esphome expect space", espWith("--expect-version", "1.0 beta", "node1"), nil, `--expect-version "1.0 beta": no spaces or control characters`},
		{"esphome expect blank", espWith("--expect-version", " ", "node1"), nil, `--expect-version " ": no spaces`},
		{"esphome no serve port", with("--family", "esphome", "--expect-version", "2025.1.0", "--serve-addr", "127.0.0.1", "node1"), nil, "--family esphome needs --serve-addr IP:PORT (or --store)"},
		{"esphome no serve", with("--family", "esphome", "--expect-version", "2025.1.0", "node1"), nil, "--family esphome needs --serve-addr IP:PORT (or --store)"},
		{"esphome check wait 0", espWith("--check-wait", "0", "node1"), nil, "--check-wait 0s: must be positive"},
		{"esphome manifest folder", espWith("--manifest", "a/m.json", "node1"), nil, "--manifest a/m.json: a file name of letters"},
		{"esphome manifest dot", espWith("--manifest", ".m.json", "node1"), nil, "--manifest .m.json: a name does not start with '.'"},
		{"esphome chip family case", espWith("--chip-family", "esp32s3", "node1"), nil, "--chip-family esp32s3: ESPHome spells it ESP32-S3"},
		{"esphome chip family unknown", espWith("--chip-family", "ESP99", "node1"), nil, "--chip-family ESP99: want one of ESP32,"},
		{"esphome full topic", espWith("--full-topic", "%prefix%/%topic%/", "node1"), nil, "--full-topic %prefix%/%topic%/: is Tasmota's FullTopic"},
		{"esphome retries", espWith("--retries", "2", "node1"), nil, "--retries 2: does not go with --family esphome: ESPHome tells no failed download over MQTT"},
		{"esphome retries 0", espWith("--retries", "0", "node1"), nil, "--retries 0: does not go with --family esphome"},
		{"esphome a tasmota device", espWith("odd"), nil, "device odd has a full_topic: (Tasmota's FullTopic) in the inventory"},
		{"tasmota an esphome device", with("node-1"), nil, "device node-1 is protocol: esphome in the inventory, not --family tasmota"},
		{"tasmota check wait", with("--check-wait", "1m", "plug-1"), nil, "--check-wait 1m0s: goes with --family esphome"},
		{"tasmota manifest", with("--manifest", "m.json", "plug-1"), nil, "--manifest m.json: goes with --family esphome"},
		{"tasmota chip family", with("--chip-family", "ESP32", "plug-1"), nil, "--chip-family ESP32: goes with --family esphome"},
		{"s3 endpoint without store", espWith("--s3-endpoint", "http://127.0.0.1:9", "node1"), nil, "--s3-endpoint http://127.0.0.1:9: goes with --store"},
		{"s3 secret without store", espWith("--s3-secret-key", s3secret, "node1"), nil, "--s3-secret-key ***: goes with --store"},
		{"s3 secret file without store", espWith("--s3-secret-file", s3File, "node1"), nil, "--s3-secret-file ***: goes with --store"},
		{"store not s3", s3("--store", "gs://fw-bucket", "node1"), s3env, `--store "gs://fw-bucket": expected s3://bucket or s3://bucket/prefix`},
		{"store bucket case", s3("--store", "s3://FW", "node1"), s3env, `--store "s3://FW": bucket "FW": a bucket name is 3 to 63 characters`},
		{"store bucket chars", s3("--store", "s3://Fw_Bucket", "node1"), s3env, "a bucket name is lowercase letters"},
		{"store prefix dots", s3("--store", "s3://fw-bucket/a/../b", "node1"), s3env, `--store "s3://fw-bucket/a/../b": `},
		{"store no public url", dropFlag(s3("node1"), "--public-url"), s3env, "--store needs --public-url: the base URL devices fetch the store's objects from"},
		{"store endpoint path", s3("--s3-endpoint", "http://127.0.0.1:9/bucket", "node1"), s3env, "--s3-endpoint http://127.0.0.1:9/bucket: no path or query"},
		{"store endpoint userinfo", s3("--s3-endpoint", "http://AKID:"+s3secret+"@127.0.0.1:9", "node1"), s3env, "--s3-endpoint http://127.0.0.1:9: no user:password@ here"},
		{"store endpoint scheme", s3("--s3-endpoint", "ftp://127.0.0.1:9", "node1"), s3env, `scheme "ftp"`},
		{"store region space", s3("--s3-region", "eu west", "node1"), s3env, `--s3-region "eu west": a region name has no spaces`},
		{"store no secret", s3("node1"), nil, "s3://fw-bucket/site needs its credentials: OTS_OTA_S3_ACCESS_KEY and OTS_OTA_S3_SECRET_KEY"},
		{"store no access key", dropFlag(s3("node1"), "--s3-access-key"), s3env, "s3://fw-bucket/site needs its credentials"},
		{"store aws secret, no key", dropFlag(s3("node1"), "--s3-access-key"), map[string]string{"AWS_SECRET_ACCESS_KEY": s3secret}, "s3://fw-bucket/site needs its credentials"},
		{"store secret twice", s3("--s3-secret-key", s3secret, "--s3-secret-file", s3File, "node1"), nil, "--s3-secret-key and --s3-secret-file say the same thing"},
		{"store secret file missing", s3("--s3-secret-file", filepath.Join(dir, "nope"), "node1"), nil, "--s3-secret-file: "},
		{"store and serve addr", s3("--serve-addr", serve, "node1"), s3env, "--serve-addr goes without --store"},
		{"store tasmota url too long", with("--store", "s3://fw-bucket", "--s3-endpoint", "http://127.0.0.1:9", "--s3-access-key", "AKIDTEST",
			"--public-url", "http://"+strings.Repeat("a", 60)+".example.net", "plug-1"), s3env, "--public-url: the URL devices would be told for " + filepath.Base(fw) + " is 1"},
		{"no expect", without("--expect-version", "plug-1"), nil, "--expect-version is required with --family tasmota: a .bin does not tell what Tasmota will report"},
		{"expect words", with("--expect-version", "v15.5", "plug-1"), nil, "digits and dots"},
		{"no broker", without("--broker", "plug-1"), nil, "--broker is required"},
		{"broker http", with("--broker", "http://127.0.0.1:1883", "plug-1"), nil, `scheme "http": want mqtt:// or mqtts://`},
		{"broker password", with("--broker", "mqtt://ota:"+secret+"@127.0.0.1", "plug-1"), nil, "the URL holds a password; give it with --mqtt-password-file, OTS_OTA_MQTT_PASSWORD"},
		{"broker path", with("--broker", "mqtt://127.0.0.1/x", "plug-1"), nil, "no path or query"},
		{"broker port", with("--broker", "mqtt://127.0.0.1:99999", "plug-1"), nil, "out of range"},
		{"broker not a URL", with("--broker", "127.0.0.1:1883", "plug-1"), nil, "not a broker URL"},
		{"broker user twice", with("--broker", "mqtt://alice@127.0.0.1", "--mqtt-user", "bob", "plug-1"), nil, `--broker names user "alice", --mqtt-user "bob"`},
		{"ca without tls", with("--mqtt-ca", notPEM, "plug-1"), nil, "--mqtt-ca goes with an mqtts:// broker"},
		{"ca missing", with("--broker", "mqtts://127.0.0.1", "--mqtt-ca", filepath.Join(dir, "nope.pem"), "plug-1"), nil, "--mqtt-ca"},
		{"ca not pem", with("--broker", "mqtts://127.0.0.1", "--mqtt-ca", notPEM, "plug-1"), nil, "no PEM certificate"},
		{"password twice", with("--mqtt-user", "ota", "--mqtt-password", secret, "--mqtt-password-file", pwFile, "plug-1"), nil, "say the same thing"},
		{"password file missing", with("--mqtt-user", "ota", "--mqtt-password-file", filepath.Join(dir, "nope"), "plug-1"), nil, "--mqtt-password-file"},
		{"password without user", with("plug-1"), map[string]string{"OTS_OTA_MQTT_PASSWORD": secret}, "a broker password needs --mqtt-user"},
		{"waves not 100%", with("--waves", "10%,50%", "plug-1"), nil, "--waves"},
		{"waves empty", with("--waves", "", "plug-1"), nil, "--waves is empty: give the cumulative steps"},
		{"waves words", with("--waves", "lots", "plug-1"), nil, "--waves lots"},
		{"max failures", with("--max-failures", "some", "plug-1"), nil, "--max-failures some"},
		{"canary negative", with("--canary", "-1", "plug-1"), nil, "--canary -1: must not be negative"},
		{"retries negative", with("--retries", "-1", "plug-1"), nil, "--retries -1: must not be negative"},
		{"max fetches 0", with("--max-fetches", "0", "plug-1"), nil, "--max-fetches 0: must be at least 1"},
		{"wave pause negative", with("--wave-pause", "-1s", "plug-1"), nil, "--wave-pause -1s: must not be negative"},
		{"timeout negative", with("--timeout", "-1s", "plug-1"), nil, "--timeout -1s: must not be negative"},
		{"verify timeout 0", with("--verify-timeout", "0", "plug-1"), nil, "--verify-timeout 0s: must be positive"},
		{"discover wait 0", with("--discover-wait", "0", "--all"), nil, "--discover-wait 0s: must be positive"},
		{"public url ftp", with("--public-url", "ftp://fw.example.net", "plug-1"), nil, `scheme "ftp"`},
		{"public url userinfo", with("--public-url", "http://u:"+secret+"@fw.example.net", "plug-1"), nil, "no user:password@ here"},
		{"public url too long", with("--public-url", "http://"+strings.Repeat("a", 69)+".example.net:8070", "plug-1"), nil, "--public-url: the URL devices would be told for " + filepath.Base(fw) + " is 1"},
		{"public url query", with("--public-url", "http://fw.example.net/?a=1", "plug-1"), nil, "no query or fragment"},
		{"serve wildcard", with("--serve-addr", "0.0.0.0", "plug-1"), nil, "a wildcard address would serve the image on every network"},
		{"serve name", with("--serve-addr", "fw.example.net", "plug-1"), nil, "want an IP address or IP:PORT"},
		{"full topic no device", with("--full-topic", "%prefix%/home/", "plug-1"), nil, "names no device"},
		{"full topic wildcard", with("--full-topic", "%prefix%/+/%topic%/", "plug-1"), nil, "--full-topic"},
		{"no devices", with(), nil, "no devices: give NAMEs"},
		{"all and group", with("--all", "--group", "plugs"), nil, "--all and --group do not go together"},
		{"all and names", with("--all", "plug-1"), nil, "--all and device NAMEs (plug-1) do not go together"},
		{"all and a firmware", with("--all", "extra.bin"), nil, "extra.bin looks like a firmware file: rollout takes one FIRMWARE, first"},
		{"a second firmware", with(fw), nil, fw + " is a firmware file, not a device"},
		{"unknown group", with("--group", "nope"), nil, `no group "nope" (groups: mixed, plugs)`},
		{"group without topic", with("--group", "mixed"), nil, "group mixed: device lamp has no mqtt_topic"},
		{"name without topic", with("lamp"), nil, "device lamp has no mqtt_topic"},
		{"bad topic", with("plug/+"), nil, `"plug/+" is neither an inventory name nor an MQTT topic`},
		{"inventory full topic", with("odd"), nil, `device "odd": full_topic`},
		{"resume with waves", []string{"rollout", "--resume", "--waves", "50%,100%", "--state-dir", state}, nil, "--resume goes on as the rollout was started (its state file holds it): drop --waves"},
		{"resume with store", []string{"rollout", "--resume", "--store", "s3://fw-bucket", "--state-dir", state}, nil, "drop --store"},
		{"resume with manifest", []string{"rollout", "--resume", "--manifest", "m.json", "--state-dir", state}, nil, "drop --manifest"},
		{"resume with check wait", []string{"rollout", "--resume", "--check-wait", "1m", "--state-dir", state}, nil, "drop --check-wait"},
		{"resume two ids", []string{"rollout", "--resume", "a", "b", "--state-dir", state}, nil, "one rollout ID at most"},
		{"status two ids", []string{"rollout", "status", "a", "b", "--state-dir", state}, nil, "one rollout ID at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			for _, json := range []bool{false, true} {
				args := c.args
				if json {
					args = append(append([]string{}, args...), "--json")
				}
				streams, out, errOut := TestStreams()
				code := Execute(context.Background(), args, streams)
				all := out.String() + errOut.String()
				if code != ExitUsage {
					t.Fatalf("%v: exit %d, want 2\n%s", args, code, all)
				}
				if strings.Contains(all, secret) || strings.Contains(all, s3secret) {
					t.Errorf("%v: a password printed:\n%s", args, all)
				}
				if json {
					requireJSONRun(t, out.Bytes(), code)
					if !strings.Contains(out.String(), `"code":"usage"`) {
						t.Errorf("%v: no usage error line:\n%s", args, out)
					}
					continue
				}
				if !strings.Contains(errOut.String(), c.want) || out.Len() != 0 {
					t.Errorf("%v: want %q on stderr and nothing on stdout, got:\n%s\n%s", args, c.want, errOut, out)
				}
			}
		})
	}
	if got := watch.fence(t, b.URL(), "test/fence"); len(got) != 0 {
		t.Errorf("usage errors published %d message(s), first on %s", len(got), got[0].Topic)
	}
	if _, err := os.Stat(filepath.Join(state, "rollouts")); !os.IsNotExist(err) {
		t.Errorf("a usage error made the state directory: %v", err)
	}
}

// dropFlag is args without flag and its value.
func dropFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// freeServeAddr is 127.0.0.1 and a port free now.
func freeServeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRolloutBeforeBroker: what fails before the broker is told anything
// exits 1 with nothing published and no state file: a firmware file that
// is not an image (before any connect), and a broker nobody listens on.
func TestRolloutBeforeBroker(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	bad := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(bad, []byte("not firmware at all, just words\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on: bound, then let go.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "mqtt://" + l.Addr().String()
	l.Close()
	for _, c := range []struct {
		name, fw, broker, want, code string
	}{
		{"not an image", bad, closed, "is not uploadable; nothing was sent", "not_app_image"},
		{"no broker", writeTestFirmware(t, "1.0.1"), closed, "nothing was published or sent", "broker"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, json := range []bool{false, true} {
				args := []string{"rollout", c.fw, "--family", "tasmota", "--expect-version", "15.5.0", "--broker", c.broker,
					"--state-dir", state, "tasmota_A1"}
				if json {
					args = append(args, "--json")
				}
				streams, out, errOut := TestStreams()
				code := Execute(context.Background(), args, streams)
				if code != ExitFailed {
					t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
				}
				if json {
					requireJSONRun(t, out.Bytes(), code)
					if !strings.Contains(out.String(), `"code":"`+c.code+`"`) {
						t.Errorf("no %s error line:\n%s", c.code, out)
					}
					continue
				}
				if !strings.Contains(errOut.String(), c.want) {
					t.Errorf("want %q on stderr, got:\n%s", c.want, errOut)
				}
			}
			if _, err := os.Stat(filepath.Join(state, "rollouts")); !os.IsNotExist(err) {
				t.Errorf("the state directory was made: %v", err)
			}
		})
	}
}

// TestRolloutViewKeys: the terminal view keys devices by their target's
// address, the engine its events by topic: every event lands on the
// device it names, none adds a line of its own.
func TestRolloutViewKeys(t *testing.T) {
	streams, _, _ := TestStreams()
	a := &app{io: streams, cfg: &config{origins: map[string]origin{}}}
	devs := []rollout.Device{{Name: "pump", Topic: "barn_pump"}, {Name: "shed_light", Topic: "shed_light"}}
	targets := []upload.Target{rolloutTarget(devs[0], "tasmota-mqtt"), rolloutTarget(devs[1], "tasmota-mqtt")}
	view := makeFleetView(1000, targets, 2, &a.secrets)
	r := &rolloutRenderer{&pushRenderer{a: a, view: view, last: map[string]upload.Phase{}}}
	for _, d := range devs {
		r.event(upload.FleetEvent{Event: upload.Event{Time: time.Now(), Target: d.Name, Phase: upload.PhaseConnecting, Try: 1},
			Addr: d.Topic, Key: d.Topic, Protocol: "tasmota-mqtt"})
	}
	r.event(upload.FleetEvent{Event: upload.Event{Time: time.Now(), Target: "pump", Phase: upload.PhaseDone},
		Addr: "barn_pump", Key: "barn_pump", Result: &upload.Result{Device: "pump", Addr: "barn_pump", Outcome: upload.OutcomeUpdated}})
	if len(view.devs) != 2 {
		t.Fatalf("%d lines in the view, want 2", len(view.devs))
	}
	if !view.devs[0].ended || view.devs[1].phase != upload.PhaseConnecting || view.devs[0].label != "pump" {
		t.Errorf("view %+v %+v", *view.devs[0], *view.devs[1])
	}
}

// TestRolloutFailsBeforeCommand: a rollout whose run fails before any
// device is commanded (a fw.bin.gz beside the image that is not gzip) exits 1 and leaves
// no state file: no "interrupted" rollout for a bare --resume to pick.
func TestRolloutFailsBeforeCommand(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("OTS_OTA_STATE_DIR", "")
	b := testbroker.Start(t)
	fw := writeTestFirmware(t, "1.0.1")
	if err := os.WriteFile(fw+".gz", []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), []string{"rollout", fw, "--family", "tasmota", "--expect-version", "15.5.0",
		"--broker", b.URL(), "--serve-addr", "127.0.0.1", "--state-dir", state, "tasmota_A1"}, streams)
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut.String(), "no device was commanded, and the rollout's state is dropped") {
		t.Errorf("stderr does not say the state is dropped:\n%s", errOut)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "rollouts", "*.json")); len(left) != 0 {
		t.Errorf("state files left: %v", left)
	}
	streams, out, errOut = TestStreams()
	if code := Execute(context.Background(), []string{"rollout", "--resume", "--state-dir", state}, streams); code != ExitFailed ||
		!strings.Contains(errOut.String(), "no unfinished rollout") {
		t.Errorf("--resume after it: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestRolloutNoUserHint: a broker that wants a login, given none: exit 1,
// and the hint says what to give, on stderr and in the JSON error.
func TestRolloutNoUserHint(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("OTS_OTA_STATE_DIR", "")
	t.Setenv("OTS_OTA_MQTT_PASSWORD", "")
	b := testbroker.Start(t, testbroker.WithUser("ota", "Pw-for-the-broker-77"))
	const want = "give --mqtt-user and --mqtt-password-file (or OTS_OTA_MQTT_PASSWORD)"
	args := []string{"rollout", writeTestFirmware(t, "1.0.1"), "--family", "tasmota", "--expect-version", "15.5.0",
		"--broker", b.URL(), "--state-dir", filepath.Join(t.TempDir(), "state"), "tasmota_A1"}
	streams, out, errOut := TestStreams()
	if code := Execute(context.Background(), args, streams); code != ExitFailed || !strings.Contains(errOut.String(), want) {
		t.Errorf("exit %d, want 1 and the hint %q:\n%s%s", code, want, out, errOut)
	}
	streams, out, _ = TestStreams()
	code := Execute(context.Background(), append(args, "--json"), streams)
	requireJSONRun(t, out.Bytes(), code)
	if !strings.Contains(out.String(), `"hint":"`+want+`"`) || !strings.Contains(out.String(), `"code":"broker"`) {
		t.Errorf("no broker error with the hint:\n%s", out)
	}
}

// TestRolloutNoSuchID: --resume and status name the same directory for
// a rollout that is not there.
func TestRolloutNoSuchID(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	state := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(filepath.Join(state, "rollouts"), 0o700); err != nil {
		t.Fatal(err)
	}
	want := "no rollout nosuch under " + filepath.Join(state, "rollouts")
	for _, args := range [][]string{{"rollout", "--resume", "nosuch"}, {"rollout", "status", "nosuch"}} {
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), append(args, "--state-dir", state), streams)
		if code != ExitFailed || !strings.Contains(errOut.String(), want) {
			t.Errorf("%v: exit %d, want 1 and %q:\n%s%s", args, code, want, out, errOut)
		}
	}
}
