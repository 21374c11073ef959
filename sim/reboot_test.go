package sim

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestNothingServedAfterSuccess: a request queued behind a successful
// upload is never served; the handler restarts the chip itself. 20 runs,
// never a second 200 and never a second upload_started.
func TestNothingServedAfterSuccess(t *testing.T) {
	var ev eventLog
	cfg := testConfig(Seed)
	cfg.Extensions = true
	cfg.Timing.RebootDelayMin = 100 * time.Millisecond
	cfg.Timing.RebootDelayMax = 100 * time.Millisecond
	cfg.OnEvent = ev.add
	d := startDevice(t, cfg)
	for i := 0; i < 20; i++ {
		version := fmt.Sprintf("1.0.%d", 100+i)
		finished := ev.count(EventUploadFinished)
		first := make(chan reply, 1)
		go func() { first <- rawPost(t, d.OTAAddr(), "POST", "/update", nil, testImage(t, version)) }()
		ev.waitCount(t, EventUploadFinished, finished+1)
		// Queued while the handler waits to restart: a second upload, or a
		// status request.
		var second reply
		if i%2 == 0 {
			second = rawPost(t, d.OTAAddr(), "POST", "/update", nil, testImage(t, "9.9.9"))
		} else {
			second = rawPost(t, d.OTAAddr(), "GET", "/ota/status", nil, nil)
		}
		if r := <-first; r.status != 200 {
			t.Fatalf("run %d: first upload %d %q", i, r.status, r.body)
		}
		if second.status != 0 {
			t.Fatalf("run %d: the queued request was served: %d %q", i, second.status, second.body)
		}
		if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), version); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if n := ev.count(EventUploadStarted); n != 20 {
		t.Errorf("%d uploads started, want 20", n)
	}
}

// TestEspotaSilentAfterOK: ArduinoOTA restarts the chip right after the
// final OK, so an invitation sent then is never answered (not even once the
// device is back: the reboot lost it) and no second upload starts.
func TestEspotaSilentAfterOK(t *testing.T) {
	for _, p := range []Personality{Arduino, ESP8266} {
		t.Run(string(p), func(t *testing.T) {
			var ev eventLog
			cfg := testConfig(p)
			// ArduinoOTA's full 110 ms between the OK and the restart.
			cfg.Timing.RebootDelayMin = 110 * time.Millisecond
			cfg.Timing.RebootDelayMax = 110 * time.Millisecond
			cfg.OnEvent = ev.add
			d := startDevice(t, cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const runs = 2
			for i := 0; i < runs; i++ {
				version := fmt.Sprintf("1.0.%d", 100+i)
				res, err := espotaPush(t, d.OTAAddr(), testImage(t, version), "")
				if err != nil || res.final != "OK" {
					t.Fatalf("run %d: %+v %v", i, res, err)
				}
				u, err := net.Dial("udp", d.OTAAddr())
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(u, "0 %d 100 %s\n", ln.Addr().(*net.TCPAddr).Port, md5hex(make([]byte, 100)))
				u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := u.Read(make([]byte, 64))
				u.Close()
				if !isTimeout(err) {
					t.Fatalf("run %d: an invitation right after OK got %d bytes, %v; want silence", i, n, err)
				}
				if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), version); err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
			}
			if n := ev.count(EventUploadStarted); n != runs {
				t.Errorf("%d uploads started, want %d", n, runs)
			}
		})
	}
}

// TestRebootIsSilent: while a device reboots, connection attempts time out
// (neither refused nor accepted), an open connection just stops, the espota
// UDP port stays bound and says nothing; when the device is back the old
// connection is reset.
func TestRebootIsSilent(t *testing.T) {
	for _, p := range []Personality{OTS, Arduino} {
		t.Run(string(p), func(t *testing.T) {
			var ev eventLog
			cfg := testConfig(p)
			cfg.Timing.BootTime = 2 * time.Second // outlasts the checks on a loaded machine
			cfg.OnEvent = ev.add
			d := startDevice(t, cfg)
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
			ev.waitCount(t, EventReboot, 1)
			if p == OTS {
				for _, a := range []string{d.OTAAddr(), d.WebAddr()} {
					if got := probeTCP(a, 200*time.Millisecond); got != silentOrRefused {
						t.Errorf("connect to %s while rebooting: %s, want %s", a, got, silentOrRefused)
					}
				}
				// The open connection: a request gets nothing, no FIN, no RST.
				fmt.Fprintf(open, "GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
				open.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if n, err := open.Read(make([]byte, 64)); !isTimeout(err) {
					t.Errorf("open connection while rebooting: %d bytes, %v; want silence", n, err)
				}
			}
			if p == Arduino {
				// A connected UDP socket learns of an unreachable port from
				// ICMP (ECONNREFUSED); a bound, silent port gives none.
				for i := 0; i < 3; i++ {
					fmt.Fprintf(udp, "0 1 100 %032x\n", 0)
					udp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					if n, err := udp.Read(make([]byte, 64)); !isTimeout(err) {
						t.Fatalf("espota port while rebooting: %d bytes, %v; want silence", n, err)
					}
				}
			}
			if st := d.State(); st.Up {
				t.Fatalf("the checks outlasted the boot (%v); raise BootTime", cfg.Timing.BootTime)
			}
			if err := d.WaitUp(ctxFor(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			if p == OTS {
				open.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := open.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("old connection after the boot: %v, want a reset", err)
				}
				if got := probeTCP(d.WebAddr(), 5*time.Second); got != "accepted" {
					t.Errorf("after the boot: %s", got)
				}
			}
		})
	}
}

// TestUptimeFromReset: uptime counts from the reset (esp_timer), so a
// device that just came back has been up at least its boot time.
func TestUptimeFromReset(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Timing.BootTime = 300 * time.Millisecond
	d := startDevice(t, cfg)
	d.Reboot()
	st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return s.Up && s.BootCount == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Uptime < cfg.Timing.BootTime {
		t.Errorf("uptime %v right after the boot, want at least the %v boot time", st.Uptime, cfg.Timing.BootTime)
	}
}

// TestPowerLossIsSilent: power lost mid-upload leaves the client's
// connection quiet (its idle timeout must fire) until the device is back.
func TestPowerLossIsSilent(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Timing.BootTime = 300 * time.Millisecond
	cfg.Faults = []Fault{mustFault(t, "power-loss@50%")}
	d := startDevice(t, cfg)
	img := testImage(t, "1.0.1")
	c, err := net.DialTimeout("tcp", d.OTAAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(img))
	go c.Write(img)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 64))
	st := d.State()
	if !errors.Is(err, syscall.ECONNRESET) || st.BootCount < 2 || !st.Up {
		t.Errorf("read ended with %v at boot %d (up %v); want a reset only once the device is back", err, st.BootCount, st.Up)
	}
}
