package cmd

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// Script commands for rollout's scripts: a mosquitto of the script's own,
// and a test subscriber on # that counts the commands devices got.

// scriptMQTT is one script's broker and watcher.
type scriptMQTT struct {
	url    string
	client *broker.Client

	mu   sync.Mutex
	msgs []broker.Message
	got  chan struct{}
}

var (
	scriptMQTTMu sync.Mutex
	scriptMQTTs  = map[*testscript.TestScript]*scriptMQTT{}
)

func mqttOf(ts *testscript.TestScript) *scriptMQTT {
	scriptMQTTMu.Lock()
	defer scriptMQTTMu.Unlock()
	m := scriptMQTTs[ts]
	if m == nil {
		ts.Fatalf("no broker: run mqttbroker first")
	}
	return m
}

// cmdMQTTBroker starts mosquitto on 127.0.0.1 and a free port for the
// script (stopped at its end), sets $BROKER (mqtt://127.0.0.1:PORT), and
// subscribes the test's watcher to #: `mqttbroker`.
func cmdMQTTBroker(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: mqttbroker")
	}
	bin := testbroker.Binary()
	if bin == "" {
		ts.Fatalf("no mosquitto here (scripts check [mosquitto] first)")
	}
	dir := ts.MkAbs(".mosquitto")
	ts.Check(os.MkdirAll(dir, 0o700))
	var addr string
	var cmd *exec.Cmd
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		addr = l.Addr().String()
		l.Close()
		_, port, _ := net.SplitHostPort(addr)
		conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest file %s\n", port, filepath.Join(dir, "log"))
		if os.Geteuid() == 0 {
			conf += "user root\n" // else mosquitto drops to a user who cannot read the work directory
		}
		ts.Check(os.WriteFile(filepath.Join(dir, "conf"), []byte(conf), 0o600))
		cmd = exec.Command(bin, "-c", filepath.Join(dir, "conf"))
		ts.Check(cmd.Start())
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		ts.Defer(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		if waitListen(addr, exited) {
			break
		}
		if try == 4 {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			ts.Fatalf("mosquitto never listened on %s: %s", addr, log)
		}
	}
	m := &scriptMQTT{url: "mqtt://" + addr, got: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Connect(ctx, broker.Config{URL: m.url, ClientID: fmt.Sprintf("script-watch-%d", time.Now().UnixNano())})
	ts.Check(err)
	m.client = c
	ts.Defer(c.Close)
	ts.Check(c.Subscribe(ctx, "#", m.record))
	scriptMQTTMu.Lock()
	scriptMQTTs[ts] = m
	scriptMQTTMu.Unlock()
	ts.Defer(func() {
		scriptMQTTMu.Lock()
		delete(scriptMQTTs, ts)
		scriptMQTTMu.Unlock()
	})
	ts.Setenv("BROKER", m.url)
}

// condMosquitto is the script condition [mosquitto]: without it a script
// skips, unless CI=true, where a missing mosquitto fails the run.
func condMosquitto() (bool, error) {
	if testbroker.Binary() != "" {
		return true, nil
	}
	if os.Getenv("CI") == "true" {
		return false, fmt.Errorf("mosquitto is required (CI=true): install Debian's mosquitto package")
	}
	return false, nil
}

func waitListen(addr string, exited chan struct{}) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (m *scriptMQTT) record(msg broker.Message) {
	m.mu.Lock()
	m.msgs = append(m.msgs, msg)
	m.mu.Unlock()
	select {
	case m.got <- struct{}{}:
	default:
	}
}

// waitFor waits until n messages whose "TOPIC PAYLOAD" matches re arrived
// (deadline: 60 s).
func (m *scriptMQTT) waitFor(ts *testscript.TestScript, re *regexp.Regexp, n int) {
	deadline := time.After(60 * time.Second)
	for {
		m.mu.Lock()
		got := 0
		for _, msg := range m.msgs {
			if re.MatchString(msg.Topic + " " + string(msg.Payload)) {
				got++
			}
		}
		m.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-m.got:
		case <-deadline:
			ts.Fatalf("%d of %d messages matching %q within 60 s", got, n, re)
		}
	}
}

// cmdWaitMQTT waits for messages on any topic ("TOPIC PAYLOAD" matching
// the pattern): `waitmqtt [-n N] PATTERN` (default one). Tasmota devices
// publish an empty cmnd/<topic>/POWER when they connect, ESPHome nodes
// <node>/status online: waiting for N of those waits for a fleet of N.
func cmdWaitMQTT(ts *testscript.TestScript, neg bool, args []string) {
	n := 1
	if len(args) == 3 && args[0] == "-n" {
		var err error
		n, err = strconv.Atoi(args[1])
		ts.Check(err)
		args = args[2:]
	}
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitmqtt [-n N] PATTERN")
	}
	re, err := regexp.Compile(args[0])
	ts.Check(err)
	mqttOf(ts).waitFor(ts, re, n)
}

// maxArg is a command's [-max N] (-1 without); anything else, or a
// negation, is a usage error.
func maxArg(ts *testscript.TestScript, neg bool, args []string, name string) int {
	switch {
	case neg:
		ts.Fatalf("usage: %s [-max N]", name)
	case len(args) == 2 && args[0] == "-max":
		n, err := strconv.Atoi(args[1])
		ts.Check(err)
		return n
	case len(args) != 0:
		ts.Fatalf("usage: %s [-max N]", name)
	}
	return -1
}

// fenced publishes fenceTopic (under filter) from a fresh subscriber to
// filter and waits until both it and the watcher have it back: everything
// published before has been delivered. It fails (retainedWords: the list)
// when the fresh subscriber was handed a retained message, and returns
// what the watcher saw.
func (m *scriptMQTT) fenced(ts *testscript.TestScript, filter, fenceTopic, retainedWords string) []broker.Message {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fresh, err := broker.Connect(ctx, broker.Config{URL: m.url, ClientID: fmt.Sprintf("script-fresh-%d", time.Now().UnixNano())})
	ts.Check(err)
	defer fresh.Close()
	var freshMu sync.Mutex
	var retained []string
	fenced := make(chan struct{})
	var once sync.Once
	ts.Check(fresh.Subscribe(ctx, filter, func(msg broker.Message) {
		if msg.Topic == fenceTopic {
			once.Do(func() { close(fenced) })
			return
		}
		if msg.Retained {
			freshMu.Lock()
			retained = append(retained, msg.Topic)
			freshMu.Unlock()
		}
	}))
	ts.Check(fresh.Publish(ctx, fenceTopic, []byte("fence")))
	select {
	case <-fenced:
	case <-ctx.Done():
		ts.Fatalf("the fence never came back")
	}
	m.waitFor(ts, regexp.MustCompile("^"+regexp.QuoteMeta(fenceTopic)+" "), 1)
	freshMu.Lock()
	if len(retained) > 0 {
		ts.Fatalf("%s: %s", retainedWords, strings.Join(retained, ", "))
	}
	freshMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// cmdMQTTCmds checks what devices were told: `mqttcmds [-max N]`. It
// prints, sorted, one line per device topic, "TOPIC upgrades=N status=N",
// the Upgrade commands (Backlog … Upgrade 1) and Status reads it got,
// after a fence (everything published before it was delivered). It fails
// when any message under cmnd/# was retained, when a fresh subscriber to
// cmnd/# is handed a retained message, or (-max N) when a device got more
// than N Upgrade commands. The device's own empty cmnd/<t>/POWER after
// each connect is not a command of ours and is left out.
func cmdMQTTCmds(ts *testscript.TestScript, neg bool, args []string) {
	max := maxArg(ts, neg, args, "mqttcmds")
	m := mqttOf(ts)
	// A fresh subscriber: the broker hands it every retained message
	// under cmnd/# before the fence it publishes after subscribing.
	msgs := m.fenced(ts, "cmnd/#", fmt.Sprintf("cmnd/ots-test-fence-%d/Fence", time.Now().UnixNano()), "retained messages remain under cmnd/#")

	type count struct{ upgrades, status int }
	counts := map[string]*count{}
	for _, msg := range msgs {
		if !strings.HasPrefix(msg.Topic, "cmnd/") || strings.HasPrefix(msg.Topic, "cmnd/ots-test-fence-") {
			continue
		}
		if msg.Retained {
			ts.Fatalf("a retained message under cmnd/#: %s %q", msg.Topic, msg.Payload)
		}
		parts := strings.Split(msg.Topic, "/")
		if len(parts) < 3 {
			continue
		}
		dev, cmd := strings.Join(parts[1:len(parts)-1], "/"), strings.ToLower(parts[len(parts)-1])
		if cmd == "power" && len(msg.Payload) == 0 {
			continue
		}
		c := counts[dev]
		if c == nil {
			c = &count{}
			counts[dev] = c
		}
		payload := strings.ToLower(string(msg.Payload))
		switch {
		case cmd == "backlog" && strings.Contains(payload, "upgrade"), cmd == "upgrade":
			c.upgrades++
		case strings.HasPrefix(cmd, "status"):
			c.status++
		}
	}
	devs := make([]string, 0, len(counts))
	for d := range counts {
		devs = append(devs, d)
	}
	slices.Sort(devs)
	for _, d := range devs {
		c := counts[d]
		fmt.Fprintf(ts.Stdout(), "%s upgrades=%d status=%d\n", d, c.upgrades, c.status)
		if max >= 0 && c.upgrades > max {
			ts.Fatalf("%s got %d Upgrade commands, at most %d allowed", d, c.upgrades, max)
		}
	}
}

// cmdFreePort sets $NAME to a TCP port free on 127.0.0.1 now: `freeport
// NAME` (an ESPHome node's manifest URL needs its port before the rollout
// binds it).
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport NAME")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	ts.Setenv(args[0], port)
}

// cmdMQTTInstalls checks what ESPHome nodes were told: `mqttinstalls [-max
// N]`. After a fence, it prints, sorted, one line per node topic prefix,
// "PREFIX installs=N", the INSTALL commands on PREFIX/update/ID/command.
// It fails when a command was retained (the watcher saw one, or a fresh
// subscriber to +/update/+/command is handed one), when a command was
// anything but INSTALL, or (-max N) when a node got more than N.
func cmdMQTTInstalls(ts *testscript.TestScript, neg bool, args []string) {
	max := maxArg(ts, neg, args, "mqttinstalls")
	m := mqttOf(ts)
	msgs := m.fenced(ts, "+/update/+/command", fmt.Sprintf("ots-test-fence-%d/update/fence/command", time.Now().UnixNano()), "retained commands remain")

	counts := map[string]int{}
	for _, msg := range msgs {
		parts := strings.Split(msg.Topic, "/")
		if len(parts) < 4 || parts[len(parts)-1] != "command" || parts[len(parts)-3] != "update" || strings.HasPrefix(msg.Topic, "ots-test-fence-") {
			continue
		}
		if msg.Retained {
			ts.Fatalf("a retained command: %s %q", msg.Topic, msg.Payload)
		}
		if string(msg.Payload) != "INSTALL" {
			ts.Fatalf("a command other than INSTALL: %s %q", msg.Topic, msg.Payload)
		}
		counts[strings.Join(parts[:len(parts)-3], "/")]++
	}
	for _, p := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(ts.Stdout(), "%s installs=%d\n", p, counts[p])
		if max >= 0 && counts[p] > max {
			ts.Fatalf("%s got %d INSTALL commands, at most %d allowed", p, counts[p], max)
		}
	}
}
