package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// probeOptions is a test command with one flag of each kind the loader
// handles: a string, a bool, a count and a repeatable list.
type probeOptions struct {
	Name  string
	On    bool
	Level int
	Items []string
	Deep  string
}

func (*probeOptions) validate(*app, []string) error { return nil }

// newProbeCmd is `probe` with a subcommand `probe deep`, both with the same
// flags; each prints its values and where they came from as JSON.
func newProbeCmd(a *app) *cobra.Command {
	mk := func(use string) *cobra.Command {
		o := &probeOptions{}
		c := &cobra.Command{Use: use, Args: argsNone}
		c.RunE = run(a, o, func(_ context.Context, a *app, o *probeOptions) error {
			a.writeLine(map[string]any{"name": o.Name, "on": o.On, "level": o.Level, "items": o.Items, "deep": o.Deep,
				"from": map[string]string{"name": a.source("name"), "on": a.source("on"), "level": a.source("level"), "items": a.source("items")}})
			return nil
		})
		c.Flags().StringVar(&o.Name, "name", "default", "")
		c.Flags().BoolVar(&o.On, "on", false, "")
		c.Flags().CountVar(&o.Level, "level", "")
		c.Flags().StringArrayVar(&o.Items, "items", []string{"default"}, "")
		c.Flags().StringVar(&o.Deep, "deep", "default", "a flag named like the subcommand")
		return c
	}
	probe := mk("probe")
	probe.AddCommand(mk("deep"))
	return probe
}

type probeResult struct {
	Name  string            `json:"name"`
	On    bool              `json:"on"`
	Level int               `json:"level"`
	Items []string          `json:"items"`
	Deep  string            `json:"deep"`
	From  map[string]string `json:"from"`
}

// runProbe runs ots-ota with the probe command added to the real tree.
func runProbe(t *testing.T, args []string) (probeResult, int, string) {
	t.Helper()
	streams, out, errOut := TestStreams()
	a := &app{io: streams, cfg: &config{origins: map[string]origin{}}}
	a.log = newLogger(streams.ErrOut, a.opts, a.start, &a.secrets)
	root := newRootCmd(a)
	root.AddCommand(newProbeCmd(a))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	var r probeResult
	if err == nil {
		if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
			t.Fatalf("%v: %v\n%s", args, jerr, out)
		}
	} else {
		fmt.Fprintln(errOut, err)
	}
	return r, exitCode(err), errOut.String()
}

// TestPrecedenceMatrix: flag > env > command section > top level > default,
// for every combination of places, for a string, a bool, a count and a list.
func TestPrecedenceMatrix(t *testing.T) {
	type kind struct {
		flag string
		// value at each place: flag, env, section, top level
		values [4]string
		// what the flag holds, as probeResult renders it
		got  func(probeResult) string
		def  string
		yaml func(v string) string // value as YAML
		arg  func(v string) []string
	}
	scalar := func(v string) string { return v }
	kinds := []kind{
		{flag: "name", values: [4]string{"typed", "fromenv", "fromsection", "fromtop"},
			got: func(r probeResult) string { return r.Name }, def: "default", yaml: scalar,
			arg: func(v string) []string { return []string{"--name", v} }},
		// A bool can only tell true from false: each case sets true at one
		// place and false at all lower-ranked ones, so the winner is visible.
		{flag: "on", values: [4]string{"true", "true", "true", "true"},
			got: func(r probeResult) string { return fmt.Sprint(r.On) }, def: "false", yaml: scalar,
			arg: func(v string) []string { return []string{"--on=" + v} }},
		{flag: "level", values: [4]string{"4", "3", "2", "1"},
			got: func(r probeResult) string { return fmt.Sprint(r.Level) }, def: "0", yaml: scalar,
			arg: func(v string) []string { return slices.Repeat([]string{"--level"}, atoi(v)) }},
		{flag: "items", values: [4]string{"t1,t2", "e1;e2", "s1;s2", "o1;o2"},
			got: func(r probeResult) string { return strings.Join(r.Items, "|") }, def: "default",
			yaml: func(v string) string { return "[" + strings.ReplaceAll(v, ";", ", ") + "]" },
			arg: func(v string) []string {
				var a []string
				for _, s := range strings.Split(v, ",") {
					a = append(a, "--items", s)
				}
				return a
			}},
	}
	want := func(k kind, place int) string {
		v := k.values[place]
		if k.flag == "items" {
			v = strings.NewReplacer(",", "|", ";", "|").Replace(v)
		}
		return v
	}
	places := []string{"flag", "env", "section", "top"}
	for _, k := range kinds {
		for mask := 0; mask < 16; mask++ {
			var set []string
			for i, p := range places {
				if mask&(1<<i) != 0 {
					set = append(set, p)
				}
			}
			name := k.flag + "/" + strings.Join(set, "+")
			if len(set) == 0 {
				name = k.flag + "/default"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				t.Setenv("XDG_CONFIG_HOME", dir)
				for _, f := range []string{"name", "on", "level", "items"} {
					t.Setenv(envName(f), "")
				}
				winner := -1
				for i := 3; i >= 0; i-- {
					if mask&(1<<i) != 0 {
						winner = i
					}
				}
				// For the bool, places below the winner say false.
				val := func(i int) string {
					if k.flag == "on" && i != winner {
						return "false"
					}
					return k.values[i]
				}
				var yaml strings.Builder
				if mask&8 != 0 {
					fmt.Fprintf(&yaml, "%s: %s\n", k.flag, k.yaml(val(3)))
				}
				if mask&4 != 0 {
					fmt.Fprintf(&yaml, "probe:\n  %s: %s\n", k.flag, k.yaml(val(2)))
				}
				cfg := filepath.Join(dir, "c.yaml")
				if err := os.WriteFile(cfg, []byte(yaml.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				if mask&2 != 0 {
					t.Setenv(envName(k.flag), val(1))
				}
				args := []string{"probe", "--config", cfg}
				if mask&1 != 0 {
					args = append(args, k.arg(val(0))...)
				}
				r, code, errOut := runProbe(t, args)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				exp := k.def
				if winner >= 0 {
					exp = want(k, winner)
				}
				if got := k.got(r); got != exp {
					t.Errorf("%s = %q, want %q (from %s)", k.flag, got, exp, r.From[k.flag])
				}
			})
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestSectionsNest: `probe deep` reads probe.deep, then probe, then the top level.
func TestSectionsNest(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("OTS_OTA_NAME", "")
	cfg := filepath.Join(dir, "c.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("name: top\nprobe:\n  name: mid\n  deep:\n    name: deep\n")
	if r, _, e := runProbe(t, []string{"probe", "deep", "--config", cfg}); r.Name != "deep" || r.From["name"] != cfg+":5: probe.deep.name" {
		t.Errorf("deep: %+v %s", r, e)
	}
	if r, _, e := runProbe(t, []string{"probe", "--config", cfg}); r.Name != "mid" {
		t.Errorf("probe: %+v %s", r, e)
	}
	write("name: top\nprobe:\n  name: mid\n")
	if r, _, e := runProbe(t, []string{"probe", "deep", "--config", cfg}); r.Name != "mid" {
		t.Errorf("deep from parent section: %+v %s", r, e)
	}
	write("name: top\n")
	if r, _, e := runProbe(t, []string{"probe", "deep", "--config", cfg}); r.Name != "top" || r.From["name"] != cfg+":1: name" {
		t.Errorf("deep from top: %+v %s", r, e)
	}
	// A key named like both a flag and a command: a value is the flag's, a
	// mapping the command's section.
	write("probe:\n  deep: flagvalue\n")
	if r, _, e := runProbe(t, []string{"probe", "--config", cfg}); r.Deep != "flagvalue" || strings.Contains(e, "warning") {
		t.Errorf("deep as a value: %+v %s", r, e)
	}
	write("probe:\n  deep:\n    name: n\n")
	if r, _, e := runProbe(t, []string{"probe", "--config", cfg}); r.Deep != "default" || strings.Contains(e, "warning") {
		t.Errorf("deep as a section, probe: %+v %s", r, e)
	}
	if r, _, e := runProbe(t, []string{"probe", "deep", "--config", cfg}); r.Name != "n" || r.Deep != "default" {
		t.Errorf("deep as a section, probe deep: %+v %s", r, e)
	}
}

// TestConfigErrors: bad values name the variable or the file, key and line.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	cfg := filepath.Join(dir, "c.yaml")
	cases := []struct {
		env, yaml string
		want      string
	}{
		{env: "OTS_OTA_ON=yes", want: "OTS_OTA_ON=yes: not a boolean (use true or false)"},
		{env: "OTS_OTA_LEVEL=lots", want: "OTS_OTA_LEVEL=lots: not a whole number"},
		{yaml: "probe:\n  on: maybe\n", want: cfg + ":2: probe.on: not a boolean"},
		{yaml: "name: [a, b]\n", want: cfg + ":1: name: a list, but --name takes one value"},
		{yaml: "probe:\n  name: {a: b}\n", want: cfg + ":2: probe.name: want a value, not a mapping"},
		{yaml: "name: [\n", want: cfg + ": line 1"},
		{yaml: "- a\n- b\n", want: cfg + ": want keys and values"},
	}
	for _, c := range cases {
		t.Setenv("OTS_OTA_ON", "")
		t.Setenv("OTS_OTA_LEVEL", "")
		if c.env != "" {
			k, v, _ := strings.Cut(c.env, "=")
			t.Setenv(k, v)
		}
		if err := os.WriteFile(cfg, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, code, errOut := runProbe(t, []string{"probe", "--config", cfg})
		if code != ExitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%q %q: exit %d, %q; want 2 and %q", c.env, c.yaml, code, errOut, c.want)
		}
	}
}

// TestConfigKeysDoNotCollide: a key of the config file means one thing. No
// flag or command is named like a data section. (A flag may share a command's
// name, like sim's --version and the version command: a mapping is the
// section, a value the flag's; TestSectionsNest checks that.)
func TestConfigKeysDoNotCollide(t *testing.T) {
	streams, _, _ := TestStreams()
	root := newRootCmd(&app{io: streams, cfg: &config{}})
	all := flagNames(root)
	for _, d := range dataSections() {
		if all[d] || subcommand(root, d) != nil {
			t.Errorf("data section %q is also a flag or a command", d)
		}
	}
}

// TestConfigData: data sections are kept raw for the commands that read
// them and feed no flag, and the loaded file's path is known.
func TestConfigData(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("inventory:\n  devices:\n    - host: 127.0.0.2\n      name: a\nname: top\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	streams, _, errOut := TestStreams()
	var got *config
	a := &app{io: streams, cfg: &config{origins: map[string]origin{}}}
	a.log = newLogger(streams.ErrOut, a.opts, a.start, &a.secrets)
	root := newRootCmd(a)
	probe := newProbeCmd(a)
	inner := probe.RunE
	probe.RunE = func(c *cobra.Command, args []string) error { got = a.cfg; return inner(c, args) }
	root.AddCommand(probe)
	root.SetArgs([]string{"probe", "--config", cfg})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Path() != cfg {
		t.Errorf("Path = %q", got.Path())
	}
	var inv struct {
		Devices []struct{ Host, Name string }
	}
	node := got.Data("inventory")
	if node == nil {
		t.Fatal("no inventory node")
	}
	if err := node.Decode(&inv); err != nil || len(inv.Devices) != 1 || inv.Devices[0].Host != "127.0.0.2" {
		t.Errorf("inventory = %+v, %v", inv, err)
	}
	if got.Data("name") != nil {
		t.Error("Data returns a key that is not a data section")
	}
	if strings.Contains(errOut.String(), "unknown key") {
		t.Errorf("warned about a data section: %s", errOut)
	}
}

// TestUnknownKeys are warnings naming the key, the file and the line.
func TestUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("chipp: esp32\ninspect:\n  max-sise: 2M\n  chip: esp32s3\nsim:\n  image:\n    size: 1M\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, code, errOut := runProbe(t, []string{"probe", "--config", cfg})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		cfg + `:1: unknown key "chipp": not a flag of any command; ignored`,
		cfg + `:3: unknown key "inspect.max-sise": not a flag of ots-ota inspect; ignored`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if n := strings.Count(errOut, "unknown key"); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, errOut)
	}
}

func TestSplitEnvList(t *testing.T) {
	for in, want := range map[string][]string{
		"a":                         {"a"},
		"latency:5ms;error@30%/50%": {"latency:5ms", "error@30%/50%"},
		"a\nb; c ;;":                {"a", "b", "c"},
		"drop@20-80%,x":             {"drop@20-80%,x"},
	} {
		if got := splitEnvList(in); !slices.Equal(got, want) {
			t.Errorf("splitEnvList(%q) = %q, want %q", in, got, want)
		}
	}
}
