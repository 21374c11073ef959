package core

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// streamd is a plain TCP server (Server.Stream): one connection at a time,
// the next one accepted only when the handler returned, as a firmware that
// polls accept() from its main loop and then blocks in the transfer does.
type streamd struct {
	d      *Device
	name   string
	handle func(context.Context, net.Conn)
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	busy   sync.Mutex // held while a connection is served, across refuse faults too
	mu     sync.Mutex
	ln     *net.TCPListener
	conn   net.Conn   // the connection being served
	silent bool       // stopping for a reset: the connection is left open
	left   []net.Conn // what a reset left behind
}

func newStreamd(d *Device, def Server, ln *net.TCPListener) *streamd {
	ctx, cancel := context.WithCancel(d.ctx)
	return &streamd{d: d, name: def.Name, handle: def.Stream, log: d.log.With("server", def.Name),
		ctx: ctx, cancel: cancel, ln: ln}
}

func (s *streamd) start() {
	s.wg.Add(1)
	go s.acceptLoop(s.ln)
}

// close stops the server and waits for its handler; like httpd.close, a
// reset (silent) closes nothing and returns the open connection untouched.
func (s *streamd) close(silent bool) []net.Conn {
	s.mu.Lock()
	s.silent = silent
	s.cancel()
	if silent {
		_ = s.ln.SetDeadline(aLongTimeAgo)
	} else {
		s.ln.Close()
	}
	if c := s.conn; c != nil {
		if silent {
			_ = c.SetDeadline(aLongTimeAgo)
		} else {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	if silent {
		_ = s.ln.SetDeadline(time.Time{})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	left := s.left
	s.left = nil
	return left
}

// closeListener stops accepting; the connection being served goes on (refuse fault).
func (s *streamd) closeListener() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ln.Close()
}

// reopen accepts again on ln after closeListener.
func (s *streamd) reopen(ln *net.TCPListener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		ln.Close()
		return
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop(ln)
}

func (s *streamd) acceptLoop(ln *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("accept", "err", err)
			if !Sleep(s.ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		if !s.serve(c) {
			return
		}
	}
}

// dropLocked ends a connection: closed, or left behind during a reset. s.mu is held.
func (s *streamd) dropLocked(c net.Conn) {
	if s.silent {
		s.left = append(s.left, c)
		return
	}
	c.Close()
}

// serve runs the handler on c; false when the server is stopping.
func (s *streamd) serve(c net.Conn) bool {
	s.busy.Lock()
	defer s.busy.Unlock()
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.dropLocked(c)
		s.mu.Unlock()
		return false
	}
	s.conn = c
	s.mu.Unlock()
	s.handle(s.ctx, c)
	s.mu.Lock()
	s.conn = nil
	s.dropLocked(c)
	s.mu.Unlock()
	return true
}
