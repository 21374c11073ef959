package rawhttp

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/buildinfo"
	"github.com/ots-ota/ots-ota/upload"
)

// Defaults of Transport's timeouts (issue 9 §4); its connect timeout
// is upload.DefaultConnectTimeout.
const (
	// DefaultIdleTimeout must outlast a full-slot erase: esp_ota_begin
	// erases the whole slot (2–8 s for 2 MiB on an ESP32-S3, longer for
	// bigger slots) before the device reads the first byte.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultPath is where the seed and OTS firmware take uploads.
	DefaultPath = "/update"
)

const (
	defaultProgressInterval = 100 * time.Millisecond
	// writeChunk bounds one socket write, so the count of written bytes
	// (and with it Taken) follows the transfer closely.
	writeChunk = 16 << 10
	// eraseWindow is how many body bytes a device's TCP stack takes before
	// its handler reads anything (lwIP's 5760-byte window, plus kernel
	// rounding on the host): below it the device is still erasing.
	eraseWindow = 16 << 10
	// earlyAnswerGrace is how long a 2xx answer that came after every byte
	// was handed to the kernel waits for the writer to return from its
	// last write (it only needs to be scheduled on a loaded machine).
	earlyAnswerGrace = 2 * time.Second
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

func (h *Transport) connectTimeout() time.Duration {
	if h.ConnectTimeout > 0 {
		return h.ConnectTimeout
	}
	return upload.DefaultConnectTimeout
}

func (h *Transport) idleTimeout() time.Duration {
	if h.IdleTimeout > 0 {
		return h.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (h *Transport) progressInterval() time.Duration {
	if h.ProgressInterval > 0 {
		return h.ProgressInterval
	}
	return defaultProgressInterval
}

func (h *Transport) log() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.New(slog.DiscardHandler)
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
	if emit == nil {
		emit = func(upload.Event) {}
	}
	if fw.Filesystem {
		return &upload.DeviceError{Class: upload.ClassRejected,
			Reason: "HTTP devices take no filesystem image (the seed and OTS firmware update the app only): use an espota device, or send an app image"}
	}
	head, err := requestHead(t, fw.Size(), cred)
	if err != nil {
		return err
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, h.Timeout, errOverallTimeout)
		defer cancel()
	}
	addr := t.Addr()
	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size()})
	d := net.Dialer{Timeout: h.connectTimeout()}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return h.dialFailure(ctx, addr, err)
	}
	h.log().Debug("connected", "addr", addr, "path", uploadPathOf(t), "size", fw.Size())
	u := &httpUpload{h: h, ctx: ctx, ac: upload.NewAckCounter(conn), head: head, fw: fw, emit: emit, cred: cred, addr: addr,
		phase: upload.PhaseConnecting}
	return u.run()
}

// errOverallTimeout is the cause of a context ended by Timeout.
var errOverallTimeout = errors.New("overall timeout")

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

// httpUpload is one POST in flight.
type httpUpload struct {
	h    *Transport
	ctx  context.Context
	ac   *upload.AckCounter
	head []byte
	fw   *upload.Firmware
	emit upload.Emit
	cred upload.Credentials
	addr string

	phase upload.Phase
	done  int64 // body bytes last reported
	// heard is when the device last sent bytes of its answer (UnixNano):
	// a page still arriving is no idle device.
	heard atomic.Int64
}

type readResult struct {
	a   *answer
	err error
	at  upload.AckSnapshot // the ack counter when the final status line arrived
}

// answerClock reads the device's answer and notes the ack counter at the
// read that brought the final status line (readAnswerMarked's mark).
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

func (u *httpUpload) run() (err error) {
	answers := make(chan readResult, 1)
	wrote := make(chan error, 1)
	go func() {
		clk := &answerClock{ac: u.ac, heard: &u.heard}
		clk.br = bufio.NewReaderSize(clk, 4<<10)
		a, err := readAnswerMarked(clk.br, clk.markStatus)
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
	tick := time.NewTicker(u.h.progressInterval())
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
				u.h.log().Debug("write ended", "err", werr, "written", u.ac.Written())
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
			if idle := u.h.idleTimeout(); time.Since(lastChange) >= idle {
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

// write sends the head and the body in chunks, so Written tracks the
// transfer; it returns at the first failed write.
func (u *httpUpload) write() error {
	data := u.fw.Data
	first := min(len(data), writeChunk)
	buf := make([]byte, 0, len(u.head)+first)
	buf = append(append(buf, u.head...), data[:first]...)
	if _, err := u.ac.Write(buf); err != nil {
		return err
	}
	for off := first; off < len(data); off += writeChunk {
		if _, err := u.ac.Write(data[off:min(off+writeChunk, len(data))]); err != nil {
			return err
		}
	}
	return nil
}

// bodyTaken is how many image bytes the device has acknowledged.
func (u *httpUpload) bodyTaken() int64 {
	return max(0, min(u.ac.Taken()-int64(len(u.head)), u.fw.Size()))
}

// progress emits the phase the taken bytes show: erasing while the device
// has taken no more than its TCP window, uploading, then finishing once
// every byte is taken.
func (u *httpUpload) progress(taken int64, allWritten bool) {
	size := u.fw.Size()
	phase := u.phase
	if phase == upload.PhaseConnecting {
		// No refusal within a tick: as far as a client can tell, erasing.
		phase = upload.PhaseErasing
	}
	switch {
	case taken >= size && allWritten:
		phase = upload.PhaseFinishing
	case phase == upload.PhaseErasing && taken > min(eraseWindow, size/2):
		phase = upload.PhaseUploading
	}
	u.report(phase, taken)
}

func (u *httpUpload) report(phase upload.Phase, done int64) {
	if phase == u.phase && done == u.done {
		return
	}
	u.phase, u.done = phase, done
	e := upload.Event{Phase: phase, Done: done, Total: u.fw.Size()}
	if phase == upload.PhaseErasing && done == 0 {
		e.Message = "waiting for the device to erase its update slot"
	}
	u.emit(e)
}

// answered turns what the reader got into Send's result.
func (u *httpUpload) answered(r readResult, wrote *chan error, werr *error) error {
	size := u.fw.Size()
	if r.a != nil {
		return u.answer(r.a, r.at, wrote, werr)
	}
	// The connection ended without an answer. The write under way ends
	// with it: let it, so Written, and with it Taken, include what it
	// handed to the kernel.
	u.stopWriter(wrote, werr)
	taken := u.bodyTaken()
	if errors.Is(r.err, errNotHTTP) {
		return &upload.DeviceError{Class: upload.ClassRejected, Taken: taken, Err: r.err,
			Reason: fmt.Sprintf("%s answered something that is not HTTP: is this the device's OTA port?", u.addr)}
	}
	if u.ctx.Err() != nil {
		return u.ended(taken)
	}
	err := r.err
	written := max(0, u.ac.Written()-int64(len(u.head)))
	if upload.MayHoldAll(written, taken, size) {
		err = errors.Join(upload.ErrAnswerLost, r.err)
		if taken < size {
			// Its reset overtook the ACK of the last bytes it read.
			return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
				Reason: "the device closed the connection right after the last bytes, without answering: it may have taken the whole image (verification will tell)"}
		}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err, Reason: cutReason(taken, size)}
}

// answer judges the device's HTTP answer: accepted only when it is a 2xx
// that does not say it failed, and came after the whole image was taken
// (at: the ack counter when it arrived; see Send).
func (u *httpUpload) answer(a *answer, at upload.AckSnapshot, wrote *chan error, werr *error) error {
	size := u.fw.Size()
	words := a.wordsWith(redactor(u.cred).Redact)
	if !upload.Accepted(a.Status, words) {
		// A device closes, and resets, right after an error answer: the
		// write under way ends with it; let it, so Taken includes it.
		u.stopWriter(wrote, werr)
		class, why := upload.ClassifyAnswer(a.Status, words)
		de := &upload.DeviceError{Class: class, Status: a.Status, Words: words, Taken: u.bodyTaken(), Reason: why}
		if a.Status >= 200 && a.Status <= 299 {
			de.Err = upload.ErrFailurePage
		}
		return de
	}
	whole := int64(len(u.head)) + size
	if at.AllAcked(whole) {
		// Every byte was handed to the kernel (and acknowledged, where
		// that is measured) before the answer: the writer has returned
		// from its last write or is about to, once scheduled.
		u.awaitWriter(wrote, werr, min(earlyAnswerGrace, u.h.idleTimeout()))
	}
	// Otherwise the answer came too early: end the write at once, so no
	// more of the image reaches a device that may still be reading.
	u.stopWriter(wrote, werr)
	taken := u.bodyTaken()
	if *werr == nil && at.AllAcked(whole) && (!u.ac.Exact() || taken >= size) {
		u.report(upload.PhaseFinishing, size)
		u.h.log().Debug("accepted", "addr", u.addr, "status", a.Status, "words", words)
		return nil
	}
	if u.ctx.Err() != nil {
		return u.ended(taken)
	}
	u.h.log().Debug("early answer", "addr", u.addr, "status", a.Status, "begun", at.Begun, "written", at.Written,
		"queued", at.Queued, "exact", at.Exact, "write", *werr)
	return &upload.DeviceError{Class: upload.ClassEarlyAnswer, Status: a.Status, Words: words, Taken: taken, Err: upload.ErrEarlyAnswer,
		Reason: earlyReason(a.Status, taken, max(0, min(u.ac.Written()-int64(len(u.head)), size)), size, u.ac.Exact())}
}

// earlyReason says how much of the image a device had when the upload
// stopped right after its answer: the acknowledged count at the answer
// itself is only known to within the write under way.
func earlyReason(status int, taken, sent, size int64, exact bool) string {
	had := fmt.Sprintf("it had acknowledged %s of %s (%s sent)", byteCount(taken), byteCount(size), byteCount(sent))
	if !exact {
		had = fmt.Sprintf("%s of %s were sent", byteCount(sent), byteCount(size))
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
func (u *httpUpload) stopWriter(wrote *chan error, werr *error) {
	if *wrote == nil {
		return
	}
	_ = u.ac.SetWriteDeadline(time.Now())
	*werr = <-*wrote
	*wrote = nil
}

// awaitWriter waits at most d for the writer to return.
func (u *httpUpload) awaitWriter(wrote *chan error, werr *error, d time.Duration) {
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
func (u *httpUpload) ended(taken int64) error {
	err := u.ctx.Err()
	if errors.Is(context.Cause(u.ctx), errOverallTimeout) {
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: err,
			Reason: fmt.Sprintf("no answer within the overall timeout of %v (at %s of %s)", u.h.Timeout, byteCount(taken), byteCount(u.fw.Size()))}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &upload.DeviceError{Class: upload.ClassTimeout, Taken: taken, Err: err,
			Reason: fmt.Sprintf("stopped at the deadline, at %s of %s", byteCount(taken), byteCount(u.fw.Size()))}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Taken: taken, Err: err,
		Reason: fmt.Sprintf("upload interrupted at %s of %s", byteCount(taken), byteCount(u.fw.Size()))}
}

// cutReason says what a connection closed without an answer usually means.
func cutReason(taken, size int64) string {
	at := fmt.Sprintf("at %s of %s", byteCount(taken), byteCount(size))
	switch {
	case taken >= size:
		return "the device took the whole image, then closed the connection without answering: it may have rebooted into it (verification will tell) or lost its answer to a reset"
	case taken == 0:
		return "the device closed the connection before taking any of the image: another upload may be running, or it rebooted"
	}
	return "the device cut the upload " + at + " without an answer: it usually lost power, rebooted or dropped off Wi-Fi, or its error answer was lost to the connection reset"
}

func (u *httpUpload) silentReason(taken int64, idle time.Duration) string {
	size := u.fw.Size()
	switch {
	case taken >= size:
		return fmt.Sprintf("the device took the whole image but gave no answer for %v", idle)
	case taken <= min(eraseWindow, size/2):
		return fmt.Sprintf("the device took nothing for %v: it may still be erasing a large slot (raise --idle-timeout), be busy with another upload, or have hung", idle)
	}
	return fmt.Sprintf("the device stopped taking data at %s of %s and was silent for %v: it stalled, lost power or dropped off Wi-Fi",
		byteCount(taken), byteCount(size), idle)
}

// dialFailure classifies a failed connect.
func (h *Transport) dialFailure(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errOverallTimeout) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &upload.DeviceError{Class: upload.ClassNetwork, Err: ctx.Err(), Reason: "interrupted while connecting to " + addr}
	}
	class, reason := upload.ClassifyDial(addr, h.connectTimeout(), err)
	return &upload.DeviceError{Class: class, Err: err, Reason: reason}
}

// byteCount prints a byte count the way the progress bars do.
func byteCount(n int64) string {
	switch {
	case n < 10<<10:
		return fmt.Sprintf("%d B", n)
	case n < 10<<20:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
