package mdnsd

import (
	"log/slog"
	"net/netip"

	"github.com/miekg/dns"
)

// outPacket is one packed response and where it goes.
type outPacket struct {
	to   netip.AddrPort // zero: the mDNS multicast group
	from netip.Addr     // source address to use, if valid
	msg  []byte
}

// handle parses one received packet and returns the packets to send back.
// src is the sender; unicastDst says the packet was sent to a unicast
// address rather than the group. Anything that is not a well-formed standard
// query yields nothing.
func (z *zone) handle(pkt []byte, src netip.AddrPort, unicastDst bool, log *slog.Logger) []outPacket {
	var q dns.Msg
	if err := q.Unpack(pkt); err != nil {
		return nil
	}
	// RFC 6762 §18: ignore responses (our own multicast loops back), other
	// opcodes and non-zero rcodes.
	if q.Response || q.Opcode != dns.OpcodeQuery || q.Rcode != dns.RcodeSuccess || len(q.Question) == 0 {
		return nil
	}
	legacy := src.Port() != mdnsPort
	replies := z.respond(&q, legacy)
	if len(replies) == 0 {
		return nil
	}
	// Legacy and direct unicast queries get unicast replies (RFC 6762 §6.7,
	// §5.5); so do queries whose every question sets the QU bit (§5.4).
	var to netip.AddrPort
	if legacy || unicastDst || allQU(&q) {
		to = src
	}
	out := make([]outPacket, 0, len(replies))
	for _, r := range replies {
		b, err := r.msg.Pack()
		if err != nil {
			log.Warn("mdnsd: pack response", "err", err)
			continue
		}
		out = append(out, outPacket{to: to, from: r.from, msg: b})
	}
	return out
}

func allQU(q *dns.Msg) bool {
	for _, question := range q.Question {
		if question.Qclass&classUnicast == 0 {
			return false
		}
	}
	return true
}
