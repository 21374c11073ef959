//go:build linux

package rawhttp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// deviceServer is rawServer with a device-sized receive window (when small)
// on the accepted connection.
func deviceServer(t *testing.T, small bool, serve func(c net.Conn)) string {
	t.Helper()
	lc := net.ListenConfig{}
	if small {
		lc.Control = testkit.SmallWindow
	}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readHead reads a request's head, up to the blank line.
func readHead(br *bufio.Reader) error {
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if l == "\r\n" {
			return nil
		}
	}
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 31\r\n\r\nUpdate successful, rebooting..."

// A device with lwIP's window that answers 200 as soon as it has the
// headers, with an image that fits the host's send buffer: not a success
// (it was, and progress said the whole image was done after ~8 KB had been
// acknowledged). The error names how much was acknowledged, and no progress
// event ever counted more than the device acknowledged.
func TestHTTPAnswerAfterHeadersIsEarly(t *testing.T) {
	for _, tc := range []struct {
		name string
		then func(c net.Conn, br *bufio.Reader, client <-chan struct{})
	}{
		{"then reads nothing", func(c net.Conn, br *bufio.Reader, client <-chan struct{}) { <-client }},
		{"then reads the rest slowly", func(c net.Conn, br *bufio.Reader, client <-chan struct{}) {
			buf := make([]byte, 1024)
			for {
				if _, err := br.Read(buf); err != nil {
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}},
		{"then closes", func(net.Conn, *bufio.Reader, <-chan struct{}) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := make(chan struct{})
			addr := deviceServer(t, true, func(c net.Conn) {
				br := bufio.NewReaderSize(c, 1024)
				if err := readHead(br); err != nil {
					return
				}
				io.WriteString(c, okAnswer)
				tc.then(c, br, client)
			})
			fw := &upload.Firmware{Data: make([]byte, 300<<10)}
			fw.Data[0] = 0xE9
			var ev httpEvents
			tr := &Transport{IdleTimeout: 5 * time.Second, ProgressInterval: 5 * time.Millisecond}
			err := tr.Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, ev.emit)
			close(client)
			if err == nil {
				t.Fatalf("an answer after the headers counted as success; events %+v", ev.all())
			}
			de := asDeviceError(t, err)
			if de.Class != upload.ClassEarlyAnswer || !errors.Is(err, upload.ErrEarlyAnswer) || de.Status != 200 {
				t.Fatalf("got class %s status %d (%v), want an early answer", de.Class, de.Status, err)
			}
			if !regexp.MustCompile(`acknowledged \d+ (B|KiB) of 300 KiB \(`).MatchString(de.Reason) {
				t.Errorf("reason does not name the bytes acknowledged: %q", de.Reason)
			}
			if de.Class.Retries(3) != 0 {
				t.Errorf("an early answer must not be resent blindly")
			}
			if de.Taken >= fw.Size() {
				t.Errorf("taken %d of %d", de.Taken, fw.Size())
			}
			for _, e := range ev.all() {
				if e.Done > de.Taken || e.Phase == upload.PhaseFinishing {
					t.Errorf("event %+v: more than the %d bytes acknowledged", e, de.Taken)
				}
			}
			t.Log(err)
		})
	}
}

// A device that reads every byte and then answers at once is a success,
// with or without a device-sized window, answering and closing at once or
// keeping the connection: no false early verdict (run with -count=50).
func TestHTTPAnswerAfterWholeBodyIsSuccess(t *testing.T) {
	for _, tc := range []struct {
		name    string
		small   bool
		size    int
		close   bool
		interim bool // a 100 Continue right after the headers
	}{
		{"device window", true, 300 << 10, false, false},
		{"device window, closes at once", true, 300 << 10, true, false},
		{"host window", false, 300 << 10, false, false},
		{"host window, closes at once", false, 300 << 10, true, false},
		{"one segment", true, 1000, true, false},
		{"one byte", false, 1, true, false},
		{"an early 100 Continue, then 200 after the body", true, 300 << 10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := &upload.Firmware{Data: make([]byte, tc.size)}
			fw.Data[0] = 0xE9
			addr := deviceServer(t, tc.small, func(c net.Conn) {
				br := bufio.NewReaderSize(c, 1024)
				if err := readHead(br); err != nil {
					return
				}
				if tc.interim {
					io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				}
				if _, err := io.CopyN(io.Discard, br, fw.Size()); err != nil {
					return
				}
				io.WriteString(c, okAnswer)
				if !tc.close {
					_, _ = io.Copy(io.Discard, c)
				}
			})
			var ev httpEvents
			tr := &Transport{ProgressInterval: 5 * time.Millisecond}
			if err := tr.Send(httpCtx(t), httpTarget(t, addr, ""), fw, upload.Credentials{}, ev.emit); err != nil {
				t.Fatal(err)
			}
			all := ev.all()
			if last := all[len(all)-1]; last.Phase != upload.PhaseFinishing || last.Done != fw.Size() {
				t.Fatalf("last event %+v", last)
			}
		})
	}
}
