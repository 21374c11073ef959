package partition

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sharedFile returns the path of a file in the read-only reference folder
// next to the repository (../shared from the repo root) or skips the test.
func sharedFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference file %s not available (%v); it lives in ../shared next to the repository", rel, err)
	}
	return p
}

// twoOTACSV is ESP-IDF's built-in "two_ota" table (partitions_two_ota.csv).
const twoOTACSV = `# Name,   Type, SubType, Offset,   Size, Flags
# Note: if you have increased the bootloader size, make sure to update the offsets to avoid overlap
nvs,      data, nvs,     ,        0x4000,
otadata,  data, ota,     ,        0x2000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
ota_0,    app,  ota_0,   ,        1M,
ota_1,    app,  ota_1,   ,        1M,
`

var twoOTATable = Table{
	{Label: "nvs", Type: TypeData, SubType: SubTypeDataNVS, Offset: 0x9000, Size: 0x4000},
	{Label: "otadata", Type: TypeData, SubType: SubTypeDataOTA, Offset: 0xD000, Size: 0x2000},
	{Label: "phy_init", Type: TypeData, SubType: SubTypeDataPhy, Offset: 0xF000, Size: 0x1000},
	{Label: "factory", Type: TypeApp, SubType: SubTypeAppFactory, Offset: 0x10000, Size: 0x100000},
	{Label: "ota_0", Type: TypeApp, SubType: 0x10, Offset: 0x110000, Size: 0x100000},
	{Label: "ota_1", Type: TypeApp, SubType: 0x11, Offset: 0x210000, Size: 0x100000},
}

// otsCSV is the OTS device layout (device-contract.md §3): factory, ota_0
// and ota_1, 2 MB each at 0x10000, 0x210000 and 0x410000.
const otsCSV = `# OTS firmware, 8 MB flash
# Name,    Type, SubType,  Offset,   Size,  Flags
nvs,       data, nvs,      0x9000,   0x4000,
otadata,   data, ota,      0xd000,   0x2000,
phy_init,  data, phy,      0xf000,   0x1000,
factory,   app,  factory,  0x10000,  2M,
ota_0,     app,  ota_0,    0x210000, 2M,
ota_1,     app,  ota_1,    0x410000, 2M,
spiffs,    data, spiffs,   ,         0x1F0000,
`

func TestOTSLayout(t *testing.T) {
	tab, err := ParseCSV(strings.NewReader(otsCSV))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		label  string
		offset uint32
	}{{"factory", 0x10000}, {"ota_0", 0x210000}, {"ota_1", 0x410000}, {"spiffs", 0x610000}} {
		e, ok := tab.Find(w.label)
		if !ok {
			t.Fatalf("%s missing", w.label)
		}
		if e.Offset != w.offset {
			t.Errorf("%s offset 0x%x, want 0x%x", w.label, e.Offset, w.offset)
		}
	}
	n, err := tab.OTASlotSize()
	if err != nil || n != 2<<20 {
		t.Fatalf("OTASlotSize = %d, %v; want 2 MiB", n, err)
	}
	if got := len(tab.OTASlots()); got != 2 {
		t.Errorf("OTASlots: %d, want 2", got)
	}
	if tab[len(tab)-1].End() != 0x800000 {
		t.Errorf("table ends at 0x%x, want 0x800000 (8 MB)", tab[len(tab)-1].End())
	}
}

func TestTwoOTA(t *testing.T) {
	tab, err := ParseCSV(strings.NewReader(twoOTACSV))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tab, twoOTATable) {
		t.Fatalf("got\n%v\nwant\n%v", tab, twoOTATable)
	}
	n, err := tab.OTASlotSize()
	if err != nil || n != 1<<20 {
		t.Fatalf("OTASlotSize = %d, %v; want 1 MiB", n, err)
	}
}

func TestOTASlotSizesDiffer(t *testing.T) {
	app := func(label string, sub uint8, size uint32) Entry {
		return Entry{Label: label, Type: TypeApp, SubType: sub, Size: size}
	}
	if got := (Table{app("a", 0x10, 2<<20), app("b", 0x11, 2<<20)}).OTASlotSizesDiffer(); got != "" {
		t.Errorf("equal slots: %q, want empty", got)
	}
	got := Table{app("first", 0x10, 2<<20), app("second", 0x11, 1<<20)}.OTASlotSizesDiffer()
	for _, want := range []string{`ota_0 "first" 2M (0x200000)`, `ota_1 "second" 1M (0x100000)`} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}

func TestOTASlotSize(t *testing.T) {
	app := func(label string, sub uint8, off, size uint32) Entry {
		return Entry{Label: label, Type: TypeApp, SubType: sub, Offset: off, Size: size}
	}
	tests := []struct {
		name    string
		t       Table
		want    int64
		wantIs  error
		wantSub []string
	}{
		{name: "two equal", t: Table{app("a", 0x10, 0x10000, 0x1F0000), app("b", 0x11, 0x200000, 0x1F0000)}, want: 0x1F0000},
		{name: "single ota slot", t: Table{app("factory", 0, 0x10000, 1<<20), app("ota_0", 0x10, 0x110000, 1<<20)}, want: 1 << 20},
		{name: "ota_15 only", t: Table{app("x", 0x1F, 0x10000, 0x30000)}, want: 0x30000},
		{name: "test app is not a slot", t: Table{app("t", 0x20, 0x10000, 0x30000)}, wantIs: ErrNoOTASlots, wantSub: []string{"cannot take OTA updates"}},
		{name: "factory only", t: Table{app("factory", 0, 0x10000, 1<<20)}, wantIs: ErrNoOTASlots,
			wantSub: []string{"no OTA app slots", `"factory"`, "factory-only table cannot take OTA updates"}},
		{name: "empty", t: nil, wantIs: ErrNoOTASlots},
		{name: "data ota is not an app slot", t: Table{{Label: "otadata", Type: TypeData, SubType: 0x10, Offset: 0x9000, Size: 0x2000}}, wantIs: ErrNoOTASlots},
		{name: "different sizes: the smallest", t: Table{app("first", 0x10, 0x10000, 2<<20), app("second", 0x11, 0x210000, 1<<20), app("third", 0x12, 0x310000, 2<<20)},
			want: 1 << 20},
		{name: "zero size", t: Table{app("a", 0x10, 0x10000, 0)}, wantSub: []string{"size 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.t.OTASlotSize()
			if tc.wantIs == nil && tc.wantSub == nil {
				if err != nil || got != tc.want {
					t.Fatalf("got %d, %v; want %d", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %d, want an error", got)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			for _, s := range tc.wantSub {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestOTASlotsOrder(t *testing.T) {
	tab := Table{
		{Label: "b", Type: TypeApp, SubType: 0x11},
		{Label: "f", Type: TypeApp, SubType: 0x00},
		{Label: "a", Type: TypeApp, SubType: 0x10},
	}
	s := tab.OTASlots()
	if len(s) != 2 || s[0].Label != "a" || s[1].Label != "b" {
		t.Fatalf("OTASlots = %v, want a then b (ordered by subtype)", s)
	}
	if n, ok := s[1].OTAIndex(); !ok || n != 1 {
		t.Errorf("OTAIndex = %d, %v", n, ok)
	}
	if _, ok := tab[1].OTAIndex(); ok {
		t.Error("factory has an OTA index")
	}
	if _, ok := tab.Find("nope"); ok {
		t.Error("Find found a missing label")
	}
	if e, ok := tab.FindType(TypeApp, SubTypeAppFactory); !ok || e.Label != "f" {
		t.Errorf("FindType = %v, %v", e, ok)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		typ, sub      uint8
		tname, stname string
	}{
		{TypeApp, 0x00, "app", "factory"},
		{TypeApp, 0x10, "app", "ota_0"},
		{TypeApp, 0x1F, "app", "ota_15"},
		{TypeApp, 0x20, "app", "test"},
		{TypeApp, 0x31, "app", "tee_1"},
		{TypeApp, 0x05, "app", "0x05"},
		{TypeData, 0x00, "data", "ota"},
		{TypeData, 0x06, "data", "undefined"},
		{TypeData, 0x83, "data", "littlefs"},
		{TypeData, 0x90, "data", "tee_ota"},
		{TypeBootloader, 0x02, "bootloader", "recovery"},
		{TypePartitionTable, 0x01, "partition_table", "ota"},
		{0x40, 0x01, "0x40", "0x01"},
	}
	for _, tc := range tests {
		if got := TypeName(tc.typ); got != tc.tname {
			t.Errorf("TypeName(0x%x) = %q, want %q", tc.typ, got, tc.tname)
		}
		if got := SubTypeName(tc.typ, tc.sub); got != tc.stname {
			t.Errorf("SubTypeName(0x%x, 0x%x) = %q, want %q", tc.typ, tc.sub, got, tc.stname)
		}
	}
	e := Entry{Label: "ota_0", Type: TypeApp, SubType: 0x10, Offset: 0x110000, Size: 0x100000, Flags: FlagEncrypted | FlagReadOnly | 0x80}
	if got, want := e.String(), `"ota_0" app/ota_0 @0x110000 1M (0x100000) encrypted:readonly:0x80`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !e.Encrypted() || !e.ReadOnly() || !e.IsOTAApp() {
		t.Error("flag/ota accessors wrong")
	}
}

func TestParseSniffs(t *testing.T) {
	bin, err := twoOTATable.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{"csv": []byte(twoOTACSV), "binary": bin} {
		got, err := Parse(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, twoOTATable) {
			t.Errorf("%s: got %v", name, got)
		}
	}
	if _, err := Parse([]byte{0xAA, 0x50, 1}); err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Errorf("short binary: %v", err)
	}
	if _, err := Parse(nil); err == nil {
		t.Error("empty input parsed")
	}
}
