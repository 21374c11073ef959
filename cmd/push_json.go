package cmd

import (
	"fmt"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// push --json: progress lines, one result line per device, then the error
// lines of a failed run and the summary (docs/json.md, docs/schema/push.json).

// progressLine is one step of one device.
type progressLine struct {
	lineHead
	Time     time.Time `json:"time"`
	Device   string    `json:"device"`
	Address  *string   `json:"address"`
	Protocol *string   `json:"protocol"`
	Phase    string    `json:"phase"`
	Done     int64     `json:"done"`  // bytes the device acknowledged
	Total    *int64    `json:"total"` // bytes to send, null before they are known
	Try      *int      `json:"try"`   // null before the first upload
	Message  *string   `json:"message"`
}

// resultLine is a device's result: a line of its own, and each element of
// the summary's devices.
type resultLine struct {
	lineHead
	Device        string   `json:"device"`
	Address       *string  `json:"address"`
	Protocol      *string  `json:"protocol"`
	From          *string  `json:"from"`
	To            *string  `json:"to"`
	Running       *string  `json:"running"`
	Outcome       string   `json:"outcome"`
	OutcomeText   string   `json:"outcome_text"`
	PendingVerify bool     `json:"pending_verify"`
	Reason        *string  `json:"reason"`
	State         *string  `json:"state"`
	VersionSource *string  `json:"version_source"`
	Tries         int      `json:"tries"`
	DurationMS    int64    `json:"duration_ms"`
	Bytes         *int64   `json:"bytes"` // taken in the last try that sent any of the image; null when none did
	Rate          *int64   `json:"rate"`  // bytes/s of that try, rounded; null when unknown
	Class         *string  `json:"class"`
	Status        *int     `json:"status"`
	Words         *string  `json:"words"`
	Message       *string  `json:"message"`
	Warnings      []string `json:"warnings"`
	Canary        bool     `json:"canary"`
}

// pushSummary is push's last line.
type pushSummary struct {
	summaryHead
	Interrupted *bool          `json:"interrupted"`
	DryRun      *bool          `json:"dry_run"`
	Firmware    *string        `json:"firmware"`
	Version     *string        `json:"version"`
	Size        *int64         `json:"size"`
	Counts      map[string]int `json:"counts"`
	Devices     []resultLine   `json:"devices"`
}

func progressOf(e upload.FleetEvent) progressLine {
	l := progressLine{lineHead: head("progress"), Time: e.Time, Device: e.Target, Address: nullString(e.Addr),
		Protocol: nullString(string(e.Protocol)), Phase: string(e.Phase), Done: e.Done, Total: nullPositive(e.Total),
		Try: nullPositive(e.Try), Message: nullString(e.Message)}
	return l
}

// resultOf is r (already redacted: pushRenderer.clean) as a result line.
func resultOf(r upload.Result) resultLine {
	return resultLine{lineHead: head("result"), Device: r.Device, Address: nullString(r.Addr),
		Protocol: nullString(string(r.Protocol)), From: nullString(r.From), To: nullString(r.To), Running: nullString(r.Running),
		Outcome: string(r.Outcome), OutcomeText: r.OutcomeText(), PendingVerify: r.Pending, Reason: nullString(string(r.Reason)),
		State: nullString(r.State), VersionSource: nullString(r.VersionSource), Tries: r.Tries, DurationMS: r.Duration.Milliseconds(),
		Rate: bytesPerSecond(r.Rate), Class: nullString(string(r.Class)), Status: nullPositive(r.Status), Words: nullString(r.Words),
		Message: nullString(r.Message), Warnings: listOf(r.Warnings), Canary: r.Canary, Bytes: r.Bytes}
}

// jsonEvent writes e as a progress or result line.
func (r *pushRenderer) jsonEvent(e upload.FleetEvent) {
	if e.Phase == upload.PhaseDone && e.Result != nil {
		r.a.writeLine(resultOf(*e.Result))
		return
	}
	r.a.writeLine(progressOf(e))
}

// jsonSummary fills in the summary the run ends with (endJSON writes it).
func (r *pushRenderer) jsonSummary(results []upload.Result, wall time.Duration, code int, dryRun bool) {
	s := summaryAs[*pushSummary](r.a)
	interrupted := code == ExitCancelled
	s.Interrupted, s.DryRun, s.Counts, s.Devices = &interrupted, &dryRun, map[string]int{}, []resultLine{}
	s.DurationMS, s.timed = wall.Milliseconds(), true
	fillFirmware(s, r.fw)
	for _, res := range results {
		s.Counts[string(res.Outcome)]++
		s.Devices = append(s.Devices, resultOf(r.clean(res)))
	}
}

// fillFirmware says what the summary knows of the image.
func fillFirmware(s *pushSummary, fw *upload.Firmware) {
	size := fw.Size()
	s.Firmware, s.Size = &fw.Name, &size
	if fw.Image != nil && fw.Image.App != nil {
		s.Version = nullString(fw.Image.App.Version)
	}
}

// pushFailure is the error line of a rollout that did not exit 0.
func pushFailure(results []upload.Result, code int) *errorObject {
	var bad, unverified []string
	for _, r := range results {
		switch {
		case r.Outcome.Bad() || r.Outcome == upload.OutcomeNotStarted:
			bad = append(bad, r.Device+" "+r.OutcomeText())
		case r.Outcome == upload.OutcomeUnverified:
			unverified = append(unverified, r.Device)
		}
	}
	var e errorObject
	switch code {
	case ExitOK:
		return nil
	case ExitCancelled:
		e = newErrorObject("interrupted", "interrupted: uploads were stopped", "a device that took every byte may still install it: check with ots-ota info")
	case ExitUnverified:
		e = newErrorObject("unverified", fmt.Sprintf("%d of %d device(s) could not show the version they run (--require-verified): %s",
			len(unverified), len(results), firstFew(unverified)), "")
	default:
		e = newErrorObject("devices_failed", fmt.Sprintf("%d of %d device(s) not updated: %s", len(bad), len(results), firstFew(bad)), "")
	}
	return &e
}

// firstFew lists up to five names, then how many more.
func firstFew(names []string) string {
	const n = 5
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
