package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Vectors from research/espota.md §1.5 and §1.6 (computed there with Python
// hashlib, independently of this code).
const (
	vecPassword  = "admin"
	vecMD5Pass   = "21232f297a57a5a743894a0e4a801fc3"
	vecSHAPass   = "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918"
	vecNonce32   = "0123456789abcdef0123456789abcdef"
	vecCnonce32  = "fedcba9876543210fedcba9876543210"
	vecNonce64   = vecNonce32 + vecNonce32
	vecCnonce64  = vecCnonce32 + vecCnonce32
	vecCnonceTxt = "firmware.bin500043cf0d4451296b4563f1eb7d859d00e2192.168.1.50"
)

func TestHashHex(t *testing.T) {
	tests := []struct {
		name string
		fn   func([]byte) string
		in   string
		want string
	}{
		{"md5 admin", MD5Hex, vecPassword, vecMD5Pass},
		{"sha256 admin", SHA256Hex, vecPassword, vecSHAPass},
		{"md5 empty", MD5Hex, "", "d41d8cd98f00b204e9800998ecf8427e"},
		{"sha256 empty", SHA256Hex, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"md5 cnonce text", MD5Hex, vecCnonceTxt, "6930ee10f95eda65b223fc7022f7b0fd"},
		{"sha256 cnonce text", SHA256Hex, vecCnonceTxt, "a94ad4f64d55d0b0a0ab3f58ec02519b4ce0d2e5b2d4f1937db9731794f88a0e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.fn([]byte(tt.in)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPasswordHashes(t *testing.T) {
	pw := NewSecret(vecPassword)
	if got := EspotaPasswordHashMD5(pw).Reveal(); got != vecMD5Pass {
		t.Errorf("md5 hash = %s, want %s", got, vecMD5Pass)
	}
	if got := EspotaPasswordHashSHA256(pw).Reveal(); got != vecSHAPass {
		t.Errorf("sha256 hash = %s, want %s", got, vecSHAPass)
	}
	if !EspotaPasswordHashMD5(Secret{}).IsZero() || !EspotaPasswordHashSHA256(NewSecret("")).IsZero() {
		t.Error("hash of the empty secret should be empty (no password set)")
	}
}

func TestEspotaResponses(t *testing.T) {
	tests := []struct {
		name     string
		fn       func(string, string, string) string
		passHash string
		nonce    string
		cnonce   string
		want     string
	}{
		{"legacy md5", EspotaMD5Response, vecMD5Pass, vecNonce32, vecCnonce32, "199cd366606a4c7b55e82b1277ecd8ec"},
		{"pbkdf2 sha256 pass", EspotaPBKDF2Response, vecSHAPass, vecNonce64, vecCnonce64, "f2c591596d5b9942c3f15cb8290866f4676fc5eec1bba3b040a91f92474fa114"},
		{"pbkdf2 md5 pass fallback", EspotaPBKDF2Response, vecMD5Pass, vecNonce64, vecCnonce64, "506e9a94cc2374adf7c4f8480beb70ff1a7921bc09681d36b6280b41c004f4d7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.fn(tt.passHash, tt.nonce, tt.cnonce); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestEspotaCnonce(t *testing.T) {
	tests := []struct {
		long bool
		want string
	}{
		{false, "6930ee10f95eda65b223fc7022f7b0fd"},
		{true, "a94ad4f64d55d0b0a0ab3f58ec02519b4ce0d2e5b2d4f1937db9731794f88a0e"},
	}
	for _, tt := range tests {
		got := EspotaCnonce("firmware.bin", 5000, "43cf0d4451296b4563f1eb7d859d00e2", "192.168.1.50", tt.long)
		if got != tt.want {
			t.Errorf("long=%v: got %s, want %s", tt.long, got, tt.want)
		}
	}
}

func TestConstantTimeEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"ABC", "abc", false}, // the firmware compares case-sensitively
	}
	for _, tt := range tests {
		if got := ConstantTimeEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("ConstantTimeEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	if !NewSecret("x").Equal(NewSecret("x")) || NewSecret("x").Equal(NewSecret("y")) {
		t.Error("Secret.Equal compares values")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "hunter2-SECRET"
	s := NewSecret(value)
	if s.Reveal() != value || s.IsZero() {
		t.Fatalf("Reveal() = %q, IsZero() = %v", s.Reveal(), s.IsZero())
	}

	type exported struct {
		Name string
		Pass Secret
	}
	type unexported struct {
		name string
		pass Secret
	}
	type withPtr struct {
		Pass *Secret
	}
	values := []any{s, &s, exported{"n", s}, &exported{"n", s}, unexported{"n", s}, withPtr{&s}, []Secret{s}, map[string]Secret{"k": s}}
	verbs := []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%T %v"}
	for _, v := range values {
		for _, verb := range verbs {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, value) || strings.Contains(out, "hunter") {
				t.Errorf("fmt %s of %T leaked: %s", verb, v, out)
			}
		}
	}
	if out := fmt.Sprint(s) + fmt.Sprintln(s) + s.String() + s.GoString(); strings.Contains(out, value) {
		t.Errorf("Sprint leaked: %s", out)
	}
	if out := fmt.Sprint(s); out != Redacted {
		t.Errorf("Sprint = %q, want %q", out, Redacted)
	}

	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("login", "password", s, "cfg", exported{"n", s}, slog.Any("ptr", &s), slog.Group("g", "p", s))
		l.With("pw", s).Warn("again")
	}
	if strings.Contains(buf.String(), value) {
		t.Errorf("slog leaked: %s", buf.String())
	}
	if !strings.Contains(buf.String(), Redacted) {
		t.Errorf("slog output lacks the redaction marker: %s", buf.String())
	}

	j, err := json.Marshal(exported{"n", s})
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	if strings.Contains(string(j), value) {
		t.Errorf("json leaked: %s", j)
	}

	var zero Secret
	if !zero.IsZero() || zero.Reveal() != "" || !NewSecret("").IsZero() {
		t.Error("zero Secret should be empty")
	}
}
