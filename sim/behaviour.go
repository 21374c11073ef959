package sim

import (
	"fmt"
	"sort"
	"strings"
)

// Behaviour is what an image does when it boots. Behaviours are chosen by
// the image's version (Config.Behaviours, the CLI's --behave 1.0.2=crash-on-boot).
type Behaviour string

// The behaviours. On ESP32 personalities the bootloader rolls back
// (ESP-IDF app rollback); the ESP8266 has no rollback, so a bad image there
// keeps failing.
const (
	// Healthy boots, answers and marks itself valid after Timing.ValidAfter.
	Healthy Behaviour = "healthy"
	// CrashOnBoot crashes Timing.CrashAfter into the boot, before the network
	// is up and before it could be marked valid → the bootloader marks it
	// aborted and boots the previous slot.
	CrashOnBoot Behaviour = "crash-on-boot"
	// Unstable boots and answers, but its self-check fails at the end of the
	// stability window: it marks itself invalid and reboots → rollback
	// (esp_ota_mark_app_invalid_rollback_and_reboot).
	Unstable Behaviour = "unstable"
	// NoNetwork boots but never answers; the watchdog resets it after
	// Timing.WatchdogAfter → rollback.
	NoNetwork Behaviour = "no-network"
	// Unconfirmed boots and answers but never marks itself valid (the seed's
	// "will rollback on next boot" branch): it stays pending_verify, refuses
	// new uploads ("OTA begin failed") and rolls back at the next reset.
	Unconfirmed Behaviour = "unconfirmed"
)

// Behaviours lists every behaviour.
func Behaviours() []Behaviour {
	return []Behaviour{Healthy, CrashOnBoot, Unstable, NoNetwork, Unconfirmed}
}

// ParseBehaviour reads a behaviour name; "" is Healthy.
func ParseBehaviour(s string) (Behaviour, error) {
	b := Behaviour(strings.ToLower(strings.TrimSpace(s)))
	if b == "" {
		return Healthy, nil
	}
	for _, k := range Behaviours() {
		if b == k {
			return b, nil
		}
	}
	return "", fmt.Errorf("unknown behaviour %q (want %s)", s, joinBehaviours())
}

func joinBehaviours() string {
	var names []string
	for _, b := range Behaviours() {
		names = append(names, string(b))
	}
	return strings.Join(names, ", ")
}

// ParseBehaviourSpec reads "VERSION=BEHAVIOUR", the CLI's --behave syntax.
func ParseBehaviourSpec(s string) (version string, b Behaviour, err error) {
	v, name, ok := strings.Cut(s, "=")
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return "", "", fmt.Errorf("behaviour %q: want VERSION=BEHAVIOUR, e.g. 1.0.2=crash-on-boot", s)
	}
	b, err = ParseBehaviour(name)
	if err != nil {
		return "", "", fmt.Errorf("behaviour %q: %w", s, err)
	}
	return v, b, nil
}

// ParseBehaviourSpecs reads several --behave values into a map; a version
// given twice is an error.
func ParseBehaviourSpecs(specs []string) (map[string]Behaviour, error) {
	m := make(map[string]Behaviour, len(specs))
	for _, s := range specs {
		v, b, err := ParseBehaviourSpec(s)
		if err != nil {
			return nil, err
		}
		if _, dup := m[v]; dup {
			return nil, fmt.Errorf("behaviour for version %q given twice", v)
		}
		m[v] = b
	}
	return m, nil
}

// formatBehaviours renders a map in a stable order (for logs).
func formatBehaviours(m map[string]Behaviour) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, m[k])
	}
	return b.String()
}
