package cmd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/partition"
	"github.com/ots-ota/ots-ota/sim/wled"
)

type simImageOptions struct {
	Chip, Project, Version, IDF, Size, Output, Date string
	SecureVersion                                   uint32
	NoDigest                                        bool
	Seed                                            int64
	// WLEDRelease adds WLED's release metadata (sim/wled).
	WLEDRelease string

	data []byte // built by validate
	chip image.Chip
}

func newSimImageCmd(a *app) *cobra.Command {
	o := &simImageOptions{}
	c := &cobra.Command{
		Use:   "image -o FILE",
		Short: "Write a valid test firmware image for any chip, project and version",
		Long: `Write an ESP32-family application image that real tools accept (header, segments,
checksum, SHA-256 and app description like ESP-IDF's), for tests and the simulator.
It does not run on hardware: the segments hold deterministic filler.

--chip esp8266 writes an esp8266/Arduino sketch image instead (eboot at 0x0,
the sketch at 0x1000, with elf2bin's CRC); it has no app description.

The same flags give the same bytes: the build date in the app description is
--date, else $SOURCE_DATE_EPOCH, else a fixed date. -o - writes to stdout.`,
		Example: `  ots-ota sim image --chip esp32s3 --project ots-fw-main --version 1.0.1 --size 1.2M -o fw.bin
  ots-ota sim image --date 2026-11-27T12:00:00Z -o - | sha256sum`,
		Args: argsNone,
	}
	c.RunE = run(a, o, runSimImage)
	f := c.Flags()
	f.StringVar(&o.Chip, "chip", "esp32s3", "target chip")
	f.StringVar(&o.Project, "project", "ots-fw-main", "project name in the app description")
	f.StringVar(&o.Version, "version", "1.0.1", "app version in the app description")
	f.StringVar(&o.IDF, "idf", "v5.2.2", "ESP-IDF version in the app description")
	f.StringVar(&o.Size, "size", "", "file size, e.g. 1.2M or 300K (default: small)")
	f.StringVar(&o.Date, "date", "", "build date in the app description: 2026-11-27, 2026-11-27T12:00:00Z (default: $SOURCE_DATE_EPOCH, else fixed)")
	f.Uint32Var(&o.SecureVersion, "secure-version", 0, "anti-rollback secure_version")
	f.BoolVar(&o.NoDigest, "no-digest", false, "do not append the SHA-256 (like --dont-append-digest)")
	f.Int64Var(&o.Seed, "seed", 1, "seed for the filler bytes")
	f.StringVar(&o.WLEDRelease, "wled-release", "", "add WLED's release metadata for this release name (ESP32, ESP8266 …) and --version, so a wled device takes the image without skipValidation")
	f.StringVarP(&o.Output, "output", "o", "", "file to write, - for stdout (required)")
	_ = c.MarkFlagFilename("output", "bin")
	completeChips(c)
	return c
}

// buildDate is --date, else SOURCE_DATE_EPOCH (reproducible-builds.org), else
// the zero time (image.Build's fixed date).
func (o *simImageOptions) buildDate(a *app) (time.Time, error) {
	if o.Date != "" {
		for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
			if t, err := time.Parse(layout, o.Date); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, a.flagError("date", "not a date (use 2026-11-27 or 2026-11-27T12:00:00Z)")
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, usageErrorf("SOURCE_DATE_EPOCH=%s: not a count of seconds since 1970", v)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, nil
}

// descText refuses a string the app description cannot hold as given: empty
// (the image would name no version), longer than its char[32], or with a NUL
// (readers stop there). Build would truncate it silently.
func descText(a *app, flag, s string) error {
	switch {
	case s == "":
		return a.flagError(flag, "cannot be empty")
	case len(s) > image.MaxDescText:
		return a.flagError(flag, "at most %d bytes (the app description's field), not %d", image.MaxDescText, len(s))
	case strings.IndexByte(s, 0) >= 0:
		return a.flagError(flag, "contains a NUL byte")
	}
	return nil
}

func (o *simImageOptions) validate(a *app, _ []string) error {
	chip, err := parseChip(a, o.Chip)
	if err != nil {
		return err
	}
	for _, t := range []struct{ flag, v string }{{"project", o.Project}, {"version", o.Version}, {"idf", o.IDF}} {
		if err := descText(a, t.flag, t.v); err != nil {
			return err
		}
	}
	o.chip = chip
	switch {
	case o.Output == "":
		return usageErrorf("sim image needs -o FILE (or -o - for stdout)")
	case o.Output == "-" && a.opts.JSON:
		return usageErrorf("-o - and --json would both write to stdout: give -o FILE")
	case o.Output == "-" && a.io.OutTTY:
		return usageErrorf("-o -: refusing to write a binary image to a terminal (redirect stdout, or give -o FILE)")
	case o.Output != "-":
		if st, err := os.Stat(filepath.Dir(o.Output)); err != nil || !st.IsDir() {
			return a.flagError("output", "the folder %s does not exist", filepath.Dir(o.Output))
		}
		if st, err := os.Stat(o.Output); err == nil && !st.Mode().IsRegular() {
			return a.flagError("output", "not a regular file (%s): give the path of the image file to write", fileKind(st))
		}
	}
	var size int64
	if o.Size != "" {
		if size, err = approxSize(o.Size); err != nil {
			return a.flagError("size", "not a size (use 1.2M, 300K or 0x100000)")
		}
		if size > image.MaxBuildSize {
			return a.flagError("size", "more than %s, the largest image built", humanBytes(image.MaxBuildSize))
		}
		if size == 0 {
			return a.flagError("size", "an image cannot be empty (leave --size out for a small one)")
		}
	}
	built, err := o.buildDate(a)
	if err != nil {
		return err
	}
	start := time.Now()
	o.data, err = image.Build(image.BuildOptions{
		Chip: chip, Project: o.Project, Version: o.Version, IDFVer: o.IDF,
		Built: built, Size: int(size),
		SecureVersion: o.SecureVersion, NoDigest: o.NoDigest, Seed: o.Seed,
	})
	if err != nil {
		return a.flagError("size", "%s", buildSizeReason(err))
	}
	if o.WLEDRelease != "" {
		if o.data, err = wled.AddMetadata(o.data, o.Version, o.WLEDRelease); err != nil {
			return a.flagError("wled-release", "%s", strings.TrimPrefix(rootCause(err).Error(), "wled metadata: "))
		}
	}
	a.log.Debug("built image", "chip", chip.String(), "bytes", len(o.data), "date", dateOrFixed(built), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// dateOrFixed names the build date for -vv: image.Build's fixed one when zero.
func dateOrFixed(t time.Time) string {
	if t.IsZero() {
		return "fixed"
	}
	return t.Format(time.RFC3339)
}

// buildSizeReason says why image.Build refused a size; the message it goes
// into names the size already.
func buildSizeReason(err error) string {
	var se *image.SizeError
	if errors.As(err, &se) {
		return se.Reason()
	}
	return rootCause(err).Error()
}

func runSimImage(_ context.Context, a *app, o *simImageOptions) error {
	start := time.Now()
	defer func() { a.log.Debug("wrote image", "to", o.Output, "took", time.Since(start).Round(time.Microsecond)) }()
	if o.Output == "-" {
		if _, err := a.io.Out.Write(o.data); err != nil {
			return fmt.Errorf("cannot write the image to stdout: %s", rootCause(err))
		}
	} else if err := os.WriteFile(o.Output, o.data, 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %s", o.Output, rootCause(err))
	}
	if a.opts.JSON {
		a.writeLine(imageLine{lineHead: head("image"), File: o.Output, Size: len(o.data), Chip: o.chip.String(),
			Project: o.Project, Version: o.Version})
		return nil
	}
	if !a.opts.Quiet {
		name := o.Output
		if name == "-" {
			name = "stdout"
		}
		fmt.Fprintf(a.io.ErrOut, "wrote %s: %s %s %s, %d bytes\n", name, o.chip, o.Project, o.Version, len(o.data))
	}
	return nil
}

// imageLine is sim image --json: the image written.
type imageLine struct {
	lineHead
	File    string `json:"file"`
	Size    int    `json:"size"`
	Chip    string `json:"chip"`
	Project string `json:"project"`
	Version string `json:"version"`
}

// approxSize reads a size where fractions round to whole bytes ("1.2M"),
// which suits a test image's length but not a slot size.
func approxSize(s string) (int64, error) {
	n, err := partition.ParseSize(s)
	if err == nil {
		return n, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 || !strings.Contains(s[:i], ".") {
		return 0, err
	}
	f, ferr := strconv.ParseFloat(s[:i], 64)
	unit, uerr := partition.ParseSize("1" + s[i:])
	if ferr != nil || uerr != nil || f < 0 {
		return 0, err
	}
	return int64(math.Round(f * float64(unit))), nil
}
