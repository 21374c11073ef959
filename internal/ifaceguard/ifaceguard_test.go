package ifaceguard

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestGuard(t *testing.T) {
	ifs := []*net.Interface{{Name: "lo"}, {Name: "eth0"}, {Name: "wlan0"}}
	for _, c := range []struct {
		env     string
		on      bool
		allowed []string // of ifs, by Filter
		refused string   // a name Check refuses ("" = none)
	}{
		{env: "", on: false, allowed: []string{"lo", "eth0", "wlan0"}},
		{env: " , ", on: false, allowed: []string{"lo", "eth0", "wlan0"}},
		{env: "lo", on: true, allowed: []string{"lo"}, refused: "eth0"},
		{env: "lo, wlan0", on: true, allowed: []string{"lo", "wlan0"}, refused: "eth0"},
		{env: "lo0", on: true, allowed: nil, refused: "lo"},
	} {
		t.Setenv(Env, c.env)
		if _, on := Allowed(); on != c.on {
			t.Errorf("%q: on = %v, want %v", c.env, on, c.on)
		}
		var got []string
		for _, ifi := range Filter(ifs) {
			got = append(got, ifi.Name)
		}
		if !reflect.DeepEqual(got, c.allowed) {
			t.Errorf("%q: Filter kept %v, want %v", c.env, got, c.allowed)
		}
		for _, n := range c.allowed {
			if err := Check(n); err != nil {
				t.Errorf("%q: Check(%s) = %v", c.env, n, err)
			}
		}
		if c.refused != "" {
			err := Check(c.refused)
			if err == nil {
				t.Errorf("%q: Check(%s) allowed it", c.env, c.refused)
			} else if msg := err.Error(); !strings.Contains(msg, c.refused) || !strings.Contains(msg, Env) || strings.Contains(msg, "\n") {
				t.Errorf("%q: Check(%s) = %q: want one line naming the interface and %s", c.env, c.refused, msg, Env)
			}
		}
	}
}

func TestLoopbackOnlyKeepsAGivenList(t *testing.T) {
	t.Setenv(Env, "veth-test")
	LoopbackOnly()
	if names, _ := Allowed(); !reflect.DeepEqual(names, []string{"veth-test"}) {
		t.Errorf("LoopbackOnly replaced the list: %v", names)
	}
	t.Setenv(Env, "")
	LoopbackOnly()
	if names, on := Allowed(); !on || !reflect.DeepEqual(names, strings.Split(LoopbackNames(), ",")) {
		t.Errorf("LoopbackOnly set %v (on %v), want the loopback names %s", names, on, LoopbackNames())
	}
}
