// Package wled is the client of WLED's web update: one multipart POST
// /update, framed as WLED's own update page frames it (the hidden field
// skipValidation before the file part update). Before any byte of the
// image it reads the device's GET /json/info and checks the image's WLED
// release metadata against the device's release, as WLED 0.15.2 and later
// will (package wledmeta), so a wrong build is refused with both releases
// named instead of sent. The device's gates (not on its subnet, settings
// PIN, OTA lock) are reported in its words with what the user must do on
// the device; they are never worked around. Transport implements
// upload.Transport and reports the family's upload.Traits. The wire facts,
// with their sources, are in docs/protocols/wled.md.
package wled

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/image/wledmeta"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

// DefaultPort is WLED's web port.
const DefaultPort = 80

const (
	// uploadPath is WLED's fixed update route.
	uploadPath = "/update"
	infoPath   = "/json/info"
	// field is the update page's file input; WLED ignores the name.
	field = "update"
	// skipField is the update page's hidden input, which WLED reads when
	// the first chunk of the file arrives: it must come before the file.
	skipField = "skipValidation"
)

// DefaultBusyWait is how long Send waits after a 503 (another upload is
// running on the device) before its one more try.
const DefaultBusyWait = 20 * time.Second

// The device's words (wled00/wled_server.cpp, ota_update.cpp).
const (
	wordsSuccess   = "Update successful!"
	wordsSubnet    = "Client is not on local subnet"
	wordsPIN       = "Please unlock settings using PIN code"
	wordsOTALock   = "Please unlock OTA in security settings"
	wordsMissing   = "missing compatibility metadata"
	wordsMismatch  = "release name mismatch"
	wordsTooOld    = "Cannot update from this version"
	forceHint      = "--force sends it with skipValidation=1, which tells WLED not to check"
	rejectedNoMore = "WLED refuses this image for its release check: push a build of the device's release, or --force"
)

// Transport uploads to WLED. The zero value is ready to use.
type Transport struct {
	// ConnectTimeout bounds each TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends a request when the device takes no byte and gives
	// no answer for this long; 0 means 30 s.
	IdleTimeout time.Duration
	// Timeout bounds the whole upload, both tries after a 503 included; 0
	// means none beyond the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// SkipValidation (push --force) skips the release check and sends
	// skipValidation=1, so WLED skips its own: the image is written
	// whatever build it is. Send warns of it in an event.
	SkipValidation bool
	// BusyWait is the wait after a 503 before the one more try; 0 means
	// DefaultBusyWait.
	BusyWait time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
}

var _ upload.WithTraits = (*Transport)(nil)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.WLED }

// Traits implements upload.WithTraits. WLED's update writes the app slot
// only. Its updater checks an image's first byte, not its chip (the
// release check stands in for that), and the device tells its chip in
// /json/info. What it reports (ver) is WLED's own version, never the
// image's app descriptor: the expected identity is --expect-version alone.
func (h *Transport) Traits() upload.Traits {
	tr := upload.Traits{
		NoFilesystem:    "WLED's /update takes app images only (it has no filesystem upload)",
		ChipUnchecked:   true,
		NoImageIdentity: true,
	}
	if h.SkipValidation {
		// In the result too, not only in the progress lines.
		tr.Warning = forceWarning
	}
	return tr
}

// forceWarning is what every device sent to with SkipValidation is told.
const forceWarning = "--force sends skipValidation=1: WLED will not check that the image is a build of its release"

// Send implements upload.Transport. Unless SkipValidation, it first reads
// GET /json/info and returns a *upload.RefusedError, with nothing of the
// image sent, for an image the device would refuse by its release check
// (or, for a WLED older than 0.15.2, an image of another release). Then
// one multipart POST /update: nil only for 200 "Update successful!" after
// the whole body was taken; a 503 (another upload running) is waited out
// once (BusyWait); every other answer is a *upload.DeviceError in the
// device's words. Target.Port 0 means 80; Target.Path is not used.
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if emit == nil {
		emit = func(upload.Event) {}
	}
	if fw.Filesystem {
		return &upload.RefusedError{Reason: h.Traits().NoFilesystem}
	}
	cfg := post.Config{ConnectTimeout: h.ConnectTimeout, IdleTimeout: h.IdleTimeout, Timeout: h.Timeout,
		ProgressInterval: h.ProgressInterval, Logger: h.Logger}
	ctx, cancel := post.WithTimeout(ctx, cfg)
	defer cancel()
	addr, host := post.HostPort(t.Host, t.Port, DefaultPort)
	skip := ""
	if h.SkipValidation {
		skip = "1" // Traits().Warning says so
	} else if err := h.check(ctx, cfg, addr, host, fw, emit); err != nil {
		return err
	}
	form, err := newForm(fw, skip)
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: err.Error()}
	}
	head := post.Head("POST", uploadPath, host,
		"Origin: http://"+host,
		"Content-Type: "+form.ContentType,
		"Content-Length: "+strconv.FormatInt(form.Size(fw.Size()), 10))
	req := post.Request{Addr: addr, Head: head, Prefix: form.Prefix, Suffix: form.Suffix, Data: fw.Data,
		Redact: post.Redactor(cred), Judge: judge, Waiting: "waiting for the device to read the upload"}
	err = post.Send(ctx, cfg, req, emit)
	if !busy(err) {
		return err
	}
	wait := h.BusyWait
	if wait <= 0 {
		wait = DefaultBusyWait
	}
	emit(upload.Event{Phase: upload.PhaseRetrying, Total: fw.Size(),
		Message: fmt.Sprintf("the device answered 503: another upload to it is running; waiting %s, then trying once more", wait)})
	h.log().Debug("busy, waiting", "addr", addr, "wait", wait)
	select {
	case <-ctx.Done():
		return &upload.DeviceError{Class: upload.ClassNetwork, Status: 503, Err: ctx.Err(),
			Reason: "interrupted while waiting for the device's other upload to end"}
	case <-time.After(wait):
	}
	if err = post.Send(ctx, cfg, req, emit); busy(err) {
		var de *upload.DeviceError
		errors.As(err, &de)
		de.Class = upload.ClassBusy
		de.Reason = fmt.Sprintf("another upload to the device was still running %s after its first 503", wait)
		de.NoRetry = "wait until the device's other upload has ended and it has restarted, then push again"
	}
	return err
}

func (h *Transport) log() *slog.Logger {
	return upload.OrDiscard(h.Logger)
}

// busy: the device answered 503, its sign that another upload runs.
func busy(err error) bool {
	var de *upload.DeviceError
	return errors.As(err, &de) && de.Status == 503
}

// newForm is WLED's update form: the field skipValidation (value "" or
// "1", as the page's hidden input), then the file part.
func newForm(fw *upload.Firmware, skip string) (post.Form, error) {
	form, err := post.NewForm(fw.Data, field, post.FileName(fw.Name, "firmware.bin"))
	if err != nil {
		return form, err
	}
	_, boundary, ok := strings.Cut(form.ContentType, "boundary=")
	if !ok {
		return form, errors.New("no multipart boundary")
	}
	first := "--" + boundary + "\r\n" +
		`Content-Disposition: form-data; name="` + skipField + "\"\r\n\r\n" +
		skip + "\r\n"
	form.Prefix = append([]byte(first), form.Prefix...)
	return form, nil
}

// judge reads WLED's answers to POST /update (serveMessage pages: a
// headline, then a line of detail).
func judge(a *post.Answer, words string) *upload.DeviceError {
	if a.Status == 200 && strings.Contains(words, wordsSuccess) {
		return nil
	}
	de := &upload.DeviceError{Status: a.Status, Words: words}
	switch {
	case a.Status == 503:
		de.Class, de.Reason = upload.ClassBusy, "another upload to the device is running (WLED answers 503 to a second one)"
	case a.Status == 401 && strings.Contains(words, wordsSubnet):
		de.Class, de.Reason = upload.ClassAuth, "WLED takes updates only from its own subnet (Security settings: \"Only allow update from same network/WiFi\"): push from a host on the device's network, or set a settings PIN or clear that option on the device; ots-ota does not work around it"
	case a.Status == 401 && strings.Contains(words, wordsPIN):
		de.Class, de.Reason = upload.ClassAuth, "WLED's settings are locked by a PIN: unlock them in the device's web page (the unlock lasts 15 minutes), then push again; ots-ota never sends a PIN"
	case a.Status == 401 && strings.Contains(words, wordsOTALock):
		de.Class, de.Reason = upload.ClassAuth, "WLED's OTA lock is on: turn off \"Lock wireless (OTA) software update\" in the device's Security settings (it asks for the OTA passphrase), then push again; ots-ota never unlocks it"
	case a.Status == 401 || a.Status == 403:
		de.Class, de.Reason = upload.ClassAuth, "WLED refused the update; its words say why (ots-ota does not work around WLED's gates)"
	case a.Status == 500 && (strings.Contains(words, wordsMissing) || strings.Contains(words, wordsMismatch) || strings.Contains(words, wordsTooOld)):
		de.Class, de.Reason = upload.ClassRejected, "WLED's release check refused the image"
		de.NoRetry = rejectedNoMore
	case a.Status == 501:
		de.Class, de.Reason = upload.ClassRejected, "this WLED build has no OTA update (built with WLED_DISABLE_OTA)"
	case a.Status == 200:
		de.Class, de.Err = upload.ClassRejected, upload.ErrFailurePage
		de.Reason = fmt.Sprintf("the device answered 200 without WLED's %q: is this WLED's update page?", wordsSuccess)
	default:
		de.Class, de.Reason = upload.ClassifyAnswer(a.Status, words)
	}
	return de
}

// check is the release check, before any byte of the image: what WLED
// 0.15.2 and later would refuse is refused here, with both releases named.
func (h *Transport) check(ctx context.Context, cfg post.Config, addr, host string, fw *upload.Firmware, emit upload.Emit) error {
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: "reading the device's release (GET " + infoPath + ")"})
	a, err := post.Exchange(ctx, cfg, addr, "GET "+infoPath, post.Head("GET", infoPath, host, "Accept: application/json"))
	if err != nil {
		return err
	}
	if a.Status != 200 {
		return &upload.RefusedError{Reason: fmt.Sprintf("GET %s answered %d, not WLED's device info: is this a WLED device? nothing sent (%s)", infoPath, a.Status, forceHint)}
	}
	if a.Cut {
		return &upload.DeviceError{Class: upload.ClassNetwork, Status: a.Status, Reason: "the device's answer to GET " + infoPath + " was cut short"}
	}
	info, err := devinfo.ParseWLEDInfo(a.Body)
	if err != nil {
		return &upload.RefusedError{Reason: fmt.Sprintf("GET %s did not answer as WLED does (%v): is this a WLED device? nothing sent (%s)", infoPath, err, forceHint)}
	}
	why, note := Decide(info, fw)
	if why != "" {
		return &upload.RefusedError{Reason: why + "; nothing sent (" + forceHint + ")"}
	}
	if note != "" {
		emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: note})
	}
	h.log().Debug("release check passed", "addr", addr, "ver", info.Ver, "release", info.Release)
	return nil
}

// Decide is the release check for an image going to a device that told
// info: why, when not "", is why the device would refuse the image (or,
// for a WLED older than 0.15.2, which checks nothing, why it is the wrong
// build); note says what the check could not see.
//
// WLED 0.15.2 and later find the metadata block where they look
// (wledmeta.Find) and compare its release with their own: exactly before
// 0.15.5, without a trailing "_V4" since; 0.15.2 and 0.15.3 skip a block of
// structure version above 2; all of them refuse an image whose SafeFrom is
// above their version. Only 16.0 and later inflate a gzipped ESP8266
// image to look; before, the check reads its compressed bytes and fails.
// WLED older than 0.15.2 checks nothing; ots-ota does it for it: an image
// without metadata (every WLED build before 0.15.2 has none) is refused,
// since nothing says it is a WLED build for the device's release (--force
// sends it), and one whose metadata names another release than the
// device's is refused too.
func Decide(info devinfo.WLEDInfo, fw *upload.Firmware) (why, note string) {
	esp8266 := info.Chip() == "esp8266"
	if info.Arch == "" && fw.Image != nil {
		esp8266 = fw.Image.Header.ChipID.IsESP8266()
	}
	meta, err := wledmeta.Find(fw.Data, esp8266)
	ver := info.Ver
	devName := "WLED"
	if ver != "" {
		devName = "WLED " + ver
	}
	checks := !versionBelow(ver, 0, 15, 2)
	if !checks {
		if err == nil && info.Release != "" && wledmeta.NormalizeRelease(meta.Release) != wledmeta.NormalizeRelease(info.Release) {
			return mismatch(meta, info, devName), ""
		}
		if err != nil {
			// The device would take it, but nothing says the image is a
			// WLED build, let alone one for this device's release: a wrong
			// one may leave it unbootable (an ESP8266 has no rollback).
			return fmt.Sprintf("%s checks no release metadata (0.15.2 added the check) and the image carries none, so nothing says it is a WLED build for this device's release", devName), ""
		}
		return "", ""
	}
	switch {
	case errors.Is(err, wledmeta.ErrGzip):
		return "the image is gzipped but its head does not inflate: WLED cannot check it, nor could the device boot it", ""
	case err != nil:
		where := fmt.Sprintf("at offset %d", wledmeta.OffsetESP32)
		if esp8266 {
			where = fmt.Sprintf("at offset %#x", wledmeta.OffsetESP8266)
		}
		return fmt.Sprintf("the image carries no WLED release metadata (the block WLED looks for %s): it is no WLED build, or one older than 0.15.2, and %s refuses it", where, devName), ""
	case meta.Gzip && versionBelow(ver, 16, 0, 0):
		return fmt.Sprintf("%s checks a gzipped image's compressed bytes and finds no release metadata in them (16.0 inflates them first): send the uncompressed .bin", devName), ""
	case meta.DescVersion > 2 && versionBelow(ver, 0, 15, 4):
		return fmt.Sprintf("the image's WLED metadata is of structure version %d, which %s skips: it would refuse the image as carrying none", meta.DescVersion, devName), ""
	case info.Release == "":
		return fmt.Sprintf("%s tells no release in %s, so the image's release %q cannot be checked against it", devName, infoPath, meta.Release), ""
	}
	same := meta.Release == info.Release
	if !versionBelow(ver, 0, 15, 5) {
		same = wledmeta.NormalizeRelease(meta.Release) == wledmeta.NormalizeRelease(info.Release)
	}
	if !same {
		return mismatch(meta, info, devName), ""
	}
	if ver != "" && !meta.InstallsOver(ver) {
		return fmt.Sprintf("the image (WLED %s) may be installed only over WLED %d.%d.%d or later, and the device runs %s: update it in steps",
			printable(meta.Version), meta.SafeFrom[0], meta.SafeFrom[1], meta.SafeFrom[2], printable(ver)), ""
	}
	return "", ""
}

func mismatch(meta wledmeta.Meta, info devinfo.WLEDInfo, devName string) string {
	s := fmt.Sprintf("the image is WLED release %q (WLED %s), the device runs release %q (%s): WLED takes only a build of its own release",
		meta.Release, printable(meta.Version), info.Release, devName)
	if strings.HasSuffix(meta.Release, "_V4") || strings.HasSuffix(info.Release, "_V4") {
		s += " (a _V4 suffix is ignored from WLED 0.15.5 on)"
	}
	return s
}

// printable is a name from an image, safe to print.
func printable(s string) string {
	if s == "" {
		return "(no version)"
	}
	return upload.CleanText(s, 48)
}

// versionBelow: ver's leading numbers (major.minor.patch) are below the
// given version. An unknown or unreadable ver is not below anything: the
// device is taken to be a recent one, which checks.
func versionBelow(ver string, want ...int) bool {
	for _, w := range want {
		j := 0
		for j < len(ver) && ver[j] >= '0' && ver[j] <= '9' {
			j++
		}
		if j == 0 || j > 6 {
			return false
		}
		n, _ := strconv.Atoi(ver[:j])
		if n != w {
			return n < w
		}
		ver = strings.TrimPrefix(ver[j:], ".")
	}
	return false
}
