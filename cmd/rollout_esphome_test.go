package cmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/internal/tests3"
	"github.com/ots-ota/ots-ota/rollout"
)

// getObject reads an object of the bucket ("" and false when absent).
func getObject(t *testing.T, srv *tests3.Server, key string) (string, bool) {
	t.Helper()
	o, err := srv.Client(t).GetObject(t.Context(), srv.Bucket(), key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return "", false
		}
		t.Fatalf("get %s: %v", key, err)
	}
	return string(b), true
}

// TestRolloutESPHomeStore: rollout --family esphome with --store, end to
// end: independent fake ESPHome nodes (internal/fakedev) behind a broker
// that wants a password poll their manifests through a CDN that signs its
// requests to a private bucket of versitygw. The canary polls its own
// manifest (the inventory's manifest:). Every node ends updated with one
// INSTALL; the manifests stay; neither the S3 secret nor the broker's
// password shows in output, the JSON or the state file. Then a rollout
// whose canary rolls back: the gate stops it, the canary's manifest is
// put back as it was before, the rest's never written. Last, Ctrl-C while
// nodes download, and --resume: the store and the family's settings come
// from the state, each node gets one INSTALL in all.
func TestRolloutESPHomeStore(t *testing.T) {
	const (
		mqttPW   = "Broker-pw-Kx71-never-shown"
		prefix   = "fleet"
		chip     = "ESP32-S3" // writeTestFirmware's image
		accessID = "ots-test-access"
	)
	srv := tests3.Start(t)
	secret := srv.SecretKey().Reveal()
	b := testbroker.Start(t, testbroker.WithUser("ota", mqttPW))
	cdn := srv.Front(t, prefix) // the user's CDN in front of the private bucket

	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("OTS_OTA_STATE_DIR", "")
	t.Setenv("OTS_OTA_MQTT_PASSWORD", mqttPW)
	t.Setenv("OTS_OTA_S3_ACCESS_KEY", "")
	t.Setenv("OTS_OTA_S3_SECRET_KEY", secret)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey())
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if err := os.MkdirAll(filepath.Join(home, "ots-ota"), 0o755); err != nil {
		t.Fatal(err)
	}
	inv := "inventory:\n  devices:\n    - {name: canary-node, mqtt_topic: es-canary, manifest: canary.json}\n" +
		"    - {name: bad-canary, mqtt_topic: es-bad, manifest: bad.json}\n"
	if err := os.WriteFile(filepath.Join(home, "ots-ota", "config.yaml"), []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	// The manifests the devices polled before this rollout: the version
	// they run, so their state tells it (a device that never had a good
	// check tells installed_version "").
	put := func(t *testing.T, key, body string) {
		t.Helper()
		if _, err := srv.Client(t).PutObject(t.Context(), srv.Bucket(), key, strings.NewReader(body),
			int64(len(body)), minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	const before = `{"name":"pump","version":"1.0.0","builds":[{"chipFamily":"` + chip +
		`","ota":{"path":"http://127.0.0.1:9/old.bin","md5":"00000000000000000000000000000000","summary":"before"}}]}`
	for _, m := range []string{"canary.json", "manifest.json", "bad.json", "rest.json", "resume.json"} {
		put(t, prefix+"/"+m, before)
	}
	node := func(name, manifest string) fakedev.ESPHomePull {
		return fakedev.ESPHomePull{Name: name, Source: cdn + "/" + manifest, Version: "1.0.0", ChipFamily: chip,
			Username: "ota", Password: mqttPW}
	}
	nodes := fakedev.StartESPHomePull(t, b.URL(), node("es-canary", "canary.json"), node("es-a", "manifest.json"),
		node("es-b", "manifest.json"))
	fw := writeTestFirmware(t, "2.0.0")
	state := filepath.Join(t.TempDir(), "state")
	base := []string{"rollout", "--json", "-vv", "--family", "esphome", "--broker", b.URL(), "--mqtt-user", "ota",
		"--store", "s3://" + srv.Bucket() + "/" + prefix, "--s3-endpoint", srv.Endpoint(), "--public-url", cdn,
		"--state-dir", state, "--stability-window", "500ms", "--verify-timeout", "10s", "--check-wait", "20s", fw}
	secrets := func(t *testing.T, what, s string) {
		t.Helper()
		for _, x := range []string{secret, mqttPW} {
			if strings.Contains(s, x) {
				t.Errorf("%s holds a secret:\n%s", what, s)
			}
		}
	}
	stateFiles := func(t *testing.T) string {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(state, "rollouts", "*.json"))
		var all strings.Builder
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			all.Write(b)
		}
		return all.String()
	}

	t.Run("updated", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		code, lines, stderr := runJSON(t, ctx, append(slices.Clone(base), "--expect-version", "2.0.0",
			"canary-node", "es-a", "es-b", "--canary", "1", "--waves", "100%"))
		raw, _ := json.Marshal(lines)
		secrets(t, "the output", string(raw)+stderr)
		secrets(t, "the state file", stateFiles(t))
		if code != ExitOK {
			t.Fatalf("exit %d, want 0\n%s\n%s", code, raw, stderr)
		}
		want := map[string]string{"es-canary": "updated", "es-a": "updated", "es-b": "updated"}
		if got := outcomes(lines); !maps.Equal(got, want) {
			t.Errorf("outcomes %v, want %v", got, want)
		}
		sum := lines[len(lines)-1]
		if sum["store"] != "s3://"+srv.Bucket()+"/"+prefix {
			t.Errorf("summary store %v", sum["store"])
		}
		var names []string
		for _, m := range sum["manifests"].([]any) {
			m := m.(map[string]any)
			names = append(names, m["name"].(string))
			if m["url"] != cdn+"/"+m["name"].(string) || m["state"] != rollout.AnnouncementWritten {
				t.Errorf("manifest %v: want its URL under %s, written", m, cdn)
			}
		}
		if !slices.Equal(names, []string{"canary.json", "manifest.json"}) {
			t.Errorf("manifests %v", names)
		}
		for _, n := range nodes {
			if n.Running() != "2.0.0" || n.InstallCommands() != 1 || len(n.Tripwires()) > 0 {
				t.Errorf("%s runs %q after %d INSTALL, tripwires %v", n.Name(), n.Running(), n.InstallCommands(), n.Tripwires())
			}
		}
		// The manifests stay, announcing the new version, below the prefix.
		for _, m := range []string{"canary.json", "manifest.json"} {
			body, ok := getObject(t, srv, prefix+"/"+m)
			if !ok || !strings.Contains(body, `"version":"2.0.0"`) || !strings.Contains(body, `"chipFamily":"`+chip+`"`) {
				t.Errorf("%s after the rollout: %q", m, body)
			}
		}
		if !strings.Contains(stderr, "ots-ota: 1 device(s) poll "+cdn+"/canary.json (their update: source:)") {
			t.Errorf("stderr does not say where the canary polls:\n%s", stderr)
		}
	})

	t.Run("gate puts back", func(t *testing.T) {
		// The bad canary's manifest held something before: it comes back.
		// rest.json held nothing: the wave that would write it never starts.
		if err := srv.Client(t).RemoveObject(t.Context(), srv.Bucket(), prefix+"/rest.json", minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		bad := node("es-bad", "bad.json")
		bad.RollsBack = true
		bad.CrashAfter = 200 * time.Millisecond
		rest := node("es-rest", "rest.json")
		badNodes := fakedev.StartESPHomePull(t, b.URL(), bad, rest)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// A window that surely outlasts the bad canary's CrashAfter, on a
		// loaded machine too (the flag given last wins).
		code, lines, stderr := runJSON(t, ctx, append(slices.Clone(base), "--expect-version", "2.0.0", "--stability-window", "1s",
			"bad-canary", "es-rest", "--manifest", "rest.json", "--canary", "1", "--waves", "100%"))
		raw, _ := json.Marshal(lines)
		secrets(t, "the output", string(raw)+stderr)
		secrets(t, "the state file", stateFiles(t))
		if code != ExitFailed {
			t.Fatalf("exit %d, want 1\n%s\n%s", code, raw, stderr)
		}
		got := outcomes(lines)
		if got["es-bad"] != "rolled-back" || got["es-rest"] != "not-started" {
			t.Errorf("outcomes %v, want es-bad rolled-back, es-rest not-started", got)
		}
		var reason string
		for _, l := range lines {
			if l["type"] == "wave" && l["state"] == "stopped" {
				reason, _ = l["reason"].(string)
			}
		}
		if !strings.Contains(reason, "manifest bad.json put back") {
			t.Errorf("the stopped wave's reason %q does not say the manifest was put back", reason)
		}
		if body, ok := getObject(t, srv, prefix+"/bad.json"); !ok || body != before {
			t.Errorf("bad.json after the gate: %q (present %v), want what it held before", body, ok)
		}
		if body, ok := getObject(t, srv, prefix+"/rest.json"); ok {
			t.Errorf("rest.json was written for a wave that never started: %q", body)
		}
		if n := badNodes[1]; n.InstallCommands() != 0 || n.Running() != "1.0.0" {
			t.Errorf("%s got %d INSTALL, runs %q", n.Name(), n.InstallCommands(), n.Running())
		}
		sum := lines[len(lines)-1]
		for _, m := range sum["manifests"].([]any) {
			if m := m.(map[string]any); m["name"] == "bad.json" && m["state"] != rollout.AnnouncementPutBack {
				t.Errorf("bad.json's state in the summary: %v", m["state"])
			}
		}
		// status tells the same, in words.
		streams, out, _ := TestStreams()
		Execute(context.Background(), []string{"rollout", "status", "--state-dir", state}, streams)
		if !strings.Contains(out.String(), "store      s3://"+srv.Bucket()+"/"+prefix) ||
			!strings.Contains(out.String(), "manifest   "+cdn+"/bad.json (put back)") {
			t.Errorf("status:\n%s", out)
		}
		secrets(t, "status", out.String())
		_, st, _ := runJSON(t, context.Background(), []string{"rollout", "status", "--json", "--state-dir", state})
		var put []any
		for _, l := range st {
			if l["type"] == "rollout" && l["state"] == "stopped" {
				put = l["manifests"].([]any)
			}
		}
		if len(put) != 1 || put[0].(map[string]any)["state"] != rollout.AnnouncementPutBack {
			t.Errorf("status --json of the stopped rollout: manifests %v", put)
		}
	})

	t.Run("resume", func(t *testing.T) {
		// Slow downloads, so that Ctrl-C finds the nodes commanded and
		// in flight; --resume finds the store and the family's settings
		// in the state (the credentials from the environment again).
		slow := func(name string) fakedev.ESPHomePull {
			n := node(name, "resume.json")
			n.FetchRate = 256 << 10
			return n
		}
		rnodes := fakedev.StartESPHomePull(t, b.URL(), slow("es-r1"), slow("es-r2"))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var code int
		var stderr string
		go func() {
			defer close(done)
			code, _, stderr = runJSON(t, ctx, append(slices.Clone(base), "--expect-version", "2.0.0", "es-r1", "es-r2",
				"--manifest", "resume.json", "--waves", "100%"))
		}()
		deadline := time.Now().Add(60 * time.Second)
		for rnodes[0].InstallCommands()+rnodes[1].InstallCommands() == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
		if code != ExitCancelled {
			t.Fatalf("exit %d, want 130\n%s", code, stderr)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer rcancel()
		code, lines, stderr := runJSON(t, rctx, []string{"rollout", "--json", "-vv", "--resume", "--state-dir", state, "--mqtt-user", "ota"})
		raw, _ := json.Marshal(lines)
		secrets(t, "the output", string(raw)+stderr)
		secrets(t, "the state file", stateFiles(t))
		if code != ExitOK {
			t.Fatalf("--resume: exit %d, want 0\n%s\n%s", code, raw, stderr)
		}
		if got := outcomes(lines); got["es-r1"] != "updated" || got["es-r2"] != "updated" {
			t.Errorf("outcomes after --resume %v", got)
		}
		if sum := lines[len(lines)-1]; sum["store"] != "s3://"+srv.Bucket()+"/"+prefix || sum["resumed"] != true {
			t.Errorf("summary after --resume: store %v, resumed %v", sum["store"], sum["resumed"])
		}
		for _, n := range rnodes {
			if n.Running() != "2.0.0" || n.InstallCommands() != 1 || len(n.Tripwires()) > 0 {
				t.Errorf("%s runs %q after %d INSTALL, tripwires %v", n.Name(), n.Running(), n.InstallCommands(), n.Tripwires())
			}
		}
	})
}

// TestRolloutStoreUnreachable: a store that does not answer, or refuses
// the credentials, ends the run with exit 1 before anything is published
// or sent (no state file), and says so without the secret.
func TestRolloutStoreUnreachable(t *testing.T) {
	srv := tests3.Start(t)
	b := testbroker.Start(t)
	watch := watchBroker(t, b.URL(), "#")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("OTS_OTA_STATE_DIR", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	const wrong = "Wrong-secret-Hq3-never-shown"
	state := filepath.Join(t.TempDir(), "state")
	fw := writeTestFirmware(t, "2.0.0")
	for _, c := range []struct{ name, bucket, secret string }{
		{"wrong secret", srv.Bucket(), wrong},
		{"no such bucket", "no-such-bucket", srv.SecretKey().Reveal()},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("OTS_OTA_S3_ACCESS_KEY", srv.AccessKey())
			t.Setenv("OTS_OTA_S3_SECRET_KEY", c.secret)
			for _, asJSON := range []bool{false, true} {
				args := []string{"rollout", "--family", "esphome", "--expect-version", "2.0.0", "--broker", b.URL(),
					"--store", "s3://" + c.bucket + "/x", "--s3-endpoint", srv.Endpoint(), "--public-url", "http://127.0.0.1:9",
					"--state-dir", state, fw, "node-1"}
				if asJSON {
					args = append(args, "--json")
				}
				streams, out, errOut := TestStreams()
				code := Execute(context.Background(), args, streams)
				all := out.String() + errOut.String()
				if code != ExitFailed || strings.Contains(all, c.secret) {
					t.Errorf("%v: exit %d (want 1), output:\n%s", args, code, all)
				}
				if asJSON {
					requireJSONRun(t, out.Bytes(), code)
					if !strings.Contains(out.String(), `"code":"store"`) {
						t.Errorf("no store error line:\n%s", out)
					}
				} else if !strings.Contains(errOut.String(), "nothing was published or sent") {
					t.Errorf("stderr:\n%s", errOut)
				}
			}
		})
	}
	if got := watch.fence(t, b.URL(), "test/fence"); len(got) != 0 {
		t.Errorf("published %d message(s), first on %s", len(got), got[0].Topic)
	}
	if _, err := os.Stat(filepath.Join(state, "rollouts")); !os.IsNotExist(err) {
		t.Errorf("the state directory was made: %v", err)
	}
}

// TestRolloutOptionsKept: what the state keeps of the family's and the
// store's flags comes back with --resume, never a credential.
func TestRolloutOptionsKept(t *testing.T) {
	o := &rolloutOptions{Family: "esphome", CheckWait: 3 * time.Minute, ChipFamily: "ESP32-C3", PublicURL: "http://cdn.test:8/f",
		store: &storeSpec{URL: "s3://b-1/p", Bucket: "b-1", Prefix: "p", Endpoint: "http://127.0.0.1:9", Region: "eu-1",
			AccessKey: "AKID", Secret: auth.NewSecret("s3-Secret-Z9")}}
	meta := rollout.Meta{FamilyOptions: o.familyOptions(), Store: o.storeMeta(namedStore("s3://b-1/p"))}
	if s := fmt.Sprintf("%+v %+v", meta.FamilyOptions, *meta.Store); strings.Contains(s, "AKID") || strings.Contains(s, "s3-Secret-Z9") {
		t.Errorf("the state would keep a credential: %s", s)
	}
	streams, _, _ := TestStreams()
	a := &app{io: streams, cfg: &config{origins: map[string]origin{}}}
	t.Setenv("OTS_OTA_S3_ACCESS_KEY", "")
	t.Setenv("OTS_OTA_S3_SECRET_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3-Secret-Z9")
	back := &rolloutOptions{}
	spec, err := back.resumeOptions(a, meta)
	if err != nil {
		t.Fatal(err)
	}
	if back.CheckWait != o.CheckWait || back.ChipFamily != o.ChipFamily || back.PublicURL != o.PublicURL || spec == nil ||
		spec.URL != o.store.URL || spec.Bucket != "b-1" || spec.Prefix != "p" || spec.Endpoint != o.store.Endpoint ||
		spec.Region != "eu-1" || spec.AccessKey != "AKID" || spec.Secret.Reveal() != "s3-Secret-Z9" {
		t.Errorf("resumed %+v %+v from %+v", back, spec, meta)
	}
	// A rollout without a store resumes without one.
	tas := &rolloutOptions{Family: "tasmota"}
	if spec, err := (&rolloutOptions{}).resumeOptions(a, rollout.Meta{FamilyOptions: tas.familyOptions()}); err != nil || spec != nil {
		t.Errorf("tasmota: %v %v", spec, err)
	}
}

// namedStore is a store.Store that only has a name.
type namedStore string

func (n namedStore) String() string { return string(n) }
func (namedStore) PutImage(context.Context, map[string]string) (map[string]string, error) {
	return nil, nil
}
func (namedStore) PutFile(context.Context, string, []byte) (string, error) { return "", nil }
func (namedStore) GetFile(context.Context, string) ([]byte, bool, error)   { return nil, false, nil }
func (namedStore) DeleteFile(context.Context, string) error                { return nil }

// TestRolloutESPHomeEntity: the inventory's entity: names the update
// entity of a node that has two (an ESPHome build with a beta channel):
// the rollout commands that one, and the node ends updated; a node with
// two and none named is refused, told to set entity:. The state records
// the entity, for --resume.
func TestRolloutESPHomeEntity(t *testing.T) {
	b := testbroker.Start(t)
	addr := freeServeAddr(t)
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("OTS_OTA_STATE_DIR", "")
	if err := os.MkdirAll(filepath.Join(home, "ots-ota"), 0o755); err != nil {
		t.Fatal(err)
	}
	inv := "inventory:\n  devices:\n    - {name: two, mqtt_topic: es-two, entity: firmware}\n    - {name: ambig, mqtt_topic: es-ambig}\n"
	if err := os.WriteFile(filepath.Join(home, "ots-ota", "config.yaml"), []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	node := func(name string) fakedev.ESPHomePull {
		// The beta channel polls a manifest nobody writes.
		return fakedev.ESPHomePull{Name: name, Source: "http://" + addr + "/manifest.json", Version: "1.0.0",
			ChipFamily: "ESP32-S3", SecondEntity: "beta", SecondSource: "http://" + addr + "/beta.json"}
	}
	nodes := fakedev.StartESPHomePull(t, b.URL(), node("es-two"), node("es-ambig"))
	fw := writeTestFirmware(t, "2.0.0")
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	code, lines, stderr := runJSON(t, ctx, []string{"rollout", "--json", "-v", "--family", "esphome", "--broker", b.URL(),
		"--serve-addr", addr, "--state-dir", state, "--stability-window", "1s", "--verify-timeout", "10s",
		"--check-wait", "20s", "--expect-version", "2.0.0", "--waves", "100%", "--max-failures", "1", fw, "two", "ambig"})
	raw, _ := json.Marshal(lines)
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1 (one refused)\n%s\n%s", code, raw, stderr)
	}
	if got, want := outcomes(lines), map[string]string{"es-two": "updated", "es-ambig": "refused"}; !maps.Equal(got, want) {
		t.Errorf("outcomes %v, want %v\n%s", got, want, raw)
	}
	for _, l := range lines {
		if l["type"] == "result" && l["address"] == "es-ambig" {
			if r, _ := l["message"].(string); !strings.Contains(r, "(beta, firmware)") || !strings.Contains(r, "entity:") {
				t.Errorf("es-ambig's message %q: want the entities named and entity: asked for", r)
			}
		}
	}
	// -v: the built-in file server's line for each image request (and
	// never its token); manifest polls only at -vv.
	fetched := regexp.MustCompile(`(?m)^.*device fetched a file.*name=fw\.bin.*$`).FindString(stderr)
	if fetched == "" || strings.Contains(stderr, "device polled an open file") {
		t.Errorf("-v: want the file server's line for the image fetch, no manifest polls:\n%s", stderr)
	}
	var statefile struct {
		Serve struct {
			Token string `json:"token"`
		} `json:"serve"`
	}
	two, ambig := nodes[0], nodes[1]
	if two.Running() != "2.0.0" || two.InstallCommands() != 1 || len(two.Tripwires()) > 0 {
		t.Errorf("es-two runs %q after %d INSTALL (%q), tripwires %v", two.Running(), two.InstallCommands(), two.Commands(), two.Tripwires())
	}
	if ambig.InstallCommands() != 0 || ambig.Running() != "1.0.0" {
		t.Errorf("es-ambig runs %q after %d INSTALL", ambig.Running(), ambig.InstallCommands())
	}
	files, _ := filepath.Glob(filepath.Join(state, "rollouts", "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v", files)
	}
	body, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"entity":"firmware"`) {
		t.Errorf("the state does not record es-two's entity:\n%s", body)
	}
	if err := json.Unmarshal(body, &statefile); err != nil || statefile.Serve.Token == "" {
		t.Fatalf("no token in the state file (%v)", err)
	}
	if strings.Contains(stderr, statefile.Serve.Token) {
		t.Errorf("the token shows in the log:\n%s", stderr)
	}
}

// TestRolloutESPHomeResumeRetries: --retries given again to --resume of
// an ESPHome rollout is refused, exit 2, before anything is read from the
// broker or kept in the state, as it is for a new one.
func TestRolloutESPHomeResumeRetries(t *testing.T) {
	fw := writeTestFirmware(t, "2.0.0")
	waves, err := rollout.ParseWaves("100%")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	dir := t.TempDir()
	st, err := rollout.CreateState(dir, rollout.Meta{Family: "esphome", Firmware: fw, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), Expect: "2.0.0", Plan: rollout.Plan{Waves: waves}, ServeAddr: "127.0.0.1:9",
		Broker: "mqtt://127.0.0.1:9", ClientID: "ots-ota-test", Devices: []rollout.Device{{Name: "n", Topic: "n"}},
		Settings: &rollout.Settings{MaxFetches: 10, Retries: 1, Timeout: time.Minute, VerifyTimeout: time.Minute, Stability: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := filepath.Glob(filepath.Join(dir, "rollouts", "*.json"))
	if len(before) != 1 {
		t.Fatalf("state files %v", before)
	}
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), []string{"rollout", "--resume", "--retries", "2", "--state-dir", dir}, streams)
	if code != ExitUsage || !strings.Contains(errOut.String(), "--retries 2: does not go with --family esphome") {
		t.Errorf("exit %d, want 2 and --retries refused:\n%s%s", code, out, errOut)
	}
	now, _ := os.ReadFile(before[0])
	var rec struct {
		Settings struct {
			Retries int `json:"retries"`
		} `json:"settings"`
		Devices []struct {
			Phase string `json:"phase"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(now, &rec); err != nil || rec.Settings.Retries != 1 || len(rec.Devices) != 1 || rec.Devices[0].Phase != "pending" {
		t.Errorf("the refused --resume changed the state file (%v):\n%s", err, now)
	}
}
