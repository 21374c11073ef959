package esphome

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// script is a scripted ESPHome device, written in the test from the
// protocol's facts (docs/protocols/esphome.md), not from the client.
type script struct {
	version     byte // 1 or 2
	extended    bool // answers 0x48 + flags when the client asks for it
	compression bool // the backend takes a gzip payload
	noise       bool // server flag 0x04
	password    string
	sha         bool // nonce kind 0x02 (SHA-256), else 0x01 (MD5)
	old         bool // 2024 firmware: 1 s per handshake read, knows only the compression flag
	// errAt is where the device sends errByte and closes: "magic",
	// "features", "auth", "size", "data", "end"; "" = nowhere.
	errAt   string
	errByte byte
	// errAfter is the payload bytes read before the data-phase error.
	errAfter int
	// closeAt closes without a byte: "data" (after errAfter bytes), "end"
	// (after every byte, before 0x44/0x45).
	closeAt string
	// stall stops reading after errAfter payload bytes.
	stall bool
	// firstByte replaces the 0x00 before the version; verByte the version.
	firstByte, verByte *byte
	// featAnswer replaces the feature answer.
	featAnswer *byte
}

// seen is what the scripted device received.
type seen struct {
	features byte
	otaType  *byte
	size     uint32
	md5      string
	payload  []byte
	finalAck bool
	// afterFeatures counts bytes the client sent after the feature answer
	// when the device refused there.
	afterFeatures int
	err           error
}

type device struct {
	ln   net.Listener
	port int
	seen chan seen
}

func startDevice(t *testing.T, sc script) *device {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &device{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, seen: make(chan seen, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.seen <- sc.serve(c)
		}
	}()
	return d
}

func (d *device) target() upload.Target {
	return upload.Target{Name: "dev", Host: "127.0.0.1", Port: d.port}
}

func (d *device) wait(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-d.seen:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("the scripted device saw no session")
	}
	return seen{}
}

func (sc script) serve(c net.Conn) (s seen) {
	defer c.Close()
	hs := 20 * time.Second
	if sc.old {
		hs = time.Second
	}
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_ = c.SetReadDeadline(time.Now().Add(hs))
		_, err := io.ReadFull(c, b)
		return b, err
	}
	fail := func(at string) bool {
		if sc.errAt == at {
			c.Write([]byte{sc.errByte})
			return true
		}
		return false
	}
	m, err := read(5)
	if err != nil {
		s.err = err
		return
	}
	if !bytes.Equal(m, magic) {
		c.Write([]byte{0x80})
		s.err = errors.New("bad magic")
		return
	}
	if fail("magic") {
		return
	}
	first, ver := byte(0), sc.version
	if sc.firstByte != nil {
		first = *sc.firstByte
	}
	if sc.verByte != nil {
		ver = *sc.verByte
	}
	c.Write([]byte{first, ver})
	f, err := read(1)
	if err != nil {
		s.err = err
		return
	}
	s.features = f[0]
	if fail("features") {
		return
	}
	extended := !sc.old && sc.extended && s.features&0x04 != 0
	compress := s.features&0x01 != 0 && sc.compression
	switch {
	case sc.featAnswer != nil:
		c.Write([]byte{*sc.featAnswer})
		return
	case extended:
		flags := byte(0)
		if sc.compression {
			flags |= 0x01
		}
		if sc.noise {
			flags |= 0x04
		}
		c.Write([]byte{0x48, flags})
		compress = flags&0x01 != 0
	case compress:
		c.Write([]byte{0x46})
	default:
		c.Write([]byte{0x40})
	}
	if sc.noise {
		// Count what the client sends before it closes.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		s.afterFeatures = int(n)
		return
	}
	if sc.password != "" {
		kind, n := byte(0x01), 32
		if sc.sha && !sc.old {
			if s.features&0x02 == 0 {
				c.Write([]byte{0x82})
				return
			}
			kind, n = 0x02, 64
		}
		raw := make([]byte, n/2)
		for i := range raw {
			raw[i] = byte(i*7 + 3)
		}
		nonce := hex.EncodeToString(raw)
		c.Write(append([]byte{kind}, nonce...))
		cn, err := read(n)
		if err != nil {
			s.err = err
			return
		}
		resp, err := read(n)
		if err != nil {
			s.err = err
			return
		}
		var want string
		if kind == 0x02 {
			sum := sha256.Sum256([]byte(sc.password + nonce + string(cn)))
			want = hex.EncodeToString(sum[:])
		} else {
			sum := md5.Sum([]byte(sc.password + nonce + string(cn)))
			want = hex.EncodeToString(sum[:])
		}
		if string(resp) != want {
			c.Write([]byte{0x82})
			return
		}
	}
	if fail("auth") {
		return
	}
	c.Write([]byte{0x41})
	if extended {
		tb, err := read(1)
		if err != nil {
			s.err = err
			return
		}
		s.otaType = &tb[0]
		if tb[0] != 0 {
			c.Write([]byte{0x8E})
			return
		}
	}
	sz, err := read(4)
	if err != nil {
		s.err = err
		return
	}
	s.size = uint32(sz[0])<<24 | uint32(sz[1])<<16 | uint32(sz[2])<<8 | uint32(sz[3])
	if fail("size") {
		return
	}
	c.Write([]byte{0x42})
	sum, err := read(32)
	if err != nil {
		s.err = err
		return
	}
	s.md5 = string(sum)
	c.Write([]byte{0x43})
	buf := make([]byte, 1024)
	acked := 0
	for len(s.payload) < int(s.size) {
		if sc.errAfter > 0 && len(s.payload) >= sc.errAfter {
			switch {
			case sc.errAt == "data":
				c.Write([]byte{sc.errByte})
				return
			case sc.closeAt == "data":
				return
			case sc.stall:
				time.Sleep(3 * time.Second)
				return
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(buf[:min(len(buf), int(s.size)-len(s.payload))])
		if err != nil {
			s.err = err
			return
		}
		s.payload = append(s.payload, buf[:n]...)
		if sc.version >= 2 {
			for acked+8192 <= len(s.payload) || len(s.payload) == int(s.size) && acked < int(s.size) {
				c.Write([]byte{0x47})
				acked += 8192
			}
		}
	}
	if sc.closeAt == "end" {
		return
	}
	c.Write([]byte{0x44})
	if fail("end") {
		return
	}
	got := md5.Sum(s.payload)
	if hex.EncodeToString(got[:]) != s.md5 {
		c.Write([]byte{0x8B})
		return
	}
	c.Write([]byte{0x45})
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if b, err := read(1); err == nil && b[0] == 0 {
		s.finalAck = true
	}
	return
}

// testImage is an image that gzip shrinks, as firmware does.
func testImage(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i / 97 % 13)
	}
	b[0] = 0xE9
	return b
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("payload is no gzip: %v", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func bp(b byte) *byte { return &b }

func TestSend(t *testing.T) {
	img := testImage(40000)
	type want struct {
		ok         bool
		compressed bool
		extended   bool
		class      upload.Class
		words      string
		reason     string // a part of the reason
		noRetry    bool
		sentNone   bool // nothing of the image reached the device
		answerLost bool
		// notInstalled: the device held the image and aborted the update
		// with its own error byte (upload.ErrRefusedWhole): never resent.
		notInstalled bool
		// refused: an upload.RefusedError (Noise), before any image byte.
		refused bool
	}
	cases := []struct {
		name     string
		sc       script
		password string
		want     want
	}{
		{name: "v1 plain", sc: script{version: 1}, want: want{ok: true}},
		{name: "v2 plain", sc: script{version: 2}, want: want{ok: true}},
		{name: "v2 compression 0x46", sc: script{version: 2, compression: true}, want: want{ok: true, compressed: true}},
		{name: "v1 compression 0x46", sc: script{version: 1, compression: true}, want: want{ok: true, compressed: true}},
		{name: "extended no flags", sc: script{version: 2, extended: true}, want: want{ok: true, extended: true}},
		{name: "extended compression flag", sc: script{version: 2, extended: true, compression: true}, want: want{ok: true, extended: true, compressed: true}},
		{name: "extended noise flag refused", sc: script{version: 2, extended: true, noise: true},
			want: want{refused: true, reason: "not supported yet", sentNone: true}},
		{name: "2024 mode, md5 auth right", sc: script{version: 2, old: true, password: "pw", compression: true}, password: "pw", want: want{ok: true, compressed: true}},
		{name: "2024 mode, no auth", sc: script{version: 1, old: true}, want: want{ok: true}},
		{name: "md5 auth right", sc: script{version: 2, password: "pw"}, password: "pw", want: want{ok: true}},
		{name: "sha256 auth right", sc: script{version: 2, extended: true, sha: true, password: "s3cret"}, password: "s3cret", want: want{ok: true, extended: true}},
		{name: "sha256 auth wrong", sc: script{version: 2, extended: true, sha: true, password: "s3cret"}, password: "nope",
			want: want{class: upload.ClassAuth, words: "0x82", reason: "refused the OTA password", sentNone: true}},
		{name: "md5 auth wrong", sc: script{version: 2, old: true, password: "pw"}, password: "nope",
			want: want{class: upload.ClassAuth, words: "0x82", sentNone: true}},
		{name: "auth missing", sc: script{version: 2, extended: true, sha: true, password: "s3cret"},
			want: want{class: upload.ClassAuth, reason: "asks for its OTA password", sentNone: true}},
		{name: "unknown version", sc: script{version: 2, verByte: bp(3)}, want: want{class: upload.ClassRejected, reason: "version 3", sentNone: true}},
		{name: "no 0x00 first", sc: script{version: 2, firstByte: bp(0x13)}, want: want{class: upload.ClassRejected, words: "0x13", sentNone: true}},
		{name: "unexpected feature answer", sc: script{version: 2, featAnswer: bp(0x50)}, want: want{class: upload.ClassRejected, words: "0x50", sentNone: true}},
		{name: "encryption required 0x94", sc: script{version: 2, errAt: "features", errByte: 0x94},
			want: want{refused: true, reason: "not supported yet", sentNone: true}},
		{name: "flash write 0x83 mid-data", sc: script{version: 2, errAt: "data", errByte: 0x83, errAfter: 16384},
			want: want{class: upload.ClassWriteFailed, words: "0x83"}},
		{name: "image magic 0x80 mid-data", sc: script{version: 2, errAt: "data", errByte: 0x80, errAfter: 1024},
			want: want{class: upload.ClassRejected, words: "0x80", reason: "not an app image"}},
		{name: "unknown 0xFF mid-data", sc: script{version: 1, errAt: "data", errByte: 0xFF, errAfter: 8192},
			want: want{class: upload.ClassNetwork, words: "0xFF"}},
		{name: "closed mid-data", sc: script{version: 2, closeAt: "data", errAfter: 8192},
			want: want{class: upload.ClassNetwork, reason: "closed the connection"}},
		{name: "closed after the whole image", sc: script{version: 2, closeAt: "end"},
			want: want{class: upload.ClassNetwork, noRetry: true, answerLost: true}},
		{name: "update end 0x84", sc: script{version: 2, errAt: "end", errByte: 0x84},
			want: want{class: upload.ClassRejected, words: "0x84", noRetry: true, notInstalled: true}},
		{name: "md5 mismatch 0x8B", sc: script{version: 1, errAt: "end", errByte: 0x8B},
			want: want{class: upload.ClassWriteFailed, words: "0x8B", noRetry: true, notInstalled: true}},
		{name: "signature 0x8D", sc: script{version: 2, errAt: "end", errByte: 0x8D},
			want: want{class: upload.ClassRejected, words: "0x8D", noRetry: true, notInstalled: true}},
		{name: "downgrade 0x93", sc: script{version: 2, errAt: "end", errByte: 0x93},
			want: want{class: upload.ClassRejected, words: "0x93", noRetry: true, notInstalled: true}},
		{name: "unknown 0xFF after the whole image", sc: script{version: 2, errAt: "end", errByte: 0xFF},
			want: want{class: upload.ClassNetwork, words: "0xFF", noRetry: true}},
	}
	// Every error byte, where the device answers the size.
	for b, e := range errorBytes {
		cases = append(cases, struct {
			name     string
			sc       script
			password string
			want     want
		}{name: fmt.Sprintf("error byte 0x%02X at size", b), sc: script{version: 2, extended: true, errAt: "size", errByte: b},
			want: want{class: e.class, words: fmt.Sprintf("0x%02X", b), sentNone: true, extended: true, refused: b == 0x94}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startDevice(t, c.sc)
			tr := &Transport{HandshakeTimeout: 5 * time.Second, DataTimeout: 10 * time.Second, ProgressInterval: 20 * time.Millisecond}
			fw := upload.NewFirmware("firmware.bin", img, false)
			var mu sync.Mutex
			var events []upload.Event
			err := tr.Send(context.Background(), d.target(), fw, upload.Credentials{Password: auth.NewSecret(c.password)}, func(e upload.Event) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			})
			s := d.wait(t)
			if s.features != clientFeatures && !strings.HasPrefix(c.name, "no 0x00") && !strings.HasPrefix(c.name, "unknown version") {
				t.Errorf("feature byte %#x, want %#x", s.features, clientFeatures)
			}
			if s.otaType != nil && *s.otaType != 0 {
				t.Errorf("OTA type %#x sent; only 0x00 (app) may be", *s.otaType)
			}
			if c.want.extended != (s.otaType != nil) && s.size != 0 {
				t.Errorf("OTA type byte sent: %v, want %v", s.otaType != nil, c.want.extended)
			}
			if c.want.ok {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				got := s.payload
				if c.want.compressed {
					got = gunzip(t, got)
					if len(s.payload) >= len(img) {
						t.Errorf("compressed payload %d bytes, image %d", len(s.payload), len(img))
					}
				}
				if !bytes.Equal(got, img) {
					t.Errorf("device received %d bytes that are not the image", len(got))
				}
				if !s.finalAck {
					t.Error("no final 0x00 after 0x45")
				}
				checkProgress(t, events, fw.Size(), c.want.compressed)
				return
			}
			if c.want.refused {
				var re *upload.RefusedError
				if !errors.As(err, &re) || !strings.Contains(re.Reason, "not supported yet") {
					t.Fatalf("Send = %v, want a refusal that says not supported yet", err)
				}
				if len(s.payload) > 0 || s.afterFeatures > 0 {
					t.Errorf("image bytes reached the device: payload %d, after features %d", len(s.payload), s.afterFeatures)
				}
				return
			}
			var de *upload.DeviceError
			if !errors.As(err, &de) {
				t.Fatalf("Send = %v, want a DeviceError", err)
			}
			if de.Class != c.want.class {
				t.Errorf("class %s, want %s (%v)", de.Class, c.want.class, de)
			}
			if c.want.words != "" && de.Words != c.want.words {
				t.Errorf("words %q, want %q", de.Words, c.want.words)
			}
			if c.want.reason != "" && !strings.Contains(de.Error(), c.want.reason) {
				t.Errorf("error %q does not say %q", de.Error(), c.want.reason)
			}
			if (de.NoRetry != "") != c.want.noRetry {
				t.Errorf("NoRetry %q, want set: %v", de.NoRetry, c.want.noRetry)
			}
			if (c.want.noRetry || c.want.notInstalled) && de.Taken != fw.Size() {
				t.Errorf("Taken %d after the whole image, want %d", de.Taken, fw.Size())
			}
			if errors.Is(err, upload.ErrRefusedWhole) != c.want.notInstalled || c.want.notInstalled && de.NoRetry != RefusedWholeHint {
				t.Errorf("refused whole: %v (no retry %q), want %v", errors.Is(err, upload.ErrRefusedWhole), de.NoRetry, c.want.notInstalled)
			}
			if c.want.sentNone && (len(s.payload) > 0 || s.afterFeatures > 0 || de.Taken > 0) {
				t.Errorf("image bytes reached the device: payload %d, after features %d, taken %d", len(s.payload), s.afterFeatures, de.Taken)
			}
			if errors.Is(err, upload.ErrAnswerLost) != c.want.answerLost {
				t.Errorf("answer lost: %v, want %v", errors.Is(err, upload.ErrAnswerLost), c.want.answerLost)
			}
			if strings.Contains(de.Error(), c.password) && c.password != "" {
				t.Error("the error names the password")
			}
		})
	}
}

// checkProgress: progress only grows and ends at the image's size.
func checkProgress(t *testing.T, events []upload.Event, size int64, compressed bool) {
	t.Helper()
	var last int64
	saving := false
	for _, e := range events {
		if e.Done < last {
			t.Errorf("progress went back from %d to %d", last, e.Done)
		}
		last = max(last, e.Done)
		if e.Total != 0 && e.Total != size {
			t.Errorf("total %d, want the image's %d", e.Total, size)
		}
		saving = saving || strings.Contains(e.Message, "gzip payload")
	}
	if last != size {
		t.Errorf("progress ended at %d, want %d", last, size)
	}
	if saving != compressed {
		t.Errorf("saving reported: %v, want %v", saving, compressed)
	}
}

// The gzip is computed once per image, before any connect, and shared by
// every device.
func TestCompressOnce(t *testing.T) {
	tr := &Transport{}
	fw := upload.NewFirmware("fw.bin", testImage(30000), false)
	var wg sync.WaitGroup
	for range 3 {
		d := startDevice(t, script{version: 2, compression: true, old: true})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tr.Send(context.Background(), d.target(), fw, upload.Credentials{}, nil); err != nil {
				t.Errorf("Send: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := tr.gzips.Load(); n != 1 {
		t.Errorf("gzip computed %d times, want once", n)
	}
	// Before any connect: a device that refuses still leaves it computed.
	tr2 := &Transport{}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	err := tr2.Send(context.Background(), upload.Target{Host: "127.0.0.1", Port: port}, fw, upload.Credentials{}, nil)
	if err == nil || tr2.gzips.Load() != 1 {
		t.Errorf("Send to a closed port = %v, gzips %d; want a failure with the gzip computed", err, tr2.gzips.Load())
	}
	if err != nil && !strings.Contains(err.Error(), "port "+strconv.Itoa(port)) {
		t.Errorf("refusal %q does not name the port tried", err)
	}
}

// A device that stops taking data is given up on after DataTimeout, and
// the try may be retried (nothing says it holds the image).
func TestDataTimeout(t *testing.T) {
	d := startDevice(t, script{version: 2, stall: true, errAfter: 8192})
	tr := &Transport{DataTimeout: 500 * time.Millisecond, ProgressInterval: 20 * time.Millisecond}
	fw := upload.NewFirmware("fw.bin", testImage(4<<20), false)
	err := tr.Send(context.Background(), d.target(), fw, upload.Credentials{}, nil)
	var de *upload.DeviceError
	if !errors.As(err, &de) || de.Class != upload.ClassTimeout && de.Class != upload.ClassNetwork {
		t.Fatalf("Send = %v, want a timeout", err)
	}
	if de.NoRetry != "" || de.Taken >= fw.Size() {
		t.Errorf("NoRetry %q, Taken %d: the device did not hold the image", de.NoRetry, de.Taken)
	}
	d.wait(t)
}

func TestDefaultTimeouts(t *testing.T) {
	if DefaultDataTimeout < 160*time.Second {
		t.Errorf("data timeout %s: the device allows 90 s without data, the client must wait at least 160 s", DefaultDataTimeout)
	}
}

func TestPorts(t *testing.T) {
	for _, c := range []struct {
		t    upload.Target
		want []int
	}{
		{upload.Target{Port: 4000}, []int{4000}},
		{upload.Target{Chip: "esp8266"}, []int{8266}},
		{upload.Target{Chip: "esp32c3"}, []int{3232}},
		{upload.Target{Platform: "ESP8266"}, []int{8266}},
		{upload.Target{Platform: "ESP32"}, []int{3232}},
		{upload.Target{}, []int{3232, 8266}},
	} {
		if got := Ports(c.t); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("Ports(%+v) = %v, want %v", c.t, got, c.want)
		}
	}
}

func TestScreen(t *testing.T) {
	tr := &Transport{}
	fw := upload.NewFirmware("fw.bin", testkit.SimImage(t, "1.0.0", 0), false)
	if fw.Image == nil {
		t.Fatal("the test image does not parse")
	}
	for _, c := range []struct {
		platform string
		refuse   bool
	}{{"ESP32", false}, {"", false}, {"ESP8266", true}, {"RP2", true}, {"BK72XX", true}} {
		got := tr.Screen(upload.Target{Platform: c.platform}, fw)
		if (got != "") != c.refuse {
			t.Errorf("platform %q: Screen = %q, want a refusal: %v", c.platform, got, c.refuse)
		}
	}
	// A platform ots-ota does not update is refused whatever the image.
	if tr.Screen(upload.Target{Platform: "RP2"}, upload.NewFirmware("x.bin", []byte{1, 2, 3}, false)) == "" {
		t.Error("RP2 with an unparsed image: no refusal")
	}
}

func TestNoFilesystem(t *testing.T) {
	tr := &Transport{}
	fw := upload.NewFirmware("fs.bin", []byte{1, 2, 3}, true)
	err := tr.Send(context.Background(), upload.Target{Host: "127.0.0.1", Port: 1}, fw, upload.Credentials{}, nil)
	var de *upload.DeviceError
	if !errors.As(err, &de) || de.Class != upload.ClassRejected {
		t.Fatalf("Send(filesystem) = %v, want rejected", err)
	}
}
