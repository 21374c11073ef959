// Package ifaceguard keeps tests on the interfaces they are allowed: when
// OTS_OTA_TEST_IFACES names interfaces (a comma list, e.g. "lo"), every
// mDNS socket the product opens — the client's browse and resolve, the
// simulator's responder — refuses any other interface. Tests set it (the
// script tests, every package that browses in-process), so a test run
// outside a private network namespace still sends nothing to the network.
package ifaceguard

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// Env is the variable that names the allowed interfaces.
const Env = "OTS_OTA_TEST_IFACES"

// Allowed returns the allowed interface names and whether the guard is on.
// An unset or empty variable means no restriction.
func Allowed() ([]string, bool) {
	var names []string
	for n := range strings.SplitSeq(os.Getenv(Env), ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return names, len(names) > 0
}

// Check refuses the interface named name when the guard is on and does
// not list it.
func Check(name string) error {
	names, on := Allowed()
	if !on || slices.Contains(names, name) {
		return nil
	}
	return fmt.Errorf("network interface %s is not in %s=%s (tests stay on those interfaces)", name, Env, strings.Join(names, ","))
}

// Filter keeps the interfaces the guard allows (all of them when it is off).
func Filter(ifs []*net.Interface) []*net.Interface {
	if _, on := Allowed(); !on {
		return ifs
	}
	var out []*net.Interface
	for _, ifi := range ifs {
		if Check(ifi.Name) == nil {
			out = append(out, ifi)
		}
	}
	return out
}

// LoopbackNames lists the loopback interfaces' names ("lo" on Linux,
// "lo0" on macOS), for tests to set Env to; "lo" when none is found.
func LoopbackNames() string {
	ifs, err := net.Interfaces()
	var names []string
	if err == nil {
		for _, ifi := range ifs {
			if ifi.Flags&net.FlagLoopback != 0 {
				names = append(names, ifi.Name)
			}
		}
	}
	if len(names) == 0 {
		return "lo"
	}
	return strings.Join(names, ",")
}

// LoopbackOnly turns the guard on for loopback, unless Env is already set:
// tests that browse call it from TestMain, so that neither they nor the
// processes they start can send mDNS to a real network.
func LoopbackOnly() {
	if _, on := Allowed(); !on {
		os.Setenv(Env, LoopbackNames())
	}
}
