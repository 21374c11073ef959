package rollout

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"

	"github.com/ots-ota/ots-ota/upload"
)

// Meta is what a new rollout's state file records before anything is
// published: enough for --resume to serve the same files to the same
// devices. It never holds a secret.
type Meta struct {
	Family    string
	Firmware  string // the image's path, absolute
	SHA256    string // lower-case hex of the image
	Size      int64
	Expect    string
	Plan      Plan
	ServeAddr string // --serve-addr as given
	PublicURL string // --public-url base, "" = http://<bound address>
	Broker    string // the broker URL; any userinfo is dropped
	ClientID  string // the MQTT client id (persistent session)
	Devices   []Device
	// Settings are the run's bounds, kept so that --resume goes on with
	// them; nil in Record.Meta: a file written before they were kept.
	Settings *Settings
	// Store is where the image is published instead of the built-in file
	// server (nil: the built-in one), as --resume must find it again.
	Store *StoreMeta
	// FamilyOptions are the family's own settings as their flags spell
	// them (e.g. "check_wait": "10m"), kept for --resume. Never a secret.
	FamilyOptions map[string]string
}

// StoreMeta says where a Store is, without its credentials.
type StoreMeta struct {
	URL       string // Store.String(): "s3://bucket/prefix"
	Endpoint  string // http(s)://host:port; userinfo dropped
	Region    string
	PublicURL string // the devices' base for the store's prefix
}

// Settings are a rollout's bounds beyond its Plan, as Config takes them:
// a --resume without them keeps the user's bandwidth bound and verdict
// rule instead of falling back to the defaults.
type Settings struct {
	MaxFetches    int
	Retries       int
	Timeout       time.Duration // 0 = from the image size
	VerifyTimeout time.Duration // Config.RebootWindow
	Stability     time.Duration
}

// SettingsRecord is Settings as flags spell them.
type SettingsRecord struct {
	MaxFetches      int    `json:"max_fetches"`
	Retries         int    `json:"retries"`
	Timeout         string `json:"timeout,omitempty"`
	VerifyTimeout   string `json:"verify_timeout"`
	StabilityWindow string `json:"stability_window"`
}

// The phases of a device in the state file.
const (
	PhasePending   = "pending"   // not commanded (maybe read, or stopped by a gate)
	PhaseCommanded = "commanded" // commanded at least once, no final verdict yet: only observed from now on
	PhaseDone      = "done"      // its result is final
)

// Record is the state file's content (JSON, see docs/rollout.md).
type Record struct {
	Format   int        `json:"format"`
	ID       string     `json:"id"`
	Created  time.Time  `json:"created"`
	Updated  time.Time  `json:"updated"`
	Finished bool       `json:"finished"` // the run ended on its own (every device done, or a gate stopped it)
	Family   string     `json:"family"`
	Firmware FileRecord `json:"firmware"`
	Expect   string     `json:"expect_version"`
	Plan     PlanRecord `json:"plan"`
	// Settings: nil in a file written before they were kept.
	Settings *SettingsRecord `json:"settings,omitempty"`
	Serve    ServeRecord     `json:"serve"`
	Broker   string          `json:"broker"`
	ClientID string          `json:"client_id"`
	// PauseUntil: a wave pause in progress ends then (zero: none).
	PauseUntil time.Time      `json:"pause_until,omitzero"`
	Stopped    string         `json:"stopped,omitempty"` // the gate that stopped the rollout
	Waves      []WaveRecord   `json:"waves,omitempty"`
	Devices    []DeviceRecord `json:"devices"`
	// Store: where the image was published instead of the built-in file
	// server (nil: the built-in one, or nothing published yet).
	Store *StoreRecord `json:"store,omitempty"`
	// FamilyOptions: Meta.FamilyOptions.
	FamilyOptions map[string]string `json:"family_options,omitempty"`
	// Announcements are the files written for devices to poll (Announcer
	// families), in the order first written.
	Announcements []AnnouncementRecord `json:"announcements,omitempty"`
}

// StoreRecord is where a rollout published its image in a Store: a
// --resume with the same store and image reuses the URLs, uploading
// nothing.
type StoreRecord struct {
	Name      string `json:"name"` // Store.String(): never a secret
	Endpoint  string `json:"endpoint,omitempty"`
	Region    string `json:"region,omitempty"`
	PublicURL string `json:"public_url,omitempty"`
	// SHA256 and URLs: the image published and each served name's device
	// URL; empty until the image is published.
	SHA256 string            `json:"sha256,omitempty"`
	URLs   map[string]string `json:"urls,omitempty"`
}

// The states of an announcement.
const (
	AnnouncementWritten     = "written"      // the rollout's content is there
	AnnouncementPutBack     = "put_back"     // a gate stopped the rollout: the previous content is back
	AnnouncementRemoved     = "removed"      // a gate stopped the rollout: the name held nothing before, and is gone again
	AnnouncementNotReverted = "not_reverted" // the put back (or removal) failed: the rollout's content may still be there
)

// AnnouncementRecord is one announcement file the rollout wrote.
type AnnouncementRecord struct {
	Name string `json:"name"`
	URL  string `json:"url,omitempty"` // where devices poll it
	// Existed says the name held Previous before the rollout first wrote
	// it (the built-in file server: never).
	Existed  bool   `json:"existed"`
	Previous []byte `json:"previous,omitempty"`
	// Body is what the rollout last wrote (a --resume serves it again
	// from the built-in file server).
	Body  []byte `json:"body,omitempty"`
	State string `json:"state"`
	// Error: why the put back failed (State not_reverted).
	Error string `json:"error,omitempty"`
}

// FileRecord identifies the image.
type FileRecord struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// PlanRecord is Plan as flags spell it.
type PlanRecord struct {
	Canary      int    `json:"canary"`
	Waves       string `json:"waves"`
	MaxFailures string `json:"max_failures,omitempty"`
	WavePause   string `json:"wave_pause,omitempty"`
}

// ServeRecord is where the image is published. Token is the capability
// path the devices were told (not a user secret): --resume serves the
// same URLs.
type ServeRecord struct {
	Token     string `json:"token"`
	Addr      string `json:"addr"`                 // as given
	Bound     string `json:"bound,omitempty"`      // the address last bound
	PublicURL string `json:"public_url,omitempty"` // base
}

// WaveRecord is how far a wave went.
type WaveRecord struct {
	Index  int    `json:"index"`
	Canary bool   `json:"canary,omitempty"`
	State  string `json:"state"` // started|passed|stopped
	Reason string `json:"reason,omitempty"`
}

// DeviceRecord is one device's progress.
type DeviceRecord struct {
	Name      string `json:"name"`
	Topic     string `json:"topic"`
	FullTopic string `json:"full_topic,omitempty"`
	Manifest  string `json:"manifest,omitempty"` // Device.Manifest
	Entity    string `json:"entity,omitempty"`   // Device.Entity
	Phase     string `json:"phase"`              // pending|commanded|done
	Wave      int    `json:"wave"`
	Canary    bool   `json:"canary,omitempty"`
	// Commands are when each command was sent (len = commands sent).
	Commands []time.Time `json:"commands,omitempty"`
	// Before is the pre-flight read (nil: not read, or unanswered);
	// its OtaURL is dropped when it holds userinfo.
	Before   *Facts    `json:"before,omitempty"`
	BeforeAt time.Time `json:"before_at,omitzero"`
	// OtaURLWithheld: the device told an OtaURL with a password in it,
	// which the file does not keep (a resumed run cannot put it back).
	OtaURLWithheld bool `json:"ota_url_withheld,omitempty"`
	// Reports are what the device told since its first command (the
	// latest ones), so that a resumed run judges with them.
	Reports []ReportRecord `json:"reports,omitempty"`
	Result  *upload.Result `json:"result,omitempty"`
	// RestorePending: done, but the run was interrupted before its OTA
	// URL was put back; a resumed run puts it back.
	RestorePending bool `json:"restore_pending,omitempty"`
}

// device is the Device the record holds.
func (d DeviceRecord) device() Device {
	return Device{Name: d.Name, Topic: d.Topic, FullTopic: d.FullTopic, Manifest: d.Manifest, Entity: d.Entity}
}

// ReportRecord is a Report in the state file.
type ReportRecord struct {
	Kind   ReportKind   `json:"kind"`
	At     time.Time    `json:"at"`
	Words  string       `json:"words,omitempty"`
	Facts  *Facts       `json:"facts,omitempty"`
	Source string       `json:"source,omitempty"`
	Class  upload.Class `json:"class,omitempty"`
}

// stateFormat is the state file's format version.
const stateFormat = 1

// maxReports bounds the reports kept per device in the file.
const maxReports = 64

// State is an open, locked rollout state file. Its methods are safe for
// concurrent use.
type State struct {
	dir     string // dir/rollouts
	path    string
	dirLock *flock.Flock
	lock    *flock.Flock

	mu  sync.Mutex
	rec Record
	// Changes that may wait (reports) mark the record dirty; a timer
	// writes it within flushDelay, and any write (update) or Close takes
	// them along. writes counts the files written (for tests).
	dirty  bool
	timer  *time.Timer
	closed bool
	writes int
}

// flushDelay bounds how long a change made with updateSoon waits for its
// write: reports come in bursts, and each write is the whole file, synced.
const flushDelay = time.Second

func rolloutsDir(dir string) string { return filepath.Join(dir, "rollouts") }

// CreateState starts a new rollout's state file under dir/rollouts and
// locks it. A rollout already running on dir (create or resume) makes it
// fail with one line naming it.
func CreateState(dir string, meta Meta) (*State, error) {
	rd := rolloutsDir(dir)
	if err := os.MkdirAll(rd, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the state directory %s: %v", rd, unwrapPath(err))
	}
	s := &State{dir: rd}
	if err := s.lockDir(); err != nil {
		return nil, err
	}
	fw := meta.Firmware
	if abs, err := filepath.Abs(fw); err == nil {
		fw = abs
	}
	now := time.Now().UTC()
	rec := Record{
		Format:        stateFormat,
		Created:       now,
		Family:        meta.Family,
		Firmware:      FileRecord{Path: fw, SHA256: meta.SHA256, Size: meta.Size},
		Expect:        meta.Expect,
		Plan:          planRecord(meta.Plan),
		Settings:      settingsRecord(meta.Settings),
		Serve:         ServeRecord{Addr: meta.ServeAddr, PublicURL: stripUserinfo(meta.PublicURL)},
		Broker:        stripUserinfo(meta.Broker),
		ClientID:      meta.ClientID,
		FamilyOptions: maps.Clone(meta.FamilyOptions),
	}
	if sm := meta.Store; sm != nil {
		rec.Store = &StoreRecord{Name: sm.URL, Endpoint: stripUserinfo(sm.Endpoint), Region: sm.Region, PublicURL: stripUserinfo(sm.PublicURL)}
	}
	split := meta.Plan.Split(len(meta.Devices))
	for w, idx := range split {
		for _, i := range idx {
			d := meta.Devices[i]
			rec.Devices = append(rec.Devices, DeviceRecord{Name: d.Name, Topic: d.Topic, FullTopic: d.FullTopic,
				Manifest: d.Manifest, Entity: d.Entity, Phase: PhasePending, Wave: w, Canary: meta.Plan.Canary > 0 && w == 0})
		}
	}
	// An id that sorts by time, made unique by the exclusive create.
	for range 10 {
		rec.ID = now.Format("20060102-150405") + "-" + randHex(2)
		s.path = filepath.Join(rd, rec.ID+".json")
		f, err := os.OpenFile(s.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			s.unlockDir()
			return nil, fmt.Errorf("cannot create the state file %s: %v", s.path, unwrapPath(err))
		}
		f.Close()
		break
	}
	s.lock = flock.New(s.path + ".lock")
	if ok, err := s.lock.TryLock(); err != nil || !ok {
		s.unlockDir()
		return nil, fmt.Errorf("cannot lock the state file %s", s.path)
	}
	s.rec = rec
	if err := s.saveLocked(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// OpenState opens and locks the rollout id under dir ("" = the latest
// unfinished one), for --resume. A finished rollout is not reopened.
func OpenState(dir, id string) (*State, error) {
	rd := rolloutsDir(dir)
	if id == "" {
		l, err := Latest(dir)
		if err != nil {
			return nil, err
		}
		id = l
	}
	if !validID(id) {
		return nil, fmt.Errorf("%q is not a rollout id (see `ots-ota rollout status`)", id)
	}
	s := &State{dir: rd, path: filepath.Join(rd, id+".json")}
	if _, err := os.Stat(s.path); err != nil {
		return nil, fmt.Errorf("no rollout %s under %s", id, rd)
	}
	if err := s.lockDir(); err != nil {
		return nil, err
	}
	s.lock = flock.New(s.path + ".lock")
	if ok, err := s.lock.TryLock(); err != nil || !ok {
		s.unlockDir()
		return nil, fmt.Errorf("rollout %s is running in another process", id)
	}
	rec, err := readRecord(s.path)
	if err != nil {
		s.Close()
		return nil, err
	}
	if rec.Finished {
		s.Close()
		return nil, fmt.Errorf("rollout %s has finished; start a new rollout to go on", id)
	}
	s.rec = rec
	return s, nil
}

// lockDir takes the directory's lock: one rollout at a time per state
// directory, whichever devices it drives.
func (s *State) lockDir() error {
	s.dirLock = flock.New(filepath.Join(s.dir, "active.lock"))
	ok, err := s.dirLock.TryLock()
	if err != nil {
		return fmt.Errorf("cannot lock the state directory %s: %v", s.dir, unwrapPath(err))
	}
	if !ok {
		if id := runningID(s.dir); id != "" {
			return fmt.Errorf("rollout %s is running on the state directory %s; wait for it to end (or stop it), or use another --state-dir", id, s.dir)
		}
		return fmt.Errorf("another rollout is running on the state directory %s; wait for it to end (or stop it), or use another --state-dir", s.dir)
	}
	return nil
}

func (s *State) unlockDir() {
	if s.dirLock != nil {
		_ = s.dirLock.Unlock()
		s.dirLock = nil
	}
}

// runningID finds the rollout whose file lock is held.
func runningID(rd string) string {
	ents, _ := os.ReadDir(rd)
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		if isLocked(filepath.Join(rd, e.Name())) {
			return id
		}
	}
	return ""
}

// isLocked reports whether another holder has path's lock.
func isLocked(path string) bool {
	l := flock.New(path + ".lock")
	ok, err := l.TryLock()
	if err != nil {
		return false
	}
	if ok {
		_ = l.Unlock()
		return false
	}
	return true
}

// ID is the rollout's id.
func (s *State) ID() string { return s.rec.ID }

// Path is the state file's path.
func (s *State) Path() string { return s.path }

// Record is a copy of what the file holds now.
func (s *State) Record() Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec.clone()
}

// Close writes the changes still waiting and releases the locks (the
// file stays). The error is that of the last write.
func (s *State) Close() error {
	s.mu.Lock()
	var err error
	if s.dirty && !s.closed {
		err = s.saveLocked()
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	if s.lock != nil {
		_ = s.lock.Unlock()
		s.lock = nil
	}
	s.unlockDir()
	return err
}

// Discard closes the state and removes its file: for a rollout that
// ended before any device was commanded (nothing to go on with, and a
// file left "interrupted" would be picked by every bare --resume). The
// record then reads finished.
func (s *State) Discard() error {
	s.mu.Lock()
	s.dirty = false
	s.rec.Finished = true
	s.mu.Unlock()
	s.Close()
	err := os.Remove(s.path)
	_ = os.Remove(s.path + ".lock")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove the state file %s: %v", s.path, unwrapPath(err))
	}
	return nil
}

// Untouched reports whether no device was commanded yet.
func (s *State) Untouched() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.rec.Devices {
		if d.Phase != PhasePending || len(d.Commands) > 0 {
			return false
		}
	}
	return true
}

// update changes the record and writes it, atomically.
func (s *State) update(fn func(*Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.rec)
	return s.saveLocked()
}

// updateOr is update, but when the write fails undo takes the change
// back (under the same lock, so that no other write records it): for a
// change that must be on disk before it happens, or not at all.
func (s *State) updateOr(fn, undo func(*Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.rec)
	err := s.saveLocked()
	if err != nil {
		undo(&s.rec)
	}
	return err
}

// updateSoon changes the record now and writes it within flushDelay,
// with whatever else changed by then: for what a crash may lose (a
// resumed run reads the device again).
func (s *State) updateSoon(fn func(*Record)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(&s.rec)
	if !s.dirty && !s.closed {
		s.dirty = true
		s.timer = time.AfterFunc(flushDelay, s.flushLater)
	}
}

// flushLater is the timer's write; a failed one is tried again later.
func (s *State) flushLater() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty || s.closed {
		return
	}
	if s.saveLocked() != nil {
		s.timer = time.AfterFunc(flushDelay, s.flushLater)
	}
}

// flush writes the changes still waiting, if any.
func (s *State) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty || s.closed {
		return nil
	}
	return s.saveLocked()
}

func (s *State) saveLocked() error {
	s.rec.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(s.rec, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot write the state file: %v", err)
	}
	if err := writeAtomic(s.path, append(b, '\n')); err != nil {
		return err
	}
	s.dirty = false
	s.writes++
	return nil
}

// trimReports keeps at most maxReports, dropping the oldest link reports
// (online/offline: an LWT that flaps) before any that tells of the update
// (started, success, failed, booted, a read).
func trimReports(rs []ReportRecord) []ReportRecord {
	for len(rs) > maxReports {
		i := slices.IndexFunc(rs, func(r ReportRecord) bool { return r.Kind == ReportOnline || r.Kind == ReportOffline })
		if i < 0 {
			i = 0
		}
		rs = slices.Delete(rs, i, i+1)
	}
	return rs
}

// writeAtomic writes a temporary file beside path and renames it over
// path, so a crash leaves the old file or the new one, never half of one.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("cannot write the state file %s: %v", path, unwrapPath(err))
	}
	tmp := f.Name()
	_ = f.Chmod(0o600) // CreateTemp's mode already; Windows ignores it
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot write the state file %s: %v", path, unwrapPath(err))
	}
	return nil
}

func readRecord(path string) (Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Record{}, fmt.Errorf("cannot read the state file %s: %v", path, unwrapPath(err))
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("the state file %s is damaged (%v); move it away to go on", path, err)
	}
	if rec.Format != stateFormat {
		return Record{}, fmt.Errorf("the state file %s has format %d, this ots-ota reads format %d", path, rec.Format, stateFormat)
	}
	return rec, nil
}

func (r Record) clone() Record {
	b, _ := json.Marshal(r)
	var c Record
	_ = json.Unmarshal(b, &c)
	return c
}

// Meta is what the record says of the rollout, as CreateState took it
// (for --resume to build its Config).
func (r Record) Meta() (Meta, error) {
	p, err := r.Plan.plan()
	if err != nil {
		return Meta{}, fmt.Errorf("the state file's plan: %v", err)
	}
	m := Meta{Family: r.Family, Firmware: r.Firmware.Path, SHA256: r.Firmware.SHA256, Size: r.Firmware.Size,
		Expect: r.Expect, Plan: p, ServeAddr: r.Serve.Addr, PublicURL: r.Serve.PublicURL, Broker: r.Broker, ClientID: r.ClientID}
	for _, d := range r.Devices {
		m.Devices = append(m.Devices, d.device())
	}
	if sr := r.Store; sr != nil {
		m.Store = &StoreMeta{URL: sr.Name, Endpoint: sr.Endpoint, Region: sr.Region, PublicURL: sr.PublicURL}
	}
	m.FamilyOptions = maps.Clone(r.FamilyOptions)
	if r.Settings != nil {
		st, err := r.Settings.settings()
		if err != nil {
			return Meta{}, fmt.Errorf("the state file's settings: %v", err)
		}
		m.Settings = &st
	}
	return m, nil
}

// SetSettings records the run's settings (a --resume that changed one
// keeps the change for the next --resume).
func (s *State) SetSettings(st Settings) error {
	return s.update(func(r *Record) { r.Settings = settingsRecord(&st) })
}

func settingsRecord(st *Settings) *SettingsRecord {
	if st == nil {
		return nil
	}
	sr := &SettingsRecord{MaxFetches: st.MaxFetches, Retries: st.Retries,
		VerifyTimeout: st.VerifyTimeout.String(), StabilityWindow: st.Stability.String()}
	if st.Timeout > 0 {
		sr.Timeout = st.Timeout.String()
	}
	return sr
}

func (sr SettingsRecord) settings() (Settings, error) {
	st := Settings{MaxFetches: sr.MaxFetches, Retries: sr.Retries}
	if st.MaxFetches < 1 || st.Retries < 0 {
		return Settings{}, fmt.Errorf("max_fetches %d, retries %d: out of range", sr.MaxFetches, sr.Retries)
	}
	for _, d := range []struct {
		v   string
		out *time.Duration
	}{{sr.Timeout, &st.Timeout}, {sr.VerifyTimeout, &st.VerifyTimeout}, {sr.StabilityWindow, &st.Stability}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v < 0 {
			return Settings{}, fmt.Errorf("duration %q: want one like 30s", d.v)
		}
		*d.out = v
	}
	if st.VerifyTimeout <= 0 {
		return Settings{}, errors.New("verify_timeout: want a positive duration")
	}
	return st, nil
}

func planRecord(p Plan) PlanRecord {
	var steps []string
	for _, s := range p.Waves {
		steps = append(steps, s.String())
	}
	pr := PlanRecord{Canary: p.Canary, Waves: strings.Join(steps, ",")}
	if p.MaxFailures.Set {
		pr.MaxFailures = p.MaxFailures.String()
	}
	if p.WavePause > 0 {
		pr.WavePause = p.WavePause.String()
	}
	return pr
}

func (pr PlanRecord) plan() (Plan, error) {
	w, err := ParseWaves(pr.Waves)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Canary: pr.Canary, Waves: w}
	if p.MaxFailures, err = upload.ParseFailureBudget(pr.MaxFailures); err != nil {
		return Plan{}, err
	}
	if pr.WavePause != "" {
		if p.WavePause, err = time.ParseDuration(pr.WavePause); err != nil {
			return Plan{}, err
		}
	}
	return p, nil
}

// stripUserinfo drops user and password from a URL; a string that does
// not parse as one is kept only when it holds no '@'.
func stripUserinfo(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return ""
		}
		return s
	}
	u.User = nil
	return u.String()
}

// safeFacts is f as the state file may hold it: an OtaUrl with userinfo
// (a password) is dropped.
func safeFacts(f *Facts) *Facts {
	if f == nil {
		return nil
	}
	c := *f
	if c.OtaURL != nil {
		if u, err := url.Parse(*c.OtaURL); err != nil || u.User != nil || strings.Contains(*c.OtaURL, "@") {
			c.OtaURL = nil
		}
	}
	return &c
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validID: what CreateState makes (and nothing that could leave the
// directory).
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Summary is one rollout as `rollout status` lists it.
type Summary struct {
	ID       string
	Path     string
	Created  time.Time
	Updated  time.Time
	Family   string
	Firmware string
	Expect   string
	Finished bool
	Running  bool // a process holds its lock now
	Stopped  string
	Devices  int
	Phases   map[string]int         // pending|commanded|done → count
	Outcomes map[upload.Outcome]int // of the devices with a result
}

// DefaultDir is the state directory: $OTS_OTA_STATE_DIR, else Linux
// $XDG_STATE_HOME/ots-ota or ~/.local/state/ots-ota, macOS
// ~/Library/Application Support/ots-ota, Windows %LocalAppData%\ots-ota.
func DefaultDir() (string, error) {
	if d := os.Getenv("OTS_OTA_STATE_DIR"); d != "" {
		return d, nil
	}
	switch runtime.GOOS {
	case "windows":
		if d := os.Getenv("LocalAppData"); d != "" {
			return filepath.Join(d, "ots-ota"), nil
		}
		return "", errors.New("no state directory: %LocalAppData% is not set; give --state-dir")
	case "darwin", "ios":
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("no state directory: the home directory is unknown; give --state-dir")
		}
		return filepath.Join(home, "Library", "Application Support", "ots-ota"), nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "ots-ota"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("no state directory: $HOME is not set; give --state-dir")
	}
	return filepath.Join(home, ".local", "state", "ots-ota"), nil
}

// List summarises every rollout under dir, newest first. A missing
// directory is an empty list; a damaged file is skipped.
func List(dir string) ([]Summary, error) {
	rd := rolloutsDir(dir)
	ents, err := os.ReadDir(rd)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the state directory %s: %v", rd, unwrapPath(err))
	}
	var out []Summary
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !validID(id) {
			continue
		}
		p := filepath.Join(rd, e.Name())
		rec, err := readRecord(p)
		if err != nil || rec.ID != id {
			continue
		}
		sm := Summary{ID: id, Path: p, Created: rec.Created, Updated: rec.Updated, Family: rec.Family,
			Firmware: rec.Firmware.Path, Expect: rec.Expect, Finished: rec.Finished, Running: isLocked(p),
			Stopped: rec.Stopped, Devices: len(rec.Devices), Phases: map[string]int{}, Outcomes: map[upload.Outcome]int{}}
		for _, d := range rec.Devices {
			sm.Phases[d.Phase]++
			if d.Result != nil {
				sm.Outcomes[d.Result.Outcome]++
			}
		}
		out = append(out, sm)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out, nil
}

// Latest is the id of the newest unfinished rollout under dir.
func Latest(dir string) (string, error) {
	l, err := List(dir)
	if err != nil {
		return "", err
	}
	for _, s := range l {
		if !s.Finished {
			return s.ID, nil
		}
	}
	return "", fmt.Errorf("no unfinished rollout under %s", rolloutsDir(dir))
}

// Read loads one rollout's record without locking it (for status); id ""
// is the newest rollout, finished or not.
func Read(dir, id string) (Record, error) {
	if id == "" {
		l, err := List(dir)
		if err != nil {
			return Record{}, err
		}
		if len(l) == 0 {
			return Record{}, fmt.Errorf("no rollout under %s", rolloutsDir(dir))
		}
		id = l[0].ID
	}
	if !validID(id) {
		return Record{}, fmt.Errorf("%q is not a rollout id (see `ots-ota rollout status`)", id)
	}
	p := filepath.Join(rolloutsDir(dir), id+".json")
	if _, err := os.Stat(p); err != nil {
		return Record{}, fmt.Errorf("no rollout %s under %s", id, rolloutsDir(dir))
	}
	return readRecord(p)
}
