package espota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

const (
	defaultRecvTimeout = 1000 * time.Millisecond
	maxDatagram        = 2048
	// ESP32 reads at most 1460 bytes per loop; ESP8266's Update.write(client)
	// takes whatever is buffered, bounded here by lwIP's default receive
	// window (4 × MSS).
	esp32ReadSize   = 1460
	esp8266ReadSize = 4 * 1460
	esp32Resends    = 3
	// connectTimeout is NetworkClient/WiFiClient's default connect timeout.
	connectTimeout = 3 * time.Second
	// writeTimeout bounds one reply write so a host that stops reading
	// cannot wedge the device forever.
	writeTimeout = 10 * time.Second
	// esp8266BeginDelay and esp8266OKDelay are ESP8266's delay(100) after the
	// UDP OK/ERR and delay(1000) before and after the final OK.
	esp8266BeginDelay = 100 * time.Millisecond
	esp8266OKDelay    = 1000 * time.Millisecond
)

// Server is one simulated ArduinoOTA endpoint.
type Server struct {
	cfg     Config
	u       Updater
	log     *slog.Logger
	hash    auth.Secret // the device's _password (a hex hash), empty = no auth
	pbkdf2  bool
	authLen int // nonce, cnonce and response length
	start   time.Time
	serving atomic.Bool
}

// NewServer returns a device that drives u. Zero Config fields get the
// defaults documented on Config.
func NewServer(cfg Config, u Updater) *Server {
	if cfg.Flavor != ESP8266 {
		cfg.Flavor = ESP32
	}
	if cfg.RecvTimeout <= 0 {
		cfg.RecvTimeout = defaultRecvTimeout
	}
	if cfg.DelayScale <= 0 {
		cfg.DelayScale = 1
	}
	s := &Server{cfg: cfg, u: u, log: cfg.Logger, start: time.Now()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("flavor", cfg.Flavor.String())
	s.pbkdf2 = cfg.Flavor == ESP32 && !cfg.Legacy
	s.authLen = 32
	if s.pbkdf2 {
		s.authLen = 64
	}
	switch {
	case !cfg.PasswordHash.IsZero():
		s.hash = cfg.PasswordHash
	case s.pbkdf2:
		s.hash = auth.EspotaPasswordHashSHA256(cfg.Password)
	default:
		s.hash = auth.EspotaPasswordHashMD5(cfg.Password)
	}
	return s
}

// AuthRequired reports whether the device asks for a password (what mDNS
// advertises as auth_upload=yes).
func (s *Server) AuthRequired() bool { return !s.hash.IsZero() }

// Flavor is the core this device mirrors.
func (s *Server) Flavor() Flavor { return s.cfg.Flavor }

type otaState int

const (
	stateIdle otaState = iota
	stateWaitAuth
)

// session is the protocol state between datagrams (ArduinoOTA's members).
type session struct {
	state   otaState
	inv     invitation
	nonce   string
	invAddr net.Addr // ESP8266 sends every reply here (_ota_ip:_ota_udp_port)
}

// Serve answers datagrams on pc until ctx is done or pc is closed, then
// returns nil; pc stays open (the caller owns it). It handles one update at a
// time, synchronously, like the device's loop(): during an ESP32 transfer pc
// is not read (datagrams queue in the socket, as on the device, and are
// discarded after a successful update, whose reboot loses them); during an
// ESP8266 transfer they are read and dropped. Only one Serve may run at once.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	if s.u == nil {
		return errors.New("espota: serve: nil Updater")
	}
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("espota: serve: already serving")
	}
	defer s.serving.Store(false)

	// Wake a blocked ReadFrom when ctx ends. Anything that later resets the
	// deadline re-checks ctx before reading again.
	stop := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(aLongTimeAgo()) })
	defer stop()

	s.log.Info("espota device listening", "addr", pc.LocalAddr().String(), "auth", s.AuthRequired(), "pbkdf2", s.pbkdf2 && s.AuthRequired())
	var sess session
	buf := make([]byte, maxDatagram)
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if isTimeout(err) {
				_ = pc.SetReadDeadline(time.Time{})
				continue
			}
			// E.g. Windows reports an ICMP port-unreachable for an earlier
			// reply as a read error; the device just carries on.
			s.log.Debug("udp read error", "err", err)
			if !sleepCtx(ctx, 10*time.Millisecond) {
				return nil
			}
			continue
		}
		s.handleDatagram(ctx, pc, &sess, buf[:n], from)
	}
}

// handleDatagram is ArduinoOTA's _onRx plus, when it leads to an update, the
// following handle() → _runUpdate.
func (s *Server) handleDatagram(ctx context.Context, pc net.PacketConn, sess *session, b []byte, from net.Addr) {
	f := s.cfg.Flavor
	if r, ok := s.u.(Restarter); ok && r.Restarting() {
		// Restarting after the final OK: a rebooting chip hears nothing.
		sess.state = stateIdle
		s.ignored(from, "restarting")
		return
	}
	if len(b) == 0 && f == ESP32 {
		// parsePacket() returns 0 for an empty datagram: _onRx never runs.
		s.ignored(from, "empty datagram")
		return
	}
	switch sess.state {
	case stateIdle:
		inv, reason, ok := parseInvitation(b, f)
		if !ok {
			s.ignored(from, reason)
			return
		}
		sess.inv = inv
		sess.invAddr = from
		s.log.Debug("invitation", "from", from.String(), "cmd", inv.cmd, "port", inv.port, "size", inv.size)
		s.emit(Event{Kind: EventInvitation, Remote: from, Cmd: inv.cmd, Port: inv.port, Size: inv.size, MD5: inv.md5})
		if s.AuthRequired() {
			sess.nonce = s.newNonce()
			sess.state = stateWaitAuth
			s.replyUDP(ctx, pc, from, "AUTH "+sess.nonce)
			return
		}
		s.accepted(ctx, pc, sess, from)

	case stateWaitAuth:
		// Whatever comes next is taken as the auth message; any outcome
		// returns the device to IDLE.
		sess.state = stateIdle
		a, reason, ok := parseAuth(b, f, s.authLen)
		if !ok {
			s.ignored(from, reason)
			return
		}
		replyTo := from
		if f == ESP8266 {
			replyTo = sess.invAddr
		}
		if !auth.ConstantTimeEqual(s.expectedResponse(sess.nonce, a.cnonce), a.response) {
			s.log.Info("authentication failed", "from", from.String())
			s.replyUDP(ctx, pc, replyTo, "Authentication Failed")
			s.emit(Event{Kind: EventAuthFailed, Remote: from, Cmd: sess.inv.cmd, Port: sess.inv.port, Size: sess.inv.size, MD5: sess.inv.md5})
			return
		}
		s.log.Debug("authentication ok", "from", from.String())
		s.emit(Event{Kind: EventAuthOK, Remote: from, Cmd: sess.inv.cmd, Port: sess.inv.port, Size: sess.inv.size, MD5: sess.inv.md5})
		s.accepted(ctx, pc, sess, from)
	}
}

// accepted runs the update once the invitation (and auth) passed. from is
// the datagram being answered.
func (s *Server) accepted(ctx context.Context, pc net.PacketConn, sess *session, from net.Addr) {
	if s.cfg.Flavor == ESP8266 {
		// The host and the reply address are the invitation's, whatever
		// socket the auth came from. Datagrams arriving meanwhile are dropped
		// until the update is over (End succeeded: the device is about to
		// reboot; anything later is left for the model's reboot to handle).
		stopDrop := s.dropDatagrams(ctx, pc)
		s.runUpdate(ctx, pc, sess.inv, addrIP(sess.invAddr), sess.invAddr, stopDrop)
		stopDrop()
		return
	}
	// ESP32 says OK first and only then calls Update.begin; it connects back
	// to the source of the datagram it just answered. Datagrams queue in the
	// socket meanwhile; after a successful End they are discarded (the
	// reboot loses them), after a failure the next loop answers them.
	s.replyUDP(ctx, pc, from, "OK")
	s.runUpdate(ctx, pc, sess.inv, addrIP(from), nil, func() { s.discardQueued(ctx, pc) })
}

func (s *Server) expectedResponse(nonce, cnonce string) string {
	if s.pbkdf2 {
		return auth.EspotaPBKDF2Response(s.hash.Reveal(), nonce, cnonce)
	}
	return auth.EspotaMD5Response(s.hash.Reveal(), nonce, cnonce)
}

// newNonce mirrors md5hex(String(micros())) (ESP8266, ESP32 ≤ 3.3.0); the
// PBKDF2 core sends a 64-hex SHA-256 based nonce.
func (s *Server) newNonce() string {
	micros := strconv.FormatUint(uint64(uint32(time.Since(s.start).Microseconds())), 10)
	if s.pbkdf2 {
		return auth.SHA256Hex([]byte(micros))
	}
	return auth.MD5Hex([]byte(micros))
}

func (s *Server) ignored(from net.Addr, reason string) {
	s.log.Debug("datagram ignored", "from", addrString(from), "reason", reason)
	s.emit(Event{Kind: EventIgnored, Remote: from, Message: reason})
}

func (s *Server) emit(e Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

func (s *Server) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.cfg.DelayScale)
}

// replyUDP sends one bare-ASCII datagram after the configured latency.
func (s *Server) replyUDP(ctx context.Context, pc net.PacketConn, to net.Addr, msg string) {
	if to == nil {
		return
	}
	if !sleepCtx(ctx, s.cfg.Latency) {
		return
	}
	if _, err := pc.WriteTo([]byte(msg), to); err != nil {
		s.log.Debug("udp reply failed", "to", to.String(), "err", err)
	}
}

// dropDatagrams reads and discards datagrams until the returned stop is
// called (ESP8266 consumes and flushes them while an update runs).
func (s *Server) dropDatagrams(ctx context.Context, pc net.PacketConn) (stop func()) {
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				if stopping.Load() || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				if !sleepCtx(ctx, 5*time.Millisecond) {
					return
				}
				continue
			}
			s.log.Debug("busy: datagram dropped", "from", addrString(from))
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			stopping.Store(true)
			_ = pc.SetReadDeadline(aLongTimeAgo())
			<-done
			_ = pc.SetReadDeadline(time.Time{})
		})
	}
}

// discardQueued empties the socket's queue once an update succeeded: the
// real device reboots and its new socket never sees what queued meanwhile.
func (s *Server) discardQueued(ctx context.Context, pc net.PacketConn) {
	buf := make([]byte, maxDatagram)
	for i := 0; i < 10000 && ctx.Err() == nil; i++ {
		_ = pc.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			break
		}
	}
	_ = pc.SetReadDeadline(time.Time{})
}

// aLongTimeAgo returns a deadline in the past, used to wake blocked reads.
func aLongTimeAgo() time.Time { return time.Unix(1, 0) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.TCPAddr:
		return a.IP
	case nil:
		return nil
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// describe words an Updater error for events and logs.
func describe(err error) string {
	if errors.Is(err, ErrDisconnect) {
		return fmt.Sprintf("connection dropped (%v)", err)
	}
	return err.Error()
}
