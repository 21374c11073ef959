package partition

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// rawEntry builds one 32-byte partition entry by hand (not with the code
// under test).
func rawEntry(typ, sub uint8, off, size uint32, label string, flags uint32) []byte {
	b := []byte{0xAA, 0x50, typ, sub}
	b = binary.LittleEndian.AppendUint32(b, off)
	b = binary.LittleEndian.AppendUint32(b, size)
	l := make([]byte, 16)
	copy(l, label)
	b = append(b, l...)
	return binary.LittleEndian.AppendUint32(b, flags)
}

func md5Entry(prev []byte) []byte {
	s := md5.Sum(prev)
	return append(append([]byte{0xEB, 0xEB}, bytes.Repeat([]byte{0xFF}, 14)...), s[:]...)
}

var endMarker = bytes.Repeat([]byte{0xFF}, 32)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestRealPartitionTable(t *testing.T) {
	data, err := os.ReadFile(sharedFile(t, "testdata/esp-images/esf-esp32-partition-table.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 3072 {
		t.Fatalf("fixture is %d bytes, README says 3072", len(data))
	}
	want := Table{
		ent("nvs", TypeData, SubTypeDataNVS, 0x9000, 0x6000),
		ent("phy_init", TypeData, SubTypeDataPhy, 0xF000, 0x1000),
		ent("factory", TypeApp, SubTypeAppFactory, 0x10000, 0x100000),
	}
	got, err := ParseBinary(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	// Facts from the README: MD5 entry at 0x60, end marker at 0x80.
	if !bytes.Equal(data[0x60:0x62], []byte{0xEB, 0xEB}) || hex.EncodeToString(data[0x70:0x80]) != "f4ad4f4538564b5d7435b62c75b69524" {
		t.Fatalf("fixture MD5 entry is not as documented: % x", data[0x60:0x80])
	}
	if got2, err := Parse(data); err != nil || !reflect.DeepEqual(got2, want) {
		t.Errorf("Parse: %v", err)
	}
	// Our encoder produces gen_esp32part.py's bytes exactly.
	enc, err := got.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, data) {
		t.Errorf("MarshalBinary differs from the IDF-built table")
	}
	if err := got.Validate(DefaultOptions()); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// "singleapp": factory only, so no OTA.
	_, err = got.OTASlotSize()
	if !errors.Is(err, ErrNoOTASlots) || !strings.Contains(err.Error(), "factory") {
		t.Errorf("OTASlotSize error = %v", err)
	}
	// A corrupted byte in an entry is caught by the MD5.
	bad := bytes.Clone(data)
	bad[0x08] ^= 0x01
	if _, err := ParseBinary(bad); err == nil || !strings.Contains(err.Error(), "MD5 mismatch") {
		t.Errorf("corrupted table: %v", err)
	}
	// CSV form reads back to the same table.
	csv, err := got.FormatCSV()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCSV(strings.NewReader(csv))
	if err != nil || !reflect.DeepEqual(back, want) {
		t.Errorf("CSV round trip: %v\n%s", err, csv)
	}
}

func TestParseBinary(t *testing.T) {
	factory := rawEntry(0, 0, 0x10000, 0x100000, "factory", 0)
	ota0 := rawEntry(0, 0x10, 0x110000, 0x100000, "ota_0", 0)
	long := rawEntry(0x30, 0xEE, 0x100000, 0x200000, "0123456789abcdef", 0)
	flags := rawEntry(1, 2, 0x9000, 0x4000, "nvs", 0x80000003)
	padded := append(rawEntry(1, 0x81, 0x9000, 0x1000, "ab", 0)[:14:14], append([]byte{0, 'x', 'y'}, make([]byte, 11)...)...)
	padded = append(padded, 0, 0, 0, 0)

	tests := []struct {
		name string
		in   []byte
		want Table
	}{
		{"with MD5", cat(factory, ota0, md5Entry(cat(factory, ota0)), endMarker), Table{ent("factory", 0, 0, 0x10000, 0x100000), ent("ota_0", 0, 0x10, 0x110000, 0x100000)}},
		{"without MD5 (--disable-md5sum)", cat(factory, endMarker), Table{ent("factory", 0, 0, 0x10000, 0x100000)}},
		{"padded to 0xC00", padFF(cat(factory, md5Entry(factory)), MaxTableLen), Table{ent("factory", 0, 0, 0x10000, 0x100000)}},
		{"whole sector with trailing junk", append(padFF(cat(factory, endMarker), MaxTableLen), bytes.Repeat([]byte{0x42}, 1024)...), Table{ent("factory", 0, 0, 0x10000, 0x100000)}},
		{"16-byte label has no NUL", cat(long, endMarker), Table{ent("0123456789abcdef", 0x30, 0xEE, 0x100000, 0x200000)}},
		{"label stops at first NUL", cat(padded, endMarker), Table{ent("ab", 1, 0x81, 0x9000, 0x1000)}},
		{"unknown flag bits kept", cat(flags, endMarker), Table{{Label: "nvs", Type: 1, SubType: 2, Offset: 0x9000, Size: 0x4000, Flags: 0x80000003}}},
		{"end marker is FF FF FF FF like the bootloader", cat(factory, []byte{0xFF, 0xFF, 0xFF, 0xFF}, make([]byte, 28)), Table{ent("factory", 0, 0, 0x10000, 0x100000)}},
		{"entries after the MD5 entry", cat(factory, md5Entry(factory), ota0, endMarker), Table{ent("factory", 0, 0, 0x10000, 0x100000), ent("ota_0", 0, 0x10, 0x110000, 0x100000)}},
		{"end marker in the last slot", cat(bytes.Repeat(factory, MaxTableLen/EntrySize-1), endMarker), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBinary(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func padFF(b []byte, n int) []byte {
	for len(b) < n {
		b = append(b, 0xFF)
	}
	return b
}

func TestParseBinaryErrors(t *testing.T) {
	factory := rawEntry(0, 0, 0x10000, 0x100000, "factory", 0)
	wrongMD5 := md5Entry(factory)
	wrongMD5[20] ^= 0xFF
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"short", factory[:20], "cut off at 20 bytes, inside entry 0"},
		{"no end marker, input ends", cat(factory, factory), "cut off at 64 bytes, inside entry 2"},
		{"erased", bytes.Repeat([]byte{0xFF}, MaxTableLen), "first entry is an end marker"},
		{"bad magic", cat(factory, []byte("OHAI"), make([]byte, 28)), "entry 1 (offset 0x20): bad magic 4F 48"},
		{"zeros", make([]byte, 64), "bad magic 00 00"},
		{"MD5 mismatch", cat(factory, wrongMD5, endMarker), "entry 1 (offset 0x20): MD5 mismatch"},
		{"two MD5 entries", cat(factory, md5Entry(factory), md5Entry(cat(factory, md5Entry(factory))), endMarker), "second MD5 entry"},
		{"no end marker within 0xC00", bytes.Repeat(factory, MaxTableLen/EntrySize+4), "no end marker within the first 0xc00 bytes"},
		{"end marker only after 0xC00", cat(bytes.Repeat(factory, MaxTableLen/EntrySize), endMarker), "no end marker within"},
		{"FF FF magic with other type", cat(factory, []byte{0xFF, 0xFF, 0x00, 0xFF}, make([]byte, 28)), "bad magic FF FF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBinary(tc.in)
			if err == nil {
				t.Fatalf("parsed %v, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestMarshalBinary(t *testing.T) {
	tab := Table{ent("factory", 0, 0, 0x10000, 0x100000), {Label: "0123456789abcdef", Type: 0x40, SubType: 0xEE, Offset: 0x110000, Size: 0x800, Flags: 0x80000001}}
	got, err := tab.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	entries := cat(rawEntry(0, 0, 0x10000, 0x100000, "factory", 0), rawEntry(0x40, 0xEE, 0x110000, 0x800, "0123456789abcdef", 0x80000001))
	want := padFF(cat(entries, md5Entry(entries)), MaxTableLen)
	if !bytes.Equal(got, want) {
		t.Fatalf("got\n% x\nwant\n% x", got[:128], want[:128])
	}
	for name, bad := range map[string]Table{
		"label too long": {ent("0123456789abcdefg", 0, 0, 0x10000, 0x10000)},
		"label with NUL": {ent("a\x00b", 0, 0, 0x10000, 0x10000)},
		"too many":       make(Table, MaxEntries+1),
	} {
		if _, err := bad.MarshalBinary(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// An empty table encodes as the MD5 of nothing plus the end marker; like
	// the bootloader, ParseBinary reads that as zero partitions.
	empty, err := Table{}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseBinary(empty); err != nil || len(got) != 0 {
		t.Errorf("empty table with MD5 entry: %v, %v", got, err)
	}
}
