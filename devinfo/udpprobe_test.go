package devinfo

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
)

// TestQueryNothingListens: TCP refused and UDP port unreachable, with no
// mDNS record, is nothing at that address (issue 15 Build 2), the rule
// push's probe uses; info says so in one line.
func TestQueryNothingListens(t *testing.T) {
	port := testnet.DeadPort(t)
	f, err := Query(context.Background(), Target{Host: "127.0.0.1", Port: port, WebPort: -1}, Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !f.NothingListens || f.Reachable || f.Unconfirmed || f.Protocol.Known() {
		t.Errorf("nothing_listens %v reachable %v unconfirmed %v protocol %+v (notes %q)", f.NothingListens, f.Reachable, f.Unconfirmed, f.Protocol, f.Notes)
	}
	if len(f.Notes) == 0 || !strings.HasPrefix(f.Notes[0], "nothing listens at 127.0.0.1:"+strconv.Itoa(port)+": ") ||
		!strings.Contains(f.VersionNote, "nothing listens") {
		t.Errorf("notes %q, version note %q", f.Notes, f.VersionNote)
	}
}
