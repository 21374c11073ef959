package devinfo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/detect"
)

// Source says where a fact came from.
type Source string

// The sources of facts.
const (
	FromOTAStatus Source = "/ota/status" // GET /ota/status on the OTA port
	FromAPIStatus Source = "/api/status" // GET /api/status on the web port
	FromTXT       Source = "txt"         // the mDNS TXT record
	FromJSON      Source = "/json"       // ESPEasy's GET /json on the web port
	FromProbe     Source = "tcp-probe"   // a TCP connect to the OTA port
	FromTasmota   Source = "Status 0"    // Tasmota's GET /cm?cmnd=Status%200
	FromTarget    Source = "target"      // given by the caller (inventory, flag)
)

// Fact is one thing known about a device, with its source. The zero Fact
// means unknown.
type Fact struct {
	Value  string `json:"value"`
	Source Source `json:"source"`
}

// Known reports whether the fact has a value.
func (f Fact) Known() bool { return f.Value != "" }

// Protocols.
const (
	ProtoHTTP   = "http"
	ProtoEspota = "espota"
)

// Target says where to ask. Host and Port are required in effect (Port 0
// means 3232); everything else is optional knowledge from discovery or the
// inventory.
type Target struct {
	// Name is how the user named the device (for messages only).
	Name string
	// Host is an IP address or a name the system resolves. Callers resolve
	// ".local" names themselves (package discover) and pass the address.
	Host string
	// Port is the OTA port; 0 = 3232.
	Port int
	// WebPort is the web app's port; 0 = 80, negative = none.
	WebPort int
	// Protocol, when known ("http" or "espota"), skips the probe.
	Protocol string
	// TXT is the device's TXT record (ParseTXT), nil when unknown.
	TXT map[string]string
	// ReadJSON: also GET /json on the web port, where ESPEasy tells its
	// build (the Arduino web uploaders tell no version of their own).
	ReadJSON bool
	// WLED: the device is WLED: only GET /json/info on the web port is
	// asked, WLED's one server (it serves no /ota/status and no
	// /api/status).
	WLED bool
	// Tasmota: the device runs Tasmota, whose only source is Status 0 over
	// its HTTP API on Port (GET /cm, with the Referer its check wants);
	// nothing else is asked. Port is its web port (0 still means 3232:
	// give 80).
	Tasmota bool
	// Authorization is the Authorization header's value for Tasmota's
	// /cm ("Basic …"), empty for none. It is never printed.
	Authorization auth.Secret
	// Service is the mDNS service type TXT came from ("" = not told).
	// _esphomelib._tcp (or Protocol esphome) reads the record alone and
	// sends nothing: ESPHome's OTA port takes no other request.
	Service string
}

// Options tune Query. The zero value is usable.
type Options struct {
	// Timeout bounds each connection and request; 0 = 3 s.
	Timeout time.Duration
	// Dial opens TCP connections; nil = a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Facts is everything Query learned about one device.
type Facts struct {
	Target string `json:"target"`
	// Address is the OTA endpoint asked, host:port.
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
	// Unconfirmed: the OTA port refused TCP, which an ArduinoOTA device
	// does (it listens on UDP), but so does any host with nothing there.
	// Without an mDNS record backing it, espota is assumed, not seen, and
	// the device does not count as reachable.
	Unconfirmed bool `json:"unconfirmed,omitempty"`
	// NothingListens: the OTA port refused TCP and its UDP port answered
	// an empty datagram with ICMP port unreachable, and no mDNS record
	// backs a device there: neither HTTP nor espota listens at Address.
	// Protocol is then unknown and Reachable false.
	NothingListens bool `json:"nothing_listens,omitempty"`
	Protocol       Fact `json:"protocol"`
	// Auth: none, bearer, basic (TXT auth or /ota/status), required or none
	// for espota (TXT auth_upload); unknown when nothing told.
	Auth    Fact `json:"auth"`
	Project Fact `json:"project"`
	Version Fact `json:"version"`
	// VersionNote is the one-line reason when Version is unknown.
	VersionNote string `json:"version_note,omitempty"`
	Chip        Fact   `json:"chip"`
	Board       Fact   `json:"board"`
	IDF         Fact   `json:"idf"`
	Running     Fact   `json:"running"`
	Boot        Fact   `json:"boot"`
	State       Fact   `json:"state"`
	// Uptime in whole seconds, as text.
	Uptime Fact `json:"uptime_s"`
	// OTA and API are the parsed bodies, nil when not served.
	OTA *OTAStatus `json:"ota_status,omitempty"`
	// Silent: a connect met silence (timed out, or no route to the host),
	// as a rebooting or powered-off device does; a refusal or a slow
	// answer is not silence. Verification counts it towards a restart.
	Silent bool       `json:"-"`
	API    *APIStatus `json:"api_status,omitempty"`
	// ESPEasy is what ESPEasy's GET /json told (Target.ReadJSON), nil when
	// not read or not ESPEasy's.
	ESPEasy *ESPEasyJSON `json:"espeasy,omitempty"`
	// WLED is what WLED's GET /json/info told (Target.WLED), nil when not
	// read or not WLED's.
	WLED *WLEDInfo `json:"wled,omitempty"`
	// Tasmota is what Tasmota's Status 0 told (Target.Tasmota), nil when
	// not read.
	Tasmota *TasmotaStatus `json:"tasmota,omitempty"`
	// ESPHome is what an ESPHome device's _esphomelib._tcp TXT record
	// told, nil when it is no ESPHome device or no record was found.
	ESPHome *ESPHomeTXT `json:"esphome,omitempty"`
	// Notes say what was tried and failed, one line each.
	Notes []string `json:"notes,omitempty"`
	// ConnectErr is the first connect that failed, when the device did not
	// answer (Reachable false): for a caller to word it in one line
	// (upload.ClassifyDial, as push words its own). Nil otherwise.
	ConnectErr error `json:"-"`

	otaAnswered bool // /ota/status answered 200 with a body that did not parse
}

// Sentinel errors for GetOTAStatus and GetAPIStatus.
var (
	// ErrNotServed: the device answered, but not with 200 (e.g. 404: the
	// firmware has no such handler).
	ErrNotServed = errors.New("not served")
	// ErrRefused: the port refused the connection.
	ErrRefused = errors.New("connection refused")
	// ErrBadAnswer: the device answered 200 with a body that does not parse.
	ErrBadAnswer = errors.New("unreadable answer")
)

const maxBody = 64 << 10

// Query asks one device what it runs. It fails only for an unusable
// target; an unreachable device is a result (Reachable false), not an error.
func Query(ctx context.Context, t Target, o Options) (Facts, error) {
	if strings.TrimSpace(t.Host) == "" {
		return Facts{}, errors.New("query device: no host")
	}
	if t.Port < 0 || t.Port > 65535 || t.WebPort > 65535 {
		return Facts{}, fmt.Errorf("query %s: port out of range", t.Host)
	}
	port := t.Port
	if port == 0 {
		port = 3232
	}
	name := t.Name
	if name == "" {
		name = t.Host
	}
	addr := net.JoinHostPort(t.Host, strconv.Itoa(port))
	f := Facts{Target: name, Address: addr}
	o = o.withDefaults()
	if t.Protocol == ProtoESPHome || strings.EqualFold(strings.TrimSuffix(t.Service, ".local"), ESPHomeService) {
		f.queryESPHome(t)
		return f, nil
	}
	// The first failed connect, whichever step made it (the port probe,
	// a GET): what a device that does not answer is reported by.
	var connMu sync.Mutex
	var connErr error
	dial := o.Dial
	o.Dial = func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := dial(ctx, network, a)
		if err != nil {
			connMu.Lock()
			if connErr == nil {
				connErr = err
			}
			connMu.Unlock()
		}
		return c, err
	}

	if t.WLED {
		return queryWLED(ctx, t, o, &f, func() error {
			connMu.Lock()
			defer connMu.Unlock()
			return connErr
		}), nil
	}

	if t.Tasmota {
		queryTasmota(ctx, t, addr, o, &f)
		f.fill(t)
		if !f.Reachable {
			connMu.Lock()
			f.ConnectErr = connErr
			connMu.Unlock()
		}
		return f, nil
	}
	// silent: the OTA port timed out, as a rebooting or powered-off device
	// does; its web port would only spend another timeout.
	silent := false
	switch t.Protocol {
	case ProtoHTTP:
		f.Protocol = Fact{ProtoHTTP, FromTarget}
	case ProtoEspota:
		// ArduinoOTA answers nothing that does not change it (an invitation
		// starts an update): a TCP connect is all that may be tried, as on
		// the probe path, and TXT evidence decides the rest.
		p, ok, timedOut := probe(ctx, addr, o, &f, true)
		f.Protocol, f.Reachable, silent = Fact{ProtoEspota, FromTarget}, ok && p.Value == ProtoHTTP, timedOut
		f.Unconfirmed = p.Value == ProtoEspota
	default:
		// The detection table's port step (package detect): the empty
		// datagram only when no mDNS record backs a device there.
		var ok bool
		f.Protocol, ok, silent = probe(ctx, addr, o, &f, t.TXT != nil)
		f.Reachable = ok && f.Protocol.Value == ProtoHTTP
		f.Unconfirmed = f.Protocol.Value == ProtoEspota
	}
	if f.Unconfirmed && t.TXT != nil {
		// The device answered mDNS moments ago: that is a sighting.
		f.Reachable, f.Unconfirmed = true, false
	}
	if f.Unconfirmed {
		f.Notes = append(f.Notes, "TCP connect to "+addr+" refused: espota assumed, not confirmed (no mDNS record of a device there)")
	}
	if f.Protocol.Value == ProtoHTTP && !silent {
		st, err := GetOTAStatus(ctx, addr, o)
		silent = f.noteRead("GET /ota/status", err) || silent
		f.otaAnswered = errors.Is(err, ErrBadAnswer)
		if err == nil {
			f.OTA = &st
		}
	}
	if t.WebPort >= 0 && f.Protocol.Value != ProtoEspota && ctx.Err() == nil {
		wp := t.WebPort
		if wp == 0 {
			wp = 80
		}
		if silent {
			f.Notes = append(f.Notes, "GET /api/status: not tried, the OTA port did not answer")
		} else {
			st, err := GetAPIStatus(ctx, net.JoinHostPort(t.Host, strconv.Itoa(wp)), o)
			f.noteRead("GET /api/status", err)
			if err == nil {
				f.API = &st
			}
		}
		if t.ReadJSON && !silent && ctx.Err() == nil {
			st, err := GetESPEasyJSON(ctx, net.JoinHostPort(t.Host, strconv.Itoa(wp)), o)
			f.noteRead("GET /json", err)
			if err == nil {
				f.ESPEasy = &st
			}
		}
	}
	f.Silent = silent
	f.fill(t)
	if !f.Reachable {
		connMu.Lock()
		f.ConnectErr = connErr
		connMu.Unlock()
	}
	return f, nil
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	return o
}

// probe is the detection table's port step (detect.ProbePort): accepted
// → "http", refused → "espota" (a refusal alone does not show a device),
// refused with the UDP port unreachable → nothing listens (noUDP skips that
// datagram). ok: the port answered, accepted or refused. timedOut: the
// connect met silence.
func probe(ctx context.Context, addr string, o Options, f *Facts, noUDP bool) (p Fact, ok, timedOut bool) {
	pa := detect.ProbePort(ctx, addr, detect.PortOptions{Timeout: o.Timeout, UDPWait: min(o.Timeout, detect.UDPWait), NoUDP: noUDP, Dial: o.Dial})
	switch pa.Kind {
	case detect.Accepted:
		return Fact{ProtoHTTP, FromProbe}, true, false
	case detect.Refused:
		return Fact{ProtoEspota, FromProbe}, true, false
	case detect.Closed:
		// An ArduinoOTA device would have taken the empty datagram in
		// silence.
		f.NothingListens = true
		f.Notes = append(f.Notes, "nothing listens at "+addr+": TCP refused and the UDP port is unreachable, so it is neither an HTTP nor an espota device")
		return Fact{}, false, false
	}
	f.Notes = append(f.Notes, "TCP connect to "+addr+": "+pa.Words())
	return Fact{}, false, pa.Silent()
}

// errTimedOut marks a request that ran out of its own time.
var errTimedOut = errors.New("timed out")

// errSilent marks a request whose connect met silence: timed out, or no
// route to the host. It wraps errTimedOut where the connect timed out.
var errSilent = errors.New("no answer to the connect")

// parseAnswer parses a read's body; an answer that does not parse is
// ErrBadAnswer, a read that failed its own error.
func parseAnswer[T any](b []byte, err error, parse func([]byte) (T, error)) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	st, err := parse(b)
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrBadAnswer, err)
	}
	return st, nil
}

// noteRead records one status read in f: a device that answered, even
// "not served" or with an answer that did not parse, is reachable; a
// failed read is a note (what: the request). It tells whether the read met
// silence (no answer to the connect).
func (f *Facts) noteRead(what string, err error) (silent bool) {
	if err == nil {
		f.Reachable = true
		return false
	}
	f.Notes = append(f.Notes, what+": "+err.Error())
	if errors.Is(err, ErrNotServed) || errors.Is(err, ErrBadAnswer) {
		f.Reachable = true
		return false
	}
	return errors.Is(err, errSilent)
}

// dialReason words err in a few words. ctx is the caller's (cancelled
// means the user stopped), rctx the request's own (its deadline passing
// means timed out, whatever error the read or dial returned).
func dialReason(ctx, rctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return "cancelled"
	case ctx.Err() != nil:
		return "timed out" // the caller's deadline: a timeout all the same
	case rctx.Err() != nil, errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case detect.IsRefused(err):
		return "refused"
	case detect.IsUnreachable(err):
		return "no route to the device"
	default:
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			return oe.Err.Error()
		}
		return err.Error()
	}
}

// fill picks each fact from the best source (contract §4).
func (f *Facts) fill(t Target) {
	txt := t.TXT
	pick := func(dst *Fact, cands ...Fact) {
		for _, c := range cands {
			if c.Value != "" {
				*dst = c
				return
			}
		}
	}
	var ota OTAStatus
	if f.OTA != nil {
		ota = *f.OTA
	}
	var api APIStatus
	if f.API != nil {
		api = *f.API
	}
	var easy ESPEasyJSON
	if f.ESPEasy != nil {
		easy = *f.ESPEasy
	}
	var tas TasmotaStatus
	if f.Tasmota != nil {
		tas = *f.Tasmota
	}
	tx := func(k string) Fact { return Fact{txt[k], FromTXT} }
	oa := func(v string) Fact { return Fact{v, FromOTAStatus} }

	// ESPEasy's Git Build is its release tag: the name a user knows the
	// build by (its Build Time tells builds apart, but nobody knows it
	// before the build ran).
	// Tasmota's release is the numeric part of its Version; a loader
	// image (minimal, safeboot) tells its release too, but is a step of
	// an upgrade: its caller reads Tasmota.Intermediate().
	pick(&f.Version, oa(ota.Version), Fact{api.FirmwareVersion, FromAPIStatus}, Fact{easy.GitBuild, FromJSON}, Fact{tas.Release(), FromTasmota}, tx("version"))
	pick(&f.Project, oa(ota.Project), tx("project"))
	pick(&f.Chip, oa(ota.Chip), Fact{tas.Chip(), FromTasmota}, tx("chip"))
	pick(&f.Board, tx("board"))
	pick(&f.IDF, oa(ota.IDF))
	pick(&f.Running, oa(ota.Running))
	pick(&f.Boot, oa(ota.Boot))
	pick(&f.State, oa(ota.State))
	// Only a told uptime is a fact: an absent one is unknown, not 0 (an
	// uptime of 0 would read as a restart).
	switch {
	case ota.UptimeS != nil:
		f.Uptime = oa(strconv.FormatInt(*ota.UptimeS, 10))
	case api.Uptime != nil:
		f.Uptime = Fact{strconv.FormatInt(*api.Uptime, 10), FromAPIStatus}
	case tas.UptimeS != nil:
		f.Uptime = Fact{strconv.FormatInt(*tas.UptimeS, 10), FromTasmota}
	case easy.UptimeMS != nil:
		// "Uptime" alone (minutes) is no fact here: read a minute apart,
		// two whole-minute values would look like a restart.
		f.Uptime = Fact{strconv.FormatInt(*easy.UptimeMS/1000, 10), FromJSON}
	}
	pick(&f.Auth, oa(authWord(ota.Auth)), Fact{AuthFromTXT(txt), FromTXT})
	if !f.Version.Known() {
		f.VersionNote = f.versionReason(t)
	}
}

func authWord(s string) string {
	switch strings.ToLower(s) {
	case "none", "bearer", "basic":
		return strings.ToLower(s)
	}
	return ""
}

// AuthFromTXT reads what a TXT record says of upload auth: the ots-ota
// key auth (none, bearer, basic), else ArduinoOTA's auth_upload=yes|no
// (required, none); "" when it says nothing.
func AuthFromTXT(txt map[string]string) string {
	if a := authWord(txt["auth"]); a != "" {
		return a
	}
	return uploadAuth(txt)
}

// uploadAuth reads ArduinoOTA's auth_upload=yes|no.
func uploadAuth(txt map[string]string) string {
	switch strings.ToLower(txt["auth_upload"]) {
	case "yes":
		return "required"
	case "no":
		return "none"
	}
	return ""
}

func (f *Facts) versionReason(t Target) string {
	txt := t.TXT
	switch {
	case f.NothingListens:
		return "version not observable: nothing listens there"
	case f.Unconfirmed:
		return "version not observable: nothing confirms a device there (TCP refused, no mDNS record)"
	case !f.Reachable:
		return "version not observable: the device did not answer"
	case f.Protocol.Value == ProtoEspota:
		return "version not observable: ArduinoOTA firmware exposes no version on the network (add the TXT key version, see docs/firmware.md)"
	case f.otaAnswered:
		return "version not observable: /ota/status answered, but its body does not parse (see the note)"
	case t.Tasmota:
		return "version not observable: Tasmota's Status 0 told no StatusFWR.Version (see the notes)"
	case t.ReadJSON:
		return "version not observable: no /ota/status, no /api/status and no ESPEasy /json (a web uploader tells no version of its own)"
	case txt == nil:
		return "version not observable: no /ota/status or /api/status, and no mDNS TXT record known (seed firmware without ots-ota extensions exposes no version)"
	default:
		return "version not observable: no /ota/status, no /api/status and no TXT version (seed firmware without ots-ota extensions exposes no version)"
	}
}

// GetOTAStatus fetches and parses GET /ota/status from addr (host:port of
// the OTA port). A device that answers without 200 gives ErrNotServed.
func GetOTAStatus(ctx context.Context, addr string, o Options) (OTAStatus, error) {
	b, err := get(ctx, addr, "/ota/status", o)
	return parseAnswer(b, err, ParseOTAStatus)
}

// GetAPIStatus fetches and parses the OTS web app's GET /api/status from
// addr (host:port of the web port).
func GetAPIStatus(ctx context.Context, addr string, o Options) (APIStatus, error) {
	b, err := get(ctx, addr, "/api/status", o)
	return parseAnswer(b, err, ParseAPIStatus)
}

// GetESPEasyJSON fetches and parses ESPEasy's GET /json from addr (host:port
// of the web port). A body longer than the limit is cut, not refused: its
// System object comes first.
func GetESPEasyJSON(ctx context.Context, addr string, o Options) (ESPEasyJSON, error) {
	b, err := getBody(ctx, addr, "/json", o, true)
	return parseAnswer(b, err, ParseESPEasyJSON)
}

// get is the package's only HTTP request: a GET, one connection, no
// redirects, a bounded body.
func get(ctx context.Context, addr, path string, o Options) ([]byte, error) {
	return getBody(ctx, addr, path, o, false)
}

// getBody is get; cut keeps the first maxBody bytes of a longer body;
// headers are added to the request ("Name", "value" pairs).
func getBody(ctx context.Context, addr, path string, o Options, cut bool, headers ...string) ([]byte, error) {
	o = o.withDefaults()
	rctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	// connectSilent: the dial itself met silence, which a rebooting device
	// gives; a timeout after the connect is a slow answer, not silence.
	// (Atomic: the transport may still be dialling when Do gives up.)
	var connectSilent, dialled atomic.Bool
	dial := func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := o.Dial(ctx, network, a)
		if err != nil && !detect.IsRefused(err) {
			var ne net.Error
			connectSilent.Store(detect.IsUnreachable(err) || errors.As(err, &ne) && ne.Timeout() || errors.Is(ctx.Err(), context.DeadlineExceeded))
		}
		dialled.Store(err == nil)
		return c, err
	}
	tr := &http.Transport{
		DialContext:        dial,
		DisableKeepAlives:  true,
		DisableCompression: true,
		Proxy:              nil, // devices are local: never through a proxy
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, fmt.Errorf("bad address %q", addr)
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		if detect.IsRefused(err) {
			return nil, ErrRefused
		}
		r := dialReason(ctx, rctx, unwrapURL(err))
		// A request that ran out of time before its dial returned met
		// silence too.
		silent := connectSilent.Load() || r == "timed out" && !dialled.Load()
		switch {
		case silent && r == "timed out":
			return nil, fmt.Errorf("%w (%w)", errTimedOut, errSilent)
		case silent && r != "cancelled":
			return nil, fmt.Errorf("%s (%w)", r, errSilent)
		case r == "timed out":
			return nil, errTimedOut
		}
		return nil, errors.New(r)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w (HTTP %d)", ErrNotServed, resp.StatusCode)
	}
	if err != nil {
		r := dialReason(ctx, rctx, err)
		if r == "timed out" {
			return nil, fmt.Errorf("reading the answer: %w", errTimedOut)
		}
		return nil, fmt.Errorf("reading the answer: %s", r)
	}
	if len(b) > maxBody {
		if cut {
			return b[:maxBody], nil
		}
		return nil, fmt.Errorf("answer larger than %d KiB", maxBody>>10)
	}
	return b, nil
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
