package simtest

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// Curl runs the real curl binary, as a family's docs show it, and returns
// the body, the status code and curl's exit code (0 = fine). It skips the
// test where curl is not installed.
func Curl(t *testing.T, args ...string) (body, code string, exit int) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	args = append([]string{"-sS", "--max-time", "30", "-w", "\n%{http_code}"}, args...)
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("curl: %v", err)
		}
		exit = ee.ExitCode()
		t.Logf("curl %v: exit %d: %s", args, exit, errb.String())
	}
	s := out.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return s, "", exit
	}
	return s[:i], s[i+1:], exit
}
