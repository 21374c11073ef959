package core

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

func fakeBlob(version string) *blob {
	return &blob{data: []byte{0xE9, byte(len(version))}, info: imgInfo{Version: version}}
}

func TestOtadataSequence(t *testing.T) {
	// esp_rewrite_ota_data: factory → ota_0 (seq 1, sector 0), → ota_1
	// (seq 2, sector 1), → ota_0 (seq 3, sector 0), → ota_1 (seq 4, sector 1).
	f := newFlash(1<<20, true, fakeBlob("f"))
	f.boot()
	steps := []struct {
		slot   int
		seq    uint32
		sector int
	}{{slotOTA0, 1, 0}, {slotOTA1, 2, 1}, {slotOTA0, 3, 0}, {slotOTA1, 4, 1}}
	for i, s := range steps {
		if got := f.nextUpdateSlot(); got != s.slot {
			t.Fatalf("step %d: next slot %s, want %s", i, slotLabels[got], slotLabels[s.slot])
		}
		f.setBoot(s.slot, fakeBlob("v"))
		e := f.otadata[s.sector]
		if e.seq != s.seq || e.state != StateNew {
			t.Fatalf("step %d: sector %d = %+v, want seq %d new", i, s.sector, e, s.seq)
		}
		if f.bootSlot() != s.slot {
			t.Fatalf("step %d: boot slot %s", i, slotLabels[f.bootSlot()])
		}
		r := f.boot()
		if r.slot != s.slot || f.runningState() != StatePendingVerify || r.aborted != -1 {
			t.Fatalf("step %d: booted %+v state %s", i, r, f.runningState())
		}
		if !f.beginBlocked() {
			t.Fatalf("step %d: begin allowed while pending_verify", i)
		}
		if !f.markValid() || f.runningState() != StateValid || f.markValid() {
			t.Fatalf("step %d: mark valid", i)
		}
	}
}

func TestBootloaderRollback(t *testing.T) {
	cases := []struct {
		name      string
		run       func(t *testing.T, f *flash)
		wantSlot  int
		wantState AppState // of the slot that failed
		failed    int
	}{
		{"reset while pending from factory", func(t *testing.T, f *flash) {
			f.setBoot(slotOTA0, fakeBlob("1"))
			f.boot() // pending
		}, slotFactory, StateAborted, slotOTA0},
		{"reset while pending from ota_0", func(t *testing.T, f *flash) {
			f.setBoot(slotOTA0, fakeBlob("1"))
			f.boot()
			f.markValid()
			f.setBoot(slotOTA1, fakeBlob("2"))
			f.boot()
		}, slotOTA0, StateAborted, slotOTA1},
		{"marked invalid", func(t *testing.T, f *flash) {
			f.setBoot(slotOTA0, fakeBlob("1"))
			f.boot()
			if !f.markInvalid() {
				t.Fatal("rollback should be possible to factory")
			}
		}, slotFactory, StateInvalid, slotOTA0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFlash(1<<20, true, fakeBlob("f"))
			f.boot()
			c.run(t, f)
			r := f.boot()
			if r.slot != c.wantSlot {
				t.Fatalf("booted %s, want %s", slotLabels[r.slot], slotLabels[c.wantSlot])
			}
			if st, _ := f.stateOf(c.failed); st != c.wantState {
				t.Errorf("%s is %s, want %s", slotLabels[c.failed], st, c.wantState)
			}
		})
	}
}

func TestMarkInvalidImpossible(t *testing.T) {
	// No factory image and nothing else valid: the app keeps running.
	f := newFlash(1<<20, true, nil)
	f.setBoot(slotOTA0, fakeBlob("1"))
	f.boot()
	if f.markInvalid() {
		t.Error("marked invalid with nothing to roll back to")
	}
	if f.runningState() != StatePendingVerify {
		t.Errorf("state %s", f.runningState())
	}
}

func TestBootFallbackAndNoRollback(t *testing.T) {
	f := newFlash(1<<20, true, fakeBlob("f"))
	f.setBoot(slotOTA0, fakeBlob("1"))
	f.erase(slotOTA0) // selected slot holds no image
	r := f.boot()
	if r.slot != slotFactory || !r.fallback {
		t.Errorf("fallback: %+v", r)
	}
	g := newFlash(1<<20, false, fakeBlob("f")) // ESP8266-like: no rollback
	g.setBoot(slotOTA0, fakeBlob("1"))
	if g.otadata[0].state != StateUndefined {
		t.Errorf("without rollback the new entry is %s", g.otadata[0].state)
	}
	g.boot()
	r = g.boot() // reset again: no pending state, no abort
	if r.slot != slotOTA0 || r.aborted != -1 || g.beginBlocked() || g.markInvalid() {
		t.Errorf("no-rollback boot: %+v", r)
	}
	var empty flash
	empty.otadata = [2]otaEntry{{seq: seqErased}, {seq: seqErased}}
	if r := empty.boot(); !r.noImage {
		t.Errorf("empty flash booted %+v", r)
	}
}

func TestSlotWriterDedup(t *testing.T) {
	s := NewStore()
	base := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	base[0] = 0xE9
	stored := s.intern(bytes.Clone(base))

	// Same bytes: follows the stored image and ends with it.
	w := newSlotWriter(s, 1<<20)
	for off := 0; off < len(base); off += 1000 {
		if err := w.write(base[off:min(off+1000, len(base))]); err != nil {
			t.Fatal(err)
		}
	}
	if w.buf != nil || w.finish() != stored {
		t.Error("an identical upload was copied")
	}
	// Diverging at 40000: private copy with the right content.
	other := bytes.Clone(base)
	other[40000] ^= 1
	w = newSlotWriter(s, 1<<20)
	for off := 0; off < len(other); off += 1024 {
		w.write(other[off:min(off+1024, len(other))])
	}
	b := w.finish()
	if !bytes.Equal(b.data, other) || b == stored {
		t.Error("diverging upload stored wrongly")
	}
	if s.intern(bytes.Clone(other)) != b {
		t.Error("interning the same bytes again gave another blob")
	}
	// Longer than the stored image: diverges at its end.
	longer := append(bytes.Clone(base), 1, 2, 3)
	w = newSlotWriter(s, 1<<20)
	w.write(longer[:len(base)-5])
	w.write(longer[len(base)-5:])
	if !bytes.Equal(w.finish().data, longer) {
		t.Error("longer upload")
	}
	// A prefix of a stored image shares its bytes (several stored images
	// start with it; any of them will do).
	w = newSlotWriter(s, 1<<20)
	w.write(base[:1000])
	if w.buf != nil || !bytes.Equal(w.finish().data, base[:1000]) {
		t.Error("prefix not shared")
	}
	runtime.KeepAlive(stored)
	// The slot limit.
	w = newSlotWriter(s, 100)
	if err := w.write(make([]byte, 101)); err != errSlotFull {
		t.Errorf("over the slot: %v", err)
	}
	if first, ok := newSlotWriter(s, 10).first(); ok || first != 0 {
		t.Error("first byte of nothing")
	}
}

func TestStoreForgetsUnusedImages(t *testing.T) {
	s := NewStore()
	func() {
		b := s.intern(bytes.Repeat([]byte{0xE9}, 1<<16))
		_ = b
	}()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		runtime.GC()
		if s.match([]byte{0xE9}) == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("an image nobody holds is still stored")
}

func TestImageHelper(t *testing.T) {
	a, err := Image("esp32c3", "proj", "2.0.0", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Image("esp32c3", "proj", "2.0.0", 0)
	if !bytes.Equal(a, b) || a[0] != 0xE9 {
		t.Error("not deterministic or not an image")
	}
	if in := describe(a); in.Version != "2.0.0" || in.Project != "proj" || in.Chip != "esp32c3" {
		t.Errorf("%+v", in)
	}
	// esp8266: an esp8266/Arduino sketch image (elf2bin's layout).
	e, err := Image("esp8266", "p", "1", 0)
	if img, perr := image.Parse(e); err != nil || perr != nil || img.Layout != image.LayoutArduino {
		t.Errorf("esp8266 image: %v %v", err, perr)
	}
}
