package simtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
)

// Plain HTTP clients for the devices: raw TCP where the bytes matter,
// net/http where a common client is the point.

// Reply is an HTTP response read by RawPost.
type Reply struct {
	Status   int
	CType    string
	Body     string
	Header   http.Header
	WriteErr error // what the client's write of the body ended with
	ReadErr  error
}

// RawPost sends a request over a plain TCP connection, writing the body in
// one goroutine and reading the response in another, like a careful client
// must against a device that answers mid-upload and closes.
func RawPost(t testing.TB, addr, method, path string, headers map[string]string, body []byte) Reply {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var hb strings.Builder
	fmt.Fprintf(&hb, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, addr)
	if _, ok := headers["Content-Length"]; !ok && body != nil {
		fmt.Fprintf(&hb, "Content-Length: %d\r\n", len(body))
	}
	for k, v := range headers {
		if v == "" {
			continue
		}
		fmt.Fprintf(&hb, "%s: %s\r\n", k, v)
	}
	hb.WriteString("\r\n")
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte(hb.String()))
		if err == nil && len(body) > 0 {
			_, err = c.Write(body)
		}
		werr <- err
	}()
	var r Reply
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		r.ReadErr = err
	} else {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		r.Status, r.CType, r.Body, r.Header, r.ReadErr = resp.StatusCode, resp.Header.Get("Content-Type"), string(b), resp.Header, err
	}
	c.Close() // unblock the writer
	r.WriteErr = <-werr
	return r
}

// PostGo uploads with Go's http.Client (fresh transport, no keep-alive reuse).
func PostGo(t testing.TB, url string, body []byte, hdr map[string]string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// GetGo GETs url with Go's http.Client (fresh transport).
func GetGo(t testing.TB, url string) (int, string, error) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Push uploads version to d over HTTP and expects the 200.
func Push(t *testing.T, d *core.Device, version string) {
	t.Helper()
	s, b, err := PostGo(t, "http://"+d.OTAAddr()+"/update", Image(t, version), nil)
	if err != nil || s != 200 {
		t.Fatalf("upload %s: %d %q %v", version, s, b, err)
	}
}

// OTAStatus decodes GET /ota/status (device-contract.md §4).
type OTAStatus struct {
	Project       string        `json:"project"`
	Version       string        `json:"version"`
	IDF           string        `json:"idf"`
	Chip          string        `json:"chip"`
	Running       string        `json:"running"`
	Boot          string        `json:"boot"`
	State         core.AppState `json:"state"`
	SecureVersion uint32        `json:"secure_version"`
	ELFSHA256     string        `json:"elf_sha256"`
	SlotSize      int64         `json:"slot_size"`
	UptimeS       int64         `json:"uptime_s"`
}

// OTAStatusOf reads and decodes the device's GET /ota/status.
func OTAStatusOf(t *testing.T, d *core.Device) OTAStatus {
	t.Helper()
	code, js, err := GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
	if err != nil || code != 200 {
		t.Fatalf("/ota/status: %d %v", code, err)
	}
	var s OTAStatus
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatal(err)
	}
	return s
}
