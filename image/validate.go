package image

import (
	"errors"
	"fmt"
)

func (r *Report) addError(code, hint, format string, args ...any) {
	r.Errors = append(r.Errors, Finding{Severity: SevError, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (r *Report) addWarning(code, hint, format string, args ...any) {
	r.Warnings = append(r.Warnings, Finding{Severity: SevWarning, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint})
}

// Validate parses data and applies the policy. Errors mean the upload must
// be refused (the device would reject or mis-boot the image); warnings are
// worth telling the user but allow it. Every finding has a stable Code; see
// the Code* constants. Validate never panics.
func Validate(data []byte, p Policy) *Report {
	img, err := Parse(data)
	r := &Report{Image: img}
	var fe *FileError
	errors.As(err, &fe)
	if e := img.esp8266Image(); e != nil || img.Kind == KindGzip && fe == nil {
		validateESP8266(r, img, fe, p)
		return r
	}
	if fe != nil {
		switch fe.Code {
		case CodeNotApp, CodeTruncated, CodeBadHeader, CodeBadSegment:
			r.addError(fe.Code, fe.Hint, "%s", fe.Reason)
			if fe.Code != CodeNotApp && img.Kind == KindApp && img.Size >= headerLen {
				checkChip(r, img, p)
			}
			return r
		}
	}
	h := &img.Header
	if !img.ChecksumOK {
		r.addError(CodeChecksumMismatch, "the file is corrupted; download or build it again",
			"checksum mismatch: stored 0x%02x at offset 0x%x, computed 0x%02x", img.Checksum, img.ChecksumOffset, img.ComputedChecksum)
	}
	if h.HashAppended && !img.DigestOK {
		r.addError(CodeDigestMismatch, "the file is corrupted; download or build it again",
			"appended SHA-256 digest does not match the image (stored %x…, computed %x…)", img.Digest[:8], img.SHA256[:8])
	}
	if !h.HashAppended {
		r.addWarning(CodeNoDigest, "build with the default elf2image settings (without --dont-append-digest) so corruption is caught",
			"no SHA-256 digest appended (hash_appended = 0); only the 8-bit checksum protects the image")
	}
	checkChip(r, img, p)
	checkSlot(r, img, p)
	if img.App == nil {
		r.addError(CodeNoAppDesc, "build with ESP-IDF ≥ 3.3, Arduino-ESP32 or PlatformIO so the image carries esp_app_desc_t",
			"no application description (magic 0xABCD5432) at offset 0x20; ESP-IDF devices refuse such an image")
	} else {
		a := img.App
		if p.DeviceProject != "" && a.ProjectName != p.DeviceProject {
			r.addWarning(CodeProjectMismatch, "check that this firmware is meant for this device",
				"project name %q differs from the device's %q", a.ProjectName, p.DeviceProject)
		}
		if p.DeviceVersion != "" && a.Version == p.DeviceVersion {
			r.addWarning(CodeSameVersion, "bump the version if this is a new build",
				"the device already runs version %q", a.Version)
		}
	}
	for _, i := range img.Misaligned {
		s := img.Segments[i]
		msg := "mapped segment %d (load 0x%08x) sits at file offset 0x%x: offset and address differ modulo the %d KB MMU page; the bootloader refuses it"
		if img.MMUPageSizeCertain {
			r.addError(CodeSegmentMisaligned, "rebuild the image with esptool elf2image (it inserts padding segments)",
				msg, i, s.Load, s.DataOffset, img.MMUPageSize/1024)
		} else {
			r.addWarning(CodeSegmentMisaligned, "check the MMU page size configured for the device",
				"mapped segment %d (load 0x%08x) at file offset 0x%x is not aligned to the %d KB MMU page assumed for this flash size",
				i, s.Load, s.DataOffset, img.MMUPageSize/1024)
		}
	}
	checkSignature(r, img, p)
	if img.Trailing > 0 && !img.TrailingPadding {
		r.addWarning(CodeTrailingData, "give the image exactly as the build wrote it",
			"%d bytes of unexpected data after the image end at offset 0x%x", img.Trailing, img.Signature.End)
	}
	if p.ChipRevSet {
		if p.ChipRev < h.MinRevFull {
			r.addError(CodeChipRevTooLow, "build with a lower minimum chip revision (CONFIG_<CHIP>_REV_MIN)",
				"image needs chip revision ≥ %s, the device is %s", RevString(h.MinRevFull), RevString(p.ChipRev))
		}
		if h.MaxRevSet() && p.ChipRev > h.MaxRevFull {
			r.addWarning(CodeChipRevAboveMax, "rebuild with a newer ESP-IDF that supports this chip revision",
				"image supports chip revisions up to %s, the device is %s; it boots only if the revision check is disabled in eFuse",
				RevString(h.MaxRevFull), RevString(p.ChipRev))
		}
	}
	return r
}

// checkSlot: the whole file is written to the slot.
func checkSlot(r *Report, img *Image, p Policy) {
	if p.SlotSize <= 0 {
		return
	}
	size := int64(img.Size)
	switch {
	case size > p.SlotSize:
		r.addError(CodeTooLarge, "shrink the firmware or use a partition table with larger OTA slots (flashed over serial)",
			"image is %d bytes but the OTA slot holds %d (%d bytes too many)", size, p.SlotSize, size-p.SlotSize)
	case size*100 > p.SlotSize*95:
		r.addWarning(CodeNearlyFull, "plan for a larger OTA slot before the firmware outgrows it",
			"image fills %.1f%% of the %d-byte OTA slot", float64(size)*100/float64(p.SlotSize), p.SlotSize)
	}
}

// validateESP8266 checks an ESP8266 image (or a gzip file): only an intact
// esp8266/Arduino image may go, and only to an ESP8266.
func validateESP8266(r *Report, img *Image, fe *FileError, p Policy) {
	if fe != nil {
		r.addError(fe.Code, fe.Hint, "%s", fe.Reason)
		return
	}
	if p.ChipSet && !p.Chip.IsESP8266() {
		r.addError(CodeChipFamilyMismatch, fmt.Sprintf("build the firmware for %s; this image is an esp8266/Arduino sketch", p.Chip.DisplayName()),
			"image is built for ESP8266, the device is %s", p.Chip.DisplayName())
	}
	checkSlot(r, img, p)
	e := img.esp8266Image()
	if e == nil {
		return
	}
	if e.Trailing > 0 && !e.TrailingPadding {
		r.addWarning(CodeTrailingData, "give the image exactly as the build wrote it",
			"%d bytes of unexpected data after the image end at offset 0x%x", e.Trailing, max(e.Len, e.Signature.End))
	}
}

func checkChip(r *Report, img *Image, p Policy) {
	c := img.Header.ChipID
	if p.ChipSet && p.Chip.IsESP8266() {
		// Not --force-able: an ESP8266 has no rollback, so a wrong image
		// there needs a serial reflash.
		r.addError(CodeChipFamilyMismatch, "build the sketch for ESP8266 with the esp8266/Arduino core; an ESP8266 has no rollback, so a wrong image needs a serial reflash",
			"image is built for %s, the device is an ESP8266", c.DisplayName())
		return
	}
	if p.ChipSet && c != p.Chip {
		r.addError(CodeChipMismatch, fmt.Sprintf("build the firmware for %s (PlatformIO board / idf.py set-target %s)", p.Chip.DisplayName(), p.Chip),
			"image is built for %s, the device is %s", c.DisplayName(), p.Chip.DisplayName())
		return
	}
	switch {
	case c.Known():
	case c.PreRelease():
		r.addWarning(CodePreReleaseChip, "rebuild for the production chip",
			"image is built for a %s", c)
	default:
		r.addWarning(CodeUnknownChip, "make sure the image is for your chip",
			"image chip id %d is not a known ESP32-family chip", uint16(c))
	}
}

func checkSignature(r *Report, img *Image, p Policy) {
	sig := &img.Signature
	switch sig.Scheme {
	case SigNone:
		if p.ExpectSigned {
			r.addWarning(CodeUnsigned, "sign it (espsecure sign-data) if the device has secure boot or signed-app verification enabled",
				"the image is not signed")
		}
	case SigV2:
		if len(sig.Blocks) == 0 {
			r.addWarning(CodeBadSignature, "sign the image again",
				"Secure Boot v2 signature sector at 0x%x holds no valid signature block", sig.Offset)
			return
		}
		for i, b := range sig.Blocks {
			if b.DigestOK {
				continue
			}
			msg := "Secure Boot v2 signature block %d (%s) was made for a different image (digest mismatch)"
			hint := "sign this exact image again"
			if p.ExpectSigned {
				r.addError(CodeSignatureMismatch, hint, msg, i, b.Scheme)
			} else {
				r.addWarning(CodeSignatureMismatch, hint, msg, i, b.Scheme)
			}
		}
	}
}
