package testbroker

import (
	"io"
	"net"
	"testing"
	"time"
)

// connack sends an MQTT 3.1.1 CONNECT (clean session, with user and
// password when user is not "") and returns the CONNACK's return code.
func connack(t *testing.T, addr, user, pass string) byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	flags := byte(0x02)
	if user != "" {
		flags |= 0xC0
	}
	body := append(str("MQTT"), 4, flags, 0, 30)
	body = append(body, str("tb-test")...)
	if user != "" {
		body = append(body, str(user)...)
		body = append(body, str(pass)...)
	}
	pkt := append([]byte{0x10, byte(len(body))}, body...)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if ack[0] != 0x20 {
		t.Fatalf("not a CONNACK: % x", ack)
	}
	return ack[3]
}

func TestAnonymous(t *testing.T) {
	b := Start(t)
	if rc := connack(t, b.Addr(), "", ""); rc != 0 {
		t.Fatalf("anonymous CONNECT refused: %d", rc)
	}
	if b.URL() != "mqtt://"+b.Addr() {
		t.Fatalf("URL %q, Addr %q", b.URL(), b.Addr())
	}
}

// The password file's $6$ hash is what mosquitto checks: the right
// password is taken, a wrong one and no credentials are refused.
func TestUsers(t *testing.T) {
	b := Start(t, WithUser("ots", "s3cret pass"), WithUser("other", "x"), KeepLogs())
	if rc := connack(t, b.Addr(), "ots", "s3cret pass"); rc != 0 {
		t.Fatalf("right password refused: %d", rc)
	}
	if rc := connack(t, b.Addr(), "other", "x"); rc != 0 {
		t.Fatalf("second user refused: %d", rc)
	}
	if rc := connack(t, b.Addr(), "ots", "wrong"); rc != 5 && rc != 4 {
		t.Fatalf("wrong password: return code %d, want 4 or 5", rc)
	}
	if rc := connack(t, b.Addr(), "", ""); rc != 5 && rc != 4 {
		t.Fatalf("anonymous: return code %d, want 4 or 5", rc)
	}
}

func TestStopRestart(t *testing.T) {
	b := Start(t)
	addr := b.Addr()
	b.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Stop")
	}
	b.Restart()
	if b.Addr() != addr {
		t.Fatalf("restarted on %s, was %s", b.Addr(), addr)
	}
	if rc := connack(t, addr, "", ""); rc != 0 {
		t.Fatalf("after Restart: %d", rc)
	}
}
