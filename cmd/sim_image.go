package cmd

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/partition"
)

type simImageOptions struct {
	Chip, Project, Version, IDF, Size, Output string
	SecureVersion                             uint32
	NoDigest                                  bool
	Seed                                      int64
}

func newSimImageCmd(a *app) *cobra.Command {
	o := &simImageOptions{}
	c := &cobra.Command{
		Use:   "image -o FILE",
		Short: "Write a valid test firmware image for any chip, project and version",
		Long: `Write an ESP32-family application image that real tools accept (header, segments,
checksum, SHA-256 and app description like ESP-IDF's), for tests and the simulator.
It does not run on hardware: the segments hold deterministic filler.`,
		Example: `  ots-ota sim image --chip esp32s3 --project ots-fw-main --version 1.0.1 --size 1.2M -o fw.bin`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimImage(a, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Chip, "chip", "esp32s3", "target chip")
	f.StringVar(&o.Project, "project", "ots-fw-main", "project name in the app description")
	f.StringVar(&o.Version, "version", "1.0.1", "app version in the app description")
	f.StringVar(&o.IDF, "idf", "v5.2.2", "ESP-IDF version in the app description")
	f.StringVar(&o.Size, "size", "", "file size, e.g. 1.2M or 300K (default: small)")
	f.Uint32Var(&o.SecureVersion, "secure-version", 0, "anti-rollback secure_version")
	f.BoolVar(&o.NoDigest, "no-digest", false, "do not append the SHA-256 (like --dont-append-digest)")
	f.Int64Var(&o.Seed, "seed", 1, "seed for the filler bytes")
	f.StringVarP(&o.Output, "output", "o", "", "file to write (required)")
	_ = c.MarkFlagRequired("output")
	_ = c.MarkFlagFilename("output", "bin")
	completeChips(c)
	return c
}

func runSimImage(a *app, o *simImageOptions) error {
	chip, err := parseChip(o.Chip)
	if err != nil {
		return err
	}
	var size int64
	var data []byte
	if o.Size != "" {
		n, err := approxSize(o.Size)
		if err != nil {
			return usageErrorf("--size: %v", err)
		}
		size = n
	}
	data, err = image.Build(image.BuildOptions{
		Chip: chip, Project: o.Project, Version: o.Version, IDFVer: o.IDF,
		Built: time.Now().UTC().Truncate(time.Second), Size: int(size),
		SecureVersion: o.SecureVersion, NoDigest: o.NoDigest, Seed: o.Seed,
	})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	if err := os.WriteFile(o.Output, data, 0o644); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	if a.opts.JSON {
		return writeJSON(a.io.Out, map[string]any{"file": o.Output, "size": len(data), "chip": chip.String(),
			"project": o.Project, "version": o.Version})
	}
	if !a.opts.Quiet {
		fmt.Fprintf(a.io.ErrOut, "wrote %s: %s %s %s, %d bytes\n", o.Output, chip, o.Project, o.Version, len(data))
	}
	return nil
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
