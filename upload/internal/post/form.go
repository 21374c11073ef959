package post

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
)

// Form is the framing of a multipart/form-data body with one file part:
// Prefix, then the file's own bytes, then Suffix. The file is never copied
// into the body; its length is all the Content-Length needs.
type Form struct {
	// ContentType is the request's Content-Type. Arduino's WebServer takes
	// the boundary as everything after the header's first "=" (quotes
	// removed), so nothing follows it.
	ContentType string
	// Prefix is the opening boundary and the part's headers: a
	// Content-Disposition with name= and filename= (the device's parser
	// takes a part for a file only when it has a filename) and a
	// Content-Type, the one other part header that parser skips.
	Prefix []byte
	// Suffix ends the part and closes the body.
	Suffix []byte
}

// Size is the body's length for a file of n bytes.
func (f Form) Size(n int64) int64 { return int64(len(f.Prefix)) + n + int64(len(f.Suffix)) }

// NewForm frames data as the file of the one field named field, with the
// given file name (see FileName). The boundary is random and is checked
// absent from data: a device's parser ends the file at the first
// "\r\n--boundary" it meets.
func NewForm(data []byte, field, filename string) (Form, error) {
	if !formToken(field) || !formToken(filename) {
		return Form{}, errors.New("a form field or file name holds a character a device's form parser cannot take")
	}
	for range 4 {
		var rnd [16]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return Form{}, err
		}
		b := "ots-ota-" + hex.EncodeToString(rnd[:])
		if bytes.Contains(data, []byte("--"+b)) {
			continue
		}
		return Form{
			ContentType: "multipart/form-data; boundary=" + b,
			Prefix: []byte("--" + b + "\r\n" +
				`Content-Disposition: form-data; name="` + field + `"; filename="` + filename + "\"\r\n" +
				"Content-Type: application/octet-stream\r\n\r\n"),
			Suffix: []byte("\r\n--" + b + "--\r\n"),
		}, nil
	}
	return Form{}, errors.New("no multipart boundary absent from the image")
}

// formToken: printable ASCII with none of the characters Arduino's form
// parser reads as delimiters (it takes a name up to the next quote, and a
// second "=" marks a file).
func formToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"=;\`, c) >= 0 {
			return false
		}
	}
	return true
}

// FileName is the name a form part carries for the file name: its base
// name, with every character a device's form parser could misread (or a
// page could not print) replaced by "_"; def when nothing is left. The
// devices ignore it; a browser would send the file's own name.
func FileName(name, def string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	b := []byte(name)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-+()", c) >= 0) {
			b[i] = '_'
		}
	}
	if s := strings.Trim(string(b), "_"); s != "" && s != "." && s != ".." {
		return string(b)
	}
	return def
}
