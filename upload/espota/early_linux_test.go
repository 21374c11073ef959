//go:build linux

package espota

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// espotaDevice is an espota fake device with lwIP's receive window.
func espotaDevice(t *testing.T, script func(c net.Conn, size int)) upload.Target {
	t.Helper()
	return espotaFakeDeviceDialer(t, &net.Dialer{Control: testkit.SmallWindow}, script)
}

// chatter sends the device's last count every 50 ms until the connection
// ends, the way ESP32's ArduinoOTA resends it while it waits for data.
func chatter(c net.Conn) {
	for {
		if _, err := fmt.Fprint(c, 1460); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readPaced is readAllCounting at about 1 MB/s, faster than any flash.
func readPaced(c net.Conn, size int) {
	buf := make([]byte, 1460)
	for got := 0; got < size; {
		n, err := c.Read(buf[:min(len(buf), size-got)])
		if err != nil {
			return
		}
		got += n
		fmt.Fprint(c, n)
		time.Sleep(time.Millisecond)
	}
}

// espotaBounded runs Send under a generous deadline that the transport's
// own rules must beat.
func espotaBounded(t *testing.T, tr *Transport, tg upload.Target, fw *upload.Firmware) (error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := tr.Send(ctx, tg, fw, upload.Credentials{}, nil)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("only the test's deadline ended the upload: %v", err)
	}
	return err, time.Since(start)
}

func espotaTestImage(size int) *upload.Firmware {
	data := make([]byte, size)
	data[0] = 0xE9
	return upload.NewFirmware("fw.bin", data, false)
}

// An OK after 30 % of the image is not a success: the error names how much
// was sent. (It was a success.)
func TestEspotaEarlyOK(t *testing.T) {
	fw := espotaTestImage(300 << 10)
	for _, tc := range []struct {
		name string
		then func(c net.Conn, size int)
	}{
		{"then reads nothing", func(c net.Conn, size int) { time.Sleep(3 * time.Second) }},
		// At a device's pace: the reader notes the OK long before the rest
		// is taken.
		{"then reads the rest", func(c net.Conn, size int) { readPaced(c, size-size*3/10) }},
		// At once: the counts after the OK show it came early, however
		// late the host reads it.
		{"then reads the rest at once", func(c net.Conn, size int) { readAllCounting(c, size-size*3/10) }},
		{"then closes", func(net.Conn, int) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := espotaDevice(t, func(c net.Conn, size int) {
				readAllCounting(c, size*3/10)
				fmt.Fprint(c, "OK")
				tc.then(c, size)
			})
			tr := &Transport{ConnectTimeout: 10 * time.Second, AcceptTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second}
			ev := &espotaEvents{}
			err := tr.Send(context.Background(), tg, fw, upload.Credentials{}, ev.add)
			if err == nil {
				t.Fatal("an OK after 30 % of the image counted as success")
			}
			de := espotaWantClass(t, err, upload.ClassEarlyAnswer)
			if !errors.Is(err, upload.ErrEarlyAnswer) {
				t.Errorf("does not wrap ErrEarlyAnswer: %v", err)
			}
			if !strings.Contains(de.Reason, fmt.Sprintf("of %d bytes were sent and", fw.Size())) {
				t.Errorf("reason does not name the bytes sent: %q", de.Reason)
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

// A device that keeps sending counts but takes no data: the idle rule ends
// the upload (it ran until the caller's deadline).
func TestEspotaCountsWithoutData(t *testing.T) {
	fw := espotaTestImage(1 << 20)
	tg := espotaDevice(t, func(c net.Conn, size int) {
		readAllCounting(c, 8<<10) // past the lock-step start, then no more reads
		chatter(c)
	})
	tr := &Transport{ConnectTimeout: 10 * time.Second, AcceptTimeout: 10 * time.Second, IdleTimeout: 500 * time.Millisecond}
	err, took := espotaBounded(t, tr, tg, fw)
	de := espotaWantClass(t, err, upload.ClassTimeout)
	if de.Taken >= fw.Size() || errors.Is(err, ErrNoOK) || upload.MayHaveTakenAll(err, fw.Size()) {
		t.Errorf("taken %d of %d, %v", de.Taken, fw.Size(), err)
	}
	if !strings.Contains(de.Reason, "took no data") {
		t.Errorf("reason %q", de.Reason)
	}
	t.Logf("ended after %v: %v", took, err)
}

// A device that takes every byte, then keeps sending counts but never OK:
// the wait for OK is bounded, and the error says it may have the image.
func TestEspotaNoOKAfterEveryByte(t *testing.T) {
	fw := espotaTestImage(200 << 10)
	tg := espotaDevice(t, func(c net.Conn, size int) {
		readAllCounting(c, size)
		chatter(c)
	})
	tr := &Transport{ConnectTimeout: 10 * time.Second, AcceptTimeout: 10 * time.Second, IdleTimeout: 500 * time.Millisecond}
	err, took := espotaBounded(t, tr, tg, fw)
	de := espotaWantClass(t, err, upload.ClassTimeout)
	if !errors.Is(err, ErrNoOK) || de.Taken != fw.Size() || !upload.MayHaveTakenAll(err, fw.Size()) {
		t.Fatalf("taken %d of %d, %v", de.Taken, fw.Size(), err)
	}
	t.Logf("ended after %v: %v", took, err)
}

// A device that reads every byte and answers OK at once, with lwIP's
// window: no false early verdict (run with -count=50).
func TestEspotaOKAfterEveryByte(t *testing.T) {
	for _, size := range []int{1, 1000, 5000, 300 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			fw := espotaTestImage(size)
			tg := espotaDevice(t, func(c net.Conn, size int) {
				readAllCounting(c, size)
				fmt.Fprint(c, "OK")
			})
			tr := &Transport{ConnectTimeout: 10 * time.Second, AcceptTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second}
			ev := &espotaEvents{}
			if err := tr.Send(context.Background(), tg, fw, upload.Credentials{}, ev.add); err != nil {
				t.Fatal(err)
			}
			all := ev.all()
			if last := all[len(all)-1]; last.Phase != upload.PhaseFinishing || last.Done != fw.Size() {
				t.Fatalf("last event %+v", last)
			}
		})
	}
}
