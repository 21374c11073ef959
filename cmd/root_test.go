package cmd

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra"
)

// TestCommandTree: root.go lists the commands, in one place; no file adds
// itself from init (package-level state whose order follows file names).
func TestCommandTree(t *testing.T) {
	streams, _, _ := TestStreams()
	root := newRootCmd(&app{io: streams, cfg: &config{}})
	var names []string
	for _, c := range root.Commands() {
		names = append(names, c.Name())
	}
	if want := []string{"completion", "demo", "discover", "espota", "info", "inspect", "push", "rollout", "sim", "version"}; !slices.Equal(names, want) {
		t.Errorf("commands %v, want %v", names, want)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if filepath.Ext(f) != ".go" || len(f) > 8 && f[len(f)-8:] == "_test.go" {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && fn.Name.Name == "init" {
				t.Errorf("%s has an init function: list commands in newRootCmd", f)
			}
		}
	}
}

// TestEveryCommandChecksArgs: every runnable command has its own argument
// check (argsNone, argsMin, …), so no cobra default with its untyped errors
// decides an exit code.
func TestEveryCommandChecksArgs(t *testing.T) {
	streams, _, _ := TestStreams()
	root := newRootCmd(&app{io: streams, cfg: &config{}})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.Args == nil && c.Name() != "help" {
			t.Errorf("%s has no Args check", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

// TestSubcommandsWiredInRoot: a command's constructor adds no subcommands;
// newRootCmd hangs each under its parent, so the tree is read in one place.
func TestSubcommandsWiredInRoot(t *testing.T) {
	streams, _, _ := TestStreams()
	a := &app{io: streams, cfg: &config{}}
	if n := len(newSimCmd(a).Commands()); n != 0 {
		t.Errorf("newSimCmd added %d subcommands itself", n)
	}
	c, rest, err := newRootCmd(a).Find([]string{"sim", "image"})
	if err != nil || len(rest) != 0 || c.CommandPath() != "ots-ota sim image" {
		t.Errorf("sim image: %v %v %v", c, rest, err)
	}
}

// TestArgsHelpers: the positional-argument checks return usage errors
// (exit 2); cobra's own helpers return untyped errors (exit 1).
func TestArgsHelpers(t *testing.T) {
	leaf := &cobra.Command{Use: "leaf"}
	parent := &cobra.Command{Use: "parent"}
	parent.AddCommand(&cobra.Command{Use: "child"})
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"none, none given", argsNone(leaf, nil), ExitOK},
		{"none, one given", argsNone(leaf, []string{"x"}), ExitUsage},
		{"none, unknown subcommand", argsNone(parent, []string{"chlid"}), ExitUsage},
		{"min 1, none", argsMin(1, "a FILE")(leaf, nil), ExitUsage},
		{"min 1, two", argsMin(1, "a FILE")(leaf, []string{"a", "b"}), ExitOK},
		{"exact 1, one", argsExact(1, "a HOST")(leaf, []string{"h"}), ExitOK},
		{"exact 1, two", argsExact(1, "a HOST")(leaf, []string{"h", "i"}), ExitUsage},
		{"exact 1, none", argsExact(1, "a HOST")(leaf, nil), ExitUsage},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: %v: exit %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}
