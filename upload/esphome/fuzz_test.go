package esphome

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
)

// FuzzAnswers: whatever a device answers, the client ends (no panic, no
// hang), succeeds only after the device's 0x44 and 0x45, and sends no image
// byte before the device's 0x43.
func FuzzAnswers(f *testing.F) {
	f.Add([]byte{0x00, 0x02, 0x40, 0x41, 0x42, 0x43, 0x47, 0x44, 0x45})
	f.Add([]byte{0x00, 0x01, 0x48, 0x05, 0x41})
	f.Add([]byte{0x00, 0x02, 0x46, 0x02, '1', '2'})
	f.Add([]byte{0x00, 0x02, 0x48, 0x04})
	f.Add([]byte{0x94})
	img := testImage(3000)
	f.Fuzz(func(t *testing.T, answers []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Skip(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer c.Close()
			c.Write(answers)
			// Half-close: the device has said all it will say.
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			b, _ := io.ReadAll(c)
			got <- b
		}()
		tr := &Transport{HandshakeTimeout: 300 * time.Millisecond, DataTimeout: 300 * time.Millisecond, ProgressInterval: 10 * time.Millisecond}
		fw := upload.NewFirmware("fw.bin", img, false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = tr.Send(ctx, upload.Target{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}, fw, upload.Credentials{Password: auth.NewSecret("pw")}, nil)
		sent := <-got
		if ctx.Err() != nil {
			t.Fatal("Send did not end")
		}
		if err == nil && (!bytes.Contains(answers, []byte{0x44}) || !bytes.Contains(answers, []byte{0x45})) {
			t.Fatalf("success without 0x44 and 0x45 in %x", answers)
		}
		var de *upload.DeviceError
		var re *upload.RefusedError
		if err != nil && !errors.As(err, &de) && !errors.As(err, &re) {
			t.Fatalf("error %v is neither a DeviceError nor a refusal", err)
		}
		if re != nil && bytes.Contains(sent, img[:64]) {
			t.Fatalf("refused after image bytes were sent: answers %x", answers)
		}
		if i := bytes.IndexByte(answers, 0x43); i < 0 && bytes.Contains(sent, img[:64]) {
			t.Fatalf("image bytes sent without the device's 0x43: answers %x", answers)
		}
	})
}
