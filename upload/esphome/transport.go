// Package esphome is the client of ESPHome's native OTA: one TCP
// connection to the device's OTA port carrying a magic, a version and
// feature handshake, optional challenge auth (MD5 or SHA-256), the image
// (gzip-compressed where the device offers it) and single-byte answers.
// Transport implements upload.Transport, reports the family's
// upload.Traits and screens images against the platform the device's mDNS
// record names (upload.Screener). The wire facts, with their sources, are
// in docs/protocols/esphome.md.
package esphome

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/detect"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/upload"
)

// The OTA ports ESPHome's OTA component listens on unless the YAML sets
// another (the device does not advertise it).
const (
	PortESP32   = 3232
	PortESP8266 = 8266
)

// Timeouts. The device gives a session 20 s to finish its handshake and
// aborts the data phase after 90 s without data; the client waits longer
// than that for the device's answers during the data phase, so that the
// device's own error byte, not the client's impatience, ends a slow
// update.
const (
	DefaultHandshakeTimeout = 20 * time.Second
	DefaultDataTimeout      = 160 * time.Second
)

// The protocol's bytes (docs/protocols/esphome.md).
const (
	respOK           = 0x00
	respAuthMD5      = 0x01
	respAuthSHA256   = 0x02
	respHeaderOK     = 0x40
	respAuthOK       = 0x41
	respPrepareOK    = 0x42
	respMD5OK        = 0x43
	respReceiveOK    = 0x44
	respEndOK        = 0x45
	respCompression  = 0x46
	respChunkOK      = 0x47
	respFeatureFlags = 0x48

	// The client's feature byte: compression, SHA-256 auth and the
	// extended protocol; never Noise (0x08), which ots-ota does not speak.
	clientFeatures = 0x01 | 0x02 | 0x04

	serverCompression = 0x01
	serverNoise       = 0x04

	otaTypeApp = 0x00

	// ackBlock is how many bytes a version 2 device receives per 0x47.
	ackBlock = 8192
)

var magic = []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}

// NoiseRefusal is why a device that wants Noise-encrypted OTA gets nothing
// (an upload.RefusedError: nothing of the image was sent).
const NoiseRefusal = "the device uses Noise-encrypted OTA (ota: encryption:), not supported yet; nothing of the image was sent"

// noiseRefused is NoiseRefusal with what the device answered.
func noiseRefused(answer string) error {
	return &upload.RefusedError{Reason: strings.Replace(NoiseRefusal, "encryption:)", "encryption:; it answered "+answer+")", 1)}
}

// NoRetryHint is what a failure after the device held the whole image
// tells the user (upload.DeviceError.NoRetry).
const NoRetryHint = "the device had the whole image and may have installed it: check what it runs before pushing again"

// RefusedWholeHint is what a failure the device answered after it held
// the whole image tells the user: it installed nothing, and ots-ota does
// not send a whole image twice unread.
const RefusedWholeHint = "the device had the whole image when it refused it; push again once the cause is fixed"

// errByte is what one of the device's error bytes means.
type errByte struct {
	class   upload.Class
	meaning string
}

// errorBytes are the device's error answers (docs/protocols/esphome.md):
// each one ends the session, the device closes after sending it.
var errorBytes = map[byte]errByte{
	0x80: {upload.ClassRejected, "the device did not take the session's opening bytes (bad magic)"},
	0x81: {upload.ClassRejected, "the device could not prepare its flash for the update: the image may be too big; restarting the device may help"},
	0x82: {upload.ClassAuth, "the device refused the OTA password: check --password"},
	0x83: {upload.ClassWriteFailed, "writing the image to flash failed"},
	0x84: {upload.ClassRejected, "the device could not finish the update (its logs say why)"},
	0x85: {upload.ClassRejected, "an ESP8266 needs one manual reset after a serial flash before its first OTA update: press its reset button, then push again"},
	0x86: {upload.ClassRejected, "the device was flashed with the wrong flash size (board option): reflash it over serial"},
	0x87: {upload.ClassRejected, "the image asks for a flash size the device does not have (wrong board option)"},
	0x88: {upload.ClassRejected, "the ESP8266 has not enough free space for the image (a minimal firmware first may make room)"},
	0x89: {upload.ClassRejected, "the ESP32's OTA partition is too small for the image"},
	0x8A: {upload.ClassRejected, "the device has no OTA update partition"},
	0x8B: {upload.ClassWriteFailed, "the image the device received does not match its MD5 (a bad link?)"},
	0x8C: {upload.ClassRejected, "the RP2040 has not enough space for the image"},
	0x8D: {upload.ClassRejected, "the image's signature is not valid for the device's key"},
	0x8E: {upload.ClassRejected, "the device does not support the requested OTA type"},
	0x8F: {upload.ClassRejected, "the device could not verify a partition-table update; nothing was changed"},
	0x90: {upload.ClassRejected, "a partition-table update failed and the device is degraded: it may not boot (recover it over serial)"},
	0x91: {upload.ClassRejected, "the device could not verify a bootloader update; nothing was changed"},
	0x92: {upload.ClassRejected, "a bootloader update failed and the device is degraded: it may not boot (recover it over serial)"},
	0x93: {upload.ClassRejected, "the device refuses a version downgrade (OTA downgrade protection)"},
	0x94: {upload.ClassRejected, "the device requires Noise-encrypted OTA, which ots-ota does not support yet"},
	// Also the device's answer when it gave up waiting (a handshake read, or
	// 90 s without data): worth another try.
	0xFF: {upload.ClassNetwork, "the device reported an unknown error (also its answer when it gave up waiting for data)"},
}

// Transport uploads over ESPHome's native OTA: protocol versions 1 and 2,
// the plain (0x40/0x46) and extended (0x48 + flags) answers, no password,
// MD5 or SHA-256 challenge auth, OTA type app only, and a gzip payload
// (level 9) where the device offers compression. The gzip and its MD5 are
// computed once per image, before the first connect: firmware of 2024
// gives up after 1 s on each handshake read.
//
// The zero value is ready to use.
type Transport struct {
	// ConnectTimeout bounds each TCP connect; 0 means upload.DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds each answer of the handshake; 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DataTimeout ends the data phase when the device acknowledges nothing
	// for this long, and bounds its answers from the size on; 0 means
	// DefaultDataTimeout.
	DataTimeout time.Duration
	// ProgressInterval is how often progress is reported; 0 means 100 ms.
	ProgressInterval time.Duration
	// Logger receives debug logs (never a secret); nil discards them.
	Logger *slog.Logger

	mu     sync.Mutex
	packed map[*upload.Firmware]*payload
	// gzips counts the gzip computations (tests).
	gzips atomic.Int32
}

var (
	_ upload.WithTraits = (*Transport)(nil)
	_ upload.Screener   = (*Transport)(nil)
)

// Protocol implements upload.Transport.
func (*Transport) Protocol() upload.Protocol { return upload.ESPHome }

// Traits implements upload.WithTraits: the devices check an image's chip
// themselves (ESP-IDF's image check, the ESP8266 Updater's header check),
// and Screen refuses another chip family where TXT names the platform.
// They tell what they run only in their mDNS TXT record; what they tell
// (project_version, config_hash) is set by their YAML, never read from the
// image, so only what the user expects identifies an update. No
// filesystem image: the native OTA writes the app only.
func (*Transport) Traits() upload.Traits {
	return upload.Traits{
		NoFilesystem:    "ESPHome's native OTA takes app images only; nothing was sent",
		MDNSOnly:        true,
		NoImageIdentity: true,
		NoIdentityHint:  "give --expect-version (the YAML's project version, TXT project_version) or --expect-config-hash (what esphome config-hash prints) to verify",
	}
}

// Screen implements upload.Screener: an image for another chip family
// than the platform the device's mDNS record names never goes to it.
func (*Transport) Screen(t upload.Target, fw *upload.Firmware) string {
	p := strings.ToUpper(t.Platform)
	if p == "" {
		return ""
	}
	if p != "ESP8266" && p != "ESP32" {
		// Its OTA port is neither default either: nothing is sent.
		return fmt.Sprintf("the device's mDNS record says platform %s: ots-ota updates ESP32 and ESP8266 devices only", t.Platform)
	}
	if fw.Image == nil {
		return ""
	}
	c, ok := fw.Image.ForChip()
	if ok && (p == "ESP8266") != c.IsESP8266() {
		return fmt.Sprintf("image is built for %s, the device's mDNS record says platform %s; an image for another chip family is never sent", c, t.Platform)
	}
	return ""
}

// Ports are the OTA ports tried for t, in order: its own, else the
// default of its chip, else both defaults (a refused connect sends
// nothing, so trying the other default is safe).
func Ports(t upload.Target) []int {
	if t.Port != 0 {
		return []int{t.Port}
	}
	if c, ok := image.ChipByName(t.Chip); ok {
		if c.IsESP8266() {
			return []int{PortESP8266}
		}
		return []int{PortESP32}
	}
	switch strings.ToUpper(t.Platform) {
	case "ESP8266":
		return []int{PortESP8266}
	case "ESP32":
		return []int{PortESP32}
	}
	return []int{PortESP32, PortESP8266}
}

// payload is the bytes sent for one image: the image itself or its gzip.
type payload struct {
	once sync.Once
	gz   []byte
	md5  string // of gz
}

// compressed is fw's gzip (level 9) and its MD5, computed once per image
// and shared by every device.
func (h *Transport) compressed(fw *upload.Firmware) *payload {
	h.mu.Lock()
	if h.packed == nil {
		h.packed = map[*upload.Firmware]*payload{}
	}
	p := h.packed[fw]
	if p == nil {
		p = &payload{}
		h.packed[fw] = p
	}
	h.mu.Unlock()
	p.once.Do(func() {
		h.gzips.Add(1)
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = w.Write(fw.Data)
		_ = w.Close()
		p.gz = b.Bytes()
		p.md5 = auth.MD5Hex(p.gz)
	})
	return p
}

func (h *Transport) log() *slog.Logger {
	return upload.OrDiscard(h.Logger)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// session is one connection's state.
type session struct {
	h      *Transport
	conn   net.Conn
	ac     *upload.AckCounter
	r      *bufio.Reader
	addr   string
	emit   upload.Emit
	size   int64 // the image's bytes (progress is reported in these)
	wire   int64 // the bytes sent (the gzip where compressed)
	sent   bool  // the device held every byte of the payload
	inData bool  // the image is being sent (error bytes are worded by step)
	ctx    context.Context
	closed atomic.Bool
}

// Send implements upload.Transport: nil once the device answered 0x45
// (update end OK) and the final 0x00 was sent; else a *upload.DeviceError
// whose Taken is the image bytes the device had acknowledged (scaled from
// the payload's where it was compressed), with NoRetry set once the device
// held the whole payload. Target.Port 0 means the default port of the
// target's chip or platform, else 3232 then 8266.
func (h *Transport) Send(ctx context.Context, t upload.Target, fw *upload.Firmware, cred upload.Credentials, emit upload.Emit) error {
	if emit == nil {
		emit = func(upload.Event) {}
	}
	if fw.Filesystem {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: h.Traits().NoFilesystem}
	}
	// Before any connect: the 2024 firmware waits 1 s per handshake read.
	pk := h.compressed(fw)

	emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Message: "connecting to ESPHome's OTA port"})
	conn, addr, err := h.dial(ctx, t)
	if err != nil {
		return err
	}
	if t.Port == 0 {
		// A default port, maybe the second one tried: the result names it.
		emit(upload.Event{Phase: upload.PhaseConnecting, Total: fw.Size(), Addr: addr})
	}
	s := &session{h: h, conn: conn, ac: upload.NewAckCounter(conn), addr: addr, emit: emit, size: fw.Size(), ctx: ctx}
	s.r = bufio.NewReaderSize(conn, 64)
	stop := context.AfterFunc(ctx, func() { s.closed.Store(true); conn.Close() })
	defer stop()
	defer conn.Close()
	return s.run(fw, pk, cred)
}

// dial connects to the first of t's ports that accepts. A refusal at every
// port names them all.
func (h *Transport) dial(ctx context.Context, t upload.Target) (net.Conn, string, error) {
	timeout := orDefault(h.ConnectTimeout, upload.DefaultConnectTimeout)
	ports := Ports(t)
	var tried []string
	for _, p := range ports {
		addr := net.JoinHostPort(strings.Trim(t.Host, "[]"), strconv.Itoa(p))
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, addr, nil
		}
		tried = append(tried, strconv.Itoa(p))
		class, reason := upload.ClassifyDial(addr, timeout, err)
		if ctx.Err() != nil {
			return nil, addr, &upload.DeviceError{Class: upload.ClassNetwork, Reason: "interrupted while connecting to " + addr, Err: ctx.Err()}
		}
		if !upload.IsRefused(err) {
			return nil, addr, &upload.DeviceError{Class: class, Reason: reason, Err: err}
		}
		if len(tried) == len(ports) {
			what := "port " + tried[0]
			if len(tried) > 1 {
				what = "ports " + strings.Join(tried, " and ")
			}
			return nil, addr, &upload.DeviceError{Class: upload.ClassNetwork, Err: err, Reason: fmt.Sprintf(
				"connection refused by %s at %s: no ESPHome OTA listens there (ESP32 uses 3232, ESP8266 8266 unless the YAML's ota: port says otherwise; give HOST:PORT or the inventory's port:)",
				strings.Trim(t.Host, "[]"), what)}
		}
		h.log().Debug("ESPHome OTA port refused; trying the other default", "addr", addr)
	}
	return nil, "", &upload.DeviceError{Class: upload.ClassNetwork, Reason: "no port to connect to"}
}

func (s *session) fail(de *upload.DeviceError) error {
	if s.sent {
		de.Taken = s.size
		switch {
		case de.NoRetry != "":
		case errors.Is(de.Err, upload.ErrRefusedWhole):
			de.NoRetry = RefusedWholeHint
		default:
			de.NoRetry = NoRetryHint
		}
	}
	return de
}

// readByte reads one answer byte within d.
func (s *session) readByte(d time.Duration, what string) (byte, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, s.fail(s.netError(err, what, d))
	}
	return b, nil
}

// readN reads n answer bytes within d.
func (s *session) readN(n int, d time.Duration, what string) ([]byte, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, s.fail(s.netError(err, what, d))
	}
	return b, nil
}

func (s *session) write(b []byte, what string) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(orDefault(s.h.HandshakeTimeout, DefaultHandshakeTimeout)))
	if _, err := s.ac.Write(b); err != nil {
		return s.fail(s.netError(err, "sending "+what, 0))
	}
	return nil
}

// netError words a failed read or write: interrupted, timed out, closed.
func (s *session) netError(err error, what string, d time.Duration) *upload.DeviceError {
	var ne net.Error
	switch {
	case s.closed.Load() || s.ctx.Err() != nil:
		return &upload.DeviceError{Class: upload.ClassNetwork, Reason: "interrupted while " + what, Err: context.Cause(s.ctx)}
	case errors.As(err, &ne) && ne.Timeout():
		return &upload.DeviceError{Class: upload.ClassTimeout, Err: err,
			Reason: fmt.Sprintf("%s gave no answer within %s while %s", s.addr, d.Round(time.Second), what)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), detect.IsReset(err):
		return &upload.DeviceError{Class: upload.ClassNetwork, Err: err,
			Reason: fmt.Sprintf("%s closed the connection without an answer while %s", s.addr, what)}
	}
	return &upload.DeviceError{Class: upload.ClassNetwork, Err: err,
		Reason: fmt.Sprintf("connection to %s failed while %s: %s", s.addr, what, upload.CleanText(lastText(err), 80))}
}

func lastText(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// deviceError is the device's error byte b, or an answer the protocol does
// not have at that point (want names what was expected).
func (s *session) deviceError(b byte, want string) error {
	words := fmt.Sprintf("0x%02X", b)
	if e, ok := errorBytes[b]; ok {
		de := &upload.DeviceError{Class: e.class, Words: words, Reason: e.meaning}
		if b == 0x80 && s.inData {
			// Not the session's magic: ESP-IDF's check of the image's own
			// magic byte as the first bytes are written.
			de.Reason = "the device refused the image as it arrived: its first bytes are not an app image's (ESP-IDF checks the magic byte 0xE9)"
		}
		if b == 0x94 && !s.sent {
			// Noise required: refused before any image byte.
			return noiseRefused("0x94, encryption required")
		}
		if b != 0xFF && s.sent {
			// The device sends a named error byte only as it aborts the
			// update (§8 of the research: 84 end, 8B MD5, 8D signature,
			// 93 downgrade after 0x44): no answer was lost, so nothing is
			// read before concluding, and it is still never sent again
			// (fail). 0xFF (unknown) stays a failure that may have
			// installed: verified first.
			de.Err = upload.ErrRefusedWhole
		}
		return s.fail(de)
	}
	return s.fail(&upload.DeviceError{Class: upload.ClassRejected, Words: words,
		Reason: fmt.Sprintf("the device answered a byte ESPHome's OTA does not have there (expected %s): is it an ESPHome OTA port?", want)})
}

// expect reads one answer that must be want.
func (s *session) expect(want byte, d time.Duration, what string) error {
	b, err := s.readByte(d, what)
	if err != nil {
		return err
	}
	if b != want {
		return s.deviceError(b, fmt.Sprintf("0x%02X", want))
	}
	return nil
}

func (s *session) run(fw *upload.Firmware, pk *payload, cred upload.Credentials) error {
	hs := orDefault(s.h.HandshakeTimeout, DefaultHandshakeTimeout)
	data := orDefault(s.h.DataTimeout, DefaultDataTimeout)

	if err := s.write(magic, "the magic bytes"); err != nil {
		return err
	}
	b, err := s.readByte(hs, "waiting for the version")
	if err != nil {
		return err
	}
	if b != respOK {
		return s.deviceError(b, "0x00 and its version")
	}
	ver, err := s.readByte(hs, "waiting for the version")
	if err != nil {
		return err
	}
	if ver != 1 && ver != 2 {
		return &upload.DeviceError{Class: upload.ClassRejected, Words: fmt.Sprintf("0x00 0x%02X", ver),
			Reason: fmt.Sprintf("the device speaks ESPHome OTA version %d; ots-ota speaks versions 1 and 2", ver)}
	}
	if err := s.write([]byte{clientFeatures}, "the feature byte"); err != nil {
		return err
	}
	b, err = s.readByte(hs, "negotiating features")
	if err != nil {
		return err
	}
	extended, compress := false, false
	switch b {
	case respHeaderOK:
	case respCompression:
		compress = true
	case respFeatureFlags:
		flags, err := s.readByte(hs, "reading the feature flags")
		if err != nil {
			return err
		}
		if flags&serverNoise != 0 {
			// Refused, as a family ots-ota does not speak: nothing sent.
			return noiseRefused(fmt.Sprintf("0x48 0x%02X", flags))
		}
		extended, compress = true, flags&serverCompression != 0
	default:
		return s.deviceError(b, "0x40, 0x46 or 0x48")
	}
	body, sum := fw.Data, fw.MD5
	if compress {
		body, sum = pk.gz, pk.md5
	}
	if len(sum) != 32 {
		sum = auth.MD5Hex(body)
	}
	s.wire = int64(len(body))
	if int64(len(body)) > 0xFFFFFFFF {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: "the image is larger than ESPHome's OTA can carry (4 GiB)"}
	}
	if compress {
		saved := 100 - float64(len(body))*100/float64(max(len(fw.Data), 1))
		s.emit(upload.Event{Phase: upload.PhaseConnecting, Total: s.size, Message: fmt.Sprintf(
			"the device takes a gzip payload: %s instead of %s (%.0f%% less)", upload.SizeLabel(int64(len(body))), upload.SizeLabel(s.size), saved)})
	}

	b, err = s.readByte(hs, "waiting for the auth answer")
	if err != nil {
		return err
	}
	switch b {
	case respAuthOK:
	case respAuthMD5, respAuthSHA256:
		if err := s.authenticate(b == respAuthSHA256, cred, hs); err != nil {
			return err
		}
	default:
		return s.deviceError(b, "0x41, 0x01 or 0x02")
	}

	if extended {
		// Always the app: a partition-table or bootloader update that fails
		// leaves a device degraded.
		if err := s.write([]byte{otaTypeApp}, "the OTA type"); err != nil {
			return err
		}
	}
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(body)))
	if err := s.write(size[:], "the size"); err != nil {
		return err
	}
	s.emit(upload.Event{Phase: upload.PhaseErasing, Total: s.size, Message: "the device prepares its flash"})
	if err := s.expect(respPrepareOK, data, "the device prepared its flash"); err != nil {
		return err
	}
	if err := s.write([]byte(sum), "the MD5"); err != nil {
		return err
	}
	if err := s.expect(respMD5OK, hs, "waiting for the MD5 answer"); err != nil {
		return err
	}
	if err := s.transfer(body, ver, data); err != nil {
		return err
	}
	s.emit(upload.Event{Phase: upload.PhaseFinishing, Done: s.size, Total: s.size, Message: "the device checks and finishes the update"})
	if err := s.expect(respEndOK, data, "waiting for the update end"); err != nil {
		return err
	}
	// The final acknowledgement; the device restarts whether or not it
	// arrives.
	_ = s.write([]byte{respOK}, "the final acknowledgement")
	// The device closes at once and restarts: seen here, the restart
	// begins. Not waited for long; verification watches the rest.
	_ = s.conn.SetReadDeadline(time.Now().Add(min(hs, 3*time.Second)))
	if _, err := s.r.ReadByte(); err != nil && !s.closed.Load() {
		s.emit(upload.Event{Phase: upload.PhaseFinishing, Done: s.size, Total: s.size, Message: "the device closed the connection after update end OK: it restarts"})
	}
	return nil
}

// authenticate answers the device's challenge: its nonce, then the
// client's cnonce and the digest, then 0x41 or 0x82.
func (s *session) authenticate(sha bool, cred upload.Credentials, d time.Duration) error {
	n := 32
	if sha {
		n = 64
	}
	if cred.Password.IsZero() {
		return &upload.DeviceError{Class: upload.ClassAuth, Reason: "the device asks for its OTA password: pass --password (or the inventory's auth:)"}
	}
	s.emit(upload.Event{Phase: upload.PhaseAuth, Total: s.size, Message: "answering the device's challenge"})
	nonce, err := s.readN(n, d, "reading the auth nonce")
	if err != nil {
		return err
	}
	if i := bytes.IndexFunc(nonce, func(r rune) bool { return r < 0x21 || r > 0x7E }); i >= 0 {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: "the device's auth nonce is not text"}
	}
	rnd := make([]byte, n/2)
	if _, err := rand.Read(rnd); err != nil {
		return err
	}
	cnonce := hex.EncodeToString(rnd)
	resp := auth.ESPHomeResponse(cred.Password, string(nonce), cnonce, sha)
	if err := s.write([]byte(cnonce+resp), "the auth answer"); err != nil {
		return err
	}
	return s.expect(respAuthOK, d, "waiting for the auth result")
}

// transfer streams the payload while reading the device's answers: a
// version 2 device sends 0x47 per 8192 bytes received (progress, and
// liveness), then 0x44; a version 1 device only 0x44, and its progress is
// what TCP acknowledged. The device gets DataTimeout without progress
// before the client gives up.
func (s *session) transfer(body []byte, ver byte, data time.Duration) error {
	n := int64(len(body))
	wantAcks := (n + ackBlock - 1) / ackBlock
	var werr atomic.Pointer[error]
	wdone := make(chan struct{})
	_ = s.conn.SetWriteDeadline(time.Time{})
	if tc, ok := s.conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(false)
	}
	go func() {
		defer close(wdone)
		for off := int64(0); off < n; off += ackBlock {
			if _, err := s.ac.Write(body[off:min(off+ackBlock, n)]); err != nil {
				werr.Store(&err)
				return
			}
		}
	}()
	received := false
	defer func() {
		if received {
			return // the writer ended
		}
		// A writer blocked on a device that stopped reading ends with the
		// connection.
		select {
		case <-wdone:
		default:
			s.conn.Close()
			<-wdone
		}
	}()
	tick := orDefault(s.h.ProgressInterval, 100*time.Millisecond)
	var acks int64
	acked := func() int64 {
		if ver >= 2 {
			return min(acks*ackBlock, n)
		}
		return min(s.ac.Taken(), n)
	}
	image := func(w int64) int64 {
		if w >= n {
			return s.size
		}
		return w * s.size / max(n, 1)
	}
	last, lastAt, reported := int64(-1), time.Now(), int64(-1)
	s.emit(upload.Event{Phase: upload.PhaseUploading, Total: s.size})
	s.inData = true
	defer func() { s.inData = false }()
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(tick))
		b, err := s.r.ReadByte()
		now := time.Now()
		if a := acked(); a != last || ver < 2 && s.ac.Taken() != last {
			last, lastAt = a, now
		}
		if done := image(acked()); done != reported {
			reported = done
			s.emit(upload.Event{Phase: upload.PhaseUploading, Done: done, Total: s.size})
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !s.closed.Load() {
				if now.Sub(lastAt) < data {
					continue
				}
				return s.fail(&upload.DeviceError{Class: upload.ClassTimeout, Taken: image(acked()), Err: err,
					Reason: fmt.Sprintf("%s took no data for %s during the upload", s.addr, data.Round(time.Second))})
			}
			de := s.netError(err, "uploading", data)
			de.Taken = image(acked())
			if we := werr.Load(); we != nil && de.Err == err {
				de.Err = *we
			}
			written := s.ac.Written()
			if ver < 2 && upload.MayHoldAll(written, s.ac.Taken(), n) || ver >= 2 && acks >= wantAcks {
				// Every byte may have reached the device: only reading it
				// tells whether it installs the image.
				s.sent = true
				de.Err = errors.Join(upload.ErrAnswerLost, de.Err)
			}
			return s.fail(de)
		}
		switch {
		case b == respChunkOK && ver >= 2:
			acks++
			lastAt = now
			if acks >= wantAcks {
				s.sent = true
			}
		case b == respReceiveOK:
			// The writer's last call returns once the device read every
			// byte; a device that said 0x44 early and stopped reading
			// would hold it forever: it gets DataTimeout.
			_ = s.conn.SetWriteDeadline(time.Now().Add(data))
			<-wdone
			received = true
			if we := werr.Load(); we != nil {
				taken := min(s.ac.Taken(), n)
				return &upload.DeviceError{Class: upload.ClassEarlyAnswer, Words: "0x44", Taken: image(taken), Err: errors.Join(upload.ErrEarlyAnswer, *we),
					Reason: fmt.Sprintf("%s answered 0x44 (received) before it had taken the whole image, then took no data for %s", s.addr, data.Round(time.Second))}
			}
			s.sent = true
			s.emit(upload.Event{Phase: upload.PhaseUploading, Done: s.size, Total: s.size})
			return nil
		default:
			de := s.deviceError(b, "0x47 or 0x44")
			var d *upload.DeviceError
			if errors.As(de, &d) && !s.sent {
				d.Taken = image(acked())
			}
			return de
		}
	}
}
