package tasmota

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/rollout"
)

// maxWords bounds a device's words in a report.
const maxWords = 200

// told is what one message of a device tells, by its subtopic
// (parseMessage). Zero fields are not told.
type told struct {
	kind  rollout.ReportKind // a report to make ("" none)
	words string             // the device's words for started/failed/success
	info  int                // 1, 2, 3: an INFOn message (facts in facts)
	facts rollout.Facts

	// otaURL is the value of an OtaUrl reply ({"OtaUrl":"…"}).
	otaURL *string
	// status holds the sections of a STATUS/STATUSn answer
	// ({"StatusFWR":{…}} …), n its number (0 = all at once, -1 = "STATUS").
	status   map[string]json.RawMessage
	statusNo int
}

// parseMessage reads the payload of a device's subtopic (LWT, INFO1..3,
// RESULT, UPGRADE, OTAURL, STATUS, STATUS0..11). It never fails: what it
// cannot read tells nothing.
func parseMessage(sub string, payload []byte) told {
	switch up := strings.ToUpper(sub); {
	case up == "LWT":
		return told{kind: parseLWT(payload)}
	case up == "INFO1" || up == "INFO2" || up == "INFO3":
		n := int(up[4] - '0')
		f, ok := parseInfo(n, payload)
		if !ok {
			return told{}
		}
		return told{info: n, facts: f}
	case up == "RESULT" || up == "UPGRADE" || up == "OTAURL":
		var t told
		t.kind, t.words = parseUpgrade(payload)
		t.otaURL = parseOtaURLReply(payload)
		return t
	case strings.HasPrefix(up, "STATUS"):
		n, ok := statusNumber(up[len("STATUS"):])
		if !ok {
			return told{}
		}
		var sections map[string]json.RawMessage
		if json.Unmarshal(payload, &sections) != nil || len(sections) == 0 {
			return told{}
		}
		return told{status: sections, statusNo: n}
	}
	return told{}
}

func statusNumber(s string) (int, bool) {
	if s == "" {
		return -1, true
	}
	if len(s) > 2 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseLWT reads tele/<t>/LWT: "Online" or "Offline" (Tasmota's defaults,
// in any case); anything else (a build's own words, the empty payload
// that clears a retained LWT) tells nothing.
func parseLWT(b []byte) rollout.ReportKind {
	switch strings.ToLower(string(bytes.TrimSpace(b))) {
	case "online":
		return rollout.ReportOnline
	case "offline":
		return rollout.ReportOffline
	}
	return ""
}

// object reads a JSON object's members by name, any letter case (Tasmota
// writes its own case, a command's reply key follows the command table).
func object(b []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

func jsonText(m json.RawMessage) (string, bool) {
	var s string
	if len(m) == 0 || json.Unmarshal(m, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonCount(m json.RawMessage) *int64 {
	var f float64
	if len(m) == 0 || json.Unmarshal(m, &f) != nil || f < 0 || f > 1<<53 || f != float64(int64(f)) {
		return nil
	}
	n := int64(f)
	return &n
}

// parseUpgrade reads a reply {"Upgrade":"…"} on stat/<t>/RESULT, or on
// stat/<t>/UPGRADE (the outcome, and the reply itself with SetOption4):
//   - "Version <running> from <url>": the device took the command (the
//     URL is kept without its path: it holds the rollout's token, see
//     redactFrom);
//   - "Successful. Restarting": written, restarting;
//   - "Failed <why>": every try failed, it keeps running;
//   - "1 or ><version> to upgrade": it did not take the command (failed).
//
// Any other reply, or a message without Upgrade, tells nothing.
func parseUpgrade(b []byte) (rollout.ReportKind, string) {
	v, ok := jsonText(object(b)["upgrade"])
	if !ok {
		return "", ""
	}
	w := oneline.Clean(redactFrom(v), maxWords)
	low := strings.ToLower(w)
	switch {
	case strings.HasPrefix(low, "version "):
		return rollout.ReportStarted, w
	case strings.HasPrefix(low, "successful"):
		return rollout.ReportSuccess, w
	case strings.HasPrefix(low, "failed"):
		return rollout.ReportFailed, w
	case strings.HasPrefix(low, "1 or >"):
		return rollout.ReportFailed, "it did not take the command: " + w
	}
	return "", ""
}

// redactFrom hides the URL of "Version <running> from <url>": the
// rollout's URL holds its token, a capability to fetch an image that
// embeds the Wi-Fi credentials, and the words go to results, logs and the
// state file. What is kept has the file server's LogURL shape,
// scheme://host/…/name (no user info, no query).
func redactFrom(v string) string {
	i := strings.Index(strings.ToLower(v), " from ")
	if i < 0 {
		return v
	}
	return v[:i+len(" from ")] + logURL(strings.TrimSpace(v[i+len(" from "):]))
}

func logURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Scheme == "" {
		return "…"
	}
	name := path.Base(u.Path)
	if name == "." || name == "/" {
		return u.Scheme + "://" + u.Host + "/…"
	}
	return u.Scheme + "://" + u.Host + "/…/" + name
}

// parseOtaURLReply reads the reply to OtaUrl: {"OtaUrl":"<the URL it
// keeps>"}.
func parseOtaURLReply(b []byte) *string {
	v, ok := jsonText(object(b)["otaurl"])
	if !ok {
		return nil
	}
	return &v
}

// parseInfo reads tele/<t>/INFO1..3 in both shapes: {"Info1":{…}} (since
// 9.5) and the bare object of older builds. INFO1 tells Version, INFO2
// the IP address, INFO3 RestartReason (text, or a crash recorder's
// object) and, in the wrapped shape, BootCount. ok false: not an object.
func parseInfo(n int, b []byte) (rollout.Facts, bool) {
	m := object(b)
	if m == nil {
		return rollout.Facts{}, false
	}
	if inner := object(m["info"+string(rune('0'+n))]); inner != nil {
		m = inner
	}
	var f rollout.Facts
	switch n {
	case 1:
		if v, ok := jsonText(m["version"]); ok {
			setVersion(&f, v)
		}
	case 2:
		if v, ok := jsonText(m["ipaddress"]); ok {
			f.IP = ipText(v)
		}
	case 3:
		f.RestartReason = restartReason(m["restartreason"])
		f.BootCount = jsonCount(m["bootcount"])
	}
	return f, true
}

// setVersion fills Version and what it says: the release and, for the
// loader images, the step.
func setVersion(f *rollout.Facts, v string) {
	v = devinfo.Clean(v)
	if v == "" {
		return
	}
	st := devinfo.TasmotaStatus{Version: v}
	f.Version, f.Release, f.Intermediate = v, st.Release(), st.Intermediate()
}

// restartReason is INFO3's (or StatusPRM's) RestartReason: its text, or,
// for a crash recorder's object, that object on one line.
func restartReason(m json.RawMessage) string {
	if s, ok := jsonText(m); ok {
		return oneline.Clean(s, maxWords)
	}
	var obj map[string]json.RawMessage
	if len(m) == 0 || json.Unmarshal(m, &obj) != nil || obj == nil {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, m) != nil {
		return ""
	}
	return oneline.Clean("crash: "+buf.String(), maxWords)
}

func ipText(s string) string {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.IsUnspecified() {
		return ""
	}
	return a.String()
}

func macText(s string) string {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return ""
	}
	return strings.ToUpper(hw.String())
}

// statusFacts reads the sections of a Status answer (STATUS0, or the
// STATUSn messages merged) as the HTTP API's Status 0 is read, plus
// StatusPRM.RestartReason and StatusNET's addresses. ok false: neither
// StatusFWR nor StatusPRM is among them.
func statusFacts(sections map[string]json.RawMessage) (rollout.Facts, bool) {
	b, err := json.Marshal(sections)
	if err != nil {
		return rollout.Facts{}, false
	}
	// A wrongly typed field leaves only itself unknown.
	st, err := devinfo.ParseTasmotaStatus(b)
	if err != nil && st.Version == "" && !st.OtaURLTold && st.BootCount == nil && st.UptimeS == nil {
		return rollout.Facts{}, false
	}
	var f rollout.Facts
	setVersion(&f, st.Version)
	f.UptimeS, f.BootCount, f.FreeKiB = st.UptimeS, st.BootCount, st.FreeKiB
	f.Chip = st.Chip()
	f.MAC = macText(st.Mac)
	lower := map[string]json.RawMessage{}
	for k, v := range sections {
		lower[strings.ToLower(k)] = v
	}
	if prm := object(lower["statusprm"]); prm != nil {
		f.RestartReason = restartReason(prm["restartreason"])
		// As told, byte for byte: Restore puts it back (devinfo cleans
		// and cuts what it reads for showing).
		if u, ok := jsonText(prm["otaurl"]); ok {
			f.OtaURL = &u
		}
	}
	if net := object(lower["statusnet"]); net != nil {
		if v, ok := jsonText(net["ipaddress"]); ok {
			f.IP = ipText(v)
		}
	}
	return f, true
}
