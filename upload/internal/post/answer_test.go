package post

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ots-ota/ots-ota/upload"
)

// cutReader returns its data, then err (a reset after the answer).
type cutReader struct {
	data string
	err  error
}

func (r *cutReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

var errTestReset = errors.New("connection reset by peer")

func TestReadAnswer(t *testing.T) {
	long := strings.Repeat("x", 70<<10)
	menu := strings.Repeat("<li><a href='/x'>Settings and information</a></li>\n", 14) // 14 × 24 visible
	tasmota := "<b>Upload <font>Failed</font></b><br>x"
	markup := strings.Repeat("<div class='row'><span>&nbsp;</span></div>\n", 200) // 8.6 KiB, nothing visible
	for _, tc := range []struct {
		name   string
		in     string
		err    error // what follows the data; nil = EOF
		status int
		words  string
		cut    bool
		fail   bool
	}{
		{name: "esp-idf error", in: "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\nWrite failed", status: 500, words: "Write failed"},
		{name: "esp-idf error then RST", in: "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\nWrite failed", err: errTestReset, status: 500, words: "Write failed"},
		{name: "seed ok", in: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 35\r\n\r\nOTA update successful, rebooting...", status: 200, words: "OTA update successful, rebooting..."},
		{name: "body cut by RST", in: "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 12\r\n\r\nWrite fa", err: errTestReset, status: 500, words: "Write fa", cut: true},
		{name: "headers cut by RST", in: "HTTP/1.1 403 Forbidden\r\nContent-Ty", err: errTestReset, status: 403, cut: true},
		{name: "status line only, cut", in: "HTTP/1.1 401 Unauthorized", err: errTestReset, status: 401, cut: true},
		{name: "LF only, HTTP/1.0, close-delimited", in: "HTTP/1.0 500 Oops\nContent-Type: text/plain\n\nReceive failed\n", status: 500, words: "Receive failed"},
		{name: "no reason phrase", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", status: 200},
		{name: "100 continue first", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nOTA end failed", status: 500, words: "OTA end failed"},
		{name: "chunked", in: "HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nWrite\r\n7; ext=1\r\n failed\r\n0\r\n\r\n", status: 500, words: "Write failed"},
		{name: "chunked cut", in: "HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nWri", err: errTestReset, status: 500, words: "Wri", cut: true},
		{name: "html page", in: "HTTP/1.1 500 X\r\nContent-Type: text/html\r\n\r\n<html><head><title>Error</title><style>p{}</style></head><body><p>Write&nbsp;failed &amp; more</p></body></html>", status: 500, words: "Error Write failed & more"},
		{name: "escape codes dropped", in: "HTTP/1.1 500 X\r\nContent-Length: 19\r\n\r\n\x1b[31mWrite\x07\r\nfailed", status: 500, words: "[31mWrite failed"},
		{name: "bounded body", in: "HTTP/1.1 500 X\r\nContent-Length: 71680\r\n\r\n" + long, status: 500, cut: true},
		// Failure texts are found in the whole body, and the words start there.
		{name: "failure after 300 visible chars", in: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><ul>" + menu + "</ul><h2>Update failed!</h2><p>Not Enough Space</p></body></html>",
			status: 200, words: "Update failed! Not Enough Space"},
		{name: "failure after 8 KiB of markup, chunked", in: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(markup), markup) + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(tasmota), tasmota),
			status: 200, words: "Upload Failed x"},
		{name: "HTTPUpdateServer error", in: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 49\r\n\r\nUpdate error: ERROR[10]: Magic byte is not 0xE9\r\n",
			status: 200, words: "Update error: ERROR[10]: Magic byte is not 0xE9"},
		{name: "HTTPUpdateServer success", in: "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<META http-equiv=\"refresh\" content=\"15;URL=/\">Update Success! Rebooting...",
			status: 200, words: "Update Success! Rebooting..."},
		{name: "conflicting lengths read to close", in: "HTTP/1.1 500 X\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", status: 500, words: "abcde"},
		{name: "stray CRLF before", in: "\r\n\r\nHTTP/1.1 500 X\r\nContent-Length: 1\r\n\r\nz", status: 500, words: "z"},
		{name: "not http", in: "SSH-2.0-OpenSSH\r\n", fail: true},
		{name: "bad code", in: "HTTP/1.1 2x0 OK\r\n\r\n", fail: true},
		{name: "nothing", in: "", fail: true},
		{name: "huge line", in: "HTTP/1.1 500 " + long + "\r\n\r\n", fail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &cutReader{data: tc.in, err: tc.err}
			if r.err == nil {
				r.err = io.EOF
			}
			a, err := ReadAnswer(bufio.NewReaderSize(r, 4<<10))
			if tc.fail {
				if a != nil || err == nil {
					t.Fatalf("want no answer, got %+v %v", a, err)
				}
				return
			}
			if err != nil || a == nil {
				t.Fatalf("no answer: %v", err)
			}
			if a.Status != tc.status || a.Cut != tc.cut {
				t.Errorf("status %d cut %v, want %d %v", a.Status, a.Cut, tc.status, tc.cut)
			}
			if tc.name != "bounded body" && a.Words() != tc.words {
				t.Errorf("words %q, want %q", a.Words(), tc.words)
			}
			if len(a.Body) > maxAnswerBody || utf8.RuneCountInString(a.Words()) > maxWords+1 {
				t.Errorf("bounds exceeded: body %d, words %d", len(a.Body), len(a.Words()))
			}
		})
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"  Write failed\r\n":     "Write failed",
		"a\x00b\tc":              "a b c",
		"\xff\xfeok":             "ok",
		"Über größe":             "Über größe",
		strings.Repeat("a", 300): strings.Repeat("a", maxWords) + "…",
	} {
		if got := upload.CleanText(in, maxWords); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzReadAnswer: no input crashes the parser or makes it keep more than
// its bounds, and what it reports is printable on one line.
func FuzzReadAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\nWrite failed",
		"HTTP/1.1 200 OK\r\nContent-Length: 35\r\n\r\nOTA update successful, rebooting...",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\nInvalid credentials",
		"HTTP/1.1 500 X\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nWrite\r\n0\r\n\r\n",
		"HTTP/1.0 404\n\n<html><body>nope</body></html>",
		"HTTP/1.1 500 X\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>menu</p><b>Upload <font>Failed</font></b><br>Not enough space",
		"HTTP/1.1 200 OK\r\nContent-Length: 49\r\n\r\nUpdate error: ERROR[10]: Magic byte is not 0xE9\r\n",
		"HTTP/1.1 200 OK\r\n\r\nFAIL",
		"garbage",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		marks := 0
		a, err := ReadAnswerMarked(bufio.NewReaderSize(&cutReader{data: string(b), err: errTestReset}, 4<<10), func() { marks++ })
		if marks < 1 || marks > maxInterim+1 {
			t.Fatalf("status lines marked %d times", marks)
		}
		if a == nil {
			if err == nil {
				t.Fatal("no answer and no error")
			}
			return
		}
		if a.Status < 100 || a.Status > 999 {
			t.Fatalf("status %d", a.Status)
		}
		if len(a.Body) > maxAnswerBody {
			t.Fatalf("body %d bytes", len(a.Body))
		}
		w := a.Words()
		if !utf8.ValidString(w) || strings.ContainsAny(w, "\r\n\x1b\x00") || utf8.RuneCountInString(w) > maxWords+1 {
			t.Fatalf("words %q", w)
		}
		if !utf8.ValidString(a.Reason) || strings.ContainsAny(a.Reason, "\r\n\x1b") {
			t.Fatalf("reason %q", a.Reason)
		}
		// A failure text anywhere in what arrived makes a 2xx no success,
		// and the words quote it; none, and they cannot.
		if says := upload.FailureTextAt(a.visible()) >= 0; upload.Accepted(200, w) == says {
			t.Fatalf("failure text in the body %v, but Accepted(200, %q) = %v", says, w, !says)
		}
	})
}
