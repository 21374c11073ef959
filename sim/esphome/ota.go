package esphome

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
)

// The bytes of the protocol (components/ota/ota_backend.h).
const (
	respOK           = 0x00
	respAuthMD5      = 0x01
	respAuthSHA256   = 0x02
	respHeaderOK     = 0x40
	respAuthOK       = 0x41
	respPrepareOK    = 0x42
	respBinMD5OK     = 0x43
	respReceiveOK    = 0x44
	respEndOK        = 0x45
	respCompression  = 0x46
	respChunkOK      = 0x47
	respFeatureFlags = 0x48

	errMagic          = 0x80
	errPrepare        = 0x81
	errAuth           = 0x82
	errWrite          = 0x83
	errEnd            = 0x84
	errBootstrap      = 0x85
	errCurFlash       = 0x86
	errNewFlash       = 0x87
	errSpace8266      = 0x88
	errSpace32        = 0x89
	errNoPartition    = 0x8A
	errMD5            = 0x8B
	errSpaceRP2040    = 0x8C
	errSignature      = 0x8D
	errOTAType        = 0x8E
	errPartVerify     = 0x8F
	errPartUpdate     = 0x90
	errBootVerify     = 0x91
	errBootUpdate     = 0x92
	errDowngrade      = 0x93
	errEncryptionReqd = 0x94
	errUnknown        = 0xFF
)

// Client feature flags and server flags.
const (
	clientCompression = 0x01
	clientSHA256      = 0x02
	clientExtended    = 0x04
	clientNoise       = 0x08

	serverCompression = 0x01
	serverPartitions  = 0x02
	serverNoise       = 0x04
)

// magic is what a client sends first.
var magic = []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}

// blockSize is OTA_BLOCK_SIZE: a 47 per this many bytes in protocol 2.
const blockSize = 8192

// readSize is OTA_BUFFER_SIZE: the device reads at most this much at a time.
const readSize = 1024

// Step is where in a session the firmware can answer an error byte.
type Step string

// Steps.
const (
	StepMagic   Step = "magic"    // instead of 00 <ver>
	StepFeature Step = "features" // instead of the feature answer
	StepAuth    Step = "auth"     // after the client's response
	StepType    Step = "ota-type" // after the size (extended protocol)
	StepBegin   Step = "begin"    // the backend's begin, instead of 42
	StepData    Step = "data"     // half-way through the image
	StepEnd     Step = "end"      // the backend's end, after 44
)

// FailStep is the step where the firmware answers error byte b, "" when
// b is not one of its error bytes.
func FailStep(b byte) Step {
	switch b {
	case errMagic:
		return StepMagic
	case errEncryptionReqd:
		return StepFeature
	case errAuth:
		return StepAuth
	case errOTAType:
		return StepType
	case errPrepare, errBootstrap, errCurFlash, errNewFlash, errSpace8266, errSpace32, errNoPartition, errSpaceRP2040:
		return StepBegin
	case errWrite, errUnknown:
		return StepData
	case errEnd, errMD5, errSignature, errPartVerify, errPartUpdate, errBootVerify, errBootUpdate, errDowngrade:
		return StepEnd
	}
	return ""
}

// failImpossible says why error byte o.Fail cannot come from this build,
// "" when it can.
func failImpossible(o Options, esp8266, password bool) string {
	b := o.Fail
	switch {
	case FailStep(b) == "":
		return "is not an ESPHome OTA error byte (80–94, FF)"
	case b == errSpaceRP2040:
		return "comes from RP2040 builds only"
	case esp8266 && (b == errSpace32 || b == errNoPartition):
		return "comes from ESP32 builds only"
	case !esp8266 && b >= errBootstrap && b <= errSpace8266:
		return "comes from ESP8266 builds only"
	case esp8266 && b == errNewFlash && !o.Mode2024:
		return "comes from the Arduino Updater backend only (2024 firmware)"
	case b == errAuth && !password:
		return "needs a password"
	case b == errOTAType && o.NoExtended:
		return "needs the extended protocol (the OTA type byte)"
	case b >= errPartVerify && b <= errBootUpdate && !o.PartitionAccess:
		return "follows a partition-table or bootloader update, which needs partition access"
	case o.Mode2024 && b >= errSignature:
		return "is newer than 2024 firmware"
	case b == errEncryptionReqd && o.Noise != NoiseRequired:
		return "is sent by a node that requires OTA encryption"
	}
	return ""
}

// errAbort ends a session without an answer: the client went away, timed
// out in the handshake, or the device is stopping.
var errAbort = errors.New("session over")

// session is one client's OTA session.
type session struct {
	e      *core.Env
	f      firmware
	o      Options
	st     *nodeState
	ctx    context.Context
	c      net.Conn
	remote string
	accept time.Time
	feat   byte
	u      *core.Upload
	// What receive saw: the MD5 hex of the payload and, on ESP8266, a
	// first byte that is neither 0xE9 nor gzip (the current backend stages
	// it and refuses it at the end).
	sum      string
	badMagic bool
	payload  []byte // what was received, for the identity of the image
}

func newSession(e *core.Env, f firmware, ctx context.Context, c net.Conn) *session {
	return &session{e: e, f: f, o: optionsOf(e.Config(), f.esp8266), st: stateOf(e), ctx: ctx, c: c,
		remote: c.RemoteAddr().String(), accept: time.Now()}
}

// fail reports whether Options.Fail answers at step (and counts it).
func (s *session) fail(step Step) bool {
	return s.o.Fail != 0 && FailStep(s.o.Fail) == step && s.st.takeFail(s.o)
}

// stopping reports whether the device is resetting or closing: then the
// connection is left alone.
func (s *session) stopping() bool { return s.ctx.Err() != nil }

// handshakeDeadline is when a handshake read or write gives up: 20 s from
// accept (current), or 1 s from the start of each read (2024).
func (s *session) handshakeDeadline() time.Time {
	if s.o.Mode2024 {
		return time.Now().Add(s.o.HandshakeTimeout)
	}
	return s.accept.Add(s.o.HandshakeTimeout)
}

func (s *session) readFull(buf []byte, deadline time.Time) error {
	_ = s.c.SetReadDeadline(deadline)
	_, err := io.ReadFull(s.c, buf)
	if err != nil {
		if s.stopping() {
			return errAbort
		}
		return err
	}
	return nil
}

func (s *session) write(b ...byte) error {
	if l := s.e.Latency(); l > 0 && !core.Sleep(s.ctx, l) {
		return errAbort
	}
	_ = s.c.SetWriteDeadline(time.Now().Add(max(s.o.DataTimeout, 2*time.Second)))
	if _, err := s.c.Write(b); err != nil {
		if s.stopping() {
			return errAbort
		}
		return err
	}
	return nil
}

// answerError sends one error byte and ends the session (the server closes).
func (s *session) answerError(b byte, reason string) {
	s.e.Logger().Debug("esphome ota error", "byte", fmt.Sprintf("%02X", b), "reason", reason)
	if s.u != nil && !s.u.Done() {
		// No HTTP status: the device's words are its one byte.
		s.u.Fail(0, fmt.Sprintf("error byte %02X", b), reason)
	}
	if s.write(b) != nil {
		return
	}
	if d := s.e.Timing().ErrorCloseDelay; d > 0 {
		core.Sleep(s.ctx, d)
	}
}

// run is the session: handshake, then the data phase.
func (s *session) run() {
	if err := s.handshake(); err != nil {
		s.e.Logger().Debug("esphome ota handshake ended", "err", err)
		return
	}
	s.data()
}

// handshake reads the magic and features, answers them and authenticates.
// An error means the session is over (answered or not).
func (s *session) handshake() error {
	buf := make([]byte, 5)
	// 2024 firmware answers FF when a handshake read fails (its error
	// path); the current one just closes.
	readFail := func(err error) error {
		if s.o.Mode2024 && !errors.Is(err, errAbort) {
			s.answerError(errUnknown, "handshake read: "+err.Error())
		}
		return err
	}
	if err := s.readFull(buf, s.handshakeDeadline()); err != nil {
		return readFail(err)
	}
	if !bytes.Equal(buf, magic) {
		s.answerError(errMagic, fmt.Sprintf("magic % X", buf))
		return errAbort
	}
	if s.fail(StepMagic) {
		s.answerError(errMagic, "fault")
		return errAbort
	}
	if err := s.write(respOK, byte(s.o.Version)); err != nil {
		return err
	}
	if err := s.readFull(buf[:1], s.handshakeDeadline()); err != nil {
		return readFail(err)
	}
	s.feat = buf[0]
	if s.o.Noise == NoiseRequired && s.feat&clientNoise == 0 || s.fail(StepFeature) {
		s.answerError(errEncryptionReqd, "the client does not ask for encryption")
		return errAbort
	}
	compress := s.feat&clientCompression != 0 && s.o.compression(s.f.esp8266)
	if s.feat&clientExtended != 0 && !s.o.NoExtended {
		var flags byte
		if compress {
			flags |= serverCompression
		}
		if s.o.PartitionAccess {
			flags |= serverPartitions
		}
		if s.o.Noise != "" {
			flags |= serverNoise
		}
		if err := s.write(respFeatureFlags, flags); err != nil {
			return err
		}
		if s.o.Noise != "" && s.feat&clientNoise != 0 {
			// The Noise handshake would follow; the sim speaks none.
			return fmt.Errorf("noise handshake not simulated: %w", errAbort)
		}
	} else {
		ans := byte(respHeaderOK)
		if compress {
			ans = respCompression
		}
		if err := s.write(ans); err != nil {
			return err
		}
	}
	if s.e.Config().Password.IsZero() {
		return nil
	}
	return s.auth()
}

// auth is the challenge: nonce out, cnonce and response in.
func (s *session) auth() error {
	kind := byte(respAuthMD5)
	switch {
	case s.o.Auth == AuthSHA256 && s.feat&clientSHA256 == 0:
		s.e.RecordAuthFailure("esphome", "", s.remote, 0, "error byte 82", "the client does not offer SHA-256 auth")
		s.answerError(errAuth, "sha256 required")
		return errAbort
	case s.o.Auth != AuthMD5 && s.feat&clientSHA256 != 0:
		kind = respAuthSHA256
	}
	var nonce string
	var h func() hash.Hash
	if kind == respAuthMD5 {
		// MD5 hex of 8 random hex digits (2024).
		var r [4]byte
		_, _ = rand.Read(r[:])
		sum := md5.Sum([]byte(hex.EncodeToString(r[:])))
		nonce, h = hex.EncodeToString(sum[:]), md5.New
	} else {
		// SHA-256 hex of 8 random bytes (2026).
		var r [8]byte
		_, _ = rand.Read(r[:])
		sum := sha256.Sum256(r[:])
		nonce, h = hex.EncodeToString(sum[:]), sha256.New
	}
	if err := s.write(append([]byte{kind}, nonce...)...); err != nil {
		return err
	}
	in := make([]byte, 2*len(nonce))
	if err := s.readFull(in, s.handshakeDeadline()); err != nil {
		if s.o.Mode2024 && !errors.Is(err, errAbort) {
			s.answerError(errUnknown, "auth read: "+err.Error())
		}
		return err
	}
	cnonce, resp := in[:len(nonce)], in[len(nonce):]
	hh := h()
	hh.Write([]byte(s.e.Config().Password.Reveal()))
	hh.Write([]byte(nonce))
	hh.Write(cnonce)
	want := hex.EncodeToString(hh.Sum(nil))
	ok := string(resp) == want
	if kind == respAuthSHA256 {
		ok = strings.EqualFold(string(resp), want)
	}
	if !ok || s.fail(StepAuth) {
		reason := "wrong password"
		if ok {
			reason = "fault"
		}
		s.e.RecordAuthFailure("esphome", "", s.remote, 0, "error byte 82", reason)
		s.answerError(errAuth, reason)
		return errAbort
	}
	return nil
}

// dataRead reads buf whole within the data phase's per-read limit (90 s;
// 2024: 1 s).
func (s *session) dataRead(buf []byte) error {
	return s.readFull(buf, time.Now().Add(s.o.DataTimeout))
}

// data is the blocking data phase: 41, type, size, begin, MD5, image,
// end, reboot.
func (s *session) data() {
	if s.write(respAuthOK) != nil {
		return
	}
	buf := make([]byte, readSize)
	otaType := byte(0)
	if s.feat&clientExtended != 0 && !s.o.NoExtended {
		if err := s.dataRead(buf[:1]); err != nil {
			s.readFailed(err)
			return
		}
		otaType = buf[0]
	}
	if err := s.dataRead(buf[:4]); err != nil {
		s.readFailed(err)
		return
	}
	size := int64(binary.BigEndian.Uint32(buf[:4]))
	if otaType != 0 || s.fail(StepType) {
		s.answerError(errOTAType, fmt.Sprintf("OTA type %02X", otaType))
		return
	}
	s.u = s.e.NewUpload(s.ctx, "esphome", "", s.remote, size)
	switch b, reason := s.begin(size); b {
	case 0:
	case noAnswer:
		return
	default:
		s.answerError(byte(b), reason)
		return
	}
	if s.write(respPrepareOK) != nil {
		s.abort("connection lost")
		return
	}
	if err := s.dataRead(buf[:32]); err != nil {
		s.readFailed(err)
		return
	}
	wantMD5 := string(buf[:32])
	if s.write(respBinMD5OK) != nil {
		s.abort("connection lost")
		return
	}
	b, reason, staged := s.receive(size)
	switch {
	case b == noAnswer:
		return
	case b != 0:
		s.answerError(byte(b), reason)
		return
	}
	if s.write(respReceiveOK) != nil {
		s.abort("connection lost")
		return
	}
	switch b, reason := s.end(wantMD5, staged); b {
	case 0:
	case noAnswer:
		return
	default:
		s.answerError(byte(b), reason)
		return
	}
	if s.write(respEndOK) != nil {
		s.abort("connection lost after the image was accepted")
		return
	}
	// The final 00: a missing or other byte is not fatal.
	_ = s.dataRead(buf[:1])
	if s.stopping() {
		return
	}
	s.c.Close()
	reboot := true
	if f, hit := s.e.Chance(core.FaultNoReboot); hit {
		reboot = false
		s.e.Emit(core.Event{Event: core.EventFault, Fault: f.String(), Protocol: "esphome", Remote: s.remote})
	}
	if !reboot || !core.Sleep(s.ctx, s.e.FirmwareDelay(110*time.Millisecond)) {
		return
	}
	s.e.RequestReboot("update")
	<-s.ctx.Done() // safe_reboot(): nothing else runs
}

// noAnswer is begin's, receive's and end's "the session is over without
// an answer" (the device is stopping, or the client went away).
const noAnswer = -1

// readFailed ends the data phase after a failed read: the error path
// answers FF (unknown) unless the device is stopping.
func (s *session) readFailed(err error) {
	if errors.Is(err, errAbort) {
		s.abort("device stopping")
		return
	}
	s.answerError(errUnknown, "read: "+err.Error())
}

func (s *session) abort(reason string) {
	if s.u != nil && !s.u.Done() {
		s.u.Fail(0, "", reason)
	}
}

// begin is the backend's begin; a non-zero byte is its error.
func (s *session) begin(size int64) (int, string) {
	if s.fail(StepBegin) {
		return int(s.o.Fail), "fault"
	}
	slot := s.e.Config().SlotSize
	if size > slot {
		if s.f.esp8266 {
			return errSpace8266, fmt.Sprintf("%d bytes do not fit the %d-byte sketch area", size, slot)
		}
		return errSpace32, fmt.Sprintf("%d bytes do not fit the %d-byte partition", size, slot)
	}
	if !s.f.esp8266 && s.e.BeginBlocked() {
		// esp_ota_begin: ESP_ERR_OTA_ROLLBACK_INVALID_STATE, mapped to unknown.
		return errUnknown, "the running image is still pending verification"
	}
	switch e := s.u.Begin(s.f.esp8266); e {
	case core.OTANone:
		return 0, ""
	case core.OTACanceled:
		return noAnswer, ""
	default:
		return errUnknown, "another upload is running"
	}
}

// receive takes the image: reads of at most 1 KiB, a 47 per 8 KiB in
// protocol 2. It returns an error byte (noAnswer: no answer) and whether
// the payload is staged as gzip.
func (s *session) receive(size int64) (int, string, bool) {
	sum := md5.New()
	buf := make([]byte, readSize)
	var total, acked int64
	gz, badMagic := false, false
	failAt := int64(-1)
	if s.fail(StepData) {
		failAt = size / 2
	}
	lastData := time.Now()
	acks := s.ackSender()
	defer acks.flush()
	for total < size {
		if failAt >= 0 && total >= failAt {
			return int(s.o.Fail), "fault", false
		}
		n := int64(len(buf))
		if c := s.u.Chunk(); c > 0 && int64(c) < n {
			n = int64(c)
		}
		n = min(n, size-total)
		// The current firmware waits at most DataTimeout for data, in 2 s
		// socket reads; 2024 firmware waits forever.
		var deadline time.Time
		if !s.o.Mode2024 {
			deadline = lastData.Add(s.o.DataTimeout)
		}
		_ = s.c.SetReadDeadline(deadline)
		k, err := s.c.Read(buf[:n])
		if k == 0 && err != nil {
			if s.stopping() {
				s.abort("device stopping")
				return noAnswer, "", false
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errUnknown, fmt.Sprintf("no data for %v", s.o.DataTimeout), false
			}
			// Remote closed or reset: the error path still writes its byte.
			s.abort("connection lost: " + err.Error())
			_ = s.write(errUnknown)
			return noAnswer, "", false
		}
		p := buf[:k]
		lastData = time.Now()
		if total == 0 {
			gz = len(p) >= 2 && p[0] == 0x1F && p[1] == 0x8B && (s.f.esp8266 || s.o.compression(false))
			// The current ESP8266 backend stages anything and checks the
			// magic at the end.
			badMagic = s.f.esp8266 && !s.o.Mode2024 && !gz && p[0] != 0xE9
		}
		sum.Write(p)
		s.payload = append(s.payload, p...)
		if badMagic {
			if e := s.u.Pace(len(p)); e != core.OTANone {
				s.abort("device stopping")
				return noAnswer, "", false
			}
		} else if b, reason := s.write1(p); b != 0 {
			return b, reason, false
		}
		total += int64(k)
		if s.o.Version == 2 {
			for acked+blockSize <= total || total == size && acked < size {
				if acks.send() != nil {
					s.abort("connection lost")
					return noAnswer, "", false
				}
				acked += blockSize
			}
		}
	}
	s.sum = hex.EncodeToString(sum.Sum(nil))
	s.badMagic = badMagic
	return 0, "", gz
}

// ackSender sends the data phase's 47s. A latency fault delays each
// reply as a slow network would: the 47 arrives late, but the device does
// not stop reading meanwhile (a stop-and-wait client pays the latency on
// every block, a streaming one does not). Without latency it writes at
// once.
func (s *session) ackSender() *ackSender {
	a := &ackSender{s: s, lat: s.e.Latency()}
	if a.lat > 0 {
		a.due = make(chan time.Time, 1024)
		a.done = make(chan struct{})
		go a.run()
	}
	return a
}

type ackSender struct {
	s    *session
	lat  time.Duration
	due  chan time.Time
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (a *ackSender) send() error {
	if a.due == nil {
		return a.s.write(respChunkOK)
	}
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case a.due <- time.Now().Add(a.lat):
		return nil
	case <-a.s.ctx.Done():
		return errAbort
	}
}

// run writes each 47 when it is due, in order.
func (a *ackSender) run() {
	defer close(a.done)
	for at := range a.due {
		if !core.Sleep(a.s.ctx, time.Until(at)) {
			return
		}
		_ = a.s.c.SetWriteDeadline(time.Now().Add(max(a.s.o.DataTimeout, 2*time.Second)))
		if _, err := a.s.c.Write([]byte{respChunkOK}); err != nil {
			a.mu.Lock()
			a.err = err
			a.mu.Unlock()
			return
		}
	}
}

// flush waits until every 47 is out, so that what follows (44 or an error
// byte) comes after them.
func (a *ackSender) flush() {
	if a.due == nil {
		return
	}
	close(a.due)
	<-a.done
}

// write1 hands one received chunk to the backend; a non-zero byte is its
// error.
func (s *session) write1(p []byte) (int, string) {
	switch e := s.u.Write(p); e {
	case core.OTANone:
		return 0, ""
	case core.OTAMagic:
		if s.f.esp8266 { // the Arduino Updater refuses the write
			return errWrite, fmt.Sprintf("first byte 0x%02x is not 0xE9", p[0])
		}
		// esp_ota_write: ESP_ERR_OTA_VALIDATE_FAILED.
		return errMagic, fmt.Sprintf("first byte 0x%02x is not 0xE9", p[0])
	case core.OTASpace, core.OTAWrite:
		return errWrite, "flash write failed"
	case core.OTADrop:
		s.abort("")
		if tc, ok := s.c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		s.c.Close()
		return noAnswer, ""
	case core.OTAPowerLoss:
		s.abort("")
		s.e.RequestReboot("power_loss")
		<-s.ctx.Done() // the connection stays open and dead
		return noAnswer, ""
	default: // canceled: the device is stopping
		s.abort("device stopping")
		return noAnswer, ""
	}
}

// end is the backend's end: the MD5, then the image; a non-zero byte is
// its error.
func (s *session) end(wantMD5 string, gz bool) (int, string) {
	if s.fail(StepEnd) {
		return int(s.o.Fail), "fault"
	}
	if !strings.EqualFold(wantMD5, s.sum) {
		b := errMD5
		if s.f.esp8266 && s.o.Mode2024 {
			b = errEnd // the Arduino Updater's end fails as a whole
		}
		return b, fmt.Sprintf("MD5 %s, the client announced %s", s.sum, wantMD5)
	}
	if s.badMagic {
		return errEnd, "the image starts neither with 0xE9 nor with gzip"
	}
	version := ImageVersion(s.payload)
	if gz {
		// Staged as is; eboot inflates it at boot. An image that does not
		// inflate is accepted here and never runs (what eboot does then is
		// unconfirmed: the sim boots the old image).
		inner, err := s.inflated()
		if err != nil || len(inner) == 0 || inner[0] != 0xE9 {
			s.u.EndAnswered("discarded", 0, "45", "the gzip payload does not inflate to an ESP image")
			return 0, ""
		}
		version = ImageVersion(inner)
	}
	switch e := s.u.End(); e {
	case core.OTANone:
	case core.OTACanceled:
		s.abort("device stopping")
		return noAnswer, ""
	default:
		return errEnd, "the image does not verify"
	}
	s.u.Succeed(0, "45")
	// The identity of the new boot image, by the SHA-256 the core reports.
	after := s.e.State()
	for _, sl := range after.Slots {
		if sl.Label != after.Boot || sl.SHA256 == "" {
			continue
		}
		if version == "" && sl.Version != "unknown" {
			version = sl.Version
		}
		s.st.record(sl.SHA256, identityOf(s.o, s.o.ProjectName, version))
	}
	return 0, ""
}

// inflated is the gzip payload inflated, as eboot would.
func (s *session) inflated() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(s.payload))
	if err != nil {
		return nil, err
	}
	// An inflated image larger than the flash is not an image.
	return io.ReadAll(io.LimitReader(zr, 16<<20))
}
