// Package testnet holds the loopback sockets the tests of detect, devinfo
// and upload share: a port where nothing listens (TCP refused, the UDP port
// unreachable), one whose UDP socket reads and answers nothing (as
// ArduinoOTA does with an empty datagram), and, on Linux, one whose
// connects time out (as with a rebooting device). Tests import it; nothing
// else does.
package testnet

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ClosedPort is a loopback TCP port nothing listens on (now): a connect
// to it is refused.
func ClosedPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// DeadPort is a loopback port where neither TCP nor UDP listens: TCP
// refuses, and a datagram draws ICMP port unreachable.
func DeadPort(t testing.TB) int {
	t.Helper()
	for range 20 {
		p := ClosedPort(t)
		u, err := net.ListenPacket("udp", addr(p))
		if err != nil {
			continue // taken on UDP: try another
		}
		u.Close()
		return p
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return 0
}

// DeadAddr is DeadPort as host:port.
func DeadAddr(t testing.TB) string { return addr(DeadPort(t)) }

// QuietUDP is a loopback host:port that refuses TCP and whose UDP socket
// reads and answers nothing, as ArduinoOTA does with an empty datagram;
// got returns the datagrams it read, after a pause that lets a late one
// arrive. The socket closes when the test ends.
func QuietUDP(t testing.TB) (hostPort string, got func() [][]byte) {
	t.Helper()
	for range 20 {
		a := addr(ClosedPort(t))
		u, err := net.ListenPacket("udp", a)
		if err != nil {
			continue
		}
		t.Cleanup(func() { u.Close() })
		var mu sync.Mutex
		var dgrams [][]byte
		go func() {
			b := make([]byte, 2048)
			for {
				n, _, err := u.ReadFrom(b)
				if err != nil {
					return
				}
				mu.Lock()
				dgrams = append(dgrams, append([]byte{}, b[:n]...))
				mu.Unlock()
			}
		}()
		return a, func() [][]byte {
			time.Sleep(50 * time.Millisecond) // let a late datagram show up
			mu.Lock()
			defer mu.Unlock()
			return append([][]byte{}, dgrams...)
		}
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return "", nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// PortOf is the port of a loopback host:port.
func PortOf(t testing.TB, hostPort string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
