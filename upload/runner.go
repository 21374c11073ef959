package upload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FailureBudget is --max-failures: stop starting devices once more than N
// (or more than Percent % of the devices) have failed. The zero value
// means no limit.
type FailureBudget struct {
	Set     bool
	N       int
	Percent float64
}

// ParseFailureBudget reads "N" or "P%".
func ParseFailureBudget(s string) (FailureBudget, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return FailureBudget{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f > 100 {
			return FailureBudget{}, fmt.Errorf("%q is not a percentage between 0%% and 100%%", s)
		}
		return FailureBudget{Set: true, Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return FailureBudget{}, fmt.Errorf("%q is not a count (N) or a percentage (P%%)", s)
	}
	return FailureBudget{Set: true, N: n}, nil
}

// exceeded reports whether failed failures out of total devices exceed the budget.
func (b FailureBudget) exceeded(failed, total int) bool {
	if !b.Set {
		return false
	}
	if b.Percent > 0 {
		return float64(failed)*100 > b.Percent*float64(total)
	}
	return failed > b.N
}

func (b FailureBudget) String() string {
	if b.Percent > 0 {
		return strconv.FormatFloat(b.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(b.N)
}

// Options configure a fleet run. The zero value is usable with a Transport
// for each protocol the targets speak; the CLI fills every field.
type Options struct {
	// Transports by protocol. What the runner must know of a protocol's
	// devices, its transport reports (WithTraits).
	Transports map[Protocol]Transport
	// Probe decides the protocol of a target whose Protocol is Auto and
	// whose facts do not tell it (contract §1); a *RefusedError ends the
	// device refused, with nothing sent. nil: such a target takes the one
	// transport configured; with several, it fails with nothing sent.
	Probe func(ctx context.Context, t Target) (Protocol, error)
	// Detect, when set, is used instead of Probe: it decides the protocol
	// and tells what detection learned, which the runner writes into the
	// target before sending: its family, the chip a fingerprint told
	// (where the target names none) and the port the upload goes to (a
	// web uploader's web port). The runner reads nothing else of it.
	Detect func(ctx context.Context, t Target) (Decision, error)
	// Observer reads what devices tell (pre-flight and verification); nil
	// means nothing can be read, so no update can be verified.
	Observer    Observer
	Credentials Credentials
	// CredentialsFor, when set, gives a device credentials of its own (the
	// inventory's auth:); ok false means Credentials.
	CredentialsFor func(t Target) (c Credentials, ok bool)

	// Parallel bounds concurrent devices; 0 = all at once.
	Parallel int
	// Retries is the budget of further tries after a failure (--retries);
	// Class.Retries decides how much of it each failure class may use.
	Retries int
	// Backoff is the first retry's wait (doubling, with jitter, up to
	// MaxBackoff); 0 = 1 s. MaxBackoff 0 = 30 s.
	Backoff, MaxBackoff time.Duration
	// StabilityWindow is how long a device takes to mark a new image valid;
	// a busy device ("OTA begin failed") is retried after it. 0 = 30 s.
	StabilityWindow time.Duration
	// Timeout bounds each device's uploads (all tries). 0 = the default
	// bound: each try gets ConnectTimeout + IdleTimeout (the slot erase)
	// + the image's size at 8 KiB/s, and the tries and backoffs are bounded
	// by Retries, so every device ends.
	Timeout time.Duration
	// ConnectTimeout and IdleTimeout are the transports' (for the default
	// bound); 0 = 5 s and 30 s.
	ConnectTimeout, IdleTimeout time.Duration

	// ExpectVersion is the version string the device will report when it
	// runs the image (--expect-version); "" = the image's own. It gives an
	// identity to images that carry none.
	ExpectVersion string
	// ExpectBuild is the build identity the device will report when it
	// runs the image (Facts.Build: ESPHome's config hash,
	// --expect-config-hash); "" = none expected.
	ExpectBuild string

	// NoVerify stops at the device's acceptance (Accepted).
	NoVerify bool
	// NoWaitValid stops verification once the new version is seen.
	NoWaitValid bool
	// VerifyTimeout bounds verification; 0 = 90 s.
	VerifyTimeout time.Duration
	// RebootGrace is how long a device that accepted an image may keep
	// answering on the old version before it counts as unchanged; 0 = 15 s.
	RebootGrace time.Duration
	// PollInterval is the pause between reads while verifying; 0 = 250 ms.
	PollInterval time.Duration
	// ProbeTimeout bounds each read of a device's facts; 0 = 1 s (below
	// the 2-6 s a rebooting ESP32 stays silent, so the silence is seen).
	ProbeTimeout time.Duration

	// Canary devices go first; the rest start only if every canary ends
	// updated, or accepted with NoVerify (or unverified, with
	// CanaryAcceptUnverified).
	Canary                 int
	CanaryAcceptUnverified bool
	// MaxFailures stops new starts once exceeded.
	MaxFailures FailureBudget
	// DryRun reads and plans, and sends nothing.
	DryRun bool
	// Force overrides the device's chip, project and slot size checks.
	Force bool
	// Reinstall sends an image the device already runs.
	Reinstall bool

	// Seed seeds the backoff jitter (reproducible tests); 0 = random.
	Seed uint64
	// OnEvent receives every event, one call at a time. Keep it fast: it
	// runs on the upload's goroutine.
	OnEvent func(FleetEvent)
	// Logger for debug logs; nil = discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Backoff, time.Second)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.StabilityWindow, 30*time.Second)
	def(&o.VerifyTimeout, 90*time.Second)
	def(&o.RebootGrace, 15*time.Second)
	def(&o.PollInterval, 250*time.Millisecond)
	def(&o.ProbeTimeout, time.Second)
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.IdleTimeout, 30*time.Second)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	return o
}

// Run updates every target and returns one Result per device (duplicates
// merged), in the order the targets were given. It returns when every
// device has its result; after ctx ends it starts no device, lets the
// running ones stop cleanly and still returns every result.
func Run(ctx context.Context, fw *Firmware, targets []Target, opts Options) []Result {
	r := &runner{fw: fw, opts: opts.withDefaults()}
	r.rnd = newRand(r.opts.Seed)
	return r.run(ctx, targets)
}

// newRand seeds the jitter source; seed 0 picks a random seed.
func newRand(seed uint64) *rand.Rand {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// Fleet is a run in progress, for callers that prefer a channel to OnEvent.
type Fleet struct {
	events  chan FleetEvent
	done    chan struct{}
	results []Result
}

// Start runs Run in the background. Events must be drained; Results is
// valid once Events is closed.
func Start(ctx context.Context, fw *Firmware, targets []Target, opts Options) *Fleet {
	f := &Fleet{events: make(chan FleetEvent, 256), done: make(chan struct{})}
	user := opts.OnEvent
	opts.OnEvent = func(e FleetEvent) {
		if user != nil {
			user(e)
		}
		f.events <- e
	}
	go func() {
		f.results = Run(ctx, fw, targets, opts)
		close(f.done)
		close(f.events)
	}()
	return f
}

// Events is the stream of every device's events; it closes at the end.
func (f *Fleet) Events() <-chan FleetEvent { return f.events }

// Results waits for the run to end and returns its results.
func (f *Fleet) Results() []Result {
	<-f.done
	return f.results
}

// device is one merged target during a run.
type device struct {
	t       Target
	label   string
	key     string // t.Addr() when the run began: FleetEvent.Key
	proto   Protocol
	facts   Facts
	factsAt time.Time // when facts were read
	res     Result
	start   time.Time
	// probed: Options.Probe chose the protocol (no fact on the target did),
	// so a failure to reach the device that way may be decided again.
	probed bool
	// probeErr: the pre-flight probe found no device (nothing listens, or
	// the name does not resolve); the first try reports it instead of
	// probing again at once.
	probeErr *DeviceError
	// reached: some try got image bytes to the device.
	reached bool
	// sentVia is the transport of the last try that was handed the image
	// (nil: none was): its Finish, if it has one, ends the device.
	sentVia Transport
	// settled: verification's latest read was answered by the device's
	// firmware (not a loader image): Ending.Settled.
	settled bool
	// transfer bookkeeping, updated from the transport's events
	mu    sync.Mutex
	phase Phase
	// sending: this try got to sending the image (a transfer phase, or a
	// byte acknowledged).
	sending   bool
	taken     int64
	firstByte time.Time // the try's start
	lastByte  time.Time
	// connected is the address the transport said it connected to
	// (Event.Addr), "" when it did not say.
	connected string
}

// traits are what the transport of d's protocol reports of its family.
func (r *runner) traits(d *device) Traits { return traitsOf(r.opts.Transports[d.proto]) }

// known is the target with its protocol once decided.
func (d *device) known() Target {
	t := d.t
	if d.proto != Auto {
		t.Protocol = d.proto
	}
	return t
}

type runner struct {
	fw   *Firmware
	opts Options
	img  imageFacts // what the image says of itself
	// expected is the identity the device must be seen running.
	expected Identity

	emitMu sync.Mutex
	rndMu  sync.Mutex
	rnd    *rand.Rand

	failMu sync.Mutex
	failed int
	total  int
}

func (r *runner) emit(d *device, e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Target = d.label
	d.mu.Lock()
	if e.Phase != "" && e.Phase != PhaseDone {
		d.phase = e.Phase
	}
	if e.Done > d.taken {
		d.taken = e.Done
		d.lastByte = e.Time
	}
	switch e.Phase {
	case PhaseErasing, PhaseUploading, PhaseFinishing:
		d.sending = true
	}
	d.sending = d.sending || e.Done > 0
	if e.Try == 0 {
		e.Try = d.res.Tries
	}
	if e.Addr != "" {
		d.connected = e.Addr
	}
	addr := d.t.Addr()
	if d.connected != "" {
		addr = d.connected
	}
	d.mu.Unlock()
	fe := FleetEvent{Event: e, Addr: addr, Key: d.key, Protocol: d.proto}
	if e.Phase == PhaseDone {
		res := d.res
		fe.Result = &res
	}
	if r.opts.OnEvent == nil {
		return
	}
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.opts.OnEvent(fe)
}

// Merge drops duplicate targets (same address and port), keeping the
// first; a name given to a later duplicate is kept when the first had none.
func Merge(targets []Target) []Target {
	var out []Target
	seen := map[string]int{}
	for _, t := range targets {
		k := targetKey(t)
		if i, ok := seen[k]; ok {
			if out[i].Name == "" {
				out[i].Name = t.Name
			}
			if out[i].Protocol == Auto || out[i].Protocol == "" {
				out[i].Protocol = t.Protocol
			}
			continue
		}
		seen[k] = len(out)
		out = append(out, t)
	}
	return out
}

func targetKey(t Target) string {
	h := strings.ToLower(strings.TrimSuffix(strings.Trim(t.Host, "[]"), "."))
	if ip := net.ParseIP(h); ip != nil {
		h = ip.String()
	}
	return joinHostPort(h, portOr(t.Port))
}

// probes: a protocol probe is configured (Options.Detect or Probe).
func (r *runner) probes() bool { return r.opts.Detect != nil || r.opts.Probe != nil }

// probe decides d's protocol with Options.Detect (writing what it learned
// into d.t) or Options.Probe.
func (r *runner) probe(ctx context.Context, d *device) (Protocol, error) {
	if r.opts.Detect == nil {
		return r.opts.Probe(ctx, d.t)
	}
	dec, err := r.opts.Detect(ctx, d.t)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if dec.Family != "" {
		d.t.Family = dec.Family
	}
	if dec.Chip != "" && d.t.Chip == "" {
		d.t.Chip, d.t.ChipFrom = dec.Chip, dec.ChipFrom
	}
	if dec.Port != 0 && dec.Port != d.t.Port {
		// The address the result and later events name; the first events
		// keep the address the run began with as their key (FleetEvent.Key).
		d.t.Port = dec.Port
		d.res.Target, d.res.Addr = d.t, d.t.Addr()
	}
	return dec.Protocol, nil
}

func portOr(p int) int {
	if p == 0 {
		return 3232
	}
	return p
}

func (r *runner) run(ctx context.Context, targets []Target) []Result {
	r.img = factsOf(r.fw)
	r.expected = r.expectedIdentity()
	targets = Merge(targets)
	devs := make([]*device, len(targets))
	labels := map[string]int{}
	for i, t := range targets {
		if t.Protocol == "" {
			t.Protocol = Auto
		}
		label := t.Name
		if label == "" {
			label = t.Addr()
		}
		if labels[label] > 0 {
			label += " (" + t.Addr() + ")"
		}
		labels[label]++
		devs[i] = &device{t: t, label: label, key: t.Addr(), proto: t.Protocol}
		devs[i].res = Result{Target: t, Device: label, Addr: t.Addr(), To: r.expected.Version}
	}
	r.total = len(devs)

	// Pre-flight: read every device, decide its protocol and whether it
	// gets the image at all. Nothing is sent yet.
	var go_ []*device
	r.each(ctx, devs, func(d *device) {
		if ok := r.preflight(ctx, d); ok {
			return
		}
		r.finish(d)
	})
	for _, d := range devs {
		if d.res.Outcome == "" {
			go_ = append(go_, d)
		}
	}
	if r.opts.DryRun {
		for _, d := range go_ {
			d.res.Outcome = OutcomePlanned
			d.res.Message = r.planMessage(d)
			r.finish(d)
		}
		return results(devs)
	}

	canary := go_[:min(max(r.opts.Canary, 0), len(go_))]
	rest := go_[len(canary):]
	for _, d := range canary {
		d.res.Canary = true
	}
	stop := ""
	if len(canary) > 0 {
		r.each(ctx, canary, func(d *device) { r.update(ctx, d, &stop) })
		for _, d := range canary {
			switch d.res.Outcome {
			case OutcomeUpdated, OutcomeAccepted, OutcomeSkipped:
			case OutcomeUnverified:
				if !r.opts.CanaryAcceptUnverified && stop == "" {
					stop = fmt.Sprintf("canary %s ended unverified (%s); --canary-accept-unverified lets the rest go on", d.label, d.res.Reason)
				}
			default:
				if stop == "" {
					stop = fmt.Sprintf("canary %s ended %s", d.label, d.res.OutcomeText())
				}
			}
		}
	}
	r.each(ctx, rest, func(d *device) { r.update(ctx, d, &stop) })
	return results(devs)
}

func results(devs []*device) []Result {
	out := make([]Result, len(devs))
	for i, d := range devs {
		out[i] = d.res
	}
	return out
}

// each runs fn for every device, at most Parallel at a time, in order.
func (r *runner) each(ctx context.Context, devs []*device, fn func(*device)) {
	par := r.opts.Parallel
	if par <= 0 || par > len(devs) {
		par = len(devs)
	}
	sem := make(chan struct{}, max(par, 1))
	var wg sync.WaitGroup
	for _, d := range devs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(d)
		}()
	}
	wg.Wait()
}

// finish records the end of a device and emits its result.
func (r *runner) finish(d *device) {
	if !d.start.IsZero() {
		d.res.Duration = time.Since(d.start)
	}
	d.res.Protocol = d.proto
	if d.res.Protocol == Auto {
		d.res.Protocol = ""
	}
	if d.res.Outcome.Bad() {
		r.failMu.Lock()
		r.failed++
		r.failMu.Unlock()
	}
	r.emit(d, Event{Phase: PhaseDone, Message: d.res.OutcomeText()})
}

// preflight reads the device and decides whether it gets the image. It
// reports true when the device should be updated; otherwise d.res holds
// the outcome (skipped, refused, unreachable, cancelled).
func (r *runner) preflight(ctx context.Context, d *device) bool {
	if ctx.Err() != nil {
		d.res.Outcome, d.res.Message = OutcomeNotStarted, "interrupted before the device was checked"
		return false
	}
	// The first event names the address the device is reached on: after
	// the probe, which may move it to a web uploader's port (a web family
	// named by --protocol is decided without a packet).
	checking := func() { r.emit(d, Event{Phase: PhaseChecking, Message: "reading what the device tells"}) }
	if d.proto != Auto || !r.probes() {
		checking()
	}
	if d.proto == Auto && r.probes() {
		// One place decides the protocol (facts, else a TCP connect); a
		// silent device is decided again by each try.
		p, err := r.probe(ctx, d)
		checking()
		var re *RefusedError
		switch {
		case err == nil:
			d.proto, d.probed = p, true
		case errors.As(err, &re):
			// A family ots-ota does not speak: nothing is sent.
			d.res.Outcome, d.res.Message = OutcomeRefused, re.Reason
			return false
		case r.opts.DryRun:
			d.res.Outcome, d.res.Message = OutcomeUnreachable, oneLine(err)
			return false
		default:
			r.opts.Logger.Debug("protocol probe failed", "device", d.label, "err", err)
			if de := deviceErrorOf(err); de.Class == ClassNothingListens || de.Class == ClassUnresolved {
				d.probeErr = de // nothing there to read
			}
		}
	}
	if r.opts.Observer != nil && d.probeErr == nil {
		f, err := r.observe(ctx, d.known())
		if err != nil {
			r.opts.Logger.Debug("pre-flight read failed", "device", d.label, "err", err)
		}
		d.facts, d.factsAt = f, time.Now()
	}
	f := d.facts
	d.res.From = fromOf(f)
	if d.proto == Auto && f.Protocol != "" && f.Protocol != Auto {
		d.proto = f.Protocol
	}
	if d.proto == Auto && !r.probes() && len(r.opts.Transports) == 1 {
		// No probe, and one way to send: the runner names no protocol.
		for p := range r.opts.Transports {
			d.proto = p
		}
	}
	img := r.img
	fw := r.fw
	tr := r.traits(d)
	d.res.To = r.expectedFor(d).Version
	if tr.NoImageIdentity {
		// The image's descriptor is nothing such a device tells (its
		// project name is not the device's either).
		img = imageFacts{chip: img.chip}
	}
	refuse := func(format string, a ...any) bool {
		msg := fmt.Sprintf(format, a...)
		if r.opts.Force {
			d.res.Warnings = append(d.res.Warnings, msg+" (sent anyway: --force)")
			return false
		}
		d.res.Outcome, d.res.Message = OutcomeRefused, msg
		return true
	}
	if why := screen(r.opts.Transports[d.proto], d.known(), fw); why != "" {
		d.res.Outcome, d.res.Message = OutcomeRefused, why
		return false
	}
	if fw.Filesystem {
		if tr.NoFilesystem != "" {
			d.res.Outcome, d.res.Message = OutcomeRefused, tr.NoFilesystem
			return false
		}
		return true
	}
	if devChip, from := deviceChip(f, d.t); devChip != "" && img.chip != "" && !strings.EqualFold(devChip, img.chip) {
		msg := fmt.Sprintf("image is built for %s, the device is %s (%s)", img.chip, devChip, from)
		if otherFamily(img.chip, devChip) {
			// Not even with --force: an ESP8266 has no rollback (a wrong
			// image needs a serial reflash), and an ESP32 refuses it anyway.
			d.res.Outcome, d.res.Message = OutcomeRefused, msg+"; --force does not send an image to another chip family"
			return false
		}
		if refuse("%s", msg) {
			return false
		}
	} else if devChip == "" && img.chip != "" && f.Board != "" {
		d.res.Warnings = append(d.res.Warnings, fmt.Sprintf(
			"the device's board %q names no chip ots-ota knows: the image's chip (%s) could not be checked against it", f.Board, img.chip))
	} else if devChip == "" && img.chip == "esp8266" {
		d.res.Warnings = append(d.res.Warnings,
			"the device tells no chip (no mDNS TXT board): the ESP8266 image could not be checked against it")
	} else if devChip == "" && img.chip != "" && tr.ChipUnchecked {
		// The device takes any image whose first byte fits; only TXT board
		// (mDNS, a .local or inventory name) tells its chip. The family's
		// ESP8266 port is no chip fact, but a strong hint.
		w := fmt.Sprintf("the device tells no chip (no mDNS TXT board): the %s image could not be checked against it", img.chip)
		if tr.ESP8266Port != 0 && portOr(d.t.Port) == tr.ESP8266Port {
			w += fmt.Sprintf("; port %d is ESP8266's %s port, and an ESP8266 cannot boot an ESP32-family image (it would need a serial reflash)", tr.ESP8266Port, d.proto)
		}
		d.res.Warnings = append(d.res.Warnings, w)
	}
	if f.Project != "" && img.project != "" && f.Project != img.project {
		if refuse("image is project %q, the device runs %q", img.project, f.Project) {
			return false
		}
	}
	if f.SlotSizeKnown && fw.Size() > f.SlotSize {
		if refuse("image is %d bytes but the device's app slot holds %d", fw.Size(), f.SlotSize) {
			return false
		}
	}
	if !r.opts.Reinstall {
		switch {
		case f.Intermediate != "":
			// A loader image (Tasmota's minimal) is a step of an upgrade
			// that did not end: never "already on", whatever its release.
		case f.ELFSHA256 != "" && img.elf != "":
			if sameELF(f.ELFSHA256, img.elf) {
				d.res.Outcome, d.res.Message = OutcomeSkipped, "already runs this image (same elf_sha256)"
				return false
			}
		case f.ELFSHA256 == "" && alreadyOn(r.expectedFor(d), identityOf(f)):
			d.res.Outcome, d.res.Message = OutcomeSkipped, "already on "+Identity{Version: f.Version, Build: r.expectedFor(d).Build}.String()
			return false
		}
	}
	if (f.Board != "" || tr.ArduinoSlot && !f.SlotSizeKnown) && fw.Size() > ArduinoDefaultSlot {
		d.res.Warnings = append(d.res.Warnings, fmt.Sprintf(
			"image is %s, larger than the 1.25 MiB app slot of arduino-esp32's default partition scheme; the device refuses it unless its partitions are larger", SizeLabel(fw.Size())))
	}
	if tr.Warning != "" {
		d.res.Warnings = append(d.res.Warnings, tr.Warning)
	}
	for _, w := range d.res.Warnings {
		r.emit(d, Event{Phase: PhaseChecking, Message: "warning: " + w})
	}
	return true
}

// fromOf is what the device ran before, as Result.From shows it: its
// release, or the full image name when it runs a loader image (Tasmota's
// "14.3.0(minimal)"), which is not the release it names.
func fromOf(f Facts) string {
	if f.Intermediate != "" && f.Image != "" {
		return f.Image
	}
	return f.Version
}

// alreadyOn: the device tells the whole expected identity, a version and
// (when one is expected) a build, and both match. A version alone is not
// the image when another build is expected (ESPHome's config hash); a
// build alone is not skipped, since the same one before and after
// identifies nothing new (ReasonSameIdentity).
func alreadyOn(expected, seen Identity) bool {
	if expected.Version == "" || seen.Version == "" || expected.Build != "" && seen.Build == "" {
		return false
	}
	return matches(expected, seen) == yes
}

func (r *runner) planMessage(d *device) string {
	var b strings.Builder
	b.WriteString("would send ")
	b.WriteString(SizeLabel(r.fw.Size()))
	if d.proto != Auto {
		b.WriteString(" over " + string(d.proto))
	}
	if d.facts.Version != "" {
		fmt.Fprintf(&b, "; runs %s (%s)", d.facts.Version, d.facts.VersionSource)
	} else {
		b.WriteString("; its version is not known")
	}
	return b.String()
}

// OrDiscard is l, or a logger that drops everything when l is nil: a
// transport's Logger is optional.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// SizeLabel is n bytes for a message: "1.23 MiB", "456.7 KiB", "89 B".
func SizeLabel(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// update sends the image to one device with retries, then verifies. No
// image is sent again before the device was read: a try that reached the
// device in full (or may have) is verified first, and resent only when
// the device demonstrably did not install it.
func (r *runner) update(ctx context.Context, d *device, stop *string) {
	defer r.finish(d)
	defer r.undo(ctx, d)
	if ctx.Err() != nil {
		d.res.Outcome, d.res.Message = OutcomeNotStarted, "interrupted before this device started"
		return
	}
	if why := r.stopReason(stop); why != "" {
		d.res.Outcome, d.res.Message = OutcomeNotStarted, "not started: "+why
		return
	}
	d.start = time.Now()
	uctx := ctx
	if r.opts.Timeout > 0 {
		var cancel context.CancelFunc
		uctx, cancel = context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
	}
	perClass := map[Class]int{}
	retried := 0
	// A try that left the device in a state another try would corrupt
	// says so on every way the device ends short of its new image
	// (cancelled, timed out, read after a failure page or a lost answer).
	noRetry := ""
	defer func() {
		if noRetry != "" && d.res.Outcome != OutcomeUpdated && d.res.Outcome != OutcomeAccepted && !strings.Contains(d.res.Message, noRetry) {
			d.res.Message += " (not retried: " + noRetry + ")"
		}
	}()
	for {
		d.res.Tries++
		err := r.boundedTry(uctx, d)
		d.noteTransfer(err)
		if err == nil {
			break
		}
		noRetry = deviceErrorOf(err).NoRetry
		if ctx.Err() != nil {
			d.res.Outcome, d.res.Message = OutcomeCancelled, r.interruptedMessage(d, err)
			return
		}
		if re := (*RefusedError)(nil); errors.As(err, &re) {
			// A later probe recognised a family ots-ota does not speak:
			// nothing of the image was sent.
			d.res.Outcome, d.res.Message = OutcomeRefused, re.Reason
			return
		}
		de := deviceErrorOf(err)
		d.reached = d.reached || de.Taken > 0
		d.res.Class, d.res.Status, d.res.Words, d.res.Message = de.Class, de.Status, de.Words, de.Error()
		d.res.Outcome = OutcomeFailed
		if de.Class.reachless() {
			d.res.Outcome = OutcomeUnreachable
			if d.probed && r.traits(d).Datagram {
				// A refused TCP connect chose this protocol, and it got no
				// answer either: a device whose TCP server was not up yet
				// (or a refusal fault) refuses too. Probe again next try.
				d.proto = Auto
			}
		}
		if uctx.Err() != nil && r.opts.Timeout > 0 {
			d.res.Message += fmt.Sprintf(" (gave up: --timeout %s)", round(r.opts.Timeout))
		}
		if errors.Is(err, ErrFailurePage) && r.failurePage(ctx, d, err, de) {
			return
		}
		// The device took, or may have taken, the whole image (its answer
		// was lost, or came too early): only reading it tells whether it
		// installed it. Resend only when it demonstrably did not.
		answer, took := r.mayHaveTaken(err, de)
		if took && r.opts.NoVerify {
			// Nothing may be sent again unread, and --no-verify reads nothing.
			d.res.Outcome = OutcomeAccepted
			d.res.Message = "the device took the whole image but its answer " + map[Answer]string{AnswerLost: "was lost", AnswerEarly: "came early"}[answer] + "; not sent again, not verified (--no-verify)"
			return
		}
		if took {
			d.mu.Lock()
			since := d.lastByte
			if since.IsZero() {
				since = d.firstByte
			}
			d.mu.Unlock()
			v := r.verify(ctx, d, verifySpec{target: d.known(), traits: r.traits(d), before: d.facts, beforeAt: d.factsAt, accepted: time.Now(), answer: answer, since: since})
			if v.Outcome != OutcomeUnchanged || !v.NotInstalled {
				r.apply(d, v, de)
				return
			}
			// Not installed: still the pre-flight image, no restart seen.
			r.opts.Logger.Debug("device did not install the image; it may be sent again", "device", d.label, "running", v.Running)
			d.res.Message = de.Error() + "; " + v.Message
		}
		if uctx.Err() != nil {
			return
		}
		allowed := de.Class.Retries(r.opts.Retries)
		if de.Class == ClassWriteFailed && d.facts.SlotSizeKnown && r.fw.Size() > d.facts.SlotSize {
			allowed = 0
		}
		if de.NoRetry != "" {
			// The try left the device in a state another try would
			// corrupt: nothing is sent again, whatever the class.
			allowed = 0
		}
		if perClass[de.Class] >= allowed || retried >= r.opts.Retries {
			switch {
			case de.NoRetry != "": // said by the deferred func
			case allowed == 0 && (de.Class == ClassAuth || de.Class == ClassRejected):
				d.res.Message += " (not retried)"
			}
			r.tookEarlier(ctx, d, de)
			return
		}
		perClass[de.Class]++
		retried++
		wait, why := r.backoff(retried), "retrying: "+de.Error()
		if de.Class == ClassBusy {
			wait = r.opts.StabilityWindow + r.opts.StabilityWindow/10
			why = fmt.Sprintf("device busy (%q: its running image is probably still pending_verify from an earlier update); waiting %s for its stability window, then trying once more", de.Words, round(wait))
		}
		if de.Class == ClassNothingListens {
			wait = max(wait, NothingListensWait)
			why = fmt.Sprintf("retrying once in %s (a booting device answers the same way): %s", round(wait), de.Error())
		}
		if r.tookEarlier(ctx, d, de) {
			return
		}
		// The tries left: this class's own, within what is left of the budget.
		maxTries := d.res.Tries + 1 + min(allowed-perClass[de.Class], r.opts.Retries-retried)
		r.emit(d, Event{Phase: PhaseRetrying, MaxTries: maxTries, Message: why})
		if !sleepCtx(uctx, wait) {
			if ctx.Err() != nil {
				d.res.Outcome, d.res.Message = OutcomeCancelled, "interrupted while waiting to retry; the device keeps its running image"
			}
			return
		}
		// A try given up on (idle timeout, reset) may still have reached the
		// device in full: the kernel delivers what was buffered after the
		// close. Sending again would install the image twice and report a
		// failure over a device that runs it.
		if r.tookEarlier(ctx, d, de) {
			return
		}
	}
	// Accepted.
	d.res.Class, d.res.Status, d.res.Words = "", 0, ""
	if r.opts.NoVerify {
		d.res.Outcome, d.res.Message = OutcomeAccepted, "the device accepted the image (not verified: --no-verify)"
		return
	}
	v := r.verify(ctx, d, verifySpec{target: d.known(), traits: r.traits(d), before: d.facts, beforeAt: d.factsAt, accepted: time.Now()})
	r.apply(d, v, nil)
}

// noteTransfer records the bytes and rate of a try that got to sending the
// image, however it ended (err): a failed or interrupted try reports what
// the device took as an accepted one does. A try that never got that far
// (nothing answered, refused before the image) leaves the last such try's
// figures, or none.
func (d *device) noteTransfer(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.connected != "" {
		// The port the transport chose (ESPHome's defaults in turn).
		d.res.Addr = d.connected
	}
	taken := d.taken
	var de *DeviceError
	if errors.As(err, &de) {
		// The transport's count at the end may be ahead of its last event.
		taken = max(taken, de.Taken)
	}
	if !d.sending && taken == 0 && err != nil {
		return
	}
	d.res.Bytes, d.res.Rate = &taken, 0
	if !d.firstByte.IsZero() && d.lastByte.After(d.firstByte) {
		d.res.Rate = float64(d.taken) / d.lastByte.Sub(d.firstByte).Seconds()
	}
}

// tryBound is the default bound of one try: the connect, the slot erase
// (the idle timeout) and the image at 8 KiB/s, a pace below any working
// ESP32's flash.
func (r *runner) tryBound() time.Duration {
	return r.opts.ConnectTimeout + r.opts.IdleTimeout + time.Duration(r.fw.Size())*time.Second/(8<<10)
}

// boundedTry is one try, bounded by tryBound unless --timeout bounds the
// whole upload instead.
func (r *runner) boundedTry(ctx context.Context, d *device) error {
	if r.opts.Timeout > 0 {
		return r.try(ctx, d)
	}
	tctx, cancel := context.WithTimeout(ctx, r.tryBound())
	defer cancel()
	err := r.try(tctx, d)
	if err != nil && tctx.Err() != nil && ctx.Err() == nil {
		de := deviceErrorOf(err)
		if de.Class != ClassTimeout {
			de = &DeviceError{Class: ClassTimeout, Taken: de.Taken, Status: de.Status, Words: de.Words, NoRetry: de.NoRetry, Err: err}
		}
		de.Reason = fmt.Sprintf("the upload did not end within %s (connect %s + idle %s + %s at 8 KiB/s; --timeout sets another bound)",
			round(r.tryBound()), round(r.opts.ConnectTimeout), round(r.opts.IdleTimeout), SizeLabel(r.fw.Size()))
		return de
	}
	return err
}

// mayHaveTaken reports whether a failed try took, or may have taken, the
// whole image (MayHaveTakenAll), and how its answer came. It never samples
// progress: only what the transport reports. A device that answered with
// its own words of rejection installed nothing.
func (r *runner) mayHaveTaken(err error, de *DeviceError) (Answer, bool) {
	switch {
	case de.Class == ClassAuth || de.Class == ClassRejected || errors.Is(err, ErrFailurePage) || errors.Is(err, ErrRefusedWhole) ||
		!MayHaveTakenAll(err, r.fw.Size()):
		return AnswerNormal, false
	case errors.Is(err, ErrEarlyAnswer):
		return AnswerEarly, true
	}
	return AnswerLost, true
}

// tookEarlier checks, after a transient failure or a busy answer, whether
// the device runs the new image anyway (an earlier try reached it in full
// although its answer was lost or the try was given up on). If so it
// verifies the device and reports true with d.res holding the outcome.
// Devices that tell their version by mDNS only (Traits.MDNSOnly) are not
// read: a quick read cannot refresh that.
func (r *runner) tookEarlier(ctx context.Context, d *device, de *DeviceError) bool {
	// A family that must not be read while it may be installing is not
	// read between tries either: the verification after an upload waits
	// for it first.
	if ctx.Err() != nil || r.opts.NoVerify || r.opts.Observer == nil || r.traits(d).MDNSOnly || r.traits(d).QuietProbe > 0 || !r.expectedFor(d).Known() {
		return false
	}
	if !transient(de.Class) && de.Class != ClassBusy {
		return false
	}
	s := verifySpec{target: d.known(), traits: r.traits(d), before: d.facts, beforeAt: d.factsAt, answer: AnswerLost}
	f, err := r.observe(context.WithValue(ctx, verifyingKey{}, true), s.target)
	if err != nil || !f.Answered {
		return false
	}
	id := identityOf(f)
	if matches(r.expectedFor(d), id) != yes || d.facts.Answered && sameBuild(identityOf(d.facts), id) != no {
		return false
	}
	r.opts.Logger.Debug("device runs the new image after a failed try", "device", d.label, "version", f.Version, "state", f.State)
	s.accepted = time.Now()
	v := r.verify(ctx, d, s)
	if v.Outcome != OutcomeUpdated && v.Outcome != OutcomeRolledBack {
		return false
	}
	r.apply(d, v, de)
	return true
}

// interruptedMessage says what an upload interrupted by the user left: a
// device that may hold the whole image goes on to check and install it.
func (r *runner) interruptedMessage(d *device, err error) string {
	if MayHaveTakenAll(err, r.fw.Size()) {
		return "interrupted after the device had taken the whole image: it may install it and restart; " + checkHint(d.t)
	}
	return "interrupted during the upload; the device keeps its running image"
}

// failurePage handles an answer of 2xx whose text says the update failed
// (ErrFailurePage): the words say failed, the status says accepted, so the
// device is read after the grace, as after any answer. It reports true
// when d.res holds the outcome: updated with a warning quoting the page
// when the device runs the expected image, else failed with its words.
// False leaves the failure to the class's retries: the device could not
// hold the image, cannot be read, or demonstrably did not install it.
func (r *runner) failurePage(ctx context.Context, d *device, err error, de *DeviceError) bool {
	if !MayHaveTakenAll(err, r.fw.Size()) || r.opts.NoVerify || r.opts.Observer == nil || !r.expectedFor(d).Known() {
		return false
	}
	d.mu.Lock()
	since := d.lastByte
	d.mu.Unlock()
	r.emit(d, Event{Phase: PhaseRebooting, Message: "the device's answer says the update failed; reading what it runs"})
	v := r.verify(ctx, d, verifySpec{target: d.known(), traits: r.traits(d), before: d.facts, beforeAt: d.factsAt, accepted: time.Now(), since: since})
	switch {
	case v.Outcome == OutcomeUpdated:
		r.apply(d, v, de)
		d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("the device answered %d with a page that says %q, yet it runs the new image", de.Status, de.Words))
		return true
	case v.Outcome == OutcomeCancelled:
		d.res.Outcome = OutcomeCancelled
		d.res.Message = de.Error() + "; interrupted while reading what the device runs: " + checkHint(d.t)
		return true
	}
	d.res.Running, d.res.State, d.res.VersionSource = v.Running, v.State, v.Source
	d.res.Message = de.Error() + "; then: " + v.Message
	return v.Outcome != OutcomeUnchanged || !v.NotInstalled
}

// apply records a verdict; after a failed try (de), the device's words
// stay where the verdict did not supersede them.
func (r *runner) apply(d *device, v Verdict, de *DeviceError) {
	d.res.Outcome, d.res.Reason, d.res.Pending, d.res.Running, d.res.State, d.res.VersionSource, d.res.Message =
		v.Outcome, v.Reason, v.Pending, v.Running, v.State, v.Source, v.Message
	switch {
	case v.Outcome == OutcomeUpdated || v.Outcome == OutcomeRolledBack:
		d.res.Class, d.res.Status, d.res.Words = "", 0, ""
	}
}

// try is one upload: choose the protocol if still open, then send.
func (r *runner) try(ctx context.Context, d *device) error {
	d.mu.Lock()
	// The rate counts from the start of the try: the erase stall is part
	// of what an upload costs.
	d.phase, d.sending, d.taken, d.firstByte, d.lastByte = "", false, 0, time.Now(), time.Time{}
	d.mu.Unlock()
	// Re-read only while no byte of the image has reached the device: a
	// device that took part of one is no baseline.
	reread := !d.reached
	if d.proto == Auto && d.probeErr != nil {
		de := d.probeErr
		d.probeErr = nil
		return de
	}
	if d.proto == Auto && r.probes() {
		p, err := r.probe(ctx, d)
		if err != nil {
			var de *DeviceError
			if errors.As(err, &de) {
				return de
			}
			var re *RefusedError
			if errors.As(err, &re) {
				return re
			}
			return &DeviceError{Class: ClassUnreachable, Reason: "did not answer: " + oneLine(err), Err: err}
		}
		d.proto, d.probed = p, true
	}
	if reread && !r.traits(d).MDNSOnly && !identityOf(d.facts).Known() && r.opts.Observer != nil {
		// The pre-flight read told no identity (it failed, or read the
		// device before its protocol was known): what it tells now is the
		// baseline the verdict compares with. Nothing was sent yet.
		if f, err := r.observe(ctx, d.known()); err == nil && f.Answered {
			d.facts, d.factsAt, d.res.From = f, time.Now(), fromOf(f)
		}
	}
	if d.proto == Auto {
		return &DeviceError{Class: ClassRejected, Reason: "no protocol decided for this device: give it one, or let the detection probe it"}
	}
	tr := r.opts.Transports[d.proto]
	if tr == nil {
		return &DeviceError{Class: ClassRejected, Reason: fmt.Sprintf("no %s transport configured", d.proto)}
	}
	d.sentVia = tr
	return tr.Send(ctx, d.t, r.fw, r.credentials(d), func(e Event) { r.emit(d, e) })
}

// credentials are d's: its own, else the run's.
func (r *runner) credentials(d *device) Credentials {
	if r.opts.CredentialsFor != nil {
		if c, ok := r.opts.CredentialsFor(d.t); ok {
			return c
		}
	}
	return r.opts.Credentials
}

// undoTimeout bounds a transport's Finish.
const undoTimeout = 30 * time.Second

// undo lets the transport that was handed the image end what it began
// on the device (Finisher), once d's outcome is final, even after an
// interrupt; what went wrong becomes a warning.
func (r *runner) undo(ctx context.Context, d *device) {
	fin, ok := d.sentVia.(Finisher)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if w := fin.Finish(ctx, d.t, r.credentials(d), Ending{Settled: d.settled}); w != "" {
		d.res.Warnings = append(d.res.Warnings, w)
	}
}

func transient(c Class) bool {
	switch c {
	case ClassNetwork, ClassTimeout, ClassUnreachable:
		return true
	}
	return false
}

// stopReason says why no more devices may start, or "".
func (r *runner) stopReason(stop *string) string {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if *stop != "" {
		return *stop
	}
	if r.opts.MaxFailures.exceeded(r.failed, r.total) {
		*stop = fmt.Sprintf("%d device(s) failed, more than --max-failures %s", r.failed, r.opts.MaxFailures)
		return *stop
	}
	return ""
}

// backoff is the wait before retry n (1-based): exponential with full
// jitter in its upper half, so a fleet does not retry in lock-step.
func (r *runner) backoff(n int) time.Duration {
	d := r.opts.Backoff << min(n-1, 16)
	if d > r.opts.MaxBackoff || d <= 0 {
		d = r.opts.MaxBackoff
	}
	r.rndMu.Lock()
	j := r.rnd.Int64N(int64(d)/2 + 1)
	r.rndMu.Unlock()
	return d/2 + time.Duration(j)
}

func deviceErrorOf(err error) *DeviceError {
	var de *DeviceError
	if errors.As(err, &de) {
		return de
	}
	c := ClassNetwork
	if errors.Is(err, context.DeadlineExceeded) {
		c = ClassTimeout
	}
	return &DeviceError{Class: c, Reason: oneLine(err), Err: err}
}

// oneLine keeps the last part of a wrapped error chain: what a user can act on.
func oneLine(err error) string {
	s := err.Error()
	return strings.ReplaceAll(s, "\n", " ")
}

// expectedFor is the identity d must be seen running: the run's, or only
// what the user expects where d's family never reports an image's own
// (Traits.NoImageIdentity).
func (r *runner) expectedFor(d *device) Identity {
	return r.expectedWith(r.traits(d))
}

func (r *runner) expectedWith(tr Traits) Identity {
	if !tr.NoImageIdentity {
		return r.expected
	}
	if r.fw != nil && r.fw.Filesystem {
		return Identity{}
	}
	return Identity{Version: r.opts.ExpectVersion, Build: strings.ToLower(strings.TrimSpace(r.opts.ExpectBuild))}
}

// expectedIdentity is what the device must be seen running: the image's
// elf and version, --expect-version overriding the version. Images with no
// app descriptor (filesystem, ESP8266) carry none.
func (r *runner) expectedIdentity() Identity {
	id := Identity{ELF: r.img.elf, Version: r.img.version}
	if r.fw != nil && r.fw.Filesystem {
		id = Identity{}
	}
	if r.opts.ExpectVersion != "" {
		id.Version = r.opts.ExpectVersion
	}
	return id
}
