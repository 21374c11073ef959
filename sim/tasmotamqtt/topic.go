package tasmotamqtt

import "strings"

// The MQTT prefixes (Prefix1..3 defaults).
const (
	prefixCmnd = "cmnd"
	prefixStat = "stat"
	prefixTele = "tele"
)

// topicOf is GetTopic_P: the FullTopic pattern with %prefix%, %topic%,
// %hostname% and %id% filled, '#' dropped, "//" made "/", a trailing '/'
// added; a cmnd topic whose pattern has no %prefix% gets "/%prefix%"
// appended first. subtopic follows ("" for the subscription base).
func topicOf(pattern, prefix, topic, hostname, id, subtopic string) string {
	p := pattern
	if prefix == prefixCmnd && !strings.Contains(p, "%prefix%") {
		p = strings.TrimRight(p, "/") + "/%prefix%"
	}
	p = strings.NewReplacer("%prefix%", prefix, "%topic%", topic, "%hostname%", hostname, "%id%", id, "#", "").Replace(p)
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p + subtopic
}
