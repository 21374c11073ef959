package upload

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
)

// TestFactsFromESPEasy: what ESPEasy's /json becomes for the verdict. Its
// Git Build is a version only with --expect-version (the image's own
// version is its app descriptor's, which no ESPEasy build tells); an
// uptime only from "Uptime (ms)"; nothing absent becomes a zero.
func TestFactsFromESPEasy(t *testing.T) {
	ms := func(n int64) *int64 { return &n }
	easy := func(git, built string, up *int64) devinfo.Facts {
		e := &devinfo.ESPEasyJSON{GitBuild: git, BuildTime: built, UptimeMS: up, UptimeMin: ms(5)}
		df := devinfo.Facts{Reachable: true, Protocol: devinfo.Fact{Value: devinfo.ProtoHTTP, Source: devinfo.FromTarget}, ESPEasy: e}
		if git != "" {
			df.Version = devinfo.Fact{Value: git, Source: devinfo.FromJSON}
		}
		if up != nil {
			df.Uptime = devinfo.Fact{Value: "300", Source: devinfo.FromJSON}
		}
		return df
	}
	cases := []struct {
		name       string
		df         devinfo.Facts
		expect     string
		version    string
		source     string
		uptimeKnow bool
	}{
		{"no --expect-version: no version", easy("mega-20241019", "Oct 19 2024 22:36:19", ms(300123)), "", "", "", true},
		{"--expect-version, the Git Build", easy("mega-20241019", "Oct 19 2024 22:36:19", ms(300123)), "mega-20241019", "mega-20241019", "/json", true},
		{"--expect-version, another Git Build", easy("mega-20241101", "Nov  1 2024 08:00:00", ms(300123)), "mega-20241019", "mega-20241101", "/json", true},
		{"--expect-version, the Build Time", easy("(custom)", "Oct  9 2024 22:36:19", nil), "Oct 9 2024 22:36:19", "Oct 9 2024 22:36:19", "/json", false},
		{"no Git Build, Build Time not the one expected", easy("", "Oct  9 2024 22:36:19", nil), "mega-20241019", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := factsFromDevinfo(c.df, protoForm, c.expect)
			if f.Version != c.version || f.VersionSource != c.source || f.UptimeKnown != c.uptimeKnow || !f.Answered {
				t.Fatalf("version %q from %q, uptime known %v, answered %v; want %q from %q, uptime known %v",
					f.Version, f.VersionSource, f.UptimeKnown, f.Answered, c.version, c.source, c.uptimeKnow)
			}
			if f.UptimeKnown && (f.Uptime != 300*time.Second || f.UptimeSource != "/json") {
				t.Fatalf("uptime %v from %q", f.Uptime, f.UptimeSource)
			}
		})
	}
	// Other sources are not touched by --expect-version.
	df := devinfo.Facts{Reachable: true, Version: devinfo.Fact{Value: "1.0.0", Source: devinfo.FromAPIStatus}}
	if f := factsFromDevinfo(df, protoForm, ""); f.Version != "1.0.0" || f.VersionSource != "/api/status" {
		t.Fatalf("/api/status version: %q from %q", f.Version, f.VersionSource)
	}
}

const protoForm Protocol = "form"
