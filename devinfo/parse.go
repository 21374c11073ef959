package devinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxValueLen bounds every string taken from a device: a fact is a short
// word, and a device's bytes end up on the user's terminal.
const maxValueLen = 128

// OTAStatus is the body of GET /ota/status (device-contract.md §4). Every
// string is cleaned (see Clean); strings the device left out are empty and
// numbers it left out are nil: an uptime not told is unknown, never 0.
type OTAStatus struct {
	Project       string  `json:"project,omitempty"`
	Version       string  `json:"version,omitempty"`
	IDF           string  `json:"idf,omitempty"`
	Chip          string  `json:"chip,omitempty"`
	Running       string  `json:"running,omitempty"`
	Boot          string  `json:"boot,omitempty"`
	State         string  `json:"state,omitempty"`
	SecureVersion *uint32 `json:"secure_version,omitempty"`
	ELFSHA256     string  `json:"elf_sha256,omitempty"`
	SlotSize      *int64  `json:"slot_size,omitempty"`
	UptimeS       *int64  `json:"uptime_s,omitempty"`
	// Auth is not in contract §4, but firmware may add it (none, bearer, basic).
	Auth string `json:"auth,omitempty"`
}

// AppStates are the values of OTAStatus.State (ESP-IDF's esp_ota_img_states_t).
var AppStates = []string{"valid", "pending_verify", "new", "invalid", "aborted", "undefined"}

// ParseOTAStatus reads a /ota/status body. It fails when the body is not a
// JSON object or a field has the wrong type; an unknown state is kept as
// the device wrote it (cleaned) and reported by the caller, not rejected.
func ParseOTAStatus(b []byte) (OTAStatus, error) {
	var raw struct {
		Project       json.RawMessage `json:"project"`
		Version       json.RawMessage `json:"version"`
		IDF           json.RawMessage `json:"idf"`
		Chip          json.RawMessage `json:"chip"`
		Running       json.RawMessage `json:"running"`
		Boot          json.RawMessage `json:"boot"`
		State         json.RawMessage `json:"state"`
		SecureVersion json.RawMessage `json:"secure_version"`
		ELFSHA256     json.RawMessage `json:"elf_sha256"`
		SlotSize      json.RawMessage `json:"slot_size"`
		UptimeS       json.RawMessage `json:"uptime_s"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := unmarshalObject(b, &raw); err != nil {
		return OTAStatus{}, err
	}
	var s OTAStatus
	errs := fieldErrors(
		named("project", jsonString(raw.Project, &s.Project)),
		named("version", jsonString(raw.Version, &s.Version)),
		named("idf", jsonString(raw.IDF, &s.IDF)),
		named("chip", jsonString(raw.Chip, &s.Chip)),
		named("running", jsonString(raw.Running, &s.Running)),
		named("boot", jsonString(raw.Boot, &s.Boot)),
		named("state", jsonString(raw.State, &s.State)),
		named("elf_sha256", jsonString(raw.ELFSHA256, &s.ELFSHA256)),
		named("auth", jsonString(raw.Auth, &s.Auth)),
		named("secure_version", jsonUint32(raw.SecureVersion, &s.SecureVersion)),
		named("slot_size", jsonNonNegative(raw.SlotSize, &s.SlotSize)),
		named("uptime_s", jsonNonNegative(raw.UptimeS, &s.UptimeS)),
	)
	s.State = strings.ToLower(s.State)
	s.Auth = strings.ToLower(s.Auth)
	if len(errs) > 0 {
		return s, fmt.Errorf("ota status: %w", oneLine(errs))
	}
	return s, nil
}

// APIStatus is what ots-ota reads of the OTS web app's GET /api/status
// (camelCase, as the firmware writes it).
type APIStatus struct {
	FirmwareVersion string `json:"firmwareVersion,omitempty"`
	Hostname        string `json:"hostname,omitempty"`
	SerialNumber    string `json:"serialNumber,omitempty"`
	// Uptime in seconds, nil when not told (the OTS firmware as shipped
	// tells none).
	Uptime *int64 `json:"uptime,omitempty"`
}

// ParseAPIStatus reads a /api/status body. Fields other than those of
// APIStatus are ignored; a wrongly typed one among those is an error.
func ParseAPIStatus(b []byte) (APIStatus, error) {
	var raw struct {
		FirmwareVersion json.RawMessage `json:"firmwareVersion"`
		Hostname        json.RawMessage `json:"hostname"`
		SerialNumber    json.RawMessage `json:"serialNumber"`
		Uptime          json.RawMessage `json:"uptime"`
	}
	if err := unmarshalObject(b, &raw); err != nil {
		return APIStatus{}, err
	}
	var s APIStatus
	errs := fieldErrors(
		named("firmwareVersion", jsonString(raw.FirmwareVersion, &s.FirmwareVersion)),
		named("hostname", jsonString(raw.Hostname, &s.Hostname)),
		named("serialNumber", jsonString(raw.SerialNumber, &s.SerialNumber)),
		named("uptime", jsonNonNegative(raw.Uptime, &s.Uptime)),
	)
	if len(errs) > 0 {
		return s, fmt.Errorf("api status: %w", oneLine(errs))
	}
	return s, nil
}

func unmarshalObject(b []byte, v any) error {
	t := strings.TrimSpace(string(b))
	if !strings.HasPrefix(t, "{") {
		return errors.New("not a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("invalid JSON at byte %d", se.Offset)
		}
		return errors.New("invalid JSON")
	}
	return nil
}

func jsonString(m json.RawMessage, dst *string) error {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(m, &s); err != nil {
		return errors.New("not a string")
	}
	*dst = Clean(s)
	return nil
}

func jsonInt(m json.RawMessage, dst *int64) error {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	var f json.Number
	if err := json.Unmarshal(m, &f); err != nil {
		return errors.New("not a number")
	}
	n, err := f.Int64()
	if err != nil {
		x, ferr := f.Float64()
		if ferr != nil || x != x || x > 1<<62 || x < -(1<<62) {
			return errors.New("not an integer")
		}
		n = int64(x)
	}
	*dst = n
	return nil
}

// jsonNonNegative reads a number that cannot be negative; dst stays nil
// when the field is absent, null or wrong: a value not told is unknown.
func jsonNonNegative(m json.RawMessage, dst **int64) error {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	var n int64
	if err := jsonInt(m, &n); err != nil {
		return err
	}
	if n < 0 {
		return errors.New("negative")
	}
	*dst = &n
	return nil
}

func jsonUint32(m json.RawMessage, dst **uint32) error {
	var n *int64
	if err := jsonNonNegative(m, &n); err != nil || n == nil {
		return err
	}
	if *n > 1<<32-1 {
		return errors.New("out of range")
	}
	v := uint32(*n)
	*dst = &v
	return nil
}

// ParseTXT turns the strings of a DNS-SD TXT record into keys and values
// (RFC 6763 §6): keys are case-insensitive and stored lower-case; the first
// occurrence of a key wins; a string without '=' is a key with an empty
// value; empty keys are dropped. Keys and values are cleaned.
func ParseTXT(txt []string) map[string]string {
	m := make(map[string]string, len(txt))
	for _, s := range txt {
		k, v, _ := strings.Cut(s, "=")
		k = Clean(strings.ToLower(k))
		if k == "" {
			continue
		}
		if _, dup := m[k]; dup {
			continue
		}
		m[k] = Clean(v)
	}
	return m
}

// Clean makes a device-supplied string safe to print: invalid UTF-8 and
// control characters (ANSI escapes, newlines) become U+FFFD, surrounding
// space is trimmed, and the result is cut to 128 bytes.
func Clean(s string) string {
	s = strings.TrimSpace(s)
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || (!unicode.IsPrint(r) && r != ' ') {
			r = '\uFFFD'
		}
		if b.Len()+utf8.RuneLen(r) > maxValueLen {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// fieldErrors keeps the non-nil errors, in field order.
func fieldErrors(errs ...error) []error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

func named(field string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", field, err)
}

// oneLine words several field errors as one line (notes and errors are one
// line each): the first, and how many more.
func oneLine(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return fmt.Errorf("%w, and %d more", errs[0], len(errs)-1)
}

// ESPEasyJSON is what ots-ota reads of ESPEasy's GET /json: the build and
// uptime facts of its System object, in ESPEasy's own labels (its web UI's
// row names). ESPEasy writes a value that looks like a number as a bare
// JSON number and anything else as a string, so each field takes either.
// Strings not told are empty and numbers not told nil: unknown, never 0.
type ESPEasyJSON struct {
	// Build is the build number, shown as a date ("20241019").
	Build string `json:"Build,omitempty"`
	// GitBuild is the release tag of a CI build ("mega-20241019"), else
	// "<branch>_<commit>" of a build made with ESPEasy's scripts, else
	// "(custom)".
	GitBuild string `json:"Git Build,omitempty"`
	// BuildTime is the compiler's __DATE__ and __TIME__ ("Oct 19 2024
	// 22:36:19"): it differs between any two builds.
	BuildTime      string `json:"Build Time,omitempty"`
	BinaryFilename string `json:"Binary Filename,omitempty"`
	UnitName       string `json:"Unit Name,omitempty"`
	UnitNumber     *int64 `json:"Unit Number,omitempty"`
	ChipModel      string `json:"ESP Chip Model,omitempty"`
	LastBootCause  string `json:"Last Boot Cause,omitempty"`
	ResetReason    string `json:"Reset Reason,omitempty"`
	// UptimeMin is "Uptime", in whole minutes: too coarse to show a
	// restart against the time between two reads.
	UptimeMin *int64 `json:"Uptime,omitempty"`
	// UptimeMS is "Uptime (ms)" (ESPEasy since 2021).
	UptimeMS *int64 `json:"Uptime (ms),omitempty"`
}

// errNotESPEasy: the body is JSON, but no ESPEasy System object.
var errNotESPEasy = errors.New("not ESPEasy's JSON (no System object with Build or Git Build)")

// ParseESPEasyJSON reads a GET /json body. Only the System object is read,
// and it comes first, so a body cut short after it still parses (the rest
// lists every task's values and may be long). It fails when System is
// missing or has neither Build nor Git Build (a sketch's own /json), or
// when a field it reads has the wrong type.
func ParseESPEasyJSON(b []byte) (ESPEasyJSON, error) {
	if !strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
		return ESPEasyJSON{}, errors.New("not a JSON object")
	}
	sys, err := firstObject(b, "System")
	if err != nil {
		return ESPEasyJSON{}, err
	}
	if sys == nil {
		return ESPEasyJSON{}, errNotESPEasy
	}
	_, hasBuild := sys["Build"]
	_, hasGit := sys["Git Build"]
	if !hasBuild && !hasGit {
		return ESPEasyJSON{}, errNotESPEasy
	}
	var s ESPEasyJSON
	errs := fieldErrors(
		named("Build", jsonText(sys["Build"], &s.Build)),
		named("Git Build", jsonText(sys["Git Build"], &s.GitBuild)),
		named("Build Time", jsonText(sys["Build Time"], &s.BuildTime)),
		named("Binary Filename", jsonText(sys["Binary Filename"], &s.BinaryFilename)),
		named("Unit Name", jsonText(sys["Unit Name"], &s.UnitName)),
		named("Unit Number", jsonCount(sys["Unit Number"], &s.UnitNumber)),
		named("ESP Chip Model", jsonText(sys["ESP Chip Model"], &s.ChipModel)),
		named("Last Boot Cause", jsonText(sys["Last Boot Cause"], &s.LastBootCause)),
		named("Reset Reason", jsonText(sys["Reset Reason"], &s.ResetReason)),
		named("Uptime", jsonCount(sys["Uptime"], &s.UptimeMin)),
		named("Uptime (ms)", jsonCount(sys["Uptime (ms)"], &s.UptimeMS)),
	)
	if len(errs) > 0 {
		return s, fmt.Errorf("espeasy json: %w", oneLine(errs))
	}
	return s, nil
}

// firstObject decodes the members of the top-level object in b up to key
// and returns key's value as an object; nil when the object has no such
// member. Members after key are not read.
func firstObject(b []byte, key string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	bad := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("invalid JSON at byte %d", se.Offset)
		}
		return errors.New("invalid JSON")
	}
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil, bad(err)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, bad(err)
		}
		k, _ := t.(string)
		if k != key {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, bad(err)
			}
			continue
		}
		var m map[string]json.RawMessage
		if err := dec.Decode(&m); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return nil, fmt.Errorf("%s: not an object", key)
			}
			return nil, bad(err)
		}
		return m, nil
	}
	return nil, nil
}

// jsonText reads a string, or a number as the digits the device wrote.
func jsonText(m json.RawMessage, dst *string) error {
	t := strings.TrimSpace(string(m))
	if t == "" || t == "null" {
		return nil
	}
	if t[0] != '"' {
		var n json.Number
		if err := json.Unmarshal(m, &n); err != nil {
			return errors.New("not a string")
		}
		*dst = Clean(n.String())
		return nil
	}
	return jsonString(m, dst)
}

// jsonCount reads a count that cannot be negative, written as a number or
// as a string of digits; dst stays nil when the field is absent, null or
// empty: a value not told is unknown.
func jsonCount(m json.RawMessage, dst **int64) error {
	t := strings.TrimSpace(string(m))
	if t != "" && t[0] == '"' {
		var s string
		if err := json.Unmarshal(m, &s); err != nil {
			return errors.New("not a number")
		}
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
		m = json.RawMessage(s)
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return errors.New("not a number")
		}
	}
	return jsonNonNegative(m, dst)
}
