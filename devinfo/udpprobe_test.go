package devinfo

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// deadPort returns a loopback port where neither TCP nor UDP listens.
func deadPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		p := closedPort(t)
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // taken on UDP: try another
		}
		u.Close()
		return p
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return 0
}

// espotaPort returns a loopback port that refuses TCP and has a UDP socket
// that reads and answers nothing, as ArduinoOTA does with an empty
// datagram, and the datagrams it got.
func espotaPort(t *testing.T) (int, func() [][]byte) {
	t.Helper()
	for range 20 {
		p := closedPort(t)
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		t.Cleanup(func() { u.Close() })
		var mu sync.Mutex
		var got [][]byte
		go func() {
			b := make([]byte, 2048)
			for {
				n, _, err := u.ReadFrom(b)
				if err != nil {
					return
				}
				mu.Lock()
				got = append(got, append([]byte{}, b[:n]...))
				mu.Unlock()
			}
		}()
		return p, func() [][]byte {
			time.Sleep(50 * time.Millisecond) // let a late datagram show up
			mu.Lock()
			defer mu.Unlock()
			return append([][]byte{}, got...)
		}
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return 0, nil
}

// TestQueryNothingListens: TCP refused and UDP port unreachable, with no
// mDNS record, is nothing at that address (issue 15 Build 2), the rule
// push's probe uses; info says so in one line.
func TestQueryNothingListens(t *testing.T) {
	port := deadPort(t)
	f, err := Query(context.Background(), Target{Host: "127.0.0.1", Port: port, WebPort: -1}, Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !f.NothingListens || f.Reachable || f.Unconfirmed || f.Protocol.Known() {
		t.Errorf("nothing_listens %v reachable %v unconfirmed %v protocol %+v (notes %q)", f.NothingListens, f.Reachable, f.Unconfirmed, f.Protocol, f.Notes)
	}
	if len(f.Notes) == 0 || !strings.HasPrefix(f.Notes[0], "nothing listens at 127.0.0.1:"+strconv.Itoa(port)+": ") ||
		!strings.Contains(f.VersionNote, "nothing listens") {
		t.Errorf("notes %q, version note %q", f.Notes, f.VersionNote)
	}
}
