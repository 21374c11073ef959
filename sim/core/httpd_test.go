package core

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// parseRaw runs the request parser over raw bytes.
func parseRaw(t testing.TB, raw []byte) (*Request, int) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		a.Write(raw)
		a.Close()
	}()
	h := &httpd{hdrLimit: 512, timing: FastTiming()}
	r := &Request{h: h, conn: b, br: bufio.NewReaderSize(b, 16<<10)}
	return r, r.parse()
}

func TestParseRequest(t *testing.T) {
	r, code := parseRaw(t, []byte("POST http://host:3232/update?x=1 HTTP/1.1\r\nHost: h\r\ncontent-length: 12\r\nAuthorization:  Bearer abc \r\n\r\n"))
	if code != 0 || r.method != "POST" || r.path != "/update" || r.contentLen != 12 {
		t.Fatalf("%d %+v", code, r)
	}
	// Leading whitespace goes (http_parser), trailing stays (nothing trims it).
	if v, ok := r.Header("AUTHORIZATION"); !ok || v != "Bearer abc " {
		t.Errorf("header %q", v)
	}
	r, code = parseRaw(t, []byte("POST /update HTTP/1.1\r\nContent-Length: 7 \r\nX:\t v\t\r\n\r\n"))
	if code != 0 || r.contentLen != 7 {
		t.Fatalf("content-length with a trailing space: %d %+v", code, r)
	}
	if v, _ := r.Header("x"); v != "v\t" {
		t.Errorf("header %q", v)
	}
	r, code = parseRaw(t, []byte("GET / HTTP/1.0\nHost: h\n\n")) // bare LFs, HTTP/1.0
	if code != 0 || r.path != "/" || r.contentLen != 0 {
		t.Errorf("%d %+v", code, r)
	}
	_, code = parseRaw(t, []byte("POST /update HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"))
	if code != 400 {
		t.Errorf("conflicting lengths: %d", code)
	}
	_, code = parseRaw(t, []byte("POST /update HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"))
	if code != 400 {
		t.Errorf("chunked plus length: %d", code)
	}
	_, code = parseRaw(t, []byte("GET / HTTP/1.1\r\nHost"))
	if code != -1 {
		t.Errorf("cut off: %d", code)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"POST /update HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
		"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /update HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://a/b?c HTTP/1.0\n\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, code := parseRaw(t, raw)
		switch code {
		case 0:
			if !knownMethods[r.method] || !strings.HasPrefix(r.path, "/") || r.contentLen < 0 || len(r.uri) > maxURILen {
				t.Fatalf("accepted a bad request: %+v", r)
			}
		case -1, 400, 408, 414, 431, 505:
		default:
			t.Fatalf("unexpected status %d", code)
		}
	})
}
