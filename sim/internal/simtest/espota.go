package simtest

import (
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A minimal espota host, written from research/espota.md §1 (not from the
// sim/espota engine): UDP invitation, optional auth, TCP accept, 1024-byte
// chunks each followed by a count read, then wait for OK or an error text.

type EspotaResult struct {
	UDPReply string // the device's reply to the invitation (or auth)
	Final    string // what followed the last chunk: "OK" or the error text
	Sent     int
	Acked    int // the sum of the counts the device sent
}

// ErrNoConnectBack: the device accepted the invitation but never connected.
var ErrNoConnectBack = errors.New("no connection from the device")

// EspotaPush uploads img to the espota device at device (UDP host:port)
// as espota.py does, with password when not empty.
func EspotaPush(t *testing.T, device string, img []byte, password string) (EspotaResult, error) {
	t.Helper()
	return EspotaPushCmd(t, device, 0, img, password)
}

// EspotaPushCmd is EspotaPush with the invitation's command (100: spiffs).
func EspotaPushCmd(t *testing.T, device string, cmd int, img []byte, password string) (EspotaResult, error) {
	t.Helper()
	var res EspotaResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	u, err := net.Dial("udp", device)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	sum := MD5Hex(img)
	fmt.Fprintf(u, "%d %d %d %s\n", cmd, port, len(img), sum)
	buf := make([]byte, 128)
	u.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := u.Read(buf)
	if err != nil {
		return res, fmt.Errorf("invitation: %w", err)
	}
	res.UDPReply = string(buf[:n])
	if nonce, ok := strings.CutPrefix(res.UDPReply, "AUTH "); ok {
		var cnonce, response string
		switch len(nonce) {
		case 32: // MD5, core ≤ 3.3.0 and ESP8266
			cnonce = MD5Hex([]byte("fw.bin" + strconv.Itoa(len(img)) + sum + device))
			response = MD5Hex([]byte(MD5Hex([]byte(password)) + ":" + nonce + ":" + cnonce))
		case 64: // PBKDF2-HMAC-SHA256, core ≥ 3.3.1
			cnonce = SHA256Hex([]byte("fw.bin" + strconv.Itoa(len(img)) + sum + device))
			dk, err := pbkdf2.Key(sha256.New, SHA256Hex([]byte(password)), []byte(nonce+":"+cnonce), 10000, 32)
			if err != nil {
				t.Fatal(err)
			}
			response = SHA256Hex([]byte(hex.EncodeToString(dk) + ":" + nonce + ":" + cnonce))
		default:
			return res, fmt.Errorf("nonce of %d characters", len(nonce))
		}
		fmt.Fprintf(u, "200 %s %s\n", cnonce, response)
		u.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := u.Read(buf)
		if err != nil {
			return res, fmt.Errorf("auth: %w", err)
		}
		res.UDPReply = string(buf[:n])
	}
	if res.UDPReply != "OK" {
		return res, nil
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		return res, ErrNoConnectBack
	}
	defer c.Close()
	for off := 0; off < len(img); off += 1024 {
		end := min(off+1024, len(img))
		if _, err := c.Write(img[off:end]); err != nil {
			return res, fmt.Errorf("send at %d: %w", off, err)
		}
		res.Sent = end
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf[:10])
		if err != nil {
			return res, fmt.Errorf("count after %d: %w", end, err)
		}
		if n, err := strconv.Atoi(string(buf[:n])); err == nil {
			res.Acked += n
		}
		if s := string(buf[:n]); strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
			// an error text instead of a count: read the rest of it
			rest := ReadAll(c)
			res.Final = strings.TrimLeft(s+rest, "0123456789")
			return res, nil
		}
	}
	res.Final = strings.TrimLeft(ReadAll(c), "0123456789")
	return res, nil
}

// MD5Hex is the hex MD5 of b (espota's image digest).
func MD5Hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// SHA256Hex is the hex SHA-256 of b.
func SHA256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// ReadAll reads what c sends until it closes (or 5 s pass).
func ReadAll(c net.Conn) string {
	var out []byte
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out)
		}
	}
}
