package arduino

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// parserSketch is a test firmware whose routes report what the parsers
// handed their callbacks: POST /sync (the sync servers' ReadBody) and POST
// /async (ReadAsync), as one line per call.
type parserSketch struct{}

const parserSketchName core.Personality = "arduino-parser-test"

func (parserSketch) Traits() core.Traits {
	return core.Traits{Name: parserSketchName, Platform: core.PlatformArduinoESP32, BothCores: true, Protocol: "http", OTAPort: 80}
}

func (parserSketch) Services(*core.Env) []mdnsd.Service { return nil }

func (parserSketch) Servers(e *core.Env) []core.Server {
	kind := WebServer
	if e.Platform() == core.PlatformESP8266 {
		kind = ESP8266WebServer
	}
	w := NewWeb(kind, e)
	return []core.Server{w.Server([]core.Route{
		{Method: "POST", Path: "/sync", Handle: func(r *core.Request) error {
			var log []string
			var data bytes.Buffer
			ok := w.ReadBody(r, func(ph Phase, p *Part, b []byte) error {
				switch ph {
				case PhaseStart:
					log = append(log, fmt.Sprintf("start %s|%s|%s", p.Name, p.Filename, p.Type))
				case PhaseWrite:
					log = append(log, fmt.Sprintf("write %d", len(b)))
					data.Write(b)
				case PhaseEnd:
					log = append(log, "end")
				case PhaseAborted:
					log = append(log, "aborted")
				}
				return nil
			})
			if !ok {
				return core.ErrClose
			}
			return w.Reply(r, 200, TypePlain, strings.Join(log, ";")+"\n"+data.String())
		}},
		{Method: "POST", Path: "/async", Handle: func(r *core.Request) error {
			var log []string
			var data bytes.Buffer
			ReadAsync(r, func(p *Part, b []byte, final bool) error {
				log = append(log, fmt.Sprintf("%s|%s|%s %d %v", p.Name, p.Filename, p.Type, len(b), final))
				data.Write(b)
				return nil
			})
			return w.Reply(r, 200, TypePlain, strings.Join(log, ";")+"\n"+data.String())
		}},
	})}
}

func TestMain(m *testing.M) { simtest.Main(m, parserSketch{}) }

const crlf = "\r\n"

func part(headers ...string) string { return strings.Join(headers, crlf) + crlf + crlf }

// TestSyncParser: the sync servers' multipart rules.
func TestSyncParser(t *testing.T) {
	// Pieces of the boundary in the data, never all of it.
	payload := "\xe9abc\r\n--X not the end\r\n-\r\n--\rdata\r"
	cd := `Content-Disposition: form-data; name="firmware"; filename="fw.bin"`
	cases := []struct {
		name, body string
		want       string // the callbacks; "" = dropped without an answer, "-" = none
		data       string
	}{
		{"curl -F", "--XY\r\n" + part(cd, "Content-Type: application/octet-stream") + payload + "\r\n--XY--\r\n",
			"start firmware|fw.bin|application/octet-stream;write 34;end", payload},
		{"no Content-Type", "--XY\r\n" + part(cd) + payload + "\r\n--XY--\r\n",
			"start firmware|fw.bin|text/plain;write 34;end", payload},
		{"another part header goes into the data", "--XY\r\n" + part(cd, "Content-Transfer-Encoding: binary") + payload + "\r\n--XY--\r\n",
			"start firmware|fw.bin|text/plain;write 36;end", "\r\n" + payload},
		{"a field without filename is no file", "--XY\r\n" + part(`Content-Disposition: form-data; name="firmware"`) + "\xe9abc\r\n--XY--\r\n",
			"-", ""},
		{"a field before the file", "--XY\r\n" + part(`Content-Disposition: form-data; name="MD5"`) + "0123\r\n--XY\r\n" +
			part(cd, "Content-Type: application/octet-stream") + payload + "\r\n--XY--\r\n",
			"start firmware|fw.bin|application/octet-stream;write 34;end", payload},
		// The parser skips up to two empty reads before the boundary line,
		// but the '\n' of an empty line stays in the next one.
		{"an empty line first", "\r\n--XY\r\n" + part(cd) + "x\r\n--XY--\r\n", "", ""},
		{"a preamble", "junk\r\n--XY\r\n" + part(cd) + "x\r\n--XY--\r\n", "", ""},
		{"cut off", "--XY\r\n" + part(cd) + "xyz", "", ""},
	}
	for _, chip := range []string{"", "esp8266"} {
		for _, c := range cases {
			t.Run(chip+"/"+c.name, func(t *testing.T) {
				cfg := simtest.Config(parserSketchName)
				cfg.Chip = chip
				d := simtest.Start(t, cfg)
				r := simtest.RawPost(t, d.OTAAddr(), "POST", "/sync", map[string]string{"Content-Type": `multipart/form-data; boundary="XY"`}, []byte(c.body))
				if c.want == "" {
					if r.Status != 0 {
						t.Fatalf("answered %d %q, want nothing", r.Status, r.Body)
					}
					return
				}
				got, data, _ := strings.Cut(r.Body, "\n")
				if c.want == "-" {
					c.want = ""
				}
				if r.Status != 200 || got != c.want || data != c.data {
					t.Errorf("got %d %q %q, want %q %q", r.Status, got, data, c.want, c.data)
				}
			})
		}
	}
}

// TestSyncBuffers: file data reaches the callback in HTTP_UPLOAD_BUFLEN
// pieces (2048 on ESP8266, 1436 on arduino-esp32), the rest last; a client
// gone mid-file is PhaseAborted.
func TestSyncBuffers(t *testing.T) {
	data := strings.Repeat("0123456789", 500) // 5000 bytes
	body := "--XY\r\n" + part(`Content-Disposition: form-data; name="f"; filename="a"`) + data + "\r\n--XY--\r\n"
	for chip, want := range map[string]string{"": "write 1436;write 1436;write 1436;write 692", "esp8266": "write 2048;write 2048;write 904"} {
		cfg := simtest.Config(parserSketchName)
		cfg.Chip = chip
		d := simtest.Start(t, cfg)
		r := simtest.RawPost(t, d.OTAAddr(), "POST", "/sync", map[string]string{"Content-Type": "multipart/form-data; boundary=XY"}, []byte(body))
		got, _, _ := strings.Cut(r.Body, "\n")
		if got != "start f|a|text/plain;"+want+";end" {
			t.Errorf("chip %q: %q", chip, got)
		}
	}
	// Aborted: the client sends half and closes.
	cfg := simtest.Config(parserSketchName)
	var ev simtest.EventLog
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	c, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /sync HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=XY\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:100])
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := c.Read(make([]byte, 1))
	c.Close()
	if n != 0 {
		t.Errorf("a cut-off upload was answered")
	}
}

// TestAsyncParser: ESPAsyncWebServer's rules: a part is a file with a
// filename= or a Content-Type, data comes in 1460-byte buffers with a final
// call, and a body that does not start with the boundary is ignored (the
// handler still answers).
func TestAsyncParser(t *testing.T) {
	big := strings.Repeat("x", 3000)
	cases := []struct {
		name, body, want string
	}{
		{"curl -F", "--XY\r\n" + part(`Content-Disposition: form-data; name="file"; filename="fw.bin"`, "Content-Type: application/octet-stream") + big + "\r\n--XY--\r\n",
			"file|fw.bin|application/octet-stream 1460 false;file|fw.bin|application/octet-stream 1460 false;file|fw.bin|application/octet-stream 80 true"},
		{"Content-Type makes a file", "--XY\r\n" + part(`Content-Disposition: form-data; name="file"`, "Content-Type: a/b") + "abc\r\n--XY--\r\n",
			"file||a/b 3 true"},
		{"a plain field is none", "--XY\r\n" + part(`Content-Disposition: form-data; name="MD5"`) + "abc\r\n--XY--\r\n", ""},
		{"a preamble", "junk\r\n--XY\r\n" + part(`Content-Disposition: form-data; name="file"; filename="a"`) + "abc\r\n--XY--\r\n", ""},
	}
	d := simtest.Start(t, simtest.Config(parserSketchName))
	for _, c := range cases {
		r := simtest.RawPost(t, d.OTAAddr(), "POST", "/async", map[string]string{"Content-Type": "multipart/form-data; boundary=XY"}, []byte(c.body))
		got, _, _ := strings.Cut(r.Body, "\n")
		if r.Status != 200 || got != c.want {
			t.Errorf("%s: %d %q, want %q", c.name, r.Status, got, c.want)
		}
	}
}
