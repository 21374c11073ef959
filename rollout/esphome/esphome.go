// Package esphome is the ESPHome pull family of a rollout: devices built
// with `update: platform: http_request` poll a JSON manifest at a URL
// fixed when they were built, and install what it names when told INSTALL
// over the user's MQTT broker (docs/protocols/esphome-pull.md).
//
// A device is its MQTT topic prefix (ESPHome's mqtt: topic_prefix:, by
// default the node name: rollout.Device.Topic) and one update entity
// (rollout.Device.Entity, its object id; "" = the one its retained states
// name). What is read:
//   - <prefix>/status "online" / "offline" (ESPHome's birth and will,
//     retained) → online / offline reports;
//   - <prefix>/update/<id>/state {"installed_version","latest_version",
//     "title",…}, published retained on every MQTT connect and after each
//     manifest check, install start and install progress (the same JSON:
//     ESPHome tells no installing, progress or error over MQTT). Before
//     its first check after a boot a device tells "" versions. So a boot
//     is seen as an installed_version "" after a non-empty one, or as an
//     installed_version other than the last told; the first state after
//     INSTALL is the device taking it (started); a failed install is
//     invisible (no restart within the bound). A boot after INSTALL into
//     another version than the one told before is also reported as
//     success (ESPHome tells none), so that the change is shown even when
//     the read before the update found no version yet.
//
// Retained messages only fill the family's cache (Preflight, Ready,
// Reread, Discover): the broker sends them again on every (re)subscribe,
// long after they were said, so they are never reports.
//
// The one command is INSTALL on <prefix>/update/<id>/command, at QoS 1,
// never retained (the broker package retains nothing). ESPHome acts on it
// only while its state is "available" (latest_version told and other than
// installed_version): Ready waits for that before the engine commands.
package esphome

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/internal/watch"
	"github.com/ots-ota/ots-ota/upload"
)

// DefaultCheckWait bounds Ready when Config.CheckWait is 0.
const DefaultCheckWait = 10 * time.Minute

// DefaultManifest is the announcement's name for a device that names none
// (rollout.Device.Manifest "").
const DefaultManifest = "manifest.json"

// Config sets up the family.
type Config struct {
	Client *broker.Client
	// Expect is --expect-version: written as the manifest's version, and
	// compared verbatim with what devices tell (installed_version,
	// latest_version), as ESPHome compares it with its project version.
	Expect string
	// CheckWait bounds Ready: how long a device may take to poll the
	// manifest and tell it saw the new version (0 = DefaultCheckWait).
	CheckWait time.Duration
	// Title is the manifest's "name" ("" = the image's stem).
	Title string
	// Summary is the manifest's ota.summary ("" = "ots-ota rollout <version>").
	Summary string
	// ChipFamily is the manifest's builds[].chipFamily, verbatim ("" = from
	// the image's chip: esp32s3 → "ESP32-S3", esp8266 → "ESP8266", …).
	ChipFamily string
	Logger     *slog.Logger
}

// wildcardAt is the number of one-level prefixes from which Watch
// subscribes +/status and +/update/+/state instead of two filters per
// device: a broker takes two filters better than thousands.
const wildcardAt = 16

// settle is how long after a subscription, and after the last retained
// update state of the device since, its retained messages are taken to have all
// arrived, when a device's update entity is to be found among them (a
// broker sends them right after its acknowledgement; a loaded machine may
// hand them over late and one by one).
const settle = 300 * time.Millisecond

// Family is the ESPHome family over one broker client. It is safe for
// concurrent use.
type Family struct {
	c   *broker.Client
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	filters  map[string]*filterState
	wild     bool // the wildcard filters are (being) subscribed
	devs     map[string]*devState
	watchers watch.Set
	leftOut  []string
	rereads  map[string]*sync.Mutex // state topic → one Reread at a time

	emitMu sync.Mutex // one report at a time, in order
}

type filterState struct {
	ready chan struct{} // closed once subscribed (or failed)
	err   error
	at    time.Time // when the broker confirmed it
}

// devState is what the family knows of one prefix.
type devState struct {
	status   rollout.ReportKind // last status told (retained or live), "" unknown
	entities map[string]*entState
	changed  chan struct{} // closed and replaced at each change

	// The last INSTALL: its time, its entity, and whether a state since
	// is still to be taken for the device taking it.
	commanded  time.Time
	cmdEntity  string
	awaitStart bool

	// named are the update entities devices of this prefix name
	// (rollout.Device.Entity): only their states make reports.
	named map[string]bool
	// announced is when Announce was last asked for this prefix's
	// manifest: Ready takes only a state told since.
	announced time.Time
	// heard is when a retained update state of the prefix last came
	// (live ones may come without end, as progress).
	heard time.Time
	// read is the last Preflight of the prefix (nil: none yet).
	read *readMark
}

// readMark is what the read before the update (Preflight) found, and
// whether a restart has been seen since: Ready tells by it a device that
// already ran the target (the read came before its first check) from one
// that installed the announcement on its own.
type readMark struct {
	entity    string
	before    string // the last installed_version told by then, "" none
	restarted bool
}

// reportsFor says whether states of entity id make reports: it is the
// one a device names, or, none named, the prefix's only one.
func (ds *devState) reportsFor(id string) bool {
	if len(ds.named) > 0 {
		return ds.named[id]
	}
	return len(ds.entities) == 1 && ds.entities[id] != nil
}

func (ds *devState) name(id string) {
	if id == "" {
		return
	}
	if ds.named == nil {
		ds.named = map[string]bool{}
	}
	ds.named[id] = true
}

// entState is one update entity's last state.
type entState struct {
	st       State
	at       time.Time
	retained bool
	// last is the last non-empty installed_version told (retained or
	// live); empty: the last state told "" (a boot with no check yet).
	last  string
	empty bool
	// emptyAt is when the empty state that made empty true came: when
	// the device had booted. The first version after it is that boot's,
	// so its booted report is dated then (a boot before the command is
	// no boot after it, however late the device's first check).
	emptyAt time.Time
	// live is the last state told live (not a retained copy), at liveAt
	// (zero: none yet): the broker hands retained copies again at any
	// subscribe, so they may be older than any announcement.
	live   State
	liveAt time.Time
}

var (
	_ rollout.Family     = (*Family)(nil)
	_ rollout.Linker     = (*Family)(nil)
	_ rollout.URLChecker = (*Family)(nil)
	_ rollout.Announcer  = (*Family)(nil)
	_ rollout.Readier    = (*Family)(nil)
)

// New returns the family over cfg.Client.
func New(cfg Config) *Family {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckWait <= 0 {
		cfg.CheckWait = DefaultCheckWait
	}
	return &Family{
		c: cfg.Client, cfg: cfg, log: log,
		filters:  map[string]*filterState{},
		devs:     map[string]*devState{},
		watchers: watch.Set{},
		rereads:  map[string]*sync.Mutex{},
	}
}

// Name is "esphome".
func (f *Family) Name() string { return "esphome" }

// Protocol labels the rollout's results: "esphome-mqtt".
func (f *Family) Protocol() upload.Protocol { return "esphome-mqtt" }

// ReadSource names the one read after a missed report (Reread) in
// results.
func (f *Family) ReadSource() string { return "retained state" }

// Link is the broker link's state (rollout.Linker): up once connected
// and, after a reconnect, subscribed again; the channel closes at its
// next change.
func (f *Family) Link() (up bool, changed <-chan struct{}) { return f.c.Link() }

func label(d rollout.Device) string {
	if d.Name != "" {
		return d.Name
	}
	return d.Topic
}

// check refuses a device whose prefix or entity cannot be.
func check(d rollout.Device) error {
	if err := checkPrefix(d.Topic); err != nil {
		return fmt.Errorf("%s: %w", label(d), err)
	}
	if err := checkEntity(d.Entity); err != nil {
		return fmt.Errorf("%s: %w", label(d), err)
	}
	return nil
}

func manifestName(d rollout.Device) string { return cmp.Or(d.Manifest, DefaultManifest) }

// dev is prefix's state, made on first use. f.mu is held.
func (f *Family) devLocked(prefix string) *devState {
	ds := f.devs[prefix]
	if ds == nil {
		ds = &devState{entities: map[string]*entState{}, changed: make(chan struct{})}
		f.devs[prefix] = ds
	}
	return ds
}

func (ds *devState) touch() {
	close(ds.changed)
	ds.changed = make(chan struct{})
}

// ensure subscribes filter once for the family's life (the broker keeps
// it in the session, the client makes it again after each reconnect).
func (f *Family) ensure(ctx context.Context, filter string) (*filterState, error) {
	f.mu.Lock()
	st, ok := f.filters[filter]
	if !ok {
		st = &filterState{ready: make(chan struct{})}
		f.filters[filter] = st
	}
	f.mu.Unlock()
	if ok {
		select {
		case <-st.ready:
			return st, st.err
		case <-ctx.Done():
			return nil, fmt.Errorf("no confirmation of the subscription to %s from the broker in time", filter)
		}
	}
	err := f.c.Subscribe(ctx, filter, func(m broker.Message) { f.arrive(filter, m) })
	f.mu.Lock()
	if err != nil {
		st.err = err
		delete(f.filters, filter)
	} else {
		st.at = time.Now()
	}
	f.mu.Unlock()
	close(st.ready)
	return st, err
}

// cover subscribes the filters that carry prefix's messages: the
// wildcards when they are in use and cover it, else its own two. It
// returns when the state filter was confirmed.
func (f *Family) cover(ctx context.Context, prefix string) (time.Time, error) {
	f.mu.Lock()
	wild := f.wild && oneLevel(prefix)
	f.mu.Unlock()
	status, states := statusTopic(prefix), statesFilter(prefix)
	if wild {
		status, states = wildStatus, wildStates
	}
	if _, err := f.ensure(ctx, status); err != nil {
		return time.Time{}, err
	}
	st, err := f.ensure(ctx, states)
	if err != nil {
		return time.Time{}, err
	}
	return st.at, nil
}

// wildcards subscribes +/status and +/update/+/state.
func (f *Family) wildcards(ctx context.Context) error {
	f.mu.Lock()
	f.wild = true
	f.mu.Unlock()
	for _, filter := range []string{wildStatus, wildStates} {
		if _, err := f.ensure(ctx, filter); err != nil {
			return err
		}
	}
	return nil
}

// canonical is the one filter whose copy of a message on topic the
// family takes, when two of its filters match it (a device's own and a
// wildcard): the wildcard once it is confirmed.
func (f *Family) canonicalLocked(kind topicKind, prefix string) string {
	own, wild := statusTopic(prefix), wildStatus
	if kind == topicState {
		own, wild = statesFilter(prefix), wildStates
	}
	if oneLevel(prefix) {
		if st := f.filters[wild]; st != nil && !st.at.IsZero() {
			return wild
		}
	}
	if st := f.filters[own]; st != nil {
		return own
	}
	return wild
}

// arrive takes one message of filter.
func (f *Family) arrive(filter string, m broker.Message) {
	kind, prefix, id := parseTopic(m.Topic)
	if kind == topicNone || checkPrefix(prefix) != nil {
		return
	}
	f.mu.Lock()
	if f.canonicalLocked(kind, prefix) != filter {
		f.mu.Unlock()
		return
	}
	var out []rollout.Report
	switch kind {
	case topicStatus:
		out = f.statusLocked(prefix, m)
	case topicState:
		out = f.stateLocked(prefix, id, m)
	}
	f.mu.Unlock()
	for _, r := range out {
		f.emit(r)
	}
}

func (f *Family) statusLocked(prefix string, m broker.Message) []rollout.Report {
	k := parseStatus(m.Payload)
	if k == "" {
		f.log.Debug("status left out: neither online nor offline", "topic", prefix)
		return nil
	}
	ds := f.devLocked(prefix)
	if ds.read != nil && (!m.Retained || k != ds.status) {
		// A connect or a loss since the read (a retained one only when it
		// is news: the broker sends the same again at a resubscribe).
		ds.read.restarted = true
	}
	ds.status = k
	ds.touch()
	if m.Retained {
		return nil
	}
	return []rollout.Report{{Topic: prefix, Kind: k, At: m.At, Source: "status"}}
}

// stateLocked takes a state into the cache and, when live, makes its
// report: booted when it proves a boot and names a version (installed
// changed, or the first non-empty after an empty one), started when it is
// the first after INSTALL, else status.
func (f *Family) stateLocked(prefix, id string, m broker.Message) []rollout.Report {
	st, ok := ParseState(m.Payload)
	if !ok || checkEntity(id) != nil {
		f.log.Debug("update state left out: not a JSON object", "topic", prefix, "entity", shown(id))
		return nil
	}
	ds := f.devLocked(prefix)
	e := ds.entities[id]
	if e == nil {
		e = &entState{}
		ds.entities[id] = e
	}
	prevLast, prevEmpty := e.last, e.empty
	e.st, e.at, e.retained = st, m.At, m.Retained
	if !m.Retained {
		e.live, e.liveAt = st, m.At
	}
	if st.Installed != "" {
		e.last, e.empty = st.Installed, false
	} else {
		if !e.empty || e.emptyAt.IsZero() {
			e.emptyAt = m.At
		}
		e.empty = true
	}
	if m.Retained {
		ds.heard = m.At
	}
	ds.touch()
	if rd := ds.read; rd != nil && rd.entity == id && prevLast != "" &&
		(st.Installed == "" && !prevEmpty || st.Installed != "" && st.Installed != prevLast) {
		rd.restarted = true // versions emptied, or another one: a boot
	}
	if m.Retained || !ds.reportsFor(id) {
		// Another entity's states on the prefix say nothing of the
		// device's own (a second firmware entity reading the same
		// manifest would pass for a boot).
		return nil
	}
	r := rollout.Report{Topic: prefix, Kind: rollout.ReportStatus, At: m.At, Source: "state", Facts: facts(st), Words: stateWords(st)}
	boot := false
	switch {
	case st.Installed == "":
		// A boot when it told a version before (ESPHome tells "" only
		// until its first check after a boot): the version comes with
		// that check, as a booted report.
		if prevLast != "" && !prevEmpty {
			boot = true
			r.Words = "no versions told (restarted, no update check yet)"
		}
	case prevLast != "" && st.Installed != prevLast, prevEmpty:
		// Another version than the last told, or the first version after
		// an empty state: a boot, naming what it runs.
		r.Kind, boot = rollout.ReportBooted, true
		if prevEmpty && !e.emptyAt.IsZero() && e.emptyAt.Before(r.At) {
			r.At = e.emptyAt // the boot came with the empty state
		}
	}
	var out []rollout.Report
	if r.Kind == rollout.ReportBooted && prevLast != "" && st.Installed != prevLast && ds.cmdEntity == id && !ds.commanded.IsZero() && !m.At.Before(ds.commanded) {
		// It told another version before its restart, after the command:
		// it wrote an image (ESPHome says nothing of it itself). This
		// shows the change when the read before the update came before
		// its first check (no version yet).
		out = append(out, rollout.Report{Topic: prefix, Kind: rollout.ReportSuccess, At: m.At, Source: "state",
			Words: "installed_version " + shown(prevLast) + " before its restart, " + shown(st.Installed) + " after"})
	}
	if ds.awaitStart && ds.cmdEntity == id && !m.At.Before(ds.commanded) {
		ds.awaitStart = false
		if !boot {
			// ESPHome publishes its state once as it takes INSTALL.
			r.Kind, r.Words = rollout.ReportStarted, "took INSTALL: "+stateWords(st)
		}
	}
	return append(out, r)
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

// Watch delivers the reports of devs (of every one-level prefix when devs
// is empty) to fn, one at a time in arrival order, on a goroutine of its
// own, from now until ctx ends; fn is not called once ctx has ended, and
// may call the family's other methods. Retained messages are no reports.
// From wildcardAt one-level prefixes on it subscribes the two wildcard
// filters, else each device's own two. An error: a device's prefix or
// entity cannot be, or a subscription failed.
func (f *Family) Watch(ctx context.Context, devs []rollout.Device, fn func(rollout.Report)) error {
	w := watch.New(ctx, fn)
	var own []string
	ones := 0
	if len(devs) > 0 {
		for _, d := range devs {
			if err := check(d); err != nil {
				return err
			}
			if w.Add(d.Topic) {
				own = append(own, d.Topic)
				if oneLevel(d.Topic) {
					ones++
				}
			}
		}
	}
	f.mu.Lock()
	for _, d := range devs {
		f.devLocked(d.Topic).name(d.Entity)
	}
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	w.Go(&f.mu, f.watchers)
	if len(devs) == 0 || ones >= wildcardAt {
		if err := f.wildcards(ctx); err != nil {
			return err
		}
	}
	for _, p := range own {
		if _, err := f.cover(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// Discover lists the devices whose update state the broker retains
// (+/update/+/state: one-level prefixes only), waiting wait (or until
// ctx ends) for them. Devices whose retained status says offline are left
// out (a retained offline stays for a device long gone; LeftOut names
// them). Sorted by prefix; Name is the prefix.
func (f *Family) Discover(ctx context.Context, wait time.Duration) ([]rollout.Device, error) {
	if err := f.wildcards(ctx); err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	f.mu.Lock()
	var out []rollout.Device
	var offline []string
	for p, ds := range f.devs {
		if len(ds.entities) == 0 || !oneLevel(p) {
			continue
		}
		if ds.status == rollout.ReportOffline {
			offline = append(offline, p)
			continue
		}
		out = append(out, rollout.Device{Name: p, Topic: p})
	}
	slices.Sort(offline)
	f.leftOut = offline
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b rollout.Device) int { return cmp.Compare(a.Topic, b.Topic) })
	f.log.Info("discovered", "devices", len(out), "offline_left_out", len(offline))
	return out, nil
}

// LeftOut names the devices the last Discover left out because their
// retained status says offline, sorted.
func (f *Family) LeftOut() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.leftOut)
}

// ambiguousError is a device with several update entities and none
// named.
type ambiguousError struct {
	label string
	ids   []string
}

func (e ambiguousError) Error() string {
	return fmt.Sprintf("%s has %d update entities (%s): name the one to install (the inventory's entity:)", e.label, len(e.ids), strings.Join(e.ids, ", "))
}

func errAmbiguous(d rollout.Device, ids []string) error {
	return ambiguousError{label(d), ids}
}

// resolved is what the cache says of d's update entity.
type resolved struct {
	id      string
	e       *entState // nil: no state of it yet
	ids     []string  // every entity seen, sorted (for an ambiguous device)
	status  rollout.ReportKind
	changed <-chan struct{}
	heard   time.Time // when a retained state of the prefix last came
}

// resolveLocked finds d's entity: d.Entity, else the only one seen.
// f.mu is held.
func (f *Family) resolveLocked(d rollout.Device) resolved {
	ds := f.devLocked(d.Topic)
	ds.name(d.Entity)
	r := resolved{status: ds.status, changed: ds.changed, heard: ds.heard}
	r.ids = slices.Sorted(maps.Keys(ds.entities))
	switch {
	case d.Entity != "":
		r.id, r.e = d.Entity, ds.entities[d.Entity]
	case len(r.ids) == 1:
		r.id, r.e = r.ids[0], ds.entities[r.ids[0]]
	}
	return r
}

// await waits until d's entity has a state (and, with no entity named,
// until its subscription's retained messages have come), or ctx ends.
func (f *Family) await(ctx context.Context, d rollout.Device) (resolved, error) {
	if err := check(d); err != nil {
		return resolved{}, err
	}
	at, err := f.cover(ctx, d.Topic)
	if err != nil {
		return resolved{}, err
	}
	for {
		f.mu.Lock()
		r := f.resolveLocked(d)
		f.mu.Unlock()
		var settled <-chan time.Time
		if d.Entity == "" {
			if wait := time.Until(latest(at, r.heard).Add(settle)); wait > 0 {
				settled = time.After(wait)
			}
		}
		switch {
		case settled != nil:
		case d.Entity == "" && len(r.ids) > 1:
			return r, errAmbiguous(d, r.ids)
		case r.e != nil:
			return r, nil
		}
		select {
		case <-r.changed:
		case <-settled:
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
}

// Preflight is the device's update state as last told (the broker's
// retained one, or any since): Version and Release its installed_version
// (both "" before its first check after a boot), Latest its
// latest_version. An error: the device has no state within ctx, or its
// retained status says offline. A device with several update entities and
// none named told nothing here (Command refuses it).
func (f *Family) Preflight(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	r, err := f.await(ctx, d)
	var amb ambiguousError
	switch {
	case errors.As(err, &amb):
		// Refused by Command: a read error would read as a device that
		// did not answer.
		f.log.Debug("several update entities", "topic", d.Topic, "entities", strings.Join(amb.ids, ","))
		return rollout.Facts{}, nil
	case err != nil && ctx.Err() != nil:
		return rollout.Facts{}, f.noState(d)
	case err != nil:
		return rollout.Facts{}, err
	case r.status == rollout.ReportOffline:
		return rollout.Facts{}, f.offline(d)
	}
	f.mu.Lock()
	st := r.e.st
	// In the same hold as the state taken: whatever arrives after it
	// is "since the read".
	f.devLocked(d.Topic).read = &readMark{entity: r.id, before: r.e.last}
	f.mu.Unlock()
	return facts(st), nil
}

func (f *Family) offline(d rollout.Device) error {
	return fmt.Errorf("%s is offline (its %s says offline)", label(d), statusTopic(d.Topic))
}

func (f *Family) noState(d rollout.Device) error {
	what := statesFilter(d.Topic)
	if d.Entity != "" {
		what = stateTopic(d.Topic, d.Entity)
	}
	return fmt.Errorf("%s told no update state on %s in time (is its MQTT topic prefix %q, with an update entity over MQTT?)", label(d), what, d.Topic)
}

// Ready waits until the device tells latest_version == Expect in a live
// state (not a retained copy) told since Ready began and since the last
// Announce for it (it read this manifest: ESPHome publishes its state
// after every check), or installed_version == Expect, at most
// Config.CheckWait or until ctx ends. A state told earlier may come from
// an older manifest naming the same version (a rollout a gate stopped, an
// older build in the store): INSTALL would take that one's image. Its error says what the device told last. A device with
// several update entities and none named is ready at once: Command
// refuses it (the verdict is then refused, not a timeout).
//
// installed_version == Expect is an error: wrapping rollout.ErrAlreadyOn
// when the read before the update (Preflight) found no version and
// nothing since shows a restart (it ran the target already, and told so
// at its first check); else rollout.ErrTookAnnouncement (it installed the
// announced image on its own, or no read of it is known).
func (f *Family) Ready(ctx context.Context, d rollout.Device) error {
	if f.cfg.Expect == "" {
		return errors.New("no version to wait for (--expect-version is required)")
	}
	began := time.Now()
	wctx, cancel := context.WithTimeout(ctx, f.cfg.CheckWait)
	defer cancel()
	_, err := f.await(wctx, d)
	var st State
	has, offline, fresh := false, false, false
	for err == nil {
		f.mu.Lock()
		r := f.resolveLocked(d)
		fresh = false
		if has = r.e != nil; has {
			st = r.e.st
			since := latest(began, f.devLocked(d.Topic).announced)
			fresh = !r.e.liveAt.IsZero() && !r.e.liveAt.Before(since) && r.e.live.Latest == f.cfg.Expect
		}
		offline = r.status == rollout.ReportOffline
		var rd readMark
		hasRead := false
		if p := f.devLocked(d.Topic).read; p != nil && p.entity == r.id {
			rd, hasRead = *p, true
		}
		f.mu.Unlock()
		if d.Entity == "" && len(r.ids) > 1 {
			// Command refuses it (refused, not commanded).
			return nil
		}
		if has && st.Installed == f.cfg.Expect {
			// Told since the read before the update (which would have
			// skipped it had it told a version). INSTALL would be ignored.
			if hasRead && !rd.restarted && (rd.before == "" || rd.before == f.cfg.Expect) {
				// The read came before its first check since its last boot.
				return rollout.Tag(fmt.Errorf("%s already runs %s (told at its first update check since the read)", label(d), shown(f.cfg.Expect)), rollout.ErrAlreadyOn)
			}
			// It restarted since the read, or ran another version then: it
			// installed what the manifest announced on its own (an
			// install-on-available automation). The engine watches it as
			// commanded.
			return rollout.Tag(fmt.Errorf("%s installed %s on its own", label(d), shown(f.cfg.Expect)), rollout.ErrTookAnnouncement)
		}
		if fresh {
			return nil
		}
		select {
		case <-r.changed:
		case <-wctx.Done():
			err = wctx.Err()
		}
	}
	var amb ambiguousError
	switch {
	case errors.As(err, &amb):
		return nil
	case wctx.Err() == nil:
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("the wait for it to tell latest %s was cut short", shown(f.cfg.Expect))
	}
	wait := f.cfg.CheckWait
	var msg string
	switch {
	case !has:
		return fmt.Errorf("told no update state within %s (--check-wait): is its MQTT topic prefix %q, with an update entity over MQTT?", wait, d.Topic)
	case st.Latest == f.cfg.Expect:
		msg = fmt.Sprintf("told latest %s only before this announcement, and no update check since within %s (--check-wait): build it with a shorter update_interval, or check that it fetches %s", shown(st.Latest), wait, manifestName(d))
	case st.Latest == "":
		msg = fmt.Sprintf("told no latest version within %s (--check-wait): build it with a shorter update_interval, or check that it fetches %s", wait, manifestName(d))
	default:
		msg = fmt.Sprintf("still told latest %s after %s (--check-wait): build it with a shorter update_interval, or check that it fetches %s", shown(st.Latest), wait, manifestName(d))
	}
	if offline {
		msg += " (its status says offline)"
	}
	return errors.New(msg)
}

// Command publishes INSTALL, once, to <prefix>/update/<id>/command at QoS
// 1, not retained, and returns when the broker acknowledged it. The image
// URL is the manifest's, not the command's. An error wrapping
// broker.ErrMaybeSent: no acknowledgement before ctx ended, it may still
// arrive. Any other error wraps rollout.ErrNotSent; among them, sent
// nothing: a device with several update entities and none named, one
// that told installed_version == Expect after Ready (which tells that
// case itself whenever the device says it in time), or one that no
// longer tells latest_version == Expect (also wrapping
// rollout.ErrNotReady: the engine waits for it again).
func (f *Family) Command(ctx context.Context, d rollout.Device, _ string) error {
	if err := check(d); err != nil {
		return rollout.Tag(err, rollout.ErrNotSent)
	}
	f.mu.Lock()
	r := f.resolveLocked(d)
	if r.id == "" {
		f.mu.Unlock()
		if len(r.ids) > 1 {
			return rollout.Tag(errAmbiguous(d, r.ids), rollout.ErrNotSent)
		}
		return rollout.Tag(fmt.Errorf("%s: no update entity known (it told no update state)", label(d)), rollout.ErrNotSent)
	}
	if r.e != nil && f.cfg.Expect != "" && r.e.st.Installed == f.cfg.Expect {
		// A fallback: Ready tells this itself (already on it, or installed
		// on its own); here the device said so only after Ready ended.
		// ESPHome would ignore INSTALL.
		f.mu.Unlock()
		return rollout.Tag(fmt.Errorf("%s: not sent INSTALL: it told installed %s only after its wait for the manifest ended, so whether it ran it before is unknown", label(d), shown(f.cfg.Expect)), rollout.ErrNotSent)
	}
	if r.e != nil && f.cfg.Expect != "" && r.e.st.Latest != f.cfg.Expect {
		// Ready saw it tell latest == Expect; it told otherwise since
		// (restarted while it waited for a slot: "" until its next
		// check). ESPHome ignores INSTALL unless an update is available:
		// the engine waits for it again.
		now := "no latest version"
		if r.e.st.Latest != "" {
			now = "latest " + shown(r.e.st.Latest)
		}
		f.mu.Unlock()
		return rollout.Tag(fmt.Errorf("%s: not sent INSTALL: it tells %s now, not %s (restarted since it saw the manifest?), so it would ignore it", label(d), now, shown(f.cfg.Expect)), rollout.ErrNotSent, rollout.ErrNotReady)
	}
	ds := f.devLocked(d.Topic)
	was, wasEntity := ds.commanded, ds.cmdEntity
	ds.commanded, ds.cmdEntity, ds.awaitStart = time.Now(), r.id, true
	f.mu.Unlock()
	topic := commandTopic(d.Topic, r.id)
	f.log.Debug("command", "topic", topic)
	if err := f.c.Publish(ctx, topic, []byte("INSTALL")); err != nil {
		err = fmt.Errorf("%s: INSTALL: %w", label(d), err)
		if !errors.Is(err, broker.ErrMaybeSent) {
			f.mu.Lock()
			ds.commanded, ds.cmdEntity, ds.awaitStart = was, wasEntity, false
			f.mu.Unlock()
			err = rollout.Tag(err, rollout.ErrNotSent)
		}
		return err
	}
	f.log.Info("commanded", "topic", d.Topic, "entity", r.id)
	return nil
}

// Reread subscribes to the device's state topic once more and takes the
// state the broker retains (the device's last word), then ends that
// subscription. An error: none retained before ctx ended, or the device's
// status says offline (its last word was said before it went away: no
// answer now).
func (f *Family) Reread(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	r, err := f.await(ctx, d)
	var amb ambiguousError
	switch {
	case err != nil && !errors.As(err, &amb) && ctx.Err() != nil:
		return rollout.Facts{}, f.noState(d)
	case err != nil:
		return rollout.Facts{}, err
	case r.status == rollout.ReportOffline:
		return rollout.Facts{}, f.offline(d)
	}
	topic := stateTopic(d.Topic, r.id)
	f.mu.Lock()
	one := f.rereads[topic]
	if one == nil {
		one = &sync.Mutex{}
		f.rereads[topic] = one
	}
	f.mu.Unlock()
	one.Lock()
	defer one.Unlock()
	got := make(chan State, 1)
	err = f.c.Subscribe(ctx, topic, func(m broker.Message) {
		if st, ok := ParseState(m.Payload); ok && m.Retained && m.Topic == topic {
			select {
			case got <- st:
			default:
			}
		}
	})
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := f.c.Unsubscribe(uctx, topic); err != nil {
			f.log.Debug("ending the read's subscription", "err", err)
		}
	}()
	if err != nil {
		return rollout.Facts{}, err
	}
	select {
	case st := <-got:
		f.mu.Lock()
		off := f.devLocked(d.Topic).status == rollout.ReportOffline
		f.mu.Unlock()
		if off {
			return rollout.Facts{}, f.offline(d)
		}
		return facts(st), nil
	case <-ctx.Done():
		return rollout.Facts{}, fmt.Errorf("%s: the broker holds no update state of it on %s", label(d), topic)
	}
}

// Restore does nothing: an ESPHome device keeps no URL of its own that a
// rollout changes (the manifest is the engine's to put back).
func (f *Family) Restore(context.Context, rollout.Device, string) error { return nil }

// Companions: an ESPHome device fetches only the image its manifest names.
func (f *Family) Companions(string) []string { return nil }

// Screen refuses nothing: an ESPHome device tells no chip (the manifest's
// chipFamily keeps other chips off the image).
func (f *Family) Screen(rollout.Facts, rollout.Image, []string) string { return "" }

// CheckURL refuses an image URL the manifest cannot name as is: not
// http:// or https://, or holding a space or control character.
func (f *Family) CheckURL(u string) error { return checkImageURL(u) }

// Announce returns one manifest per distinct manifest name of devs (""
// = DefaultManifest): {"name","version","builds":[{"chipFamily","ota":
// {"path","md5","summary"}}]}, version Config.Expect, path the image's
// absolute URL. It notes when each device's was asked for: Ready takes
// only states told since (the engine's first call, for all devices before
// anything is written, comes before any Ready). An error: no Expect, a chip family neither given nor
// known from the image's chip, a URL or MD5 that cannot be.
func (f *Family) Announce(devs []rollout.Device, img rollout.Image, url, md5 string) (map[string][]byte, error) {
	if f.cfg.Expect == "" {
		return nil, errors.New("ESPHome needs --expect-version: it is the manifest's version, and must equal the image's esphome: project: version:")
	}
	fam := f.cfg.ChipFamily
	if fam == "" {
		var ok bool
		fam, ok = ChipFamily(img.Chip)
		switch {
		case img.Chip == "":
			return nil, errors.New("the image tells no chip, so its ESPHome chip family is unknown: give --chip-family (ESP32, ESP32-S3, ESP8266, …)")
		case !ok:
			return nil, fmt.Errorf("no ESPHome chip family is known for an %s image: give --chip-family", shown(img.Chip))
		}
	}
	if err := checkImageURL(url); err != nil {
		return nil, err
	}
	if !isMD5(md5) {
		return nil, errors.New("the image's MD5 for the manifest is not 32 lower-case hex digits")
	}
	m := manifest{
		Name:    cmp.Or(f.cfg.Title, stem(img.Name)),
		Version: f.cfg.Expect,
		Builds: []build{{ChipFamily: fam, OTA: ota{
			Path: url, MD5: md5, Summary: cmp.Or(f.cfg.Summary, "ots-ota rollout "+f.cfg.Expect),
		}}},
	}
	body, err := m.encode()
	if err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %v", err)
	}
	out := map[string][]byte{}
	now := time.Now()
	f.mu.Lock()
	for _, d := range devs {
		out[manifestName(d)] = body
		if checkPrefix(d.Topic) == nil {
			f.devLocked(d.Topic).announced = now
		}
	}
	f.mu.Unlock()
	if len(out) == 0 {
		out[DefaultManifest] = body
	}
	return out, nil
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
