package tasmota

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DefaultFullTopic is Tasmota's default FullTopic.
const DefaultFullTopic = "%prefix%/%topic%/"

// The FullTopic tokens. A pattern names the device by exactly one of
// topicTokens (Tasmota fills %hostname% and %id% itself; here the
// device's key, rollout.Device.Topic, fills whichever the pattern holds).
const tokPrefix = "%prefix%"

var topicTokens = []string{"%topic%", "%hostname%", "%id%"}

// sentinel stands for the device's key while a pattern is turned into a
// filter and a matcher: no topic holds it.
const sentinel = "\x01"

// pattern is a checked FullTopic.
type pattern struct {
	raw   string
	token string // the device token it holds
}

// CheckFullTopic reports whether p can be used as a FullTopic here: it
// must name the device by one token (%topic%, %hostname% or %id%), and
// hold no MQTT wildcard besides Tasmota's "#" (which Tasmota drops).
func CheckFullTopic(p string) error {
	_, err := parsePattern(p)
	return err
}

func parsePattern(p string) (pattern, error) {
	if p == "" {
		p = DefaultFullTopic
	}
	var held []string
	for _, t := range topicTokens {
		if strings.Contains(p, t) {
			held = append(held, t)
		}
	}
	switch {
	case len(held) == 0:
		return pattern{}, fmt.Errorf("the FullTopic %q names no device (%%topic%%, %%hostname%% or %%id%%)", p)
	case len(held) > 1:
		return pattern{}, fmt.Errorf("the FullTopic %q names the device twice (%s): one key per device is known here", p, strings.Join(held, ", "))
	case strings.Contains(p, "+") || strings.ContainsRune(p, 0) || strings.Contains(p, sentinel):
		return pattern{}, fmt.Errorf("the FullTopic %q holds a character no topic may hold", p)
	}
	return pattern{raw: p, token: held[0]}, nil
}

// prefix indexes, as Tasmota's Prefix1..3.
const (
	prefCmnd = iota
	prefStat
	prefTele
)

// base is the topic up to the subtopic, as Tasmota's GetTopic_P builds it:
// a command pattern without %prefix% gets "/%prefix%" appended (so that a
// device never takes its own reports for commands), the tokens are
// replaced, "#" is dropped, "//" becomes "/" (once over, as Tasmota's
// String.replace), and a "/" ends it.
func (p pattern) base(prefix, device string) string {
	s := strings.ReplaceAll(p.raw, p.token, device)
	s = strings.ReplaceAll(s, tokPrefix, prefix)
	s = strings.ReplaceAll(s, "#", "")
	s = strings.ReplaceAll(s, "//", "/")
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s
}

// prefixes are the three prefixes in use.
type prefixes [3]string

func (o Options) prefixes() prefixes {
	p := prefixes{"cmnd", "stat", "tele"}
	for i, v := range []string{o.CmndPrefix, o.StatPrefix, o.TelePrefix} {
		if v != "" {
			p[i] = v
		}
	}
	return p
}

// topic is the whole topic of a device's subtopic under prefix index i.
func (p pattern) topic(pre prefixes, i int, device, sub string) string {
	raw := p.raw
	if i == prefCmnd && !strings.Contains(raw, tokPrefix) {
		raw += "/" + tokPrefix
	}
	q := pattern{raw: raw, token: p.token}
	return q.base(pre[i], device) + sub
}

// FullTopic is the topic a device with key device is told commands on
// (its cmnd topic, ending in "/"; append the command), by pattern ("" =
// DefaultFullTopic) and Tasmota's default prefixes.
func FullTopic(pat, device string) (string, error) {
	p, err := parsePattern(pat)
	if err != nil {
		return "", err
	}
	if err := checkKey(device); err != nil {
		return "", err
	}
	return p.topic(Options{}.prefixes(), prefCmnd, device, ""), nil
}

// checkKey refuses a device key no topic can carry and no single-level
// wildcard can match.
func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("a device with no MQTT topic")
	case strings.ContainsAny(k, "+#/\x00"+sentinel):
		return fmt.Errorf("the MQTT topic %q of a device holds \"/\", \"+\", \"#\" or NUL: give the device's %%topic%% alone", k)
	}
	return nil
}

// matcher matches the topics of one pattern, prefix and subtopic: filter
// is what to subscribe to, re takes the device's key out of a topic.
type matcher struct {
	filter string
	re     *regexp.Regexp
	groups int
}

// matcher builds the filter and the matcher of a subtopic of every device
// of the pattern: each level holding the device is "+", checked by re.
func (p pattern) matcher(pre prefixes, i int, sub string) matcher {
	t := p.topic(pre, i, sentinel, sub)
	levels := strings.Split(t, "/")
	for j, l := range levels {
		if strings.Contains(l, sentinel) {
			levels[j] = "+"
		}
	}
	parts := strings.Split(t, sentinel)
	for j := range parts {
		parts[j] = regexp.QuoteMeta(parts[j])
	}
	return matcher{
		filter: strings.Join(levels, "/"),
		re:     regexp.MustCompile("^" + strings.Join(parts, "([^/]+)") + "$"),
		groups: len(parts) - 1,
	}
}

// device returns the device's key in topic, ok false when topic is not
// this matcher's (every place of the key must hold the same text).
func (m matcher) device(topic string) (string, bool) {
	g := m.re.FindStringSubmatch(topic)
	if g == nil || m.groups == 0 {
		return "", false
	}
	for _, v := range g[2:] {
		if v != g[1] {
			return "", false
		}
	}
	return g[1], true
}
