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
	if want := []string{"completion", "demo", "discover", "espota", "info", "inspect", "push", "sim", "version"}; !slices.Equal(names, want) {
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
