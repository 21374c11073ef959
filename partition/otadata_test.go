package partition

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math"
	"testing"
)

func TestOTASeqCRC(t *testing.T) {
	// Vectors from research/esp-image.md §4.3 (checked there in Python and Go).
	for seq, want := range map[uint32]uint32{1: 0x4743989A, 2: 0x55F63774, 3: 0xED4A5011, 4: 0x709D68A8, 0x10: 0xAFE6A860} {
		if got := OTASeqCRC(seq); got != want {
			t.Errorf("OTASeqCRC(%d) = 0x%08X, want 0x%08X", seq, got, want)
		}
	}
	// Not the zlib CRC of the same bytes.
	if z := crc32.ChecksumIEEE([]byte{1, 0, 0, 0}); z != 0x99F8B879 || z == OTASeqCRC(1) {
		t.Errorf("zlib CRC of seq 1 = 0x%08X", z)
	}
}

func TestOTASelectEntryCodec(t *testing.T) {
	e := NewOTASelectEntry(3, StatePendingVerify)
	b := e.Bytes()
	want := []byte{3, 0, 0, 0}
	want = append(want, bytes.Repeat([]byte{0xFF}, 20)...)
	want = binary.LittleEndian.AppendUint32(want, 1)
	want = binary.LittleEndian.AppendUint32(want, 0xED4A5011)
	if !bytes.Equal(b, want) {
		t.Fatalf("Bytes() = % x\nwant      % x", b, want)
	}
	back, err := ParseOTASelectEntry(b)
	if err != nil || back != e {
		t.Fatalf("ParseOTASelectEntry = %+v, %v", back, err)
	}
	if _, err := ParseOTASelectEntry(b[:31]); err == nil {
		t.Error("short entry parsed")
	}
	erased, _ := ParseOTASelectEntry(bytes.Repeat([]byte{0xFF}, 32))
	if erased != ErasedOTASelectEntry() {
		t.Errorf("erased entry = %+v", erased)
	}
}

func TestOTASelectEntryValid(t *testing.T) {
	withCRC := func(seq uint32, st OTAState, crc uint32) OTASelectEntry {
		e := NewOTASelectEntry(seq, st)
		e.CRC = crc
		return e
	}
	tests := []struct {
		name           string
		e              OTASelectEntry
		invalid, valid bool
	}{
		{"erased", ErasedOTASelectEntry(), true, false},
		{"seq 1 undefined", NewOTASelectEntry(1, StateUndefined), false, true},
		{"new", NewOTASelectEntry(2, StateNew), false, true},
		{"pending_verify", NewOTASelectEntry(2, StatePendingVerify), false, true},
		{"valid", NewOTASelectEntry(2, StateValid), false, true},
		{"invalid state", NewOTASelectEntry(2, StateInvalid), true, false},
		{"aborted", NewOTASelectEntry(2, StateAborted), true, false},
		{"bad crc", withCRC(2, StateValid, 0x4743989A), false, false},
		{"zlib crc", withCRC(1, StateValid, 0x99F8B879), false, false},
		{"seq 0xFFFFFFFF with its crc", NewOTASelectEntry(math.MaxUint32, StateValid), true, false},
	}
	for _, tc := range tests {
		if got := tc.e.Invalid(); got != tc.invalid {
			t.Errorf("%s: Invalid() = %v", tc.name, got)
		}
		if got := tc.e.Valid(); got != tc.valid {
			t.Errorf("%s: Valid() = %v", tc.name, got)
		}
	}
}

func TestOTADataActiveAndBootSlot(t *testing.T) {
	n := func(seq uint32) OTASelectEntry { return NewOTASelectEntry(seq, StateValid) }
	bad := NewOTASelectEntry(9, StateValid)
	bad.CRC ^= 1
	tests := []struct {
		name   string
		d      OTAData
		active int
		slot2  int // boot slot with 2 OTA slots
		slot3  int // with 3
	}{
		{"erased", ErasedOTAData(), -1, -1, -1},
		{"only sector 0", OTAData{n(1), ErasedOTASelectEntry()}, 0, 0, 0},
		{"only sector 1", OTAData{ErasedOTASelectEntry(), n(2)}, 1, 1, 1},
		{"both, 1 larger", OTAData{n(3), n(4)}, 1, 1, 0},
		{"both, 0 larger", OTAData{n(5), n(4)}, 0, 0, 1},
		{"tie goes to sector 0", OTAData{n(7), NewOTASelectEntry(7, StateNew)}, 0, 0, 0},
		{"larger one has bad CRC", OTAData{n(1), bad}, 0, 0, 0},
		{"larger one aborted", OTAData{n(1), NewOTASelectEntry(2, StateAborted)}, 0, 0, 0},
		{"both bad", OTAData{bad, NewOTASelectEntry(2, StateInvalid)}, -1, -1, -1},
		{"seq 0 wraps like uint32", OTAData{n(0), ErasedOTASelectEntry()}, 0, 1, 0},
	}
	for _, tc := range tests {
		a, ok := tc.d.Active()
		if a != tc.active || ok != (tc.active >= 0) {
			t.Errorf("%s: Active() = %d, %v; want %d", tc.name, a, ok, tc.active)
		}
		for slots, want := range map[int]int{2: tc.slot2, 3: tc.slot3} {
			s, ok := tc.d.BootSlot(slots)
			if s != want || ok != (want >= 0) {
				t.Errorf("%s: BootSlot(%d) = %d, %v; want %d", tc.name, slots, s, ok, want)
			}
		}
	}
	if _, ok := (OTAData{n(1), n(2)}).BootSlot(0); ok {
		t.Error("BootSlot(0) is ok")
	}
}

func TestOTADataCodec(t *testing.T) {
	d := OTAData{NewOTASelectEntry(1, StateValid), NewOTASelectEntry(2, StatePendingVerify)}
	b := d.Bytes()
	if len(b) != OTADataSize {
		t.Fatalf("%d bytes", len(b))
	}
	if b[0x1000] != 2 || b[0x20] != 0xFF || b[0x1FFF] != 0xFF {
		t.Fatal("layout wrong")
	}
	back, err := ParseOTAData(b)
	if err != nil || back != d {
		t.Fatalf("ParseOTAData = %+v, %v", back, err)
	}
	if _, err := ParseOTAData(b[:0x1010]); err == nil {
		t.Error("short otadata parsed")
	}
	erased, err := ParseOTAData(bytes.Repeat([]byte{0xFF}, OTADataSize))
	if err != nil || erased != ErasedOTAData() {
		t.Errorf("erased: %+v, %v", erased, err)
	}
	if !bytes.Equal(ErasedOTAData().Bytes(), bytes.Repeat([]byte{0xFF}, OTADataSize)) {
		t.Error("ErasedOTAData().Bytes() is not all 0xFF")
	}
}

func TestSetBootSlot(t *testing.T) {
	d := ErasedOTAData()
	steps := []struct {
		slot, slots int
		sector      int
		seq         uint32
	}{
		{1, 2, 0, 2}, // first time: seq = slot+1, sector 0
		{0, 2, 1, 3}, // other sector, next seq selecting slot 0
		{1, 2, 0, 4},
		{1, 2, 0, 4}, // already selected: same entry, only state
		{2, 3, 1, 6}, // seq 4 → slot 0 of 3; slot 2 needs 3+3i ≥ 4 → 6
		{0, 3, 0, 7},
		{0, 3, 0, 7},
		{2, 3, 1, 9},
	}
	for i, s := range steps {
		if err := d.SetBootSlot(s.slot, s.slots, StateNew); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		a, ok := d.Active()
		if !ok || a != s.sector || d[a].Seq != s.seq || d[a].State != StateNew || !d[a].Valid() {
			t.Fatalf("step %d: active %d %+v; want sector %d seq %d", i, a, d[a], s.sector, s.seq)
		}
		if got, _ := d.BootSlot(s.slots); got != s.slot {
			t.Fatalf("step %d: BootSlot = %d, want %d", i, got, s.slot)
		}
	}
	for _, bad := range [][2]int{{2, 2}, {-1, 2}, {0, 0}, {0, 17}} {
		if err := d.SetBootSlot(bad[0], bad[1], StateNew); err == nil {
			t.Errorf("SetBootSlot(%d, %d): no error", bad[0], bad[1])
		}
	}
	huge := OTAData{NewOTASelectEntry(math.MaxUint32-1, StateValid), ErasedOTASelectEntry()}
	if err := huge.SetBootSlot(0, 2, StateNew); err == nil {
		t.Error("sequence overflow not reported")
	}
	// The label read from flash is kept, as IDF's rewrite_ota_seq does.
	l := OTAData{NewOTASelectEntry(1, StateValid), NewOTASelectEntry(0, StateValid)}
	l[1].Label[0] = 'x'
	l[1].Seq = math.MaxUint32
	if err := l.SetBootSlot(1, 2, StateUndefined); err != nil || l[1].Label[0] != 'x' || l[1].Seq != 2 {
		t.Errorf("label not kept: %+v, %v", l[1], err)
	}
}

// TestRollbackFlow walks the OTS device story (device-contract.md §3): an
// update is written, boots pending_verify, and either gets marked valid or
// is rolled back when the device reboots before that.
func TestRollbackFlow(t *testing.T) {
	const slots = 2
	d := ErasedOTAData()
	if got := d.SelectBoot(slots, true, true); got != BootFactory {
		t.Fatalf("fresh device boots %d, want factory", got)
	}
	if got := (&OTAData{}).SelectBoot(slots, false, true); got != BootFactory {
		// seq 0 with crc 0 is "not invalid" but has a wrong CRC: IDF falls back.
		t.Fatalf("garbage otadata boots %d", got)
	}
	if got := ErasedOTAData(); got.SelectBoot(slots, false, true) != 0 {
		t.Fatal("no factory: boots ota_0")
	}
	if got := ErasedOTAData(); got.SelectBoot(0, true, true) != BootFactory {
		t.Fatal("no OTA slots: boots factory")
	}

	// Update to ota_0 from factory, boot it, mark it valid.
	if err := d.SetBootSlot(0, slots, StateNew); err != nil {
		t.Fatal(err)
	}
	if got := d.SelectBoot(slots, true, true); got != 0 {
		t.Fatalf("boots %d, want 0", got)
	}
	if a, _ := d.Active(); d[a].State != StatePendingVerify {
		t.Fatalf("state %v, want pending_verify", d[a].State)
	}
	if err := d.SetState(StateValid); err != nil {
		t.Fatal(err)
	}
	if got := d.SelectBoot(slots, true, true); got != 0 {
		t.Fatalf("valid app: boots %d", got)
	}

	// Update to ota_1, which crashes before being marked valid.
	if err := d.SetBootSlot(1, slots, StateNew); err != nil {
		t.Fatal(err)
	}
	if got := d.SelectBoot(slots, true, true); got != 1 {
		t.Fatalf("new app: boots %d, want 1", got)
	}
	if got := d.SelectBoot(slots, true, true); got != 0 {
		t.Fatalf("after crash: boots %d, want 0 (rolled back)", got)
	}
	if d[1].State != StateAborted {
		t.Fatalf("crashed entry state %v, want aborted", d[1].State)
	}

	// Without rollback nothing changes states.
	n := OTAData{NewOTASelectEntry(1, StateNew), ErasedOTASelectEntry()}
	if got := n.SelectBoot(slots, true, false); got != 0 || n[0].State != StateNew {
		t.Fatalf("no rollback: %d %v", got, n[0].State)
	}
	e := ErasedOTAData()
	if err := e.SetState(StateValid); err == nil {
		t.Error("SetState on erased otadata: no error")
	}
}

func TestOTAStateNames(t *testing.T) {
	for s, name := range map[OTAState]string{StateNew: "new", StatePendingVerify: "pending_verify", StateValid: "valid",
		StateInvalid: "invalid", StateAborted: "aborted", StateUndefined: "undefined", 7: "0x7"} {
		if s.String() != name {
			t.Errorf("%d.String() = %q, want %q", uint32(s), s.String(), name)
		}
		back, err := ParseOTAState(name)
		if err != nil || back != s {
			t.Errorf("ParseOTAState(%q) = %v, %v", name, back, err)
		}
	}
	for in, want := range map[string]OTAState{"PENDING_VERIFY": StatePendingVerify, "ESP_OTA_IMG_VALID": StateValid, " aborted ": StateAborted, "2": StateValid, "0xffffffff": StateUndefined} {
		if got, err := ParseOTAState(in); err != nil || got != want {
			t.Errorf("ParseOTAState(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseOTAState("bogus"); err == nil {
		t.Error("bogus state parsed")
	}
	j, err := json.Marshal(struct{ State OTAState }{StatePendingVerify})
	if err != nil || string(j) != `{"State":"pending_verify"}` {
		t.Fatalf("json: %s, %v", j, err)
	}
	var v struct{ State OTAState }
	if err := json.Unmarshal([]byte(`{"State":"aborted"}`), &v); err != nil || v.State != StateAborted {
		t.Fatalf("json unmarshal: %v %v", v, err)
	}
	if err := json.Unmarshal([]byte(`{"State":"nope"}`), &v); err == nil {
		t.Fatal("json unmarshal of bad state: no error")
	}
}
