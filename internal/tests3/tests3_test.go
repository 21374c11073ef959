package tests3_test

import (
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/internal/tests3"
)

func TestStart(t *testing.T) {
	t.Parallel()
	srv := tests3.Start(t)
	u, err := url.Parse(srv.Endpoint())
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "" {
		t.Fatalf("Endpoint() = %q, want http://127.0.0.1:PORT", srv.Endpoint())
	}
	ok, err := srv.Client(t).BucketExists(t.Context(), srv.Bucket())
	if err != nil || !ok {
		t.Fatalf("bucket %s: exists %v, %v", srv.Bucket(), ok, err)
	}
	if srv.SecretKey().IsZero() || srv.AccessKey() == "" {
		t.Fatal("no keys")
	}
	if runtime.GOOS == "linux" {
		// The secret is given in the environment, not on the command
		// line every user of the machine can read.
		procs, _ := os.ReadDir("/proc")
		seen := 0
		for _, p := range procs {
			b, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
			if err != nil || !strings.Contains(string(b), "versitygw") {
				continue
			}
			seen++
			if strings.Contains(string(b), srv.SecretKey().Reveal()) {
				t.Errorf("the secret key is on versitygw's command line")
			}
		}
		if seen == 0 {
			t.Error("no versitygw process found")
		}
	}
	srv.Stop()
	if c, err := net.Dial("tcp", u.Host); err == nil {
		c.Close()
		t.Errorf("%s still takes connections after Stop", u.Host)
	}
}
