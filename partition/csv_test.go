package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

func ent(label string, typ, sub uint8, off, size uint32) Entry {
	return Entry{Label: label, Type: typ, SubType: sub, Offset: off, Size: size}
}

func TestParseCSV(t *testing.T) {
	factory := ent("factory", TypeApp, 0, 0x10000, 0x100000)
	tests := []struct {
		name string
		in   string
		want Table
	}{
		{"minimal", "factory, app, factory, 0x10000, 1M", Table{factory}},
		{"comments blank lines and spaces", "\n# header\n   # indented comment\n\n  factory ,\tapp ,  factory , 0x10000 ,  1M , \n\n# end\n", Table{factory}},
		{"CRLF", "# x\r\nfactory,app,factory,0x10000,1M\r\n", Table{factory}},
		{"CR only", "# x\rfactory,app,factory,0x10000,1M\r", Table{factory}},
		{"missing trailing columns", "factory,app,factory,,1M", Table{factory}},
		{"no flags column, data", "nvs,data,nvs,,0x4000", Table{ent("nvs", TypeData, 2, 0x9000, 0x4000)}},
		{"extra columns ignored like gen_esp32part", "factory,app,factory,0x10000,1M,,whatever,more", Table{factory}},
		{"keywords case-insensitive", "factory, APP, Factory, 0x10000, 1M\nstore, DATA, SPIFFS, , 64K\nota_3, App, OTA_3, , 1M",
			Table{factory, ent("store", TypeData, 0x82, 0x110000, 0x10000), ent("ota_3", TypeApp, 0x13, 0x120000, 0x100000)}},
		{"numeric type and subtype", "a, 0, 0x10, 0x10000, 0x10000\nb, 1, 2, , 16K\nc, 0x40, 0b101, , 4K\nd, 0o1, 0o201, , 4k",
			Table{ent("a", 0, 0x10, 0x10000, 0x10000), ent("b", 1, 2, 0x20000, 0x4000), ent("c", 0x40, 5, 0x24000, 0x1000), ent("d", 1, 0x81, 0x25000, 0x1000)}},
		{"decimal numbers and suffixes", "a, app, factory, 65536, 1048576\nb, data, fat, , 8k\nc, data, fat, , 1m\nd, data, fat, 0x300000, 0x10K",
			Table{ent("a", 0, 0, 0x10000, 0x100000), ent("b", 1, 0x81, 0x110000, 0x2000), ent("c", 1, 0x81, 0x112000, 0x100000), ent("d", 1, 0x81, 0x300000, 0x4000)}},
		{"underscores like Python int", "a, app, factory, 0x1_0000, 1_048_576", Table{factory.withLabel("a")}},
		{"computed offsets: app 64K, data 4K aligned", "nvs,data,nvs,,0x6000\nphy,data,phy,,0x1000\nfactory,app,factory,,1M\nsmall,data,0x40,,0x800\nafter,data,0x41,,4K\nota_0,app,ota_0,,1M",
			Table{ent("nvs", 1, 2, 0x9000, 0x6000), ent("phy", 1, 1, 0xF000, 0x1000), factory, ent("small", 1, 0x40, 0x110000, 0x800),
				ent("after", 1, 0x41, 0x111000, 0x1000), ent("ota_0", 0, 0x10, 0x120000, 0x100000)}},
		{"custom type is 4K aligned", "factory,app,factory,,1M\nx,0x40,0,,0x800\ny,0x41,0,,0x800",
			Table{factory, ent("x", 0x40, 0, 0x110000, 0x800), ent("y", 0x41, 0, 0x111000, 0x800)}},
		{"negative size means up to", "factory, app, factory, 0x10000, -2M\nsecond, data, 0x15, , 1M",
			Table{ent("factory", 0, 0, 0x10000, 0x1F0000), ent("second", 1, 0x15, 0x200000, 0x100000)}},
		{"flags", "factory,app,factory,,1M,encrypted\nnvs_key,data,nvs_keys,,4K,encrypted:readonly\nro,data,nvs,,4K, readonly : ENCRYPTED \nnone,data,fat,,4K,",
			Table{{Label: "factory", Type: 0, SubType: 0, Offset: 0x10000, Size: 0x100000, Flags: FlagEncrypted},
				{Label: "nvs_key", Type: 1, SubType: 4, Offset: 0x110000, Size: 0x1000, Flags: FlagEncrypted | FlagReadOnly},
				{Label: "ro", Type: 1, SubType: 2, Offset: 0x111000, Size: 0x1000, Flags: FlagEncrypted | FlagReadOnly},
				ent("none", 1, 0x81, 0x112000, 0x1000)}},
		{"empty subtype is data/undefined", "storage, data, , 0x9000, 512k\nstorage2, data, undefined, , 12k\nx, 0x40, , , 4K",
			Table{ent("storage", 1, 6, 0x9000, 0x80000), ent("storage2", 1, 6, 0x89000, 0x3000), ent("x", 0x40, 6, 0x8C000, 0x1000)}},
		{"bootloader and partition_table rows", "bootloader, bootloader, primary, N/A, N/A\npartition_table, partition_table, primary, N/A, N/A\nfactory, app, factory, , 1M\nOtaBTLDR, bootloader, ota, , N/A\nOtaPrtTable, partition_table, ota, n/a, n/a",
			Table{ent("bootloader", 2, 0, 0x1000, 0x7000), ent("partition_table", 3, 0, 0x8000, 0x1000), factory,
				ent("OtaBTLDR", 2, 1, 0x110000, 0x7000), ent("OtaPrtTable", 3, 1, 0x117000, 0x1000)}},
		{"primary rows ignore offset and size columns like the build", "bootloader, bootloader, primary, 0x0, 8k\npartition_table, partition_table, primary, 0x300000, junk\nfactory, app, factory, , 1M",
			Table{ent("bootloader", 2, 0, 0x1000, 0x7000), ent("partition_table", 3, 0, 0x8000, 0x1000), factory}},
		{"recovery bootloader at its column", "factory, app, factory, , 1M\nrec, bootloader, recovery, 0x200000, N/A",
			Table{factory, ent("rec", 2, 2, 0x200000, 0x7000)}},
		{"long name cut to 16 bytes like the build", "abcdefghijklmnopq, app, factory, , 1M", Table{factory.withLabel("abcdefghijklmnop")}},
		{"long UTF-8 name cut to 16 bytes", "ааааааааа, app, factory, , 1M", Table{factory.withLabel("аааааааа")}},
		{"16-byte label", "abcdefghijklmnop, app, factory, , 1M", Table{factory.withLabel("abcdefghijklmnop")}},
		{"UTF-8 label", "phy_инит, data, phy, 0xf000, 4K\nfactory,app,factory,,1M", Table{ent("phy_инит", 1, 1, 0xF000, 0x1000), factory}},
		{"empty label", ",app,factory,,1M", Table{factory.withLabel("")}},
		{"lone dollar is literal", "a$, app, factory, , 1M", Table{factory.withLabel("a$")}},
		{"comment mentioning $VAR", "# uses $FOO\nfactory,app,factory,,1M", Table{factory}},
		{"negative size up to own offset is empty", "factory,app,factory,0x10000,1M\nz,data,fat,0x200000,-0x200000", Table{factory, ent("z", 1, 0x81, 0x200000, 0)}},
		{"names unique as written, even if cut alike", "abcdefghijklmnop1,app,factory,,1M\nabcdefghijklmnop2,app,ota_0,,1M",
			Table{factory.withLabel("abcdefghijklmnop"), ent("abcdefghijklmnop", 0, 0x10, 0x110000, 0x100000)}},
		{"zero is fine", "factory,app,factory,0x10000,1M\nz,data,fat,,0", Table{factory, ent("z", 1, 0x81, 0x110000, 0)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCSV(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func (e Entry) withLabel(l string) Entry { e.Label = l; return e }

func TestParseCSVErrors(t *testing.T) {
	const f = "factory,app,factory,0x10000,1M\n"
	tests := []struct {
		name string
		in   string
		line int // 0: not a line error
		want string
	}{
		{"empty", "", 0, "no partitions"},
		{"only comments", "# a\n\n  # b\n", 0, "no partitions"},
		{"empty type", "# x\nihavenotype,", 2, "type is empty"},
		{"unknown type keyword", "a, apps, factory, , 1M", 1, `"apps" is not a number or a known keyword (app, bootloader, data, partition_table)`},
		{"type out of range", "a, 0x100, 0, , 1M", 1, "out of range"},
		{"negative type", "a, -1, 0, , 1M", 1, "out of range"},
		{"unknown subtype keyword", f + "a, data, nvss, , 4K", 2, `"nvss" is not a number or a known keyword`},
		{"subtype keyword of the wrong type", f + "a, data, ota_0, , 4K", 2, "subtype"},
		{"subtype keyword for custom type", f + "a, 0x40, nvs, , 4K", 2, "no subtype keywords"},
		{"subtype out of range", f + "a, data, 256, , 4K", 2, "out of range"},
		{"app without subtype", "# x\n\nfactory, app, , , 1M", 3, "app partition needs a subtype"},
		{"empty size", f + "nvs, data, nvs, , ", 2, "size is empty"},
		{"missing size column", f + "nvs, data, nvs", 2, "size is empty"},
		{"N/A size for data", f + "nvs, data, nvs, , N/A", 2, "N/A is only allowed"},
		{"N/A offset for app", "factory, app, factory, N/A, 1M", 1, "N/A is only allowed"},
		{"junk size", f + "nvs, data, nvs, , 16KB", 2, `"16KB" is not a number`},
		{"fractional size", f + "nvs, data, nvs, , 1.5M", 2, "not a number"},
		{"leading zero", f + "nvs, data, nvs, , 0100", 2, "leading zero"},
		{"junk offset", "factory, app, factory, 0xZZ, 1M", 1, "offset"},
		{"negative offset", "factory, app, factory, -0x10000, 1M", 1, "out of range"},
		{"offset too large", "factory, app, factory, 0x100000000, 1M", 1, "out of range"},
		{"huge number", "factory, app, factory, 99999999999999999999999, 1M", 1, "too large"},
		{"size too large", "factory, app, factory, 0x10000, 0x100000000", 1, "out of range"},
		{"past 4 GB", "factory, app, factory, 0xFFFF0000, 0x20000", 1, "4 GB"},
		{"negative size before offset", "factory, app, factory, 0x200000, -1M", 1, `means "up to 0x100000", but the partition starts at 0x200000`},
		{"unknown flag", f + "nvs, data, nvs, , 16K, encrypted:secret", 2, `unknown flag "secret" (known: encrypted, readonly`},
		{"inline comment is an unknown flag", f + "nvs, data, nvs, , 16K, # comment", 2, "unknown flag"},
		{"env var", f + "nvs, data, nvs, $NVS_OFFSET, 16K", 2, `environment variable "$NVS_OFFSET"`},
		{"env var braces", f + "nvs, data, nvs, ${OFF}, 16K", 2, `"${OFF}"`},
		{"label NUL", "a\x00b, app, factory, , 1M", 1, "NUL"},
		{"invalid UTF-8", "# ok\nfactory,app,factory,,1M\n\xff\xfe\xfd,data,fat,,4K", 3, "not valid UTF-8"},
		{"explicit offset overlaps table sector", "nvs, data, nvs, 0x8000, 0x4000", 1, "overlaps the partition table sector (0x8000–0x8fff); use 0x9000 or higher"},
		{"explicit offset goes backwards", f + "a, app, ota_0, 0x100000, 1M", 2, "overlaps the previous partition, which ends at 0x110000"},
		{"overlap found by verify", "bootloader, bootloader, primary, 0x1000, N/A\nboot2, bootloader, primary, 0x2000, N/A\n" + "factory,app,factory,,1M", 2, "overlaps"},
		{"duplicate names", "first, app, factory, 0x100000, 1M\nfirst, app, ota_0, 0x200000, 1M", 2, `partition "first" (line 1) and partition "first" (line 2): partition names must be unique`},
		{"app offset alignment", "factory, app, factory, 0x11000, 1M", 1, "offset 0x11000 is not aligned to 0x10000"},
		{"data offset alignment", "nvs, data, nvs, 0x9800, 0x4000", 1, "offset 0x9800 is not aligned to 0x1000"},
		{"app size alignment", "factory, app, factory, 0x10000, 0x100800", 1, "app size 0x100800 is not a multiple of 0x1000"},
		{"otadata size", f + "otadata, data, ota, , 0x1000", 2, "must be exactly 0x2000 bytes"},
		{"two otadata", f + "otadata, data, ota, , 0x2000\nota2, data, ota, , 0x2000", 0, `more than one data/ota partition: partition "otadata" (line 2), partition "ota2" (line 3)`},
		{"otadata readonly", f + "otadata, data, ota, , 0x2000, readonly", 2, "always read-write"},
		{"coredump readonly", f + "cd, data, coredump, , 64K, readonly", 2, "always read-write"},
		{"small rw nvs", f + "nvs, data, nvs, , 0x2000", 2, "read-write NVS must be at least 0x3000"},
		{"recovery bootloader without offset", f + "rec, bootloader, recovery, N/A, N/A", 2, "recovery bootloader row needs an offset"},
		{"too many partitions", manyPartitions(MaxEntries + 1), MaxEntries + 1, "more than 94 partitions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCSV(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("parsed %v, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if tc.line > 0 {
				var le *LineError
				if errors.As(err, &le) {
					if le.Line != tc.line {
						t.Errorf("error is for line %d, want %d", le.Line, tc.line)
					}
				} else if !strings.Contains(err.Error(), fmt.Sprintf("(line %d)", tc.line)) {
					t.Errorf("error %q does not name line %d", err, tc.line)
				}
			}
		})
	}
}

func manyPartitions(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "p%d, data, fat, , 4K\n", i)
	}
	return b.String()
}

func TestParseCSVMaxPartitions(t *testing.T) {
	tab, err := ParseCSV(strings.NewReader(manyPartitions(MaxEntries)))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := tab.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(bin) != MaxTableLen || !isEndMarker(bin[MaxTableLen-EntrySize:]) {
		t.Fatalf("94 partitions + MD5 + end marker should fill exactly 0xC00 bytes")
	}
	back, err := ParseBinary(bin)
	if err != nil || !reflect.DeepEqual(back, tab) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestParseCSVBOM(t *testing.T) {
	const text = "nvs,data,nvs,0x9000,0x6000\nphy_инит_,data,phy,0xf000,0x1000\nfactory,app,factory,0x10000,1M\n"
	want := Table{ent("nvs", 1, 2, 0x9000, 0x6000), ent("phy_инит_", 1, 1, 0xF000, 0x1000), ent("factory", 0, 0, 0x10000, 0x100000)}
	u16 := utf16.Encode([]rune(text))
	enc16 := func(order binary.AppendByteOrder, bom []byte) []byte {
		b := append([]byte{}, bom...)
		for _, c := range u16 {
			b = order.AppendUint16(b, c)
		}
		return b
	}
	enc32 := func(order binary.AppendByteOrder, bom []byte) []byte {
		b := append([]byte{}, bom...)
		for _, r := range text {
			b = order.AppendUint32(b, uint32(r))
		}
		return b
	}
	inputs := map[string][]byte{
		"none":     []byte(text),
		"utf-8":    append([]byte{0xEF, 0xBB, 0xBF}, text...),
		"utf-16le": enc16(binary.LittleEndian, []byte{0xFF, 0xFE}),
		"utf-16be": enc16(binary.BigEndian, []byte{0xFE, 0xFF}),
		"utf-32le": enc32(binary.LittleEndian, []byte{0xFF, 0xFE, 0, 0}),
		"utf-32be": enc32(binary.BigEndian, []byte{0, 0, 0xFE, 0xFF}),
	}
	for name, in := range inputs {
		got, err := ParseCSV(strings.NewReader(string(in)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v", name, got)
		}
	}
	bad := map[string][]byte{
		"utf-16 odd length":   {0xFF, 0xFE, 'a'},
		"utf-16 lone low":     {0xFF, 0xFE, 0x00, 0xDC},
		"utf-16 lone high":    {0xFF, 0xFE, 0x00, 0xD8, 'a', 0},
		"utf-32 odd length":   {0xFF, 0xFE, 0, 0, 'a'},
		"utf-32 out of range": {0, 0, 0xFE, 0xFF, 0, 0x11, 0, 0},
		"utf-32 surrogate":    {0xFF, 0xFE, 0, 0, 0x00, 0xD8, 0, 0},
	}
	for name, in := range bad {
		if _, err := ParseCSV(strings.NewReader(string(in))); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseCSVWithOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		in   string
		want Table
		err  string
	}{
		{name: "table at 0x10000", opts: Options{TableOffset: 0x10000}, in: "nvs,data,nvs,,0x4000\nfactory,app,factory,,1M",
			want: Table{ent("nvs", 1, 2, 0x11000, 0x4000), ent("factory", 0, 0, 0x20000, 0x100000)}},
		{name: "table at 0x10000 rejects 0x9000", opts: Options{TableOffset: 0x10000}, in: "nvs,data,nvs,0x9000,0x4000", err: "overlaps the partition table sector"},
		{name: "zero options: bootloader at 0", opts: Options{}, in: "bootloader,bootloader,primary,N/A,N/A\npartition_table,partition_table,primary,N/A,N/A\nfactory,app,factory,,1M",
			want: Table{ent("bootloader", 2, 0, 0, 0x8000), ent("partition_table", 3, 0, 0x8000, 0x1000), ent("factory", 0, 0, 0x10000, 0x100000)}},
		{name: "recovery bootloader", opts: Options{BootloaderOffset: 0x2000, RecoveryBootloaderOffset: 0x200000}, in: "factory,app,factory,,1M\nrec,bootloader,recovery,N/A,N/A",
			want: Table{ent("factory", 0, 0, 0x10000, 0x100000), ent("rec", 2, 2, 0x200000, 0x6000)}},
		{name: "bootloader offset above table", opts: Options{BootloaderOffset: 0x9000}, in: "factory,app,factory,,1M", err: "must be below the partition table"},
		{name: "secure boot v1 app size", opts: Options{SecureBootV1: true}, in: "factory,app,factory,,0x101000", err: "not a multiple of 0x10000"},
		{name: "secure boot v1 ok", opts: Options{SecureBootV1: true}, in: "factory,app,factory,,0x110000", want: Table{ent("factory", 0, 0, 0x10000, 0x110000)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCSVWith(strings.NewReader(tc.in), tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

// errReader fails after its data.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseCSVReadError(t *testing.T) {
	_, err := ParseCSV(errReader{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("error %v", err)
	}
	big := strings.Repeat("#", maxCSVLen+1)
	if _, err := ParseCSV(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized input: %v", err)
	}
}

func TestCSVBinaryRoundTrip(t *testing.T) {
	for name, in := range map[string]string{"two_ota": twoOTACSV, "ots": otsCSV,
		"flags and custom": "factory,app,factory,,1M,encrypted\nx,0x40,0x33,,0x800,readonly\nk,data,nvs_keys,,4K,encrypted:readonly\nbl,bootloader,ota,,N/A",
		"bootloader rows":  "bootloader,bootloader,primary,N/A,N/A\npartition_table,partition_table,primary,N/A,N/A\nfactory,app,factory,,1M\nOtaBTLDR,bootloader,ota,,N/A\nOtaPrtTable,partition_table,ota,,N/A"} {
		t.Run(name, func(t *testing.T) {
			tab, err := ParseCSV(strings.NewReader(in))
			if err != nil {
				t.Fatal(err)
			}
			bin, err := tab.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseBinary(bin)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tab) {
				t.Fatalf("binary round trip:\n%v\n%v", tab, back)
			}
			csv, err := back.FormatCSV()
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseCSV(strings.NewReader(csv))
			if err != nil {
				t.Fatalf("%v\n%s", err, csv)
			}
			if !reflect.DeepEqual(again, tab) {
				t.Fatalf("CSV round trip:\n%v\n%v\n%s", tab, again, csv)
			}
		})
	}
}

func TestFormatCSV(t *testing.T) {
	got, err := twoOTATable.FormatCSV()
	if err != nil {
		t.Fatal(err)
	}
	want := `# ESP-IDF Partition Table
# Name, Type, SubType, Offset, Size, Flags
nvs,data,nvs,0x9000,16K,
otadata,data,ota,0xd000,8K,
phy_init,data,phy,0xf000,4K,
factory,app,factory,0x10000,1M,
ota_0,app,ota_0,0x110000,1M,
ota_1,app,ota_1,0x210000,1M,
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, label := range []string{"a,b", "a\nb", " a", "#a", "$HOME", "\xff", "a\x00"} {
		if _, err := (Table{ent(label, 1, 1, 0x9000, 0x1000)}).FormatCSV(); err == nil {
			t.Errorf("label %q: no error", label)
		}
	}
	if _, err := (Table{{Label: "x", Flags: 4}}).FormatCSV(); err == nil {
		t.Error("unknown flag bits: no error")
	}
}

func TestValidate(t *testing.T) {
	if err := twoOTATable.Validate(DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		t    Table
		want string
	}{
		{"empty", Table{}, "no partitions"},
		{"below table", Table{ent("nvs", 1, 2, 0x8000, 0x4000)}, "below 0x9000"},
		{"overlap", Table{ent("a", 1, 0x81, 0x9000, 0x4000), ent("b", 1, 0x81, 0xA000, 0x1000)}, `partition "b" at 0xa000 overlaps partition "a" (0x9000–0xcfff)`},
		{"overlap out of order", Table{ent("b", 1, 0x81, 0xA000, 0x1000), ent("a", 1, 0x81, 0x9000, 0x4000)}, "overlaps"},
		{"beyond 4 GB", Table{ent("a", 1, 0x81, 0xFFFFF000, 0x2000)}, "4 GB"},
		{"too many", make(Table, MaxEntries+1), "at most 94"},
	}
	for _, tc := range tests {
		err := tc.t.Validate(Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}
