package sim

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
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
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
	// statusFails counts the status reads still to fail, per path
	// (status-error faults).
	statusFails map[string]int
	uploads     []UploadRecord
	otaBusy     bool
	changed     chan struct{}
	otaPort     int
	webPort     int
	srv         *servers   // replaced under srvMu (and mu)
	srvMu       sync.Mutex // serialises starting and stopping servers
	net         netState   // under srvMu
	leftMu      sync.Mutex
	leftOut     []net.Conn // connections handed over outside srvMu (espota)

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
	return start(ctx, cfg, nil)
}

func start(ctx context.Context, cfg Config, sink *eventSink) (*Device, error) {
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
	if sink == nil {
		sink = newEventSink(s.OnEvent)
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{
		s:          s,
		log:        log.With("device", s.Name),
		sink:       sink,
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
		otaPort:    s.OTAPort,
		webPort:    s.WebPort,
	}
	for v, b := range s.Behaviours {
		if h, ok := strings.CutPrefix(v, behaveELFPrefix); ok {
			v = behaveELFPrefix + strings.ToLower(h)
		}
		d.behaviours[v], _ = ParseBehaviour(string(b)) // validated by resolve
	}
	d.statusFails = statusFailCounts(nil, d.faults)
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
	if s.esp8266 {
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
	return net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.otaPort))
}

// WebAddr is the web server address, or "" when the device has none.
func (d *Device) WebAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.s.Personality.http() || d.webPort < 0 {
		return ""
	}
	return net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.webPort))
}

// OTAPort is the upload port.
func (d *Device) OTAPort() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.otaPort
}

// Done is closed when the device has stopped.
func (d *Device) Done() <-chan struct{} { return d.done }

// --- runtime control --------------------------------------------------------

// SetFaults replaces the armed faults. A refuse fault starts now; others
// act on the next upload (slow and latency on the next read or reply).
func (d *Device) SetFaults(faults ...Fault) {
	d.mu.Lock()
	d.faults = slices.Clone(faults)
	d.statusFails = statusFailCounts(nil, faults)
	d.mu.Unlock()
	d.faultsChanged(faults)
}

// AddFault arms one more fault.
func (d *Device) AddFault(f Fault) {
	d.mu.Lock()
	d.faults = append(d.faults, f)
	d.statusFails = statusFailCounts(d.statusFails, []Fault{f})
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
	if !d.s.Personality.http() {
		d.updateEspota() // latency and the espota switches live in its server
	}
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
	if err := CheckBehaviours(d.s.Personality, d.s.RollbackLater, map[string]Behaviour{version: b}); err != nil {
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
		OTAAddr:       net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.otaPort)),
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
	if d.s.Personality.http() && d.webPort >= 0 {
		st.WebAddr = net.JoinHostPort(d.s.IP.String(), strconv.Itoa(d.webPort))
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
func (d *Device) armPoint(kind FaultKind, size int64) (armedFault, bool) {
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
	return armedFault{}, false
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

// statusFailCounts adds the status-error faults' counts to m (a new map
// when nil): each status path fails that many more reads.
func statusFailCounts(m map[string]int, faults []Fault) map[string]int {
	if m == nil {
		m = make(map[string]int)
	}
	for _, f := range faults {
		if f.Kind == FaultStatusError {
			for _, p := range []string{"/ota/status", "/api/status"} {
				m[p] += f.Count
			}
		}
	}
	return m
}

// takeStatusFail reports whether this read of path fails (status-error).
func (d *Device) takeStatusFail(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.statusFails[path] <= 0 {
		return false
	}
	d.statusFails[path]--
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
		// initArduino() marks the new image valid before setup() runs,
		// unless the sketch overrides verifyRollbackLater().
		beh := d.behaviourOf(res.slot)
		// initArduino() marks the new image valid before setup() runs,
		// unless the sketch overrides verifyRollbackLater(); a crash-loop
		// image confirms itself as early.
		earlyValid := (d.s.Personality == Arduino && !d.s.RollbackLater || beh == CrashLoop) && d.flash.markValid()
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
			if !sleepCtx(d.ctx, t.CrashAfter) {
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
			back := d.loopCrashes >= crashLoopCount
			from := d.loopFrom
			d.mu.Unlock()
			if back && from == res.slot {
				// Nothing else to go back to.
				d.emit(Event{Event: EventReboot, Reason: "crash", Version: info.Version})
				d.goDown("boot_loop")
				<-d.ctx.Done()
				return false
			}
			if !sleepCtx(d.ctx, t.CrashAfter) {
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
			if !sleepCtx(d.ctx, wait) {
				return false
			}
			d.emit(Event{Event: EventReboot, Reason: failReason(beh), Version: info.Version})
			continue
		}
		if !sleepCtx(d.ctx, t.BootTime) {
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

// --- servers --------------------------------------------------------------------

// servers are what a booted device listens with.
type servers struct {
	ota, web *httpd
	esp      *espotaRunner
}

// netState is what the device keeps on the network across reboots: its
// listening sockets (held silent while it boots, where the OS allows) and
// the connections a reset left behind. Guarded by srvMu.
type netState struct {
	ota, web tcpPort
	udp      net.PacketConn // espota's socket, bound for the device's life
	udpQuiet func()         // stops the discarding while the device boots
	left     []net.Conn     // connections the last reset left open
}

// tcpPort is one listening socket and, while it is held, how to release it.
type tcpPort struct {
	ln      *net.TCPListener
	release func() error
}

func (d *Device) listenTCP(port int) (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: lwipSockopts}
	return rebind(d, "tcp", port, func(addr string) (*net.TCPListener, error) {
		l, err := lc.Listen(d.ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return l.(*net.TCPListener), nil
	})
}

func (d *Device) listenUDP(port int) (net.PacketConn, error) {
	var lc net.ListenConfig
	return rebind(d, "udp", port, func(addr string) (net.PacketConn, error) { return lc.ListenPacket(d.ctx, "udp", addr) })
}

// rebind listens on the device's address; a fixed port just released by the
// previous boot (or in TIME_WAIT) may need a moment, so it retries briefly.
func rebind[T any](d *Device, network string, port int, listen func(addr string) (T, error)) (T, error) {
	addr := net.JoinHostPort(d.s.IP.String(), strconv.Itoa(port))
	var (
		l   T
		err error
	)
	for i := 0; i < 20; i++ {
		if l, err = listen(addr); err == nil {
			return l, nil
		}
		if port == 0 || !sleepCtx(d.ctx, 50*time.Millisecond) {
			break
		}
	}
	return l, fmt.Errorf("listen on %s %s: %w", network, addr, err)
}

func portOf(a net.Addr) int {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.Port
	case *net.UDPAddr:
		return v.Port
	}
	return 0
}

// takeTCP returns p's listener, released from its hold, or a new one.
func (d *Device) takeTCP(p *tcpPort, port int) (*net.TCPListener, error) {
	if p.ln != nil {
		rel := p.release
		p.release = nil
		if rel == nil {
			return p.ln, nil
		}
		if err := rel(); err == nil {
			return p.ln, nil
		}
		p.ln.Close()
		p.ln = nil
	}
	ln, err := d.listenTCP(port)
	if err != nil {
		return nil, err
	}
	p.ln = ln
	return ln, nil
}

// holdTCP keeps p's listener silent through a reboot, or closes it where
// the OS cannot (connections are then refused).
func holdTCP(p *tcpPort) {
	if p.ln == nil || p.release != nil {
		return
	}
	if rel, ok := holdListener(p.ln); ok {
		p.release = rel
		return
	}
	p.ln.Close()
	p.ln = nil
}

func closeTCP(p *tcpPort) {
	if p.ln != nil {
		p.ln.Close()
	}
	*p = tcpPort{}
}

// takeUDP returns the espota socket, stopping the boot-time discarding.
func (d *Device) takeUDP(port int) (net.PacketConn, error) {
	n := &d.net
	if n.udpQuiet != nil {
		n.udpQuiet()
		n.udpQuiet = nil
	}
	if n.udp != nil {
		return n.udp, nil
	}
	pc, err := d.listenUDP(port)
	if err != nil {
		return nil, err
	}
	n.udp = pc
	return pc, nil
}

// resetLeftConns resets what the last reset left open: the device that
// came back does not know those connections.
func (d *Device) resetLeftConns() {
	for _, c := range d.net.left {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	d.net.left = nil
}

// leaveConn keeps a connection open but dead until the device is back
// (espota's data connection on a power loss or a reset).
func (d *Device) leaveConn(c net.Conn) {
	d.leftMu.Lock()
	d.leftOut = append(d.leftOut, c)
	d.leftMu.Unlock()
}

// startServers opens the listeners of the personality and advertises the
// device. Ports chosen on the first start are kept for later boots.
func (d *Device) startServers() error {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	srv := &servers{}
	d.mu.Lock()
	otaPort, webPort := d.otaPort, d.webPort
	d.mu.Unlock()
	if d.s.Personality.http() {
		ln, err := d.takeTCP(&d.net.ota, otaPort)
		if err != nil {
			return err
		}
		otaPort = portOf(ln.Addr())
		srv.ota = newHTTPD(d, "ota", ln, d.otaRoutes())
		if webPort >= 0 {
			wl, err := d.takeTCP(&d.net.web, webPort)
			if err != nil {
				return err
			}
			webPort = portOf(wl.Addr())
			srv.web = newHTTPD(d, "web", wl, d.webRoutes())
		}
	} else {
		pc, err := d.takeUDP(otaPort)
		if err != nil {
			return err
		}
		otaPort = portOf(pc.LocalAddr())
		srv.esp = d.newEspotaRunner(pc)
	}
	d.mu.Lock()
	d.otaPort, d.webPort = otaPort, webPort
	d.srv = srv
	d.phase = PhaseUp
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	d.leftMu.Lock()
	d.net.left = append(d.net.left, d.leftOut...)
	d.leftOut = nil
	d.leftMu.Unlock()
	d.resetLeftConns()
	if srv.ota != nil {
		srv.ota.start()
	}
	if srv.web != nil {
		srv.web.start()
	}
	if srv.esp != nil {
		srv.esp.start()
	}
	if d.s.MDNS != nil {
		if err := d.s.MDNS.Add(d.mdnsHost()); err != nil {
			d.log.Warn("mdns add", "err", err)
		}
	}
	return nil
}

// stopServers takes the device off the network. A reset (final false) is
// silent, as a chip that stops is: no mDNS goodbye, listeners held so that
// connection attempts time out, open connections left unanswered and
// unclosed, the espota UDP port still bound but deaf. Closing the device
// (final true) sends the goodbyes and closes everything.
func (d *Device) stopServers(final bool) {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	d.srv = nil
	if d.phase == PhaseUp {
		d.phase = PhaseBooting
	}
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	if srv != nil {
		if d.s.MDNS != nil {
			if final {
				d.s.MDNS.Remove(d.s.Name)
			} else {
				d.s.MDNS.Withdraw(d.s.Name)
			}
		}
		if srv.ota != nil {
			d.net.left = append(d.net.left, srv.ota.close(!final)...)
		}
		if srv.web != nil {
			d.net.left = append(d.net.left, srv.web.close(!final)...)
		}
		if srv.esp != nil {
			srv.esp.stop()
		}
	}
	n := &d.net
	if !final {
		holdTCP(&n.ota)
		holdTCP(&n.web)
		if n.udp != nil && n.udpQuiet == nil {
			n.udpQuiet = discardUDP(n.udp)
		}
		return
	}
	closeTCP(&n.ota)
	closeTCP(&n.web)
	if n.udpQuiet != nil {
		n.udpQuiet()
		n.udpQuiet = nil
	}
	if n.udp != nil {
		n.udp.Close()
		n.udp = nil
	}
	d.leftMu.Lock()
	n.left = append(n.left, d.leftOut...)
	d.leftOut = nil
	d.leftMu.Unlock()
	d.resetLeftConns()
}

// discardUDP reads and drops datagrams until the returned stop is called:
// the port stays bound (no ICMP unreachable) and silent while the device boots.
func discardUDP(pc net.PacketConn) (stop func()) {
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				if stopping.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				if isTimeout(err) {
					_ = pc.SetReadDeadline(time.Time{})
				}
			}
		}
	}()
	return func() {
		stopping.Store(true)
		_ = pc.SetReadDeadline(aLongTimeAgo)
		<-done
		_ = pc.SetReadDeadline(time.Time{})
	}
}

// closeListeners is the refuse fault: new connections are refused,
// running ones go on.
func (d *Device) closeListeners() {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv, already := d.srv, d.refusing
	d.mu.Unlock()
	// A second refuse fault while the first holds: the caller extends the
	// window; the sockets are already closed.
	if srv == nil || already {
		return
	}
	if srv.ota != nil {
		srv.ota.closeListener()
		d.net.ota = tcpPort{}
	}
	if srv.web != nil {
		srv.web.closeListener()
		d.net.web = tcpPort{}
	}
	if srv.esp != nil {
		srv.esp.stop()
		d.net.udp.Close()
		d.net.udp = nil
	}
	d.mu.Lock()
	d.refusing = true
	d.notifyLocked()
	d.mu.Unlock()
}

func (d *Device) reopenListeners() error {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	otaPort, webPort := d.otaPort, d.webPort
	d.mu.Unlock()
	if srv == nil {
		return nil
	}
	if srv.ota != nil {
		ln, err := d.takeTCP(&d.net.ota, otaPort)
		if err != nil {
			return err
		}
		srv.ota.reopen(ln)
	}
	if srv.web != nil {
		ln, err := d.takeTCP(&d.net.web, webPort)
		if err != nil {
			return err
		}
		srv.web.reopen(ln)
	}
	if srv.esp != nil {
		pc, err := d.takeUDP(otaPort)
		if err != nil {
			return err
		}
		srv.esp = d.newEspotaRunner(pc)
		srv.esp.start()
	}
	d.mu.Lock()
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	return nil
}

// updateEspota recreates the espota server when the faults it holds
// (latency, no-connect-back, lose-ok) changed. It aborts a running espota
// transfer, so it does nothing when nothing changed.
func (d *Device) updateEspota() {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	refusing := d.refusing
	d.mu.Unlock()
	if srv == nil || srv.esp == nil || refusing || srv.esp.key == d.espotaKey() {
		return
	}
	srv.esp.stop()
	srv.esp = d.newEspotaRunner(srv.esp.pc)
	srv.esp.start()
}

// mdnsHost is what the device advertises.
func (d *Device) mdnsHost() mdnsd.Host {
	return mdnsd.Host{Name: d.s.Name, Addrs: []netip.Addr{d.s.IP}, Services: d.services()}
}
