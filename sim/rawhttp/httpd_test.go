package rawhttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestKeepAlive: a request that succeeds leaves the connection open for
// the next one, as esp_http_server does.
func TestKeepAlive(t *testing.T) {
	d := simtest.Start(t, simtest.Config(OTS))
	c, err := net.Dial("tcp", d.WebAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		c.Write([]byte("GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Date") != "" {
			t.Errorf("request %d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
}

// TestReceiveFailed: the client goes away mid-upload → "Receive failed".
func TestReceiveFailed(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	c, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	img := simtest.Image(t, "1.0.1")
	c.Write([]byte("POST /update HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(img)) + "\r\n\r\n"))
	c.Write(img[:5000])
	c.Close()
	st := simtest.WaitUploads(t, d, 1)
	if rec := st.Uploads[0]; rec.Text != "Receive failed" || rec.Bytes != 5000 {
		t.Errorf("%+v", rec)
	}
	if st.Version != "1.0.0" || !simtest.Slot(st, "ota_0").Empty {
		t.Errorf("state %+v", st)
	}
}

// TestMaxOpenSockets: with 7 connections open the httpd accepts no more
// until one closes (max_open_sockets, no LRU purge).
func TestMaxOpenSockets(t *testing.T) {
	d := simtest.Start(t, simtest.Config(OTS))
	var idle []net.Conn
	for i := 0; i < 7; i++ {
		c, err := net.Dial("tcp", d.WebAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(50 * time.Millisecond)      // let the device take all seven
	c, err := net.Dial("tcp", d.WebAddr()) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /api/status HTTP/1.1\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); err == nil {
		t.Fatalf("an eighth connection was served (%d bytes)", n)
	}
	idle[0].Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a slot freed: %v %v", resp, err)
	}
}
