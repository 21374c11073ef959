package cmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// The --json contract (docs/json.md) is checked on every --json run of
// every test script: the ots-ota the scripts run is mainChecked, which
// validates what it printed against docs/schema/ and the contract's rules
// before it exits. A violation makes it exit 97, says why on stderr and is
// recorded in $OTS_OTA_JSON_VIOLATIONS, which fails the script at its end
// (a `! exec` would otherwise take the 97 for the failure it expects).

const (
	envSchemaDir  = "OTS_OTA_SCHEMA_DIR"
	envViolations = "OTS_OTA_JSON_VIOLATIONS"
	exitContract  = 97
)

// schemaDir is docs/schema, from the package directory or from the
// environment (script processes run in their own work directory).
func schemaDir() string {
	if d := os.Getenv(envSchemaDir); d != "" {
		return d
	}
	d, _ := filepath.Abs(filepath.Join("..", "docs", "schema"))
	return d
}

var (
	schemasOnce sync.Once
	compiler    *jsonschema.Compiler
	schemaIDs   map[string]string // $id by file name: "push.json"
	schemasErr  error
	compiledMu  sync.Mutex
	compiled    = map[string]*jsonschema.Schema{}
)

// loadSchemas adds every file of docs/schema to a maintained validator
// (draft 2020-12), once per process; schema compiles one, once.
func loadSchemas() error {
	schemasOnce.Do(func() {
		dir := schemaDir()
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil || len(files) == 0 {
			schemasErr = fmt.Errorf("no schema files in %s", dir)
			return
		}
		compiler = jsonschema.NewCompiler()
		compiler.AssertFormat()
		schemaIDs = map[string]string{}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				schemasErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
			if err != nil {
				schemasErr = fmt.Errorf("%s: %v", f, err)
				return
			}
			id, _ := doc.(map[string]any)["$id"].(string)
			if id == "" || !strings.HasSuffix(id, "/"+filepath.Base(f)) {
				schemasErr = fmt.Errorf("%s: $id %q does not name the file", f, id)
				return
			}
			if err := compiler.AddResource(id, doc); err != nil {
				schemasErr = err
				return
			}
			schemaIDs[filepath.Base(f)] = id
		}
	})
	return schemasErr
}

// schema is the compiled schema of a file of docs/schema.
func schema(file string) (*jsonschema.Schema, error) {
	if err := loadSchemas(); err != nil {
		return nil, err
	}
	compiledMu.Lock()
	defer compiledMu.Unlock()
	if s := compiled[file]; s != nil {
		return s, nil
	}
	id, ok := schemaIDs[file]
	if !ok {
		return nil, fmt.Errorf("no schema file %s", file)
	}
	s, err := compiler.Compile(id)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	compiled[file] = s
	return s, nil
}

// schemaFile is the schema of a command's lines.
func schemaFile(command string) string {
	name := strings.ReplaceAll(command, " ", "-") + ".json"
	if loadSchemas() == nil && schemaIDs[name] != "" {
		return name
	}
	return "common.json"
}

// checkLine validates one line against a schema file.
func checkLine(file string, line []byte) error {
	s, err := schema(file)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	if err := s.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("%s: %s", file, strings.Join(fieldErrors(ve), "; "))
		}
		return fmt.Errorf("%s: %v", file, err)
	}
	return nil
}

// fieldErrors names what is wrong with a line, each failure with its field
// and the schema rule it broke. The schemas pick a line's rules by its type
// (a oneOf over the line types), whose every branch complains: only the
// branches of the line's own type are kept, when any is.
func fieldErrors(e *jsonschema.ValidationError) []string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		causes := e.Causes
		if _, ok := e.ErrorKind.(*kind.OneOf); ok {
			var own []*jsonschema.ValidationError
			for _, c := range causes {
				if !otherType(c) {
					own = append(own, c)
				}
			}
			if len(own) > 0 {
				causes = own
			}
		}
		if len(causes) == 0 {
			out = append(out, fmt.Sprintf("%#v", e)) // at '/rate' [schema location]: got number, want …
			return
		}
		for _, c := range causes {
			walk(c)
		}
	}
	walk(e)
	return out
}

// otherType reports whether a branch failed on the line's type: the rules
// of another kind of line.
func otherType(e *jsonschema.ValidationError) bool {
	if _, ok := e.ErrorKind.(*kind.Const); ok && len(e.InstanceLocation) == 1 && e.InstanceLocation[0] == "type" {
		return true
	}
	for _, c := range e.Causes {
		if otherType(c) {
			return true
		}
	}
	return false
}

// checkJSONRun checks what a --json run printed and its exit code against
// the contract: every line valid under its command's schema; a summary last,
// with the exit code; error lines when, and only when, a command failed.
func checkJSONRun(out []byte, code int) error {
	type head struct {
		Type     string `json:"type"`
		Command  string `json:"command"`
		ExitCode int    `json:"exit_code"`
	}
	lines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(out) == 0 || len(lines) == 0 {
		return errors.New("no output: a --json run ends with a summary line")
	}
	heads := make([]head, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal(l, &heads[i]); err != nil {
			return fmt.Errorf("line %d is not a JSON object: %v: %s", i+1, err, l)
		}
	}
	last := heads[len(heads)-1]
	if last.Type != "summary" {
		return fmt.Errorf("the last line is a %q line, not the summary: %s", last.Type, lines[len(lines)-1])
	}
	if last.ExitCode != code {
		return fmt.Errorf("the summary says exit_code %d, the process exits %d", last.ExitCode, code)
	}
	file := schemaFile(last.Command)
	var errs []string
	for i, l := range lines {
		if err := checkLine(file, l); err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %v\n  %s", i+1, err, l))
		}
	}
	// Each summary and the lines since the previous one: a failed command
	// says why in an error line of its own; the last summary (the command
	// run) counts any error line, as espota's are push's.
	from, anyError := 0, false
	for i, h := range heads {
		if h.Type == "error" {
			anyError = true
		}
		if h.Type != "summary" {
			continue
		}
		own := false
		for _, e := range heads[from:i] {
			own = own || e.Type == "error" && e.Command == h.Command
		}
		outer := i == len(heads)-1
		switch {
		case h.ExitCode != 0 && !own && !(outer && anyError):
			errs = append(errs, fmt.Sprintf("line %d: %s exits %d but printed no error line", i+1, h.Command, h.ExitCode))
		case h.ExitCode == 0 && own:
			errs = append(errs, fmt.Sprintf("line %d: %s exits 0 but printed an error line", i+1, h.Command))
		}
		from = i + 1
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// jsonWanted says whether args (and the environment) ask for --json output
// the contract covers: not help, completion or --version text.
func jsonWanted(args []string) bool {
	on := false
	if v, ok := os.LookupEnv("OTS_OTA_JSON"); ok && v != "" {
		on, _ = strconv.ParseBool(v)
	}
	for _, a := range args {
		switch {
		case a == "--":
			return on
		case a == "--json":
			on = true
		case strings.HasPrefix(a, "--json="):
			b, err := strconv.ParseBool(strings.TrimPrefix(a, "--json="))
			if err != nil {
				return false // a usage error found before --json is known
			}
			on = b
		case a == "-h", a == "--help", a == "--version", a == "help", a == "completion", strings.HasPrefix(a, "__complete"):
			return false
		}
	}
	return on
}

// mainChecked is Main, with the --json contract checked on what it printed.
func mainChecked() int {
	if !jsonWanted(os.Args[1:]) {
		return Main()
	}
	stdout := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		return Main()
	}
	os.Stdout = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Lines reach the real stdout as they come: background simulators
		// are watched while they run.
		_, _ = io.Copy(io.MultiWriter(stdout, &buf), bufio.NewReader(r))
	}()
	code := Main()
	w.Close()
	<-done
	os.Stdout = stdout
	if err := checkJSONRun(buf.Bytes(), code); err != nil {
		msg := fmt.Sprintf("JSON contract broken by ots-ota %s (exit %d):\n%v\n", strings.Join(os.Args[1:], " "), code, err)
		fmt.Fprint(os.Stderr, msg)
		if p := os.Getenv(envViolations); p != "" {
			if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				_, _ = f.WriteString(msg)
				f.Close()
			}
		}
		return exitContract
	}
	return code
}

// requireJSONRun fails t when an in-process --json run broke the contract.
func requireJSONRun(t *testing.T, out []byte, code int) {
	t.Helper()
	if err := checkJSONRun(out, code); err != nil {
		t.Fatalf("JSON contract: %v\noutput:\n%s", err, out)
	}
}
