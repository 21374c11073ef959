package image

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestBuildEveryChip(t *testing.T) {
	for _, c := range Chips() {
		for _, size := range []int{0, 200_000, 1 << 20, 2<<20 - 7} {
			for _, nd := range []bool{false, true} {
				o := BuildOptions{Chip: c, Project: "proj-" + c.String(), Version: "2.3.4", Size: size, Seed: 7, NoDigest: nd,
					Built: time.Date(2025, time.March, 5, 9, 8, 7, 0, time.UTC), SecureVersion: 3}
				b, err := Build(o)
				if err != nil {
					t.Fatalf("%s size %d: %v", c, size, err)
				}
				if size > 0 && len(b) != (size+15)&^15 {
					t.Errorf("%s: len %d, want %d", c, len(b), (size+15)&^15)
				}
				r := Validate(b, Policy{Chip: c, ChipSet: true, SlotSize: 16 << 20})
				if !r.OK() {
					t.Fatalf("%s size %d nodigest %v: errors %+v", c, size, nd, r.Errors)
				}
				img := r.Image
				if img.Kind != KindApp || img.Header.ChipID != c || img.App == nil {
					t.Fatalf("%s: kind %s chip %s", c, img.Kind, img.Header.ChipID)
				}
				if got, ok := ChipByName(img.Header.ChipID.String()); !ok || got != c {
					t.Errorf("chip name round trip %s -> %v %v", c, got, ok)
				}
				if img.App.ProjectName != o.Project || img.App.Version != "2.3.4" || img.App.IDFVer != "v5.2.2" ||
					img.App.Date != "Mar  5 2025" || img.App.Time != "09:08:07" || img.App.SecureVersion != 3 {
					t.Errorf("%s: app desc %+v", c, img.App)
				}
				if r.Has(CodeNoDigest) != nd {
					t.Errorf("%s: no_digest warning = %v with NoDigest %v", c, r.Has(CodeNoDigest), nd)
				}
				if want := map[bool]int{false: 0, true: 1}[nd]; len(r.Warnings) != want {
					t.Errorf("%s: warnings %+v", c, r.Warnings)
				}
				if img.Header.WPPin != 0xEE || img.Header.FlashMode != 2 || img.Header.FlashSizeFreq>>4 != 1 {
					t.Errorf("%s: header %+v", c, img.Header)
				}
			}
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	a, _ := Build(BuildOptions{Chip: ChipESP32S3, Seed: 1, Size: 300000})
	b, _ := Build(BuildOptions{Chip: ChipESP32S3, Seed: 1, Size: 300000})
	c, _ := Build(BuildOptions{Chip: ChipESP32S3, Seed: 2, Size: 300000})
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("Build is not deterministic per seed")
	}
}

// TestBuildSizeError: a size Build cannot make is a *SizeError carrying the
// bound, so callers need not parse the message.
func TestBuildSizeError(t *testing.T) {
	_, err := Build(BuildOptions{Chip: ChipESP32S3, Size: 100})
	var se *SizeError
	if !errors.As(err, &se) || se.Size != 100 || se.Min <= 100 || se.Max != 0 || se.Chip != "ESP32-S3" {
		t.Fatalf("Build(size 100) = %v (%+v), want a SizeError with Min", err, se)
	}
	if _, err := Build(BuildOptions{Chip: ChipESP32S3, Size: se.Min}); err != nil {
		t.Errorf("Build(size Min=%d) = %v, want an image", se.Min, err)
	}
	if _, err := Build(BuildOptions{Chip: ChipESP32S3, Size: se.Min - 16}); !errors.As(err, &se) {
		t.Errorf("Build(size Min-16) = %v, want a SizeError", err)
	}
	_, err = Build(BuildOptions{Chip: ChipESP32S3, Size: MaxBuildSize + 1})
	if !errors.As(err, &se) || se.Max != MaxBuildSize || se.Min != 0 {
		t.Fatalf("Build(size > max) = %v, want a SizeError with Max", err)
	}
}
