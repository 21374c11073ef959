//go:build linux

package cmd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeFirmware writes fw as dir/fw.bin, the image the fleet pushes send.
func writeFirmware(t *testing.T, dir string, fw []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startFleetSims starts one sim process a group, its devices from
// NET.base.2 up, hands each device's address to each, and waits until every
// device is ready. The sims are in the groups' order.
func startFleetSims(t *testing.T, dir, net string, groups []fleetGroup, each func(g fleetGroup, i int, ip string)) []*started {
	t.Helper()
	var sims []*started
	for _, g := range groups {
		args := append([]string{"sim", "-n", fmt.Sprint(g.n), "--base-ip", net + "." + g.base + ".2",
			"--fast", "--no-mdns", "--duration", "60s", "--json"}, g.simArgs...)
		sims = append(sims, startOts(t, dir, args...))
		for i := range g.n {
			each(g, i, fmt.Sprintf("%s.%s.%d", net, g.base, 2+i))
		}
	}
	for i, s := range sims {
		s.waitLines(t, `"event":"ready"`, groups[i].n)
	}
	return sims
}

// checkFleetResults: each result line of a push's --json output names one
// address of want, once, and each address of want has one; check judges a
// line against its address's group.
func checkFleetResults[G any](t *testing.T, out []string, want map[string]G, name func(G) string, check func(line string, g G)) {
	t.Helper()
	seen := map[string]bool{}
	for _, line := range out {
		if !strings.HasPrefix(line, `{"type":"result"`) {
			continue
		}
		var r struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result line: %v\n%s", err, line)
		}
		g, ok := want[r.Address]
		if !ok || seen[r.Address] {
			t.Errorf("unexpected or repeated result for %q:\n%s", r.Address, line)
			continue
		}
		seen[r.Address] = true
		check(line, g)
	}
	for addr, g := range want {
		if !seen[addr] {
			t.Errorf("no result for %s (%s)", addr, name(g))
		}
	}
}

// checkFleetResult judges one result line of a mixed fleet push against
// its group: protocol, outcome, reason, the text it must say, the version
// an updated device runs (1.0.1) and no byte sent to a refused one.
func checkFleetResult(t *testing.T, line string, g fleetGroup) {
	t.Helper()
	var r struct {
		Address  string   `json:"address"`
		Protocol *string  `json:"protocol"`
		Outcome  string   `json:"outcome"`
		Reason   *string  `json:"reason"`
		Running  *string  `json:"running"`
		Bytes    *int     `json:"bytes"`
		Message  string   `json:"message"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("result line: %v\n%s", err, line)
	}
	str := func(p *string) string {
		if p == nil {
			return "<null>"
		}
		return *p
	}
	wantReason := g.reason
	if wantReason == "" {
		wantReason = "<null>"
	}
	if str(r.Protocol) != g.protocol || r.Outcome != g.outcome || str(r.Reason) != wantReason {
		t.Errorf("%s (%s): protocol %s, outcome %s, reason %s; want %s, %s, %s\n%s",
			r.Address, g.name, str(r.Protocol), r.Outcome, str(r.Reason), g.protocol, g.outcome, wantReason, line)
		return
	}
	if !strings.Contains(r.Message+"\n"+strings.Join(r.Warnings, "\n"), g.says) {
		t.Errorf("%s (%s): result does not say %q:\n%s", r.Address, g.name, g.says, line)
	}
	switch g.outcome {
	case "updated":
		if str(r.Running) != "1.0.1" {
			t.Errorf("%s (%s): updated but running %s", r.Address, g.name, str(r.Running))
		}
	case "refused":
		if r.Bytes != nil {
			t.Errorf("%s (%s): refused but %d bytes sent", r.Address, g.name, *r.Bytes)
		}
	}
}

// stopSims interrupts every sim, then waits for each (s.out: all it
// printed). All are signalled first: a race-enabled process lingers a
// second as it exits.
func stopSims(t *testing.T, sims []*started) {
	t.Helper()
	for _, s := range sims {
		if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sims {
		s.wait(t)
	}
}

// simUploads counts a sim's upload_started and upload_finished events; with
// needOK only the finished ones that carry espota's OK.
func simUploads(out []string, needOK bool) (started, finished int) {
	for _, line := range out {
		if strings.Contains(line, `"event":"upload_finished"`) && (!needOK || strings.Contains(line, `"text":"OK"`)) {
			finished++
		}
		if strings.Contains(line, `"event":"upload_started"`) {
			started++
		}
	}
	return started, finished
}
