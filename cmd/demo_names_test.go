package cmd

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// TestDemoSimLinesRenameNothing runs the sim commands the demo prints, all
// at once, as a user would paste them: no process renames another's
// devices over mDNS (issue 15 Build 3; they made 7 rename warnings).
func TestDemoSimLinesRenameNothing(t *testing.T) {
	needMulticast(t)
	bin := otsBinary(t)
	home := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]bytes.Buffer, len(demoSimLines))
	errs := make([]error, len(demoSimLines))
	for i, line := range demoSimLines {
		env := append(os.Environ(), "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home, "NO_COLOR=1")
		if rest, ok := strings.CutPrefix(line, "OTS_OTA_PASSWORD=… "); ok {
			line, env = rest, append(env, "OTS_OTA_PASSWORD=demo-pw")
		}
		args, ok := strings.CutPrefix(strings.TrimSuffix(line, " &"), "ots-ota ")
		if !ok {
			t.Fatalf("not an ots-ota command: %q", line)
		}
		cmd := exec.Command(bin, append(strings.Fields(args), "--fast", "--duration", "4s")...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, &outs[i], &outs[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cmd.Run()
		}()
	}
	wg.Wait()
	for i, line := range demoSimLines {
		out := outs[i].String()
		if errs[i] != nil || !strings.Contains(out, "advertised by mDNS on lo") {
			t.Errorf("%s: %v\n%s", line, errs[i], out)
		}
		if strings.Contains(out, "renamed") {
			t.Errorf("%s renamed a device:\n%s", line, out)
		}
	}
}
