package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// ErrClosed is returned by waits on a closed device.
var ErrClosed = errors.New("sim: device closed")

// StartError is why device Device did not start; Err is the reason (a
// *net.OpError when a socket could not be opened).
type StartError struct {
	Device string
	Err    error
	// At is when the start failed: before the fleet closes the devices
	// that did start (their stopped events come later).
	At time.Time
}

func (e *StartError) Error() string { return "sim: start " + e.Device + ": " + e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// ErrNotLoopback is in the error for an address outside loopback without
// AllowNonLoopback.
var ErrNotLoopback = errors.New("not a loopback address")

// Phase is where a device is in its life.
type Phase string

// Phases.
const (
	PhaseUp      Phase = "up"      // serving
	PhaseBooting Phase = "booting" // reset, not on the network yet
	PhaseDown    Phase = "down"    // off the network for good (no-return, boot loop)
	PhaseClosed  Phase = "closed"
)

// Device is one simulated device. Its methods are safe for concurrent use.
type Device struct {
	s     *settings
	log   *slog.Logger
	sink  *eventSink
	store *Store

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	rebootCh chan string        // reset requests; one pending is enough
	refuseCh chan time.Duration // refuse faults

	mu         sync.Mutex
	flash      *flash
	rnd        *rand.Rand
	faults     []Fault
	behaviours map[string]Behaviour
	phase      Phase
	refusing   bool
	downReason string
	bootCount  int
	rollbacks  int
	bootedAt   time.Time
	// loopCrashes counts CrashLoop's crashes since its image last reached
	// the network; loopFrom is the slot that ran before it.
	loopCrashes int
	loopFrom    int
	// statusBudget is how many reads of each status endpoint the armed
	// status-error faults fail; statusUsed how many each path failed since.
	statusBudget int
	statusUsed   map[string]int
	uploads      []UploadRecord
	otaBusy      bool
	changed      chan struct{}
	// ports are the device's ports, kept across reboots (an ephemeral one
	// picked at the first boot); ports[PortWeb] is -1 without a web server.
	ports   [numPorts]int
	env     *Env
	srv     *servers   // replaced under srvMu (and mu)
	srvMu   sync.Mutex // serialises starting and stopping servers
	net     netState   // under srvMu
	leftMu  sync.Mutex
	leftOut []net.Conn // connections handed over outside srvMu (espota)
	reqMu   sync.Mutex // serialises Config.OnRequest
	// bootCtx ends at the reset that ends this boot (Env.BootContext).
	bootCtx    context.Context
	bootCancel context.CancelFunc
	// persist is the firmware's state across resets (Env.Persistent).
	persistMu sync.Mutex
	persist   any

	// hookPause, for tests, runs when the device resumes reading after it
	// stopped to erase (HTTP: the slot erase; both: a stall fault ending),
	// with the number of image bytes it has read so far. Set under mu.
	hookPause func(read int64)
}

// pauseEnded runs the test hook, if any.
func (d *Device) pauseEnded(read int64) {
	d.mu.Lock()
	h := d.hookPause
	d.mu.Unlock()
	if h != nil {
		h(read)
	}
}

// maxUploadLog bounds the upload log kept per device.
const maxUploadLog = 64

// Start boots a device and returns once it serves (or fails to bind). The
// device runs until Close or until ctx ends.
func Start(ctx context.Context, cfg Config) (*Device, error) {
	s, err := resolve(cfg)
	if err != nil {
		return nil, &StartError{Device: cfg.Name, Err: err, At: time.Now()}
	}
	store := s.Store
	if store == nil {
		store = NewStore()
	}
	factory, err := makeFactory(s, store)
	if err != nil {
		return nil, &StartError{Device: s.Name, Err: err, At: time.Now()}
	}
	var running *blob
	if s.FactoryVersion != "" {
		// Updated once before: factory holds the older build, ota_0 runs Version.
		running = factory
		factory, err = store.build(buildKey{chip: s.chip, project: s.Project, version: s.FactoryVersion, idf: s.IDFVer, size: s.ImageSize})
		if err != nil {
			return nil, &StartError{Device: s.Name, Err: err, At: time.Now()}
		}
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{
		s:          s,
		log:        log.With("device", s.Name),
		sink:       newEventSink(s.OnEvent),
		store:      store,
		done:       make(chan struct{}),
		rebootCh:   make(chan string, 1),
		refuseCh:   make(chan time.Duration, 4),
		flash:      newDeviceFlash(s, factory),
		rnd:        rand.New(rand.NewPCG(uint64(s.Seed), uint64(s.Seed)^0x5eed0f0715)),
		faults:     slices.Clone(s.Faults),
		behaviours: make(map[string]Behaviour, len(s.Behaviours)),
		phase:      PhaseBooting,
		changed:    make(chan struct{}),
		ports:      [numPorts]int{PortOTA: s.OTAPort, PortWeb: s.WebPort},
	}
	d.env = &Env{d: d}
	for v, b := range s.Behaviours {
		if h, ok := strings.CutPrefix(v, behaveELFPrefix); ok {
			v = behaveELFPrefix + strings.ToLower(h)
		}
		d.behaviours[v], _ = ParseBehaviour(string(b)) // validated by resolve
	}
	d.setStatusBudgetLocked(d.faults)
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.mu.Lock()
	if running != nil {
		d.flash.preinstall(running)
	}
	d.flash.boot()
	d.bootCount = 1
	// Uptime counts from reset, as after every later boot: a device that
	// starts serving now was reset one boot time ago.
	d.bootedAt = time.Now().Add(-s.timing.BootTime)
	d.mu.Unlock()
	if err := d.startServers(); err != nil {
		d.cancel()
		return nil, &StartError{Device: s.Name, Err: err, At: time.Now()}
	}
	d.log.Debug("started", "personality", s.Personality, "ota", d.OTAAddr(), "web", d.WebAddr(),
		"behaviours", formatBehaviours(d.behaviours))
	for _, f := range d.faults {
		if f.Kind == FaultRefuse {
			d.refuseCh <- f.Duration
		}
	}
	d.emitReady()
	go d.run()
	return d, nil
}

// makeFactory returns the factory image blob.
func makeFactory(s *settings, store *Store) (*blob, error) {
	if s.platform == PlatformESP8266 {
		data := s.Factory
		if data == nil {
			data = fakeESP8266Image(s.Project, s.Version, s.ImageSize, s.BuildSeed)
		} else if len(data) == 0 || data[0] != 0xE9 {
			return nil, errors.New("factory image: first byte is not 0xE9")
		}
		if int64(len(data)) > s.SlotSize {
			return nil, fmt.Errorf("factory image: %d bytes do not fit the %d-byte slot", len(data), s.SlotSize)
		}
		info := describe(data)
		if info.Version == "" {
			info = imgInfo{Project: s.Project, Version: s.Version, Chip: "esp8266"}
		}
		return store.internWith(data, &info), nil
	}
	if s.Factory != nil {
		rep := image.Validate(s.Factory, image.Policy{Chip: s.chip, ChipSet: true, SlotSize: s.SlotSize})
		if err := endError(rep); err != nil {
			return nil, fmt.Errorf("factory image: %w", err)
		}
		return store.intern(s.Factory), nil
	}
	return store.build(buildKey{chip: s.chip, project: s.Project, version: s.Version, idf: s.IDFVer, size: s.ImageSize, seed: s.BuildSeed})
}

// fakeESP8266Image is a stand-in ESP8266 firmware: image.Build cannot make
// ESP8266 images, and the ESP8266 Updater only checks the magic byte and
// the MD5. The text inside tells project and version to a human.
func fakeESP8266Image(project, version string, size int, seed int64) []byte {
	text := fmt.Sprintf("ots-sim esp8266 image project=%s version=%s", project, version)
	if seed != 0 {
		text += fmt.Sprintf(" build=%d", seed)
	}
	n := max(size, 4096)
	b := make([]byte, n)
	copy(b, []byte{0xE9, 0x01, 0x02, 0x40, 0x00, 0x10, 0x10, 0x40})
	copy(b[8:], text)
	for i := 8 + len(text); i < n; i++ {
		b[i] = byte(i*7 + len(text))
	}
	return b
}

// --- addresses --------------------------------------------------------------

// Name is the device's host name (without ".local").
func (d *Device) Name() string { return d.s.Name }

// Personality is the device's firmware personality.
func (d *Device) Personality() Personality { return d.s.Personality }

// IP is the address the device listens on.
func (d *Device) IP() netip.Addr { return d.s.IP }

// OTAAddr is the upload address, host:port (TCP for seed/ots, UDP for espota).
func (d *Device) OTAAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.ports[PortOTA]))
}

// WebAddr is the web server address, or "" when the device has none.
func (d *Device) WebAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.s.traits.Web || d.ports[PortWeb] < 0 {
		return ""
	}
	return net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.ports[PortWeb]))
}

// OTAPort is the upload port.
func (d *Device) OTAPort() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ports[PortOTA]
}

// Done is closed when the device has stopped.
func (d *Device) Done() <-chan struct{} { return d.done }

// --- runtime control --------------------------------------------------------

// SetFaults replaces the armed faults. A refuse fault starts now; others
// act on the next upload (slow and latency on the next read or reply).
func (d *Device) SetFaults(faults ...Fault) {
	d.mu.Lock()
	d.faults = slices.Clone(faults)
	d.setStatusBudgetLocked(faults)
	d.mu.Unlock()
	d.faultsChanged(faults)
}

// AddFault arms one more fault.
func (d *Device) AddFault(f Fault) {
	d.mu.Lock()
	d.faults = append(d.faults, f)
	d.statusBudget += statusFailCount([]Fault{f})
	d.mu.Unlock()
	d.faultsChanged([]Fault{f})
}

// ClearFaults disarms every fault.
func (d *Device) ClearFaults() { d.SetFaults() }

// Faults returns the armed faults.
func (d *Device) Faults() []Fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.faults)
}

func (d *Device) faultsChanged(added []Fault) {
	for _, f := range added {
		if f.Kind == FaultRefuse {
			select {
			case d.refuseCh <- f.Duration:
			default:
			}
		}
	}
	d.refreshPacketServers() // latency and the espota switches live in its server
}

// SetBehaviour sets what the images key names (a version, "elf:HEX" or
// BehaveUploaded; see Behaviour) do when they boot.
func (d *Device) SetBehaviour(version string, b Behaviour) error {
	if err := checkBehaviourKey(version); err != nil {
		return fmt.Errorf("behaviour key %w", err)
	}
	if h, ok := strings.CutPrefix(version, behaveELFPrefix); ok {
		version = behaveELFPrefix + strings.ToLower(h)
	}
	b, err := ParseBehaviour(string(b))
	if err != nil {
		return err
	}
	if err := checkBehaviours(d.s.Personality, d.s.platform, d.s.RollbackLater, map[string]Behaviour{version: b}); err != nil {
		return err
	}
	d.mu.Lock()
	d.behaviours[version] = b
	d.mu.Unlock()
	return nil
}

// Reboot resets the device (like pressing its reset button); the running
// image behaves as it does on any reset (a pending_verify image rolls back).
func (d *Device) Reboot() { d.requestReboot("request") }

func (d *Device) requestReboot(reason string) {
	select {
	case d.rebootCh <- reason:
	default: // a reset is already pending
	}
}

// Close stops the device and waits until it is gone. Safe to call twice.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		<-d.done
	})
	return nil
}

// --- state ------------------------------------------------------------------

// State is a snapshot of a device.
type State struct {
	Name        string      `json:"name"`
	Personality Personality `json:"personality"`
	Phase       Phase       `json:"phase"`
	Up          bool        `json:"up"`
	// Refusing: up, but the listeners are closed by a refuse fault.
	Refusing   bool   `json:"refusing,omitempty"`
	DownReason string `json:"down_reason,omitempty"`
	OTAAddr    string `json:"ota_addr"`
	WebAddr    string `json:"web_addr,omitempty"`
	// Running and Boot are slot labels: the running slot and the one
	// otadata selects for the next boot.
	Running string `json:"running"`
	Boot    string `json:"boot"`
	// The running image.
	Project       string         `json:"project"`
	Version       string         `json:"version"`
	IDFVer        string         `json:"idf,omitempty"`
	Chip          string         `json:"chip"`
	SecureVersion uint32         `json:"secure_version"`
	ELFSHA256     string         `json:"elf_sha256,omitempty"`
	AppState      AppState       `json:"state"`
	Slots         []SlotState    `json:"slots"`
	SlotSize      int64          `json:"slot_size"`
	BootCount     int            `json:"boot_count"`
	Rollbacks     int            `json:"rollbacks"`
	Uptime        time.Duration  `json:"uptime"`
	Uploads       []UploadRecord `json:"uploads,omitempty"`
	// Filesystem is the data/spiffs partition, where the personality has
	// one (Arduino); what espota -s wrote there.
	Filesystem *SlotState `json:"filesystem,omitempty"`
}

// SlotState describes one app slot.
type SlotState struct {
	Label   string   `json:"label"`
	Empty   bool     `json:"empty"`
	Project string   `json:"project,omitempty"`
	Version string   `json:"version,omitempty"`
	Size    int      `json:"size,omitempty"`
	SHA256  string   `json:"sha256,omitempty"`
	State   AppState `json:"state"`
}

// UploadRecord is one upload attempt as the device saw it.
type UploadRecord struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Protocol string        `json:"protocol"` // http, espota
	Path     string        `json:"path,omitempty"`
	Remote   string        `json:"remote"`
	Size     int64         `json:"size"`  // announced
	Bytes    int64         `json:"bytes"` // received
	// Outcome: "ok", "failed" (device answered an error), "aborted"
	// (connection lost or a fault cut it), "auth_failed", "discarded"
	// (answered 200 early, read the rest, installed nothing: the
	// early-answer:discard fault).
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	Text    string `json:"text,omitempty"`
	Version string `json:"version,omitempty"` // the accepted image's version
	Reason  string `json:"reason,omitempty"`
}

// State returns a snapshot.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stateLocked()
}

func (d *Device) stateLocked() State {
	f := d.flash
	info := f.runningInfo()
	st := State{
		Name:          d.s.Name,
		Personality:   d.s.Personality,
		Phase:         d.phase,
		Up:            d.phase == PhaseUp,
		Refusing:      d.refusing,
		DownReason:    d.downReason,
		OTAAddr:       net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.ports[PortOTA])),
		Running:       f.label(f.running),
		Boot:          f.label(f.bootSlot()),
		Project:       info.Project,
		Version:       info.Version,
		IDFVer:        info.IDFVer,
		Chip:          d.s.Chip,
		SecureVersion: info.SecureVersion,
		ELFSHA256:     info.ELFSHA256,
		AppState:      f.runningState(),
		SlotSize:      f.slotSize,
		BootCount:     d.bootCount,
		Rollbacks:     d.rollbacks,
		Uploads:       slices.Clone(d.uploads),
	}
	if d.s.traits.Web && d.ports[PortWeb] >= 0 {
		st.WebAddr = net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.ports[PortWeb]))
	}
	if d.phase == PhaseUp {
		st.Uptime = time.Since(d.bootedAt)
	}
	for i, b := range f.slots {
		if i == slotFactory && f.noFactory {
			continue
		}
		ss := SlotState{Label: f.label(i), Empty: b == nil}
		ss.State, _ = f.stateOf(i)
		if b != nil {
			ss.Project, ss.Version, ss.Size = b.info.Project, b.info.Version, len(b.data)
			ss.SHA256 = fmt.Sprintf("%x", b.sum)
		}
		st.Slots = append(st.Slots, ss)
	}
	if f.fsSize > 0 {
		st.Filesystem = &SlotState{Label: fsLabel, Empty: f.fs == nil, State: StateUndefined}
		if f.fs != nil {
			st.Filesystem.Size, st.Filesystem.SHA256 = len(f.fs.data), fmt.Sprintf("%x", f.fs.sum)
		}
	}
	return st
}

// WaitState waits until pred holds for the device's state and returns that
// state. It re-checks on every change (not on the passing of time: a
// predicate on Uptime alone never fires by itself).
func (d *Device) WaitState(ctx context.Context, pred func(State) bool) (State, error) {
	for {
		d.mu.Lock()
		st := d.stateLocked()
		ch := d.changed
		d.mu.Unlock()
		if pred(st) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, fmt.Errorf("sim: %s: wait: %w (phase %s, version %s, state %s)", d.s.Name, ctx.Err(), st.Phase, st.Version, st.AppState)
		case <-d.done:
			d.mu.Lock()
			st = d.stateLocked()
			d.mu.Unlock()
			if pred(st) {
				return st, nil
			}
			return st, ErrClosed
		}
	}
}

// WaitUp waits until the device serves.
func (d *Device) WaitUp(ctx context.Context) error {
	_, err := d.WaitState(ctx, func(s State) bool { return s.Up && !s.Refusing })
	return err
}

// WaitVersion waits until the device serves running version with its app
// state settled (not pending_verify).
func (d *Device) WaitVersion(ctx context.Context, version string) (State, error) {
	return d.WaitState(ctx, func(s State) bool {
		return s.Up && s.Version == version && s.AppState != StatePendingVerify && s.AppState != StateNew
	})
}

// notifyLocked wakes the waiters; d.mu is held.
func (d *Device) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Device) emit(e Event) {
	e.Time = time.Now()
	e.Device = d.s.Name
	if e.Addr == "" {
		e.Addr = d.OTAAddr()
	}
	d.sink.emit(e)
}

// --- random and fault lookups --------------------------------------------------

func (d *Device) randFloat() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rnd.Float64()
}

// rebootDelay picks the delay between a success reply and the reset.
func (d *Device) rebootDelay() time.Duration {
	t := d.s.timing
	span := t.RebootDelayMax - t.RebootDelayMin
	if span <= 0 {
		return t.RebootDelayMin
	}
	return t.RebootDelayMin + time.Duration(d.randFloat()*float64(span))
}

// latency is the sum of the armed latency faults.
func (d *Device) latency() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var l time.Duration
	for _, f := range d.faults {
		if f.Kind == FaultLatency {
			l += f.Duration
		}
	}
	return l
}

// chance draws whether a fault of kind acts on this session.
func (d *Device) chance(kind FaultKind) (Fault, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.faults {
		if f.Kind != kind {
			continue
		}
		if f.Chance >= 1 || d.rnd.Float64() < f.Chance {
			return f, true
		}
	}
	return Fault{}, false
}

// armPoint draws whether a point fault of kind acts on an upload of size
// bytes, and where (the first such fault that does).
func (d *Device) armPoint(kind FaultKind, size int64) (ArmedFault, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.faults {
		if f.Kind != kind {
			continue
		}
		if a, ok := armOne(f, size, d.rnd.Float64); ok {
			return a, true
		}
	}
	return ArmedFault{}, false
}

// runningPending reports esp_ota_begin's refusal while the running image
// is still pending_verify.
func (d *Device) runningPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flash.beginBlocked()
}

// takeFaultLocked disarms the first fault of kind (one-shot faults); d.mu is held.
func (d *Device) takeFaultLocked(kind FaultKind) bool {
	for i, f := range d.faults {
		if f.Kind == kind {
			d.faults = slices.Delete(d.faults, i, i+1)
			return true
		}
	}
	return false
}

// behaviourOf is what the image in slot does when it boots; d.mu is held.
func (d *Device) behaviourOf(slot int) Behaviour {
	b := d.flash.slots[slot]
	if b == nil {
		return Healthy
	}
	return lookupBehaviour(d.behaviours, b.info, d.flash.uploaded[slot])
}

// statusFailCount is how many reads of each status endpoint the
// status-error faults among faults fail.
func statusFailCount(faults []Fault) int {
	n := 0
	for _, f := range faults {
		if f.Kind == FaultStatusError {
			n += f.Count
		}
	}
	return n
}

// setStatusBudgetLocked arms the status-error faults anew; d.mu is held.
func (d *Device) setStatusBudgetLocked(faults []Fault) {
	d.statusBudget = statusFailCount(faults)
	d.statusUsed = make(map[string]int)
}

// takeStatusFail reports whether this read of path fails (status-error):
// each status endpoint fails the armed count of reads.
func (d *Device) takeStatusFail(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.statusUsed[path] >= d.statusBudget {
		return false
	}
	d.statusUsed[path]++
	return true
}

// --- lifecycle ----------------------------------------------------------------

// run is the device's life: serve, reset, boot, serve again.
func (d *Device) run() {
	defer close(d.done)
	defer d.finish()
	for {
		reason, ok := d.upPhase()
		if !ok {
			return
		}
		d.stopServers(false)
		d.emit(Event{Event: EventReboot, Reason: reason})
		if !d.bootUntilUp() {
			return
		}
	}
}

func (d *Device) finish() {
	d.stopServers(true)
	d.mu.Lock()
	d.phase = PhaseClosed
	d.notifyLocked()
	d.mu.Unlock()
	d.emit(Event{Event: EventStopped})
}

// upPhase serves until a reset is due; false when the device is closing.
func (d *Device) emitReady() {
	d.mu.Lock()
	info := d.flash.runningInfo()
	slot := d.flash.label(d.flash.running)
	state := d.flash.runningState()
	boot := d.bootCount
	d.mu.Unlock()
	d.emit(Event{Event: EventReady, Web: d.WebAddr(), Host: d.s.Name + ".local", Personality: d.s.Personality,
		Project: info.Project, Version: info.Version, Slot: slot, State: state, Boot: boot})
}

func (d *Device) upPhase() (string, bool) {
	d.mu.Lock()
	info := d.flash.runningInfo()
	pending := d.flash.rollback && d.flash.runningState() == StatePendingVerify
	beh := d.behaviourOf(d.flash.running)
	slot := d.flash.label(d.flash.running)
	d.mu.Unlock()

	var validC <-chan time.Time
	if pending && (beh == Healthy || beh == Unstable || beh == ForeignELF) {
		t := time.NewTimer(d.s.timing.ValidAfter)
		defer t.Stop()
		validC = t.C
	}
	var refuseC <-chan time.Time
	var refuseT *time.Timer
	defer func() {
		if refuseT != nil {
			refuseT.Stop()
		}
	}()
	for {
		select {
		case <-d.ctx.Done():
			return "", false
		case reason := <-d.rebootCh:
			return reason, true
		case <-validC:
			validC = nil
			if beh == Unstable {
				d.mu.Lock()
				ok := d.flash.markInvalid()
				d.notifyLocked()
				d.mu.Unlock()
				if ok {
					return "self_check_failed", true
				}
				d.log.Debug("self-check failed but rollback is impossible; staying pending")
				continue
			}
			d.mu.Lock()
			ok := d.flash.markValid()
			d.notifyLocked()
			d.mu.Unlock()
			if ok {
				d.emit(Event{Event: EventValid, Project: info.Project, Version: info.Version, Slot: slot, State: StateValid})
			}
		case dur := <-d.refuseCh:
			d.emit(Event{Event: EventFault, Fault: Fault{Kind: FaultRefuse, Duration: dur}.String()})
			d.closeListeners()
			if refuseT != nil {
				refuseT.Stop()
			}
			refuseT = time.NewTimer(dur)
			refuseC = refuseT.C
		case <-refuseC:
			refuseC = nil
			if err := d.reopenListeners(); err != nil {
				d.log.Warn("reopen after refuse failed", "err", err)
				d.goDown("bind: " + err.Error())
				<-d.ctx.Done()
				return "", false
			}
		}
	}
}

// bootUntilUp runs the bootloader and the boot until the device serves
// again; false when it stays down or is closing.
func (d *Device) bootUntilUp() bool {
	t := d.s.timing
	// forced is why the last crash moved the boot partition itself
	// (crash-to-factory, crash-loop's boot counter): the boot that follows
	// lands on another image without the bootloader aborting anything.
	forced := ""
	for {
		d.mu.Lock()
		d.phase = PhaseBooting
		d.refusing = false
		if d.takeFaultLocked(FaultNoReturn) {
			d.mu.Unlock()
			d.goDown("no_return")
			<-d.ctx.Done()
			return false
		}
		prevSlot := d.flash.running
		prevInfo := d.flash.runningInfo()
		res := d.flash.boot()
		d.bootCount++
		d.bootedAt = time.Now()
		info := d.flash.runningInfo()
		beh := d.behaviourOf(res.slot)
		// initArduino() marks the new image valid before setup() runs,
		// unless the sketch overrides verifyRollbackLater(); a crash-loop
		// image confirms itself as early.
		earlyValid := (d.s.platform == PlatformArduinoESP32 && !d.s.RollbackLater || beh == CrashLoop) && d.flash.markValid()
		state := d.flash.runningState()
		pending := d.flash.rollback && state == StatePendingVerify
		prevState, _ := d.flash.stateOf(prevSlot)
		rolled := res.fallback || res.slot != prevSlot && (prevState == StateAborted || prevState == StateInvalid || forced != "")
		if rolled {
			d.rollbacks++
		}
		if beh != CrashLoop && res.slot != prevSlot {
			d.loopCrashes = 0
		}
		d.notifyLocked()
		d.mu.Unlock()

		if rolled {
			reason := string(prevState)
			switch {
			case res.fallback:
				reason = "no_image"
			case forced != "":
				reason = forced
			}
			d.emit(Event{Event: EventRollback, Reason: reason, From: prevInfo.Version, Project: info.Project,
				Version: info.Version, Slot: d.flash.label(res.slot), State: state})
		}
		// initArduino() marks the image valid when the app starts: say so
		// then (just before ready, or before a crash), not at the reset.
		emitEarlyValid := func() {
			if earlyValid {
				d.emit(Event{Event: EventValid, Project: info.Project, Version: info.Version, Slot: d.flash.label(res.slot), State: StateValid})
			}
		}
		forced = ""
		if res.noImage {
			d.goDown("no_bootable_image")
			<-d.ctx.Done()
			return false
		}
		switch beh {
		case CrashToFactory:
			// The crash path erases otadata: the factory app boots next.
			// Running factory already, it is a plain boot loop.
			if res.slot == slotFactory || !pending {
				d.emit(Event{Event: EventReboot, Reason: "crash", Version: info.Version})
				d.goDown("boot_loop")
				<-d.ctx.Done()
				return false
			}
			if !Sleep(d.ctx, t.CrashAfter) {
				return false
			}
			d.mu.Lock()
			d.flash.eraseOtadata()
			d.notifyLocked()
			d.mu.Unlock()
			d.emit(Event{Event: EventReboot, Reason: "crash", Version: info.Version})
			forced = "factory_reset"
			continue
		case CrashLoop:
			emitEarlyValid()
			d.mu.Lock()
			if d.loopCrashes == 0 {
				d.loopFrom = prevSlot
			}
			d.loopCrashes++
			back := d.loopCrashes >= CrashLoopCount
			from := d.loopFrom
			d.mu.Unlock()
			if back && from == res.slot {
				// Nothing else to go back to.
				d.emit(Event{Event: EventReboot, Reason: "crash", Version: info.Version})
				d.goDown("boot_loop")
				<-d.ctx.Done()
				return false
			}
			if !Sleep(d.ctx, t.CrashAfter) {
				return false
			}
			if back {
				d.mu.Lock()
				d.flash.selectBoot(from)
				d.loopCrashes = 0
				d.notifyLocked()
				d.mu.Unlock()
				forced = "boot_counter"
			}
			d.emit(Event{Event: EventReboot, Reason: "crash", Version: info.Version})
			continue
		}
		if beh == CrashOnBoot || beh == NoNetwork {
			// Without a pending_verify state to abort, the bootloader boots
			// the same image again: a boot loop that never reaches the network.
			if !pending {
				emitEarlyValid()
				d.emit(Event{Event: EventReboot, Reason: failReason(beh), Version: info.Version})
				d.goDown("boot_loop")
				<-d.ctx.Done()
				return false
			}
			wait := t.CrashAfter
			if beh == NoNetwork {
				wait = t.WatchdogAfter
			}
			if !Sleep(d.ctx, wait) {
				return false
			}
			d.emit(Event{Event: EventReboot, Reason: failReason(beh), Version: info.Version})
			continue
		}
		if !Sleep(d.ctx, t.BootTime) {
			return false
		}
		if err := d.startServers(); err != nil {
			d.log.Warn("cannot serve after boot", "err", err)
			d.goDown("bind: " + err.Error())
			<-d.ctx.Done()
			return false
		}
		emitEarlyValid()
		d.emitReady()
		return true
	}
}

func failReason(b Behaviour) string {
	if b == NoNetwork {
		return "watchdog"
	}
	return "crash"
}

func (d *Device) goDown(reason string) {
	d.mu.Lock()
	d.phase = PhaseDown
	d.downReason = reason
	d.notifyLocked()
	d.mu.Unlock()
	d.emit(Event{Event: EventDown, Reason: reason})
}
