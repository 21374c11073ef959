package wledmeta

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"testing"
)

// at places blk at off in an image of n bytes of filler.
func at(n, off int, blk []byte) []byte {
	b := bytes.Repeat([]byte{0xA5}, n)
	copy(b[off:], blk)
	return b
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestDJB2(t *testing.T) {
	// djb2("") is its seed; "a" is 5381*33+97.
	for _, c := range []struct {
		in     string
		signed bool
		want   uint32
	}{
		{"", false, 5381},
		{"a", false, 5381*33 + 97},
		{"ESP32", false, 0x0d0e7972}, // computed independently (python)
		{"\xff", false, 5381*33 + 255},
		{"\xff", true, 5381*33 - 1},
	} {
		if got := DJB2([]byte(c.in), c.signed); got != c.want {
			t.Errorf("DJB2(%q, signed %v) = %#x, want %#x", c.in, c.signed, got, c.want)
		}
	}
}

func TestFind(t *testing.T) {
	good := Block(2, "0.15.5", "ESP32", [3]byte{0, 15, 3})
	badHash := bytes.Clone(good)
	badHash[offHash] ^= 1
	noNUL := Block(1, "16.0.1", "x", [3]byte{})
	for i := range nameLen {
		noNUL[offRelease+i] = 'R'
	}
	binary.LittleEndian.PutUint32(noNUL[offHash:], DJB2(bytes.Repeat([]byte{'R'}, nameLen), false))
	signed := Block(1, "16.0.1", "x", [3]byte{})
	copy(signed[offRelease:], "\xe9\x00")
	binary.LittleEndian.PutUint32(signed[offHash:], DJB2([]byte{0xe9}, true))
	// A magic followed by a bad hash, then a good block: the first valid
	// one wins, as on the device.
	decoy := at(4096, 300, badHash)
	copy(decoy[300+Size:], good)
	esp8266 := Block(1, "0.15.5", "ESP8266_160", [3]byte{0, 15, 2})

	for _, c := range []struct {
		name    string
		image   []byte
		esp8266 bool
		want    Meta
		err     error
	}{
		{"esp32 at 288", at(4096, 288, good), false, Meta{Offset: 288, DescVersion: 2, Version: "0.15.5", Release: "ESP32", SafeFrom: [3]byte{0, 15, 3}}, nil},
		{"esp32 at 0", at(4096, 0, good), false, Meta{Offset: 0, DescVersion: 2, Version: "0.15.5", Release: "ESP32", SafeFrom: [3]byte{0, 15, 3}}, nil},
		{"esp32 block ends at 768", at(4096, 768-Size, good), false, Meta{Offset: 768 - Size, DescVersion: 2, Version: "0.15.5", Release: "ESP32", SafeFrom: [3]byte{0, 15, 3}}, nil},
		{"esp32 block ends past 768", at(4096, 768-Size+1, good), false, Meta{}, ErrMissing},
		{"esp32 block far away", at(8192, 4200, good), false, Meta{}, ErrMissing},
		{"image shorter than a block", good[:Size-1], false, Meta{}, ErrMissing},
		{"image is exactly a block", good, false, Meta{Offset: 0, DescVersion: 2, Version: "0.15.5", Release: "ESP32", SafeFrom: [3]byte{0, 15, 3}}, nil},
		{"bad hash", at(4096, 288, badHash), false, Meta{}, ErrMissing},
		{"release without NUL", at(4096, 288, noNUL), false, Meta{}, ErrMissing},
		{"signed-char hash", at(4096, 288, signed), false, Meta{Offset: 288, DescVersion: 1, Version: "16.0.1", Release: "\xe9"}, nil},
		{"decoy then good", decoy, false, Meta{Offset: 300 + Size, DescVersion: 2, Version: "0.15.5", Release: "ESP32", SafeFrom: [3]byte{0, 15, 3}}, nil},
		{"no magic", bytes.Repeat([]byte{0}, 4096), false, Meta{}, ErrMissing},
		{"esp8266 at 0x1010", at(8192, 0x1010, esp8266), true, Meta{Offset: 0x1010, DescVersion: 1, Version: "0.15.5", Release: "ESP8266_160", SafeFrom: [3]byte{0, 15, 2}}, nil},
		{"esp8266 block past 0x1200", at(8192, 0x1200-Size+1, esp8266), true, Meta{}, ErrMissing},
		{"esp8266 gzipped", gz(t, at(8192, 0x1010, esp8266)), false, Meta{Offset: 0x1010, DescVersion: 1, Version: "0.15.5", Release: "ESP8266_160", SafeFrom: [3]byte{0, 15, 2}, Gzip: true}, nil},
		{"gzipped short", gz(t, at(600, 100, esp8266)), false, Meta{Offset: 100, DescVersion: 1, Version: "0.15.5", Release: "ESP8266_160", SafeFrom: [3]byte{0, 15, 2}, Gzip: true}, nil},
		{"gzip header, broken stream", []byte{0x1f, 0x8b, 0, 0}, false, Meta{}, ErrGzip},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Find(c.image, c.esp8266)
			if !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if got != c.want {
				t.Errorf("Find = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestInstallsOver(t *testing.T) {
	for _, c := range []struct {
		dv   uint32
		safe [3]byte
		ver  string
		want bool
	}{
		{1, [3]byte{0, 15, 3}, "0.15.2", true}, // version 1: not read
		{2, [3]byte{0, 15, 3}, "0.15.2", false},
		{2, [3]byte{0, 15, 3}, "0.15.3", true},
		{2, [3]byte{0, 15, 3}, "0.15.10", true},
		{2, [3]byte{0, 15, 3}, "0.16.0", true},
		{2, [3]byte{0, 15, 3}, "16.0.0", true},
		{2, [3]byte{1, 0, 0}, "0.99.99", false},
		{2, [3]byte{0, 15, 3}, "0.15.3-b1", true},
		{2, [3]byte{0, 15, 3}, "0.15", true}, // malformed: the device lets it through
		{2, [3]byte{0, 15, 3}, "dev", true},
		{2, [3]byte{0, 15, 3}, "", true},
	} {
		m := Meta{DescVersion: c.dv, SafeFrom: c.safe}
		if got := m.InstallsOver(c.ver); got != c.want {
			t.Errorf("desc %d safe %v over %q = %v, want %v", c.dv, c.safe, c.ver, got, c.want)
		}
	}
}

func TestNormalizeRelease(t *testing.T) {
	for in, want := range map[string]string{"ESP32_V4": "ESP32", "ESP32": "ESP32", "_V4": "", "ESP32_V4_V4": "ESP32_V4", "ESP32_v4": "ESP32_v4"} {
		if got := NormalizeRelease(in); got != want {
			t.Errorf("NormalizeRelease(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzFind: Find never panics, and what it finds is a valid block inside
// the window the device is guaranteed to search.
func FuzzFind(f *testing.F) {
	f.Add(at(1024, 288, Block(2, "0.15.5", "ESP32", [3]byte{0, 15, 3})), false)
	f.Add(at(0x1300, 0x1010, Block(1, "16.0.1", "ESP8266", [3]byte{})), true)
	f.Add(gz(f, at(0x1300, 0x1010, Block(1, "16.0.1", "ESP8266", [3]byte{}))), false)
	f.Add([]byte("STSW"), false)
	f.Fuzz(func(t *testing.T, b []byte, esp8266 bool) {
		m, err := Find(b, esp8266)
		if err != nil {
			return
		}
		limit := OffsetESP32 + SearchRange
		if esp8266 || m.Gzip {
			limit = OffsetESP8266 + SearchRange
		}
		if m.Offset < 0 || m.Offset+Size > limit {
			t.Fatalf("block at %d ends past the window %d", m.Offset, limit)
		}
		if len(m.Release) >= nameLen || len(m.Version) >= nameLen {
			t.Fatalf("names too long: %q %q", m.Version, m.Release)
		}
		if !m.Gzip {
			blk := b[m.Offset : m.Offset+Size]
			if binary.LittleEndian.Uint32(blk) != Magic || !hashMatches([]byte(m.Release), binary.LittleEndian.Uint32(blk[offHash:])) {
				t.Fatalf("invalid block returned at %d", m.Offset)
			}
		}
	})
}
