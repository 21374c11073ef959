package espota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// runUpdate is ArduinoOTA's _runUpdate: Update.begin, the connect-back and
// the data phase. udpReplyTo is set for ESP8266, which answers the
// invitation only now ("OK" after a successful begin, "ERR: …" otherwise).
// ended runs once End succeeded, before the final OK goes out. It reports
// whether the update succeeded.
func (s *Server) runUpdate(ctx context.Context, pc net.PacketConn, inv invitation, hostIP net.IP, udpReplyTo net.Addr, ended func()) bool {
	f := s.cfg.Flavor
	base := Event{Cmd: inv.cmd, Port: inv.port, Size: inv.size, MD5: inv.md5}
	fail := func(remote net.Addr, total int, msg string) bool {
		e := base
		e.Kind, e.Remote, e.Total, e.Message = EventUploadFailed, remote, total, msg
		s.log.Info("update failed", "reason", msg, "written", total, "size", inv.size)
		s.emit(e)
		return false
	}

	if err := s.u.Begin(inv.size, inv.cmd); err != nil {
		if f == ESP8266 && !errors.Is(err, ErrDisconnect) {
			s.replyUDP(ctx, pc, udpReplyTo, "ERR: "+errorText(f, err))
			sleepCtx(ctx, s.scaled(esp8266BeginDelay))
		}
		// ESP32 goes back to IDLE silently: the host only sees no connection.
		return fail(nil, 0, "begin: "+describe(err))
	}
	var sh Shape
	if sp, ok := s.u.(Shaper); ok {
		sh = sp.Shape()
	}
	if f == ESP8266 {
		s.replyUDP(ctx, pc, udpReplyTo, "OK")
		if !sleepCtx(ctx, s.scaled(esp8266BeginDelay)) {
			s.u.Abort()
			return fail(nil, 0, "stopped")
		}
	}

	if s.cfg.NoConnectBack {
		s.u.Abort()
		return fail(nil, 0, "connect-back suppressed (fault)")
	}
	port := inv.port & 0xFFFF // connect() takes a uint16_t
	host := net.JoinHostPort(hostIP.String(), strconv.Itoa(port))
	d := net.Dialer{Timeout: connectTimeout, Control: s.cfg.DialControl}
	if s.cfg.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: s.cfg.LocalIP}
	}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		// The device carries on into Update.end(), which fails as premature:
		// same as an abort, and nothing can reach the host.
		s.u.Abort()
		return fail(nil, 0, fmt.Sprintf("connect back to %s: %v", host, err))
	}
	remote := conn.RemoteAddr()
	rw := newReplier(conn, s.cfg.Latency, s.log)
	stop := context.AfterFunc(ctx, func() {
		if !rw.vanish(s.cfg.Hold) {
			_ = conn.Close()
		}
	})
	defer stop()

	s.log.Info("update started", "host", remote.String(), "cmd", inv.cmd, "size", inv.size)
	started := base
	started.Kind, started.Remote = EventUploadStarted, remote
	s.emit(started)

	total, okSent, err := s.receive(ctx, conn, rw, inv, remote, base, sh)
	if err != nil {
		var we *writeError
		switch {
		case errors.As(err, &we) && errors.Is(we.err, ErrPowerLoss):
			if !rw.vanish(s.cfg.Hold) {
				rw.abort()
			}
		case errors.As(err, &we) && errors.Is(we.err, ErrDisconnect):
			rw.abort()
		case errors.As(err, &we):
			// The Update class failed: isFinished() turns true, the loop
			// ends and Update.end() prints the error onto the stream.
			rw.send(errorText(f, we.err))
			rw.close()
		default:
			// Receive timeout or the host went away: the device aborts and
			// closes without a word.
			s.u.Abort()
			rw.close()
		}
		return fail(remote, total, err.Error())
	}

	if err := s.u.End(inv.md5Lower()); err != nil {
		if errors.Is(err, ErrPowerLoss) {
			if !rw.vanish(s.cfg.Hold) {
				rw.abort()
			}
		} else if errors.Is(err, ErrDisconnect) {
			rw.abort()
		} else {
			rw.send(errorText(f, err))
			rw.close()
		}
		return fail(remote, total, "end: "+describe(err))
	}
	ended()
	if f == ESP8266 {
		// "Ensure last count packet has been sent out and not combined with
		// the final OK": flush, delay(1000), OK, flush, delay(1000), stop.
		rw.flush()
		sleepCtx(ctx, s.scaled(esp8266OKDelay))
	}
	if !s.cfg.LoseFinalOK && !okSent {
		rw.send("OK")
	}
	if f == ESP8266 {
		rw.flush()
		sleepCtx(ctx, s.scaled(esp8266OKDelay))
	}
	rw.close()
	s.log.Info("update finished", "host", remote.String(), "size", inv.size, "final_ok_sent", !s.cfg.LoseFinalOK)
	done := base
	done.Kind, done.Remote, done.Total = EventUploadFinished, remote, total
	s.emit(done)
	return true
}

func (inv invitation) md5Lower() string {
	b := []byte(inv.md5)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// writeError marks a failure reported by Updater.Write (or the space check
// that precedes it).
type writeError struct {
	total int
	err   error
}

func (e *writeError) Error() string {
	return fmt.Sprintf("write at byte %d: %s", e.total, describe(e.err))
}

// receive is the data loop. It returns the bytes accepted and nil once all
// inv.size bytes were written, or the reason it stopped; okSent says an
// early OK went out (Shape.EarlyOK).
func (s *Server) receive(ctx context.Context, conn net.Conn, rw *replier, inv invitation, remote net.Addr, base Event, sh Shape) (int, bool, error) {
	f := s.cfg.Flavor
	bufSize := esp32ReadSize
	if f == ESP8266 {
		bufSize = esp8266ReadSize
	}
	if sh.ReadMax > 0 && sh.ReadMax < bufSize {
		bufSize = sh.ReadMax
	}
	buf := make([]byte, bufSize)
	total, written, tried := 0, 0, 0
	okSent := false
	// shaped applies the shape's early OK and chatter at this point; a
	// non-nil error ends the update.
	shaped := func() error {
		if sh.EarlyOK && !okSent && total >= sh.EarlyOKAt {
			okSent = true
			s.log.Debug("early OK", "taken", total, "size", inv.size)
			rw.send("OK")
			if sh.EarlyOKClose {
				return fmt.Errorf("closed after an early OK at %d of %d bytes", total, inv.size)
			}
		}
		if sh.Chatter && total >= sh.ChatterAt {
			return s.chatter(ctx, rw, written, total, inv.size, sh.ChatterEvery)
		}
		return nil
	}
	for total < inv.size {
		if err := shaped(); err != nil {
			return total, okSent, err
		}
		want := len(buf)
		if f == ESP8266 && want > inv.size-total {
			// Update.write(client) never takes more than remaining().
			want = inv.size - total
		}
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.RecvTimeout))
		n, err := conn.Read(buf[:want])
		if n > 0 {
			tried = 0
			p := buf[:n]
			if total+n > inv.size {
				// ESP32 Update.write: len > remaining() → abort with
				// UPDATE_ERROR_SPACE, nothing written.
				s.u.Abort()
				return total, okSent, &writeError{total: total, err: NewUpdateError(f, ErrKindSpace)}
			}
			if werr := s.u.Write(p); werr != nil {
				return total, okSent, &writeError{total: total, err: werr}
			}
			total += n
			written = n
			rw.send(strconv.Itoa(n))
			e := base
			e.Kind, e.Remote, e.Count, e.Total = EventProgress, remote, n, total
			s.emit(e)
			continue
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return total, okSent, fmt.Errorf("stopped after %d of %d bytes", total, inv.size)
		}
		if isTimeout(err) {
			if f == ESP8266 {
				// `while (!client.available() && waited--)` leaves waited at
				// -1, so `if (!waited)` never fires: ESP8266 waits on.
				continue
			}
			if written > 0 && tried < esp32Resends {
				tried++
				s.log.Debug("receive timeout, resending last count", "try", tried, "count", written)
				rw.send(strconv.Itoa(written))
				continue
			}
			return total, okSent, fmt.Errorf("receive timeout after %d of %d bytes", total, inv.size)
		}
		if errors.Is(err, io.EOF) {
			return total, okSent, fmt.Errorf("host closed the connection after %d of %d bytes", total, inv.size)
		}
		return total, okSent, fmt.Errorf("read after %d of %d bytes: %w", total, inv.size, err)
	}
	if err := shaped(); err != nil {
		return total, okSent, err
	}
	return total, okSent, nil
}

// chatter takes no more data and repeats the last count every pace until
// the host goes away or the device stops (Shape.Chatter).
func (s *Server) chatter(ctx context.Context, rw *replier, last, total, size int, pace time.Duration) error {
	s.log.Debug("chatter", "taken", total, "size", size)
	if pace <= 0 {
		pace = 250 * time.Millisecond
	}
	count := strconv.Itoa(last)
	t := time.NewTicker(pace)
	defer t.Stop()
	for {
		rw.send(count)
		if rw.broken.Load() {
			return fmt.Errorf("chattered after %d of %d bytes until the host went away", total, size)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while chattering after %d of %d bytes", total, size)
		case <-t.C:
		}
	}
}

// replier writes the device's TCP replies in order. With a latency each
// reply leaves that long after it was produced, from a separate goroutine,
// so the device keeps reading meanwhile — a network delay, not a slow
// device.
type replier struct {
	conn    net.Conn
	latency time.Duration
	log     *slog.Logger
	q       chan reply
	done    chan struct{}
	gone    atomic.Bool // handed over by vanish: never written or closed again
	broken  atomic.Bool // a write failed: the host is gone
}

// vanish hands the connection to hold, untouched, once; false without hold.
func (r *replier) vanish(hold func(net.Conn)) bool {
	if hold == nil {
		return false
	}
	if r.gone.CompareAndSwap(false, true) {
		_ = r.conn.SetDeadline(aLongTimeAgo()) // wakes the device's own reads and writes
		hold(r.conn)
	}
	return true
}

type reply struct {
	b       []byte
	due     time.Time
	flushed chan struct{} // a flush marker when non-nil
}

func newReplier(conn net.Conn, latency time.Duration, log *slog.Logger) *replier {
	r := &replier{conn: conn, latency: latency, log: log}
	if latency > 0 {
		r.q = make(chan reply, 4096)
		r.done = make(chan struct{})
		go r.run()
	}
	return r
}

func (r *replier) run() {
	defer close(r.done)
	for it := range r.q {
		if it.flushed != nil {
			close(it.flushed)
			continue
		}
		if d := time.Until(it.due); d > 0 {
			time.Sleep(d) // bounded by latency: every due time is at most that far ahead
		}
		r.write(it.b)
	}
}

func (r *replier) write(b []byte) {
	if r.gone.Load() {
		return
	}
	_ = r.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := r.conn.Write(b); err != nil {
		r.broken.Store(true)
		r.log.Debug("tcp reply failed", "err", err)
	}
}

func (r *replier) send(msg string) {
	if r.q == nil {
		r.write([]byte(msg))
		return
	}
	r.q <- reply{b: []byte(msg), due: time.Now().Add(r.latency)}
}

// flush waits until every reply sent so far is on the wire.
func (r *replier) flush() {
	if r.q == nil {
		return
	}
	ch := make(chan struct{})
	r.q <- reply{flushed: ch}
	<-ch
}

// close flushes and closes the connection (client.stop()).
func (r *replier) close() {
	if r.q != nil {
		close(r.q)
		<-r.done
	}
	if !r.gone.Load() {
		_ = r.conn.Close()
	}
}

// abort flushes what was already sent, then resets the connection: a link
// drop or power loss, not a orderly close.
func (r *replier) abort() {
	if r.q != nil {
		close(r.q)
		<-r.done
	}
	if r.gone.Load() {
		return
	}
	if tc, ok := r.conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = r.conn.Close()
}
