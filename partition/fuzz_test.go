package partition

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseCSV: no panic on any input, and a table ParseCSV accepts passes
// Validate, encodes to binary and reads back equal, and survives FormatCSV →
// ParseCSV unchanged.
func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{
		twoOTACSV, otsCSV, "",
		"factory, app, factory, 0x10000, 1M",
		"# c\n\nnvs,data,nvs,,0x4000\r\nfactory,app,factory,,1M,encrypted\n",
		"bootloader, bootloader, primary, N/A, N/A\npartition_table, partition_table, primary, N/A, N/A\nfactory, app, factory, , 1M\nOtaBTLDR, bootloader, ota, , N/A\nOtaPrtTable, partition_table, ota, , N/A",
		"factory, app, factory, 0x10000, -2M\nsecond, data, 0x15, , 1M",
		"storage, data, , 0x9000, 512k\nx, 0x40, 0b101, , 4K, encrypted:readonly",
		"a, 0, 0x10, 0x10000, 0x10000\nb, 1, 2, , 16K\nc, 0x40, 0o7, , 4K",
		"\xef\xbb\xbfnvs,data,nvs,,24K\nphy_инит,data,phy,,4K\nfactory,app,factory,,1M",
		"\xff\xfen\x00v\x00s\x00,\x00d\x00a\x00t\x00a\x00,\x00n\x00v\x00s\x00,\x00,\x004\x00K\x00",
		"nvs, data, nvs, $NVS, 16K", "x, app, , , 1M", "first, app, factory, 0x100000, 2M\nsecond, app, ota_0,  0x200000, 1M",
		"abcdefghijklmnop,app,ota_15,0xFFF00000,0x100000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tab, err := ParseCSV(strings.NewReader(in))
		if err != nil {
			if tab != nil {
				t.Fatalf("error %v with a table", err)
			}
			return
		}
		if len(tab) == 0 {
			t.Fatal("no error and no partitions")
		}
		if err := tab.Validate(DefaultOptions()); err != nil && !hasCutLabel(tab) {
			// (Names cut to 16 bytes may collide; the build checks the
			// names as written and so does ParseCSV.)
			t.Fatalf("ParseCSV accepted a table Validate rejects: %v", err)
		}
		bin, err := tab.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed CSV table: %v", err)
		}
		back, err := ParseBinary(bin)
		if err != nil {
			t.Fatalf("ParseBinary(MarshalBinary): %v", err)
		}
		if !reflect.DeepEqual(back, tab) {
			t.Fatalf("binary round trip:\n%v\n%v", tab, back)
		}
		csv, err := tab.FormatCSV()
		if err != nil {
			// The one legitimate failure: a long UTF-8 name cut mid-character.
			for _, e := range tab {
				if !utf8.ValidString(e.Label) {
					return
				}
			}
			t.Fatalf("FormatCSV of a parsed CSV table: %v", err)
		}
		again, err := ParseCSV(strings.NewReader(csv))
		if err != nil {
			t.Fatalf("ParseCSV(FormatCSV): %v\n%s", err, csv)
		}
		if !reflect.DeepEqual(again, tab) {
			t.Fatalf("CSV round trip:\n%v\n%v", tab, again)
		}
		_, _ = tab.OTASlotSize()
	})
}

func hasCutLabel(t Table) bool {
	for _, e := range t {
		if len(e.Label) == MaxLabelLen {
			return true
		}
	}
	return false
}

// FuzzParseBinary: no panic on any input, and a table ParseBinary accepts
// re-encodes (when it fits with an MD5 entry) to bytes that read back equal.
func FuzzParseBinary(f *testing.F) {
	two, err := twoOTATable.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(two)
	f.Add(two[:100])
	f.Add(two[:2])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xFF}, MaxTableLen))
	factory := rawEntry(0, 0, 0x10000, 0x100000, "factory", 0)
	f.Add(cat(factory, endMarker))
	f.Add(cat(factory, md5Entry(factory), endMarker))
	f.Add(cat(factory, md5Entry(factory), md5Entry(factory), endMarker))
	f.Add(cat(rawEntry(0x30, 0xEE, 0x100000, 0x200000, "0123456789abcdef", 0xFFFFFFFF), []byte{0xFF, 0xFF, 0xFF, 0xFF, 1, 2}))
	f.Add(bytes.Repeat(factory, MaxTableLen/EntrySize))
	// The real IDF-built table, when the reference folder is there (a
	// fuzz seed cannot Skip, so it is just left out otherwise).
	if real, err := os.ReadFile(filepath.Join("..", "..", "shared", "testdata", "esp-images", "esf-esp32-partition-table.bin")); err == nil {
		f.Add(real)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tab, err := ParseBinary(in)
		if len(in) >= 2 && in[0] == 0xAA && in[1] == 0x50 {
			tab2, err2 := Parse(in)
			if (err == nil) != (err2 == nil) || !reflect.DeepEqual(tab, tab2) {
				t.Fatalf("Parse and ParseBinary disagree: %v / %v", err, err2)
			}
		}
		if err != nil {
			if tab != nil {
				t.Fatalf("error %v with a table", err)
			}
			return
		}
		_ = tab.Validate(DefaultOptions())
		_, _ = tab.OTASlotSize()
		for _, e := range tab {
			_ = e.String()
		}
		bin, err := tab.MarshalBinary()
		if len(tab) > MaxEntries {
			if err == nil {
				t.Fatal("MarshalBinary accepted too many entries")
			}
			return
		}
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed binary table: %v", err)
		}
		back, err := ParseBinary(bin)
		if err != nil {
			t.Fatalf("ParseBinary(MarshalBinary): %v", err)
		}
		if !reflect.DeepEqual(back, tab) {
			t.Fatalf("round trip:\n%v\n%v", tab, back)
		}
		// Re-encoding is canonical.
		bin2, err := back.MarshalBinary()
		if err != nil || !bytes.Equal(bin, bin2) {
			t.Fatalf("second encoding differs: %v", err)
		}
	})
}

// FuzzParseSize: no panic, never negative, and FormatSize reads back.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"2M", "1536k", "1.5M", "0x200000", "2097152", "2MiB", "0x1b", "-1", "", "0100", "1.1K", "9223372036854775807", "0b101B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("ParseSize(FormatSize(%d)) = %d, %v", n, back, err)
		}
	})
}
