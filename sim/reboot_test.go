package sim

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestRebootIsSilent: while a device reboots, connection attempts time out
// (neither refused nor accepted), an open connection just stops, the espota
// UDP port stays bound and says nothing; when the device is back the old
// connection is reset.
func TestRebootIsSilent(t *testing.T) {
	for _, p := range []Personality{OTS, Arduino} {
		t.Run(string(p), func(t *testing.T) {
			var ev simtest.EventLog
			cfg := simtest.Config(p)
			cfg.Timing.BootTime = 2 * time.Second // outlasts the checks on a loaded machine
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			var open net.Conn
			if p == OTS {
				var err error
				if open, err = net.DialTimeout("tcp", d.WebAddr(), 5*time.Second); err != nil {
					t.Fatal(err)
				}
				defer open.Close()
			}
			var udp *net.UDPConn
			if p == Arduino {
				c, err := net.Dial("udp", d.OTAAddr())
				if err != nil {
					t.Fatal(err)
				}
				udp = c.(*net.UDPConn)
				defer udp.Close()
			}
			d.Reboot()
			ev.WaitCount(t, EventReboot, 1)
			if p == OTS {
				for _, a := range []string{d.OTAAddr(), d.WebAddr()} {
					if got := simtest.ProbeTCP(a, 200*time.Millisecond); got != simtest.SilentOrRefused {
						t.Errorf("connect to %s while rebooting: %s, want %s", a, got, simtest.SilentOrRefused)
					}
				}
				// The open connection: a request gets nothing, no FIN, no RST.
				fmt.Fprintf(open, "GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
				open.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if n, err := open.Read(make([]byte, 64)); !simtest.IsTimeout(err) {
					t.Errorf("open connection while rebooting: %d bytes, %v; want silence", n, err)
				}
			}
			if p == Arduino {
				// A connected UDP socket learns of an unreachable port from
				// ICMP (ECONNREFUSED); a bound, silent port gives none.
				for i := 0; i < 3; i++ {
					fmt.Fprintf(udp, "0 1 100 %032x\n", 0)
					udp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					if n, err := udp.Read(make([]byte, 64)); !simtest.IsTimeout(err) {
						t.Fatalf("espota port while rebooting: %d bytes, %v; want silence", n, err)
					}
				}
			}
			if st := d.State(); st.Up {
				t.Fatalf("the checks outlasted the boot (%v); raise BootTime", cfg.Timing.BootTime)
			}
			if err := d.WaitUp(simtest.Ctx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if p == OTS {
				open.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := open.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("old connection after the boot: %v, want a reset", err)
				}
				if got := simtest.ProbeTCP(d.WebAddr(), 5*time.Second); got != "accepted" {
					t.Errorf("after the boot: %s", got)
				}
			}
		})
	}
}

// TestUptimeFromReset: uptime counts from the reset (esp_timer), so a
// device that just came back has been up at least its boot time.
func TestUptimeFromReset(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.BootTime = 300 * time.Millisecond
	d := simtest.Start(t, cfg)
	d.Reboot()
	st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s State) bool { return s.Up && s.BootCount == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Uptime < cfg.Timing.BootTime {
		t.Errorf("uptime %v right after the boot, want at least the %v boot time", st.Uptime, cfg.Timing.BootTime)
	}
}
