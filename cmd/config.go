package cmd

// Configuration. Every flag of every command can also come from the
// environment or the config file. For each flag the value comes from the
// first of:
//
//  1. the command line;
//  2. the environment, OTS_OTA_<FLAG> (upper case, "-" becomes "_"); an empty
//     variable counts as unset;
//  3. the command's section of the config file, the most specific first
//     (`sim image` reads sim.image, then sim);
//  4. a top-level key of the config file (it feeds the same-named flag of
//     every command);
//  5. the flag's default.
//
// Repeatable flags (string arrays and slices: --fault, --behave, …) take a
// YAML list in the file, and in the environment items separated by ";" or
// newlines (envListSeparators; no spec of any flag contains either).
//
// A top-level key is a flag name, a command's section (a mapping named after
// the command) or a data section (dataSections()). Where a flag and a command
// share a name (`version`), a mapping is the section and a value the flag's. Data sections are not flag
// values: the loader never parses them, and a command reads one raw with
// config.Data, e.g. discover's static inventory:
//
//	node := a.cfg.Data("inventory") // *yaml.Node or nil
//	if node != nil { err = node.Decode(&inv) }
//
// Unknown keys are warnings naming the key and the file, never errors.
//
// Values from the environment and the file are written into the flags
// without marking them Changed, so Changed (app.typed) keeps meaning "typed on
// the command line"; app.source tells where any value came from.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/ots-ota/ots-ota/fwfile"
)

const envPrefix = "OTS_OTA"

// envListSeparators split a repeatable flag's environment value into items.
const envListSeparators = ";\n"

// dataSections are the top-level keys that hold data for commands rather than
// flag values. No flag may be named like one (TestConfigKeysDoNotCollide).
// A function, not a variable: nothing can append to it at run time.
func dataSections() []string {
	return []string{
		"inventory", // discover and push: the static list of devices
	}
}

// Ranks of the places a value can come from; a higher rank wins.
const (
	rankDefault = 0
	rankTop     = 10 // top-level key; a command section at depth d ranks rankTop+d
	rankEnv     = 90
	rankFlag    = 100
)

// origin is where a flag's value came from.
type origin struct {
	rank  int
	where string // "--chip", "OTS_OTA_CHIP", "ots-ota.yaml: inspect.chip" or "default"
}

// config is what the loader found for the running command.
type config struct {
	path     string     // the config file that was read; "" when none
	root     *yaml.Node // its top-level mapping; nil when none or empty
	origins  map[string]origin
	warnings []string // unknown keys and ignored values, for stderr
}

// Path is the config file that was read, "" when none.
func (c *config) Path() string {
	if c == nil {
		return ""
	}
	return c.path
}

// Data returns the raw YAML value of a data section (one of dataSections),
// nil when the file has none. Decode it with node.Decode.
func (c *config) Data(section string) *yaml.Node {
	if c == nil || c.root == nil || !slices.Contains(dataSections(), section) {
		return nil
	}
	_, v := mapGet(c.root, section)
	return v
}

// configPath picks the config file: --config (or OTS_OTA_CONFIG), else the XDG
// location, else ./ots-ota.yaml. Missing default files are not an error.
func configPath(explicit string) (path string, required bool) {
	if explicit != "" {
		return explicit, true
	}
	if env := os.Getenv(envPrefix + "_CONFIG"); env != "" {
		return env, true
	}
	places := configPlaces()
	for _, p := range places[:len(places)-1] {
		if _, err := os.Stat(p); err == nil {
			return p, false
		}
	}
	return places[len(places)-1], false
}

// configPlaces lists where an optional config file is looked for, in order:
// the user's config directory, then the current one.
func configPlaces() []string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		dir, _ = os.UserConfigDir()
	}
	if dir != "" {
		return []string{filepath.Join(dir, "ots-ota", "config.yaml"), "ots-ota.yaml"}
	}
	return []string{"ots-ota.yaml"}
}

// maxConfigRead bounds the config file: a few hundred lines of YAML.
const maxConfigRead = 1 << 20

// readConfigFile parses the file at path; a missing optional file is no
// config. Like every input file it must be a regular file (a FIFO would block
// the read before any signal could stop it), read until ctx ends.
func readConfigFile(ctx context.Context, path string, required bool) (*config, error) {
	c := &config{origins: map[string]origin{}}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if !required {
			return c, nil
		}
		return nil, fmt.Errorf("config file %s does not exist", path)
	}
	data, err := fwfile.Read(ctx, path, maxConfigRead)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, fmt.Errorf("config file %s: %s", path, err)
	}
	c.path = path
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return c, nil // empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: want keys and values (a YAML mapping) at the top level", path)
	}
	c.root = top
	return c, nil
}

// loadConfig reads the config file and fills every flag of cmd that was not
// typed from the environment or the file.
func loadConfig(cmd *cobra.Command, explicit string) (*config, error) {
	path, required := configPath(explicit)
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	c, err := readConfigFile(ctx, path, required)
	if err != nil {
		return nil, err
	}
	if c.root != nil {
		c.checkKeys(cmd.Root())
	}
	// The sections that feed cmd, most specific first: sim.image, sim, top level.
	type section struct {
		node *yaml.Node
		cmd  *cobra.Command // whose section it is
		path string
		rank int
	}
	var sections []section
	if c.root != nil {
		sections = append(sections, section{c.root, cmd.Root(), "", rankTop})
		node, p, sc := c.root, "", cmd.Root()
		for i, name := range commandNames(cmd) {
			_, v := mapGet(node, name)
			sc = subcommand(sc, name)
			if v == nil || v.Kind != yaml.MappingNode || sc == nil {
				break
			}
			p += name + "."
			node = v
			sections = append(sections, section{v, sc, p, rankTop + i + 1})
		}
		slices.Reverse(sections)
	}

	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !configurable(cmd, f) {
			return
		}
		if f.Changed {
			c.origins[f.Name] = origin{rankFlag, "--" + f.Name}
			return
		}
		env := envName(f.Name)
		if v := os.Getenv(env); v != "" {
			items := []string{v}
			if isList(f) {
				items = splitEnvList(v)
			}
			if err := setValue(f, items); err != nil {
				errs = append(errs, fmt.Errorf("%s=%s: %s", env, shown(f, v), err))
				return
			}
			c.origins[f.Name] = origin{rankEnv, env}
			return
		}
		for _, s := range sections {
			k, v := mapGet(s.node, f.Name)
			if v == nil || v.Kind == yaml.MappingNode && subcommand(s.cmd, f.Name) != nil {
				// A mapping named like a command is that command's section
				// (`version: {json: true}`), a value is the flag's (`version: 2.0.0`).
				continue
			}
			where := fmt.Sprintf("%s:%d: %s%s", c.path, k.Line, s.path, f.Name)
			items, err := nodeItems(f, v)
			if err == nil && items == nil {
				// An empty key hides nothing: a less specific one still counts.
				c.warnings = append(c.warnings, fmt.Sprintf("%s:%d: %s%s has no value; ignored", c.path, k.Line, s.path, f.Name))
				continue
			}
			if err == nil {
				err = setValue(f, items)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s%s: %s", c.path, k.Line, s.path, f.Name, err))
				return
			}
			c.origins[f.Name] = origin{s.rank, where}
			return
		}
		c.origins[f.Name] = origin{rankDefault, "default"}
	})
	if len(errs) > 0 {
		return nil, errs[0] // one line: the first problem
	}
	return c, nil
}

// configurable reports whether f may come from the environment or the file.
// --config names the file itself, --help is not an option, and the root's
// --version is cobra's own switch (`sim --version` is an ordinary option).
func configurable(cmd *cobra.Command, f *pflag.Flag) bool {
	switch f.Name {
	case "config", "help":
		return false
	case "version":
		return cmd.HasParent()
	}
	return true
}

// commandNames is cmd's path below the root: ["sim", "image"].
func commandNames(cmd *cobra.Command) []string {
	var names []string
	for c := cmd; c.HasParent(); c = c.Parent() {
		names = append([]string{c.Name()}, names...)
	}
	return names
}

func envName(flag string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// isList reports whether f is repeatable (each value adds an item).
func isList(f *pflag.Flag) bool {
	_, ok := f.Value.(pflag.SliceValue)
	return ok
}

func splitEnvList(v string) []string {
	var items []string
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(envListSeparators, r) }) {
		if s = strings.TrimSpace(s); s != "" {
			items = append(items, s)
		}
	}
	return items
}

// nodeItems reads a config value as flag text: a scalar is one item, a list
// (for repeatable flags) several; nil items means the key has no value.
func nodeItems(f *pflag.Flag, v *yaml.Node) ([]string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil, nil
		}
		return []string{v.Value}, nil
	case yaml.SequenceNode:
		if !isList(f) {
			return nil, fmt.Errorf("a list, but --%s takes one value", f.Name)
		}
		items := []string{}
		for _, e := range v.Content {
			if e = deref(e); e.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("want a list of plain values")
			}
			items = append(items, e.Value)
		}
		return items, nil
	}
	return nil, fmt.Errorf("want a value, not a mapping")
}

// setValue writes items into f without marking it Changed.
func setValue(f *pflag.Flag, items []string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		if err := sv.Replace(items); err != nil {
			return errors.New(typeReason(f))
		}
		return nil
	}
	if len(items) != 1 {
		return fmt.Errorf("--%s takes one value", f.Name)
	}
	if err := f.Value.Set(items[0]); err != nil {
		return errors.New(typeReason(f))
	}
	return nil
}

// typeReason says in words what a value of f's type must look like.
func typeReason(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "bool":
		return "not a boolean (use true or false)"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "count":
		return "not a whole number"
	case "duration":
		return "not a duration (such as 500ms, 10s or 2m)"
	case "float32", "float64":
		return "not a number"
	}
	return "not a valid value"
}

// sensitive flags never have their values shown.
func sensitive(name string) bool {
	for _, s := range []string{"password", "token", "secret", "key"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// shown is how a value of f appears in a message: hidden for secrets, quoted
// when it would otherwise be invisible.
func shown(f *pflag.Flag, v string) string {
	switch {
	case sensitive(f.Name):
		return "***"
	case v == "" || strings.ContainsAny(v, " \t\n"):
		return fmt.Sprintf("%q", v)
	}
	return v
}

// mapGet finds key in a YAML mapping: the key node and the value node.
func mapGet(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], deref(m.Content[i+1])
		}
	}
	return nil, nil
}

// deref follows a YAML alias (*name) to the value it names.
func deref(v *yaml.Node) *yaml.Node {
	for i := 0; v != nil && v.Kind == yaml.AliasNode && v.Alias != nil && i < 8; i++ {
		v = v.Alias
	}
	return v
}

// checkKeys warns about every key of the file that feeds nothing.
func (c *config) checkKeys(root *cobra.Command) {
	var walk func(m *yaml.Node, cmd *cobra.Command, prefix string)
	walk = func(m *yaml.Node, cmd *cobra.Command, prefix string) {
		known := flagNames(cmd)
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], deref(m.Content[i+1])
			key := prefix + k.Value
			switch {
			case !cmd.HasParent() && slices.Contains(dataSections(), k.Value):
				// data: read by the commands that use it
			case subcommand(cmd, k.Value) != nil && (v.Kind == yaml.MappingNode || !known[k.Value]):
				if v.Kind != yaml.MappingNode {
					c.warnings = append(c.warnings, fmt.Sprintf("%s:%d: %s is the section of command %q: want keys under it; ignored", c.path, k.Line, key, k.Value))
					continue
				}
				walk(v, subcommand(cmd, k.Value), key+".")
			case known[k.Value]:
			default:
				where := "any command"
				if cmd.HasParent() {
					where = cmd.CommandPath()
				}
				c.warnings = append(c.warnings, fmt.Sprintf("%s:%d: unknown key %q: not a flag of %s; ignored", c.path, k.Line, key, where))
			}
		}
	}
	walk(c.root, root, "")
}

// subcommand is cmd's child named name, nil when none.
func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, s := range cmd.Commands() {
		if s.Name() == name && !s.Hidden {
			return s
		}
	}
	return nil
}

// flagNames are the keys a section of cmd may set: the configurable flags of
// cmd and every command below it, and the flags they inherit.
func flagNames(cmd *cobra.Command) map[string]bool {
	names := map[string]bool{}
	var add func(c *cobra.Command)
	add = func(c *cobra.Command) {
		visit := func(f *pflag.Flag) {
			if configurable(c, f) {
				names[f.Name] = true
			}
		}
		c.LocalFlags().VisitAll(visit)
		c.InheritedFlags().VisitAll(visit)
		for _, s := range c.Commands() {
			add(s)
		}
	}
	add(cmd)
	return names
}

// sortedKeys is for stable listings in logs.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
