// Package mdnsd is a small mDNS / DNS-SD responder (RFC 6762, RFC 6763) that
// advertises many simulated ESP32 devices from one process, the way the real
// firmware advertises itself: each Host has its own "<name>.local" address
// records and its service instances (for example "_ota._tcp" port 3232,
// "_http._tcp" port 80, "_arduino._tcp" with ArduinoOTA's TXT keys).
//
// # Network scope
//
// A Responder uses exactly one interface, Config.Interface, which is
// required; there is no "all interfaces" default, and the simulator passes
// the loopback interface (see LoopbackInterface). The responder never binds
// to, joins on, listens on or sends through anything but that interface:
//
//   - its one socket is UDP port 5353. Go binds a multicast address as the
//     port's wildcard address with SO_REUSEADDR (that is how the port is
//     shared with a system responder); on Linux the socket is also bound to
//     the interface with SO_BINDTODEVICE where the kernel permits it (Linux
//     ≥ 5.7, or CAP_NET_RAW);
//   - it joins 224.0.0.251 on that interface only, and on Linux turns
//     IP_MULTICAST_ALL off so it gets no group traffic that other sockets
//     joined on other interfaces;
//   - every packet that arrived on another interface is dropped unread (the
//     arrival interface comes from IP_PKTINFO / IP_RECVIF; on Windows, which
//     lacks them, only sources inside the interface's own prefixes are
//     accepted);
//   - outgoing multicast is pinned to the interface (IP_MULTICAST_IF), and
//     every packet also names it in IP_PKTINFO where the system supports it;
//   - unicast replies go only to the source of a query that arrived on the
//     interface, and only when that source lies in one of the interface's
//     prefixes (RFC 6762 §11) or, on a loopback interface, is 0.0.0.0, which
//     the kernel delivers locally (a client bound to 0.0.0.0 that multicasts
//     through lo has no source address; hashicorp/mdns is one).
//
// IPv4 only; AAAA records are served (over IPv4) for IPv6 host addresses.
//
// # Protocol
//
// Like a network of real devices, each simulated device answers in its own
// packets, sent from its own (first IPv4) address where the system allows
// choosing the source (on Linux 127.0.0.2… need no setup), so a browse of
// 250 devices yields 250 small packets, and clients that take one device per
// packet (hashicorp/mdns) see them all.
//
// The responder answers PTR queries for each service type and for
// "_services._dns-sd._udp.local.", SRV and TXT queries for instance names,
// A/AAAA queries for host names, reverse-mapping PTR queries, and ANY. PTR
// answers carry SRV, TXT and address records as additionals; SRV answers
// carry the address records. A device's answers that exceed 9000 bytes are
// split over several packets. It honours the QU bit (unicast reply), legacy
// unicast queries (source port other than 5353: per device one conventional
// reply to the source with the query's ID and question, without cache-flush
// bits but with the full TTLs, as ESP-IDF sends it (RFC 6762 §6.7 would cap
// them at 10 s), trimmed to 512 bytes or the querier's EDNS0 size, TC set only when answers
// had to go), and known-answer suppression. Answers go out at once, without
// the random 20–120 ms delay RFC 6762 §6 suggests for shared records, and
// without per-record rate limiting.
//
// A host added is probed and announced on ESP-IDF's schedule: three probes
// 250 ms apart starting 120–247 ms after Add (the first asking for unicast
// replies), during which it answers nothing, then three announcements one
// second apart. Remove and Close send goodbye records (TTL 0), as
// mdns_free or removing a service does; Withdraw removes a host silently,
// as a device that resets or loses power does. Names are unique within a
// responder; a name another responder on the link claims is resolved as
// ESP-IDF resolves it (conflict.go: the lower address yields and renames,
// "ots-sim-01" → "ots-sim-2"). Record TTLs are ESP-IDF's (PTR and TXT 4500 s, SRV
// and addresses 120 s) unless Config.TTL overrides them all.
package mdnsd
