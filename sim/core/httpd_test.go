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

// TestParseArduino: an Arduino web server (Server.NotFound) reads requests
// leniently: any method token and version, no 414/431/505, a 16 KiB header
// section; what it cannot read is dropped without an answer.
func TestParseArduino(t *testing.T) {
	parse := func(raw string) (*Request, int) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() {
			a.Write([]byte(raw))
			a.Close()
		}()
		h := &httpd{hdrLimit: 512, timing: FastTiming(), notFound: func(*Request) error { return nil }}
		r := &Request{h: h, conn: b, br: bufio.NewReaderSize(b, 32<<10)}
		return r, r.parse()
	}
	long := strings.Repeat("a", 2000)
	cases := []struct {
		name, raw string
		code      int
		method    string
		minor     int
		cl        int64
	}{
		{"unknown method", "FROB /x HTTP/1.1\r\n\r\n", 0, "FROB", 1, 0},
		{"long URI", "GET /" + long + " HTTP/1.1\r\n\r\n", 0, "GET", 1, 0},
		{"long header", "GET / HTTP/1.1\r\nX: " + long + "\r\n\r\n", 0, "GET", 1, 0},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 0, "GET", 0, 0},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 0, "GET", 1, 0},
		{"length not a number", "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 0, "POST", 1, 0},
		{"chunked and length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 0, "POST", 1, 3},
		{"header over 16 KiB", "GET / HTTP/1.1\r\nX: " + strings.Repeat(long, 9) + "\r\n\r\n", -1, "", 0, 0},
		{"no colon", "GET / HTTP/1.1\r\nnonsense\r\n\r\n", -1, "", 0, 0},
		{"bad request line", "GET\r\n\r\n", -1, "", 0, 0},
	}
	for _, c := range cases {
		r, code := parse(c.raw)
		if code != c.code || code == 0 && (r.method != c.method || r.minor != c.minor || r.contentLen != c.cl) {
			t.Errorf("%s: %d %q 1.%d %d", c.name, code, r.method, r.minor, r.contentLen)
		}
	}
}

// TestRoutePrefix: a Prefix route takes its path and what follows a "/".
func TestRoutePrefix(t *testing.T) {
	exact := Route{Path: "/update"}
	prefix := Route{Path: "/update", Prefix: true}
	for _, c := range []struct {
		path          string
		exact, prefix bool
	}{{"/update", true, true}, {"/update/identity", false, true}, {"/updates", false, false}, {"/", false, false}} {
		if exact.matches(c.path) != c.exact || prefix.matches(c.path) != c.prefix {
			t.Errorf("%s: exact %v prefix %v", c.path, exact.matches(c.path), prefix.matches(c.path))
		}
	}
}
