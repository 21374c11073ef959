package image

import (
	"bytes"
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
