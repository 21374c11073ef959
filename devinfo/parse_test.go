package devinfo

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseOTAStatus(t *testing.T) {
	full := `{"project":"ots-fw-main","version":"1.0.1","idf":"v5.2.2","chip":"esp32s3","running":"ota_0",
		"boot":"ota_0","state":"pending_verify","secure_version":0,"elf_sha256":"ab12","slot_size":2097152,"uptime_s":42}`
	tests := []struct {
		name    string
		in      string
		want    OTAStatus
		wantErr string
	}{
		{"full", full, OTAStatus{Project: "ots-fw-main", Version: "1.0.1", IDF: "v5.2.2", Chip: "esp32s3",
			Running: "ota_0", Boot: "ota_0", State: "pending_verify", ELFSHA256: "ab12", SlotSize: i64(2097152), UptimeS: i64(42), SecureVersion: u32(0)}, ""},
		{"empty object", `{}`, OTAStatus{}, ""},
		{"extra keys ignored", `{"version":"2","heap":1234,"x":[1,2]}`, OTAStatus{Version: "2"}, ""},
		{"nulls", `{"version":null,"uptime_s":null}`, OTAStatus{}, ""},
		{"float uptime", `{"uptime_s":12.7}`, OTAStatus{UptimeS: i64(12)}, ""},
		{"uptime told as 0 is a fact", `{"uptime_s":0}`, OTAStatus{UptimeS: i64(0)}, ""},
		{"no uptime is unknown, not 0", `{"version":"1"}`, OTAStatus{Version: "1"}, ""},
		{"upper-case state", `{"state":"VALID"}`, OTAStatus{State: "valid"}, ""},
		{"auth extension", `{"auth":"Bearer"}`, OTAStatus{Auth: "bearer"}, ""},
		{"escape sequences cleaned", `{"version":"1.0\u001b[31m"}`, OTAStatus{Version: "1.0\uFFFD[31m"}, ""},
		{"wrong type", `{"version":1}`, OTAStatus{}, "version: not a string"},
		{"negative uptime", `{"uptime_s":-5}`, OTAStatus{}, "uptime_s: negative"},
		{"secure_version too big", `{"secure_version":99999999999}`, OTAStatus{}, "secure_version: out of range"},
		{"array", `[1]`, OTAStatus{}, "not a JSON object"},
		{"html", `<html>`, OTAStatus{}, "not a JSON object"},
		{"truncated", `{"version":"1`, OTAStatus{}, "invalid JSON"},
		{"empty", ``, OTAStatus{}, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOTAStatus([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %s\nwant %s", dump(got), dump(tt.want))
			}
		})
	}
}

func TestParseAPIStatus(t *testing.T) {
	got, err := ParseAPIStatus([]byte(`{"firmwareVersion":"2.3.4","mode":"STA","ip":"10.0.0.5","hostname":"ots-fw-main","serialNumber":"OTS-1","wifiConnected":true,"uptime":77}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (APIStatus{FirmwareVersion: "2.3.4", Hostname: "ots-fw-main", SerialNumber: "OTS-1", Uptime: i64(77)}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", dump(got), dump(want))
	}
	// The OTS firmware as shipped tells no uptime: unknown, never 0.
	if got, err := ParseAPIStatus([]byte(`{"firmwareVersion":"1.0.0","mode":"STA"}`)); err != nil || got.Uptime != nil {
		t.Errorf("absent uptime: got %s, %v; want nil", dump(got), err)
	}
	if _, err := ParseAPIStatus([]byte(`{"firmwareVersion":["x"]}`)); err == nil {
		t.Error("wrong type accepted")
	}
	if _, err := ParseAPIStatus([]byte(`Nothing matches the given URI`)); err == nil {
		t.Error("text accepted")
	}
}

func TestParseTXT(t *testing.T) {
	got := ParseTXT([]string{"Version=1.2.3", "version=9", "board=esp32s3", "tcp_check=no", "flag", "=novalue", "", "path=/a=b"})
	want := map[string]string{"version": "1.2.3", "board": "esp32s3", "tcp_check": "no", "flag": "", "path": "/a=b"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"  1.0.0 \n":                "1.0.0",
		"a\x1b[2Jb":                 "a\uFFFD[2Jb",
		"\xff\xfe":                  "\uFFFD\uFFFD",
		strings.Repeat("x", 500):    strings.Repeat("x", 128),
		"ünïcödé":                   "ünïcödé",
		strings.Repeat("é", 100):    strings.Repeat("é", 64),
		"tab\there":                 "tab\uFFFDhere",
		"\u202eright-to-left trick": "\uFFFDright-to-left trick",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func i64(n int64) *int64   { return &n }
func u32(n uint32) *uint32 { return &n }

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
