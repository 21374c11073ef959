package post

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/buildinfo"
	"github.com/ots-ota/ots-ota/upload"
)

// HostPort is where to connect (host:port, port def when 0) and the Host
// header for it: the host, bracketed when IPv6, with ":port" unless the
// port is 80.
func HostPort(host string, port, def int) (addr, hostHeader string) {
	if port == 0 {
		port = def
	}
	h := host
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		h = "[" + h + "]"
	}
	addr = h + ":" + strconv.Itoa(port)
	if port == 80 {
		return addr, h
	}
	return addr, addr
}

// CheckPath refuses an upload path that is no absolute URL path, or that
// holds what cannot stand in a request line.
func CheckPath(path string) error {
	if path == "" || path[0] != '/' || strings.ContainsFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return &upload.DeviceError{Class: upload.ClassRejected, Reason: fmt.Sprintf("upload path %q is not an absolute URL path", upload.CleanText(path, 80))}
	}
	return nil
}

// Head is a request line and its headers, through the blank line: Host
// and User-Agent first, then headers ("Name: value", empty ones left
// out), then Connection: close.
func Head(method, target, host string, headers ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	fmt.Fprintf(&b, "User-Agent: ots-ota/%s\r\n", upload.CleanText(buildinfo.Version, 40))
	for _, h := range headers {
		if h != "" {
			b.WriteString(h + "\r\n")
		}
	}
	b.WriteString("Connection: close\r\n\r\n")
	return []byte(b.String())
}

// Basic is the Authorization header for HTTP Basic with cred's user and
// password, "" when cred names no user (the Arduino web servers take a
// user and a password, never a token).
func Basic(cred upload.Credentials) (string, error) {
	if cred.User == "" {
		return "", nil
	}
	if strings.ContainsFunc(cred.User+cred.Password.Reveal(), func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", &upload.DeviceError{Class: upload.ClassAuth, Reason: "the user name or password contains a control character (a line break?) and cannot be sent in an HTTP header"}
	}
	return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(cred.User+":"+cred.Password.Reveal())), nil
}

// Redactor hides what a device may echo of cred (and its encodings) in
// its words, before they are cut to length.
func Redactor(cred upload.Credentials) func(string) string {
	var r auth.Redactor
	r.Add(cred.Token)
	r.AddBasic(cred.User, cred.Password)
	return r.Redact
}
