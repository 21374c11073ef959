package rollout

import (
	"time"

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
}

// The phases of a device in the state file.
const (
	PhasePending   = "pending"   // not commanded (maybe read, or stopped by a gate)
	PhaseCommanded = "commanded" // commanded at least once, no final verdict yet: only observed from now on
	PhaseDone      = "done"      // its result is final
)

// Record is the state file's content (JSON, see docs/rollout.md).
type Record struct {
	Format   int         `json:"format"`
	ID       string      `json:"id"`
	Created  time.Time   `json:"created"`
	Updated  time.Time   `json:"updated"`
	Finished bool        `json:"finished"` // the run ended on its own (every device done, or a gate stopped it)
	Family   string      `json:"family"`
	Firmware FileRecord  `json:"firmware"`
	Expect   string      `json:"expect_version"`
	Plan     PlanRecord  `json:"plan"`
	Serve    ServeRecord `json:"serve"`
	Broker   string      `json:"broker"`
	ClientID string      `json:"client_id"`
	// PauseUntil: a wave pause in progress ends then (zero: none).
	PauseUntil time.Time      `json:"pause_until,omitzero"`
	Stopped    string         `json:"stopped,omitempty"` // the gate that stopped the rollout
	Waves      []WaveRecord   `json:"waves,omitempty"`
	Devices    []DeviceRecord `json:"devices"`
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
	Phase     string `json:"phase"` // pending|commanded|done
	Wave      int    `json:"wave"`
	Canary    bool   `json:"canary,omitempty"`
	// Commands are when each command was sent (len = commands sent).
	Commands []time.Time `json:"commands,omitempty"`
	// Before is the pre-flight read (nil: not read, or unanswered);
	// its OtaURL is dropped when it holds userinfo.
	Before   *Facts    `json:"before,omitempty"`
	BeforeAt time.Time `json:"before_at,omitzero"`
	// Reports are what the device told since its first command (the
	// latest ones), so that a resumed run judges with them.
	Reports []ReportRecord `json:"reports,omitempty"`
	Result  *upload.Result `json:"result,omitempty"`
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

// State is an open, locked rollout state file. Its methods are safe for
// concurrent use.
type State struct {
	dir  string
	path string
	rec  Record
}

// CreateState starts a new rollout's state file under dir/rollouts, locked.
func CreateState(dir string, meta Meta) (*State, error) { return nil, nil }

// OpenState opens and locks the rollout id under dir ("" = the latest
// unfinished one), for --resume.
func OpenState(dir, id string) (*State, error) { return nil, nil }

// ID is the rollout's id.
func (s *State) ID() string { return s.rec.ID }

// Path is the state file's path.
func (s *State) Path() string { return s.path }

// Record is a copy of what the file holds now.
func (s *State) Record() Record { return s.rec }

// Close releases the locks.
func (s *State) Close() error { return nil }

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
	Running  bool // another process holds its lock
	Stopped  string
	Devices  int
	Phases   map[string]int         // pending|commanded|done → count
	Outcomes map[upload.Outcome]int // of the devices with a result
}

// DefaultDir is the state directory: $OTS_OTA_STATE_DIR, else the OS's
// per-user state directory + "ots-ota".
func DefaultDir() (string, error) { return "", nil }

// List summarises every rollout under dir, newest first.
func List(dir string) ([]Summary, error) { return nil, nil }

// Latest is the id of the newest unfinished rollout under dir.
func Latest(dir string) (string, error) { return "", nil }

// Read loads one rollout's record without locking it (for status).
func Read(dir, id string) (Record, error) { return Record{}, nil }
