package core

import (
	"strings"
	"testing"
)

func TestParseBehaviourSpec(t *testing.T) {
	good := []struct {
		in      string
		version string
		b       Behaviour
	}{
		{"1.0.2=crash-on-boot", "1.0.2", CrashOnBoot},
		{" 2.0.0 = Unstable ", "2.0.0", Unstable},
		{"v3=no-network", "v3", NoNetwork},
		{"1.0=unconfirmed", "1.0", Unconfirmed},
		{"1.0=healthy", "1.0", Healthy},
		{"1.0=", "1.0", Healthy},
	}
	for _, c := range good {
		v, b, err := ParseBehaviourSpec(c.in)
		if err != nil || v != c.version || b != c.b {
			t.Errorf("%q: %q %q %v", c.in, v, b, err)
		}
	}
	for _, in := range []string{"", "crash-on-boot", "=crash-on-boot", "1.0=explode", "1.0"} {
		if _, _, err := ParseBehaviourSpec(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if _, err := ParseBehaviourSpecs([]string{"1=unstable", "1=healthy"}); err == nil {
		t.Error("duplicate version accepted")
	}
	m, err := ParseBehaviourSpecs([]string{"1=unstable", "2=no-network"})
	if err != nil || m["1"] != Unstable || m["2"] != NoNetwork {
		t.Errorf("%v %v", m, err)
	}
}

func TestParseBehaviourKeys(t *testing.T) {
	good := map[string]string{
		"@uploaded=crash-on-boot":                     "@uploaded",
		"elf:ABCDEF12=foreign-elf":                    "elf:abcdef12",
		"1.0.1=crash-loop":                            "1.0.1",
		"0.9=crash-to-factory":                        "0.9",
		"elf:" + strings.Repeat("a", 64) + "=healthy": "elf:" + strings.Repeat("a", 64),
	}
	for in, key := range good {
		k, _, err := ParseBehaviourSpec(in)
		if err != nil || k != key {
			t.Errorf("%q: %q %v", in, k, err)
		}
	}
	for _, in := range []string{"elf:abc=healthy", "elf:" + strings.Repeat("a", 65) + "=healthy", "elf:zzzzzzzz=healthy", "@later=healthy", strings.Repeat("v", 32) + "=healthy"} {
		if _, _, err := ParseBehaviourSpec(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
