package fakedev

import (
	"io"
	"log"
	"net/http"
	"sync"
	"time"
)

// serve runs an http.Server for h on p until it is closed; wg counts its
// goroutine. Keep-alives are off: each request is a connection of its own,
// as the devices' small web servers answer.
func serve(p *port, h http.Handler, wg *sync.WaitGroup) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	srv.SetKeepAlivesEnabled(false)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(p)
	}()
	return srv
}

// holdIfDown holds a request that reached the device as it restarted: it
// goes unanswered, as on a chip that just stopped. True when the request is
// taken.
func (p *port) holdIfDown(w http.ResponseWriter) bool {
	if p.isUp() {
		return false
	}
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			p.hold(c)
			return true
		}
	}
	return false
}

// webServer is a fake's one web server on its own loopback port.
type webServer struct {
	p   *port
	srv *http.Server
}

// listen opens the port and serves h on it.
func (s *webServer) listen(h http.Handler, wg *sync.WaitGroup) error {
	var err error
	if s.p, err = listenPort(); err != nil {
		return err
	}
	s.srv = serve(s.p, h, wg)
	return nil
}

// Host is the device's address.
func (s *webServer) Host() string { return "127.0.0.1" }

// Port is its web server's port (80 on a real one).
func (s *webServer) Port() int { return s.p.portNumber() }

// shut closes the server and its port; the caller then waits for wg.
func (s *webServer) shut() {
	_ = s.srv.Close()
	s.p.Close()
}

// closeWith stops the device once: release frees what it holds, then its
// goroutines are waited for. A second call does nothing.
func (l *life) closeWith(release func()) error {
	l.mu.Lock()
	if !l.stopLocked() {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	release()
	l.wg.Wait()
	return nil
}
