// Package elegantota is the client of ElegantOTA v3: GET /ota/start, which
// begins the device's update, then one multipart POST /ota/upload of the
// image. Transport implements upload.Transport and reports the family's
// upload.Traits. The wire facts, with their sources, are in
// docs/protocols/elegantota.md.
package elegantota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

// DefaultPort is the web port ElegantOTA serves on.
const DefaultPort = 80

// The library's routes; they are fixed (the sketch cannot move them).
const (
	startPath  = "/ota/start"
	uploadPath = "/ota/upload"
	// field is the page's own FormData name; the device ignores it.
	field = "file"
)

// NoRetryHint is what a failure after /ota/start succeeded tells the user
// (upload.DeviceError.NoRetry): the device's update stays begun, and the
// bytes of another try would continue it.
const NoRetryHint = "ElegantOTA keeps a failed update begun: restart the device, then push again"

// Transport uploads to ElegantOTA v3: GET /ota/start?mode=fr|fs&hash=<md5>
// begins the update, then one multipart POST /ota/upload carries the image
// (streamed from the firmware's bytes). Credentials go as HTTP Basic up
// front: the sync build challenges Basic, and the async build's server
// accepts Basic as well as the Digest it challenges; should an async device
// refuse Basic with a Digest challenge, the start (which begins nothing
// before its credentials check) is asked once more with Digest, and the
// upload too. Success is 200 "OK" to both.
//
// Once /ota/start has succeeded nothing is ever sent again: after a failed
// upload the device's update stays begun, and another try would write into
// it at a stale offset. Such a failure carries upload.DeviceError.NoRetry
// (NoRetryHint), which the runner honours.
//
// The zero value is ready to use.
type Transport struct {
	// ConnectTimeout bounds each TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends a request when the device takes no byte and gives
	// no answer for this long; 0 means 30 s.
	IdleTimeout time.Duration
	// Timeout bounds the whole upload, both requests; 0 means none beyond
	// the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
}

var _ upload.WithTraits = (*Transport)(nil)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.ElegantOTA }

// Traits implements upload.WithTraits: Arduino sketches, whose Update
// class checks an image's first byte and not its chip, in an app slot of
// the default partition scheme unless told otherwise. Both chips take a
// filesystem image (mode=fs).
func (*Transport) Traits() upload.Traits {
	return upload.Traits{ChipUnchecked: true, ArduinoSlot: true}
}

// Send implements upload.Transport: nil only when the device answered
// 200 "OK" to the upload after taking the whole body; else a
// *upload.DeviceError whose Taken is the image bytes the device had
// acknowledged, with NoRetry set once /ota/start had succeeded.
// Target.Port 0 means 80; Target.Path is not used (the routes are fixed).
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if emit == nil {
		emit = func(upload.Event) {}
	}
	basic, err := post.Basic(cred)
	if err != nil {
		return err
	}
	form, err := post.NewForm(fw.Data, field, post.FileName(fw.Name, "firmware.bin"))
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: err.Error()}
	}
	cfg := post.Config{ConnectTimeout: h.ConnectTimeout, IdleTimeout: h.IdleTimeout, Timeout: h.Timeout,
		ProgressInterval: h.ProgressInterval, Logger: h.Logger}
	ctx, cancel := post.WithTimeout(ctx, cfg)
	defer cancel()
	addr, host := post.HostPort(t.Host, t.Port, DefaultPort)
	mode := "fr"
	if fw.Filesystem {
		mode = "fs"
	}
	// The hash is checked for its length only; the device never verifies
	// the image against it (docs/protocols/elegantota.md).
	sum := fw.MD5
	if len(sum) != 32 {
		sum = auth.MD5Hex(fw.Data)
	}
	start := startPath + "?mode=" + mode + "&hash=" + sum
	redact := post.Redactor(cred)

	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: "asking the device to begin its update (GET " + startPath + ")"})
	a, err := post.Exchange(ctx, cfg, addr, "GET "+startPath, post.Head("GET", start, host, basic))
	if err != nil {
		return err
	}
	var digest *auth.DigestChallenge
	if a.Status == 401 && cred.User != "" {
		// The async build challenges Digest. Its start checks credentials
		// before it begins anything, so asking again is harmless.
		if c, ok := digestChallenge(a); ok {
			authz, err := digestHeader(c, cred, "GET", start, 1)
			if err != nil {
				return err
			}
			h.log().Debug("answering a Digest challenge", "addr", addr, "realm", c.Realm)
			emit(upload.Event{Phase: upload.PhaseAuth, Total: fw.Size(), Message: "answering the device's Digest challenge"})
			if a, err = post.Exchange(ctx, cfg, addr, "GET "+startPath, post.Head("GET", start, host, authz)); err != nil {
				return err
			}
			digest = &c
		}
	}
	// Judged on the device's own words; only the kept words are redacted.
	if de := startFailure(a, a.Words(), cred.User != ""); de != nil {
		if de.Words != "" {
			de.Words = a.WordsWith(redact)
		}
		return de
	}

	authz := basic
	if digest != nil {
		if authz, err = digestHeader(*digest, cred, "POST", uploadPath, 2); err != nil {
			// A failure after /ota/start succeeded: nothing may be sent again.
			return upload.MarkNoRetry(err, NoRetryHint)
		}
	}
	head := post.Head("POST", uploadPath, host,
		"Origin: http://"+host,
		"Content-Type: "+form.ContentType,
		"Content-Length: "+strconv.FormatInt(form.Size(fw.Size()), 10),
		authz)
	err = post.Send(ctx, cfg, post.Request{Addr: addr, Head: head, Prefix: form.Prefix, Suffix: form.Suffix, Data: fw.Data,
		Redact: redact, Judge: judgeUpload(cred.User != ""), Waiting: "waiting for the device to read the upload"}, emit)
	return upload.MarkNoRetry(err, NoRetryHint)
}

func (h *Transport) log() *slog.Logger {
	return upload.OrDiscard(h.Logger)
}

// digestChallenge is the first Digest challenge of a 401 this client can
// answer.
func digestChallenge(a *post.Answer) (auth.DigestChallenge, bool) {
	for _, v := range a.Challenges {
		if c, ok := auth.ParseDigestChallenge(v); ok {
			return c, true
		}
	}
	return auth.DigestChallenge{}, false
}

// digestHeader answers c for one request; nc counts the requests made
// with c's nonce.
func digestHeader(c auth.DigestChallenge, cred upload.Credentials, method, uri string, nc int) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	v, ok := auth.DigestAuthorization(c, cred.User, cred.Password, method, uri, nc, hex.EncodeToString(rnd[:]))
	if !ok {
		return "", &upload.DeviceError{Class: upload.ClassAuth, Reason: "the user name holds a character HTTP Digest cannot quote (a quote, a backslash or a control character)"}
	}
	return "Authorization: " + v, nil
}

// startFailure reads the answer to GET /ota/start: nil for 200 "OK", the
// update begun; else why it failed (nothing was begun, or the begin failed:
// a try may start again).
func startFailure(a *post.Answer, words string, sentUser bool) *upload.DeviceError {
	if a.Status == 200 && strings.TrimSpace(words) == "OK" {
		return nil
	}
	de := &upload.DeviceError{Status: a.Status, Words: words}
	switch {
	case a.Status == 401 || a.Status == 403:
		de.Class, de.Reason = authFailure(sentUser)
	case a.Status == 404:
		de.Class, de.Reason = upload.ClassRejected, "the device has no "+startPath+": it does not run ElegantOTA v3"
	case a.Status == 200:
		de.Class, de.Reason = upload.ClassRejected, fmt.Sprintf("the device answered %s with 200 but not ElegantOTA's \"OK\": does it run ElegantOTA v3?", startPath)
	default:
		de.Class, de.Reason = upload.ClassifyAnswer(a.Status, words)
		if words == "" {
			de.Reason = "the device could not begin its update and gave no reason"
		}
	}
	return de
}

// judgeUpload reads the answer to POST /ota/upload: 200 "OK" is success,
// 400 carries the Updater's error text (the async build's may be empty or
// left from an earlier update).
func judgeUpload(sentUser bool) func(a *post.Answer, words string) *upload.DeviceError {
	return func(a *post.Answer, words string) *upload.DeviceError {
		w := strings.TrimSpace(words)
		if a.Status == 200 && w == "OK" {
			return nil
		}
		de := &upload.DeviceError{Status: a.Status, Words: words}
		switch {
		case a.Status == 401 || a.Status == 403:
			de.Class, de.Reason = authFailure(sentUser)
		case a.Status == 400 && w == "":
			// The async build answers a failed chunk write with 400 and
			// the update's error text, which that failure never set.
			de.Class, de.Reason = upload.ClassWriteFailed, "the device's updater failed during the upload and gave no reason (ElegantOTA on an async web server answers 400 with no text)"
		case a.Status >= 200 && a.Status <= 299:
			de.Class, de.Err = upload.ClassRejected, upload.ErrFailurePage
			de.Reason = fmt.Sprintf("the device answered %d but not ElegantOTA's \"OK\"", a.Status)
		default:
			de.Class, de.Reason = upload.ClassifyAnswer(a.Status, words)
		}
		return de
	}
}

func authFailure(sentUser bool) (upload.Class, string) {
	if !sentUser {
		return upload.ClassAuth, "the device asks for a user name and password: pass --user and --password"
	}
	return upload.ClassAuth, "the device refused the user name and password: check --user and --password"
}
