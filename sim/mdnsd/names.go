package mdnsd

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/miekg/dns"
)

const (
	localSuffix = "local."
	// servicesName is the DNS-SD service type enumeration name (RFC 6763 §9).
	servicesName = "_services._dns-sd._udp.local."

	maxLabel    = 63   // RFC 1035 label limit
	maxTXTTotal = 1300 // RFC 6763 §6.2: keep TXT data small enough for one Ethernet packet
	maxTXTItem  = 255  // one length byte per string
	maxAddrs    = 16   // keeps one host's records far below one packet
)

// escapeLabel renders one raw label the way miekg/dns prints names it
// unpacked from the wire, so names we build and names from queries look alike.
func escapeLabel(label string) string {
	var b strings.Builder
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case c == '.' || c == ' ' || c == '\'' || c == '@' || c == ';' || c == '(' || c == ')' || c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// escapeTXT renders one raw TXT string in miekg/dns presentation form, where a
// backslash starts an escape.
func escapeTXT(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// nameKey maps a presentation-format name to a lookup key: its wire form with
// ASCII letters folded to lower case. Packing first makes escaped ("\ ",
// "\032") and literal spellings of the same name equal; DNS compares ASCII
// case-insensitively (RFC 6762 §16).
func nameKey(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return "", false
	}
	w := buf[:n]
	for i, c := range w {
		if 'A' <= c && c <= 'Z' {
			w[i] = c + ('a' - 'A')
		}
	}
	return string(w), true
}

// hostLabel validates a host name given without ".local" (a trailing
// ".local" or ".local." is tolerated) and returns the bare label.
func hostLabel(name string) (string, error) {
	l := trimLocal(name)
	if l == "" {
		return "", errors.New("empty host name")
	}
	if len(l) > maxLabel {
		return "", fmt.Errorf("host name %q longer than %d bytes", l, maxLabel)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		ok := c == '-' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return "", fmt.Errorf("host name %q: only letters, digits and '-' are allowed", l)
		}
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return "", fmt.Errorf("host name %q must not start or end with '-'", l)
	}
	return l, nil
}

// serviceType validates "_name._tcp" (or "_udp"; ".local." tolerated) and
// returns the canonical FQDN "_name._tcp.local.".
func serviceType(t string) (string, error) {
	s := trimLocal(t)
	name, proto, ok := strings.Cut(s, ".")
	if !ok || strings.Contains(proto, ".") {
		return "", fmt.Errorf("service type %q: want _name._tcp or _name._udp", t)
	}
	if p := strings.ToLower(proto); p != "_tcp" && p != "_udp" {
		return "", fmt.Errorf("service type %q: protocol must be _tcp or _udp", t)
	}
	// RFC 6335 §5.1: 1–15 characters after the underscore.
	if len(name) < 2 || len(name) > 16 || name[0] != '_' {
		return "", fmt.Errorf("service type %q: name must be '_' plus 1 to 15 characters", t)
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		ok := c == '-' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return "", fmt.Errorf("service type %q: only letters, digits and '-' are allowed", t)
		}
	}
	return name + "." + proto + "." + localSuffix, nil
}

// checkInstance validates a DNS-SD instance name (RFC 6763 §4.1.1: any UTF-8
// but control characters, at most 63 bytes).
func checkInstance(s string) error {
	if s == "" {
		return errors.New("empty instance name")
	}
	if len(s) > maxLabel {
		return fmt.Errorf("instance name %q longer than %d bytes", s, maxLabel)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("instance name %q is not valid UTF-8", s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("instance name %q contains a control character", s)
		}
	}
	return nil
}

// txtStrings validates TXT items and returns them escaped for miekg/dns.
// No items gives the single empty string RFC 6763 §6.1 requires.
func txtStrings(items []string) ([]string, error) {
	if len(items) == 0 {
		return []string{""}, nil
	}
	out := make([]string, 0, len(items))
	total := 0
	for _, it := range items {
		switch {
		case it == "":
			return nil, errors.New("empty TXT item")
		case it[0] == '=':
			return nil, fmt.Errorf("TXT item %q has an empty key", it)
		case len(it) > maxTXTItem:
			return nil, fmt.Errorf("TXT item %.20q... longer than %d bytes", it, maxTXTItem)
		}
		total += 1 + len(it)
		out = append(out, escapeTXT(it))
	}
	if total > maxTXTTotal {
		return nil, fmt.Errorf("TXT data is %d bytes, more than %d", total, maxTXTTotal)
	}
	return out, nil
}

// trimLocal drops a trailing ".local" or ".local." (any case).
func trimLocal(s string) string {
	s = strings.TrimSuffix(s, ".")
	if len(s) >= len(".local") && strings.EqualFold(s[len(s)-len(".local"):], ".local") {
		s = s[:len(s)-len(".local")]
	}
	return s
}
