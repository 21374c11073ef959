package post

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
)

// The framing around an image is a multipart body a standard parser reads
// as one file part: its field, its file name, application/octet-stream,
// and the image byte for byte, with nothing after the closing boundary.
func TestNewFormIsOneFilePart(t *testing.T) {
	data := bytes.Repeat([]byte{0xE9, '\r', '\n', '-', '-', 0}, 1000)
	f, err := NewForm(data, "firmware", "fw-1.0.bin")
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(f.ContentType)
	if err != nil || mt != "multipart/form-data" {
		t.Fatalf("Content-Type %q: %v", f.ContentType, err)
	}
	// Arduino's WebServer takes everything after the first "=" as the
	// boundary: nothing may follow it.
	if _, after, _ := strings.Cut(f.ContentType, "="); after != params["boundary"] {
		t.Fatalf("Content-Type %q: more than the boundary after its \"=\"", f.ContentType)
	}
	body := append(append(append([]byte(nil), f.Prefix...), data...), f.Suffix...)
	if int64(len(body)) != f.Size(int64(len(data))) {
		t.Fatalf("Size %d, body %d", f.Size(int64(len(data))), len(body))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	p, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(p)
	if p.FormName() != "firmware" || p.FileName() != "fw-1.0.bin" || p.Header.Get("Content-Type") != "application/octet-stream" || len(p.Header) != 2 || !bytes.Equal(got, data) {
		t.Fatalf("part %q %q %v, %d bytes (want %d)", p.FormName(), p.FileName(), p.Header, len(got), len(data))
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("after the file: %v", err)
	}
}

// A field or file name a device's parser would misread is refused, and
// FileName makes any path a safe name.
func TestFormNames(t *testing.T) {
	for _, bad := range []string{"", `a"b`, "a=b", "a b", "a;b", "ä"} {
		if _, err := NewForm(nil, "firmware", bad); err == nil {
			t.Errorf("file name %q accepted", bad)
		}
	}
	for in, want := range map[string]string{
		"build/esp32/fw-1.0.bin":         "fw-1.0.bin",
		`C:\builds\fw.bin`:               "fw.bin",
		`my "fw"=1.bin`:                  "my__fw__1.bin",
		"":                               "firmware.bin",
		"dir/":                           "firmware.bin",
		"..":                             "firmware.bin",
		"Über.bin":                       "__ber.bin",
		"littlefs (1).bin":               "littlefs_(1).bin",
		"/tmp/x/.pio/build/firmware.bin": "firmware.bin",
	} {
		got := FileName(in, "firmware.bin")
		if got != want || !formToken(got) {
			t.Errorf("FileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		host       string
		port       int
		addr, head string
	}{
		{"192.168.1.5", 0, "192.168.1.5:80", "192.168.1.5"},
		{"192.168.1.5", 80, "192.168.1.5:80", "192.168.1.5"},
		{"dev.local", 8080, "dev.local:8080", "dev.local:8080"},
		{"fe80::1", 0, "[fe80::1]:80", "[fe80::1]"},
		{"::1", 8080, "[::1]:8080", "[::1]:8080"},
	} {
		if addr, head := HostPort(tc.host, tc.port, 80); addr != tc.addr || head != tc.head {
			t.Errorf("HostPort(%q, %d) = %q, %q; want %q, %q", tc.host, tc.port, addr, head, tc.addr, tc.head)
		}
	}
}
