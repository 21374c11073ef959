package core

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// lineEcho is a firmware with a plain-TCP server: it echoes lines until
// the client leaves.
type lineEcho struct{}

func (lineEcho) Traits() Traits {
	return Traits{Name: "test-line-echo", Platform: PlatformIDF, Protocol: "echo", OTAPort: 0}
}

func (lineEcho) Servers(e *Env) []Server {
	return []Server{{Name: "echo", Port: PortOTA, Stream: func(ctx context.Context, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || ctx.Err() != nil {
				return
			}
			c.Write([]byte(line))
		}
	}}}
}

func (lineEcho) Services(*Env) []mdnsd.Service { return nil }

func startEcho(t *testing.T) *Device {
	t.Helper()
	Register(lineEcho{})
	tm := FastTiming()
	tm.BootTime = 300 * time.Millisecond
	d, err := Start(context.Background(), Config{Personality: "test-line-echo", Timing: &tm, WebPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func echoOnce(c net.Conn, wait time.Duration) (string, error) {
	c.Write([]byte("hi\n"))
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 3)
	_, err := io.ReadFull(c, b)
	return string(b), err
}

// TestStreamOneAtATime: the second client waits in the backlog until the
// first one leaves.
func TestStreamOneAtATime(t *testing.T) {
	d := startEcho(t)
	c1, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if got, err := echoOnce(c1, 5*time.Second); err != nil || got != "hi\n" {
		t.Fatalf("first: %q %v", got, err)
	}
	c2, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := echoOnce(c2, 300*time.Millisecond); err == nil {
		t.Fatalf("second served while the first is: %q", got)
	}
	c1.Close()
	b := make([]byte, 3)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, b); err != nil || string(b) != "hi\n" {
		t.Fatalf("second after the first left: %q %v", b, err)
	}
}

// TestStreamReset: a reset leaves the open connection unanswered and
// unclosed; the device that comes back resets it.
func TestStreamReset(t *testing.T) {
	d := startEcho(t)
	c, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := echoOnce(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	d.Reboot()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.WaitState(ctx, func(s State) bool { return s.Phase == PhaseBooting }); err != nil {
		t.Fatal(err)
	}
	if _, err := echoOnce(c, 100*time.Millisecond); err == nil {
		t.Fatal("answered while booting")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("while booting: %v, want silence", err)
	}
	if _, err := d.WaitState(ctx, func(s State) bool { return s.Up && s.BootCount == 2 }); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the old connection still answers")
	}
	c2, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := echoOnce(c2, 5*time.Second); err != nil || got != "hi\n" {
		t.Fatalf("after the reset: %q %v", got, err)
	}
}
