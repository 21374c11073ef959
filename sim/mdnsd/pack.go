package mdnsd

import "github.com/miekg/dns"

const (
	// maxPayload keeps a packet with its IPv4 and UDP headers within the
	// 9000 bytes RFC 6762 §17 allows.
	maxPayload = 9000 - 20 - 8
	headerLen  = 12
)

// split packs groups into as few mDNS response messages as it can, each at
// most limit bytes when packed. A group (an answer and its additionals) stays
// in one message; additionals are not repeated within a message, nor given
// when the same record is already an answer there. xf, when not nil, rewrites
// each record as it is placed (for goodbyes).
//
// Sizes are first estimated from uncompressed record lengths, which only
// overestimate; the real compressed length is computed only when the
// estimate crosses the limit, so packing n groups costs O(n) plus a few
// full Len calls per message.
func split(groups []group, limit int, xf func(dns.RR) dns.RR) []*dns.Msg {
	var (
		out     []*dns.Msg
		m       *dns.Msg
		inAns   map[dns.RR]bool
		inExtra map[dns.RR]bool
		est     int
		added   []dns.RR // records placed for the current group, for rollback
	)
	start := func() {
		m = newResponse()
		inAns = make(map[dns.RR]bool)
		inExtra = make(map[dns.RR]bool)
		est = headerLen
	}
	finish := func() {
		if m == nil || len(m.Answer) == 0 {
			return
		}
		extra := m.Extra[:0]
		for _, rr := range m.Extra {
			if !inAns[rr] {
				extra = append(extra, rr)
			}
		}
		m.Extra = extra
		if xf != nil {
			for i, rr := range m.Answer {
				m.Answer[i] = xf(rr)
			}
			for i, rr := range m.Extra {
				m.Extra[i] = xf(rr)
			}
		}
		out = append(out, m)
	}
	place := func(g group) int {
		added = added[:0]
		inc := 0
		if !inAns[g.ans] {
			inAns[g.ans] = true
			m.Answer = append(m.Answer, g.ans)
			added = append(added, g.ans)
			inc += dns.Len(g.ans)
		}
		for _, rr := range g.extra {
			if !inAns[rr] && !inExtra[rr] {
				inExtra[rr] = true
				m.Extra = append(m.Extra, rr)
				added = append(added, rr)
				inc += dns.Len(rr)
			}
		}
		return inc
	}
	unplace := func(nAns, nExtra int) {
		m.Answer = m.Answer[:nAns]
		m.Extra = m.Extra[:nExtra]
		for _, rr := range added {
			delete(inAns, rr)
			delete(inExtra, rr)
		}
	}

	for _, g := range groups {
		if m == nil {
			start()
		}
		nAns, nExtra := len(m.Answer), len(m.Extra)
		inc := place(g)
		if est+inc <= limit || nAns == 0 {
			// A lone oversized group still goes out rather than vanish; add
			// keeps every group far below the limit.
			est += inc
			continue
		}
		if l := m.Len(); l <= limit {
			est = l
			continue
		}
		unplace(nAns, nExtra)
		finish()
		start()
		est += place(g)
	}
	finish()
	return out
}
