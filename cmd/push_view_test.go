package cmd

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mattn/go-runewidth"

	"github.com/ots-ota/ots-ota/upload"
)

// viewRun feeds a fleet view the events of a made-up run.
type viewRun struct {
	v   *fleetView
	now time.Time
}

func newViewRun(names ...string) *viewRun {
	var targets []upload.Target
	for i, n := range names {
		targets = append(targets, upload.Target{Name: n, Host: fmt.Sprintf("10.0.0.%d", i+1)})
	}
	return &viewRun{v: makeFleetView(1000, targets, 4, nil), now: time.Unix(1e9, 0)}
}

func (r *viewRun) ev(name string, ph upload.Phase, try int, done int64, msg string) {
	r.now = r.now.Add(100 * time.Millisecond)
	i := 0
	for i < len(r.v.devs) && r.v.devs[i].label != name {
		i++
	}
	e := upload.FleetEvent{Event: upload.Event{Time: r.now, Target: name, Phase: ph, Try: try, Done: done, Message: msg},
		Addr: fmt.Sprintf("10.0.0.%d:3232", i+1)}
	r.v.event(e)
}

// retry is a device's retrying event after try failed; max is the most
// tries its failure allows (0: the event tells none).
func (r *viewRun) retry(name string, try, max int, msg string) {
	r.now = r.now.Add(100 * time.Millisecond)
	i := 0
	for i < len(r.v.devs) && r.v.devs[i].label != name {
		i++
	}
	r.v.event(upload.FleetEvent{Event: upload.Event{Time: r.now, Target: name, Phase: upload.PhaseRetrying, Try: try, MaxTries: max, Message: msg},
		Addr: fmt.Sprintf("10.0.0.%d:3232", i+1)})
}

// end ends a device: bytes is what its last try delivered, as the
// runner's result tells it.
func (r *viewRun) end(name string, o upload.Outcome, bytes int64, msg string) {
	r.now = r.now.Add(100 * time.Millisecond)
	i := 0
	for i < len(r.v.devs) && r.v.devs[i].label != name {
		i++
	}
	res := &upload.Result{Outcome: o, Message: msg}
	if bytes > 0 { // no try reached the transfer: the runner tells no count
		res.Bytes = &bytes
	}
	r.v.event(upload.FleetEvent{Event: upload.Event{Time: r.now, Target: name, Phase: upload.PhaseDone},
		Addr: fmt.Sprintf("10.0.0.%d:3232", i+1), Result: res})
}

func TestFleetViewBlock(t *testing.T) {
	// Targets given in this order, neither sorted nor the order they start in.
	names := []string{"kitchen", "attic", "porch", "garage", "barn", "cellar", "den", "hall"}
	r := newViewRun(names...)
	for _, n := range []string{"den", "attic", "kitchen", "hall", "porch", "barn", "garage", "cellar"} {
		r.ev(n, upload.PhaseChecking, 0, 0, "reading what the device tells")
	}
	check := func(when string, width, height int, want []string) {
		t.Helper()
		got := r.v.block(r.now, width, height)
		if len(got) > height {
			t.Errorf("%s: %d lines for a height of %d", when, len(got), height)
		}
		for _, l := range got {
			if w := runewidth.StringWidth(l); w > width {
				t.Errorf("%s: line of %d columns for a width of %d: %q", when, w, width, l)
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: got\n%s\nwant\n%s", when, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	check("all checking", 60, 6, []string{
		"0/8 devices [                                ] 0 B / 7.8 KiB",
		"kitchen  checking",
		"attic    checking",
		"porch    checking",
		"garage   checking",
		"+4 more",
	})

	// Uploads begin: devices still at checking wait their turn.
	r.ev("porch", upload.PhaseConnecting, 1, 0, "")
	r.ev("attic", upload.PhaseUploading, 1, 100, "")
	r.ev("attic", upload.PhaseUploading, 1, 500, "")
	r.ev("den", upload.PhaseConnecting, 1, 0, "")
	r.retry("porch", 1, 2, "retrying: device answered 500 \"Write failed\"\n\x1b[2Jmore")
	check("uploading", 60, 6, []string{
		"0/8 devices [>                   ] 500 B / 7.8 KiB  5 queued",
		"attic    uploading  50 %    5 KB/s",
		"porch    retrying  try 2/2: device answered 500 \"Write fail…",
		"den      connecting",
	})

	r.ev("porch", upload.PhaseUploading, 2, 200, "")
	r.end("attic", upload.OutcomeUpdated, 1000, "runs 1.0.1")
	r.end("den", upload.OutcomeFailed, 0, "device answered 500")
	check("after the first ends", 60, 4, []string{
		"2/8 devices  1.2 KiB / 7.8 KiB  ETA 1s  1 failed, 5 queued",
		"porch    uploading  20 %  try 2/2: device answered 500 \"Wri…",
	})
	if want := []string{"den: failed: device answered 500"}; strings.Join(r.v.above, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines above the view: %q, want %q", r.v.above, want)
	}
	check("two lines", 30, 2, []string{"2/8 devices  1.2 KiB / 7.8 Ki…", "porch    uploading  20 %  try…"})
	check("one line", 30, 1, []string{"2/8 devices  1.2 KiB / 7.8 Ki…"})
	check("no room", 30, 0, nil)

	// Room for every device: a line each, in target order.
	lines := r.v.block(r.now, 60, 20)
	if len(lines) != len(names) {
		t.Fatalf("%d lines for %d devices with room for all:\n%s", len(lines), len(names), strings.Join(lines, "\n"))
	}
	for i, n := range names {
		if !strings.HasPrefix(lines[i], n+" ") {
			t.Errorf("line %d is %q, want device %s", i, lines[i], n)
		}
	}
	for _, want := range []string{"attic   [=========] updated", "den     [         ] failed: device answered 500",
		"barn    [         ] queued", "porch   [>        ] uploading  20 %  try 2/2: device answer…"} {
		if !strings.Contains(strings.Join(lines, "\n"), want) {
			t.Errorf("no line %q in\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

// TestFleetViewBytes: the overall line counts the bytes the devices took,
// of the image's size for each device it is to be sent to.
func TestFleetViewBytes(t *testing.T) {
	r := newViewRun("up", "same", "half", "busy", "wait", "gated")
	for _, n := range []string{"up", "same", "half", "busy", "wait", "gated"} {
		r.ev(n, upload.PhaseChecking, 0, 0, "")
	}
	r.end("same", upload.OutcomeSkipped, 0, "already runs 1.0.1")
	r.ev("up", upload.PhaseUploading, 1, 600, "")
	r.end("up", upload.OutcomeUpdated, 1000, "runs 1.0.1") // its last progress event was short of the end
	r.ev("half", upload.PhaseUploading, 1, 300, "")
	r.end("half", upload.OutcomeFailed, 0, "device answered 500")
	r.ev("busy", upload.PhaseUploading, 1, 500, "")
	r.end("gated", upload.OutcomeNotStarted, 0, "not started: the canary failed")
	// Sent: 1000 (up) + 300 (half) + 500 (busy); to send: 1000 for each of
	// up, half, busy and wait (same and gated get nothing).
	if got, want := r.v.overall(r.now, 60), "4/6 devices  1.8 KiB / 3.9 KiB  ETA 0s  1 failed, 1 queued"; got != want {
		t.Errorf("overall line %q, want %q", got, want)
	}
	lines := strings.Join(r.v.block(r.now, 60, 20), "\n")
	for _, want := range []string{"up    [===========] updated", "same  [           ] skipped",
		"half  [==>        ] failed"} {
		if !strings.Contains(lines, want) {
			t.Errorf("no line %q in\n%s", want, lines)
		}
	}
}

// TestFleetViewTries: a retrying device shows the try it is on of the most
// its last failure's class allows, as the runner tells it.
func TestFleetViewTries(t *testing.T) {
	r := newViewRun("a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		r.ev(n, upload.PhaseChecking, 0, 0, "")
		r.ev(n, upload.PhaseConnecting, 1, 0, "")
	}
	r.retry("a", 1, 4, "retrying: connection reset")
	r.ev("a", upload.PhaseConnecting, 2, 0, "")
	r.retry("a", 2, 3, "retrying: device answered 500 Write failed")
	r.retry("b", 1, 2, "device busy; waiting 1s for its stability window, then trying once more")
	r.ev("b", upload.PhaseUploading, 2, 100, "")
	r.retry("c", 1, 0, "retrying: connection reset") // tells no maximum: --retries + 1
	want := map[string]string{
		"a": "retrying  try 3/3: device answered 500 Write failed",
		"b": "uploading  10 %  try 2/2: device busy; waiting 1s for its stability window, then trying once more",
		"c": "retrying  try 2/4: connection reset",
	}
	for _, d := range r.v.devs {
		if got := r.v.status(d); got != want[d.label] {
			t.Errorf("%s: %q, want %q", d.label, got, want[d.label])
		}
	}
}

func TestFleetViewETA(t *testing.T) {
	r := newViewRun("a", "b", "c", "d", "e", "f")
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		r.ev(n, upload.PhaseChecking, 0, 0, "")
	}
	if _, ok := r.v.eta(r.now); ok {
		t.Error("an ETA before any device started")
	}
	r.ev("a", upload.PhaseConnecting, 1, 0, "")
	r.ev("b", upload.PhaseConnecting, 1, 0, "")
	if _, ok := r.v.eta(r.now); ok {
		t.Error("an ETA before any device ended")
	}
	r.now = r.now.Add(10 * time.Second)
	r.end("a", upload.OutcomeUpdated, 1000, "") // took 10.2 s
	// Two at once: b is nearly done, then c, d, e, f take 10.2 s each,
	// two by two.
	eta, ok := r.v.eta(r.now)
	if want := 20 * time.Second; !ok || eta < want-2*time.Second || eta > want+2*time.Second {
		t.Errorf("ETA %v (%v), want about %v", eta, ok, want)
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                         "plain",
		"two\nlines\r\n":                "two lines",
		"\x1b[2Jclear  \t tab\u009bcsi": "[2Jclear tab csi",
		"bad \xff\x9b utf-8":            "bad ? utf-8",
		"":                              "",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFitTable(t *testing.T) {
	results := func(named bool) []upload.Result {
		var out []upload.Result
		for i, o := range []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeFailed, upload.OutcomeUnverified} {
			addr := fmt.Sprintf("192.168.1.%d:3232", 40+i)
			dev := strings.TrimSuffix(addr, ":3232")
			if named {
				dev = fmt.Sprintf("greenhouse-%d", i)
			}
			out = append(out, upload.Result{Device: dev, Addr: addr, Protocol: upload.HTTP, From: "1.0.0", To: "1.0.1",
				Outcome: o, Tries: 1, Duration: 38 * time.Second, Rate: 97000,
				Message: strings.Repeat("the device said something long and useful ", 3)})
		}
		return out
	}
	for _, c := range []struct {
		name    string
		named   bool
		width   int
		columns string // the header as laid out
	}{
		{"no terminal", false, 0, "DEVICE ADDRESS PROTOCOL FROM → TO OUTCOME TRIES TIME KB/S MESSAGE"},
		{"wide", false, 300, "DEVICE ADDRESS PROTOCOL FROM → TO OUTCOME TRIES TIME KB/S MESSAGE"},
		{"120 columns", false, 120, "DEVICE ADDRESS PROTOCOL FROM → TO OUTCOME TRIES TIME KB/S MESSAGE"},
		{"80 columns, address repeats the device", false, 80, "DEVICE PROTOCOL FROM → TO OUTCOME TRIES MESSAGE"},
		{"90 columns, named devices", true, 90, "DEVICE ADDRESS FROM → TO OUTCOME MESSAGE"},
		{"40 columns: lines cut", false, 40, "DEVICE FROM → TO OUTCOME …"},
		{"20 columns", false, 20, "DEVICE FROM…"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &app{io: &IOStreams{}}
			var b strings.Builder
			res := results(c.named)
			writePushTable(&b, c.width, a, res, totalsLine(res, map[string]int{"updated": 1, "failed": 1, "unverified": 1}, 40*time.Second))
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			if got := strings.Join(strings.Fields(lines[0]), " "); got != c.columns {
				t.Errorf("columns %q, want %q", got, c.columns)
			}
			for _, l := range lines {
				if w := runewidth.StringWidth(l); c.width > 0 && w >= c.width {
					t.Errorf("line of %d columns on a terminal of %d: %q", w, c.width, l)
				}
			}
			long := strings.Contains(b.String(), strings.TrimSpace(res[0].Message))
			if c.width == 0 || c.width == 300 {
				if !long {
					t.Errorf("the message was cut:\n%s", b.String())
				}
			} else if long || !strings.Contains(lines[1], "…") {
				t.Errorf("the message is not cut with …:\n%s", b.String())
			}
			if last := lines[len(lines)-1]; !strings.Contains(last, "in 40s") {
				t.Errorf("the totals do not end the table: %q", last)
			}
			// Colour changes no column.
			var col strings.Builder
			writePushTable(&col, c.width, &app{io: &IOStreams{OutTTY: true}}, res, "")
			if !strings.Contains(col.String(), "\x1b[31mfailed") && (c.width == 0 || c.width > 40) {
				t.Errorf("no colour:\n%q", col.String())
			}
			plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(col.String(), "")
			if want := strings.Join(lines[:1+len(res)], "\n"); !strings.HasPrefix(plain, want) {
				t.Errorf("with colour:\n%s\nwithout:\n%s", plain, want)
			}
		})
	}
}
