package sim

import (
	"context"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestResolveConfig(t *testing.T) {
	bad := []Config{
		{Personality: "router"},
		{Chip: "esp99"},
		{Personality: ESP8266, Chip: "esp32"},
		{SlotSize: 100},
		{OTAPort: 70000},
		{Core: "3.x", Personality: Arduino},
		{Behaviours: map[string]Behaviour{"1": "explode"}},
		{Timing: &Timing{RebootDelayMin: time.Second}},
		{Timing: &Timing{BootTime: -1}},
		{HeaderLimit: 10},
	}
	for _, c := range bad {
		if _, err := core.Resolve(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	s, err := core.Resolve(Config{})
	if err != nil || s.Personality != Seed || s.Chip != "esp32s3" || s.SlotSize != 2<<20 || *s.Timing != DefaultTiming() || s.Instance != "OTS Firmware Main" {
		t.Errorf("defaults: %+v %v", s, err)
	}
	// Which arduino cores answer MD5: sim/espota's TestMD5AuthByCore.
	if p, err := ParsePersonality(" OTS "); err != nil || p != OTS {
		t.Errorf("%v %v", p, err)
	}
	if r, err := ParseRate("100KiB/s"); err != nil || r != 100<<10 {
		t.Errorf("%v %v", r, err)
	}
}

func TestFactoryImageOption(t *testing.T) {
	img, err := Image("esp32", "custom", "0.9.0", 0)
	if err != nil {
		t.Fatal(err)
	}
	d := simtest.Start(t, Config{Chip: "esp32", Factory: img, Timing: simtest.Timing()})
	if st := d.State(); st.Version != "0.9.0" || st.Project != "custom" || st.Chip != "esp32" {
		t.Errorf("%+v", st)
	}
	if _, err := Start(context.Background(), Config{Chip: "esp32s3", Factory: img}); err == nil {
		t.Error("a factory image for another chip was accepted")
	}
	if _, err := Start(context.Background(), Config{Personality: ESP8266, Factory: []byte{1, 2, 3}}); err == nil {
		t.Error("an ESP8266 factory image without the magic byte was accepted")
	}
}
