package devinfo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
)

// TasmotaStatus is what ots-ota reads of Tasmota's answer to the commands
// Status 0 (every section) or Status 2 (StatusFWR only), sent over the
// HTTP API GET /cm (docs/protocols/tasmota.md). Strings not told are "",
// numbers not told nil: unknown, never a zero standing in.
type TasmotaStatus struct {
	// Version is StatusFWR.Version as told: the release, the image name
	// in parentheses and, on some builds, more ("14.3.0(tasmota)",
	// "15.0.1(release-tasmota32)", "14.3.0(minimal)").
	Version string `json:"version,omitempty"`
	// BuildDateTime is StatusFWR.BuildDateTime ("2024-10-08T10:00:00").
	BuildDateTime string `json:"build_date_time,omitempty"`
	// Hardware is StatusFWR.Hardware ("ESP8266EX", "ESP32-D0WD-V3",
	// "ESP32-S3").
	Hardware string `json:"hardware,omitempty"`
	// OtaURL is StatusPRM.OtaUrl; OtaURLTold says it was told (an empty
	// OtaUrl is a told value).
	OtaURL     string `json:"ota_url,omitempty"`
	OtaURLTold bool   `json:"-"`
	// Uptime is StatusPRM.Uptime as told ("1T02:03:04"); UptimeS is it in
	// seconds (StatusSTS.UptimeSec where told, else Uptime read), nil
	// when neither is told or readable.
	Uptime  string `json:"uptime,omitempty"`
	UptimeS *int64 `json:"uptime_s,omitempty"`
	// BootCount is StatusPRM.BootCount: it counts every boot.
	BootCount *int64 `json:"boot_count,omitempty"`
	// FreeKiB is StatusMEM.Free: the free program (sketch) space in KiB,
	// which bounds an image the running firmware can fetch.
	FreeKiB *int64 `json:"free_kib,omitempty"`
	// Hostname and Mac are StatusNET's.
	Hostname string `json:"hostname,omitempty"`
	Mac      string `json:"mac,omitempty"`
}

// ErrNotTasmota: the body is JSON, but tells no Tasmota status section.
var ErrNotTasmota = errors.New("not Tasmota's status (no StatusFWR or StatusPRM)")

// ParseTasmotaStatus reads the body of /cm?cmnd=Status%200 (or Status 2).
// It fails when the body is no JSON object, tells neither StatusFWR nor
// StatusPRM, or a field it reads has the wrong type.
func ParseTasmotaStatus(b []byte) (TasmotaStatus, error) {
	var raw struct {
		FWR map[string]json.RawMessage `json:"StatusFWR"`
		PRM map[string]json.RawMessage `json:"StatusPRM"`
		MEM map[string]json.RawMessage `json:"StatusMEM"`
		NET map[string]json.RawMessage `json:"StatusNET"`
		STS map[string]json.RawMessage `json:"StatusSTS"`
	}
	if err := unmarshalObject(b, &raw); err != nil {
		return TasmotaStatus{}, err
	}
	if raw.FWR == nil && raw.PRM == nil {
		return TasmotaStatus{}, ErrNotTasmota
	}
	var s TasmotaStatus
	var up *int64
	errs := fieldErrors(
		named("StatusFWR.Version", jsonString(raw.FWR["Version"], &s.Version)),
		named("StatusFWR.BuildDateTime", jsonString(raw.FWR["BuildDateTime"], &s.BuildDateTime)),
		named("StatusFWR.Hardware", jsonString(raw.FWR["Hardware"], &s.Hardware)),
		named("StatusPRM.OtaUrl", jsonString(raw.PRM["OtaUrl"], &s.OtaURL)),
		named("StatusPRM.Uptime", jsonString(raw.PRM["Uptime"], &s.Uptime)),
		named("StatusPRM.BootCount", jsonNonNegative(raw.PRM["BootCount"], &s.BootCount)),
		named("StatusMEM.Free", jsonNonNegative(raw.MEM["Free"], &s.FreeKiB)),
		named("StatusNET.Hostname", jsonString(raw.NET["Hostname"], &s.Hostname)),
		named("StatusNET.Mac", jsonString(raw.NET["Mac"], &s.Mac)),
		named("StatusSTS.UptimeSec", jsonNonNegative(raw.STS["UptimeSec"], &up)),
	)
	if m := raw.PRM["OtaUrl"]; len(m) > 0 && string(m) != "null" && s.OtaURL == "" {
		// Told as "" (or as something that cleaned to nothing).
		var v string
		s.OtaURLTold = json.Unmarshal(m, &v) == nil && strings.TrimSpace(v) == ""
	} else {
		s.OtaURLTold = s.OtaURL != ""
	}
	if up == nil {
		up = tasmotaUptime(s.Uptime)
	}
	s.UptimeS = up
	if len(errs) > 0 {
		return s, fmt.Errorf("tasmota status: %w", oneLine(errs))
	}
	return s, nil
}

// tasmotaUptime reads Tasmota's uptime text, "<days>T<hh>:<mm>:<ss>";
// nil when it is not that.
func tasmotaUptime(s string) *int64 {
	d, hms, ok := strings.Cut(s, "T")
	parts := strings.Split(hms, ":")
	if !ok || len(parts) != 3 {
		return nil
	}
	days, err := strconv.ParseInt(d, 10, 32)
	if err != nil || days < 0 {
		return nil
	}
	total := days * 86400
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil || n < 0 || len(p) != 2 || i > 0 && n > 59 {
			return nil
		}
		total += n * []int64{3600, 60, 1}[i]
	}
	return &total
}

// The image names Tasmota builds into its Version that are loaders, not
// the firmware: the ESP8266 minimal image (the first of two steps when
// the full image does not fit beside the running one) and the ESP32
// safeboot image (the factory partition that fetches the real one).
var tasmotaIntermediate = []string{"minimal", "safeboot"}

// Release is the numeric part of Version, the release ("14.3.0" of
// "14.3.0(tasmota)"), "" when Version starts with no digit.
func (s TasmotaStatus) Release() string {
	v := s.Version
	end := strings.IndexFunc(v, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if end < 0 {
		end = len(v)
	}
	rel := strings.TrimRight(v[:end], ".")
	if rel == "" || rel[0] < '0' || rel[0] > '9' {
		return ""
	}
	return rel
}

// Image is the image name Version carries in parentheses ("tasmota",
// "release-tasmota32", "minimal"), "" when none.
func (s TasmotaStatus) Image() string {
	_, rest, ok := strings.Cut(s.Version, "(")
	if !ok {
		return ""
	}
	name, _, ok := strings.Cut(rest, ")")
	if !ok {
		return ""
	}
	return strings.TrimSpace(name)
}

// Intermediate names the loader image the device runs ("minimal",
// "safeboot"), "" when it runs a firmware image (or tells no image).
// Such an image is a step of an upgrade, never its end.
func (s TasmotaStatus) Intermediate() string {
	img := strings.ToLower(s.Image())
	for _, w := range tasmotaIntermediate {
		if img == w || strings.HasSuffix(img, "-"+w) || strings.HasPrefix(img, w+"-") {
			return w
		}
	}
	return ""
}

// Chip is the chip StatusFWR.Hardware names, in the image package's
// words ("esp8266", "esp32s3"), "" when it names none ots-ota knows.
func (s TasmotaStatus) Chip() string {
	h := strings.ToUpper(strings.TrimSpace(s.Hardware))
	switch {
	case h == "":
		return ""
	case strings.HasPrefix(h, "ESP8266"), strings.HasPrefix(h, "ESP8285"):
		return image.ChipESP8266.String()
	case strings.HasPrefix(h, "ESP32-"):
		// "ESP32-S3", "ESP32-C3"; the classic chip reports its package
		// ("ESP32-D0WD-V3", "ESP32-PICO-D4").
		rest := strings.FieldsFunc(h[len("ESP32-"):], func(r rune) bool { return r == '-' || r == ' ' })
		if len(rest) == 0 {
			return ""
		}
		return tasmotaESP32(rest[0])
	case h == "ESP32":
		return image.ChipESP32.String()
	}
	return ""
}

// TasmotaStatusPath is the HTTP API request for every status section.
const TasmotaStatusPath = "/cm?cmnd=Status%200"

// TasmotaReferer is the Referer Tasmota's check wants on its privileged
// pages and its API: http://, then the device's host name or IPv4 (the
// check reads the text from index 7). hostPort is what the Host header
// names.
func TasmotaReferer(hostPort string) string { return "http://" + hostPort + "/" }

// GetTasmotaStatus fetches and parses Status 0 from addr (host:port of
// the device's web server), with the Referer Tasmota wants and, when
// authz is not empty, that Authorization header. A 401 (Tasmota's JSON
// WARNING: a WebPassword is set) gives ErrNotServed.
func GetTasmotaStatus(ctx context.Context, addr string, authz auth.Secret, o Options) (TasmotaStatus, error) {
	hdr := []string{"Referer", TasmotaReferer(hostHeader(addr))}
	if !authz.IsZero() {
		hdr = append(hdr, "Authorization", authz.Reveal())
	}
	// Status 0 grows with the sensors a build reads: its sections come
	// first, so a cut body still parses up to them.
	b, err := getBody(ctx, addr, TasmotaStatusPath, o, true, hdr...)
	return parseAnswer(b, err, ParseTasmotaStatus)
}

// hostHeader is what Go's client sends as Host for addr: the port is
// left out when it is 80.
func hostHeader(addr string) string {
	if h, p, err := net.SplitHostPort(addr); err == nil && p == "80" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return addr
}

// queryTasmota is Query for a Tasmota device: Status 0 on Port, nothing
// else (its web server is the one that takes uploads and commands).
func queryTasmota(ctx context.Context, t Target, addr string, o Options, f *Facts) {
	f.Protocol = Fact{ProtoHTTP, FromTarget}
	st, err := GetTasmotaStatus(ctx, addr, t.Authorization, o)
	f.Silent = f.noteRead("GET /cm Status 0", err)
	if err == nil {
		f.Tasmota = &st
	}
}

// tasmotaESP32 reads the word after "ESP32-" in Hardware: a chip
// ("S3", "C3") or the classic chip's package ("D0WD", "PICO").
func tasmotaESP32(w string) string {
	if c, ok := image.ChipByName("esp32" + w); ok {
		return c.String()
	}
	for _, p := range []string{"D0", "D2", "PICO", "U4", "SOLO"} {
		if strings.HasPrefix(w, p) {
			return image.ChipESP32.String()
		}
	}
	return ""
}
