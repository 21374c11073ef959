package espota

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const md5A = "43cf0d4451296b4563f1eb7d859d00e2"

func TestParseInt(t *testing.T) {
	tests := []struct {
		in     string
		flavor Flavor
		want   int
		rest   string
	}{
		{"0 1", ESP32, 0, " 1"},
		{"   42x", ESP32, 42, "x"},
		{"100", ESP32, 100, ""},
		{"-5", ESP32, 0, "-5"}, // no sign: nothing consumed
		{"+5", ESP32, 0, "+5"},
		{"", ESP32, 0, ""},
		{"12345678901234 ", ESP32, maxInt32, " "}, // 14 digits fit, atoi saturates
		{"123456789012345 ", ESP32, 0, " "},       // 15 digits fill ESP32's buffer → 0
		{"123456789012345 ", ESP8266, maxInt32, " "},
		{"1234567890123456 ", ESP8266, 0, " "}, // 16 digits fill ESP8266's buffer → 0
		{"2147483647", ESP32, 2147483647, ""},
		{"2147483648", ESP32, maxInt32, ""},
		{"000000000000007z", ESP8266, 7, "z"},
		{"\t5", ESP32, 0, "\t5"}, // only spaces are skipped
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%q", tt.flavor, tt.in), func(t *testing.T) {
			p := &pkt{b: []byte(tt.in)}
			if got := p.parseInt(intSlots(tt.flavor)); got != tt.want {
				t.Errorf("parseInt = %d, want %d", got, tt.want)
			}
			if rest := string(p.b[p.i:]); rest != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func TestParseInvitation(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		flavor Flavor
		want   invitation
		ok     bool
	}{
		{"espota flash", "0 45678 5000 " + md5A + "\n", ESP32, invitation{0, 45678, 5000, md5A}, true},
		{"spiffs", "100 1 2 " + md5A + "\n", ESP8266, invitation{100, 1, 2, md5A}, true},
		{"no newline", "0 45678 5000 " + md5A, ESP32, invitation{0, 45678, 5000, md5A}, true},
		{"crlf trimmed", "0 45678 5000 " + md5A + "\r\n", ESP32, invitation{0, 45678, 5000, md5A}, true},
		{"extra spaces trimmed", "0   45678   5000   " + md5A + "  \n", ESP32, invitation{0, 45678, 5000, md5A}, true},
		{"uppercase kept", "0 1 2 " + strings.ToUpper(md5A) + "\n", ESP32, invitation{0, 1, 2, strings.ToUpper(md5A)}, true},
		{"nul ends md5", "0 1 2 " + md5A + "\x00junk", ESP32, invitation{0, 1, 2, md5A}, true},
		{"trailing junk after LF", "0 1 2 " + md5A + "\nmore", ESP32, invitation{0, 1, 2, md5A}, true},
		{"port wraps later", "0 70000 2 " + md5A + "\n", ESP32, invitation{0, 70000, 2, md5A}, true},
		{"any separator byte", "0 1 2x" + md5A + "\n", ESP32, invitation{0, 1, 2, md5A}, true},
		{"non-hex md5 of 32", "0 1 2 " + strings.Repeat("z", 32) + "\n", ESP32, invitation{0, 1, 2, strings.Repeat("z", 32)}, true},
		{"cmd 200", "200 1 2 " + md5A + "\n", ESP32, invitation{}, false},
		{"cmd 5", "5 1 2 " + md5A + "\n", ESP32, invitation{}, false},
		{"garbage", "hello", ESP32, invitation{}, false},
		{"empty", "", ESP8266, invitation{}, false},
		{"md5 31", "0 1 2 " + md5A[:31] + "\n", ESP32, invitation{}, false},
		{"md5 33", "0 1 2 " + md5A + "a\n", ESP32, invitation{}, false},
		{"md5 missing", "0 1 2\n", ESP32, invitation{}, false},
		{"double separator", "0 1 2  " + md5A + "\n", ESP32, invitation{0, 1, 2, md5A}, true}, // trim saves it
		// A full digit buffer makes parseInt return 0, which is U_FLASH.
		{"cmd 15 digits esp32 reads as 0", "100000000000000 1 2 " + md5A, ESP32, invitation{0, 1, 2, md5A}, true},
		{"cmd 15 digits esp8266 saturates", "100000000000000 1 2 " + md5A, ESP8266, invitation{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, ok := parseInvitation([]byte(tt.in), tt.flavor)
			if ok != tt.ok || got != tt.want {
				t.Errorf("got %+v ok=%v (%s), want %+v ok=%v", got, ok, reason, tt.want, tt.ok)
			}
			if !ok && reason == "" {
				t.Error("a rejected invitation needs a reason")
			}
		})
	}
}

func TestParseAuth(t *testing.T) {
	c32, r32 := strings.Repeat("c", 32), strings.Repeat("r", 32)
	c64, r64 := strings.Repeat("c", 64), strings.Repeat("r", 64)
	tests := []struct {
		name string
		in   string
		n    int
		ok   bool
	}{
		{"md5", "200 " + c32 + " " + r32 + "\n", 32, true},
		{"md5 no LF", "200 " + c32 + " " + r32, 32, true},
		{"pbkdf2", "200 " + c64 + " " + r64 + "\n", 64, true},
		{"short fields to pbkdf2 device", "200 " + c32 + " " + r32 + "\n", 64, false},
		{"CRLF makes response 33", "200 " + c32 + " " + r32 + "\r\n", 32, false},
		{"cnonce 31", "200 " + c32[:31] + " " + r32 + "\n", 32, false},
		{"response 33", "200 " + c32 + " " + r32 + "x\n", 32, false},
		{"two spaces", "200  " + c32 + " " + r32 + "\n", 32, false},
		{"resent invitation", "0 1 2 " + md5A + "\n", 32, false},
		{"empty", "", 32, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, reason, ok := parseAuth([]byte(tt.in), ESP32, tt.n)
			if ok != tt.ok {
				t.Fatalf("ok = %v (%s), want %v", ok, reason, tt.ok)
			}
			if ok && (len(a.cnonce) != tt.n || len(a.response) != tt.n) {
				t.Errorf("fields %q %q", a.cnonce, a.response)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		name   string
		flavor Flavor
		err    error
		want   string
	}{
		{"esp32 magic", ESP32, NewUpdateError(ESP32, ErrKindMagicByte), "Wrong Magic Byte\r\n"},
		{"esp32 plain error", ESP32, errors.New("MD5 Check Failed"), "MD5 Check Failed\r\n"},
		{"esp32 wrapped", ESP32, fmt.Errorf("ctx: %w", NewUpdateError(ESP32, ErrKindSpace)), "Not Enough Space\r\n"},
		{"esp8266 space", ESP8266, NewUpdateError(ESP8266, ErrKindSpace), "ERROR[4]: Not Enough Space\n"},
		{"esp8266 md5", ESP8266, NewMD5Error(ESP8266, "aa", "bb"), "ERROR[7]: MD5 verification failed: expected: aa, calculated: bb\n"},
		{"esp8266 plain known text", ESP8266, errors.New("Flash Write Failed"), "ERROR[1]: Flash Write Failed\n"},
		{"esp8266 esp32 text mapped", ESP8266, errors.New("Wrong Magic Byte"), "ERROR[10]: Wrong Magic Byte\n"},
		{"esp8266 unknown", ESP8266, errors.New("weird"), "ERROR[255]: weird\n"},
		{"esp8266 esp32-only kind", ESP8266, NewUpdateError(ESP8266, ErrKindActivate), "ERROR[255]: UNKNOWN\n"},
		{"esp32 md5 helper", ESP32, NewMD5Error(ESP32, "aa", "bb"), "MD5 Check Failed\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorText(tt.flavor, tt.err); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFlavor(t *testing.T) {
	for _, s := range []string{"esp32", "ESP8266", " esp32 "} {
		f, err := ParseFlavor(s)
		if err != nil {
			t.Fatalf("ParseFlavor(%q): %v", s, err)
		}
		if got := strings.ToLower(strings.TrimSpace(s)); f.String() != got {
			t.Errorf("round trip %q → %s", s, f)
		}
	}
	if _, err := ParseFlavor("esp32c3"); err == nil {
		t.Error("unknown flavor accepted")
	}
	if ESP32.DefaultPort() != 3232 || ESP8266.DefaultPort() != 8266 {
		t.Error("default ports")
	}
}

func FuzzParseInvitation(f *testing.F) {
	f.Add([]byte("0 45678 5000 "+md5A+"\n"), false)
	f.Add([]byte("100 1 2 "+md5A), true)
	f.Add([]byte("200 "+md5A+" "+md5A+"\n"), false)
	f.Add([]byte("999999999999999999999 1 1 x"), true)
	f.Add([]byte("\x00\xff 0"), false)
	f.Add([]byte(""), true)
	f.Fuzz(func(t *testing.T, b []byte, esp8266 bool) {
		fl := ESP32
		if esp8266 {
			fl = ESP8266
		}
		inv, reason, ok := parseInvitation(b, fl)
		if ok {
			if len(inv.md5) != 32 || (inv.cmd != CmdFlash && inv.cmd != CmdFS) || inv.size < 0 || inv.port < 0 {
				t.Fatalf("accepted an invalid invitation %+v", inv)
			}
		} else if reason == "" {
			t.Fatal("rejection without reason")
		}
		a, _, ok := parseAuth(b, fl, 32)
		if ok && (len(a.cnonce) != 32 || len(a.response) != 32) {
			t.Fatalf("accepted bad auth %+v", a)
		}
	})
}

func FuzzParseAuth(f *testing.F) {
	f.Add([]byte("200 "+strings.Repeat("a", 64)+" "+strings.Repeat("b", 64)+"\n"), 64)
	f.Add([]byte("200 "+md5A+" "+md5A), 32)
	f.Add([]byte("200"), 32)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		a, reason, ok := parseAuth(b, ESP32, n)
		if ok && (len(a.cnonce) != n || len(a.response) != n || strings.Contains(a.cnonce, " ")) {
			t.Fatalf("accepted bad auth %+v", a)
		}
		if !ok && reason == "" {
			t.Fatal("rejection without reason")
		}
	})
}
