// Package cmd is the ots-ota command line: it parses flags, calls the
// packages that do the work and renders their results. It is the only
// place that knows about cobra, viper, terminals and exit codes.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/internal/buildinfo"
)

// globalOptions are the flags every command shares.
type globalOptions struct {
	ConfigFile string
	JSON       bool
	Verbose    int
	Quiet      bool
	NoColor    bool
}

// app is what every command gets: streams, global options and a logger.
type app struct {
	io   *IOStreams
	opts globalOptions
	log  *slog.Logger
}

// color reports whether human output may use ANSI colour.
func (a *app) color() bool {
	return a.io.OutTTY && !a.opts.NoColor && !a.io.NoColorEnv && !a.opts.JSON
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, streams *IOStreams) int {
	a := &app{io: streams}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		var se silentError
		if !errors.As(err, &se) {
			msg := err.Error()
			if errors.Is(err, context.Canceled) {
				msg = "cancelled"
			}
			fmt.Fprintf(streams.ErrOut, "ots-ota: error: %s\n", msg)
			if exitCode(err) == ExitUsage {
				fmt.Fprintf(streams.ErrOut, "ots-ota: hint: run '%s --help' for usage\n", commandPath(root, args))
			}
		}
	}
	return exitCode(err)
}

// commandPath finds the deepest command the arguments name, for the usage hint.
func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == nil {
		return root.Name()
	}
	return c.CommandPath()
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "ots-ota",
		Short: "Update the firmware of ESP32 devices over the network, safely",
		Long: `ots-ota validates an ESP32 firmware image locally, streams it to one device or a
whole fleet (HTTP POST /update or Arduino espota), and verifies that each device came
back on the new version.`,
		Version:       buildinfo.Get().Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// No Args on a root without RunE: cobra then reports unknown commands itself.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd, a); err != nil {
				return usageError{err}
			}
			a.log = newLogger(a.io.ErrOut, a.opts)
			return nil
		},
	}
	root.SetIn(a.io.In)
	root.SetOut(a.io.Out)
	root.SetErr(a.io.ErrOut)
	root.SetVersionTemplate("ots-ota {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&a.opts.ConfigFile, "config", "", "config file (default $XDG_CONFIG_HOME/ots-ota/config.yaml, else ./ots-ota.yaml)")
	pf.BoolVar(&a.opts.JSON, "json", false, "machine-readable JSON output on stdout")
	pf.CountVarP(&a.opts.Verbose, "verbose", "v", "more log output on stderr (repeat for more)")
	pf.BoolVarP(&a.opts.Quiet, "quiet", "q", false, "only errors on stderr; no progress")
	pf.BoolVar(&a.opts.NoColor, "no-color", false, "no colour in output (also honours NO_COLOR)")
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")

	root.AddCommand(
		newVersionCmd(a),
		newInspectCmd(a),
		newPushCmd(a),
	)
	for _, c := range extraCommands {
		root.AddCommand(c(a))
	}
	return root
}

// extraCommands lets command files register themselves without editing the list above.
var extraCommands []func(*app) *cobra.Command

func newLogger(w io.Writer, o globalOptions) *slog.Logger {
	level := slog.LevelWarn
	switch {
	case o.Quiet:
		level = slog.LevelError
	case o.Verbose == 1:
		level = slog.LevelInfo
	case o.Verbose >= 2:
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := buildinfo.Get()
			if a.opts.JSON {
				return writeJSON(a.io.Out, in)
			}
			fmt.Fprintf(a.io.Out, "ots-ota %s\ncommit: %s\nbuilt:  %s\ngo:     %s\n", in.Version, in.Commit, in.Date, in.Go)
			return nil
		},
	}
}
