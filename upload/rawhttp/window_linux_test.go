//go:build linux

package rawhttp

import (
	"bufio"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// A device-sized TCP window (lwIP's 5760 bytes) and a handler that erases
// before it reads: every progress event before the erase ends says erasing
// with at most the window taken, and the bar only moves after it.
func TestHTTPEraseStallWithDeviceWindow(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 5760) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var ev httpEvents
	const erase = 400 * time.Millisecond
	fw := &upload.Firmware{Data: make([]byte, 512<<10)}
	fw.Data[0] = 0xE9
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 1024)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == "\r\n" {
				break
			}
		}
		time.Sleep(erase)                                                 // esp_ota_begin erases the slot
		ev.emit(upload.Event{Phase: "marker", Message: "erase finished"}) // in the same log, in order
		buf := make([]byte, 1024)
		for n := int64(0); n < fw.Size(); {
			k, err := br.Read(buf)
			if err != nil {
				return
			}
			n += int64(k)
			time.Sleep(200 * time.Microsecond) // the flash's pace
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 31\r\n\r\nUpdate successful, rebooting...")
	}()
	tr := &Transport{ProgressInterval: 10 * time.Millisecond}
	if err := tr.Send(httpCtx(t), httpTarget(t, ln.Addr().String(), ""), fw, upload.Credentials{}, ev.emit); err != nil {
		t.Fatal(err)
	}
	<-served
	all := ev.all()
	marker, erasing := -1, 0
	for i, e := range all {
		if e.Phase == "marker" {
			marker = i
			break
		}
		if e.Phase != upload.PhaseConnecting && e.Phase != upload.PhaseErasing {
			t.Fatalf("event %d before the erase ended: %+v", i, e)
		}
		if e.Phase == upload.PhaseErasing {
			erasing++
			if e.Done > eraseWindow {
				t.Fatalf("erasing with %d bytes taken, more than a device window: %+v", e.Done, e)
			}
		}
	}
	if marker < 0 || erasing == 0 {
		t.Fatalf("no erasing event before the erase ended: %+v", all)
	}
	var sawUploading bool
	for _, e := range all[marker+1:] {
		sawUploading = sawUploading || e.Phase == upload.PhaseUploading
	}
	if last := all[len(all)-1]; !sawUploading || last.Phase != upload.PhaseFinishing || last.Done != fw.Size() {
		t.Fatalf("after the erase: %+v", all[marker+1:])
	}
}
