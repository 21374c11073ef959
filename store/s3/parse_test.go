package s3

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"io"
	"regexp"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in             string
		bucket, prefix string
		err            string // a part of the error; "" = none
	}{
		{in: "s3://bucket", bucket: "bucket"},
		{in: "s3://bucket/", bucket: "bucket"},
		{in: "s3://bucket/a", bucket: "bucket", prefix: "a"},
		{in: "s3://bucket/a/b", bucket: "bucket", prefix: "a/b"},
		{in: "s3://bucket/a/b/", bucket: "bucket", prefix: "a/b"},
		{in: "s3://my.bucket-1/ota_v2/fw-3.x", bucket: "my.bucket-1", prefix: "ota_v2/fw-3.x"},
		{in: "s3://abc", bucket: "abc"},
		{in: "s3://" + strings.Repeat("a", 63), bucket: strings.Repeat("a", 63)},
		{in: "", err: "expected s3://bucket"},
		{in: "bucket/prefix", err: "expected s3://bucket"},
		{in: "http://bucket/prefix", err: "expected s3://bucket"},
		{in: "gs://bucket", err: "expected s3://bucket"},
		{in: "S3://bucket", err: "expected s3://bucket"},
		{in: "s3:/bucket", err: "expected s3://bucket"},
		{in: "s3://", err: "no bucket"},
		{in: "s3:///prefix", err: "no bucket"},
		{in: "s3://ab", err: "3 to 63"},
		{in: "s3://" + strings.Repeat("a", 64), err: "3 to 63"},
		{in: "s3://Bucket", err: "lowercase"},
		{in: "s3://bu_cket", err: "lowercase"},
		{in: "s3://bu cket", err: "lowercase"},
		{in: "s3://-bucket", err: "starts and ends"},
		{in: "s3://bucket-", err: "starts and ends"},
		{in: "s3://.bucket", err: "starts and ends"},
		{in: "s3://bu..cket", err: `".."`},
		{in: "s3://192.168.1.10", err: "IP address"},
		{in: "s3://user:pw@bucket", err: "lowercase"},
		{in: "s3://bucket?x=1", err: "query"},
		{in: "s3://bucket/a#b", err: "query"},
		{in: "s3://bucket//a", err: "each part"},
		{in: "s3://bucket/a//b", err: "each part"},
		{in: "s3://bucket/a/../b", err: "each part"},
		{in: "s3://bucket/./b", err: "each part"},
		{in: "s3://bucket/a b", err: "each part"},
		{in: "s3://bucket/a%20b", err: "each part"},
		{in: "s3://bucket/" + strings.Repeat("a/", 101), err: "longer than 200"},
	} {
		b, p, err := ParseURL(tc.in)
		if tc.err == "" {
			if err != nil || b != tc.bucket || p != tc.prefix {
				t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.in, b, p, err, tc.bucket, tc.prefix)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want an error with %q", tc.in, b, p, err, tc.err)
			continue
		}
		if b != "" || p != "" || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseURL(%q): %q, %q, error %q: want no parts and a one-line error", tc.in, b, p, err)
		}
	}
}

func folderOf(t *testing.T, files map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	f, sizes, err := imageFolder(names, func(n string) (io.Reader, error) { return strings.NewReader(files[n]), nil })
	if err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		if sizes[n] != int64(len(c)) {
			t.Errorf("size of %s: %d, want %d", n, sizes[n], len(c))
		}
	}
	return f
}

func TestImageFolder(t *testing.T) {
	base := map[string]string{"fw.bin": "image bytes", "fw.bin.gz": "gz bytes", "fw-minimal.bin.gz": "minimal"}
	f := folderOf(t, base)
	if !regexp.MustCompile(`^fw-[a-z2-7]{20}$`).MatchString(f) {
		t.Fatalf("folder %q: want fw-<20 lowercase base32 characters>", f)
	}
	if again := folderOf(t, map[string]string{"fw-minimal.bin.gz": "minimal", "fw.bin.gz": "gz bytes", "fw.bin": "image bytes"}); again != f {
		t.Errorf("the same files gave %q then %q", f, again)
	}
	seen := map[string]string{f: "base"}
	for what, files := range map[string]map[string]string{
		"one byte changed":     {"fw.bin": "image bytez", "fw.bin.gz": "gz bytes", "fw-minimal.bin.gz": "minimal"},
		"a name changed":       {"fw.bin": "image bytes", "fw.bin.gz": "gz bytes", "fw-minimal.bin.gzip": "minimal"},
		"a file less":          {"fw.bin": "image bytes", "fw.bin.gz": "gz bytes"},
		"contents swapped":     {"fw.bin": "gz bytes", "fw.bin.gz": "image bytes", "fw-minimal.bin.gz": "minimal"},
		"a byte moved between": {"fw.bin": "image bytes", "fw.bin.gz": "gz byte", "fw-minimal.bin.gz": "sminimal"},
		"name into content":    {"fw.bin": "image bytes", "fw.bin.g": "zgz bytes", "fw-minimal.bin.gz": "minimal"},
	} {
		g := folderOf(t, files)
		if prev, ok := seen[g]; ok {
			t.Errorf("%s: folder %q, the same as for %s", what, g, prev)
		}
		seen[g] = what
	}
}

func TestStem(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"tasmota32.bin", "tasmota32.bin.gz", "tasmota32-minimal.bin.gz"}, "tasmota32"},
		{[]string{"tasmota32-minimal.bin.gz", "tasmota32.bin"}, "tasmota32"},
		{[]string{"node.ota.bin"}, "node"},
		{[]string{"b.bin", "a.bin"}, "a"},
		{[]string{strings.Repeat("x", 40) + ".bin"}, strings.Repeat("x", maxStem)},
		{[]string{strings.Repeat("x", 23) + "--y.bin"}, strings.Repeat("x", 23)},
	} {
		if got := stem(tc.names); got != tc.want {
			t.Errorf("stem(%q) = %q, want %q", tc.names, got, tc.want)
		}
	}
}

// The hash part is SHA-256 written out in lowercase base32: a value
// computed here by hand, so a change of the framing or the encoding (which
// would re-upload every image under a new folder) is seen.
func TestImageFolderStable(t *testing.T) {
	f := folderOf(t, map[string]string{"a.bin": "x"})
	var in bytes.Buffer
	in.WriteString("5:a.bin\nx\n1\n")
	if want := "a-" + sha256Base32(in.Bytes())[:hashChars]; f != want {
		t.Errorf("folder %q, want %q", f, want)
	}
}

func sha256Base32(b []byte) string {
	sum := sha256.Sum256(b)
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))
}
