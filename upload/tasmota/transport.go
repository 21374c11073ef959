// Package tasmota is the client of Tasmota's firmware upgrade, by file
// (GET /up, then a multipart POST /u2, as its upgrade page does) or by URL
// (the device fetches the image from a file server push runs: Status 0 to
// read its OtaUrl, "Backlog OtaUrl <url>; Upgrade 1" over its HTTP API
// /cm, and its old OtaUrl put back once the outcome is final). Transport
// implements upload.Transport, reports the family's upload.Traits and, by
// URL, undoes its change (upload.Finisher). Every request carries the
// Referer Tasmota's check wants, and credentials go only in a Basic
// header. Tasmota answers every upload with a 200 page in its build's
// language: nothing is decided from it; verification decides. The wire
// facts, with their sources, are in docs/protocols/tasmota.md.
package tasmota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

// DefaultPort is the web port Tasmota serves on.
const DefaultPort = 80

const (
	// upPath renders the upgrade page and sets the upload type to
	// firmware (GET /rs would make /u2 a settings restore).
	upPath     = "/up"
	uploadPath = "/u2"
	// field is the upgrade page's own file field; the device ignores the
	// name but wants a non-empty file name.
	field  = "u2"
	cmPath = "/cm"
	// smallIdle bounds the requests without a body (/up, /cm): a device
	// that answers nothing (the Referer check) is not waited on for the
	// whole upload idle timeout.
	smallIdle = 10 * time.Second
)

// The quiet rule of Tasmota's verification (upload.Traits.QuietProbe):
// its maintainers report that a Status request during an upgrade can
// break the flash.
const (
	QuietProbe = 2 * time.Second
	// QuietHold: Tasmota restarts a second or two after it answered the
	// upload (or, by URL, after it fetched the last byte: it writes while
	// it downloads); a device not seen away 10 s later restarted between
	// two connects, or not at all, and is no longer writing its flash.
	QuietHold = 10 * time.Second
)

// Transport upgrades Tasmota devices by file or, with ViaURL, by URL.
// The zero value uploads by file.
type Transport struct {
	// ConnectTimeout bounds each TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends the upload when the device takes no byte and gives
	// no answer for this long; 0 means 30 s.
	IdleTimeout time.Duration
	// Timeout bounds each device's upload; 0 means none beyond the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
	// QuietProbe and QuietHold override the quiet rule's timing
	// (upload.Traits): 0 means the package's QuietProbe and QuietHold.
	// Tests shorten them along with their fake device's restart.
	QuietProbe, QuietHold time.Duration

	// ViaURL: the devices fetch the image themselves from a file server
	// that Files starts (see Server); nothing is uploaded.
	ViaURL bool
	// Server serves the image by URL; required with ViaURL.
	Server *Server
}

var (
	_ upload.WithTraits = (*Transport)(nil)
	_ upload.Finisher   = (*Transport)(nil)
)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.Tasmota }

// Traits implements upload.WithTraits: the upgrade takes firmware only;
// Tasmota's updater checks an image's first byte, not its chip; no Status
// request reaches a device that may be installing; and what a device
// reports (its Version) is never an image's app descriptor.
func (h *Transport) Traits() upload.Traits {
	probe, hold := QuietProbe, QuietHold
	if h != nil && h.QuietProbe > 0 {
		probe = h.QuietProbe
	}
	if h != nil && h.QuietHold > 0 {
		hold = h.QuietHold
	}
	return upload.Traits{
		NoFilesystem:    "Tasmota's upgrade takes firmware images only (its filesystem is managed from its own web page)",
		ChipUnchecked:   true,
		QuietProbe:      probe,
		QuietHold:       hold,
		Port:            DefaultPort,
		NoImageIdentity: true,
	}
}

// Send implements upload.Transport. By file: nil once the device answered
// the upload with a 200 page (whatever it says: its words are translated
// and decide nothing), else a *upload.DeviceError. By URL: nil once the
// device has fetched the whole image, else a *upload.DeviceError or, for a
// device refused before any command, a *upload.RefusedError.
// Target.Port 0 means 80; Target.Path is not used.
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if emit == nil {
		emit = func(upload.Event) {}
	}
	if fw.Filesystem {
		return &upload.RefusedError{Reason: h.Traits().NoFilesystem}
	}
	authz, err := basic(cred)
	if err != nil {
		return err
	}
	if h.ViaURL {
		return h.sendByURL(ctx, t, fw, cred, authz, emit)
	}
	return h.sendFile(ctx, t, fw, cred, authz, emit)
}

// basic is the Authorization header for cred (upload.TasmotaBasic), ""
// when no password is given.
func basic(cred upload.Credentials) (string, error) {
	if strings.ContainsFunc(cred.User+cred.Password.Reveal(), func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", &upload.DeviceError{Class: upload.ClassAuth, Reason: "the user name or password contains a control character (a line break?) and cannot be sent in an HTTP header"}
	}
	s := upload.TasmotaBasic(cred)
	if s.IsZero() {
		return "", nil
	}
	return "Authorization: " + s.Reveal(), nil
}

func (h *Transport) config(idle time.Duration) post.Config {
	if idle == 0 {
		idle = h.IdleTimeout
	}
	return post.Config{ConnectTimeout: h.ConnectTimeout, IdleTimeout: idle, Timeout: h.Timeout,
		ProgressInterval: h.ProgressInterval, Logger: h.Logger}
}

func (h *Transport) log() *slog.Logger {
	return upload.OrDiscard(h.Logger)
}

// smallConfig is the timing of a request without a body.
func (h *Transport) smallConfig() post.Config {
	idle := smallIdle
	if h.IdleTimeout > 0 && h.IdleTimeout < idle {
		idle = h.IdleTimeout
	}
	return h.config(idle)
}

// referer is the header Tasmota's check wants: http://, then the host
// (name or IPv4) the device is reached by.
func referer(host string) string { return "Referer: " + devinfo.TasmotaReferer(host) }

// sendFile is the upgrade page's own flow: GET /up, then the multipart
// POST /u2?fsz=<size>.
func (h *Transport) sendFile(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, authz string, emit upload.Emit) error {
	form, err := post.NewForm(fw.Data, field, post.FileName(fw.Name, "firmware.bin"))
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: err.Error()}
	}
	cfg := h.config(0)
	ctx, cancel := post.WithTimeout(ctx, cfg)
	defer cancel()
	addr, host := post.HostPort(t.Host, t.Port, DefaultPort)
	redact := post.Redactor(cred)

	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: "reading the device's Status 0 (its chip and free space)"})
	if body, err := h.command(ctx, t, authz, "Status 0"); err == nil {
		if st, _ := devinfo.ParseTasmotaStatus(body); st.Chip() == "esp8266" && st.FreeKiB != nil && len(fw.Data) > 0 && fw.Data[0] == 0xE9 && fw.Size() > *st.FreeKiB*1024 {
			// Its updater would fail at the first byte past the free space
			// ("Not enough space", on a 200 page), the whole upload spent.
			return &upload.RefusedError{Reason: fmt.Sprintf("the image (%s) does not fit in this ESP8266's free program space (%d KiB): Tasmota upgrades it in two steps through its -minimal image; use --via-url with tasmota-minimal.bin beside the firmware, or upload the minimal image first", post.ByteCount(fw.Size()), *st.FreeKiB)}
		}
	} else {
		var de *upload.DeviceError
		if !errors.As(err, &de) || de.Status == 0 || de.Class == upload.ClassAuth {
			// No answer (the Referer check's silence, a connect that
			// failed), or the credentials: the page would get the same.
			return err
		}
		// Another answer (no /cm?): the upgrade page may still be there.
		h.log().Debug("Status 0 not read before the upload", "addr", addr, "err", err)
	}
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: "opening the device's upgrade page (GET " + upPath + ")"})
	a, err := post.Exchange(ctx, h.smallConfig(), addr, "GET "+upPath, post.Head("GET", upPath, host, referer(host), authz))
	if err != nil {
		return silence(err, "GET "+upPath, host)
	}
	if de := pageFailure(a, "GET "+upPath, authz != ""); de != nil {
		if de.Words != "" {
			de.Words = a.WordsWith(redact)
		}
		return de
	}
	if factoryUpload(a.Body) {
		// The app of a safeboot layout cannot take the upload ("Not enough
		// space", no restart): the page restarts into safeboot first
		// (GET /u4), which push never sends.
		return &upload.RefusedError{Reason: "this device has the safeboot layout (its upgrade page restarts it into safeboot before it uploads, which push does not do): use --via-url; nothing was sent"}
	}
	target := uploadPath + "?fsz=" + strconv.FormatInt(fw.Size(), 10)
	head := post.Head("POST", target, host,
		referer(host),
		"Content-Type: "+form.ContentType,
		"Content-Length: "+strconv.FormatInt(form.Size(fw.Size()), 10),
		authz)
	err = post.Send(ctx, cfg, post.Request{Addr: addr, Head: head, Prefix: form.Prefix, Suffix: form.Suffix, Data: fw.Data,
		Redact: redact, Judge: h.judgeUpload(authz != ""), Waiting: "waiting for the device to read the upload"}, emit)
	var de *upload.DeviceError
	if errors.As(err, &de) && de.Status == 0 && de.Taken == 0 && !errors.Is(err, context.Canceled) {
		de.Reason += "; " + gateHint(host)
	}
	return err
}

// factoryUpload reports whether an upgrade page is the one Tasmota serves
// on an ESP32 safeboot layout's app (HTTP_FORM_RST_UPG_FCT: its button
// calls the page script's upl(), which restarts into safeboot before it
// submits). Markup only: the page's words are translated.
func factoryUpload(page []byte) bool {
	return bytes.Contains(page, []byte("upl(this)")) || bytes.Contains(page, []byte("data-fct"))
}

// judgeUpload reads the answer to POST /u2: any 200 is the device's page
// of the result, in its build's language, which decides nothing (the
// verification reads what it runs); a 401 is the credentials.
func (h *Transport) judgeUpload(sentAuth bool) func(a *post.Answer, words string) *upload.DeviceError {
	return func(a *post.Answer, words string) *upload.DeviceError {
		if a.Status == 200 {
			h.log().Debug("upload answered", "status", a.Status, "words", upload.CleanText(words, 120))
			return nil
		}
		de := &upload.DeviceError{Status: a.Status, Words: words}
		if a.Status == 401 || a.Status == 403 {
			de.Class, de.Reason = authFailure(sentAuth)
			return de
		}
		de.Class, de.Reason = upload.ClassifyAnswer(a.Status, words)
		return de
	}
}

// pageFailure reads the answer to a request without a body (GET /up, a
// /cm command): nil for 200.
func pageFailure(a *post.Answer, what string, sentAuth bool) *upload.DeviceError {
	if a.Status == 200 {
		return nil
	}
	de := &upload.DeviceError{Status: a.Status, Words: a.Words()}
	switch {
	case a.Status == 401 || a.Status == 403:
		de.Class, de.Reason = authFailure(sentAuth)
	case a.Status == 404:
		de.Class, de.Reason = upload.ClassRejected, fmt.Sprintf("the device has no %s: is this Tasmota's web server (and its web server in admin mode, WebServer 2)?", strings.Fields(what)[1])
	default:
		de.Class, de.Reason = upload.ClassifyAnswer(a.Status, de.Words)
	}
	return de
}

func authFailure(sentAuth bool) (upload.Class, string) {
	if !sentAuth {
		return upload.ClassAuth, "the device asks for its web password (HTTP Basic, user admin): pass --password"
	}
	return upload.ClassAuth, "the device refused the password (HTTP Basic, user admin): check --password (and --user, if not admin)"
}

// gateHint says what Tasmota's silence usually means.
func gateHint(host string) string {
	return fmt.Sprintf("Tasmota answers nothing at all when a request fails its Referer check (push sent Referer http://%s/, which passes only when %s is the device's own IP address or host name; it is off with SetOption128 1, which push never changes), or while it restarts", host, upload.CleanText(host, 80))
}

// silence adds what Tasmota's silence usually means to a request that got
// no answer.
func silence(err error, what, host string) error {
	var de *upload.DeviceError
	if !errors.As(err, &de) || errors.Is(err, context.Canceled) {
		return err
	}
	if de.Class == upload.ClassNetwork || de.Class == upload.ClassTimeout {
		de.Reason = fmt.Sprintf("the device answered nothing to %s: %s", what, gateHint(host))
	}
	return err
}

// command sends one command over /cm and returns the device's JSON
// answer (at most 64 KiB).
func (h *Transport) command(ctx context.Context, t upload.Target, authz, cmnd string) ([]byte, error) {
	addr, host := post.HostPort(t.Host, t.Port, DefaultPort)
	path := cmPath + "?cmnd=" + strings.ReplaceAll(url.QueryEscape(cmnd), "+", "%20")
	what := "the command " + strings.Fields(cmnd)[0]
	a, err := post.Exchange(ctx, h.smallConfig(), addr, what, post.Head("GET", path, host, referer(host), authz, "Accept: application/json"))
	if err != nil {
		return nil, silence(err, what, host)
	}
	if de := pageFailure(a, "GET "+cmPath, authz != ""); de != nil {
		return nil, de
	}
	return a.Body, nil
}
