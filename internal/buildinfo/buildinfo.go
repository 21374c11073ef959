// Package buildinfo holds the version stamped in by the release build.
package buildinfo

import "runtime/debug"

// Set by -ldflags "-X github.com/ots-ota/ots-ota/internal/buildinfo.Version=…" at release time.
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// Info is the version triple shown by `ots-ota version`.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Date    string `json:"date"`
	Go      string `json:"go"`
}

// Get returns the stamped values, falling back to what `go install` records,
// so a plain `go install …@v1.2.3` still reports its version.
func Get() Info {
	in := Info{Version: Version, Commit: Commit, Date: Date}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		in.Go = bi.GoVersion
		if in.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.time":
				if in.Date == "" {
					in.Date = s.Value
				}
			}
		}
	}
	if in.Commit == "" {
		in.Commit = "none"
	}
	if in.Date == "" {
		in.Date = "unknown"
	}
	return in
}
