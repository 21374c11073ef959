package cmd

import (
	"log/slog"
	"testing"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/wled"
)

// Every transport push builds sits under its own protocol, the Arduino web
// uploaders' included (the detection table decides when they are used),
// and reports its family's traits.
func TestPushTransportsKeyedByProtocol(t *testing.T) {
	tr, closeAll, err := pushTransports(&pushOptions{HostIP: "127.0.0.1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	for _, p := range []upload.Protocol{upload.HTTP, upload.Espota, upload.Form, upload.ElegantOTA, upload.WLED, upload.Tasmota, upload.ESPHome} {
		x, ok := tr[p]
		if !ok || x.Protocol() != p {
			t.Errorf("%s: %T", p, x)
			continue
		}
		if _, ok := x.(upload.WithTraits); !ok {
			t.Errorf("%s: %T reports no traits", p, x)
		}
	}
	if len(tr) != 7 {
		t.Errorf("%d transports", len(tr))
	}
}

// --force reaches WLED's transport as SkipValidation (skipValidation=1,
// no release check), and only with --force.
func TestPushForceSkipsWLEDValidation(t *testing.T) {
	for _, force := range []bool{false, true} {
		tr, closeAll, err := pushTransports(&pushOptions{HostIP: "127.0.0.1", Force: force}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		closeAll()
		w, ok := tr[upload.WLED].(*wled.Transport)
		if !ok || w.SkipValidation != force {
			t.Errorf("--force %v: %#v", force, tr[upload.WLED])
		}
	}
}
