// Package form is the client of the Arduino web uploaders' form:
// arduino-esp32's HTTPUpdateServer, ESP8266HTTPUpdateServer and ESPEasy
// (which serves one or the other), all one multipart POST to /update.
// Transport implements upload.Transport, reports the family's
// upload.Traits and screens filesystem images per library and chip
// (upload.Screener). The wire facts, with their sources, are in
// docs/protocols/form.md.
package form

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

const (
	// DefaultPath is where HTTPUpdateServer takes uploads unless the
	// sketch names another path (ESPEasy always uses it).
	DefaultPath = "/update"
	// DefaultPort is the web port these libraries serve on.
	DefaultPort = 80
)

// The device families (upload.Target.Family, the values of detect.Family)
// whose web form this transport speaks; they differ only in what they do
// with a filesystem image.
const (
	// FamilyHTTPUpdateServer: arduino-esp32's HTTPUpdateServer or
	// ESP8266HTTPUpdateServer (Target.Chip tells which).
	FamilyHTTPUpdateServer = "httpupdateserver"
	// FamilyESPEasy: ESPEasy, which serves the HTTPUpdateServer form of
	// its chip without credentials.
	FamilyESPEasy = "espeasy"
	// FamilyElegantOTA2: ElegantOTA v2, whose POST /update answers in
	// other words; not spoken yet.
	FamilyElegantOTA2 = "elegantota2"
)

// The form's file fields, as the libraries' own upload pages name them:
// "filesystem" selects the filesystem, any other name the app.
const (
	fieldFirmware   = "firmware"
	fieldFilesystem = "filesystem"
)

// successWords are what HTTPUpdateServer (both chips, ESPEasy's copies
// too) answers, after a refresh tag, when the update was written: 200
// "Update Success! Rebooting...". A failure is 200 "Update error: …".
const successWords = "Update Success! Rebooting..."

// Transport uploads with one multipart POST: the image as the one file
// part, streamed from the firmware's bytes, with the Origin header that
// arduino-esp32's cross-site check wants and, when a user is given, HTTP
// Basic credentials sent up front. Success is the library's own words of
// success; its 200 "Update error: …" is a failure in the device's words.
//
// The zero value is ready to use.
type Transport struct {
	// ConnectTimeout bounds the TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends an upload when the device takes no byte and gives
	// no answer for this long; 0 means 30 s.
	IdleTimeout time.Duration
	// Timeout bounds the whole upload; 0 means none beyond the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
}

var (
	_ upload.WithTraits = (*Transport)(nil)
	_ upload.Screener   = (*Transport)(nil)
)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.Form }

// Traits implements upload.WithTraits: Arduino sketches, whose Update
// class checks an image's first byte and not its chip, in an app slot of
// the default partition scheme unless told otherwise. Which of them take
// a filesystem image is Screen's to say, per device.
func (*Transport) Traits() upload.Traits {
	return upload.Traits{ChipUnchecked: true, ArduinoSlot: true}
}

// Screen implements upload.Screener. App images go to every family of
// the form. A filesystem image goes only to an ESP8266HTTPUpdateServer
// known as such (Family httpupdateserver, Chip esp8266): ESPEasy's ESP32
// form writes nothing yet reports success, its ESP8266 one would overwrite
// ESPEasy's own settings, and arduino-esp32's HTTPUpdateServer sizes the
// upload by SPIFFS.totalBytes(), which fails on a LittleFS sketch.
func (*Transport) Screen(t upload.Target, fw *upload.Firmware) string {
	fam := strings.ToLower(t.Family)
	if fam == FamilyElegantOTA2 {
		return "looks like ElegantOTA v2, whose upload ots-ota does not speak yet"
	}
	if !fw.Filesystem {
		return ""
	}
	chip := strings.ToLower(t.Chip)
	switch {
	case fam == FamilyESPEasy:
		return "ESPEasy takes no filesystem image through its web form (on ESP32 it writes nothing and reports success; on ESP8266 it would overwrite ESPEasy's settings): send app images only"
	case chip != "" && chip != "esp8266":
		return fmt.Sprintf("arduino-esp32's HTTPUpdateServer sizes a filesystem upload by SPIFFS.totalBytes(), which fails on LittleFS sketches: ots-ota sends filesystem images through the form to ESP8266 devices only (this one is %s)", upload.CleanText(t.Chip, 20))
	case fam != FamilyHTTPUpdateServer || chip == "":
		return "a filesystem image goes through the web form only to a device known to run ESP8266HTTPUpdateServer (ESPEasy's and arduino-esp32's forms do not take one safely), and this device's library or chip is not known (the inventory's chip: esp8266 tells the chip)"
	}
	return ""
}

// Send implements upload.Transport: nil only when the device answered
// its words of success after taking the whole body; else a
// *upload.DeviceError whose Taken is the image bytes the device had
// acknowledged (or, for an upload Screen refuses, a *upload.RefusedError
// with nothing sent). Target.Port 0 means 80, Target.Path "" /update.
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if why := h.Screen(t, fw); why != "" {
		return &upload.RefusedError{Reason: why}
	}
	path := t.Path
	if path == "" {
		path = DefaultPath
	}
	if err := post.CheckPath(path); err != nil {
		return err
	}
	basic, err := post.Basic(cred)
	if err != nil {
		return err
	}
	field := fieldFirmware
	if fw.Filesystem {
		field = fieldFilesystem
	}
	form, err := post.NewForm(fw.Data, field, post.FileName(fw.Name, field+".bin"))
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: err.Error()}
	}
	addr, host := post.HostPort(t.Host, t.Port, DefaultPort)
	head := post.Head("POST", path, host,
		// arduino-esp32's HTTPUpdateServer (since its CSRF fix) writes
		// nothing unless Origin is exactly "http://" + the Host header.
		"Origin: http://"+host,
		"Content-Type: "+form.ContentType,
		"Content-Length: "+strconv.FormatInt(form.Size(fw.Size()), 10),
		basic)
	cfg := post.Config{ConnectTimeout: h.ConnectTimeout, IdleTimeout: h.IdleTimeout, Timeout: h.Timeout,
		ProgressInterval: h.ProgressInterval, Logger: h.Logger}
	return post.Send(ctx, cfg, post.Request{Addr: addr, Head: head, Prefix: form.Prefix, Suffix: form.Suffix, Data: fw.Data,
		Redact: post.Redactor(cred), Judge: judge(basic != ""), Waiting: "waiting for the device to read the upload"}, emit)
}

// judge reads the libraries' answers: their words of success; their 200
// "Update error: …" and the rest through the core's one table; a 401 as
// missing or refused credentials.
func judge(sentUser bool) func(a *post.Answer, words string) *upload.DeviceError {
	return func(a *post.Answer, words string) *upload.DeviceError {
		failed := upload.FailureTextAt(words) >= 0
		if a.Status == 200 && !failed && strings.Contains(words, successWords) {
			return nil
		}
		de := &upload.DeviceError{Status: a.Status, Words: words}
		switch {
		case a.Status == 401 && !sentUser:
			de.Class, de.Reason = upload.ClassAuth, "the device asks for a user name and password (HTTP Basic): pass --user and --password"
		case a.Status == 401 || a.Status == 403:
			de.Class, de.Reason = upload.ClassAuth, "the device refused the user name and password: check --user and --password"
		case a.Status >= 200 && a.Status <= 299 && !failed:
			// Neither words of success nor of failure: not the library's
			// form, or a sketch's own handler. Read the device before
			// concluding anything.
			de.Class, de.Err = upload.ClassRejected, upload.ErrFailurePage
			de.Reason = fmt.Sprintf("the device answered %d without the form's words of success (%q): is this its upload form?", a.Status, successWords)
		default:
			de.Class, de.Reason = upload.ClassifyAnswer(a.Status, words)
			if a.Status >= 200 && a.Status <= 299 {
				de.Err = upload.ErrFailurePage
			}
		}
		return de
	}
}
