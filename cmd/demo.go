package cmd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/embedbroker"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/esphomepull"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
	"github.com/ots-ota/ots-ota/sim/tasmotamqtt"
)

const demoLong = `Demo shows the whole product in under a minute, on any computer, without root
and without hardware: it starts four simulated devices inside this process, on
127.0.0.1 with ports the system picks (an OTS firmware device, a seed-firmware
device with a token, an Arduino sketch with an espota password, and an OTS device
whose new image crashes on boot), builds the firmware images, inspects the image,
asks a device what it runs, pushes to all four (bars on a terminal, lines
elsewhere), and shows push's verification: two updated, the Arduino one
unverified (ArduinoOTA shows no version), one rolled back. Then it starts an
MQTT broker inside this process (for its simulated devices only: real devices
keep their own broker), six simulated Tasmota plugs and three ESPHome nodes
that fetch their updates themselves, and rolls an image out to each kind: one
canary, then two waves, every device updated.

Each step prints the command that does the same against your own devices. mDNS
discovery is shown only where the loopback interface carries multicast; nothing
is ever sent off this computer. Everything it started is stopped, and its
temporary folder removed, when it ends, fails or is interrupted.

With --json every step is a {"type":"step"} line followed by that command's own
JSON lines (its summary last), and the demo's summary ends the output.

Exit status: 0 when the run went as shown (the rolled-back device is part of it),
1 when something else happened, 130 when interrupted.`

type demoOptions struct {
	Keep bool
}

func (o *demoOptions) validate(*app, []string) error { return nil }

func newDemoCmd(a *app) *cobra.Command {
	o := &demoOptions{}
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole product against simulated devices on this computer (no hardware, no root)",
		Long:  demoLong,
		Args:  argsNone,
		// The demo's sub-commands must not read the user's config file or
		// inventory: they get the demo's own.
		Annotations: map[string]string{"config": "skip"},
	}
	c.RunE = run(a, o, runDemo)
	return c
}

// demoDevice is one simulated device and how the demo describes it.
type demoDevice struct {
	name, what string
	cfg        sim.Config
	dev        *sim.Device
	protocol   string
	secretFile string
}

// demoSecrets are the test devices' secrets: shown nowhere, stored in the
// demo's temporary folder for the inventory to point at.
const (
	demoToken    = "demo-token-51f3"
	demoPassword = "demo-pw-9c2e"
)

func runDemo(ctx context.Context, a *app, _ *demoOptions) (err error) {
	start := time.Now()
	a.log = newLogger(a.io.ErrOut, a.opts, a.start, &a.secrets) // the config loader, which makes it, is skipped
	dir, err := os.MkdirTemp("", "ots-ota-demo-")
	if err != nil {
		return fmt.Errorf("demo: temporary folder: %v", err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d := &demo{a: a, dir: dir}
	d.step("Build the firmware images (what `pio run` makes)",
		"ots-ota sim image --chip esp32s3 --project ots-fw-main --version 1.0.1 --size 900K -o fw.bin")
	fw := filepath.Join(dir, "fw.bin")
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "ots-fw-main", Version: "1.0.1",
		Built: time.Now().UTC().Truncate(time.Second), Size: 900 << 10})
	if err == nil {
		err = os.WriteFile(fw, data, 0o644)
	}
	if err != nil {
		return fmt.Errorf("demo: build the image: %v", err)
	}
	d.say("wrote fw.bin: esp32s3 ots-fw-main 1.0.1, %d bytes", len(data))

	// mDNS only on a loopback interface that carries multicast.
	var resp *mdnsd.Responder
	lo, loErr := mdnsd.LoopbackInterface()
	if loErr == nil {
		if resp, loErr = mdnsd.New(mdnsd.Config{Interface: lo, Logger: a.log}); loErr == nil {
			go func() { _ = resp.Serve(ctx) }()
			defer resp.Close()
		}
	}

	devs, err := d.startDevices(ctx, resp)
	defer func() {
		for _, dv := range devs {
			if dv.dev != nil {
				_ = dv.dev.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	if d.cfg, err = d.writeInventory(devs); err != nil {
		return err
	}

	d.step("Check the image before a byte leaves the computer", "ots-ota inspect --chip esp32s3 --max-size 2M fw.bin")
	if code := d.exec(ctx, "inspect", "--chip", "esp32s3", "--max-size", "2M", fw); code != ExitOK {
		return d.failed(ctx, "inspect", code)
	}

	if resp != nil {
		d.step("Find the devices by mDNS (on "+lo.Name+" only, here)", "ots-ota discover")
		if code := d.exec(ctx, "discover", "--interface", lo.Name, "--timeout", "1500ms", "--no-cache"); code != ExitOK {
			return d.failed(ctx, "discover", code)
		}
	} else {
		d.step("Find the devices by mDNS", "ots-ota discover")
		d.say("skipped: %v; the devices are listed in the demo's inventory instead", loErr)
	}

	d.step("Ask a device what it runs, and where each fact came from", "ots-ota info kitchen   # or an IP, a .local name")
	if code := d.exec(ctx, "info", "--inventory-only", "kitchen"); code != ExitOK {
		return d.failed(ctx, "info", code)
	}

	d.step("Update all four in parallel, then verify each came back on 1.0.1",
		"OTS_OTA_PASSWORD=… ots-ota push --stability-window 2s fw.bin kitchen hall garage attic   # names from your inventory (ots-ota.yaml), or IPs")
	code := d.exec(ctx, "push", "--inventory-only", "--stability-window", "2s",
		"--verify-timeout", "20s", fw, "kitchen", "hall", "garage", "attic")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// attic's new image crashes on boot and rolls back: push exits 1, as it
	// must; anything else means the demo did not go as described.
	if code != ExitFailed {
		return d.failed(ctx, "push", code)
	}
	if err := d.rollout(ctx); err != nil {
		return err
	}
	d.step("Done", "")
	d.say("attic rolled back to 1.0.0 (its 1.0.1 crashed on boot), so push exited 1: a rollback is never an update.")
	d.say("the rollouts updated every plug and every ESPHome node over the broker, a canary first and then two waves: each exited 0.")
	d.say("demo finished in %s; every simulated device is stopped and its files removed.", time.Since(start).Round(100*time.Millisecond))
	d.say("next: ots-ota push --help, ots-ota sim --help, and the README's PlatformIO section")
	return nil
}

type demo struct {
	a   *app
	dir string
	cfg string // the demo's config file
	n   int
}

// step announces a step and the command a user would type for it.
// demoSimLines are the sim commands the demo's devices stand for. Each
// process's mDNS names are its own: run together, they rename nothing
// (TestDemoSimLinesRenameNothing).
var demoSimLines = []string{
	"ots-ota sim --personality ots --base-ip 127.0.0.2 --name-prefix kitchen &",
	"OTS_OTA_PASSWORD=… ots-ota sim --personality seed --extensions --base-ip 127.0.0.3 --name-prefix hall &",
	"OTS_OTA_PASSWORD=… ots-ota sim --personality arduino --base-ip 127.0.0.4 --name-prefix garage &",
	"ots-ota sim --personality ots --behave 1.0.1=crash-on-boot --base-ip 127.0.0.5 --name-prefix attic &",
}

func (d *demo) step(title, command string) {
	d.n++
	if d.a.opts.JSON {
		d.a.writeLine(stepLine{lineHead: head("step"), Step: d.n, Title: title, Command: nullString(command)})
		summaryAs[*demoSummary](d.a).Steps = ptr(d.n)
		return
	}
	st := style{on: d.a.color()}
	fmt.Fprintf(d.a.io.Out, "\n%s\n", st.bold(fmt.Sprintf("==> %d. %s", d.n, title)))
	for _, line := range strings.Split(command, "\n") {
		if line != "" {
			fmt.Fprintf(d.a.io.Out, "$ %s\n", line)
		}
	}
}

func (d *demo) say(format string, args ...any) {
	if d.a.opts.JSON {
		d.a.writeLine(noteLine{lineHead: head("note"), Step: d.n, Message: fmt.Sprintf(format, args...)})
		return
	}
	fmt.Fprintf(d.a.io.Out, format+"\n", args...)
}

// stepLine and noteLine are demo --json's own lines; each command it runs
// adds its lines, its summary last, after the step's.
type stepLine struct {
	lineHead
	Step    int     `json:"step"`
	Title   string  `json:"title"`
	Command *string `json:"command"` // what a user types for it; null for the last step
}

type noteLine struct {
	lineHead
	Step    int    `json:"step"`
	Message string `json:"message"`
}

// exec runs one ots-ota command in this process, on the demo's streams.
func (d *demo) exec(ctx context.Context, args ...string) int {
	var global []string
	if d.a.opts.JSON {
		global = append(global, "--json")
	}
	if d.a.opts.NoColor {
		global = append(global, "--no-color")
	}
	if d.a.opts.Quiet {
		global = append(global, "--quiet")
	}
	for i := 0; i < d.a.opts.Verbose; i++ {
		global = append(global, "-v")
	}
	// The demo's own config file (its inventory), never the user's.
	global = append(global, "--config", d.cfg)
	return Execute(ctx, append(global, args...), d.a.io)
}

func (d *demo) failed(ctx context.Context, what string, code int) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("demo: %s ended with exit %d, not as the demo expects; run with -v for details", what, code)
}

// startDevices starts the four devices on 127.0.0.1, ephemeral ports.
func (d *demo) startDevices(ctx context.Context, resp *mdnsd.Responder) ([]*demoDevice, error) {
	t := sim.FastTiming()
	// Slow enough to watch the bars, fast enough for the minute.
	t.EraseRate, t.WriteRate = 4<<20, 1<<20
	// Boots as long as a real ESP32's (2-6 s): push proves a restart by
	// the silence, and the OTS firmware tells no uptime.
	t.BootTime, t.ValidAfter, t.CrashAfter = 2500*time.Millisecond, 1500*time.Millisecond, 300*time.Millisecond
	lo := netip.MustParseAddr("127.0.0.1")
	base := func(name string, p sim.Personality) sim.Config {
		tt := t
		return sim.Config{Name: "demo-" + name, Instance: "demo " + name, Personality: p, Project: "ots-fw-main", Version: "1.0.0",
			IP: lo, Timing: &tt, MDNS: resp, Logger: d.a.log, Seed: 1}
	}
	devs := []*demoDevice{
		{name: "kitchen", what: "OTS firmware (HTTP, web app on its own port)", cfg: base("kitchen", sim.OTS), protocol: "http"},
		{name: "hall", what: "seed firmware with a Bearer token", cfg: base("hall", sim.Seed), protocol: "http"},
		{name: "garage", what: "Arduino sketch, espota with a password", cfg: base("garage", sim.Arduino), protocol: "espota"},
		{name: "attic", what: "OTS firmware whose 1.0.1 crashes on boot", cfg: base("attic", sim.OTS), protocol: "http"},
	}
	devs[1].cfg.Password, devs[1].cfg.Extensions = auth.NewSecret(demoToken), true
	devs[2].cfg.Password = auth.NewSecret(demoPassword)
	devs[3].cfg.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.CrashOnBoot}
	for i, s := range map[int]string{1: demoToken, 2: demoPassword} {
		devs[i].secretFile = filepath.Join(d.dir, devs[i].name+".secret")
		if err := os.WriteFile(devs[i].secretFile, []byte(s+"\n"), 0o600); err != nil {
			return devs, fmt.Errorf("demo: %v", err)
		}
	}
	d.step("Start four simulated devices on 127.0.0.1 (ports the system picks)", strings.Join(demoSimLines, "\n"))
	for _, dv := range devs {
		dev, err := sim.Start(ctx, dv.cfg)
		if err != nil {
			return devs, fmt.Errorf("demo: start the simulated %s device: %v", dv.name, err)
		}
		dv.dev = dev
	}
	for _, dv := range devs {
		if err := waitReady(ctx, dv); err != nil {
			return devs, err
		}
		web := dv.dev.WebAddr()
		if web == "" {
			web = "-"
		}
		d.say("  %-8s OTA %-16s web %-16s %s", dv.name, dv.dev.OTAAddr(), web, dv.what)
	}
	return devs, nil
}

// waitReady waits until an HTTP device accepts connections (espota devices
// answer UDP as soon as they are started).
func waitReady(ctx context.Context, dv *demoDevice) error {
	if dv.protocol != "http" {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", dv.dev.OTAAddr())
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the simulated %s device never came up: %v", dv.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeInventory writes the demo's config file: its four devices with their
// own ports and secrets, as a user lists devices mDNS cannot reach.
func (d *demo) writeInventory(devs []*demoDevice) (string, error) {
	var b strings.Builder
	b.WriteString("inventory:\n  devices:\n")
	for _, dv := range devs {
		fmt.Fprintf(&b, "    - name: %s\n      address: 127.0.0.1\n      port: %d\n      protocol: %s\n", dv.name, dv.dev.OTAPort(), dv.protocol)
		if w := dv.dev.WebAddr(); w != "" && dv.cfg.Personality == sim.OTS {
			_, p, _ := net.SplitHostPort(w)
			n, _ := strconv.Atoi(p)
			fmt.Fprintf(&b, "      web_port: %d\n", n)
		}
		if dv.secretFile != "" {
			fmt.Fprintf(&b, "      auth: {file: %q}\n", dv.secretFile)
		}
	}
	b.WriteString("  groups:\n    demo: [kitchen, hall, garage, attic]\n")
	path := filepath.Join(d.dir, "ots-ota.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("demo: write the inventory: %v", err)
	}
	return path, nil
}

// The demo's rollouts: Tasmota plugs and ESPHome nodes that fetch their
// image themselves, told over an MQTT broker that runs inside this
// process (real devices keep their own broker).
const (
	demoPlugs        = 6
	demoPlugVersion  = "15.5.0"
	demoNodes        = 3
	demoNodeVersion  = "1.1.0"
	demoBrokerShown  = "mqtt://127.0.0.1:1883"
	demoServeShown   = "127.0.0.1:8070"
	demoRolloutImage = "tasmota32.bin"
	demoNodeImage    = "sensor.bin"

	// The simulated pulling devices' speed and the rollouts' waits to
	// match (real devices: seconds to restart, update_interval of hours,
	// the commands' defaults).
	demoRebootTime     = 200 * time.Millisecond
	demoUpdateInterval = 500 * time.Millisecond
	demoStability      = 300 * time.Millisecond
	demoDiscoverWait   = 300 * time.Millisecond
	demoCheckWait      = 10 * time.Second
)

// demoPullLines are what a user types for the broker, the plugs and the
// nodes.
var demoPullLines = []string{
	"mosquitto -p 1883 &   # or any MQTT broker; the demo runs one inside itself",
	fmt.Sprintf("ots-ota sim --personality tasmota-mqtt --broker %s --count %d --chip esp32 --topic-prefix plug &", demoBrokerShown, demoPlugs),
	fmt.Sprintf("ots-ota sim --personality esphome-pull --broker %s --count %d --chip esp32 --node-name sensor-%%d --manifest-url http://%s/manifest.json --update-interval 500ms &",
		demoBrokerShown, demoNodes, demoServeShown),
}

// rollout starts the broker, the plugs and the nodes, and rolls an image
// out to each family with a canary and two waves, on rollout's built-in
// file server. The broker and the devices stop when it returns.
func (d *demo) rollout(ctx context.Context) error {
	d.step(fmt.Sprintf("Start an MQTT broker, %d simulated Tasmota plugs and %d ESPHome nodes that fetch their updates themselves", demoPlugs, demoNodes),
		strings.Join(demoPullLines, "\n"))
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("demo: %s: %v", what, err)
	}
	b, err := embedbroker.Start(ctx, embedbroker.Config{Dir: filepath.Join(d.dir, "broker"), Logger: d.a.log})
	if err != nil {
		return fail("the MQTT broker", err)
	}
	defer b.Close()
	devs := make([]tasmotamqtt.Device, demoPlugs)
	for i := range devs {
		// Quick devices (a real one restarts in seconds, flashes at 100 KiB/s):
		// both rollouts' six waves take a few seconds together.
		devs[i] = tasmotamqtt.Device{Chip: "esp32", FlashRate: 4 << 20, RebootTime: demoRebootTime}
	}
	plugs, err := tasmotamqtt.Start(ctx, tasmotamqtt.Config{Broker: b.URL(), Devices: devs, TopicPrefix: "plug", Seed: 1,
		Tick: 50 * time.Millisecond, Logger: d.a.log})
	if err != nil {
		return fail("start the simulated plugs", err)
	}
	// The devices stop before the broker (defers run last first).
	defer plugs.Close()
	// The nodes poll a manifest at a URL fixed when they were built: the
	// rollout's file server binds that port.
	serve, err := freeLoopbackAddr()
	if err != nil {
		return fail("a port for the file server", err)
	}
	nodesCfg := make([]esphomepull.Device, demoNodes)
	for i := range nodesCfg {
		nodesCfg[i] = esphomepull.Device{Name: fmt.Sprintf("sensor-%d", i+1), Version: demoNodeOld, ManifestURL: "http://" + serve + "/manifest.json",
			ChipFamily: "ESP32", UpdateInterval: demoUpdateInterval, FlashRate: 4 << 20, RebootTime: demoRebootTime}
	}
	// The nodes first read the manifest of the version they run, as a
	// fleet that polled its manifest before: their state then tells that
	// version (a node that never had a good check tells none, and its
	// first version told during the rollout would look like a restart).
	checked := make(chan string, 4*demoNodes)
	nodes, err := esphomepull.Start(ctx, esphomepull.Config{Broker: b.URL(), Devices: nodesCfg, Seed: 1, Logger: d.a.log,
		OnEvent: func(e esphomepull.Event) {
			if e.Event == esphomepull.EventChecked && e.Version == demoNodeOld {
				select {
				case checked <- e.Device:
				default:
				}
			}
		}})
	if err != nil {
		return fail("start the simulated ESPHome nodes", err)
	}
	defer nodes.Close()
	if err := serveEarlierManifest(ctx, serve, checked); err != nil {
		return fail("the nodes' earlier manifest", err)
	}
	d.say("  broker    %s  (nats-server's MQTT, inside this process)", b.URL())
	topics := plugs.Topics()
	slices.Sort(topics)
	for _, topic := range topics {
		d.say("  %-14s Tasmota %s on ESP32: takes OtaUrl and Upgrade over the broker, fetches the image itself", topic, plugs.Running(topic))
	}
	for _, name := range nodes.Names() {
		d.say("  %-14s ESPHome node, project version %s on ESP32: polls http://%s/manifest.json, installs when told", name, nodes.Running(name), serve)
	}

	images := []struct {
		name string
		opts image.BuildOptions
	}{
		{demoRolloutImage, image.BuildOptions{Chip: image.ChipESP32, Project: "tasmota32", Version: demoPlugVersion, Size: 400 << 10}},
		{demoNodeImage, image.BuildOptions{Chip: image.ChipESP32, Project: "sensor", Version: demoNodeVersion, Size: 300 << 10}},
	}
	for _, im := range images {
		im.opts.Built = time.Now().UTC().Truncate(time.Second)
		data, err := image.Build(im.opts)
		if err == nil {
			err = os.WriteFile(filepath.Join(d.dir, im.name), data, 0o644)
		}
		if err != nil {
			return fail("build "+im.name, err)
		}
	}
	// Waits suited to these devices, not to real ones: said so before
	// the rollouts run.
	common := []string{"--broker", b.URL(), "--state-dir", filepath.Join(d.dir, "rollouts"), "--all", "--discover-wait", demoDiscoverWait.String(),
		"--canary", "1", "--waves", "50%,100%", "--stability-window", demoStability.String(), "--verify-timeout", "20s"}
	d.say("  these simulated devices restart in %s and the nodes check their manifest every %s, so the rollouts below run with\n"+
		"  --stability-window %s --discover-wait %s (--check-wait %s for the nodes); with real devices keep the defaults\n"+
		"  (--stability-window 30s, 90s with esphome; --discover-wait 3s; --check-wait 10m, or longer than their update_interval)",
		demoRebootTime, demoUpdateInterval, demoStability, demoDiscoverWait, demoCheckWait)

	d.step(fmt.Sprintf("Roll %s out to the plugs over the broker: one canary, then two waves", demoPlugVersion),
		fmt.Sprintf("ots-ota rollout %s --family tasmota --expect-version %s --broker %s --all --canary 1 --waves 50%%,100%%",
			demoRolloutImage, demoPlugVersion, demoBrokerShown))
	code := d.exec(ctx, append([]string{"rollout", filepath.Join(d.dir, demoRolloutImage), "--family", "tasmota",
		"--expect-version", demoPlugVersion, "--serve-addr", "127.0.0.1"}, common...)...)
	if code != ExitOK {
		return d.failed(ctx, "rollout", code)
	}

	d.step(fmt.Sprintf("Roll %s out to the ESPHome nodes: each wave's nodes see it in the manifest they poll, then get INSTALL", demoNodeVersion),
		fmt.Sprintf("ots-ota rollout %s --family esphome --expect-version %s --broker %s --serve-addr %s --all --canary 1 --waves 50%%,100%%",
			demoNodeImage, demoNodeVersion, demoBrokerShown, demoServeShown))
	code = d.exec(ctx, append([]string{"rollout", filepath.Join(d.dir, demoNodeImage), "--family", "esphome",
		"--expect-version", demoNodeVersion, "--serve-addr", serve, "--check-wait", demoCheckWait.String()}, common...)...)
	if code != ExitOK {
		return d.failed(ctx, "rollout", code)
	}
	return nil
}

// demoNodeOld is the version the demo's nodes run, and the manifest they
// read before the rollout announces.
const demoNodeOld = "1.0.0"

// serveEarlierManifest serves, at addr, a manifest of demoNodeOld until
// each node said it checked it (checked names them), then frees the port
// for the rollout's file server.
func serveEarlierManifest(ctx context.Context, addr string, checked <-chan string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	body := `{"name":"sensor","version":"` + demoNodeOld + `","builds":[{"chipFamily":"ESP32","ota":{"path":"http://` + addr +
		`/old.bin","md5":"00112233445566778899aabbccddeeff","summary":"the version they run"}}]}`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	seen := map[string]bool{}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for len(seen) < demoNodes {
		select {
		case n := <-checked:
			seen[n] = true
		case <-deadline.C:
			return fmt.Errorf("%d of %d nodes read it in 30s", len(seen), demoNodes)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// freeLoopbackAddr is 127.0.0.1 and a port free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
