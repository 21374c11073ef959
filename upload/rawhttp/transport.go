package rawhttp

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/buildinfo"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

// Defaults of Transport's timeouts (issue 9 §4); its connect timeout
// is upload.DefaultConnectTimeout.
const (
	// DefaultIdleTimeout must outlast a full-slot erase: esp_ota_begin
	// erases the whole slot (2–8 s for 2 MiB on an ESP32-S3, longer for
	// bigger slots) before the device reads the first byte.
	DefaultIdleTimeout = post.DefaultIdleTimeout
	// DefaultPath is where the seed and OTS firmware take uploads.
	DefaultPath = "/update"
)

// Transport uploads with one HTTP POST of the raw image, the way the
// seed and the OTS firmware take it (device-contract.md §2): Content-Length,
// application/octet-stream, no chunked encoding, no Expect: 100-continue.
//
// It writes the request itself over a plain TCP connection and reads the
// answer while it writes: a device that fails mid-upload answers at once
// and resets the connection right behind its answer, and the answer must
// still be reported (net/http's client reports the failed write instead).
// Linux keeps received data readable after a reset (tested here); other
// systems (Windows) may discard it, and then the error says the device cut
// the upload at N bytes.
//
// The zero value is ready to use.
type Transport struct {
	// ConnectTimeout bounds the TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends an upload when the device takes no byte and gives
	// no answer for this long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Timeout bounds the whole upload; 0 means none beyond the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
}

var _ upload.WithTraits = (*Transport)(nil)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.HTTP }

// Traits implements upload.WithTraits: the seed and the OTS firmware take app
// images only, check the image's chip (esp_ota_end) and tell what they run
// over HTTP (/ota/status, /api/status).
func (*Transport) Traits() upload.Traits {
	return upload.Traits{NoFilesystem: "HTTP devices (seed and OTS firmware) have no filesystem upload; send filesystem images to espota devices"}
}

func (h *Transport) config() post.Config {
	return post.Config{ConnectTimeout: h.ConnectTimeout, IdleTimeout: h.IdleTimeout, Timeout: h.Timeout,
		ProgressInterval: h.ProgressInterval, Logger: h.Logger}
}

// Send implements upload.Transport: it returns nil only when the device answered
// 2xx after taking the whole image, else a *upload.DeviceError whose Taken is the
// image bytes the device had acknowledged when the try ended. When ctx ends
// the error wraps ctx.Err() (errors.Is(err, context.Canceled) tells an
// interrupted upload from a failed one).
//
// "After taking the whole image": where the ack counter is exact (Linux,
// macOS) every byte was acknowledged when the answer arrived; elsewhere
// every byte was written and the answer arrived after the last write began.
// A 2xx before that is a DeviceError of upload.ClassEarlyAnswer wrapping
// upload.ErrEarlyAnswer.
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if fw.Filesystem {
		return &upload.DeviceError{Class: upload.ClassRejected,
			Reason: "HTTP devices take no filesystem image (the seed and OTS firmware update the app only): use an espota device, or send an app image"}
	}
	head, err := requestHead(t, fw.Size(), cred)
	if err != nil {
		return err
	}
	return post.Send(ctx, h.config(), post.Request{Addr: t.Addr(), Head: head, Data: fw.Data, Redact: redactor(cred).Redact, Judge: judge}, emit)
}

// judge reads the seed's and OTS firmware's answers: a 2xx that does not
// say it failed is acceptance; everything else is classified by the core's
// one table.
func judge(a *post.Answer, words string) *upload.DeviceError {
	if upload.Accepted(a.Status, words) {
		return nil
	}
	class, why := upload.ClassifyAnswer(a.Status, words)
	de := &upload.DeviceError{Class: class, Status: a.Status, Words: words, Reason: why}
	if a.Status >= 200 && a.Status <= 299 {
		de.Err = upload.ErrFailurePage
	}
	return de
}

func uploadPathOf(t upload.Target) string {
	if t.Path == "" {
		return DefaultPath
	}
	return t.Path
}

// requestHead is the request line and headers. Secrets go into the
// Authorization header and nowhere else.
func requestHead(t upload.Target, size int64, cred upload.Credentials) ([]byte, error) {
	path := uploadPathOf(t)
	if path[0] != '/' || strings.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, &upload.DeviceError{Class: upload.ClassRejected, Reason: fmt.Sprintf("upload path %q is not an absolute URL path", upload.CleanText(path, 80))}
	}
	authz, err := authorization(cred)
	if err != nil {
		return nil, err
	}
	host := t.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	if t.Port != 0 && t.Port != 80 {
		host += ":" + strconv.Itoa(t.Port)
	} else if t.Port == 0 {
		host += ":3232"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\n", path, host)
	// ESP-IDF's httpd takes at most 512 bytes of headers: keep them few.
	fmt.Fprintf(&b, "User-Agent: ots-ota/%s\r\n", upload.CleanText(buildinfo.Version, 40))
	b.WriteString("Content-Type: application/octet-stream\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", size)
	if authz != "" {
		b.WriteString("Authorization: " + authz + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return []byte(b.String()), nil
}

// authorization is the Authorization value for cred: Token → Bearer; User
// (with Password) → Basic; Password alone → Bearer.
func authorization(cred upload.Credentials) (string, error) {
	var v string
	switch {
	case !cred.Token.IsZero():
		v = "Bearer " + cred.Token.Reveal()
	case cred.User != "":
		v = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred.User+":"+cred.Password.Reveal()))
	case !cred.Password.IsZero():
		v = "Bearer " + cred.Password.Reveal()
	default:
		return "", nil
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", &upload.DeviceError{Class: upload.ClassAuth, Reason: "the token or password contains a control character (a line break?) and cannot be sent in an HTTP header"}
	}
	return v, nil
}

// redactor hides what a device may echo of the credentials (and their
// encodings) from its words, before they are cut to length: a secret that
// straddled the cut would leak half of itself. The renderers redact again.
func redactor(c upload.Credentials) *auth.Redactor {
	var r auth.Redactor
	r.Add(c.Token)
	r.AddBasic(c.User, c.Password)
	return &r
}
