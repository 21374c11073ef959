//go:build linux

package mdnsd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestConflictRenames: two responders (two sim processes) that claim the
// same host name, at the same time or one after the other, end up with two
// names, as ESP-IDF devices do: the lower address yields and becomes
// "ots-sim-2" (review 68 #3). Withdraw still takes the name given to Add.
func TestConflictRenames(t *testing.T) {
	lo := multicastLoopback(t)
	for _, stagger := range []time.Duration{0, 1500 * time.Millisecond} {
		t.Run(stagger.String(), func(t *testing.T) {
			mc, ch := groupListener(t, lo)
			r1, stop1 := startResponder(t, lo)
			defer stop1()
			r2, stop2 := startResponder(t, lo)
			defer stop2()
			host := func(ip string) Host {
				return Host{Name: "ots-sim-01", Addrs: []netip.Addr{netip.MustParseAddr(ip)},
					Services: []Service{{Instance: "ots-sim-01", Type: "_arduino._tcp", Port: 3232}}}
			}
			if err := r1.Add(host("127.0.0.2")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(stagger)
			if err := r2.Add(host("127.0.0.30")); err != nil {
				t.Fatal(err)
			}
			answers := func(name string) []string {
				send(t, mc, query(q(name, dns.TypeA)), mdnsGroup())
				var got []string
				deadline := time.After(600 * time.Millisecond)
				for {
					select {
					case p := <-ch:
						for _, rr := range p.msg.Answer {
							if a, ok := rr.(*dns.A); ok && rr.Header().Name == name {
								got = append(got, a.A.String())
							}
						}
						continue
					case <-deadline:
					}
					return got
				}
			}
			// Probing, a rename, probing again and the first announcement
			// take about 3 s on an idle machine: ask until the names settle
			// rather than trusting a fixed sleep on a loaded one.
			only := func(got []string, ip string) bool { return len(got) == 1 && got[0] == ip }
			var got01, got2 []string
			for settle := time.Now().Add(20 * time.Second); ; {
				drain(ch, 100*time.Millisecond)
				got01, got2 = answers("ots-sim-01.local."), answers("ots-sim-2.local.")
				if only(got01, "127.0.0.30") && only(got2, "127.0.0.2") || time.Now().After(settle) {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if !only(got01, "127.0.0.30") {
				t.Errorf("ots-sim-01.local answered by %q, want 127.0.0.30 only", got01)
			}
			if !only(got2, "127.0.0.2") {
				t.Errorf("ots-sim-2.local answered by %q, want 127.0.0.2 only", got2)
			}
			if cur, renamed := r1.z.current("ots-sim-01"); cur != "ots-sim-2" || !renamed {
				t.Errorf("r1 holds %q (renamed %v)", cur, renamed)
			}
			r1.Withdraw("ots-sim-01")
			if len(r1.z.all()) != 0 {
				t.Errorf("Withdraw by the given name left %d hosts", len(r1.z.all()))
			}
		})
	}
}
