package fakedev

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// lwipWindow is lwIP's default TCP receive window (CONFIG_LWIP_TCP_WND_DEFAULT).
const lwipWindow = 5760

// normalBacklog is the accept queue of a listener that is up.
const normalBacklog = 64

// port is one TCP listener of a fake device. It serves as a net.Listener
// (for http.Server) that can fall silent while the device restarts.
type port struct {
	tcp *net.TCPListener

	mu      sync.Mutex
	up      bool
	upCh    chan struct{} // closed while up; a fresh one while down
	closed  bool
	done    chan struct{}
	held    []net.Conn // connections that reached a silent device: never answered
	fillers []net.Conn // our own connects that fill the accept queue while silent
}

func listenPort() (*port, error) {
	lc := net.ListenConfig{Control: control}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &port{tcp: ln.(*net.TCPListener), up: true, upCh: make(chan struct{}), done: make(chan struct{})}
	close(p.upCh)
	_ = setBacklog(p.tcp, normalBacklog)
	return p, nil
}

func (p *port) portNumber() int { return p.tcp.Addr().(*net.TCPAddr).Port }

// Addr implements net.Listener.
func (p *port) Addr() net.Addr { return p.tcp.Addr() }

// Accept implements net.Listener: it hands out connections only while the
// device is up; one accepted as the device falls silent is held unanswered.
func (p *port) Accept() (net.Conn, error) {
	for {
		p.mu.Lock()
		up, ch, closed := p.up, p.upCh, p.closed
		p.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if !up {
			select {
			case <-ch:
			case <-p.done:
				return nil, net.ErrClosed
			}
			continue
		}
		c, err := p.tcp.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // woken by quiesce
			}
			return nil, err
		}
		p.mu.Lock()
		if !p.up || p.closed {
			p.held = append(p.held, c)
			down := !p.up && !p.closed
			p.mu.Unlock()
			if down {
				// The accept raced the deadline and took a queued
				// connection (perhaps the filler): fill the queue again.
				p.fill()
			}
			continue
		}
		p.mu.Unlock()
		return c, nil
	}
}

// hold keeps c open and unanswered until the device is up again (a request
// that reached a device as it restarted).
func (p *port) hold(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return
	}
	p.held = append(p.held, c)
}

// quiesce makes the listener silent: no more accepts, and on Linux an
// accept queue shrunk to one entry and filled by a connect of our own, so
// that the kernel drops every further SYN and connects time out.
func (p *port) quiesce() {
	p.mu.Lock()
	if !p.up || p.closed {
		p.mu.Unlock()
		return
	}
	p.up = false
	p.upCh = make(chan struct{})
	_ = p.tcp.SetDeadline(time.Unix(1, 0)) // wake a blocked Accept
	p.mu.Unlock()
	if !silentConnects {
		return
	}
	_ = setBacklog(p.tcp, 0)
	p.fill()
}

// fill queues a connect of our own while the listener is silent: one
// queued connection fills a backlog of 0. If a client got in first the
// dial times out, and the queue is full anyway. The timeout is generous:
// a loaded machine may be slow to complete the handshake.
func (p *port) fill() {
	if !silentConnects {
		return
	}
	c, err := net.DialTimeout("tcp4", p.tcp.Addr().String(), time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up || p.closed {
		c.Close()
		return
	}
	p.fillers = append(p.fillers, c)
}

// resume makes the listener answer again: whatever queued while it was
// silent is dropped (those connections belong to the previous boot).
func (p *port) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up || p.closed {
		return
	}
	_ = p.tcp.SetDeadline(time.Now())
	for {
		c, err := p.tcp.Accept()
		if err != nil {
			break
		}
		c.Close()
	}
	for _, c := range p.fillers {
		c.Close()
	}
	for _, c := range p.held {
		c.Close()
	}
	p.fillers, p.held = nil, nil
	_ = setBacklog(p.tcp, normalBacklog)
	_ = p.tcp.SetDeadline(time.Time{})
	p.up = true
	close(p.upCh)
}

func (p *port) isUp() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// Close implements net.Listener.
func (p *port) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	for _, c := range p.fillers {
		c.Close()
	}
	for _, c := range p.held {
		c.Close()
	}
	p.fillers, p.held = nil, nil
	p.mu.Unlock()
	return p.tcp.Close()
}
