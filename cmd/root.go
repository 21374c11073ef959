// Package cmd is the ots-ota command line: it parses flags, calls the
// packages that do the work and renders their results. It is the only
// place that knows about cobra, the config file, terminals and exit codes.
// The config file is read with go.yaml.in/yaml/v3 directly (not viper): the
// loader must know where each value came from, keep data sections raw and
// tell flags from sections, which viper does not expose.
//
// # Adding a command
//
// A command lives in its own file (cmd/push.go) with three parts, like
// inspect.go:
//
//	type pushOptions struct {                 // every flag and argument
//		Hosts []string
//		policyFlags                           // --chip, --max-size, --partitions, as inspect has them
//		Password string
//	}
//
//	func newPushCmd(a *app) *cobra.Command {  // binds the flags into the options
//		o := &pushOptions{}
//		c := &cobra.Command{Use: "push FIRMWARE HOST...", Args: argsMin(1, "a FIRMWARE file")}
//		c.RunE = run(a, o, runPush)
//		o.policyFlags.bind(c)
//		c.Flags().StringVar(&o.Password, "password", "", "...")
//		return c
//	}
//
//	// validate checks and resolves every value before any work starts; each
//	// error it returns exits 2.
//	func (o *pushOptions) validate(a *app, args []string) error { ... }
//
//	func runPush(ctx context.Context, a *app, o *pushOptions) error { ... }
//
// and one line in newRootCmd's AddCommand list below (a subcommand: one line
// under its parent there, as sim image has). Then:
//
//   - Values come from the command line, the environment and the config file
//     (config.go) with no code in the command: read the options struct.
//     a.typed(name) says a value was typed, a.isSet(name) that it is not the
//     default, a.source(name) where it came from ("OTS_OTA_PASSWORD").
//     Repeatable flags are StringArrayVar: lists in the file, items split on
//     envListSeparators in the environment.
//   - Data sections of the config file: a.cfg.Data("inventory") is the raw
//     *yaml.Node (nil when absent; add new sections to dataSections()), and
//     a.cfg.Path() the file that was read ("" when none).
//   - validate: a.flagError(name, why) is the usage error for a bad value (it
//     names the flag, the value unless secret, and where it came from);
//     exclusive(a, x, y) settles two flags that say the same thing;
//     usageErrorf for the rest. A flag naming a missing file is exit 2.
//   - Arguments: argsNone, argsMin(n, what), argsExact(n, what): typed usage
//     errors (cobra's own Args helpers return untyped errors: exit 1).
//   - Errors from run: one line that says what failed, why and what to do;
//     wrap a package's error once with what was being done, or show only its
//     rootCause / netError. silentError{code} for an outcome already
//     rendered. Exit codes live in exit.go (3 is push's to define).
//   - ctx is cancelled on SIGINT/SIGTERM: stop promptly and return ctx.Err()
//     (exit 130), or nil when Ctrl-C is the command's normal stop (sim).
//     interrupted(ctx) tells an interrupt from a deadline.
//   - Results on a.io.Out (a.writeLine with --json: every line starts with
//     head(type); see docs/json.md); progress, warnings and
//     logs on a.io.ErrOut via a.log: Warn is shown by default, Info with -v
//     (say what is being done and what was ignored), Debug with -vv.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ots-ota/ots-ota/auth"
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

// app is what every command gets: streams, global options, the loaded
// configuration and a logger.
type app struct {
	io    *IOStreams
	opts  globalOptions
	log   *slog.Logger
	cfg   *config
	cmd   *cobra.Command // the command being run
	start time.Time
	// secrets are what this run must never print; the log handler, the
	// renderers and the error line redact them (commands add theirs).
	secrets auth.Redactor
	// words rewrites what a message says of flags into the flags of the
	// command the user typed (the espota drop-in runs push); nil = as is.
	words func(string) string

	// --json: lines are written whole (outMu); jsonErrors counts the error
	// lines written; summary is the last line, filled in by the command.
	outMu      sync.Mutex
	jsonErrors int
	summary    summaryLine
	// jsonKnown: opts.JSON holds the final word (the flags parsed and, for
	// commands that read them, the environment and the config file).
	jsonKnown bool
}

// said is msg as the user's command would word it.
func (a *app) said(msg string) string {
	if a.words == nil {
		return msg
	}
	return a.words(msg)
}

// options is what every command's options struct implements.
type options interface {
	// validate checks and resolves the flag values and arguments before any
	// work starts. Every error it returns is a usage error (exit 2).
	validate(a *app, args []string) error
}

// run wires a command: validate the options, then do the work.
func run[O options](a *app, o O, work func(context.Context, *app, O) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := o.validate(a, args); err != nil {
			return asUsage(err)
		}
		return work(cmd.Context(), a, o)
	}
}

// color reports whether human output may use ANSI colour.
func (a *app) color() bool {
	return a.io.OutTTY && !a.opts.NoColor && !a.io.NoColorEnv && !a.opts.JSON
}

// typed reports whether flag name was given on the command line.
func (a *app) typed(name string) bool { return a.cfg.origins[name].rank == rankFlag }

// isSet reports whether flag name has a value other than its default, from
// any source.
func (a *app) isSet(name string) bool { return a.cfg.origins[name].rank > rankDefault }

// source says where flag name's value came from: "--chip", "OTS_OTA_CHIP",
// "c.yaml: inspect.chip" or "default".
func (a *app) source(name string) string {
	if o, ok := a.cfg.origins[name]; ok {
		return o.where
	}
	return "default"
}

// flagError is the usage error for a bad value of flag name. It names the
// flag and its value (never a secret's) and, when the value was not typed,
// where it came from: "--max-size lots (from OTS_OTA_MAX_SIZE): not a size".
func (a *app) flagError(name, format string, args ...any) error {
	value, show := "", false
	if f := a.cmd.Flags().Lookup(name); f != nil && !isList(f) {
		value, show = f.Value.String(), true
	}
	return a.valueError(name, value, show, format, args...)
}

// itemError is flagError for one item of a repeatable flag:
// "--fault explode (from OTS_OTA_FAULT): unknown kind".
func (a *app) itemError(name, item, format string, args ...any) error {
	return a.valueError(name, item, true, format, args...)
}

func (a *app) valueError(name, value string, show bool, format string, args ...any) error {
	ref := "--" + name
	if f := a.cmd.Flags().Lookup(name); f != nil && show {
		ref += " " + shown(f, value)
	}
	if o := a.cfg.origins[name]; o.rank != rankFlag && o.rank != rankDefault {
		ref += " (from " + o.where + ")"
	}
	return usageError{fmt.Errorf("%s: %s", ref, fmt.Sprintf(format, args...))}
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, streams *IOStreams) int {
	a := &app{io: streams, cfg: &config{origins: map[string]origin{}}, start: time.Now(), words: streams.words}
	a.log = newLogger(streams.ErrOut, a.opts, a.start, &a.secrets)
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = context.Canceled // however deep, an interrupt is reported as one
	}
	var se silentError
	code := exitCode(err)
	var msg, hint string
	if err != nil && !errors.As(err, &se) {
		msg = err.Error()
		if errors.Is(err, context.Canceled) {
			msg = "interrupted"
		}
		msg = a.secrets.Redact(a.said(msg))
		fmt.Fprintf(streams.ErrOut, "ots-ota: error: %s\n", msg)
		if code == ExitUsage {
			hint = a.said(fmt.Sprintf("run '%s --help' for usage", commandPath(root, args)))
			fmt.Fprintf(streams.ErrOut, "ots-ota: hint: %s\n", hint)
		}
	}
	jsonOn := a.opts.JSON
	if !a.jsonKnown {
		// The run failed before its flags or configuration were read (a
		// bad flag before --json): the command line and the environment
		// still say whether the error is wanted in JSON.
		jsonOn = jsonAsked(args)
	}
	if jsonOn && jsonRun(a.cmd, code) {
		command := a.commandName()
		if a.cmd == nil {
			command = commandWords(commandPath(root, args))
		}
		a.endJSON(command, code, err, msg, hint)
	}
	return code
}

// jsonRun says whether a --json run ends with a summary: every command's
// does, and so does every failed run, before its command started (an
// unknown command, a bad flag) or not; help and completion print no JSON
// when they succeed (their output is text), and the shells' completion
// requests never do.
func jsonRun(cmd *cobra.Command, code int) bool {
	if cmd != nil && (cmd.Name() == cobra.ShellCompRequestCmd || cmd.Name() == cobra.ShellCompNoDescRequestCmd) {
		return false
	}
	return code != ExitOK || cmd != nil && cmd.Annotations["json"] != "none"
}

// jsonAsked reads --json from the command line (up to "--") and
// OTS_OTA_JSON as the flags and the environment would set it, for a run
// whose flags did not parse. The last word wins; a value that is not a
// boolean says nothing (it is the usage error).
func jsonAsked(args []string) bool {
	on := false
	if v := os.Getenv(envName("json")); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			on = b
		}
	}
	for _, arg := range args {
		v, isJSON := strings.CutPrefix(arg, "--json")
		switch {
		case arg == "--":
			return on
		case isJSON && v == "":
			on = true
		case isJSON && strings.HasPrefix(v, "="):
			if b, err := strconv.ParseBool(v[1:]); err == nil {
				on = b
			}
		}
	}
	return on
}

// commandPath finds the deepest command the arguments name, for the usage hint.
func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == nil {
		return root.Name()
	}
	return c.CommandPath()
}

// newRootCmd builds the command tree. Every command and subcommand is listed
// here, once; no init() and no package-level list adds any.
func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "ots-ota",
		Short: "Check ESP32 and ESP8266 firmware images, find devices and tell what they run, simulate devices",
		Long: `ots-ota is a tool for updating the firmware of ESP32 and ESP8266 devices over the network.
Today it checks firmware files before they are sent (inspect), sends them to devices
in parallel and checks what they run afterwards (push; espota takes espota.py's command
line), rolls firmware out in waves to Tasmota devices over their MQTT broker, past one
LAN (rollout), finds devices by mDNS and the inventory (discover), tells what each device
runs (info), and runs simulated devices on loopback that answer uploads like the real
firmware (sim). Start with 'ots-ota demo'.`,
		Version:       buildinfo.Get().Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          argsCommand,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		Annotations:   map[string]string{"json": "none"},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setUp(cmd)
		},
	}
	root.SetIn(a.io.In)
	root.SetOut(a.io.Out)
	root.SetErr(a.io.ErrOut)
	root.SetVersionTemplate("ots-ota {{.Version}}\n")
	root.SetFlagErrorFunc(flagParseError)

	pf := root.PersistentFlags()
	pf.StringVar(&a.opts.ConfigFile, "config", "", "config file (default $XDG_CONFIG_HOME/ots-ota/config.yaml, else ./ots-ota.yaml)")
	pf.BoolVar(&a.opts.JSON, "json", false, "machine-readable JSON output on stdout")
	pf.CountVarP(&a.opts.Verbose, "verbose", "v", "more log output on stderr: -v config and steps, -vv every value's source and timings")
	pf.BoolVarP(&a.opts.Quiet, "quiet", "q", false, "only errors on stderr; no progress")
	pf.BoolVar(&a.opts.NoColor, "no-color", false, "no colour in output (also a non-empty NO_COLOR, or TERM=dumb)")
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")

	root.AddCommand(
		newInspectCmd(a),
		newPushCmd(a),
		newEspotaCmd(a),
		newDiscoverCmd(a),
		newInfoCmd(a),
		newRolloutCmd(a),
		newSimCmd(a),
		newDemoCmd(a),
		newVersionCmd(a),
		newCompletionCmd(a),
	)
	// Subcommands are wired here too, each under its parent, so that this
	// function is the whole command tree.
	subcommand(root, "sim").AddCommand(newSimImageCmd(a))
	subcommand(root, "rollout").AddCommand(newRolloutStatusCmd(a))
	root.SetHelpCommand(newHelpCmd(a))
	return root
}

// setUp runs before every command: it loads the configuration into the
// flags, then makes the logger the final -v/-q ask for.
func (a *app) setUp(cmd *cobra.Command) error {
	a.cmd = cmd
	// help, completion and the shells' completion requests work whatever the
	// environment and the config file hold.
	if cmd.Annotations["config"] == "skip" || cmd.Name() == cobra.ShellCompRequestCmd || cmd.Name() == cobra.ShellCompNoDescRequestCmd {
		a.jsonKnown = true
		return nil
	}
	cfg, err := loadConfig(cmd, a.opts.ConfigFile)
	if err != nil && cmd.Annotations["config"] == "lenient" {
		// The flags keep what was typed or set before the bad value.
		a.jsonKnown = true
		a.log = newLogger(a.io.ErrOut, a.opts, a.start, &a.secrets)
		a.log.Warn(err.Error() + "; ignored")
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	a.cfg, a.jsonKnown = cfg, true
	a.log = newLogger(a.io.ErrOut, a.opts, a.start, &a.secrets)
	for _, w := range cfg.warnings {
		a.log.Warn(w)
	}
	if cfg.path != "" {
		a.log.Info("config file read", "path", cfg.path)
	} else {
		a.log.Info("no config file", "looked_for", strings.Join(configPlaces(), ", "))
	}
	// Every value that is not a default, typed ones too (never the value:
	// it may be a secret).
	for _, name := range sortedKeys(cfg.origins) {
		if o := cfg.origins[name]; o.rank > rankDefault {
			a.log.Debug("flag value", "flag", "--"+name, "from", o.where)
		}
	}
	return nil
}

// flagParseError turns pflag's parse errors into one-line usage errors.
func flagParseError(_ *cobra.Command, err error) error {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		f := ive.GetFlag()
		return usageErrorf("--%s %s: %s", f.Name, shown(f, ive.GetValue()), typeReason(f))
	}
	return usageError{err}
}

// argsNone accepts no arguments; on a command with subcommands an argument
// is an unknown command.
func argsNone(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() && args[0] == "help" {
			return subHelp(cmd, args[1:])
		}
		if cmd.HasSubCommands() {
			return unknownCommand(cmd, args[0])
		}
		return usageErrorf("%s takes no arguments (got %q)", cmd.CommandPath(), args[0])
	}
	return nil
}

// argsCommand is the root's: any argument is a command name it does not know.
func argsCommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(cmd, args[0])
	}
	return nil
}

// subHelp is "ots-ota sim help [image]": cobra adds a help command to the
// root only. The help printed, the command stops with exit 0.
func subHelp(cmd *cobra.Command, topic []string) error {
	target, rest, err := cmd.Find(topic)
	if err != nil || len(rest) > 0 {
		return usageErrorf("no help for %q: not a command of %s", strings.Join(topic, " "), cmd.CommandPath())
	}
	if err := target.Help(); err != nil {
		return err
	}
	return silentError{code: ExitOK}
}

func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return usageError{errors.New(msg)}
}

// argsMin wants at least n arguments, argsExact exactly n.
func argsMin(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErrorf("%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func argsExact(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s needs exactly %s (got %d arguments)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func newLogger(w io.Writer, o globalOptions, start time.Time, secrets *auth.Redactor) *slog.Logger {
	level := slog.LevelWarn
	switch {
	case o.Quiet:
		level = slog.LevelError
	case o.Verbose == 1:
		level = slog.LevelInfo
	case o.Verbose >= 2:
		level = slog.LevelDebug
	}
	h := newLineHandler(w, level, o.Verbose >= 2, start)
	h.secrets = secrets
	return slog.New(h)
}

type noOptions struct{}

func (noOptions) validate(*app, []string) error { return nil }

func newVersionCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and build date",
		Args:  argsNone,
		// It takes --json from the environment and the config file like any
		// command, but works whatever they hold (a bad OTS_OTA_JSON must not
		// hide which build is running): a bad value is a warning.
		Annotations: map[string]string{"config": "lenient"},
	}
	c.RunE = run(a, noOptions{}, func(_ context.Context, a *app, _ noOptions) error {
		in := buildinfo.Get()
		if a.opts.JSON {
			a.writeLine(versionLineOf(in))
			return nil
		}
		fmt.Fprintf(a.io.Out, "ots-ota %s\ncommit: %s\nbuilt:  %s\ngo:     %s\n", in.Version, in.Commit, in.Date, in.Go)
		return nil
	})
	return c
}

// versionLine is version --json: what the build does not know is null
// (the human output says "none" and "unknown").
type versionLine struct {
	lineHead
	Version string  `json:"version"`
	Commit  *string `json:"commit"`
	Date    *string `json:"date"`
	Go      *string `json:"go"`
}

func versionLineOf(in buildinfo.Info) versionLine {
	known := func(s string) *string {
		if s == "none" || s == "unknown" {
			return nil
		}
		return nullString(s)
	}
	return versionLine{lineHead: head("version"), Version: in.Version, Commit: known(in.Commit), Date: known(in.Date), Go: nullString(in.Go)}
}

// newHelpCmd replaces cobra's, which exits 0 on an unknown topic.
func newHelpCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:         "help [COMMAND]",
		Short:       "Help about any command",
		Annotations: map[string]string{"config": "skip", "json": "none"},
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			cmd, _, _ := c.Root().Find(args)
			var names []string
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, s.Name())
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, _ := c.Root().Find(args)
			if len(rest) > 0 {
				return usageErrorf("no help for %q: %s", strings.Join(args, " "), "not a command")
			}
			return cmd.Help()
		},
	}
}

// newCompletionCmd replaces cobra's default, which exits 0 on an unknown shell.
func newCompletionCmd(a *app) *cobra.Command {
	shells := []string{"bash", "zsh", "fish", "powershell"}
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script (also shipped in completions/)",
		Long: `Print the completion script for a shell. For example:

  ots-ota completion bash > /etc/bash_completion.d/ots-ota
  ots-ota completion zsh > "${fpath[1]}/_ots-ota"
  ots-ota completion fish > ~/.config/fish/completions/ots-ota.fish
  ots-ota completion powershell | Out-String | Invoke-Expression`,
		ValidArgs:             shells,
		Annotations:           map[string]string{"config": "skip", "json": "none"},
		DisableFlagsInUseLine: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("completion needs a shell: %s", strings.Join(shells, ", "))
			}
			if len(args) > 1 {
				return usageErrorf("completion takes one shell, not %d arguments (%s): give one of %s", len(args), strings.Join(args, " "), strings.Join(shells, ", "))
			}
			for _, s := range shells {
				if args[0] == s {
					return nil
				}
			}
			return usageErrorf("no completion for shell %q (have: %s)", args[0], strings.Join(shells, ", "))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), a.io.Out
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}
