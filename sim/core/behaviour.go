package core

import (
	"fmt"
	"sort"
	"strings"
)

// Behaviour is what an image does when it boots. Behaviours are chosen by
// a key naming the image (Config.Behaviours, the CLI's --behave
// 1.0.2=crash-on-boot): its version; "elf:" and a prefix of its ELF SHA-256
// (at least 8 hex digits), to tell apart two builds of one version; or
// BehaveUploaded, every image the device received by upload (not the ones
// it was started with). An ELF key wins over a version key, which wins over
// BehaveUploaded; an image no key names is Healthy.
type Behaviour string

// BehaveUploaded is the Behaviours key for every image that arrived by upload.
const BehaveUploaded = "@uploaded"

// behaveELFPrefix starts a Behaviours key naming an image by its ELF SHA-256.
const behaveELFPrefix = "elf:"

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
	// ForeignELF is installed as another build of the same version: the
	// device boots and keeps it like Healthy, but what it runs, and tells
	// as elf_sha256, is not the ELF of the image that was sent.
	ForeignELF Behaviour = "foreign-elf"
	// CrashToFactory crashes like CrashOnBoot, and its crash path erases
	// otadata (a boot-loop counter or recovery pin doing a factory reset):
	// the bootloader boots the factory app, which may be a third image
	// (Config.FactoryVersion) rather than the one that ran before. ESP-IDF
	// personalities only (the Arduino table has no factory app).
	CrashToFactory Behaviour = "crash-to-factory"
	// CrashLoop marks itself valid at start (as initArduino() does) and
	// then crashes before the network is up, so the bootloader has nothing
	// to roll back: it boot-loops, and after CrashLoopCount crashes the
	// firmware's boot counter sets the previously running slot as the boot
	// partition (esp_ota_set_boot_partition) and restarts: the device comes
	// back on the old image. Not on ESP8266 (no second slot to go back to
	// in its model).
	CrashLoop Behaviour = "crash-loop"
)

// CrashLoopCount is how many crashes CrashLoop's boot counter allows.
const CrashLoopCount = 3

// Behaviours lists every behaviour.
func Behaviours() []Behaviour {
	return []Behaviour{Healthy, CrashOnBoot, Unstable, NoNetwork, Unconfirmed, ForeignELF, CrashToFactory, CrashLoop}
}

// checkBehaviourKey says whether k can name an image.
func checkBehaviourKey(k string) error {
	if hexPart, ok := strings.CutPrefix(k, behaveELFPrefix); ok {
		if len(hexPart) < 8 || len(hexPart) > 64 || strings.Trim(strings.ToLower(hexPart), "0123456789abcdef") != "" {
			return fmt.Errorf("%q: want elf: and 8 to 64 hex digits of the image's ELF SHA-256", k)
		}
		return nil
	}
	if strings.HasPrefix(k, "@") && k != BehaveUploaded {
		return fmt.Errorf("%q: the only @ key is %s", k, BehaveUploaded)
	}
	if k == "" || len(k) > 31 {
		return fmt.Errorf("%q: want an image version (1 to 31 bytes), elf:HEX or %s", k, BehaveUploaded)
	}
	return nil
}

// lookupBehaviour picks the behaviour of an image from m (see Behaviour
// for the keys' precedence).
func lookupBehaviour(m map[string]Behaviour, info imgInfo, uploaded bool) Behaviour {
	if info.ELFSHA256 != "" {
		for k, b := range m {
			if h, ok := strings.CutPrefix(k, behaveELFPrefix); ok && strings.HasPrefix(info.ELFSHA256, strings.ToLower(h)) {
				return b
			}
		}
	}
	if b, ok := m[info.Version]; ok {
		return b
	}
	if b, ok := m[BehaveUploaded]; ok && uploaded {
		return b
	}
	return Healthy
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

// ParseBehaviourSpec reads "KEY=BEHAVIOUR", the CLI's --behave syntax; KEY
// is a version, elf:HEX or @uploaded (see Behaviour).
func ParseBehaviourSpec(s string) (key string, b Behaviour, err error) {
	v, name, ok := strings.Cut(s, "=")
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return "", "", fmt.Errorf("behaviour %q: want VERSION=BEHAVIOUR, e.g. 1.0.2=crash-on-boot (or elf:HEX=…, @uploaded=…)", s)
	}
	if err := checkBehaviourKey(v); err != nil {
		return "", "", fmt.Errorf("behaviour %q: %w", s, err)
	}
	if h, ok := strings.CutPrefix(v, behaveELFPrefix); ok {
		v = behaveELFPrefix + strings.ToLower(h)
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
			return nil, fmt.Errorf("behaviour for %q given twice", v)
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
