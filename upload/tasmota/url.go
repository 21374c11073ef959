package tasmota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
)

// FileServer is what the upgrade by URL needs of a running file server
// (package fileserve's *Server).
type FileServer interface {
	// URL is the whole URL of a served name.
	URL(name string) string
	Close() error
}

// Fetch is one request a device made of the file server, once answered
// (package fileserve's Fetch, field for field).
type Fetch struct {
	Name   string // the served name asked for; "" when the path was refused
	Remote string // the fetcher's ip:port
	MAC    string // x-ESP8266-STA-MAC or x-ESP32-STA-MAC; "" when not told
	Status int    // HTTP status sent
	Bytes  int64  // body bytes written
	Range  string // the request's Range header, "" if none
}

// ServeFunc starts a file server bound to addr ("IP:PORT", port 0 = any)
// that serves files (served name → local path) and nothing else, calling
// onFetch after each request (package fileserve's Start).
type ServeFunc func(addr string, files map[string]string, onFetch func(Fetch)) (FileServer, error)

// RouteFunc is the local address that routes to dst (fileserve.RouteAddr).
type RouteFunc func(dst netip.Addr) (netip.Addr, error)

// DefaultFetchIdle is how long a device told to upgrade may fetch nothing
// before it is given up: an ESP8266 that fetched the minimal image restarts,
// joins its Wi-Fi and waits a few seconds before it fetches the firmware.
const DefaultFetchIdle = 2 * time.Minute

// Server serves one push's image, and its companions, to the devices that
// fetch it themselves. One file server runs per local address that routes
// to the devices (or at Addr), for the whole push: Close stops them all.
// Every served file sits beside the image the user named.
type Server struct {
	// Serve starts a file server; Route finds the local address that
	// routes to a device. Both required.
	Serve ServeFunc
	Route RouteFunc
	// Addr is what to bind (--serve-addr): "IP" or "IP:PORT"; "" = the
	// local address that routes to each device, any port.
	Addr string
	// FetchIdle bounds the wait for a device's next fetch; 0 = DefaultFetchIdle.
	FetchIdle time.Duration
	// Logger receives a line per fetch (which device fetched what); nil
	// discards them.
	Logger *slog.Logger

	mu      sync.Mutex
	set     *fileSet
	servers map[string]FileServer // by bind address
	watches map[*watcher]bool
	// restore is the OtaUrl each device told before push set its own
	// (by target address), until Finish puts it back.
	restore map[string]string
	closed  bool
}

// The names the files are served by. The device derives the minimal
// image's URL from the firmware's (the file name up to its first "." or
// last "-", then "-minimal" and the same extension) and, after half its
// tries, adds ".gz": these names keep that derivation exact.
const (
	servedStem = "fw"
	minimalTag = "-minimal"
)

// fileSet is the image and its companions, found once.
type fileSet struct {
	files   map[string]string // served name → local path
	sizes   map[string]int64
	main    string // the firmware's served name
	minimal bool   // a -minimal companion is served
	err     error
}

// files finds fw's companions beside it: the -minimal image (Tasmota's
// release names: tasmota.bin and tasmota-minimal.bin, tasmota-DE.bin and
// tasmota-minimal.bin) and the .gz of each.
func findFiles(name string) *fileSet {
	fs := &fileSet{files: map[string]string{}, sizes: map[string]int64{}}
	dir, base := filepath.Split(name)
	ext := ".bin"
	switch {
	case strings.HasSuffix(strings.ToLower(base), ".bin.gz"):
		ext = ".bin.gz"
	case strings.HasSuffix(strings.ToLower(base), ".bin"):
	default:
		fs.err = fmt.Errorf("%s: a Tasmota device fetches a .bin or .bin.gz image by URL", base)
		return fs
	}
	stem := base[:len(base)-len(ext)]
	add := func(served, path string) bool {
		st, err := os.Stat(path)
		if err != nil || !st.Mode().IsRegular() {
			return false
		}
		fs.files[served], fs.sizes[served] = path, st.Size()
		return true
	}
	fs.main = servedStem + ext
	if !add(fs.main, name) {
		fs.err = fmt.Errorf("%s: cannot read it to serve it", base)
		return fs
	}
	if ext == ".bin" {
		add(fs.main+".gz", name+".gz")
	}
	stems := []string{stem}
	if i := strings.LastIndexByte(stem, '-'); i > 0 {
		stems = append(stems, stem[:i])
	}
	for _, e := range []string{".bin", ".bin.gz"} {
		for _, s := range stems {
			if add(servedStem+minimalTag+e, filepath.Join(dir, s+minimalTag+e)) {
				fs.minimal = true
				break
			}
		}
	}
	return fs
}

func (s *Server) log() *slog.Logger {
	return upload.OrDiscard(s.Logger)
}

func (s *Server) fetchIdle() time.Duration {
	if s.FetchIdle > 0 {
		return s.FetchIdle
	}
	return DefaultFetchIdle
}

// files is the image's file set, found at the first call.
func (s *Server) files(fw *upload.Firmware) *fileSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = findFiles(fw.Name)
	}
	return s.set
}

// serverFor is the file server that devices at ip fetch from, started at
// the first call for its bind address.
func (s *Server) serverFor(ip netip.Addr, set *fileSet) (FileServer, error) {
	bind := s.Addr
	if bind == "" {
		la, err := s.Route(ip)
		if err != nil {
			return nil, fmt.Errorf("no local address routes to %s: %s", ip, oneLine(err))
		}
		bind = netip.AddrPortFrom(la, 0).String()
	} else if _, err := netip.ParseAddrPort(bind); err != nil {
		if a, perr := netip.ParseAddr(strings.Trim(bind, "[]")); perr == nil {
			bind = netip.AddrPortFrom(a, 0).String()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the push's file server has stopped")
	}
	if fs, ok := s.servers[bind]; ok {
		return fs, nil
	}
	fs, err := s.Serve(bind, set.files, s.fetched)
	if err != nil {
		return nil, fmt.Errorf("cannot serve the image on %s: %s", bind, oneLine(err))
	}
	if s.servers == nil {
		s.servers = map[string]FileServer{}
	}
	s.servers[bind] = fs
	// The file server logs its start and every fetch at Info; this adds
	// only which bind it answers for, at the address it got.
	s.log().Debug("serving the image by URL", "addr", boundAddr(fs.URL(set.main)), "bind", bind, "files", len(set.files))
	return fs, nil
}

// watcher is one device waiting for its fetches: by its MAC where it told
// one (the fetch's x-ESP*-STA-MAC says who fetched), else by its address.
type watcher struct {
	ip  netip.Addr
	mac string
	ch  chan Fetch
}

// fetched logs a fetch and hands it to the device that made it: the one
// whose MAC it carries, else those at its address that the MAC does not
// rule out.
func (s *Server) fetched(f Fetch) {
	// The file server logs each fetch at Info already.
	s.log().Debug("device fetched", "name", f.Name, "remote", f.Remote, "mac", f.MAC, "status", f.Status, "bytes", f.Bytes, "range", f.Range)
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(f.Remote); err == nil {
		ip = ap.Addr().Unmap()
	}
	s.mu.Lock()
	var to []*watcher
	for w := range s.watches {
		if f.MAC != "" && w.mac != "" && strings.EqualFold(w.mac, f.MAC) {
			to = append(to, w)
		}
	}
	if len(to) == 0 {
		for w := range s.watches {
			if w.ip == ip && (w.mac == "" || f.MAC == "") {
				to = append(to, w)
			}
		}
	}
	s.mu.Unlock()
	for _, w := range to {
		select {
		case w.ch <- f:
		default: // a device fetching in a loop: its waiter reads the latest
		}
	}
}

// watch hands the fetches of the device at ip (with mac, "" when not
// known) to the returned channel until stop.
func (s *Server) watch(ip netip.Addr, mac string) (ch chan Fetch, stop func()) {
	w := &watcher{ip: ip, mac: mac, ch: make(chan Fetch, 64)}
	s.mu.Lock()
	if s.watches == nil {
		s.watches = map[*watcher]bool{}
	}
	s.watches[w] = true
	s.mu.Unlock()
	return w.ch, func() {
		s.mu.Lock()
		delete(s.watches, w)
		s.mu.Unlock()
	}
}

// Close stops every file server of the push; it is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	servers := s.servers
	s.servers, s.closed = nil, true
	s.mu.Unlock()
	var errs []error
	for _, fs := range servers {
		errs = append(errs, fs.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) setRestore(key, old string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.restore == nil {
		s.restore = map[string]string{}
	}
	s.restore[key] = old
}

func (s *Server) takeRestore(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.restore[key]
	delete(s.restore, key)
	return old, ok
}

// resolve is the device's address, as its fetches come from.
func resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return a.Unmap(), nil
	}
	as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(as) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %s", host)
	}
	return as[0].Unmap(), nil
}

func oneLine(err error) string { return upload.CleanText(err.Error(), 200) }

// sendByURL reads the device's Status 0 (its OtaUrl, chip and free
// program space), refuses a device that needs a -minimal image push does
// not have, then tells it to fetch the image from push's server and waits
// until it fetched the whole of it.
func (h *Transport) sendByURL(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, authz string, emit upload.Emit) error {
	srv := h.Server
	if srv == nil || srv.Serve == nil || srv.Route == nil {
		return &upload.RefusedError{Reason: "the upgrade by URL has no file server configured"}
	}
	set := srv.files(fw)
	if set.err != nil {
		return &upload.RefusedError{Reason: set.err.Error()}
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	total := set.sizes[set.main]
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: total, Message: "reading the device's Status 0 (its OtaUrl, chip and free space)"})
	body, err := h.command(ctx, t, authz, "Status 0")
	if err != nil {
		return err
	}
	st, err := devinfo.ParseTasmotaStatus(body)
	if err != nil && st.Version == "" && !st.OtaURLTold {
		return &upload.DeviceError{Class: upload.ClassRejected, Words: upload.CleanText(string(body), 120),
			Reason: "the device's answer to Status 0 is not Tasmota's status: is this a Tasmota device?"}
	}
	if !st.OtaURLTold {
		return &upload.RefusedError{Reason: "the device's Status 0 tells no OtaUrl (StatusPRM), which push must put back after the upgrade: nothing was sent"}
	}
	if st.Chip() == "esp8266" && !set.minimal {
		switch {
		case st.FreeKiB == nil:
			return &upload.RefusedError{Reason: "this ESP8266 tells no free program space (StatusMEM.Free), so whether it needs the two-step upgrade through a -minimal image is not known, and no -minimal image lies beside the firmware: nothing was sent"}
		case total > *st.FreeKiB*1024:
			return &upload.RefusedError{Reason: fmt.Sprintf("the image (%s) does not fit in this ESP8266's free program space (%d KiB): it upgrades in two steps through Tasmota's -minimal image, and none lies beside the firmware (put tasmota-minimal.bin or .bin.gz of the same release there): nothing was sent", post.ByteCount(total), *st.FreeKiB)}
		}
	}
	ip, err := resolve(ctx, t.Host)
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassUnresolved, Reason: err.Error()}
	}
	fs, err := srv.serverFor(ip, set)
	if err != nil {
		return &upload.RefusedError{Reason: err.Error()}
	}
	u := fs.URL(set.main)
	fetches, stop := srv.watch(ip, st.Mac)
	defer stop()

	// From here the device's OtaUrl may change: Finish puts it back.
	key := t.Addr()
	srv.setRestore(key, st.OtaURL)
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: total, Message: "telling the device to fetch its new image from " + hideToken(u)})
	if _, err := h.command(ctx, t, authz, "Backlog OtaUrl "+u+"; Upgrade 1"); err != nil {
		var de *upload.DeviceError
		if errors.As(err, &de) && de.Status != 0 {
			// It answered, and refused: nothing was run.
			srv.takeRestore(key)
			return err
		}
		return upload.MarkNoRetry(err, NoRetryHint)
	}
	// An ESP8266 whose free space the image exceeds fetches the -minimal
	// image first: its fetch of the firmware before that is not the end,
	// however many bytes the server wrote (a refused download still fills
	// the socket's buffers).
	twoStep := st.Chip() == "esp8266" && set.minimal && st.FreeKiB != nil && total > *st.FreeKiB*1024
	return h.awaitFetch(ctx, srv, set, twoStep, fetches, emit)
}

// NoRetryHint is what a by-URL failure after the upgrade command tells the
// user: the device may still be upgrading.
const NoRetryHint = "the device was told to upgrade and may still be at it: read it with ots-ota info before pushing again"

// awaitFetch waits until the device has fetched the whole firmware (the
// image or its .gz), after the whole -minimal image when twoStep,
// reporting each fetch.
func (h *Transport) awaitFetch(ctx context.Context, srv *Server, set *fileSet, twoStep bool, fetches <-chan Fetch, emit upload.Emit) error {
	total := set.sizes[set.main]
	idle := srv.fetchIdle()
	timer := time.NewTimer(idle)
	defer timer.Stop()
	got := map[string]int64{} // bytes of 206 answers, per name
	last := "nothing"
	// firmwareDone: the device fetched the whole firmware while a -minimal
	// fetch was still expected. A device that took it in one go (its free
	// space was enough after all) fetches nothing more: when the idle
	// timer runs out, verification decides (it waits by the quiet rule).
	minimalDone, firmwareDone := false, false
	for {
		select {
		case f := <-fetches:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(idle)
			size, served := set.sizes[f.Name]
			complete := served && (f.Status == 200 && f.Bytes >= size)
			if served && f.Status == 206 {
				got[f.Name] += f.Bytes
				complete = got[f.Name] >= size
			}
			last = describe(f, size)
			firmware := f.Name == set.main || f.Name == set.main+".gz"
			switch {
			case complete && firmware && (!twoStep || minimalDone):
				emit(upload.Event{Phase: upload.PhaseFinishing, Done: total, Total: total, Message: "the device fetched " + last})
				return nil
			case complete && firmware:
				firmwareDone = true
				emit(upload.Event{Phase: upload.PhaseUploading, Done: total, Total: total, Message: "the device fetched " + last + "; waiting for its -minimal fetch, if it makes one"})
			case complete && strings.Contains(f.Name, minimalTag):
				minimalDone, firmwareDone = true, false
				emit(upload.Event{Phase: upload.PhaseUploading, Total: total, Message: "the device fetched " + last + ": it restarts into Tasmota's minimal image, which then fetches the firmware"})
			case !served:
				emit(upload.Event{Phase: upload.PhaseUploading, Total: total, Message: fmt.Sprintf("the device asked for a file push does not serve (answered %d): its upgrade may be failing", f.Status)})
			default:
				done := int64(0)
				if firmware {
					done = min(f.Bytes, total)
				}
				emit(upload.Event{Phase: upload.PhaseUploading, Done: done, Total: total, Message: "the device fetched " + last})
			}
		case <-timer.C:
			if firmwareDone {
				emit(upload.Event{Phase: upload.PhaseFinishing, Done: total, Total: total, Message: fmt.Sprintf("the device fetched the whole firmware and nothing more for %s: it took it in one step", idle)})
				return nil
			}
			return &upload.DeviceError{Class: upload.ClassTimeout, NoRetry: NoRetryHint,
				Reason: fmt.Sprintf("the device fetched nothing more for %s after it was told to upgrade (last: %s): its upgrade failed or never began (its log, Weblog 3, tells why)", idle, last)}
		case <-ctx.Done():
			return &upload.DeviceError{Class: upload.ClassNetwork, NoRetry: NoRetryHint, Err: ctx.Err(),
				Reason: "stopped while waiting for the device to fetch its image (last: " + last + ")"}
		}
	}
}

// hideToken is a served URL without its path token, which is the server's
// only secret: "http://IP:PORT/…/fw.bin".
func hideToken(u string) string {
	rest, ok := strings.CutPrefix(u, "http://")
	host, path, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return "push's file server"
	}
	return "http://" + host + "/…/" + path[strings.LastIndexByte(path, '/')+1:]
}

// boundAddr is the IP:PORT of a served URL ("" when it has none).
func boundAddr(u string) string {
	rest, _ := strings.CutPrefix(u, "http://")
	host, _, _ := strings.Cut(rest, "/")
	return host
}

// describe words one fetch for the user.
func describe(f Fetch, size int64) string {
	if f.Name == "" {
		return fmt.Sprintf("a refused path (%d)", f.Status)
	}
	s := fmt.Sprintf("%s (%s of %s", f.Name, post.ByteCount(f.Bytes), post.ByteCount(size))
	if f.Range != "" {
		s += ", " + upload.CleanText(f.Range, 40)
	}
	if f.MAC != "" {
		s += ", MAC " + upload.CleanText(f.MAC, 20)
	}
	return s + ")"
}

// Finish implements upload.Finisher: by URL, it puts back the OtaUrl the
// device told before push set its own; "" when there was nothing to put
// back or it is back, else a warning that says what to do. A device that
// is not settled (not seen back on its firmware: interrupted, given up,
// or in its minimal image, which fetches the stored OtaUrl again) gets no
// command: the quiet rule holds, and the old URL would redirect the
// minimal image's fetch. The warning names the command to run later,
// without the URL's credentials.
func (h *Transport) Finish(ctx context.Context, t upload.Target, cred upload.Credentials, end upload.Ending) string {
	if h.Server == nil {
		return ""
	}
	old, ok := h.Server.takeRestore(t.Addr())
	if !ok {
		return ""
	}
	if old == "" {
		return "the device's OtaUrl was empty before the upgrade and now names push's file server, which has stopped: set yours with the command OtaUrl <url>"
	}
	shown, hidden := safeURL(old)
	cmd := "OtaUrl " + upload.CleanText(shown, 200)
	if hidden {
		cmd += " (with the credentials it had, not shown here)"
	}
	if !end.Settled {
		return "the device's OtaUrl still names push's file server, which has stopped: the device was not seen back on its firmware, so nothing more was sent while it may be installing; once it runs its firmware, set it back with the command " + cmd
	}
	authz, err := basic(cred)
	if err == nil {
		var body []byte
		if body, err = h.command(ctx, t, authz, "OtaUrl "+old); err == nil {
			var got struct {
				OtaURL *string `json:"OtaUrl"`
			}
			if json.Unmarshal(body, &got) == nil && got.OtaURL != nil && *got.OtaURL == old {
				return ""
			}
			err = errors.New("it answered with another OtaUrl")
		}
	}
	// The error never quotes the command (only its name), so old's
	// credentials are not in it.
	return fmt.Sprintf("could not put back the device's OtaUrl (%s): set it with the command %s", upload.CleanText(err.Error(), 160), cmd)
}

// safeURL is u for the user's eyes: without userinfo (user:pass@) and
// with the value of any query parameter that names a password or token
// hidden; hidden reports whether anything was taken out.
func safeURL(u string) (shown string, hidden bool) {
	pu, err := url.Parse(u)
	if err != nil {
		// Not a URL Go reads: hide everything between "//" and the last
		// "@" before the path, and any query.
		shown = u
		if i := strings.Index(shown, "//"); i >= 0 {
			rest := shown[i+2:]
			end := strings.IndexAny(rest, "/?#")
			if end < 0 {
				end = len(rest)
			}
			if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
				shown, hidden = shown[:i+2]+rest[at+1:], true
			}
		}
		if q := strings.IndexByte(shown, '?'); q >= 0 {
			shown, hidden = shown[:q], true
		}
		return shown, hidden
	}
	if pu.User != nil {
		pu.User, hidden = nil, true
	}
	if pu.RawQuery != "" {
		parts := strings.Split(pu.RawQuery, "&")
		for i, p := range parts {
			k, _, ok := strings.Cut(p, "=")
			if ok && secretKey(k) {
				parts[i], hidden = k+"=…", true
			}
		}
		pu.RawQuery = strings.Join(parts, "&")
	}
	return pu.String(), hidden
}

// secretKey: a query parameter whose name says it holds a secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "pwd", "pw", "token", "secret", "key", "auth"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
