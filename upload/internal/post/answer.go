package post

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"strconv"
	"strings"

	"github.com/ots-ota/ots-ota/upload"
)

// Bounds on what is read of a device's answer: a device (or whatever else
// listens on the port) can never make the client buffer more than this.
const (
	maxAnswerLine    = 2 << 10  // status line or one header line
	maxAnswerHeaders = 16 << 10 // the whole header section
	// ESP-IDF's answers are one short sentence, but an uploader's page may
	// say the update failed after kilobytes of markup (upload.FailureTextAt).
	maxAnswerBody = 64 << 10
	maxInterim    = 8   // 1xx answers skipped before the real one
	maxWords      = 200 // runes of the device's text kept for the user
	maxChallenges = 4   // WWW-Authenticate headers kept
)

// Answer is a device's HTTP response, as much of it as arrived. ESP-IDF's
// httpd answers "HTTP/1.1 500 Internal Server Error", Content-Type
// text/html, Content-Length, and a one-line body; other servers may send
// chunked or close-delimited bodies, or be cut by an RST halfway.
type Answer struct {
	Status      int
	Reason      string // the reason phrase of the status line
	ContentType string
	// Challenges are the WWW-Authenticate values (at most maxChallenges,
	// each as sent, at most one header line long): a 401's schemes.
	Challenges []string
	Body       []byte // at most maxAnswerBody bytes
	// Cut: the connection ended (or the bound was hit) before the answer
	// was complete; Status is still what the device said.
	Cut bool
}

// ErrNotHTTP: the peer sent bytes that are not an HTTP response.
var ErrNotHTTP = errors.New("not an HTTP response")

// ReadAnswer reads one final HTTP response from br (1xx interim answers are
// skipped). It returns an answer as soon as the status line arrived, even
// when the headers or body were then cut off: the status and whatever text
// came are the device's words. With no status line it returns the read
// error (io.EOF, a reset) or ErrNotHTTP.
func ReadAnswer(br *bufio.Reader) (*Answer, error) {
	return ReadAnswerMarked(br, nil)
}

// ReadAnswerMarked is ReadAnswer calling mark before it reads each status
// line (an interim one, then the final one), so the caller can note when
// the final answer began to arrive.
func ReadAnswerMarked(br *bufio.Reader, mark func()) (*Answer, error) {
	for interim := 0; ; interim++ {
		if mark != nil {
			mark()
		}
		a, err := readStatusLine(br)
		if err != nil {
			return nil, err
		}
		clen, chunked, herr := readAnswerHeaders(br, a)
		if herr != nil {
			a.Cut = true
			return a, nil
		}
		if a.Status >= 100 && a.Status < 200 && a.Status != 101 && interim < maxInterim {
			continue
		}
		readAnswerBody(br, a, clen, chunked)
		return a, nil
	}
}

// readLine reads one LF-terminated line of at most maxAnswerLine bytes and
// strips the CRLF. A line cut by EOF is returned with the error.
func readLine(br *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxAnswerLine {
			return "", fmt.Errorf("answer line longer than %d bytes: %w", maxAnswerLine, ErrNotHTTP)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return string(bytes.TrimRight(line, "\r\n")), err
	}
	return string(bytes.TrimRight(line, "\r\n")), nil
}

func readStatusLine(br *bufio.Reader) (*Answer, error) {
	var line string
	for blank := 0; ; blank++ {
		l, err := readLine(br)
		if err != nil {
			if l == "" {
				return nil, err
			}
			// A status line cut by the connection's end still counts if
			// it is whole enough to parse.
			if a, perr := parseStatusLine(l); perr == nil {
				a.Cut = true
				return a, nil
			}
			return nil, err
		}
		if l != "" || blank >= 4 { // tolerate stray CRLFs before the answer
			line = l
			break
		}
	}
	return parseStatusLine(line)
}

// parseStatusLine reads "HTTP/1.1 500 Internal Server Error"; the reason
// phrase may be missing, the version may be 1.0.
func parseStatusLine(l string) (*Answer, error) {
	proto, rest, _ := strings.Cut(l, " ")
	if !strings.HasPrefix(proto, "HTTP/") {
		return nil, ErrNotHTTP
	}
	rest = strings.TrimLeft(rest, " ")
	code, reason, _ := strings.Cut(rest, " ")
	if len(code) != 3 {
		return nil, ErrNotHTTP
	}
	n, err := strconv.Atoi(code)
	if err != nil || n < 100 {
		return nil, ErrNotHTTP
	}
	return &Answer{Status: n, Reason: upload.CleanText(reason, 60)}, nil
}

// readAnswerHeaders reads the header section into a; clen is -1 when no
// usable Content-Length was given. An error means the section was cut.
func readAnswerHeaders(br *bufio.Reader, a *Answer) (clen int64, chunked bool, err error) {
	clen = -1
	total := 0
	for {
		l, err := readLine(br)
		if err != nil {
			return clen, chunked, err
		}
		if l == "" {
			return clen, chunked, nil
		}
		if total += len(l) + 2; total > maxAnswerHeaders {
			return clen, chunked, fmt.Errorf("answer headers longer than %d bytes", maxAnswerHeaders)
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue // obs-fold continuation or junk: nothing a client needs
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-type":
			a.ContentType = upload.CleanText(value, 100)
		case "content-length":
			n, perr := strconv.ParseInt(value, 10, 64)
			switch {
			case perr != nil || n < 0:
				clen = -2 // unusable: read until close
			case clen == -1:
				clen = n
			case clen != n:
				clen = -2
			}
		case "www-authenticate":
			if len(a.Challenges) < maxChallenges {
				a.Challenges = append(a.Challenges, value)
			}
		case "transfer-encoding":
			if strings.Contains(strings.ToLower(value), "chunked") {
				chunked = true
			}
		}
	}
}

// readAnswerBody reads at most maxAnswerBody bytes of the body. A body the
// connection cut short keeps what arrived and marks the answer Cut.
func readAnswerBody(br *bufio.Reader, a *Answer, clen int64, chunked bool) {
	if a.Status == 204 || a.Status == 304 || (a.Status >= 100 && a.Status < 200) {
		return
	}
	var buf bytes.Buffer
	var err error
	switch {
	case chunked:
		err = readChunked(br, &buf)
	case clen >= 0:
		want := min(clen, maxAnswerBody)
		var n int64
		n, err = io.CopyN(&buf, br, want)
		if err == nil && n < clen {
			a.Cut = true // the bound, not the connection
		}
	default:
		_, err = io.CopyN(&buf, br, maxAnswerBody)
		if err == nil {
			a.Cut = true // more followed than is kept
		} else if errors.Is(err, io.EOF) {
			err = nil // a close-delimited body ends at the close
		}
	}
	if err != nil {
		a.Cut = true
	}
	a.Body = buf.Bytes()
}

// readChunked decodes a chunked body into buf, up to maxAnswerBody bytes.
func readChunked(br *bufio.Reader, buf *bytes.Buffer) error {
	for buf.Len() < maxAnswerBody {
		l, err := readLine(br)
		if err != nil {
			return err
		}
		size, _, _ := strings.Cut(l, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return ErrNotHTTP
		}
		if n == 0 {
			return nil // trailers are not read: nothing in them matters
		}
		keep := min(n, int64(maxAnswerBody-buf.Len()))
		if _, err := io.CopyN(buf, br, keep); err != nil {
			return err
		}
		if keep < n {
			return nil
		}
		if _, err := readLine(br); err != nil { // the chunk's CRLF
			return err
		}
	}
	return nil
}

// Words is the device's text for the user, as one line of at most maxWords
// runes: from the first failure text on where the answer holds one (a
// page's "Update failed" after its menus), else from its start. HTML tags
// are dropped (ESP-IDF sends plain text labelled text/html; other servers
// send pages), control characters removed.
func (a *Answer) Words() string { return a.WordsWith(nil) }

// WordsWith is Words with clean applied to the whole visible text first
// (redaction, before anything is cut).
func (a *Answer) WordsWith(clean func(string) string) string {
	v := a.visible()
	if clean != nil {
		v = clean(v)
	}
	if i := upload.FailureTextAt(v); i > 0 {
		v = v[i:]
	}
	return upload.CleanText(v, maxWords)
}

// visible is the whole body as a reader sees it: tags dropped, one line.
func (a *Answer) visible() string {
	body := string(a.Body)
	if looksHTML(a.ContentType, body) {
		body = stripTags(body)
	}
	return upload.CleanText(body, len(body))
}

func looksHTML(ctype, body string) bool {
	if !strings.Contains(body, "<") {
		return false
	}
	ct := strings.ToLower(ctype)
	return strings.Contains(ct, "html") || strings.Contains(ct, "xml") || strings.HasPrefix(strings.TrimSpace(body), "<")
}

// stripTags drops markup (and script/style content) and unescapes entities.
func stripTags(s string) string {
	var b strings.Builder
	lower := strings.ToLower(s)
	for i := 0; i < len(s); {
		if s[i] != '<' {
			j := strings.IndexByte(s[i:], '<')
			if j < 0 {
				j = len(s) - i
			}
			b.WriteString(html.UnescapeString(s[i : i+j]))
			i += j
			continue
		}
		end := strings.IndexByte(s[i:], '>')
		if end < 0 {
			break // an unterminated tag: the rest is markup
		}
		tag := lower[i : i+end]
		i += end + 1
		for _, skip := range []string{"script", "style"} {
			if strings.HasPrefix(tag, "<"+skip) {
				if k := strings.Index(lower[i:], "</"+skip); k >= 0 {
					i += k
				} else {
					i = len(s)
				}
			}
		}
		b.WriteByte(' ')
	}
	return b.String()
}
