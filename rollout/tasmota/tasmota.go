// Package tasmota is the Tasmota pull family of a rollout: it tells
// Tasmota devices over the user's MQTT broker to fetch an image
// (Backlog OtaUrl <url>; Upgrade 1) and turns what they publish into
// rollout reports (docs/protocols/tasmota-mqtt.md).
//
// Topics follow a FullTopic pattern (Tasmota's default "%prefix%/%topic%/")
// and the prefixes cmnd, stat and tele. What is read:
//   - tele/<t>/LWT: "Online" (retained) / "Offline" (the will) → online /
//     offline reports;
//   - stat/<t>/RESULT and stat/<t>/UPGRADE {"Upgrade":"…"} → started,
//     success, failed;
//   - tele/<t>/INFO1 (Version), INFO2 (IPAddress), INFO3 (RestartReason,
//     BootCount), with or without the {"Info1":…} wrapper: Tasmota sends
//     them only on its first MQTT connection after a boot, so they are
//     the proof of a boot. The three of one boot make ONE booted report
//     (sent when INFO3 arrives, or 3 s after INFO1 without it);
//   - retained messages other than the LWT (INFO1..3 with InfoRetain 1,
//     or anything someone published retained) are left out: the broker
//     sends them again on each subscribe, long after they were said, so
//     they are neither a boot nor an answer (Discover still counts the
//     device as seen);
//   - stat/<t>/STATUS0 (or STATUS, STATUS1..11 from builds before 9.5)
//     and STATUS2: the answers to Status0 and Status 2.
//
// Status is never sent on the family's own: Preflight (Status0) before
// the command, and Reread (Status 2) only when the engine calls it, which
// it does only after the device's reboot window. Polling Status during an
// upgrade can break the flash (arendst/Tasmota#21807).
//
// Every command goes to one device's own topic, at QoS 1, never retained
// (the broker package retains nothing), never to a group topic. QoS 1 can
// deliver a command twice: when the link drops before the broker's
// acknowledgement, the client resends it after the reconnect, and a broker
// that had passed the first copy on passes the second on too (Tasmota
// subscribes at QoS 0 and cannot tell). The device then answers twice and
// may fetch, or even flash and restart, once more; the verdict takes the
// second started, success or boot as the same update (a boot into the
// target still gives updated after the stability window), and Tries counts
// only the commands sent.
package tasmota

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/internal/watch"
	"github.com/ots-ota/ots-ota/upload"
)

// Options tune the family.
type Options struct {
	// FullTopic is the pattern of devices that name none of their own
	// (rollout.Device.FullTopic) ("" = DefaultFullTopic). Tokens: %prefix%
	// %topic% %hostname% %id%; the device's key fills the one it holds.
	FullTopic string
	// Prefixes Tasmota puts in %prefix% (its Prefix1..3; "" = "cmnd",
	// "stat", "tele").
	CmndPrefix, StatPrefix, TelePrefix string
	Logger                             *slog.Logger
}

// ErrEmptyOtaURL: the device's OtaUrl was empty before, and Tasmota's
// OtaUrl command cannot make it empty again (an empty payload only reads
// it, "1" sets the build's default): Restore sent nothing, and the device
// keeps the rollout's URL.
var ErrEmptyOtaURL = errors.New("its OtaUrl was empty before, and Tasmota cannot set an empty OtaUrl: it keeps the rollout's URL (set yours with the command OtaUrl <url>)")

// Durations of the reads and of a boot's reports.
const (
	// bootMerge is how long a booted report waits for INFO3 after INFO1
	// (Tasmota sends INFO1, INFO2 and INFO3 one after the other).
	bootMerge = 3 * time.Second
	// statusQuiet ends a split Status 0 answer (STATUS, STATUS1, …) that
	// has its firmware and parameters sections but no STATUS11, after this
	// long without a further section.
	statusQuiet = 2 * time.Second
)

// The subtopics read, by prefix.
type subtopic struct {
	prefix int
	name   string
}

var (
	watchSubs = []subtopic{
		{prefTele, "LWT"}, {prefTele, "INFO1"}, {prefTele, "INFO2"}, {prefTele, "INFO3"},
		{prefStat, "RESULT"}, {prefStat, "UPGRADE"}, {prefStat, "OTAURL"},
	}
	// The Status answers ots-ota reads (3 LOG, 6 MQT, 7 TIM, 9, 10 SNS are
	// not; STATUS11 ends a split answer).
	readSubs = []subtopic{
		{prefStat, "STATUS"}, {prefStat, "STATUS0"}, {prefStat, "STATUS1"}, {prefStat, "STATUS2"},
		{prefStat, "STATUS4"}, {prefStat, "STATUS5"}, {prefStat, "STATUS11"},
		{prefStat, "RESULT"}, {prefStat, "OTAURL"},
	}
)

// Family is the Tasmota family over one broker client. It is safe for
// concurrent use.
type Family struct {
	c    *broker.Client
	opts Options
	pre  prefixes
	log  *slog.Logger

	mu       sync.Mutex
	filters  map[string]*filterState
	lwt      map[string]lwtSeen // the last LWT of each device key
	seen     map[string]bool    // device keys seen by INFO1/INFO2
	leftOut  []string           // the last Discover's devices whose LWT says Offline
	waiters  map[*waiter]struct{}
	watchers watch.Set
	boots    map[string]*boot
	https    bool              // CheckURL's URL is https
	urls     map[string]string // device key → the URL it was last told
	chips    map[string]string // device key → the chip its last read told
	served   map[string]bool   // CheckCompanions: the names served (nil = not told)

	emitMu sync.Mutex // one report at a time, in order
}

type filterState struct {
	ready  chan struct{} // closed once subscribed (or failed)
	err    error
	routes []route
}

type route struct {
	m   matcher
	sub string
}

type lwtSeen struct {
	kind rollout.ReportKind
	at   time.Time
}

type waiter struct {
	dev  string
	subs map[string]bool // upper-case subtopics
	ch   chan told
}

type boot struct {
	facts rollout.Facts
	at    time.Time
	timer *time.Timer
}

var (
	_ rollout.Family           = (*Family)(nil)
	_ rollout.URLChecker       = (*Family)(nil)
	_ rollout.CompanionChecker = (*Family)(nil)
	_ rollout.Linker           = (*Family)(nil)
)

// New returns the family over client. The FullTopic is checked on use
// (CheckFullTopic checks it before).
func New(client *broker.Client, opts Options) *Family {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Family{
		c: client, opts: opts, pre: opts.prefixes(), log: log,
		filters:  map[string]*filterState{},
		lwt:      map[string]lwtSeen{},
		seen:     map[string]bool{},
		waiters:  map[*waiter]struct{}{},
		watchers: watch.Set{},
		boots:    map[string]*boot{},
		urls:     map[string]string{},
		chips:    map[string]string{},
	}
}

// Link is the broker link's state (rollout.Linker): up once connected
// and, after a reconnect, subscribed again; the channel closes at its
// next change.
func (f *Family) Link() (up bool, changed <-chan struct{}) { return f.c.Link() }

// Name is "tasmota".
func (f *Family) Name() string { return "tasmota" }

// Protocol labels the rollout's results: "tasmota-mqtt".
func (f *Family) Protocol() upload.Protocol { return "tasmota-mqtt" }

// ReadSource names the one read after a missed report (Reread) in
// results: "Status 2".
func (f *Family) ReadSource() string { return "Status 2" }

// Loader reports whether a served name is a loader image: Tasmota's
// ESP8266 -minimal build, which a device writes when the image does not
// fit, boots, and then fetches the image itself (Companions' first name).
func (f *Family) Loader(name string) bool {
	return strings.Contains(strings.ToLower(name), "-minimal")
}

// target is d's checked pattern and key.
func (f *Family) target(d rollout.Device) (pattern, string, error) {
	pat := d.FullTopic
	if pat == "" {
		pat = f.opts.FullTopic
	}
	p, err := parsePattern(pat)
	if err != nil {
		return pattern{}, "", err
	}
	if err := checkKey(d.Topic); err != nil {
		return pattern{}, "", err
	}
	return p, d.Topic, nil
}

func label(d rollout.Device) string {
	if d.Name != "" {
		return d.Name
	}
	return d.Topic
}

// ensure subscribes to the subtopics of every device of p, once per
// filter for the family's life (the broker keeps them in the session).
func (f *Family) ensure(ctx context.Context, p pattern, subs []subtopic) error {
	for _, s := range subs {
		m := p.matcher(f.pre, s.prefix, s.name)
		f.mu.Lock()
		st, ok := f.filters[m.filter]
		if ok {
			if !slices.ContainsFunc(st.routes, func(r route) bool { return r.m.re.String() == m.re.String() }) {
				st.routes = append(st.routes, route{m, s.name})
			}
			f.mu.Unlock()
			select {
			case <-st.ready:
			case <-ctx.Done():
				return fmt.Errorf("no confirmation of the subscription to %s from the broker in time", m.filter)
			}
			if st.err != nil {
				return st.err
			}
			continue
		}
		st = &filterState{ready: make(chan struct{}), routes: []route{{m, s.name}}}
		f.filters[m.filter] = st
		f.mu.Unlock()
		filter := m.filter
		err := f.c.Subscribe(ctx, filter, func(msg broker.Message) { f.arrive(filter, msg) })
		if err != nil {
			f.mu.Lock()
			st.err = err
			delete(f.filters, filter)
			f.mu.Unlock()
		}
		close(st.ready)
		if err != nil {
			return err
		}
	}
	return nil
}

// arrive takes a message of filter to the device it is about.
func (f *Family) arrive(filter string, msg broker.Message) {
	f.mu.Lock()
	st := f.filters[filter]
	var routes []route
	if st != nil {
		routes = slices.Clone(st.routes)
	}
	f.mu.Unlock()
	for _, r := range routes {
		if dev, ok := r.m.device(msg.Topic); ok {
			f.handle(dev, r.sub, msg)
			return
		}
	}
}

// handle turns one message of device dev into reports and answers.
func (f *Family) handle(dev, sub string, msg broker.Message) {
	t := parseMessage(sub, msg.Payload)
	up := strings.ToUpper(sub)
	f.mu.Lock()
	if msg.Retained && up != "LWT" {
		// Only the LWT is retained on purpose. A retained INFOn
		// (InfoRetain 1), RESULT, UPGRADE or STATUSn was said at some time
		// before, and the broker sends it again on every (re)subscribe: it
		// is neither an event (a boot, an outcome) nor the answer to a read.
		// It still tells that the device exists.
		if t.info == 1 || t.info == 2 {
			f.seen[dev] = true
		}
		f.mu.Unlock()
		f.log.Debug("retained message left out", "topic", dev, "subtopic", up)
		return
	}
	for w := range f.waiters {
		if w.dev == dev && w.subs[up] {
			select {
			case w.ch <- t:
			default:
			}
		}
	}
	var out []rollout.Report
	switch {
	case up == "LWT":
		if t.kind != "" {
			f.lwt[dev] = lwtSeen{t.kind, msg.At}
			out = append(out, rollout.Report{Topic: dev, Kind: t.kind, At: msg.At, Source: "LWT"})
		}
	case t.info > 0:
		f.seen[dev] = true
		out = f.bootLocked(dev, t, msg.At)
	case t.kind != "":
		r := rollout.Report{Topic: dev, Kind: t.kind, At: msg.At, Words: t.words, Source: up}
		if r.Kind == rollout.ReportFailed {
			f.gzFallbackLocked(dev, &r)
		}
		out = append(out, r)
	}
	f.mu.Unlock()
	for _, r := range out {
		f.emit(r)
	}
}

// bootLocked merges INFO1..3 of one boot into one booted report: INFO1
// opens it, INFO2 adds the address, INFO3 closes it (or bootMerge after
// INFO1). An INFO3 with no INFO1 before it is a boot that told no
// version. f.mu is held.
func (f *Family) bootLocked(dev string, t told, at time.Time) []rollout.Report {
	b := f.boots[dev]
	var out []rollout.Report
	switch t.info {
	case 1:
		if b != nil {
			b.timer.Stop()
			out = append(out, bootReport(dev, b))
		}
		b = &boot{facts: t.facts, at: at}
		f.boots[dev] = b
		b.timer = time.AfterFunc(bootMerge, func() { f.flushBoot(dev, b) })
	case 2:
		if b != nil && t.facts.IP != "" {
			b.facts.IP = t.facts.IP
		}
	case 3:
		if b == nil {
			b = &boot{at: at}
		} else {
			b.timer.Stop()
			delete(f.boots, dev)
		}
		b.facts.RestartReason, b.facts.BootCount = t.facts.RestartReason, t.facts.BootCount
		out = append(out, bootReport(dev, b))
	}
	return out
}

func (f *Family) flushBoot(dev string, b *boot) {
	f.mu.Lock()
	if f.boots[dev] != b {
		f.mu.Unlock()
		return
	}
	delete(f.boots, dev)
	f.mu.Unlock()
	f.emit(bootReport(dev, b))
}

func bootReport(dev string, b *boot) rollout.Report {
	src := "INFO1"
	if b.facts.Version == "" {
		src = "INFO3"
	}
	return rollout.Report{Topic: dev, Kind: rollout.ReportBooted, At: b.at, Facts: b.facts, Source: src}
}

// emit queues r for every watcher of its device.
func (f *Family) emit(r rollout.Report) {
	f.emitMu.Lock()
	defer f.emitMu.Unlock()
	f.log.Debug("report", watch.LogAttrs(r)...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers.Push(r)
}

// Watch delivers the reports of devs (of every device of the family's
// pattern when devs is empty) to fn, one at a time in arrival order, on a
// goroutine of its own, from now until ctx ends; fn is not called once
// ctx has ended. fn may block, and may call the family's other methods. Each device's last LWT seen before
// (Discover's) is reported first, with the time it arrived. An error
// means a subscription failed.
func (f *Family) Watch(ctx context.Context, devs []rollout.Device, fn func(rollout.Report)) error {
	w := watch.New(ctx, fn)
	pats := map[string]pattern{}
	if len(devs) == 0 {
		p, err := parsePattern(f.opts.FullTopic)
		if err != nil {
			return err
		}
		pats[p.raw] = p
	} else {
		for _, d := range devs {
			p, dev, err := f.target(d)
			if err != nil {
				return fmt.Errorf("%s: %w", label(d), err)
			}
			pats[p.raw] = p
			w.Add(dev)
		}
	}
	// The LWTs known go first, under the lock that emit takes: no report
	// can come before them.
	f.emitMu.Lock()
	f.mu.Lock()
	var known []rollout.Report
	for dev, l := range f.lwt {
		if w.Wants(dev) {
			known = append(known, rollout.Report{Topic: dev, Kind: l.kind, At: l.at, Source: "LWT"})
		}
	}
	slices.SortFunc(known, func(a, b rollout.Report) int { return cmp.Compare(a.Topic, b.Topic) })
	for _, r := range known {
		w.Push(r)
	}
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	f.emitMu.Unlock()
	w.Go(&f.mu, f.watchers)
	for _, p := range sortedPatterns(pats) {
		if err := f.ensure(ctx, p, watchSubs); err != nil {
			return err
		}
	}
	return nil
}

func sortedPatterns(m map[string]pattern) []pattern {
	out := make([]pattern, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b pattern) int { return cmp.Compare(a.raw, b.raw) })
	return out
}

// Discover lists the devices of the family's pattern the broker knows:
// those whose retained LWT says Online (or words Tasmota's defaults do
// not have), and those seen sending INFO1 or INFO2, waiting wait (or
// until ctx ends) for them. Devices whose LWT says Offline are left out
// (a retained Offline stays on the broker for a device long gone); the
// log names how many. Sorted by topic; Name is the topic.
func (f *Family) Discover(ctx context.Context, wait time.Duration) ([]rollout.Device, error) {
	p, err := parsePattern(f.opts.FullTopic)
	if err != nil {
		return nil, err
	}
	if err := f.ensure(ctx, p, watchSubs); err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	f.mu.Lock()
	keys := map[string]bool{}
	var offline []string
	for dev, l := range f.lwt {
		if l.kind == rollout.ReportOffline {
			offline = append(offline, dev)
			continue
		}
		keys[dev] = true
	}
	slices.Sort(offline)
	f.leftOut = offline
	for dev := range f.seen {
		keys[dev] = true
	}
	f.mu.Unlock()
	out := make([]rollout.Device, 0, len(keys))
	for dev := range keys {
		out = append(out, rollout.Device{Name: dev, Topic: dev})
	}
	slices.SortFunc(out, func(a, b rollout.Device) int { return cmp.Compare(a.Topic, b.Topic) })
	f.log.Info("discovered", "devices", len(out), "offline_left_out", len(offline))
	return out, nil
}

// LeftOut names the devices the last Discover left out because their
// retained LWT says Offline, sorted.
func (f *Family) LeftOut() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leftOut)
}

// read registers for the answers of dev (before the command is sent).
func (f *Family) read(dev string, subs ...string) *waiter {
	w := &waiter{dev: dev, subs: map[string]bool{}, ch: make(chan told, 64)}
	for _, s := range subs {
		w.subs[s] = true
	}
	f.mu.Lock()
	f.waiters[w] = struct{}{}
	f.mu.Unlock()
	return w
}

func (f *Family) unread(w *waiter) {
	f.mu.Lock()
	delete(f.waiters, w)
	f.mu.Unlock()
}

// send publishes payload to the device's command cmd.
func (f *Family) send(ctx context.Context, p pattern, dev, cmd, payload string) error {
	topic := p.topic(f.pre, prefCmnd, dev, cmd)
	f.log.Debug("command", "topic", topic)
	return f.c.Publish(ctx, topic, []byte(payload))
}

var statusTopics = []string{"STATUS", "STATUS0", "STATUS1", "STATUS2", "STATUS4", "STATUS5", "STATUS11"}

// Preflight sends Status0 (cmnd/<t>/Status0, payload "0") and reads the
// answer: one STATUS0 message holding every section (Tasmota 9.5 and
// later), or, from older builds, the sections as STATUS, STATUS1 …
// STATUS11, ended by STATUS11 or statusQuiet after the firmware and
// parameters sections. Facts: Version (StatusFWR), Chip
// (StatusFWR.Hardware), OtaUrl as told byte for byte, Uptime, BootCount,
// RestartReason (StatusPRM), FreeKiB (StatusMEM.Free), MAC and IP
// (StatusNET). An error: the command was not sent, or no answer came
// before ctx ended (an answer cut by ctx gives what it told).
func (f *Family) Preflight(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	return f.status(ctx, d, "Status0", "0")
}

// Reread sends Status 2 (cmnd/<t>/Status, payload "2") and reads
// StatusFWR: Version (and so Release and Intermediate) and Chip. Never
// while the device may be installing: the engine calls it only after the
// device's reboot window.
func (f *Family) Reread(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	return f.status(ctx, d, "Status", "2")
}

func (f *Family) status(ctx context.Context, d rollout.Device, cmd, which string) (rollout.Facts, error) {
	p, dev, err := f.target(d)
	if err != nil {
		return rollout.Facts{}, fmt.Errorf("%s: %w", label(d), err)
	}
	if err := f.ensure(ctx, p, readSubs); err != nil {
		return rollout.Facts{}, err
	}
	w := f.read(dev, statusTopics...)
	defer f.unread(w)
	what := "Status 2"
	if which == "0" {
		what = "Status 0"
	}
	if err := f.send(ctx, p, dev, cmd, which); err != nil {
		return rollout.Facts{}, fmt.Errorf("%s: %s: %w", label(d), what, err)
	}
	sections := map[string]json.RawMessage{}
	has := func(k string) bool {
		for s := range sections {
			if strings.EqualFold(s, k) {
				return true
			}
		}
		return false
	}
	var quiet <-chan time.Time
	done := false
	for !done {
		select {
		case t := <-w.ch:
			for k, v := range t.status {
				sections[k] = v
			}
			switch {
			case which == "2" && has("StatusFWR"):
				done = true
			case which == "0" && (t.statusNo == 0 && has("StatusFWR") || t.statusNo == 11):
				done = true
			case which == "0" && has("StatusFWR") && has("StatusPRM"):
				quiet = time.After(statusQuiet)
			}
		case <-quiet:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	facts, ok := statusFacts(sections)
	if !ok {
		return rollout.Facts{}, fmt.Errorf("%s did not answer %s in time (is it online, and is its MQTT topic %q?)", label(d), what, dev)
	}
	if facts.Chip != "" {
		f.mu.Lock()
		f.chips[dev] = facts.Chip
		f.mu.Unlock()
	}
	return facts, nil
}

// told records the URL dev is told, for its failed reports.
func (f *Family) told(dev, u string) {
	f.mu.Lock()
	f.urls[dev] = u
	f.mu.Unlock()
}

// gzFallbackLocked: from its middle try on, an ESP8266 asks for the
// name it is on (the image's, or its -minimal's) with ".gz" appended
// (facts §4). When that name is not served, its final report is "Failed
// File Not Found (404)" whatever failed on the tries before: the 404
// says nothing of the image, so the report is in the network class (a
// further command may succeed). Its words stay the device's own: what
// the file server saw is the engine's to tell. Not for a device that
// told another chip, nor when the family was not told what is served.
// f.mu is held.
func (f *Family) gzFallbackLocked(dev string, r *rollout.Report) {
	low := strings.ToLower(r.Words)
	if f.served == nil || !strings.Contains(low, "not found") && !strings.Contains(low, "404") {
		return
	}
	if c := f.chips[dev]; c != "" && c != image.ChipESP8266.String() {
		return
	}
	told, err := url.Parse(f.urls[dev])
	if err != nil || told.Path == "" {
		return
	}
	name := path.Base(told.Path)
	if strings.Contains(strings.ToLower(name), ".gz") {
		return
	}
	for _, n := range []string{name, companions(name)[0]} {
		if !f.served[n+".gz"] {
			r.Class = upload.ClassNetwork
			return
		}
	}
}

// CheckCompanions refuses a compressed companion ("<name>.gz") that does
// not unpack to the bytes of <name> beside it (the image, or its -minimal
// image): a leftover of another build would be flashed on the tries that
// fall back to it. It remembers which names are served, so that a
// "Not Found" on the fallback to an unserved .gz is known for what it is.
func (f *Family) CheckCompanions(imagePath string, comps map[string]string) error {
	imgName := filepath.Base(imagePath)
	paths := map[string]string{imgName: imagePath}
	names := make([]string, 0, len(comps))
	for n, p := range comps {
		paths[n] = p
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !strings.HasSuffix(strings.ToLower(n), ".gz") {
			continue
		}
		if err := checkGzip(n, comps[n], n[:len(n)-3], paths[n[:len(n)-3]]); err != nil {
			return err
		}
	}
	served := map[string]bool{imgName: true}
	for _, n := range names {
		served[n] = true
	}
	f.mu.Lock()
	f.served = served
	f.mu.Unlock()
	return nil
}

// maxUnpacked bounds what a companion .gz is unpacked to when no
// uncompressed file is beside it (ESP8266 flash is at most 16 MiB).
const maxUnpacked = 16 << 20

// checkGzip: gzName (at gzPath) must unpack to the bytes of plain (at
// plainPath; "" when none is beside it: then it must only unpack).
func checkGzip(gzName, gzPath, plain, plainPath string) error {
	fixed := fmt.Sprintf("remove it, or make it again from %s (gzip -k -9 %s)", plain, plain)
	zf, err := os.Open(gzPath)
	if err != nil {
		return fmt.Errorf("cannot read %s beside the image: %v", gzName, oneline.Clean(err.Error(), maxWords))
	}
	defer zf.Close()
	zr, err := gzip.NewReader(zf)
	if err != nil {
		return fmt.Errorf("%s beside the image is not gzip: %s", gzName, fixed)
	}
	got := io.LimitReader(zr, maxUnpacked+1)
	if plainPath == "" {
		n, err := io.Copy(io.Discard, got)
		if err != nil || n > maxUnpacked {
			return fmt.Errorf("%s beside the image does not unpack: %s", gzName, fixed)
		}
		return nil
	}
	want, err := os.ReadFile(plainPath)
	if err != nil {
		return fmt.Errorf("cannot read %s beside the image: %v", plain, oneline.Clean(err.Error(), maxWords))
	}
	unpacked, err := io.ReadAll(io.LimitReader(zr, int64(len(want))+1))
	if err != nil || !bytes.Equal(unpacked, want) {
		return fmt.Errorf("%s beside the image does not unpack to the bytes of %s (a leftover of another build?): %s", gzName, plain, fixed)
	}
	return nil
}

// Command sends, once, cmnd/<t>/Backlog "OtaUrl <url>; Upgrade 1" at QoS
// 1, not retained, and returns when the broker acknowledged it. An error
// wrapping broker.ErrMaybeSent: no acknowledgement before ctx ended, it
// may still arrive. Any other error wraps rollout.ErrNotSent: the command
// surely did not leave (a URL or topic refused, a link that stayed down).
// The device's answers come to Watch. url must pass CheckURL.
// It may reach the device twice (see the package doc).
func (f *Family) Command(ctx context.Context, d rollout.Device, otaURL string) error {
	p, dev, err := f.target(d)
	if err != nil {
		return rollout.Tag(fmt.Errorf("%s: %w", label(d), err), rollout.ErrNotSent)
	}
	if err := checkOtaURL(otaURL); err != nil {
		return rollout.Tag(err, rollout.ErrNotSent)
	}
	f.told(dev, otaURL)
	if err := f.send(ctx, p, dev, "Backlog", "OtaUrl "+otaURL+"; Upgrade 1"); err != nil {
		err = fmt.Errorf("%s: the upgrade command: %w", label(d), err)
		if !errors.Is(err, broker.ErrMaybeSent) {
			err = rollout.Tag(err, rollout.ErrNotSent)
		}
		return err
	}
	f.log.Info("commanded", "topic", dev)
	return nil
}

// CheckURL refuses an image URL Tasmota cannot be told: not http:// or
// https://, holding a space, ";" (Backlog's separator) or "%" (Tasmota
// fills %d in an OtaUrl), or longer than 100 bytes (Tasmota's documented
// limit; builds cut at 150). The engine calls it before publishing. An
// https URL is remembered: Screen then refuses the ESP8266 devices, which
// fetch over plain HTTP only.
func (f *Family) CheckURL(u string) error {
	if err := checkOtaURL(u); err != nil {
		return err
	}
	f.mu.Lock()
	f.https = strings.HasPrefix(strings.ToLower(u), "https:")
	f.mu.Unlock()
	return nil
}

// maxOtaURL is the longest OtaUrl told: Tasmota documents 100 characters
// (older builds had a field of that size; newer ones cut at 150).
const maxOtaURL = 100

func checkOtaURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("the image URL told to a Tasmota device must be http:// or https://")
	case strings.ContainsAny(s, ";%") || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return errors.New("the image URL told to a Tasmota device may not hold a space, \";\" or \"%\"")
	case len(s) > maxOtaURL:
		return fmt.Errorf("the image URL is %d bytes long; Tasmota takes at most %d", len(s), maxOtaURL)
	}
	return nil
}

// Restore sends cmnd/<t>/OtaUrl <otaURL> and waits for the device to
// answer with that OtaUrl (on stat/<t>/RESULT, or stat/<t>/OTAURL): nil
// then. An error: not sent, or no such answer before ctx ended (the
// command was sent; an offline device never gets it, Tasmota's session
// being clean). An empty otaURL sends nothing: ErrEmptyOtaURL. Neither
// the URL nor any part of it is in an error or the log.
func (f *Family) Restore(ctx context.Context, d rollout.Device, otaURL string) error {
	p, dev, err := f.target(d)
	if err != nil {
		return fmt.Errorf("%s: %w", label(d), err)
	}
	if strings.TrimSpace(otaURL) == "" {
		return fmt.Errorf("%s: %w", label(d), ErrEmptyOtaURL)
	}
	if err := f.ensure(ctx, p, readSubs); err != nil {
		return err
	}
	w := f.read(dev, "RESULT", "OTAURL")
	defer f.unread(w)
	if err := f.send(ctx, p, dev, "OtaUrl", otaURL); err != nil {
		return fmt.Errorf("%s: putting back its OtaUrl: %w", label(d), err)
	}
	want := strings.TrimSpace(otaURL)
	for {
		select {
		case t := <-w.ch:
			if t.otaURL != nil && strings.TrimSpace(*t.otaURL) == want {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("%s did not confirm its OtaUrl was put back (the command was sent)", label(d))
		}
	}
}

// Companions are the names a Tasmota device may fetch from the image's
// folder besides the image, as its upgrade derives them: the ESP8266
// minimal image (the name cut at its last "-", else at its first ".",
// then "-minimal" and the name's type from its first "."), and, from the
// middle try on, each with ".gz" appended (unless the name holds ".gz").
// "fw.bin" → fw-minimal.bin, fw.bin.gz, fw-minimal.bin.gz;
// "tasmota-DE.bin" → tasmota-minimal.bin, ….
func (f *Family) Companions(imageName string) []string {
	return companions(imageName)
}

func companions(name string) []string {
	if name == "" {
		return nil
	}
	dot := strings.IndexByte(name, '.')
	if dot < 0 {
		dot = len(name)
	}
	cut := strings.LastIndexByte(name, '-')
	if cut < 0 {
		cut = dot
	}
	minimal := name[:cut] + "-minimal" + name[dot:]
	out := []string{minimal}
	if !strings.Contains(strings.ToLower(name), ".gz") {
		out = append(out, name+".gz", minimal+".gz")
	}
	return out
}

// Screen refuses, before any command, a device that told a chip other
// than the image's, an ESP8266 when the URL CheckURL was given is https,
// and an ESP8266 whose free program space (StatusMEM
// .Free) is smaller than the image when no -minimal image is among have
// (Tasmota then fails "Not Enough space" after its tries). "" = it may
// take the image.
func (f *Family) Screen(fa rollout.Facts, img rollout.Image, have []string) string {
	if fa.Chip != "" && img.Chip != "" && fa.Chip != img.Chip {
		return fmt.Sprintf("the device is an %s and the image is for an %s", fa.Chip, img.Chip)
	}
	f.mu.Lock()
	https := f.https
	f.mu.Unlock()
	if https && fa.Chip == image.ChipESP8266.String() {
		return "the device is an ESP8266, which fetches its image over plain HTTP only, and the image URL is https://: give an http:// --public-url"
	}
	if fa.Chip == image.ChipESP8266.String() && fa.FreeKiB != nil && img.Size > 0 && *fa.FreeKiB*1024 < img.Size {
		if !slices.ContainsFunc(have, func(n string) bool { return strings.Contains(strings.ToLower(n), "-minimal") }) {
			return fmt.Sprintf("the device has %d KiB free for a %d KiB image, and no %s is beside the image for Tasmota's two-step upgrade",
				*fa.FreeKiB, (img.Size+1023)/1024, companions(img.Name)[0])
		}
	}
	return ""
}
