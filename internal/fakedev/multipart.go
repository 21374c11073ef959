package fakedev

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// formSink receives what a multipart body carries, as the Arduino web
// servers hand it to an upload handler: a file part's start, its bytes in
// chunks, its end, or its abort when the connection broke.
type formSink struct {
	start func(name, filename string)
	write func(b []byte)
	end   func()
	abort func()
}

// errFormParse: the web server gives up on the request and drops the
// connection without an answer.
var errFormParse = errors.New("multipart body not parsed")

// formBoundary is the boundary as the sync web servers read it: the
// Content-Type must start with multipart/, and the boundary is whatever
// follows its first '=', quotes removed (research18.md §1.1).
func formBoundary(contentType string) (string, bool) {
	if !strings.HasPrefix(contentType, "multipart/") {
		return "", false
	}
	_, b, ok := strings.Cut(contentType, "=")
	b = strings.ReplaceAll(b, `"`, "")
	return b, ok && b != ""
}

// maxTextPart bounds a part that is not a file: the server reads it line
// by line into RAM.
const maxTextPart = 8 << 10

// parseForm reads a multipart body the way ESP8266WebServer and
// arduino-esp32's WebServer do (research18.md §1.1): the first line must be
// the boundary (two empty lines before it are tolerated); a part is a file
// only if its Content-Disposition has a second '=' (filename="…"); after
// Content-Disposition comes either Content-Type and one more line, or the
// empty line; with strict set, any other part header is a parse failure
// (ESPAsyncWebServer, strict false, skips other headers). chunk is the
// size the file's bytes are handed over in.
func parseForm(r io.Reader, boundary string, strict bool, chunk int, sink formSink) error {
	br := bufio.NewReaderSize(r, 4096)
	line := func() (string, error) {
		s, err := br.ReadString('\n')
		if err != nil {
			return "", errFormParse
		}
		return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r"), nil
	}
	dash := "--" + boundary
	first, err := line()
	for i := 0; err == nil && first == "" && i < 2; i++ {
		first, err = line()
	}
	if err != nil || first != dash {
		return errFormParse
	}
	for {
		cd, err := line()
		if err != nil || len(cd) <= 19 || !strings.EqualFold(cd[:19], "Content-Disposition") {
			return errFormParse
		}
		name, filename, isFile := disposition(cd)
		next, err := line()
		if err != nil {
			return err
		}
		switch {
		case strict && strings.HasPrefix(next, "Content-Type"):
			// The server skips the line after Content-Type, whatever it is.
			if _, err := line(); err != nil {
				return err
			}
		case strict && next != "":
			return errFormParse
		}
		for !strict && next != "" {
			if next, err = line(); err != nil {
				return err
			}
		}
		if !isFile {
			// Text lines up to the next boundary line.
			n := 0
			for {
				l, err := line()
				if err != nil {
					return err
				}
				if strings.HasPrefix(l, dash) {
					if strings.HasPrefix(l, dash+"--") {
						return nil
					}
					break
				}
				if n += len(l); n > maxTextPart {
					return errFormParse
				}
			}
			continue
		}
		sink.start(name, filename)
		last, left, err := fileBytes(br, "\r\n"+dash, chunk, sink.write)
		if err != nil {
			sink.abort()
			return errFormParse
		}
		sink.end()
		if last {
			return nil
		}
		if len(left) > 0 {
			br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(left), br), 4096)
		}
	}
}

// disposition reads a Content-Disposition line as the sync servers do:
// the name is what follows the first '=' and its quote up to the next
// quote; a second '=' makes the part a file.
func disposition(cd string) (name, filename string, isFile bool) {
	i := strings.IndexByte(cd, '=')
	if i < 0 {
		return "", "", false
	}
	rest := cd[i+1:]
	rest = strings.TrimPrefix(rest, `"`)
	name, rest, _ = strings.Cut(rest, `"`)
	j := strings.IndexByte(rest, '=')
	if j < 0 {
		return name, "", false
	}
	filename = strings.TrimPrefix(rest[j+1:], `"`)
	filename, _, _ = strings.Cut(filename, `"`)
	return name, filename, true
}

// fileBytes hands over a file part's bytes up to delim (CRLF and the
// boundary), in pieces of chunk bytes, and reads the rest of the boundary
// line: last reports the closing boundary; left is what was read past the
// boundary line.
func fileBytes(br *bufio.Reader, delim string, chunk int, write func([]byte)) (last bool, left []byte, err error) {
	d := []byte(delim)
	buf := make([]byte, 0, chunk+len(d))
	tmp := make([]byte, chunk)
	for {
		if i := bytes.Index(buf, d); i >= 0 {
			for b := buf[:i]; len(b) > 0; {
				n := min(chunk, len(b))
				write(b[:n])
				b = b[n:]
			}
			// What follows the boundary: "--" ends the body, CRLF starts
			// another part.
			rest := append([]byte(nil), buf[i+len(d):]...)
			tail := io.MultiReader(bytes.NewReader(rest), br)
			var two [2]byte
			if _, err := io.ReadFull(tail, two[:]); err != nil {
				return false, nil, err
			}
			switch string(two[:]) {
			case "--":
				return true, nil, nil
			case "\r\n":
				if len(rest) > 2 {
					return false, rest[2:], nil
				}
				return false, nil, nil
			}
			return false, nil, errFormParse
		}
		// Hand over all but what could be the start of the delimiter.
		if keep := len(d) - 1; len(buf) >= keep+chunk {
			n := len(buf) - keep
			for b := buf[:n]; len(b) > 0; {
				m := min(chunk, len(b))
				write(b[:m])
				b = b[m:]
			}
			buf = append(buf[:0], buf[n:]...)
		}
		n, err := br.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil && n == 0 {
			return false, nil, err
		}
	}
}
