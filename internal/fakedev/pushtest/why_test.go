package pushtest

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
)

// Issue 13, "Why": false "updated", exit 0.

// A rebuild that keeps the version string rolls back to the old build. The
// device honestly tells the old elf_sha256: that is not the image sent.
func TestWhy_FalseUpdated_SameVersionRollback(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 2, 0)
	before := old("1.0.1", "1.0.1, the build before")
	d := startHTTP(t, fakedev.HTTPConfig{Running: before, OTAStatus: true, After: fakedev.RollsBack,
		CrashAfter: 600 * time.Millisecond, BootTime: 1500 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeRolledBack)
	if b, _ := d.Running(); b != before {
		t.Fatalf("the fake runs %+v, want the build before", b)
	}
}

// A device comes back on the new version string with another build's ELF.
func TestWhy_FalseUpdated_ForeignELF(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, After: fakedev.RunsForeign,
		BootTime: 1500 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	r := rr.result(t, "dev")
	wantOutcome(t, r, upload.OutcomeRolledBack)
	if b, _ := d.Running(); b.Version != "1.0.1" || b.ELF == identity(t, fw).ELF {
		t.Fatalf("the fake runs %+v, want a foreign 1.0.1", b)
	}
}

// --reinstall to a device that never restarts and tells no uptime_s: the
// same identity before and after proves nothing.
func TestWhy_FalseUpdated_ReinstallNeverRestarts(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 3, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: identity(t, fw), OTAStatus: true, Omit: fakedev.FieldUptime,
		After: fakedev.NeverRestarts})
	o := options(t)
	o.Reinstall = true
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, o)
	r := rr.result(t, "dev")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantReason(t, r, "same-identity")
	wantUploads(t, "dev", d.Uploads(), 1)
}

// A same-version rebuild to a device that never restarts and tells no
// uptime_s: it still runs the build before, so nothing changed.
func TestWhy_FalseUpdated_SameVersionNeverRestarts(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 4, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.1", "1.0.1, the build before"), OTAStatus: true,
		Omit: fakedev.FieldUptime, After: fakedev.NeverRestarts})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeUnchanged)
}

// Issue 13, "Why": an absent field read as zero.

// The OTS firmware as shipped: /api/status with firmwareVersion and no
// uptime, no /ota/status, a slot erase, then about 100 KB/s. Its answer
// comes seconds after pre-flight; it is back on the new version only after
// its restart, and only then may push conclude.
func TestWhy_AbsentUptime_OTSAsShippedUpdated(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 5, 160_000)
	cfg := fakedev.OTSAsShipped(old("1.0.0", "1.0.0"), 0.5)
	d := startHTTP(t, cfg)
	rr := run(t, fw, []upload.Target{httpTarget("ots", d)}, options(t))
	r := rr.result(t, "ots")
	wantOutcome(t, r, upload.OutcomeUpdated)
	if back, done := lastUp(d.Events(), "1.0.1"), rr.done["ots"]; back.IsZero() || done.Before(back) {
		t.Errorf("push concluded before the device came back on 1.0.1 (its life: %s)", life(d.Events()))
	}
	wantUploads(t, "ots", d.Uploads(), 1)
}

// The same shape, but the device never installs the image (answers 200,
// never restarts): it did not restart, so it did not roll back.
func TestWhy_AbsentUptime_NeverInstalledIsUnchanged(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 6, 160_000)
	cfg := fakedev.OTSAsShipped(old("1.0.0", "1.0.0"), 0.5)
	cfg.After = fakedev.NeverRestarts
	d := startHTTP(t, cfg)
	rr := run(t, fw, []upload.Target{httpTarget("ots", d)}, options(t))
	wantOutcome(t, rr.result(t, "ots"), upload.OutcomeUnchanged)
}

// Issue 13, "Why": a rollback called "unverified", exit 0.

// A canary falls back to a third image (factory 0.9.0): that is a
// rollback, and the canary gate must stop the fleet.
func TestWhy_RollbackNotUnverified_FactoryCanaryStopsFleet(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 7, 0)
	canary := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, After: fakedev.FallsToThird,
		BootTime: 1500 * time.Millisecond})
	rest := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, BootTime: 1500 * time.Millisecond})
	o := options(t)
	o.Canary = 1
	rr := run(t, fw, []upload.Target{httpTarget("canary", canary), httpTarget("rest", rest)}, o)
	wantOutcome(t, rr.result(t, "canary"), upload.OutcomeRolledBack)
	wantOutcome(t, rr.result(t, "rest"), upload.OutcomeNotStarted)
	wantUploads(t, "rest", rest.Uploads(), 0)
	if b, _ := canary.Running(); b.Version != "0.9.0" {
		t.Fatalf("the canary runs %s, want the factory 0.9.0", b.Version)
	}
}

// A plain rollback whose first pre-flight read answered 500: the device
// restarted and came back on another identity than the image's.
func TestWhy_RollbackNotUnverified_PreflightFailedOnce(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 8, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, FailFirstStatus: true,
		After: fakedev.RollsBack, BootTime: 1500 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeRolledBack)
}

// Issue 13, "Why": hangs. The runs use --retries 1 to stay short.

// An espota device that keeps sending counts without taking data.
func TestWhy_EspotaHang_CountsWithoutData(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 9, 0)
	d := startEspota(t, fakedev.EspotaConfig{Shape: fakedev.EspotaCountsNoData})
	o := options(t)
	o.Retries = 1
	rr := run(t, fw, []upload.Target{espotaTarget("arduino", d)}, o)
	wantOutcome(t, rr.result(t, "arduino"), upload.OutcomeFailed)
}

// An espota device that takes every byte, then chatters and never says OK.
// It may have taken the image, and tells nothing: unverified, not resent.
func TestWhy_EspotaHang_ChatterAfterWholeImage(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 10, 0)
	d := startEspota(t, fakedev.EspotaConfig{Shape: fakedev.EspotaChatterNoOK})
	o := options(t)
	o.Retries = 1
	rr := run(t, fw, []upload.Target{espotaTarget("arduino", d)}, o)
	r := rr.result(t, "arduino")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantReason(t, r, "tells-nothing")
	wantUploads(t, "arduino", d.Uploads(), 1)
}

// Issue 13, "Why": resent before verified.

// The answer is lost after the whole image; the device boots the new image
// and is back before a resend would reach it. It must get the image once.
func TestWhy_Resend_AlreadyBootedGetsItOnce(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 11, 300_000)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, Answer: fakedev.AnswerLost,
		BytesPerSecond: 400_000, RestartDelay: -1, BootTime: 2500 * time.Millisecond, PendingFor: 300 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeUpdated)
	wantUploads(t, "dev", d.Uploads(), 1)
}

// The answer is lost and the device rolls back: it must not be flashed
// again, with another crash and rollback each time.
func TestWhy_Resend_RolledBackNotReflashed(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 12, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, Answer: fakedev.AnswerLost,
		After: fakedev.RollsBack, RestartDelay: -1, BootTime: 1200 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeRolledBack)
	wantUploads(t, "dev", d.Uploads(), 1)
}

// A device that reads the last bytes and closes at once (no progress
// sample sees the whole image taken): the transport's own word that the
// answer was lost must count, and the device be read before any resend.
func TestWhy_Resend_LastBytesThenCloseReadFirst(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 13, 600_000)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, Answer: fakedev.AnswerLost,
		RestartDelay: -1, BootTime: 2500 * time.Millisecond, PendingFor: 300 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeUpdated)
	wantUploads(t, "dev", d.Uploads(), 1)
}

// Issue 13, "Why": success accepted too early.

// espota: an OK after 30 % of the image is not success.
func TestWhy_EarlySuccess_EspotaOKAt30Percent(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 14, 0)
	d := startEspota(t, fakedev.EspotaConfig{Shape: fakedev.EspotaEarlyOK})
	o := options(t)
	o.Retries = 1
	rr := run(t, fw, []upload.Target{espotaTarget("arduino", d)}, o)
	wantOutcome(t, rr.result(t, "arduino"), upload.OutcomeFailed)
	if v := d.Running().Version; v != "1.0.0" {
		t.Fatalf("the fake runs %s", v)
	}
}

// HTTP: a 200 right after the headers, while the image (300 KiB) still sits
// in the host's send buffer, is not success, and progress must not claim
// the device took the whole image.
func TestWhy_EarlySuccess_HTTP200AfterHeaders(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 15, 307200)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true, Answer: fakedev.AnswerEarly,
		EarlyHold: 5 * time.Second})
	o := options(t)
	o.Retries = 0 // --retries 0: every try meets the same early answer
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, o)
	wantOutcome(t, rr.result(t, "dev"), upload.OutcomeFailed)
	for _, e := range rr.events {
		if e.Total > 0 && e.Done >= e.Total {
			t.Errorf("progress reported %d of %d (%s): the device read at most a TCP window", e.Done, e.Total, e.Phase)
			break
		}
	}
}
