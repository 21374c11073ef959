package tasmota

import (
	"strings"
	"testing"
)

func TestTopicsFromPatterns(t *testing.T) {
	pre := Options{}.prefixes()
	for _, tc := range []struct {
		pattern, dev   string
		cmnd, tele, st string // topics of Backlog, LWT, RESULT
	}{
		{"", "tasmota_1A2B3C", "cmnd/tasmota_1A2B3C/Backlog", "tele/tasmota_1A2B3C/LWT", "stat/tasmota_1A2B3C/RESULT"},
		{"%prefix%/%topic%/", "dev", "cmnd/dev/Backlog", "tele/dev/LWT", "stat/dev/RESULT"},
		{"tasmota/%topic%/%prefix%/", "dev", "tasmota/dev/cmnd/Backlog", "tasmota/dev/tele/LWT", "tasmota/dev/stat/RESULT"},
		{"%prefix%/%hostname%/", "kitchen-4711", "cmnd/kitchen-4711/Backlog", "tele/kitchen-4711/LWT", "stat/kitchen-4711/RESULT"},
		{"home/%id%", "A0B1C2D3E4F5", "home/A0B1C2D3E4F5/cmnd/Backlog", "home/A0B1C2D3E4F5/LWT", "home/A0B1C2D3E4F5/RESULT"},
		// Tasmota drops "#", turns "//" into "/" once over, ends with "/".
		{"%prefix%//%topic%#", "dev", "cmnd/dev/Backlog", "tele/dev/LWT", "stat/dev/RESULT"},
		{"%prefix%/x-%topic%/", "dev", "cmnd/x-dev/Backlog", "tele/x-dev/LWT", "stat/x-dev/RESULT"},
	} {
		p, err := parsePattern(tc.pattern)
		if err != nil {
			t.Errorf("%q: %v", tc.pattern, err)
			continue
		}
		if got := p.topic(pre, prefCmnd, tc.dev, "Backlog"); got != tc.cmnd {
			t.Errorf("%q cmnd: %q, want %q", tc.pattern, got, tc.cmnd)
		}
		if got := p.topic(pre, prefTele, tc.dev, "LWT"); got != tc.tele {
			t.Errorf("%q tele: %q, want %q", tc.pattern, got, tc.tele)
		}
		if got := p.topic(pre, prefStat, tc.dev, "RESULT"); got != tc.st {
			t.Errorf("%q stat: %q, want %q", tc.pattern, got, tc.st)
		}
		// The matcher of every device finds this device in its topic.
		for _, c := range []struct {
			i     int
			sub   string
			topic string
		}{{prefTele, "LWT", tc.tele}, {prefStat, "RESULT", tc.st}} {
			m := p.matcher(pre, c.i, c.sub)
			if !strings.Contains(m.filter, "+") || strings.Contains(m.filter, "#") {
				t.Errorf("%q: filter %q", tc.pattern, m.filter)
			}
			if dev, ok := m.device(c.topic); !ok || dev != tc.dev {
				t.Errorf("%q: %q in %q: %q %v", tc.pattern, m.filter, c.topic, dev, ok)
			}
		}
	}
}

func TestCustomPrefixes(t *testing.T) {
	pre := Options{CmndPrefix: "c", TelePrefix: "site/t"}.prefixes()
	p, _ := parsePattern("")
	if got := p.topic(pre, prefCmnd, "d", "Status"); got != "c/d/Status" {
		t.Error(got)
	}
	if got := p.topic(pre, prefStat, "d", "RESULT"); got != "stat/d/RESULT" {
		t.Error(got)
	}
	m := p.matcher(pre, prefTele, "LWT")
	if m.filter != "site/t/+/LWT" {
		t.Error(m.filter)
	}
	if d, ok := m.device("site/t/d/LWT"); !ok || d != "d" {
		t.Error(d, ok)
	}
}

func TestMatcherRefuses(t *testing.T) {
	pre := Options{}.prefixes()
	p, _ := parsePattern("%prefix%/x-%topic%/")
	m := p.matcher(pre, prefTele, "LWT")
	for _, topic := range []string{"tele/y-dev/LWT", "tele/x-/LWT", "tele/x-a/b/LWT", "stat/x-a/LWT", "tele/x-a/LWT2"} {
		if d, ok := m.device(topic); ok {
			t.Errorf("%q matched as %q", topic, d)
		}
	}
	// A pattern holding the device twice wants the same key in both.
	p2, err := parsePattern("%prefix%/%topic%/%topic%/")
	if err != nil {
		t.Fatal(err)
	}
	m2 := p2.matcher(pre, prefTele, "LWT")
	if d, ok := m2.device("tele/a/a/LWT"); !ok || d != "a" {
		t.Error(d, ok)
	}
	if _, ok := m2.device("tele/a/b/LWT"); ok {
		t.Error("two keys taken")
	}
}

func TestPatternErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"%prefix%/static/", "names no device"},
		{"%prefix%/%topic%/%hostname%/", "names the device twice"},
		{"%prefix%/+/%topic%/", "holds a character"},
	} {
		err := CheckFullTopic(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v", tc.pattern, err)
		}
	}
	for _, k := range []string{"", "a/b", "a+", "#", "a\x00"} {
		if _, err := FullTopic("", k); err == nil {
			t.Errorf("key %q taken", k)
		}
	}
	if got, err := FullTopic("", "dev"); err != nil || got != "cmnd/dev/" {
		t.Error(got, err)
	}
}
