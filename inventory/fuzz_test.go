package inventory

import (
	"strings"
	"testing"
)

// FuzzParse: any config file either parses into a valid inventory or is
// refused with a one-line reason; it never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("inventory:\n  - host: 1.2.3.4\n"))
	f.Add([]byte("inventory:\n  devices:\n    - {name: a, address: b, password: c}\n"))
	f.Add([]byte("inventory: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := Parse(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(err.Error(), "device") && !strings.Contains(err.Error(), "group") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if err := inv.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid inventory: %v", err)
		}
	})
}

// FuzzAddToYAML: adding devices keeps a parseable file with every entry it
// had, or refuses the file.
func FuzzAddToYAML(f *testing.F) {
	f.Add([]byte(sample), "ots-sim-01", "127.0.0.2")
	f.Add([]byte(""), "a", "b")
	f.Add([]byte("# only a comment\n"), "x", "10.0.0.1")
	f.Fuzz(func(t *testing.T, b []byte, name, addr string) {
		before, err := Parse(b)
		if err != nil {
			return
		}
		out, added, err := AddToYAML(b, []Device{{Name: name, Address: addr}})
		if err != nil {
			return
		}
		after, err := Parse(out)
		if err != nil {
			t.Fatalf("result does not parse: %v\n%s", err, out)
		}
		if len(after.Devices) != len(before.Devices)+len(added) {
			t.Fatalf("%d devices, want %d + %d", len(after.Devices), len(before.Devices), len(added))
		}
		for i, d := range before.Devices {
			if after.Devices[i] != d {
				t.Fatalf("entry %d changed: %+v → %+v", i, d, after.Devices[i])
			}
		}
	})
}
