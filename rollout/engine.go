package rollout

import (
	"context"
	"log/slog"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
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
}

// WaveEvent tells a wave's start and end.
type WaveEvent struct {
	Index, Of int
	Canary    bool
	Devices   []string
	State     string // started|passed|stopped
	Reason    string
}

// Run rolls the image out. The error is only for what stops the whole run
// before devices (file server, URL too long, broker); the results hold
// every device, in Config.Devices order (not-started for those a gate
// left).
func Run(ctx context.Context, cfg Config) ([]upload.Result, error) { return nil, nil }
