package espota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
)

// espota command codes (Update.h U_FLASH, U_SPIFFS).
const (
	espotaCmdFlash = 0
	espotaCmdFS    = 100
)

// ErrNoOK marks an upload the device took whole but closed without
// its final OK (errors.Is on a *DeviceError). The image may or may not have
// been applied: only the version the device comes back with can tell. It
// is an upload.ErrAnswerLost too.
var ErrNoOK error = noOK{}

type noOK struct{}

func (noOK) Error() string { return "espota: connection closed without the final OK" }

// Is makes a lost OK a lost answer (errors.Is(err, upload.ErrAnswerLost)).
func (noOK) Is(target error) bool { return target == upload.ErrAnswerLost }

// Transport uploads over Arduino's espota protocol (ArduinoOTA on
// arduino-esp32 and esp8266/Arduino, research/espota.md §1–§3): a UDP
// invitation to the device (3232; 8266 on ESP8266: pass the port in the
// Target), an optional challenge/response on the same UDP socket, then the
// device connects back over TCP and takes the image.
//
// Unlike espota.py the data is not sent stop-and-wait: it is kept in flight
// within TCP flow control and the device's counts, which then run together,
// only show it is alive. Progress is what the device's TCP stack
// acknowledged (upload.AckCounter); success is only the device's final "OK".
//
// ESP8266 (esp8266/Arduino, §2) differs, and one code path serves both:
// it sends every UDP reply to the invitation's source port (hence one
// socket for invitation and auth); it answers the invitation only after
// Update.begin ("OK", or "ERR: <error>" for an image it cannot take, where
// ESP32 says OK and then never connects back); it is MD5-only; it waits 1 s
// before and after its final OK; its errors read "ERROR[<n>]: <text>"; and
// it never times out on a stalled host, so every failure here closes the
// connection.
//
// The zero value works for one upload at a time; for parallel uploads set
// Listener to one Listener shared by all.
type Transport struct {
	// Listener receives the devices' connect-backs. nil: each Send opens
	// its own on HostIP:HostPort and closes it afterwards.
	Listener *Listener
	// HostIP and HostPort are for a private listener (espota's -I, -P).
	HostIP   string
	HostPort int
	// ConnectTimeout bounds the invitation: it is sent up to InviteTries
	// times, ConnectTimeout/InviteTries apart, until the device answers
	// (espota.py resends it up to 10 times). Default 5 s.
	ConnectTimeout time.Duration
	// InviteTries is how often the invitation datagram is sent; default 10.
	InviteTries int
	// AuthTimeout is the wait for the answer to the auth message; default
	// 10 s (espota.py's; a device runs 10000 PBKDF2 rounds first).
	AuthTimeout time.Duration
	// AcceptTimeout is the wait for the device's connect-back after it
	// accepted the invitation; default 10 s (espota.py's).
	AcceptTimeout time.Duration
	// IdleTimeout fails the transfer when the device neither takes bytes
	// nor sends anything for this long; default 30 s.
	IdleTimeout time.Duration
	// ChunkSize is the size of each write; default 1460 (one TCP segment,
	// what ArduinoOTA reads per loop).
	ChunkSize int
	// MD5Password skips the SHA-256 password hash on PBKDF2 devices and
	// uses the MD5 one at once (espota's -m, for sketches that call
	// setPasswordHash with an MD5 hash).
	MD5Password bool
	// Logger receives debug logs; nil = discard. Secrets never appear.
	Logger *slog.Logger
}

var _ upload.WithTraits = (*Transport)(nil)

// Protocol is upload.Espota.
func (t *Transport) Protocol() upload.Protocol { return upload.Espota }

// Traits implements upload.WithTraits. An ArduinoOTA sketch boots any image whose
// first byte fits, has arduino-esp32's default partitions unless it tells
// otherwise, tells its version in its mDNS TXT record only (if at all), and
// is invited by a UDP datagram; its ESP8266 port is 8266.
func (t *Transport) Traits() upload.Traits {
	return upload.Traits{ChipUnchecked: true, ESP8266Port: 8266, ArduinoSlot: true, MDNSOnly: true, Datagram: true}
}

func (t *Transport) settings() Transport {
	s := *t
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = 5 * time.Second
	}
	if s.InviteTries <= 0 {
		s.InviteTries = 10
	}
	if s.AuthTimeout <= 0 {
		s.AuthTimeout = 10 * time.Second
	}
	if s.AcceptTimeout <= 0 {
		s.AcceptTimeout = 10 * time.Second
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 30 * time.Second
	}
	if s.ChunkSize <= 0 {
		s.ChunkSize = 1460
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s
}

// Send uploads fw to the device at t. It returns nil only once the device
// answered its final OK.
func (t *Transport) Send(ctx context.Context, tg upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	return t.send(ctx, tg, fw, cred, emit, (*espotaSession).transfer)
}

// send is Send with the data phase as a parameter (the benchmark swaps in a
// stop-and-wait one).
func (t *Transport) send(ctx context.Context, tg upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit,
	data func(*espotaSession, context.Context, net.Conn) error) error {
	cfg := t.settings()
	if emit == nil {
		emit = func(upload.Event) {}
	}
	port := tg.Port
	if port == 0 {
		port = 3232
	}
	total := fw.Size()
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: total, Message: "resolving " + tg.Host})
	ip, err := resolveIP(ctx, tg.Host)
	if err != nil {
		return err
	}
	device := netip.AddrPortFrom(ip, uint16(port))

	ln := cfg.Listener
	if ln == nil {
		ln, err = NewListener(cfg.HostIP, cfg.HostPort, cfg.Logger)
		if err != nil {
			return &upload.DeviceError{Class: upload.ClassNetwork, Reason: err.Error() + ": choose another --host-ip/--host-port", Err: err}
		}
		defer ln.Close()
	}
	turn, err := ln.reserve(ctx, ip)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, 0)
		}
		return &upload.DeviceError{Class: upload.ClassNetwork, Reason: err.Error(), Err: err}
	}
	defer turn.release()

	var laddr *net.UDPAddr
	if turn.bindUDP != nil {
		laddr = &net.UDPAddr{IP: turn.bindUDP}
	}
	udp, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(device))
	if err != nil {
		return &upload.DeviceError{Class: upload.ClassUnreachable, Reason: fmt.Sprintf("cannot send to %s: %v", device, err), Err: err}
	}
	defer udp.Close()
	stop := context.AfterFunc(ctx, func() { _ = udp.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	s := &espotaSession{cfg: &cfg, tg: tg, fw: fw, cred: cred, emit: emit, device: device, udp: udp,
		local: turn.local, log: cfg.Logger.With("device", device.String())}
	if err := s.handshake(ctx); err != nil {
		return err
	}
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: total, Message: "waiting for the device to connect back to " + turn.local.String()})
	conn, err := turn.accept(ctx, cfg.AcceptTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, 0)
		}
		return s.noConnectBack(err, turn.refused())
	}
	turn.release() // the next upload to this IP may invite now
	s.log.Debug("device connected back", "remote", conn.RemoteAddr().String())
	return data(s, ctx, conn)
}

func resolveIP(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		if ctx.Err() != nil {
			return netip.Addr{}, ctxError(ctx, 0)
		}
		reason := "the system resolver returned no address"
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			reason = upload.ResolverReason(dnsErr)
		}
		return netip.Addr{}, &upload.DeviceError{Class: upload.ClassUnresolved, Reason: fmt.Sprintf("cannot resolve %s: %s; check the name, or give its IP address", host, reason), Err: err}
	}
	for _, ip := range ips { // prefer IPv4: ArduinoOTA is IPv4-only
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

// ctxError is the DeviceError for a cancelled or expired context.
func ctxError(ctx context.Context, taken int64) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Reason: "the upload ran out of time (--timeout)", Err: ctx.Err()}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Reason: "the upload was cancelled", Err: ctx.Err()}
}

// espotaSession is one upload's protocol state.
type espotaSession struct {
	cfg    *Transport
	tg     upload.Target
	fw     *upload.Firmware
	cred   upload.Credentials
	emit   upload.Emit
	device netip.AddrPort
	udp    *net.UDPConn
	local  *net.TCPAddr
	log    *slog.Logger
}

func (s *espotaSession) invitation() []byte {
	cmd := espotaCmdFlash
	if s.fw.Filesystem {
		cmd = espotaCmdFS
	}
	// research/espota.md §1.3: "%d %d %d %s\n", lowercase MD5.
	return fmt.Appendf(nil, "%d %d %d %s\n", cmd, s.local.Port, len(s.fw.Data), s.fw.MD5)
}

// handshake sends the invitation and, when the device asks, authenticates.
// It returns nil once the device said OK (it is about to connect back).
//
// With a 64-hex nonce (PBKDF2, core ≥ 3.3.1) a failed SHA-256 password
// hash is followed by a fresh invitation and the MD5 password hash, as
// espota.py does for sketches that store an MD5 hash: one auth attempt.
func (s *espotaSession) handshake(ctx context.Context) error {
	usedMD5Fallback := false
	reinvited := false
	for {
		reply, resent, err := s.invite(ctx)
		if err != nil {
			return err
		}
		kind, nonce := parseEspotaReply(reply)
		switch kind {
		case replyOK:
			return nil
		case replyErr:
			return s.beginError(string(reply))
		case replyAuthFailed:
			// Not asked for: a reply meant for someone else's auth.
			return &upload.DeviceError{Class: upload.ClassAuth, Words: cleanWords(string(reply)), Reason: "the device refused the authentication: check --password"}
		case replyOther:
			return &upload.DeviceError{Class: upload.ClassRejected, Words: cleanWords(string(reply)),
				Reason: fmt.Sprintf("unexpected answer to the invitation from %s: is this an ArduinoOTA device?", s.device)}
		}
		// AUTH <nonce>.
		if s.cred.Password.IsZero() {
			s.leaveWaitAuth()
			return &upload.DeviceError{Class: upload.ClassAuth, Reason: "the device asks for an OTA password: pass --password"}
		}
		if !isHexNonce(nonce) {
			s.leaveWaitAuth()
			return &upload.DeviceError{Class: upload.ClassRejected,
				Reason: fmt.Sprintf("the device sent a %d-character nonce; known are 32 (MD5) and 64 (PBKDF2)", len(nonce))}
		}
		pbkdf2 := len(nonce) == 64
		useMD5 := !pbkdf2 || s.cfg.MD5Password || usedMD5Fallback
		answer, err := s.authenticate(ctx, nonce, pbkdf2, useMD5)
		if err != nil {
			if isTimeout(err) && resent && !reinvited && ctx.Err() == nil {
				// A late AUTH to an earlier copy of the invitation: the
				// copy reset the device, which then ignored our answer.
				reinvited = true
				continue
			}
			return s.authSilence(ctx, err)
		}
		switch k, _ := parseEspotaReply(answer); k {
		case replyOK:
			return nil
		case replyAuthFailed:
			if pbkdf2 && !useMD5 {
				// The device is back in IDLE: invite again, then the MD5
				// password hash inside PBKDF2.
				usedMD5Fallback = true
				s.drain()
				continue
			}
			return &upload.DeviceError{Class: upload.ClassAuth, Words: "Authentication Failed", Reason: "wrong espota password: check --password"}
		case replyErr:
			return s.beginError(string(answer))
		default:
			return &upload.DeviceError{Class: upload.ClassRejected, Words: cleanWords(string(answer)), Reason: "unexpected answer to the authentication"}
		}
	}
}

// invite sends the invitation until the device answers. resent tells
// whether more than one copy went out.
func (s *espotaSession) invite(ctx context.Context) (reply []byte, resent bool, err error) {
	msg := s.invitation()
	tries := s.cfg.InviteTries
	wait := max(s.cfg.ConnectTimeout/time.Duration(tries), 50*time.Millisecond)
	s.emit(upload.Event{Phase: upload.PhaseConnecting, Total: s.fw.Size(), Message: "inviting " + s.device.String() + " (UDP)"})
	refused := false
	refusedRun := 0 // copies in a row that drew port unreachable
	buf := make([]byte, 512)
	for try := 1; try <= tries; try++ {
		if refusedRun >= 2 {
			// Two copies in a row drew ICMP port unreachable: nothing
			// listens there. A device still booting answers the same way;
			// the runner tries once more after a pause for that.
			break
		}
		refusedThis := false
		if _, err := s.udp.Write(msg); err != nil && !upload.IsRefused(err) {
			if ctx.Err() != nil {
				return nil, false, ctxError(ctx, 0)
			}
			return nil, false, &upload.DeviceError{Class: upload.ClassUnreachable, Reason: fmt.Sprintf("cannot send the invitation to %s: %v", s.device, err), Err: err}
		}
		deadline := time.Now().Add(wait)
		for {
			if ctx.Err() != nil {
				return nil, false, ctxError(ctx, 0)
			}
			readDeadline(ctx, s.udp, deadline)
			n, err := s.udp.Read(buf)
			if err == nil {
				s.log.Debug("invitation answered", "try", try)
				return buf[:n], try > 1, nil
			}
			if isTimeout(err) || ctx.Err() != nil {
				break // send the next copy
			}
			// ICMP port unreachable for an earlier copy (ECONNREFUSED; a
			// reset on Windows): nothing listens there now. A rebooting
			// device is silent instead. Wait out this try all the same.
			refused, refusedThis = true, true
			pause := time.Now().Add(20 * time.Millisecond)
			if pause.After(deadline) {
				pause = deadline
			}
			if !sleepUntil(ctx, pause) {
				break
			}
		}
		if refusedThis {
			refusedRun++
		} else {
			refusedRun = 0
		}
	}
	why, class := "no answer", upload.ClassUnreachable
	if refused {
		// ICMP port unreachable: nothing listens on the port (yet).
		why, class = "UDP port unreachable", upload.ClassNothingListens
	}
	if refused {
		return nil, false, &upload.DeviceError{Class: class,
			Reason: fmt.Sprintf("nothing listens for espota at %s (UDP port unreachable): not an ArduinoOTA device on that port (ESP8266 uses 8266), or not yet started", s.device)}
	}
	return nil, false, &upload.DeviceError{Class: class,
		Reason: fmt.Sprintf("%s to %d espota invitations to %s within %v: the device is off, rebooting, busy with another upload, or not an ArduinoOTA device on that port (ESP8266 uses 8266)",
			why, tries, s.device, s.cfg.ConnectTimeout)}
}

// authenticate sends the auth message for nonce and returns the answer.
func (s *espotaSession) authenticate(ctx context.Context, nonce string, pbkdf2, md5Hash bool) ([]byte, error) {
	var hash auth.Secret
	how := "MD5"
	switch {
	case pbkdf2 && md5Hash:
		hash, how = auth.EspotaPasswordHashMD5(s.cred.Password), "PBKDF2-HMAC-SHA256, MD5 password hash"
	case pbkdf2:
		hash, how = auth.EspotaPasswordHashSHA256(s.cred.Password), "PBKDF2-HMAC-SHA256"
	default:
		hash = auth.EspotaPasswordHashMD5(s.cred.Password)
	}
	s.emit(upload.Event{Phase: upload.PhaseAuth, Total: s.fw.Size(), Message: "authenticating (" + how + ")"})
	// espota.py's cnonce: the device never recomputes it (§1.5, §1.6).
	cnonce := auth.EspotaCnonce(s.fw.Name, len(s.fw.Data), s.fw.MD5, s.tg.Host, pbkdf2)
	var response string
	if pbkdf2 {
		response = auth.EspotaPBKDF2Response(hash.Reveal(), nonce, cnonce)
	} else {
		response = auth.EspotaMD5Response(hash.Reveal(), nonce, cnonce)
	}
	if _, err := s.udp.Write([]byte("200 " + cnonce + " " + response + "\n")); err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	readDeadline(ctx, s.udp, time.Now().Add(s.cfg.AuthTimeout))
	for {
		n, err := s.udp.Read(buf)
		if err == nil {
			return buf[:n], nil
		}
		if isTimeout(err) || ctx.Err() != nil {
			return nil, err
		}
		// An ICMP error for an earlier datagram: keep waiting.
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return nil, ctx.Err()
		}
	}
}

func (s *espotaSession) authSilence(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx, 0)
	}
	return &upload.DeviceError{Class: upload.ClassTimeout, Err: err,
		Reason: fmt.Sprintf("%s asked for a password but did not answer the authentication within %v", s.device, s.cfg.AuthTimeout)}
}

// leaveWaitAuth sends the device a datagram that is not an auth message:
// a device left waiting for auth would take the next real invitation as
// its answer and ignore it (research/espota.md §1.4). As an invitation it
// is malformed (no MD5), so a device that is not waiting ignores it too.
func (s *espotaSession) leaveWaitAuth() {
	_, _ = s.udp.Write([]byte("0\n"))
}

// drain discards replies already queued on the UDP socket.
func (s *espotaSession) drain() {
	buf := make([]byte, 512)
	for range 64 {
		_ = s.udp.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := s.udp.Read(buf); err != nil && isTimeout(err) {
			return
		}
	}
}

// beginError is ESP8266's "ERR: <Update error>" answer to the invitation:
// Update.begin refused the size or command.
func (s *espotaSession) beginError(text string) error {
	w := cleanWords(text)
	class, why := classifyEspotaWords(w)
	switch {
	case s.fw.Filesystem:
		why = "the device has no filesystem area that takes this image (sketches built with no or a smaller filesystem)"
	case w == "ERR:" || w == "ERR":
		why = "the device refused to begin the update"
	}
	return &upload.DeviceError{Class: class, Words: w, Reason: why}
}

func (s *espotaSession) noConnectBack(err error, refused []string) error {
	if len(refused) > 0 {
		return &upload.DeviceError{Class: upload.ClassNoConnectBack, Err: err, Reason: fmt.Sprintf(
			"the device accepted the invitation, but the only connections to %s came from %s, not from %s, and were refused while other uploads waited: upload to this device alone, or reach it without NAT",
			s.local, strings.Join(refused, ", "), s.device.Addr())}
	}
	reason := fmt.Sprintf("the device accepted the invitation but never connected back to %s within %v: a host firewall blocking TCP port %d, NAT/WSL/VPN between host and device (pass --host-ip with an address the device can reach)",
		s.local, s.cfg.AcceptTimeout, s.local.Port)
	switch {
	case s.fw.Filesystem:
		reason += ", or the device has no filesystem partition of that size, so it refused to begin"
	case len(s.fw.Data) > upload.ArduinoDefaultSlot:
		reason += fmt.Sprintf(", or, likelier, the image (%s) is larger than the device's app slot (1.25 MiB on arduino-esp32's default partition scheme), so it refused to begin", sizeText(len(s.fw.Data)))
	default:
		reason += ", or an image larger than the device's app slot (1.25 MiB on arduino-esp32's default partition scheme), so it refused to begin"
	}
	return &upload.DeviceError{Class: upload.ClassNoConnectBack, Reason: reason, Err: err}
}

func sizeText(n int) string {
	if n >= 1<<20 {
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
	}
	return strconv.Itoa(n) + " bytes"
}

// readDeadline sets c's read deadline, or one in the past once ctx is done
// (Send's AfterFunc may have fired just before).
func readDeadline(ctx context.Context, c net.Conn, t time.Time) {
	_ = c.SetReadDeadline(t)
	if ctx.Err() != nil {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
}

// sleepUntil sleeps until t or ctx is done; it reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// pollInterval is how often the transfer checks progress and the idle rule.
const pollInterval = 50 * time.Millisecond

// progressEvery limits uploading events to a few per second.
const progressEvery = 100 * time.Millisecond

// espotaLockstepBytes are sent stop-and-wait, in espotaLockstepChunk
// pieces, before the transfer goes pipelined. The Arduino Updater checks
// the image once its 4096-byte buffer is full (Wrong Magic Byte,
// Decryption error): answered while nothing else is unread on the device,
// its close is a FIN and the words survive. With data queued behind them
// the close is an RST, which on a fast path can destroy the words before
// they are read. The pieces stay below any MSS (lwIP's default is 1440) so
// that the device takes each in one read and answers it with one count.
const (
	espotaLockstepBytes = 4096 + 1024
	espotaLockstepChunk = 1024
)

// transfer is the data phase: the first bytes lock-step, then the rest in
// ChunkSize pieces as fast as TCP flow control allows, the device's stream
// read concurrently (its error text may arrive while we still write,
// followed by a reset), progress from the acknowledged bytes, success on
// an "OK" that came after every byte was sent and acknowledged only.
//
// ESP32 aborts after 1 s without data (three resends of its last count);
// ESP8266 never times out on a stalled host, so every failure here closes
// the connection to end its wait, with a reset, so that nothing still
// buffered reaches the device after push gave up on it.
func (s *espotaSession) transfer(ctx context.Context, conn net.Conn) error {
	ac := upload.NewAckCounter(conn)
	st := newStreamState()
	go readStream(conn, st, ac.Snapshot)
	x := &espotaXfer{s: s, ctx: ctx, conn: conn, ac: ac, st: st,
		writeDone: make(chan error, 1), quit: make(chan struct{}), writing: true}
	go func() { x.writeDone <- s.write(ac, st, x.quit) }()
	err := x.watch()
	if err != nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	x.close()
	return err
}

var errWriteStopped = errors.New("stopped writing")

func (s *espotaSession) write(ac *upload.AckCounter, st *streamState, quit <-chan struct{}) error {
	data := s.fw.Data
	chunk := s.cfg.ChunkSize
	lock := min(len(data), espotaLockstepBytes)
	for off := 0; off < len(data); {
		lockstep := off < lock
		end := min(off+chunk, len(data))
		if lockstep {
			end = min(off+espotaLockstepChunk, len(data))
			select { // forget counts for earlier pieces
			case <-st.heardCh:
			default:
			}
		}
		if _, err := ac.Write(data[off:end]); err != nil {
			return err
		}
		if lockstep && end < len(data) {
			select {
			case <-st.heardCh:
			case <-st.ended:
				return errWriteStopped
			case <-quit:
				return errWriteStopped
			}
		}
		off = end
	}
	return nil
}

// streamState is what the reader goroutine saw, shared with watch.
type streamState struct {
	mu      sync.Mutex
	ans     espotaAnswer
	heard   time.Time          // last bytes from the device (counts included)
	at      upload.AckSnapshot // the ack counter when the final answer began to arrive
	err     error              // how reading ended
	heardCh chan struct{}      // pinged after each read
	final   chan struct{}      // closed once the answer is complete
	ended   chan struct{}      // closed when reading ended
	once    sync.Once
}

func newStreamState() *streamState {
	return &streamState{heard: time.Now(), heardCh: make(chan struct{}, 1), final: make(chan struct{}), ended: make(chan struct{})}
}

// readStream reads the device's side until it ends; snap is taken at the
// read that brings the first byte of the final answer.
func readStream(conn net.Conn, st *streamState, snap func() upload.AckSnapshot) {
	defer close(st.ended)
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			var at upload.AckSnapshot
			st.mu.Lock()
			began := st.ans.started()
			st.mu.Unlock()
			if !began && bytes.ContainsFunc(buf[:n], func(r rune) bool { return r < '0' || r > '9' }) {
				at = snap() // the answer may begin in these bytes
			}
			st.mu.Lock()
			st.ans.feed(buf[:n])
			st.heard = time.Now()
			if !began && st.ans.started() {
				st.at = at
			}
			done := st.ans.complete()
			st.mu.Unlock()
			if done {
				st.once.Do(func() { close(st.final) })
			}
			select {
			case st.heardCh <- struct{}{}:
			default:
			}
		}
		if err != nil {
			st.mu.Lock()
			st.err = err
			st.mu.Unlock()
			return
		}
	}
}

// espotaXfer is one data phase under way: a writer goroutine sends the
// image while watch follows the device's stream and the ack counter.
type espotaXfer struct {
	s         *espotaSession
	ctx       context.Context
	conn      net.Conn
	ac        *upload.AckCounter
	st        *streamState
	writeDone chan error
	quit      chan struct{}
	quitOnce  sync.Once
	writing   bool  // the writer has not returned yet
	writeErr  error // how the writer ended
}

// stopWriter ends the writer and waits for it, so Written (and with it
// Taken) counts what it handed to the kernel: the deadline ends a blocked
// write at once, quit a lock-step wait for a count. No timed wait: a
// loaded machine can leave the writer unscheduled for any time.
func (x *espotaXfer) stopWriter() {
	x.quitOnce.Do(func() { close(x.quit) })
	if !x.writing {
		return
	}
	_ = x.conn.SetWriteDeadline(time.Now())
	x.wrote(<-x.writeDone)
}

func (x *espotaXfer) wrote(err error) {
	x.writing = false
	if isTimeout(err) {
		err = errWriteStopped
	}
	x.writeErr = err
}

// awaitWriter waits at most d for the writer to return by itself.
func (x *espotaXfer) awaitWriter(d time.Duration) {
	if !x.writing {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-x.writeDone:
		x.wrote(err)
	case <-t.C:
	case <-x.ctx.Done():
	}
}

// close ends the connection and waits for both goroutines.
func (x *espotaXfer) close() {
	x.quitOnce.Do(func() { close(x.quit) })
	_ = x.conn.Close()
	if x.writing {
		<-x.writeDone
		x.writing = false
	}
	<-x.st.ended
}

// taken is the image bytes the device acknowledged.
func (x *espotaXfer) taken() int64 { return min(x.ac.Taken(), x.s.fw.Size()) }

// watch follows the transfer until the device's final answer, its idle
// timeout, or the end of the connection. The idle clock runs on bytes the
// device took, never on what it sent: a device that keeps sending counts
// without taking data, or that took every byte and never says OK, ends
// within IdleTimeout.
func (x *espotaXfer) watch() error {
	s, st := x.s, x.st
	total := s.fw.Size()
	phase := upload.PhaseErasing
	s.emit(upload.Event{Phase: phase, Total: total, Message: "connected; the device erases as it writes"})
	var lastTaken int64 = -1
	lastProgress := time.Now()
	lastEmit := time.Time{}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-x.ctx.Done():
			x.stopWriter()
			return ctxError(x.ctx, x.taken())
		case <-st.final:
			return x.finalAnswer()
		case err := <-x.writeDone:
			x.wrote(err)
			if err != nil {
				// The device cut the connection, usually right behind an
				// error text: give the reader a moment to deliver it.
				s.log.Debug("write ended", "err", err, "written", x.ac.Written())
				select {
				case <-st.ended:
				case <-st.final:
				case <-time.After(min(2*time.Second, s.cfg.IdleTimeout)):
				}
				return x.streamEnded()
			}
			continue
		case <-st.ended:
			// Let the write under way return, so Written counts what it
			// handed to the kernel: that count tells a device that read
			// every byte and closed from one that closed midway.
			x.stopWriter()
			return x.streamEnded()
		case <-tick.C:
		}
		now := time.Now()
		taken := x.taken()
		if taken != lastTaken {
			lastTaken = taken
			lastProgress = now
		}
		next := phase
		switch {
		case taken >= total && !x.writing:
			next = upload.PhaseFinishing
		case taken > 0:
			next = upload.PhaseUploading
		}
		if next != phase || (phase == upload.PhaseUploading && now.Sub(lastEmit) >= progressEvery) {
			phase = next
			lastEmit = now
			msg := ""
			if phase == upload.PhaseFinishing {
				msg = "all sent; waiting for the device's OK"
			}
			s.emit(upload.Event{Phase: phase, Done: taken, Total: total, Message: msg})
		}
		if now.Sub(lastProgress) >= s.cfg.IdleTimeout {
			return x.idle()
		}
	}
}

// idle is the error for a device that took nothing for IdleTimeout.
func (x *espotaXfer) idle() error {
	s := x.s
	total, idle := s.fw.Size(), s.cfg.IdleTimeout
	x.stopWriter()
	taken := x.taken()
	if taken >= total {
		// It may have applied the image: ErrNoOK asks the runner to
		// read the device before any resend.
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: ErrNoOK,
			Reason: fmt.Sprintf("the device took all %d bytes but sent no OK within %v (--idle-timeout): it may or may not have applied the image; only its version after the reboot can tell", total, idle)}
	}
	x.st.mu.Lock()
	heard := x.st.heard
	x.st.mu.Unlock()
	reason := fmt.Sprintf("the device took no data for %v, at %d of %d bytes (--idle-timeout)", idle, taken, total)
	if time.Since(heard) < idle {
		reason = fmt.Sprintf("the device took no data for %v, at %d of %d bytes, though it kept sending counts (--idle-timeout)", idle, taken, total)
	}
	return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: fmt.Errorf("idle for %v", idle), Reason: reason}
}

// finalAnswer turns the device's final text into the result: OK is a
// success only when it came after every byte was sent and acknowledged
// (as far as the ack counter tells: see rawhttp.Transport.Send).
func (x *espotaXfer) finalAnswer() error {
	s, st := x.s, x.st
	total := s.fw.Size()
	st.mu.Lock()
	ok, words, at := st.ans.ok(), st.ans.words(), st.at
	st.mu.Unlock()
	if !ok {
		x.stopWriter()
		class, why := classifyEspotaWords(words)
		return &upload.DeviceError{Class: class, Words: words, Taken: x.taken(), Reason: why}
	}
	if at.AllAcked(total) {
		// Every byte had been handed to the kernel: the writer returns
		// from its last write as soon as it is scheduled.
		x.awaitWriter(min(2*time.Second, s.cfg.IdleTimeout))
	}
	x.stopWriter()
	taken := x.taken()
	st.mu.Lock()
	tookMore := st.ans.countsAfterOK()
	st.mu.Unlock()
	if x.writeErr == nil && at.AllAcked(total) && (!x.ac.Exact() || taken >= total) && !tookMore {
		s.emit(upload.Event{Phase: upload.PhaseFinishing, Done: total, Total: total, Message: "the device answered OK"})
		return nil
	}
	if x.ctx.Err() != nil {
		return ctxError(x.ctx, taken)
	}
	s.log.Debug("early OK", "begun", at.Begun, "written", at.Written, "queued", at.Queued, "exact", at.Exact,
		"write", x.writeErr, "counts after OK", tookMore)
	return &upload.DeviceError{Class: upload.ClassEarlyAnswer, Words: "OK", Taken: taken, Err: upload.ErrEarlyAnswer,
		Reason: earlyEspotaReason(taken, min(x.ac.Written(), total), total, x.ac.Exact())}
}

// earlyEspotaReason says how much of the image a device had when the
// upload stopped right after its OK.
func earlyEspotaReason(taken, sent, total int64, exact bool) string {
	had := fmt.Sprintf("%d of %d bytes were sent and %d acknowledged", sent, total, taken)
	if !exact {
		had = fmt.Sprintf("%d of %d bytes were sent", sent, total)
	}
	return fmt.Sprintf("the device said OK before it had the whole image: %s when the upload stopped; such an OK proves no update", had)
}

// streamEnded explains a connection that ended without a final answer.
// The writer has returned.
func (x *espotaXfer) streamEnded() error {
	s, st, ac, writeErr := x.s, x.st, x.ac, x.writeErr
	total := s.fw.Size()
	st.mu.Lock()
	started, readErr := st.ans.started(), st.err
	st.mu.Unlock()
	if started {
		return x.finalAnswer()
	}
	taken := x.taken()
	err := readErr
	if err == nil || errors.Is(err, io.EOF) {
		if writeErr != nil && !errors.Is(writeErr, errWriteStopped) {
			err = writeErr
		}
	}
	// A FIN after every byte was acknowledged: the device read it all (an
	// RST would mean it closed with data unread, whatever the kernel acked).
	if taken >= total && ac.Written() >= total && errors.Is(readErr, io.EOF) {
		return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: errors.Join(ErrNoOK, err),
			Reason: fmt.Sprintf("the device took all %d bytes, then closed the connection without its OK: it may or may not have applied the image; only its version after the reboot can tell", total)}
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(writeErr, syscall.ECONNRESET) || errors.Is(writeErr, syscall.EPIPE) {
		// An RST destroys what the device sent just before it if that was
		// not read yet, so an Update error may have come and gone.
		return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
			Reason: fmt.Sprintf("the device reset the connection after taking %d of %d bytes, and no answer survived: it lost Wi-Fi or power, or failed to write (an error text such as Flash Write Failed is lost when the reset overtakes it)", taken, total)}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
		Reason: fmt.Sprintf("the device closed the connection after taking %d of %d bytes without a word: it timed out waiting for data, or stopped the update", taken, total)}
}
