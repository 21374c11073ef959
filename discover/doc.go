// Package discover finds devices by mDNS / DNS-SD (RFC 6762, RFC 6763) and
// merges them with the inventory into the set of targets a command acts on.
// It returns data and prints nothing.
//
// The browser is written on github.com/miekg/dns (docs/discovery.md has the
// measurements against grandcat/zeroconf and pion/mdns that chose it):
//
//   - one socket per interface and address family (IPv4 224.0.0.251, IPv6
//     ff02::fb), joined, pinned (IP_MULTICAST_IF) and, on Linux, bound to
//     that interface, because a shared socket receives nothing on Windows;
//   - records are cached by name and type with RFC 6762 semantics (TTL,
//     cache-flush, goodbye = delete one second later), so PTR, SRV, TXT and
//     address records merge whatever packet they arrive in;
//   - the browse query repeats after 1 s, then at doubling intervals, with
//     known answers (§7.1); what an instance lacks (SRV, TXT, addresses) is
//     asked for directly;
//   - while watching, the SRV, TXT and address records of each device are
//     refreshed at 80, 85, 90 and 95 % of their TTL (§5.2); a device is
//     removed when its SRV or all its addresses expire or are said goodbye
//     to. ESP-IDF gives PTR and TXT 4500 s and SRV and A 120 s, and sends no
//     goodbye on reboot, so a silent device goes within about two minutes.
package discover
