package devinfo

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// checkClean fails when a parsed value could mislead a terminal.
func checkClean(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) || len(s) > maxValueLen {
		t.Fatalf("%s: unclean value %q", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			t.Fatalf("%s: control character in %q", what, s)
		}
	}
}

func FuzzParseOTAStatus(f *testing.F) {
	for _, s := range []string{
		`{"project":"ots-fw-main","version":"1.0.1","idf":"v5.2.2","chip":"esp32s3","running":"ota_0","boot":"ota_0","state":"valid","secure_version":0,"elf_sha256":"ab","slot_size":2097152,"uptime_s":42}`,
		`{}`, `{"version":1}`, `{"uptime_s":1e400}`, `{"secure_version":-1}`, `[`, `{"state":"\u001b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseOTAStatus(b)
		if err != nil && s != (OTAStatus{}) && !strings.HasPrefix(err.Error(), "ota status:") {
			t.Fatalf("partial result with unexpected error %v", err)
		}
		for _, v := range []string{s.Project, s.Version, s.IDF, s.Chip, s.Running, s.Boot, s.State, s.ELFSHA256, s.Auth} {
			checkClean(t, "ota status", v)
		}
		if s.UptimeS != nil && *s.UptimeS < 0 || s.SlotSize != nil && *s.SlotSize < 0 {
			t.Fatalf("negative number in %+v", s)
		}
	})
}

func FuzzParseAPIStatus(f *testing.F) {
	for _, s := range []string{`{"firmwareVersion":"2.3.4","uptime":5,"mode":"STA"}`, `{"uptime":"x"}`, `null`, `{"firmwareVersion":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _ := ParseAPIStatus(b)
		for _, v := range []string{s.FirmwareVersion, s.Hostname, s.SerialNumber} {
			checkClean(t, "api status", v)
		}
		if s.Uptime != nil && *s.Uptime < 0 {
			t.Fatal("negative uptime")
		}
	})
}

// FuzzParseTXT splits its input on NUL into TXT strings.
func FuzzParseTXT(f *testing.F) {
	f.Add("board=esp32s3\x00tcp_check=no\x00ssh_upload=no\x00auth_upload=yes")
	f.Add("version=1.0.0\x00VERSION=2\x00=x\x00flag\x00\x00")
	f.Add("k=\x1b[31mred")
	f.Fuzz(func(t *testing.T, in string) {
		m := ParseTXT(strings.Split(in, "\x00"))
		for k, v := range m {
			if k == "" || k != strings.ToLower(k) {
				t.Fatalf("bad key %q", k)
			}
			checkClean(t, "txt key", k)
			checkClean(t, "txt value", v)
		}
	})
}

func FuzzParseESPEasyJSON(f *testing.F) {
	for _, s := range []string{
		`{"System":{"Build":20241019,"Git Build":"mega-20241019","Build Time":"Oct 19 2024 22:36:19","Uptime":42,"Uptime (ms)":2520345,"Unit Number":3}}`,
		`{"System":{"Build":"20117","Uptime (ms)":"300123"}}`, `{"TTL":1,"System":{"Git Build":"x"}}`,
		`{"System":{"Build":1,"Uptime (ms)":-1}}`, `{"System":{"Build":1e400}}`, `{"System":{"Git Build":"\u001b"}}`, `{"System":[`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseESPEasyJSON(b)
		if err != nil && s != (ESPEasyJSON{}) && !strings.HasPrefix(err.Error(), "espeasy json:") {
			t.Fatalf("partial result with unexpected error %v", err)
		}
		for _, v := range []string{s.Build, s.GitBuild, s.BuildTime, s.BinaryFilename, s.UnitName, s.ChipModel, s.LastBootCause, s.ResetReason} {
			checkClean(t, "espeasy json", v)
		}
		for _, n := range []*int64{s.UnitNumber, s.UptimeMin, s.UptimeMS} {
			if n != nil && *n < 0 {
				t.Fatalf("negative number in %+v", s)
			}
		}
	})
}
