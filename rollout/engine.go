package rollout

import (
	"cmp"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/store"
	"github.com/ots-ota/ots-ota/upload"
)

// Config is one rollout run.
type Config struct {
	Family       Family
	Devices      []Device
	Plan         Plan
	Expect       string                  // --expect-version: compared with Facts.Release
	ImagePath    string                  // FIRMWARE; companions found beside it by the family's names
	Serve        fileserve.Config        // Addr from --serve-addr; Files filled by the engine
	PublicURL    string                  // --public-url base ("" = http://<bound addr>); the final URL ≤ fileserve.MaxURLLen else error before publishing
	MaxFetches   int                     // default 10
	Retries      int                     // extra commands, only after ReportFailed, never after a restart was seen
	Timeout      time.Duration           // per device bound (0 = from image size at 8 KiB/s floor + RebootWindow, ×2 for a two-step)
	RebootWindow time.Duration           // how long a restart may take before the one Reread (default 90 s, = --verify-timeout)
	Stability    time.Duration           // after the booted report with the target, stay online this long (default 30 s)
	State        *State                  // opened and locked by the caller; the engine saves after every change
	OnEvent      func(upload.FleetEvent) // progress for the renderers; Phase PhaseDone carries the Result
	OnWave       func(WaveEvent)
	Logger       *slog.Logger

	// Additions. Protocol labels the results ("tasmota-mqtt"); "" = the
	// family's Protocol() if it has one, else its Name(). ReadTimeout
	// bounds each Preflight, Reread and Restore (default 15 s).
	Protocol    upload.Protocol
	ReadTimeout time.Duration

	// Store, if set, is where the image, its companions and any
	// announcements are published instead of the built-in file server:
	// the image once, before any command, its URLs kept in the state for
	// --resume (which must use the same store). The file server's fetch
	// observation is then unknown: a device holds its --max-fetches slot
	// from its command to its verdict. nil = the built-in file server.
	Store store.Store
}

// WaveEvent tells a wave's start and end.
type WaveEvent struct {
	Index, Of int
	Canary    bool
	Devices   []string
	State     string // started|passed|stopped
	Reason    string
}

// floorRate is the slowest fetch the per-device bound allows for, as
// push's bound does: 8 KiB/s.
const floorRate = 8 << 10

// preflightParallel bounds the reads in flight before commanding.
const preflightParallel = 16

// Run rolls the image out. The error is only for what stops the whole run
// before devices (file server, store, URL too long, an announcement the
// family cannot make, broker); the results hold
// every device, in Config.Devices order (not-started for those a gate
// left).
//
// Devices already done in cfg.State keep their results; devices it holds
// as commanded (an interrupted run) are only observed, never commanded
// again. When ctx ends, devices in flight end cancelled and stay commanded
// in the state, the rest not-started, and the state stays unfinished for
// --resume.
func Run(ctx context.Context, cfg Config) ([]upload.Result, error) {
	e, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	return e.run(ctx)
}

type engine struct {
	cfg   Config
	log   *slog.Logger
	proto upload.Protocol
	img   Image
	hash  string            // the image's SHA-256
	have  []string          // companions served beside the image
	files map[string]string // served name → path
	url   string            // what devices are told
	token string            // its token: never in a device's words (redact)
	bound time.Duration
	rec   Record // at the start
	devs  []*dev // in state (wave) order
	byTop map[string]*dev
	fetch chan struct{} // MaxFetches
	pre   chan struct{}
	emitM sync.Mutex
	total int

	// The running failure count: a wave's failures (by its index in the
	// state) and the rollout's, updated as each verdict lands, so that a
	// budget stops the rollout inside a wave, not only after it. stop is
	// the first gate exceeded (it stays exceeded: the sizes are fixed);
	// devices not yet commanded then end not-started.
	gateM    sync.Mutex
	waveFail map[int]int
	allFail  int
	stop     string
	stopCh   chan struct{} // closed when stop is set
	wavePos  map[int]int   // state wave index → position among waves()
	waveSize map[int]int
	nWaves   int

	// The link to the devices (Linker; nil: always up), as last seen:
	// linkGen counts the changes seen, linkBack is when it was last seen
	// back up after one.
	linker   Linker
	linkM    sync.Mutex
	linkUp   bool
	linkCh   <-chan struct{}
	linkGen  int
	linkBack time.Time

	srv *fileserve.Server    // the built-in file server; nil with a Store
	ann []AnnouncementRecord // as in the state; only the run's goroutine
}

// dev is one device's run.
type dev struct {
	d      Device
	idx    int // in the state's Devices
	wave   int
	canary bool

	mu       sync.Mutex
	reports  []Report
	online   *bool // the last word on its link; nil = none
	notify   chan struct{}
	phase    string // as in the state
	notSent  error  // the family could not send its last command at all
	commands []time.Time
	before   *Facts // this run's pre-flight read (OtaURL kept), else the state's
	withheld bool   // the state dropped its OtaURL (it held userinfo)

	// fetched is the device's last fetch of the image (or its .gz) in
	// this run, as the file server told it: the result's bytes and rate;
	// nil when none was told to be the device's.
	fetched *fileserve.Fetch
	// fetches are the device's requests to the file server since its
	// last command (at most maxFetchesKept): what a failed verdict reads
	// besides the device's words.
	fetches []fileserve.Fetch

	// shown is the last progress event sent for the device, and whether
	// it announced a fetch not yet ended; under the engine's emitM.
	shown      upload.Phase
	shownFetch bool

	holding bool // holds a MaxFetches slot
	linkGen int  // the link's changes seen when it was last commanded or watched again
	start   time.Time
	res     upload.Result
	done    bool // has its result for this run (cancelled included)
}

func (c Config) withDefaults() Config {
	if c.MaxFetches <= 0 {
		c.MaxFetches = 10
	}
	if c.RebootWindow <= 0 {
		c.RebootWindow = 90 * time.Second
	}
	if c.Stability <= 0 {
		c.Stability = 30 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 15 * time.Second
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func newEngine(cfg Config) (*engine, error) {
	cfg = cfg.withDefaults()
	if cfg.Family == nil || cfg.State == nil {
		return nil, errors.New("rollout: no device family or no state file")
	}
	e := &engine{cfg: cfg, log: cfg.Logger, rec: cfg.State.Record(), byTop: map[string]*dev{}, stopCh: make(chan struct{})}
	e.ann = e.rec.Announcements
	e.proto = cfg.Protocol
	if e.proto == "" {
		if p, ok := cfg.Family.(interface{ Protocol() upload.Protocol }); ok {
			e.proto = p.Protocol()
		} else {
			e.proto = upload.Protocol(cfg.Family.Name())
		}
	}
	// The state's devices, in wave order, must be the ones asked for.
	for i, r := range e.rec.Devices {
		d := &dev{d: r.device(), idx: i, wave: r.Wave, canary: r.Canary,
			notify: make(chan struct{}, 1), phase: r.Phase, commands: slices.Clone(r.Commands), before: r.Before, withheld: r.OtaURLWithheld}
		if _, dup := e.byTop[r.Topic]; dup {
			return nil, fmt.Errorf("the state file %s names the device %s twice", cfg.State.Path(), r.Topic)
		}
		e.byTop[r.Topic] = d
		e.devs = append(e.devs, d)
	}
	if len(cfg.Devices) != len(e.devs) {
		return nil, fmt.Errorf("the devices given differ from those of the state file %s", cfg.State.Path())
	}
	for _, d := range cfg.Devices {
		dd, ok := e.byTop[d.Topic]
		if !ok {
			return nil, fmt.Errorf("the device %s is not in the state file %s", d.label(), cfg.State.Path())
		}
		// The state's word first; what it does not say, the caller's.
		dd.d.Manifest = cmp.Or(dd.d.Manifest, d.Manifest)
		dd.d.Entity = cmp.Or(dd.d.Entity, d.Entity)
	}
	e.total = len(e.devs)
	e.linkUp = true
	if l, ok := cfg.Family.(Linker); ok {
		e.linker = l
		e.linkUp, e.linkCh = l.Link()
	}
	e.waveFail, e.wavePos, e.waveSize = map[int]int{}, map[int]int{}, map[int]int{}
	for i, w := range e.waves() {
		e.wavePos[w[0].wave], e.waveSize[w[0].wave] = i, len(w)
		e.nWaves++
	}
	e.fetch = make(chan struct{}, cfg.MaxFetches)
	e.pre = make(chan struct{}, preflightParallel)
	if err := e.image(); err != nil {
		return nil, err
	}
	return e, nil
}

// image reads the image once: its size, chip and hash (a resumed rollout
// must serve the same bytes), and finds its companions.
func (e *engine) image() error {
	p := e.cfg.ImagePath
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("cannot read %s: %v", p, unwrapPath(err))
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	m := md5.Sum(data)
	if e.rec.Firmware.SHA256 != "" && e.rec.Firmware.SHA256 != hash {
		return fmt.Errorf("%s changed since rollout %s began (its SHA-256 differs); devices still fetching would get other bytes: start a new rollout", p, e.rec.ID)
	}
	e.hash = hash
	e.img = Image{Name: filepath.Base(p), Size: int64(len(data)), MD5: hex.EncodeToString(m[:])}
	if img, err := image.Parse(data); err == nil && img.Kind == image.KindApp && (img.Header.ChipID.Known() || img.Header.ChipID.IsESP8266()) {
		e.img.Chip = img.Header.ChipID.String()
	}
	e.files = map[string]string{e.img.Name: p}
	for _, c := range e.cfg.Family.Companions(e.img.Name) {
		cp := filepath.Join(filepath.Dir(p), c)
		if st, err := os.Stat(cp); err == nil && st.Mode().IsRegular() {
			e.files[c] = cp
			e.have = append(e.have, c)
		}
	}
	e.bound = e.cfg.Timeout
	if e.bound <= 0 {
		e.bound = time.Duration(float64(e.img.Size)/floorRate*float64(time.Second)) + e.cfg.RebootWindow
	}
	return nil
}

// publish puts the image in the Store, or starts the file server under
// the rollout's token, after checking the URL devices will be told.
func (e *engine) publish(ctx context.Context) (*fileserve.Server, error) {
	if e.cfg.Store != nil {
		return nil, e.publishStore(ctx)
	}
	if e.rec.Store != nil && len(e.rec.Store.URLs) > 0 {
		return nil, fmt.Errorf("rollout %s published its image to %s: resume it with the same --store", e.rec.ID, e.rec.Store.Name)
	}
	if _, ok := e.cfg.Family.(Announcer); ok {
		// Devices poll the announcement at a URL fixed when they were
		// built: a port picked afresh would lose them.
		if ap, err := netip.ParseAddrPort(e.cfg.Serve.Addr); err == nil && ap.Port() == 0 {
			return nil, fmt.Errorf("--serve-addr %s needs a fixed port: the devices poll their manifest at a URL built into them", e.cfg.Serve.Addr)
		}
	}
	tok := e.rec.Serve.Token
	if tok == "" {
		var err error
		if tok, err = fileserve.NewToken(); err != nil {
			return nil, err
		}
	}
	sc := e.cfg.Serve
	sc.Files = e.files
	sc.Token = tok
	e.token = tok
	if e.rec.Serve.Bound != "" {
		// Resumed: the same address and port, so the URLs told still work.
		if ap, err := netip.ParseAddrPort(sc.Addr); err != nil || ap.Port() == 0 {
			sc.Addr = e.rec.Serve.Bound
		}
	}
	if e.cfg.PublicURL != "" {
		u, err := url.Parse(e.cfg.PublicURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("--public-url %q is not an http:// or https:// base URL (scheme, host and an optional path)", e.cfg.PublicURL)
		}
		base := strings.TrimRight(e.cfg.PublicURL, "/")
		for name := range e.files {
			if n := len(base + "/" + tok + "/" + name); n > fileserve.MaxURLLen {
				return nil, fmt.Errorf("the URL for %s under --public-url would be %d characters, devices take at most %d: use a shorter --public-url or file name", name, n, fileserve.MaxURLLen)
			}
		}
		e.url = base + "/" + tok + "/" + e.img.Name
		if ap, err := netip.ParseAddrPort(sc.Addr); err == nil && ap.Addr().IsUnspecified() && !sc.Advertise.IsValid() {
			// Devices are told the public URL; the server's own URLs are
			// never handed out.
			sc.Advertise = netip.IPv4Unspecified().Next()
		}
	}
	if err := e.checkFamily(e.url); err != nil {
		return nil, err
	}
	sc.OnFetch, sc.OnStart = e.onFetch, e.onStart
	srv, err := fileserve.Start(sc)
	if err != nil {
		return nil, err
	}
	if e.url == "" {
		// The URL is known once the server is bound: checked before any
		// device is told it.
		e.url = srv.URL(e.img.Name)
		if c, ok := e.cfg.Family.(URLChecker); ok {
			if err := c.CheckURL(e.url); err != nil {
				srv.Close()
				return nil, err
			}
		}
	}
	err = e.cfg.State.update(func(r *Record) {
		r.Serve.Token = tok
		r.Serve.Bound = srv.Addr().String()
		if r.Firmware.SHA256 == "" {
			r.Firmware.SHA256, r.Firmware.Size = e.hash, e.img.Size
		}
	})
	if err != nil {
		srv.Close()
		return nil, err
	}
	return srv, nil
}

// checkFamily asks the family's optional checks about the companions and,
// when known before the server binds (u != ""), the URL.
func (e *engine) checkFamily(u string) error {
	if c, ok := e.cfg.Family.(CompanionChecker); ok {
		comp := map[string]string{}
		for name, p := range e.files {
			if name != e.img.Name {
				comp[name] = p
			}
		}
		if err := c.CheckCompanions(e.cfg.ImagePath, comp); err != nil {
			return err
		}
	}
	if c, ok := e.cfg.Family.(URLChecker); ok && u != "" {
		return c.CheckURL(u)
	}
	return nil
}

func (e *engine) run(ctx context.Context) ([]upload.Result, error) {
	srv, err := e.publish(ctx)
	if err != nil {
		return nil, err
	}
	if srv != nil {
		defer srv.Close()
	}
	e.srv = srv
	if err := e.checkAnnounce(); err != nil {
		return nil, err
	}
	e.serveAgain()
	e.log.Info("publishing the image", "url", redactURL(e.url), "files", len(e.files))

	// Restore what the state holds, before any new report: results, and
	// the reports a resumed device is judged with (older ones first).
	resumed := time.Now()
	for _, d := range e.devs {
		r := e.rec.Devices[d.idx]
		for _, rr := range r.Reports {
			rep := Report{Topic: d.d.Topic, Kind: rr.Kind, At: rr.At, Words: rr.Words, Source: rr.Source, Class: rr.Class}
			if rr.Facts != nil {
				rep.Facts = *rr.Facts
			}
			d.reports = append(d.reports, rep)
		}
		if r.Phase == PhaseDone && r.Result != nil {
			d.res, d.done = *r.Result, true
			e.tally(d, d.res)
			if !r.RestorePending {
				e.emitDone(d)
			}
		}
	}

	defer func() {
		if err := e.cfg.State.flush(); err != nil {
			e.log.Warn("cannot save the rollout state", "err", err)
		}
	}()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	devs := make([]Device, len(e.devs))
	for i, d := range e.devs {
		devs[i] = d.d
	}
	if err := e.cfg.Family.Watch(wctx, devs, e.onReport); err != nil {
		return nil, err
	}
	if e.linker != nil {
		go e.watchLink(wctx)
	}

	// An interrupted run may have left devices done, their OTA URL not
	// yet put back.
	for _, d := range e.devs {
		if d.done && e.rec.Devices[d.idx].RestorePending {
			e.restoreLeft(ctx, d)
			e.emitDone(d)
		}
	}

	waves := e.waves()
	stopped := e.rec.Stopped
	if stopped == "" {
		stopped = e.stopped()
	}
	for wi, w := range waves {
		if stopped != "" || ctx.Err() != nil {
			break
		}
		pending := slices.ContainsFunc(w, func(d *dev) bool { return !d.done })
		if wi > 0 && pending && !e.pause(ctx, w) {
			break
		}
		ev := WaveEvent{Index: wi, Of: len(waves), Canary: w[0].canary, Devices: names(w)}
		if pending {
			ev.State = "started"
			e.wave(ev)
			// Each wave's devices find the image announced only now (an
			// Announcer family); --resume writes it again.
			if err := e.announceWave(ctx, w); err != nil && ctx.Err() == nil {
				e.log.Warn("cannot announce the image: the rollout stops", "err", err)
				e.stopWith("cannot announce the image (" + oneLine(err) + ")")
			}
			e.runWave(ctx, w, resumed)
		}
		if ctx.Err() != nil {
			break
		}
		var wr, all []upload.Result
		for _, d := range w {
			wr = append(wr, d.res)
		}
		for _, d := range e.devs {
			if d.done {
				all = append(all, d.res)
			}
		}
		reason := e.stopped() // a budget exceeded inside the wave
		if reason == "" {
			reason = e.cfg.Plan.Gate(ev.Canary, wi, len(waves), wr, all, e.total)
		}
		if reason != "" {
			stopped = reason
			// The event is this wave's: its name is not said again
			// ("wave 2 of 3: stopped: 1 of its 2 devices failed, …").
			ev.State, ev.Reason = "stopped", strings.TrimPrefix(reason, fmt.Sprintf("wave %d of %d: ", ev.Index+1, ev.Of))
			if said := e.revert(ctx); len(said) > 0 {
				ev.Reason += "; " + strings.Join(said, "; ")
			}
		} else {
			ev.State = "passed"
		}
		if pending || ev.State == "stopped" {
			e.wave(ev)
		}
		if ev.State == "passed" && wi+1 < len(waves) && e.cfg.Plan.WavePause > 0 && pending {
			until := time.Now().Add(e.cfg.Plan.WavePause)
			e.save(func(r *Record) { r.PauseUntil = until })
		}
	}

	// Stopped by a gate: devices still in flight (a resumed run's, in a
	// wave the loop did not reach) are watched to their verdicts all the
	// same.
	if ctx.Err() == nil {
		var left []*dev
		for _, d := range e.devs {
			d.mu.Lock()
			if !d.done && d.phase == PhaseCommanded {
				left = append(left, d)
			}
			d.mu.Unlock()
		}
		e.runWave(ctx, left, resumed)
	}

	cancelled := ctx.Err() != nil
	if stopped != "" && !cancelled {
		// A gate stopped a run this one resumes: nothing announced stays.
		e.revert(ctx)
	}
	for _, d := range e.devs {
		if d.done {
			continue
		}
		d.res = e.baseResult(d)
		d.res.Outcome = upload.OutcomeNotStarted
		switch {
		case cancelled:
			d.res.Message = "interrupted before this device started"
		default:
			// The outcome already says "not started": the message says why.
			d.res.Message = stoppedWords(stopped)
			d.done = true
			e.save(func(r *Record) { r.Devices[d.idx].Result = ptr(d.res) })
		}
		e.emitDone(d)
	}
	e.save(func(r *Record) {
		r.PauseUntil = time.Time{}
		if !cancelled {
			r.Finished = true
			r.Stopped = stopped
		}
	})

	out := make([]upload.Result, 0, len(e.cfg.Devices))
	for _, d := range e.cfg.Devices {
		out = append(out, e.byTop[d.Topic].res)
	}
	return out, nil
}

// runWave runs the devices of a wave not done yet. Devices a resumed run
// holds as in flight are watched at once. The others go in the wave's
// order, each once it holds a MaxFetches slot: its read comes just before
// its command, and none starts once a failure budget is exceeded (left
// pending, as are all of them when the rollout stopped before the wave).
func (e *engine) runWave(ctx context.Context, w []*dev, resumed time.Time) {
	var wg sync.WaitGroup
	start := func(d *dev) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.device(ctx, d, resumed)
		}()
	}
	var fresh []*dev
	for _, d := range w {
		d.mu.Lock()
		inFlight := d.phase == PhaseCommanded
		d.mu.Unlock()
		switch {
		case d.done:
		case inFlight:
			start(d)
		default:
			fresh = append(fresh, d)
		}
	}
	if _, ok := e.cfg.Family.(Readier); ok {
		// Each takes its slot once ready (device), not in the wave's order.
		for _, d := range fresh {
			if e.stopped() != "" || ctx.Err() != nil {
				break
			}
			start(d)
		}
		wg.Wait()
		return
	}
	for _, d := range fresh {
		if e.stopped() != "" || !e.acquire(ctx, d) {
			break // stopped or interrupted: the rest not started
		}
		if e.stopped() != "" {
			e.release(d)
			break
		}
		start(d)
	}
	wg.Wait()
}

// waves groups the devices by the wave the state file gave them.
func (e *engine) waves() [][]*dev {
	var waves [][]*dev
	for _, d := range e.devs {
		for len(waves) <= d.wave {
			waves = append(waves, nil)
		}
		waves[d.wave] = append(waves[d.wave], d)
	}
	return slices.DeleteFunc(waves, func(w []*dev) bool { return len(w) == 0 })
}

// pause waits out the pause before wave w (a resumed run only what was
// left of it, and none once the wave began); false when ctx ended.
func (e *engine) pause(ctx context.Context, w []*dev) bool {
	for _, d := range w {
		d.mu.Lock()
		began := d.phase != PhasePending || d.before != nil
		d.mu.Unlock()
		if began {
			return true
		}
	}
	until := e.cfg.State.Record().PauseUntil
	if until.IsZero() {
		return true
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *engine) wave(ev WaveEvent) {
	e.save(func(r *Record) {
		for i := range r.Waves {
			if r.Waves[i].Index == ev.Index {
				r.Waves[i].State, r.Waves[i].Reason = ev.State, ev.Reason
				return
			}
		}
		r.Waves = append(r.Waves, WaveRecord{Index: ev.Index, Canary: ev.Canary, State: ev.State, Reason: ev.Reason})
	})
	if e.cfg.OnWave != nil {
		e.cfg.OnWave(ev)
	}
}

func names(w []*dev) []string {
	var n []string
	for _, d := range w {
		n = append(n, d.d.label())
	}
	return n
}

func (e *engine) baseResult(d *dev) upload.Result {
	r := upload.Result{Device: d.d.label(), Addr: d.d.Topic, Protocol: e.proto, To: e.cfg.Expect, Canary: d.canary}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.before != nil {
		r.From = shownVersion(*d.before)
	}
	r.Tries = len(d.commands)
	if f := d.fetched; f != nil {
		r.Bytes = ptr(f.Bytes)
		r.Rate = fetchRate(*f)
	}
	return r
}

// minRateSpan is the shortest fetch whose rate is shown: a shorter one
// measures the host's socket buffers, not the device.
const minRateSpan = 50 * time.Millisecond

// fetchRate is f's rate in bytes per second, 0 (unknown) unless f
// delivered the whole body (a device that refuses an image, e.g. "Not
// Enough space", drops the link at once: what the server wrote went to
// socket buffers) and lasted long enough to measure.
func fetchRate(f fileserve.Fetch) float64 {
	if f.Status != 200 && f.Status != 206 || f.Length <= 0 || f.Bytes < f.Length || f.Duration < minRateSpan {
		return 0
	}
	return float64(f.Bytes) / f.Duration.Seconds()
}

// maxFetchesKept bounds a device's fetch record (an ESP8266 makes at
// most 9 tries per command).
const maxFetchesKept = 32

// fetchReading says what the file server saw of a device's fetches,
// consecutive alike ones counted once: "the file server saw it fetch
// fw.bin (sent whole), then fw-minimal.bin 2 times (each sent whole),
// then ask for fw-minimal.bin.gz, which is not served"; "" for none.
func fetchReading(fs []fileserve.Fetch) string {
	type step struct {
		what, end string
		asked     bool // no file of that name is served
		n         int
	}
	var steps []step
	for _, f := range fs {
		s := step{what: f.Name, n: 1}
		switch {
		case f.Name == "" && f.Asked != "":
			s.what, s.asked = f.Asked, true
		case f.Name == "":
			s.what, s.asked = "a name", true
		case f.Status != 200 && f.Status != 206:
			s.end = fmt.Sprintf("answered HTTP %d", f.Status)
		case f.Method == http.MethodHead:
			s.end = "headers only"
		case f.Bytes >= f.Length:
			s.end = "sent whole"
		default:
			s.end = fmt.Sprintf("cut after %d of %d bytes", f.Bytes, f.Length)
		}
		if k := len(steps) - 1; k >= 0 && steps[k].what == s.what && steps[k].end == s.end && steps[k].asked == s.asked {
			steps[k].n++
			continue
		}
		steps = append(steps, s)
	}
	var parts []string
	for i, s := range steps {
		times, each := "", ""
		if s.n > 1 {
			times, each = fmt.Sprintf(" %d times", s.n), "each "
		}
		verb := "fetch "
		if i > 0 {
			verb = "then fetch "
		}
		if s.asked {
			verb = strings.Replace(verb, "fetch ", "ask", 1)
			parts = append(parts, fmt.Sprintf("%s%s for %s, which is not served", verb, times, s.what))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s%s%s (%s%s)", verb, s.what, times, each, s.end))
	}
	if len(parts) == 0 {
		return ""
	}
	return "the file server saw it " + strings.Join(parts, ", ")
}

// save changes the state; a failed write is logged (the run goes on: the
// devices are already being updated) and the next save tries again.
func (e *engine) save(fn func(*Record)) {
	if err := e.cfg.State.update(fn); err != nil {
		e.log.Warn("cannot save the rollout state", "err", err)
	}
}

func ptr[T any](v T) *T { return &v }

// link is the link's state now: up, the changes seen so far, and when it
// was last seen back up after one.
func (e *engine) link() (up bool, gen int, back time.Time) {
	e.linkM.Lock()
	defer e.linkM.Unlock()
	e.pollLinkLocked()
	return e.linkUp, e.linkGen, e.linkBack
}

func (e *engine) pollLinkLocked() {
	for e.linkCh != nil {
		select {
		case <-e.linkCh:
			e.linkUp, e.linkCh = e.linker.Link()
			e.linkGen++
			if e.linkUp {
				e.linkBack = time.Now()
			}
		default:
			return
		}
	}
}

// waitLink waits until the link is up; ctx's error if it ends first.
func (e *engine) waitLink(ctx context.Context) error {
	for {
		e.linkM.Lock()
		e.pollLinkLocked()
		up, ch := e.linkUp, e.linkCh
		e.linkM.Unlock()
		if up {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchLink wakes every device at each change of the link, so that those
// in flight stop concluding while it is down and start their windows
// again once it is back.
func (e *engine) watchLink(ctx context.Context) {
	seen := -1
	for {
		e.linkM.Lock()
		e.pollLinkLocked()
		up, gen, ch := e.linkUp, e.linkGen, e.linkCh
		e.linkM.Unlock()
		if gen != seen {
			if seen >= 0 {
				if up {
					e.log.Info("the link to the devices is back: devices in flight are watched again")
				} else {
					e.log.Warn("the link to the devices is down: the rollout waits for it")
				}
			}
			seen = gen
			for _, d := range e.devs {
				select {
				case d.notify <- struct{}{}:
				default:
				}
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// tally counts a device's verdict against the failure budgets, and stops
// the rollout once one is exceeded (a canary: at its first failure).
func (e *engine) tally(d *dev, res upload.Result) {
	if !failed(res.Outcome) || res.Outcome == upload.OutcomeNotStarted || res.Outcome == upload.OutcomeCancelled {
		return
	}
	e.gateM.Lock()
	defer e.gateM.Unlock()
	e.waveFail[d.wave]++
	e.allFail++
	if e.stop != "" {
		return
	}
	if d.canary {
		e.setStopLocked(fmt.Sprintf("the canary %s ended %s", res.Device, res.OutcomeText()))
		return
	}
	e.setStopLocked(e.cfg.Plan.over(e.wavePos[d.wave], e.nWaves, e.waveFail[d.wave], e.waveSize[d.wave], e.allFail, e.total))
}

// setStopLocked stops the rollout for reason ("" = not) and wakes what
// waits for the stop; under gateM, stop still "".
func (e *engine) setStopLocked(reason string) {
	if reason == "" {
		return
	}
	e.stop = reason
	close(e.stopCh)
}

// stopped is the gate that stopped the rollout so far, "" none.
func (e *engine) stopped() string {
	e.gateM.Lock()
	defer e.gateM.Unlock()
	return e.stop
}

// stoppedWords says why the rollout stopped, for the devices it left:
// "the rollout stopped: wave 2 of 3: …", "the rollout stopped: 2 of its 3
// devices failed so far, …".
func stoppedWords(reason string) string {
	return "the rollout stopped: " + strings.TrimPrefix(reason, "the rollout: ")
}

// stopWith stops the rollout for reason, unless a gate already did.
func (e *engine) stopWith(reason string) {
	e.gateM.Lock()
	defer e.gateM.Unlock()
	if e.stop == "" {
		e.setStopLocked(reason)
	}
}

// onReport receives the family's reports, from its goroutine.
func (e *engine) onReport(r Report) {
	d := e.byTop[r.Topic]
	if d == nil {
		return
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	r.Words = oneline.Clean(e.redact(r.Words), 200)
	d.mu.Lock()
	d.reports = append(d.reports, r)
	switch r.Kind {
	case ReportOffline:
		d.online = ptr(false)
	case ReportOnline, ReportBooted, ReportStarted, ReportFailed, ReportSuccess:
		d.online = ptr(true)
	case ReportStatus:
		if r.Facts.Version != "" {
			d.online = ptr(true)
		}
	}
	commanded := d.phase == PhaseCommanded
	d.mu.Unlock()
	if commanded {
		// Keep what a resumed run judges with: the reports since the command.
		rr := ReportRecord{Kind: r.Kind, At: r.At, Words: r.Words, Source: r.Source, Class: r.Class}
		if r.Kind == ReportBooted || r.Kind == ReportStatus {
			rr.Facts = safeFacts(&r.Facts)
		}
		// Written within a second, with the other reports of the burst;
		// a crash loses at most those, and --resume reads the device.
		e.cfg.State.updateSoon(func(rec *Record) {
			dr := &rec.Devices[d.idx]
			dr.Reports = trimReports(append(dr.Reports, rr))
		})
	}
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// fetcher is the commanded device a fetch can be told to be of: by the
// MAC its updater sends, else by its address as it told it; nil when
// none.
func (e *engine) fetcher(f fileserve.Fetch) *dev {
	if f.Method == "HEAD" || f.Open {
		return nil
	}
	host, _, _ := net.SplitHostPort(f.Remote)
	for _, d := range e.devs {
		d.mu.Lock()
		b, ok := d.before, d.phase == PhaseCommanded
		d.mu.Unlock()
		if !ok || b == nil {
			continue
		}
		if f.MAC != "" && strings.EqualFold(b.MAC, f.MAC) || f.MAC == "" && host != "" && b.IP == host {
			return d
		}
	}
	return nil
}

// onStart shows the start of a device's fetch, unless a fetch is already
// shown under way (the device said it took the command: its word came
// first).
func (e *engine) onStart(f fileserve.Fetch) {
	d := e.fetcher(f)
	if d == nil {
		return
	}
	d.mu.Lock()
	tries := len(d.commands)
	d.mu.Unlock()
	e.emitWhen(d, upload.Event{Phase: upload.PhaseUploading, Total: f.Length, Try: tries, Message: "fetching " + f.Name}, true,
		func(d *dev) bool { return d.shown != upload.PhaseUploading || !d.shownFetch })
}

// onFetch shows the end of a device's fetch as byte progress, and keeps
// its last fetch of the image for the result's bytes and rate (whether
// shown or not).
func (e *engine) onFetch(f fileserve.Fetch) {
	d := e.fetcher(f)
	if d == nil {
		return
	}
	d.mu.Lock()
	tries := len(d.commands)
	if (f.Name == e.img.Name || f.Name == e.img.Name+".gz") && (f.Status == 200 || f.Status == 206) {
		d.fetched = &f
	}
	if len(d.fetches) < maxFetchesKept {
		d.fetches = append(d.fetches, f)
	}
	d.mu.Unlock()
	if f.Name == "" {
		return // a name not served: no progress, only the record
	}
	msg := "fetched " + f.Name
	if f.Bytes < f.Length {
		msg = "fetch of " + f.Name + " cut"
	}
	// Shown only while the fetch is the device's latest news: the server
	// tells the end once its last bytes are out, and the device's word of
	// what came next (restarting, failed) may be first.
	e.emitWhen(d, upload.Event{Phase: upload.PhaseUploading, Done: f.Bytes, Total: f.Length, Try: tries, Message: msg}, false,
		func(d *dev) bool { return d.shown == upload.PhaseUploading })
}

func (e *engine) emit(d *dev, ev upload.Event) { e.emitWhen(d, ev, false, nil) }

// emitPhase shows where the verdict says the device stands, once per
// change: a fetch the file server already showed is not announced again
// (the device's word of it may come after the fetch), and the command and
// a retry are shown where they are made, once each.
func (e *engine) emitPhase(d *dev, p upload.Phase, tries int) {
	switch p {
	case "", upload.PhaseConnecting, upload.PhaseRetrying, upload.PhaseChecking:
		return
	}
	e.emitWhen(d, upload.Event{Phase: p, Try: tries, Message: phaseWords(p)}, p == upload.PhaseUploading,
		func(d *dev) bool { return d.shown != p })
}

// emitWhen sends ev when cond (nil: always), told what was shown last, says
// so, at once, so that concurrent senders (the file server's, the
// device's watch) see each other's events; fetching: ev announces a fetch
// under way.
func (e *engine) emitWhen(d *dev, ev upload.Event, fetching bool, cond func(*dev) bool) {
	e.emitM.Lock()
	defer e.emitM.Unlock()
	if cond != nil && !cond(d) {
		return
	}
	d.shown, d.shownFetch = ev.Phase, fetching
	if e.cfg.OnEvent == nil {
		return
	}
	ev.Time = time.Now()
	ev.Target = d.d.label()
	fe := upload.FleetEvent{Event: ev, Addr: d.d.Topic, Key: d.d.Topic, Protocol: e.proto}
	if ev.Phase == upload.PhaseDone {
		fe.Result = ptr(d.res)
	}
	e.cfg.OnEvent(fe)
}

func (e *engine) emitDone(d *dev) {
	e.emit(d, upload.Event{Phase: upload.PhaseDone, Try: d.res.Tries, Message: d.res.OutcomeText()})
}

// redact hides the URL token in a device's words: Tasmota repeats the
// OtaUrl it was told ("Version 14.2.0 from http://…/<token>/fw.bin"), and
// the token is all that guards the image (which holds Wi-Fi credentials)
// while the rollout serves it.
func (e *engine) redact(words string) string {
	if e.token == "" {
		return words
	}
	return strings.ReplaceAll(words, e.token, "…")
}

// redactURL hides the token for logs.
func redactURL(u string) string {
	i := strings.LastIndex(u, "/")
	j := strings.LastIndex(u[:max(i, 0)], "/")
	if i <= 0 || j < 0 {
		return u
	}
	return u[:j+1] + "…" + u[i:]
}
