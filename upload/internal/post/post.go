// Package post sends one HTTP request whose body carries an image, the way
// the HTTP transports under upload/ need it: written over a plain TCP
// connection while the answer is read, progress counted in bytes the
// device acknowledged, an answer that came before the whole body was taken
// never counted as a success. The body is streamed from the firmware's own
// bytes between a prefix and a suffix (a multipart form's framing), never
// copied. The HTTP clients (rawhttp, form, elegantota, wled) share it, so their
// timing rules cannot drift apart; what an answer means is each client's
// (Request.Judge).
package post

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// DefaultIdleTimeout must outlast a full-slot erase: esp_ota_begin
// erases the whole slot (2–8 s for 2 MiB on an ESP32-S3, longer for bigger
// slots) before the device reads the first byte.
const DefaultIdleTimeout = 30 * time.Second

const (
	defaultProgressInterval = 100 * time.Millisecond
	// writeChunk bounds one socket write, so the count of written bytes
	// (and with it Taken) follows the transfer closely.
	writeChunk = 16 << 10
	// EraseWindow is how many body bytes a device's TCP stack takes before
	// its handler reads anything (lwIP's 5760-byte window, plus kernel
	// rounding on the host): below it the device is still erasing.
	EraseWindow = 16 << 10
	// earlyAnswerGrace is how long a 2xx answer that came after every byte
	// was handed to the kernel waits for the writer to return from its
	// last write (it only needs to be scheduled on a loaded machine).
	earlyAnswerGrace = 2 * time.Second
)

// Config is a transport's timing.
type Config struct {
	// ConnectTimeout bounds the TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout ends a request when the device takes no byte and gives
	// no answer for this long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Timeout bounds the whole request; 0 means none beyond the idle rule.
	Timeout time.Duration
	// ProgressInterval is how often the taken bytes are polled and
	// reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger
}

func (c Config) connectTimeout() time.Duration {
	if c.ConnectTimeout > 0 {
		return c.ConnectTimeout
	}
	return upload.DefaultConnectTimeout
}

func (c Config) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (c Config) progressInterval() time.Duration {
	if c.ProgressInterval > 0 {
		return c.ProgressInterval
	}
	return defaultProgressInterval
}

func (c Config) log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Request is one request that carries an image.
type Request struct {
	// Addr is host:port to connect to.
	Addr string
	// Head is the request line and headers, through the blank line; its
	// Content-Length counts Prefix, Data and Suffix.
	Head []byte
	// Prefix and Suffix frame the image in the body (a multipart form's
	// part header and closing boundary); nil for a raw body.
	Prefix, Suffix []byte
	// Data is the image, written as it is (never copied, never modified).
	Data []byte
	// Redact hides what the device may echo of the credentials in its
	// text, before the text is cut to length; nil leaves the text as is.
	Redact func(string) string
	// Judge decides what an answer means: nil when the device accepted
	// the image, else the failure (Taken is filled in here). words is the
	// device's text, one line, NOT redacted: judge on it, and put it in
	// DeviceError.Words; Send redacts what is kept. An accepted answer
	// counts only when it came after the whole body was taken (else
	// upload.ClassEarlyAnswer).
	Judge func(a *Answer, words string) *upload.DeviceError
	// Waiting is the message of the first event while the device takes
	// nothing yet; "" says it is erasing its update slot.
	Waiting string
}

// Send sends r and returns nil only when the device answered with what
// r.Judge accepts after taking the whole body, else a *upload.DeviceError
// whose Taken is the image bytes the device had acknowledged when the
// request ended. When ctx ends the error wraps ctx.Err()
// (errors.Is(err, context.Canceled) tells an interrupted upload from a
// failed one). Progress (Done) counts image bytes the device acknowledged,
// never more, and never goes back.
//
// "After taking the whole body": where the ack counter is exact (Linux,
// macOS) every byte was acknowledged when the answer arrived; elsewhere
// every byte was written and the answer arrived after the last write began.
func Send(ctx context.Context, cfg Config, r Request, emit upload.Emit) error {
	if emit == nil {
		emit = func(upload.Event) {}
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cfg.Timeout, errOverallTimeout)
		defer cancel()
	}
	size := int64(len(r.Data))
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: size})
	conn, err := Dial(ctx, cfg, r.Addr)
	if err != nil {
		return err
	}
	cfg.log().Debug("connected", "addr", r.Addr, "size", size)
	u := &request{cfg: cfg, r: r, ctx: ctx, ac: upload.NewAckCounter(conn), emit: emit, size: size,
		before: int64(len(r.Head) + len(r.Prefix)), phase: upload.PhaseConnecting}
	return u.run()
}

// errOverallTimeout is the cause of a context ended by Config.Timeout.
var errOverallTimeout = errors.New("overall timeout")

// Dial connects to addr within the connect timeout; a failure is a
// *upload.DeviceError classified by upload.ClassifyDial.
func Dial(ctx context.Context, cfg Config, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: cfg.connectTimeout()}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		return conn, nil
	}
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errOverallTimeout) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, &upload.DeviceError{Class: upload.ClassNetwork, Err: ctx.Err(), Reason: "interrupted while connecting to " + addr}
	}
	class, reason := upload.ClassifyDial(addr, cfg.connectTimeout(), err)
	return nil, &upload.DeviceError{Class: class, Err: err, Reason: reason}
}

// request is one request in flight.
type request struct {
	cfg  Config
	r    Request
	ctx  context.Context
	ac   *upload.AckCounter
	emit upload.Emit
	size int64
	// before is how many bytes precede the image on the wire (head and
	// prefix).
	before int64

	phase upload.Phase
	done  int64 // image bytes last reported
	// heard is when the device last sent bytes of its answer (UnixNano):
	// a page still arriving is no idle device.
	heard atomic.Int64
}

// whole is every byte of the request.
func (u *request) whole() int64 { return u.before + u.size + int64(len(u.r.Suffix)) }

type readResult struct {
	a   *Answer
	err error
	at  upload.AckSnapshot // the ack counter when the final status line arrived
}

// answerClock reads the device's answer and notes the ack counter at the
// read that brought the final status line (ReadAnswerMarked's mark).
// Only the reader goroutine uses it.
type answerClock struct {
	ac    *upload.AckCounter
	br    *bufio.Reader
	heard *atomic.Int64
	last  upload.AckSnapshot // at the latest read that brought bytes
	mark  upload.AckSnapshot
	armed bool // the next read that brings bytes sets mark
}

func (c *answerClock) Read(p []byte) (int, error) {
	n, err := c.ac.Conn.Read(p)
	if n > 0 {
		c.heard.Store(time.Now().UnixNano())
		c.last = c.ac.Snapshot()
		if c.armed {
			c.mark, c.armed = c.last, false
		}
	}
	return n, err
}

// markStatus is called before each status line is read: one already in
// the buffer came with the latest read, else it comes with the next one.
func (c *answerClock) markStatus() {
	if c.br.Buffered() > 0 {
		c.mark, c.armed = c.last, false
		return
	}
	c.armed = true
}

func (u *request) run() (err error) {
	answers := make(chan readResult, 1)
	wrote := make(chan error, 1)
	go func() {
		clk := &answerClock{ac: u.ac, heard: &u.heard}
		clk.br = bufio.NewReaderSize(clk, 4<<10)
		a, err := ReadAnswerMarked(clk.br, clk.markStatus)
		answers <- readResult{a, err, clk.mark}
	}()
	go func() { wrote <- u.write() }()
	// Closing the connection ends both goroutines; wait for them so none
	// outlives Send.
	defer func() {
		if err != nil {
			// Given up (timeout, Ctrl-C) or failed: reset rather than
			// close, so the kernel drops what it still buffered instead of
			// delivering it to a stalled device that would then install
			// the image push has just reported as failed.
			if tc, ok := u.ac.Conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
		}
		u.ac.Close()
		if wrote != nil {
			<-wrote
		}
		if answers != nil {
			<-answers
		}
	}()

	// Erasing is told at the first tick, not now: a device that refuses the
	// request (401, 403, 404) answers at once and never erases.
	tick := time.NewTicker(u.cfg.progressInterval())
	defer tick.Stop()
	last, lastChange := int64(-1), time.Now()
	var werr error
	for {
		select {
		case r := <-answers:
			answers = nil
			return u.answered(r, &wrote, &werr)
		case werr = <-wrote:
			// A failed write is not the end: the device's answer (or
			// its reset) is still to be read.
			wrote = nil
			if werr != nil {
				u.cfg.log().Debug("write ended", "err", werr, "written", u.ac.Written())
			}
		case <-tick.C:
			taken := u.bodyTaken()
			if taken != last {
				last, lastChange = taken, time.Now()
			}
			if h := time.Unix(0, u.heard.Load()); h.After(lastChange) {
				lastChange = h
			}
			u.progress(taken, wrote == nil && werr == nil)
			if idle := u.cfg.idleTimeout(); time.Since(lastChange) >= idle {
				// A blocked write may have handed part of its bytes to
				// the kernel: end it, so Taken counts them.
				u.stopWriter(&wrote, &werr)
				// What arrived of an answer is the device's word: end the
				// read and judge it.
				_ = u.ac.SetReadDeadline(time.Now())
				r := <-answers
				answers = nil
				if r.a != nil {
					return u.answered(r, &wrote, &werr)
				}
				taken = u.bodyTaken()
				return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: fmt.Errorf("idle for %v", idle),
					Reason: u.silentReason(taken, idle)}
			}
		case <-u.ctx.Done():
			u.stopWriter(&wrote, &werr)
			return u.ended(u.bodyTaken())
		}
	}
}

// write sends the head, the prefix, the image and the suffix, the image in
// chunks so Written tracks the transfer; it returns at the first failed
// write. The first write carries the head, the prefix and the image's first
// chunk together (a device's first segment holds the whole head); only that
// small buffer is allocated, the image is written from its own bytes.
func (u *request) write() error {
	data := u.r.Data
	first := min(len(data), writeChunk)
	buf := make([]byte, 0, len(u.r.Head)+len(u.r.Prefix)+first)
	buf = append(append(append(buf, u.r.Head...), u.r.Prefix...), data[:first]...)
	if _, err := u.ac.Write(buf); err != nil {
		return err
	}
	for off := first; off < len(data); off += writeChunk {
		if _, err := u.ac.Write(data[off:min(off+writeChunk, len(data))]); err != nil {
			return err
		}
	}
	if len(u.r.Suffix) > 0 {
		if _, err := u.ac.Write(u.r.Suffix); err != nil {
			return err
		}
	}
	return nil
}

// bodyTaken is how many image bytes the device has acknowledged.
func (u *request) bodyTaken() int64 {
	return max(0, min(u.ac.Taken()-u.before, u.size))
}

// imageWritten is how many image bytes the local socket accepted.
func (u *request) imageWritten() int64 {
	return max(0, min(u.ac.Written()-u.before, u.size))
}

// progress emits the phase the taken bytes show: erasing while the device
// has taken no more than its TCP window, uploading, then finishing once
// every byte is taken.
func (u *request) progress(taken int64, allWritten bool) {
	phase := u.phase
	if phase == upload.PhaseConnecting {
		// No refusal within a tick: as far as a client can tell, erasing.
		phase = upload.PhaseErasing
	}
	switch {
	case taken >= u.size && allWritten:
		phase = upload.PhaseFinishing
	case phase == upload.PhaseErasing && taken > min(EraseWindow, u.size/2):
		phase = upload.PhaseUploading
	}
	u.report(phase, taken)
}

// report emits phase and done; done never goes back (two reads of the
// counter around a write may see the queue grow before the count).
func (u *request) report(phase upload.Phase, done int64) {
	done = max(done, u.done)
	if phase == u.phase && done == u.done {
		return
	}
	u.phase, u.done = phase, done
	e := upload.Event{Phase: phase, Done: done, Total: u.size}
	if phase == upload.PhaseErasing && done == 0 {
		e.Message = u.r.Waiting
		if e.Message == "" {
			e.Message = "waiting for the device to erase its update slot"
		}
	}
	u.emit(e)
}

// answered turns what the reader got into Send's result.
func (u *request) answered(r readResult, wrote *chan error, werr *error) error {
	if r.a != nil {
		return u.answer(r.a, r.at, wrote, werr)
	}
	// The connection ended without an answer. The write under way ends
	// with it: let it, so Written, and with it Taken, include what it
	// handed to the kernel.
	u.stopWriter(wrote, werr)
	taken := u.bodyTaken()
	if errors.Is(r.err, ErrNotHTTP) {
		return &upload.DeviceError{Class: upload.ClassRejected, Taken: taken, Err: r.err,
			Reason: fmt.Sprintf("%s answered something that is not HTTP: is this the device's OTA port?", u.r.Addr)}
	}
	if u.ctx.Err() != nil {
		return u.ended(taken)
	}
	err := r.err
	if upload.MayHoldAll(u.imageWritten(), taken, u.size) {
		err = errors.Join(upload.ErrAnswerLost, r.err)
		if taken < u.size {
			// Its reset overtook the ACK of the last bytes it read.
			return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
				Reason: "the device closed the connection right after the last bytes, without answering: it may have taken the whole image (verification will tell)"}
		}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err, Reason: cutReason(taken, u.size)}
}

// keptWords is words as a failure keeps them: redacted, when they are the
// device's (Judge put Answer.Words there).
func keptWords(a *Answer, words string, redact func(string) string) string {
	if words == "" || redact == nil {
		return words
	}
	if words == a.Words() {
		return a.WordsWith(redact)
	}
	return redact(words)
}

// answer judges the device's HTTP answer: accepted only when Judge accepts
// it and it came after the whole body was taken (at: the ack counter when
// it arrived; see Send).
func (u *request) answer(a *Answer, at upload.AckSnapshot, wrote *chan error, werr *error) error {
	// Judge the device's own words: redaction could hide the very words
	// that tell success or failure (a short password inside "Update
	// Success!"); only the words kept for the user are redacted.
	if de := u.r.Judge(a, a.Words()); de != nil {
		de.Words = keptWords(a, de.Words, u.r.Redact)
		// A device closes, and resets, right after an error answer: the
		// write under way ends with it; let it, so Taken includes it.
		u.stopWriter(wrote, werr)
		de.Taken = u.bodyTaken()
		return de
	}
	words := a.WordsWith(u.r.Redact) // for the log and an early answer
	whole := u.whole()
	if at.AllAcked(whole) {
		// Every byte was handed to the kernel (and acknowledged, where
		// that is measured) before the answer: the writer has returned
		// from its last write or is about to, once scheduled.
		u.awaitWriter(wrote, werr, min(earlyAnswerGrace, u.cfg.idleTimeout()))
	}
	// Otherwise the answer came too early: end the write at once, so no
	// more of the image reaches a device that may still be reading.
	u.stopWriter(wrote, werr)
	taken := u.bodyTaken()
	if *werr == nil && at.AllAcked(whole) && (!u.ac.Exact() || taken >= u.size) {
		u.report(upload.PhaseFinishing, u.size)
		u.cfg.log().Debug("accepted", "addr", u.r.Addr, "status", a.Status, "words", words)
		return nil
	}
	if u.ctx.Err() != nil {
		return u.ended(taken)
	}
	u.cfg.log().Debug("early answer", "addr", u.r.Addr, "status", a.Status, "begun", at.Begun, "written", at.Written,
		"queued", at.Queued, "exact", at.Exact, "write", *werr)
	return &upload.DeviceError{Class: upload.ClassEarlyAnswer, Status: a.Status, Words: words, Taken: taken, Err: upload.ErrEarlyAnswer,
		Reason: earlyReason(a.Status, taken, u.imageWritten(), u.size, u.ac.Exact())}
}

// earlyReason says how much of the image a device had when the upload
// stopped right after its answer: the acknowledged count at the answer
// itself is only known to within the write under way.
func earlyReason(status int, taken, sent, size int64, exact bool) string {
	had := fmt.Sprintf("it had acknowledged %s of %s (%s sent)", ByteCount(taken), ByteCount(size), ByteCount(sent))
	if !exact {
		had = fmt.Sprintf("%s of %s were sent", ByteCount(sent), ByteCount(size))
	}
	return fmt.Sprintf("the device answered %d before it had the whole image: %s when the upload stopped; such an answer proves no update (is this the device's OTA upload handler? check the URL)",
		status, had)
}

// stopWriter ends the write under way and waits for the writer to return,
// so Written counts what it handed to the kernel. A timed wait would lose
// that count whenever a loaded machine leaves the writer unscheduled for
// longer than the wait; the write deadline ends a write that is blocked
// (the device keeps the connection open without reading) at once instead,
// and the writer returns at its first failed write, so the wait is short
// even when ctx has ended.
func (u *request) stopWriter(wrote *chan error, werr *error) {
	if *wrote == nil {
		return
	}
	_ = u.ac.SetWriteDeadline(time.Now())
	*werr = <-*wrote
	*wrote = nil
}

// awaitWriter waits at most d for the writer to return.
func (u *request) awaitWriter(wrote *chan error, werr *error, d time.Duration) {
	if *wrote == nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case *werr = <-*wrote:
		*wrote = nil
	case <-t.C:
	case <-u.ctx.Done():
	}
}

// ended is the error for a context that ended: the overall timeout, or
// the caller's cancellation or deadline.
func (u *request) ended(taken int64) error {
	return endedError(u.ctx, u.cfg, taken, u.size)
}

func endedError(ctx context.Context, cfg Config, taken, size int64) error {
	err := ctx.Err()
	if errors.Is(context.Cause(ctx), errOverallTimeout) {
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: err,
			Reason: fmt.Sprintf("no answer within the overall timeout of %v (at %s of %s)", cfg.Timeout, ByteCount(taken), ByteCount(size))}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: err,
			Reason: fmt.Sprintf("stopped at the deadline, at %s of %s", ByteCount(taken), ByteCount(size))}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
		Reason: fmt.Sprintf("upload interrupted at %s of %s", ByteCount(taken), ByteCount(size))}
}

// cutReason says what a connection closed without an answer usually means.
func cutReason(taken, size int64) string {
	at := fmt.Sprintf("at %s of %s", ByteCount(taken), ByteCount(size))
	switch {
	case taken >= size:
		return "the device took the whole image, then closed the connection without answering: it may have rebooted into it (verification will tell) or lost its answer to a reset"
	case taken == 0:
		return "the device closed the connection before taking any of the image: another upload may be running, or it rebooted"
	}
	return "the device cut the upload " + at + " without an answer: it usually lost power, rebooted or dropped off Wi-Fi, or its error answer was lost to the connection reset"
}

func (u *request) silentReason(taken int64, idle time.Duration) string {
	switch {
	case taken >= u.size:
		return fmt.Sprintf("the device took the whole image but gave no answer for %v", idle)
	case taken <= min(EraseWindow, u.size/2):
		return fmt.Sprintf("the device took nothing for %v: it may still be erasing a large slot (raise --idle-timeout), be busy with another upload, or have hung", idle)
	}
	return fmt.Sprintf("the device stopped taking data at %s of %s and was silent for %v: it stalled, lost power or dropped off Wi-Fi",
		ByteCount(taken), ByteCount(u.size), idle)
}

// ByteCount prints a byte count the way the progress bars do.
func ByteCount(n int64) string {
	switch {
	case n < 10<<10:
		return fmt.Sprintf("%d B", n)
	case n < 10<<20:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
