package espota

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestArduinoPartitionTable: arduino-esp32's default.csv: app0 and app1 of
// 1.25 MiB, no factory slot, a spiffs partition that espota -s writes.
func TestArduinoPartitionTable(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(ArduinoSketch)
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	st := d.State()
	if st.SlotSize != 0x140000 || st.Running != "app0" || len(st.Slots) != 2 || st.Slots[0].Label != "app0" || st.Slots[1].Label != "app1" {
		t.Fatalf("layout: slot size %#x, running %s, slots %+v", st.SlotSize, st.Running, st.Slots)
	}
	if st.Filesystem == nil || !st.Filesystem.Empty {
		t.Fatalf("filesystem: %+v", st.Filesystem)
	}
	// Too large for app1: Update.begin fails after the UDP OK ("Bad Size
	// Given" on the serial log), and the device never connects back.
	big := simtest.ImageOf(t, "esp32s3", "1.0.1", 0x140000+4096)
	if res, err := simtest.EspotaPush(t, d.OTAAddr(), big, ""); err != simtest.ErrNoConnectBack || res.UDPReply != "OK" {
		t.Errorf("image over the slot: %+v %v", res, err)
	}
	// espota -s: command 100 goes to the spiffs partition, ends with OK,
	// and the device reboots on the same app.
	fs := make([]byte, 300<<10)
	for i := range fs {
		fs[i] = byte(i * 13)
	}
	if res, err := simtest.EspotaPushCmd(t, d.OTAAddr(), 100, fs, ""); err != nil || res.Final != "OK" {
		t.Fatalf("spiffs: %+v %v", res, err)
	}
	st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Filesystem.Empty || st.Filesystem.Size != len(fs) || st.Running != "app0" || st.Version != "1.0.0" || !simtest.Slot(st, "app1").Empty {
		t.Errorf("after espota -s: %+v, running %s %s", st.Filesystem, st.Running, st.Version)
	}
	// Bigger than the 0x160000 partition: no connect-back either.
	if res, err := simtest.EspotaPushCmd(t, d.OTAAddr(), 100, make([]byte, 0x160000+1), ""); err != simtest.ErrNoConnectBack || res.UDPReply != "OK" {
		t.Errorf("filesystem over the partition: %+v %v", res, err)
	}
}

// TestArduinoWrongMagicCounts: espota.py's 1024-byte chunks are each
// acknowledged while they fill the Updater's 4096-byte buffer; the chunk
// that overflows it is answered "Decryption error" instead of a count.
func TestArduinoWrongMagicCounts(t *testing.T) {
	d := simtest.Start(t, simtest.Config(ArduinoSketch))
	img := append([]byte{0x00}, simtest.Image(t, "1.0.1")[1:]...)
	res, err := simtest.EspotaPush(t, d.OTAAddr(), img, "")
	if err != nil || res.Final != "Decryption error\r\n" || res.Sent != 5*1024 || res.Acked != 4096 {
		t.Fatalf("got %+v %v; want 4096 bytes acknowledged, then Decryption error after the fifth chunk", res, err)
	}
	// Smaller than the buffer: the last write completes the image and fails.
	small := append([]byte{0x00}, make([]byte, 2999)...)
	res, err = simtest.EspotaPush(t, d.OTAAddr(), small, "")
	if err != nil || res.Final != "Decryption error\r\n" || res.Acked != 2048 {
		t.Fatalf("small image: %+v %v", res, err)
	}
}

// TestArduinoValidity: initArduino() marks a new image valid before
// setup(), so a crashing image boot-loops on the new version; a sketch
// that overrides verifyRollbackLater() rolls back as ESP-IDF does.
func TestArduinoValidity(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		cfg := simtest.Config(ArduinoSketch)
		cfg.Behaviours = map[string]core.Behaviour{"1.0.1": core.CrashOnBoot}
		d := simtest.Start(t, cfg)
		if res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), ""); err != nil || res.Final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Phase == core.PhaseDown })
		if err != nil {
			t.Fatal(err)
		}
		if st.DownReason != "boot_loop" || st.Version != "1.0.1" || st.AppState != core.StateValid || st.Rollbacks != 0 {
			t.Errorf("crashing image: %s, %s %s, %d rollbacks", st.DownReason, st.Version, st.AppState, st.Rollbacks)
		}
		if err := d.SetBehaviour("1.0.2", core.Unstable); err == nil {
			t.Error("unstable accepted on an arduino device without rollback-later")
		}
		bad := simtest.Config(ArduinoSketch)
		bad.Behaviours = map[string]core.Behaviour{"1.0.1": core.Unconfirmed}
		if _, err := core.Start(t.Context(), bad); err == nil {
			t.Error("unconfirmed accepted on an arduino device without rollback-later")
		}
	})
	t.Run("rollback later", func(t *testing.T) {
		cfg := simtest.Config(ArduinoSketch)
		cfg.RollbackLater = true
		cfg.Behaviours = map[string]core.Behaviour{"1.0.1": core.CrashOnBoot, "1.0.2": core.Unstable}
		d := simtest.Start(t, cfg)
		if res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), ""); err != nil || res.Final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.Rollbacks == 1 })
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != "1.0.0" || st.Running != "app0" || simtest.Slot(st, "app1").State != core.StateAborted {
			t.Errorf("after the crash: %s on %s, app1 %s", st.Version, st.Running, simtest.Slot(st, "app1").State)
		}
	})
}

func TestMD5AuthByCore(t *testing.T) {
	for coreVer, md5 := range map[string]bool{"3.3.0": true, "2.0.17": true, "3.3.1": false, "v3.3.11": false, "3": true, "4.0.0": false} {
		c, err := core.Resolve(core.Config{Personality: ArduinoSketch, Core: coreVer})
		if got := ArduinoFirmware.(otaFirmware).md5Auth(&c); err != nil || got != md5 {
			t.Errorf("core %s: md5 %v %v", coreVer, got, err)
		}
	}
}
