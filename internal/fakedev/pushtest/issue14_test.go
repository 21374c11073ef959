package pushtest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
)

// Issue 14, "Why": failure pages answered with 200, Ctrl-C after the last
// byte.

// A page that says "Update failed!" after more than 300 visible characters
// of menus: failed, with the device's own words.
func TestWhy14_FailurePage_HTMLAfter300Chars(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1401, 0)
	menu := strings.Repeat("<li><a href='/x'>Settings and information</a></li>\n", 14) // 14 × 24 visible
	page := "<!DOCTYPE html><html><head><title>Firmware update</title><style>body{color:red}</style></head><body><ul>" +
		menu + "</ul><h2>Update failed!</h2><p>Not Enough Space</p><a href='/'>Back</a></body></html>"
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true,
		Answer: fakedev.AnswerFailurePage, FailurePage: page, After: fakedev.NeverRestarts})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	r := rr.result(t, "dev")
	wantOutcome(t, r, upload.OutcomeFailed)
	if !strings.HasPrefix(r.Words, "Update failed! Not Enough Space") || r.Status != 200 || r.Class != upload.ClassRejected {
		t.Errorf("words %q status %d class %s, want the page's \"Update failed! Not Enough Space\", 200, rejected", r.Words, r.Status, r.Class)
	}
	if !strings.Contains(r.Message, "Update failed! Not Enough Space") {
		t.Errorf("message %q does not quote the device", r.Message)
	}
	wantUploads(t, "dev", d.Uploads(), 1)
}

// ESP8266HTTPUpdateServer's 200 "Update error: ERROR[10]: Magic byte is not
// 0xE9": a rejection, never retried.
func TestWhy14_FailurePage_UpdateErrorNotRetried(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1402, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true,
		Answer: fakedev.AnswerFailurePage, After: fakedev.NeverRestarts})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	r := rr.result(t, "dev")
	wantOutcome(t, r, upload.OutcomeFailed)
	if r.Words != "Update error: ERROR[10]: Magic byte is not 0xE9" || r.Class != upload.ClassRejected {
		t.Errorf("words %q class %s", r.Words, r.Class)
	}
	wantUploads(t, "dev", d.Uploads(), 1)
}

// A failure page from a device that installs the image anyway: updated,
// with a warning that quotes the page.
func TestWhy14_FailurePage_RunsNewImageUpdatedWithWarning(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1403, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true,
		Answer: fakedev.AnswerFailurePage, After: fakedev.InstallsAndKeeps, BootTime: 1500 * time.Millisecond, PendingFor: 300 * time.Millisecond})
	rr := run(t, fw, []upload.Target{httpTarget("dev", d)}, options(t))
	r := rr.result(t, "dev")
	wantOutcome(t, r, upload.OutcomeUpdated)
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "Update error: ERROR[10]: Magic byte is not 0xE9") {
		t.Errorf("warnings %q, want one quoting the page", r.Warnings)
	}
	wantUploads(t, "dev", d.Uploads(), 1)
}

// Ctrl-C once the device has taken every byte, while it checks the image:
// cancelled, and the message says it may install it and how to check.
func TestWhy14_CtrlCAfterLastByte(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1404, 0)
	d := startHTTP(t, fakedev.HTTPConfig{Running: old("1.0.0", "1.0.0"), OTAStatus: true,
		AnswerDelay: 2 * time.Second, BootTime: 1200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := options(t)
	var once sync.Once
	o.OnEvent = func(e upload.FleetEvent) {
		if e.Phase == upload.PhaseFinishing && e.Total > 0 && e.Done >= e.Total {
			once.Do(cancel) // Ctrl-C
		}
	}
	ch := make(chan []upload.Result, 1)
	go func() { ch <- upload.Run(ctx, fw, []upload.Target{httpTarget("dev", d)}, o) }()
	var res []upload.Result
	select {
	case res = <-ch:
	case <-time.After(runBound):
		t.Fatalf("push still running after %s", runBound)
	}
	r := res[0]
	t.Logf("dev: %s %s", r.OutcomeText(), r.Message)
	wantOutcome(t, r, upload.OutcomeCancelled)
	if hint := "ots-ota info " + r.Addr; !strings.Contains(r.Message, hint) || strings.Contains(r.Message, "keeps its running image") {
		t.Errorf("message %q, want the device may have installed it and %q", r.Message, hint)
	}
	// The device had it all: it installs it regardless.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, _ := d.Running(); b.Version == "1.0.1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fake never ran the image (its life: %s)", life(d.Events()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
