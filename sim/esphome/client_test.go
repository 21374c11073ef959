package esphome

// A scripted ESPHome OTA client written from the protocol facts
// (research/uploaders.md §8.2) for these tests only: it records every byte
// the device answers, step by step.

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

type script struct {
	features  byte
	password  string // "" = the client has none
	wrongPass bool
	otaType   byte
	payload   []byte
	md5       string        // announced MD5; "" = the payload's
	badMagic  bool          // send another magic
	pauseAt   string        // "features": wait pause before sending the feature byte; "data": stop half-way
	pause     time.Duration // how long
	stream    bool          // send the whole image, then read the 47s (as ots-ota does)
}

type transcript struct {
	ver      byte
	answer   []byte // 40, 46, or 48 + flags
	authKind byte   // 41 (none asked), 01 or 02
	nonceLen int
	acks     int // 47s seen
	got44    bool
	got45    bool
	errByte  byte   // the error byte, 0 = none
	errStep  string // where it came
	closed   string // where the connection ended without a byte
}

func hexMD5(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// push runs s against addr.
func push(t testing.TB, addr string, s script) transcript {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var tr transcript
	one := func(step string) (byte, bool) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			tr.closed = step
			return 0, false
		}
		return b[0], true
	}
	isErr := func(b byte, step string) bool {
		if b >= 0x80 {
			tr.errByte, tr.errStep = b, step
			return true
		}
		return false
	}
	m := []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}
	if s.badMagic {
		m = []byte{0x6C, 0x26, 0xF7, 0x5C, 0x44}
	}
	c.Write(m)
	b, ok := one("magic")
	if !ok || isErr(b, "magic") {
		return tr
	}
	if b != 0 {
		t.Fatalf("magic answer %02X", b)
	}
	if tr.ver, ok = one("version"); !ok {
		return tr
	}
	if s.pauseAt == "features" {
		time.Sleep(s.pause)
	}
	c.Write([]byte{s.features})
	b, ok = one("features")
	if !ok || isErr(b, "features") {
		return tr
	}
	tr.answer = []byte{b}
	if b == 0x48 {
		f, ok := one("flags")
		if !ok {
			return tr
		}
		tr.answer = append(tr.answer, f)
	}
	b, ok = one("auth")
	if !ok || isErr(b, "auth") {
		return tr
	}
	tr.authKind = b
	if b == 0x01 || b == 0x02 {
		n := 32
		if b == 0x02 {
			n = 64
		}
		tr.nonceLen = n
		nonce := make([]byte, n)
		if _, err := io.ReadFull(c, nonce); err != nil {
			tr.closed = "nonce"
			return tr
		}
		if s.password == "" {
			return tr // a client without the password gives up here
		}
		pw := s.password
		if s.wrongPass {
			pw += "x"
		}
		var cnonce, resp string
		if b == 0x01 {
			cnonce = hexMD5([]byte("cnonce"))
			resp = hexMD5([]byte(pw + string(nonce) + cnonce))
		} else {
			cs := sha256.Sum256([]byte("cnonce"))
			cnonce = hex.EncodeToString(cs[:])
			rs := sha256.Sum256([]byte(pw + string(nonce) + cnonce))
			resp = hex.EncodeToString(rs[:])
		}
		c.Write([]byte(cnonce + resp))
		b, ok = one("auth-result")
		if !ok || isErr(b, "auth") {
			return tr
		}
		if b != 0x41 {
			t.Fatalf("auth result %02X", b)
		}
	} else if b != 0x41 {
		t.Fatalf("auth answer %02X", b)
	}
	if len(tr.answer) == 2 {
		c.Write([]byte{s.otaType})
	}
	c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s.payload))))
	b, ok = one("begin")
	if !ok || isErr(b, "begin") {
		return tr
	}
	if b != 0x42 {
		t.Fatalf("begin answer %02X", b)
	}
	sum := s.md5
	if sum == "" {
		sum = hexMD5(s.payload)
	}
	c.Write([]byte(sum))
	if b, ok = one("md5"); !ok || isErr(b, "md5") {
		return tr
	}
	v2 := tr.ver == 2
	for off := 0; off < len(s.payload); off += 8192 {
		if s.pauseAt == "data" && off >= len(s.payload)/2 {
			time.Sleep(s.pause)
			s.pauseAt = ""
		}
		end := min(off+8192, len(s.payload))
		if _, err := c.Write(s.payload[off:end]); err != nil {
			break // the device stopped reading: its answer follows
		}
		if v2 && !s.stream {
			b, ok = one("data")
			if !ok || isErr(b, "data") {
				return tr
			}
			if b != 0x47 {
				t.Fatalf("chunk answer %02X", b)
			}
			tr.acks++
		}
	}
	for n := (len(s.payload) + 8191) / 8192; v2 && s.stream && tr.acks < n; tr.acks++ {
		b, ok = one("data")
		if !ok || isErr(b, "data") {
			return tr
		}
		if b != 0x47 {
			t.Fatalf("chunk answer %02X", b)
		}
	}
	b, ok = one("receive")
	if !ok || isErr(b, "data") {
		return tr
	}
	if b != 0x44 {
		t.Fatalf("receive answer %02X", b)
	}
	tr.got44 = true
	b, ok = one("end")
	if !ok || isErr(b, "end") {
		return tr
	}
	if b != 0x45 {
		t.Fatalf("end answer %02X", b)
	}
	tr.got45 = true
	c.Write([]byte{0})
	return tr
}

func (tr transcript) String() string {
	return fmt.Sprintf("ver=%d answer=% X auth=%02X nonce=%d acks=%d 44=%v 45=%v err=%02X@%s closed@%s",
		tr.ver, tr.answer, tr.authKind, tr.nonceLen, tr.acks, tr.got44, tr.got45, tr.errByte, tr.errStep, tr.closed)
}
