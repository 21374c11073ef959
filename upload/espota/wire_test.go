package espota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// A scripted espota device on raw sockets, written from research/espota.md
// §1 and not from sim/: it answers the invitation with OK, connects back and
// then runs script on the data connection.
func espotaFakeDevice(t *testing.T, script func(c net.Conn, size int)) upload.Target {
	t.Helper()
	return espotaFakeDeviceFrom(t, "", script)
}

// espotaFakeDeviceFrom connects back from the local address from ("" = the
// OS's choice), as a device behind NAT appears.
func espotaFakeDeviceFrom(t *testing.T, from string, script func(c net.Conn, size int)) upload.Target {
	t.Helper()
	var d net.Dialer
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return espotaFakeDeviceDialer(t, &d, script)
}

// espotaFakeDeviceDialer connects back with d.
func espotaFakeDeviceDialer(t *testing.T, d *net.Dialer, script func(c net.Conn, size int)) upload.Target {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var cmd, port, size int
		var md5 string
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d %d %s", &cmd, &port, &size, &md5); err != nil {
			return
		}
		_, _ = pc.WriteTo([]byte("OK"), peer)
		host := peer.(*net.UDPAddr).IP.String()
		c, err := d.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			return
		}
		defer c.Close()
		script(c, size)
	}()
	return upload.Target{Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port}
}

// readAllCounting reads size bytes, answering each read with its count.
func readAllCounting(c net.Conn, size int) {
	buf := make([]byte, 1460)
	for got := 0; got < size; {
		n, err := c.Read(buf[:min(len(buf), size-got)])
		if err != nil {
			return
		}
		got += n
		fmt.Fprint(c, n)
	}
}

func TestEspotaWire(t *testing.T) {
	fw := upload.NewFirmware("fw.bin", append([]byte{0xE9}, make([]byte, 20000)...), false)
	for _, c := range []struct {
		name   string
		script func(c net.Conn, size int)
		class  upload.Class // "" = success
		words  string
		noOK   bool
	}{
		{name: "OK glued to the last count", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "OK")
		}},
		{name: "OK split across segments", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "O")
			time.Sleep(50 * time.Millisecond)
			fmt.Fprint(c, "K")
			time.Sleep(50 * time.Millisecond)
		}},
		{name: "an O and a close is no OK", class: upload.ClassRejected, words: "O", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "O")
		}},
		{name: "counts then close: espota.py's success, ours a lost OK", class: upload.ClassNetwork, noOK: true, script: func(c net.Conn, size int) {
			readAllCounting(c, size)
		}},
		{name: "close after half", class: upload.ClassNetwork, script: func(c net.Conn, size int) {
			readAllCounting(c, size/2)
		}},
		{name: "MD5 Check Failed at the end", class: upload.ClassRejected, words: "MD5 Check Failed", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "MD5 Check Failed\r\n")
		}},
		{name: "Decryption error after the first 4 KiB", class: upload.ClassRejected, words: "Decryption error", script: func(c net.Conn, size int) {
			readAllCounting(c, 4096)
			fmt.Fprint(c, "Decryption error\r\n")
			time.Sleep(20 * time.Millisecond)
		}},
		{name: "text without a line end, then close", class: upload.ClassWriteFailed, words: "Flash Write Failed", script: func(c net.Conn, size int) {
			readAllCounting(c, 8000)
			fmt.Fprint(c, "Flash Write Fa")
			time.Sleep(20 * time.Millisecond)
			fmt.Fprint(c, "iled")
		}},
		{name: "ESP8266 MD5 text", class: upload.ClassRejected, words: "ERROR[7]: MD5 verification failed: expected: 1, calculated: 2", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "ERROR[7]: MD5 verification failed: expected: 1, calculated: 2\n")
		}},
		{name: "unknown words", class: upload.ClassRejected, words: "Something new", script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			fmt.Fprint(c, "Something new\r\n")
		}},
		{name: "silent after all bytes: it may have applied the image", class: upload.ClassTimeout, noOK: true, script: func(c net.Conn, size int) {
			readAllCounting(c, size)
			_, _ = io.Copy(io.Discard, c) // silent until the client hangs up
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := espotaFakeDevice(t, c.script)
			// Timeouts a loaded CI machine cannot run into; only the
			// silent device, which waits for the client, meets the idle rule.
			tr := &Transport{ConnectTimeout: 10 * time.Second, AcceptTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second}
			if c.class == upload.ClassTimeout {
				tr.IdleTimeout = 800 * time.Millisecond
			}
			err := tr.Send(context.Background(), tg, fw, upload.Credentials{}, nil)
			if c.class == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			de := espotaWantClass(t, err, c.class)
			if de.Words != c.words {
				t.Errorf("words %q, want %q", de.Words, c.words)
			}
			if errors.Is(err, ErrNoOK) != c.noOK {
				t.Errorf("lost OK %v, want %v: %v", !c.noOK, c.noOK, err)
			}
		})
	}
}

// A device that takes nothing at all (a full erase stall that never ends):
// the idle rule ends the upload, and progress never left 0.
func TestEspotaIdleAtZero(t *testing.T) {
	tg := espotaFakeDevice(t, func(c net.Conn, size int) { time.Sleep(2 * time.Second) })
	fw := upload.NewFirmware("fw.bin", make([]byte, 4<<20), false)
	ev := &espotaEvents{}
	tr := &Transport{ConnectTimeout: time.Second, AcceptTimeout: time.Second, IdleTimeout: 300 * time.Millisecond}
	de := espotaWantClass(t, tr.Send(context.Background(), tg, fw, upload.Credentials{}, ev.add), upload.ClassTimeout)
	if de.Taken >= fw.Size() {
		t.Errorf("taken %d", de.Taken)
	}
	for _, e := range ev.all() {
		if e.Phase == upload.PhaseFinishing {
			t.Errorf("finishing without the device taking the image: %+v", e)
		}
	}
}

// The lock-step start: no second chunk goes out before the device answered
// the first, so an early rejection finds nothing unread on the device.
func TestEspotaLockstepStart(t *testing.T) {
	fw := upload.NewFirmware("fw.bin", append([]byte{0xE9}, make([]byte, 100000)...), false)
	unread := make(chan int, 1)
	tg := espotaFakeDevice(t, func(c net.Conn, size int) {
		buf := make([]byte, 1460)
		if n, err := io.ReadFull(c, buf[:espotaLockstepChunk]); err != nil {
			t.Errorf("first piece: %d bytes, %v", n, err)
		}
		time.Sleep(100 * time.Millisecond) // no count yet: nothing more may come
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		m, _ := c.Read(buf)
		unread <- m
		fmt.Fprint(c, "Wrong Magic Byte\r\n")
	})
	tr := &Transport{ConnectTimeout: time.Second, AcceptTimeout: time.Second, IdleTimeout: time.Second}
	err := tr.Send(context.Background(), tg, fw, upload.Credentials{}, nil)
	if m := <-unread; m != 0 {
		t.Errorf("%d more bytes arrived before the first count", m)
	}
	if de := espotaWantClass(t, err, upload.ClassRejected); de.Words != "Wrong Magic Byte" {
		t.Errorf("words %q", de.Words)
	}
}

func TestEspotaAnswerParser(t *testing.T) {
	for _, c := range []struct {
		in             []string
		ok, complete   bool
		words          string
		alive, started bool
	}{
		{in: []string{"1460", "14601460", "904OK"}, ok: true, complete: true, alive: true, started: true},
		{in: []string{"1460O"}, alive: true, started: true, words: "O"},
		{in: []string{"1460O", "K"}, ok: true, complete: true, alive: true, started: true},
		{in: []string{"1024Wrong Magic", " Byte\r\n"}, complete: true, words: "Wrong Magic Byte", alive: true, started: true},
		{in: []string{"ERROR[10]: Magic byte is not 0xE9\n"}, complete: true, words: "ERROR[10]: Magic byte is not 0xE9", started: true},
		{in: []string{"", "146"}, alive: true},
		{in: []string{"OK"}, ok: true, complete: true, started: true},
		{in: []string{strings.Repeat("x", 1000)}, complete: true, words: strings.Repeat("x", 200), started: true},
	} {
		var a espotaAnswer
		for _, p := range c.in {
			a.feed([]byte(p))
		}
		if a.ok() != c.ok || a.complete() != c.complete || a.words() != c.words || a.alive() != c.alive || a.started() != c.started {
			t.Errorf("%q: ok %v complete %v words %q alive %v started %v", c.in, a.ok(), a.complete(), a.words(), a.alive(), a.started())
		}
	}
}

func TestEspotaWordsClassified(t *testing.T) {
	for _, c := range []struct {
		words string
		want  upload.Class
	}{
		{"ERR: ERROR[4]: Not Enough Space", upload.ClassRejected},
		{"ERROR[1]: Flash Write Failed", upload.ClassWriteFailed},
		{"ERROR[7]: MD5 verification failed: expected: a, calculated: b", upload.ClassRejected},
		{"ERROR[10]: Magic byte is not 0xE9", upload.ClassRejected},
		{"Decryption error", upload.ClassRejected},
		{"Wrong Magic Byte", upload.ClassRejected},
		{"Stream Read Timeout", upload.ClassNetwork},
		{"Authentication Failed", upload.ClassAuth},
		{"ERROR[x]: Flash Write Failed", upload.ClassRejected}, // not the ESP8266 framing: unknown words
		{"ERROR[10]: Magic byte is wrong, not 0xE9", upload.ClassRejected},
		{"ERROR[12]: Signature verification failed", upload.ClassRejected},
		{"ERROR[8]: new Flash config wrong real: 1048576", upload.ClassRejected},
		{"ERROR[11]: Invalid bootstrapping state, reset ESP8266 before updating", upload.ClassRejected},
		{"ERROR[6]: Stream Read Timeout", upload.ClassNetwork},
	} {
		got, why := classifyEspotaWords(c.words)
		if got != c.want {
			t.Errorf("%q: %s, want %s", c.words, got, c.want)
		}
		_, unknown := upload.ClassifyAnswer(0, "no such words")
		if (why == unknown) != strings.HasPrefix(c.words, "ERROR[x]") {
			t.Errorf("%q: reason %q", c.words, why)
		}
	}
}

func TestEspotaReplyParser(t *testing.T) {
	for _, c := range []struct {
		in    string
		kind  espotaReplyKind
		nonce string
	}{
		{"OK", replyOK, ""},
		{"OK\n", replyOK, ""},
		{"AUTH 0123456789abcdef0123456789abcdef", replyAuth, "0123456789abcdef0123456789abcdef"},
		{"Authentication Failed", replyAuthFailed, ""},
		{"ERR: ERROR[4]: Not Enough Space\n", replyErr, ""},
		{"OKAY", replyOther, ""},
		{"", replyOther, ""},
	} {
		if k, n := parseEspotaReply([]byte(c.in)); k != c.kind || n != c.nonce {
			t.Errorf("%q: %v %q", c.in, k, n)
		}
	}
	if isHexNonce("0123") || !isHexNonce(strings.Repeat("ab", 32)) || isHexNonce(strings.Repeat("zz", 16)) {
		t.Error("isHexNonce")
	}
}

// FuzzEspotaAnswer: any byte stream, split anywhere, gives the same answer
// as fed whole; OK and words exclude each other; nothing grows unbounded.
func FuzzEspotaAnswer(f *testing.F) {
	for _, s := range []string{"14601460904OK", "1460OK1460", "1024Wrong Magic Byte\r\n", "ERROR[10]: Magic byte is not 0xE9\n", "O", "OK", "", "12\x00OK"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		var whole, parts espotaAnswer
		whole.feed(b)
		k := int(step%16) + 1
		for i := 0; i < len(b); i += k {
			parts.feed(b[i:min(i+k, len(b))])
		}
		if whole.ok() != parts.ok() || whole.words() != parts.words() || whole.complete() != parts.complete() || whole.digits != parts.digits {
			t.Fatalf("split feeding differs: %+v vs %+v", whole, parts)
		}
		if whole.ok() && whole.words() != "" {
			t.Fatal("OK with words")
		}
		if whole.countsAfterOK() != parts.countsAfterOK() || whole.countsAfterOK() && !whole.ok() {
			t.Fatalf("counts after OK: %+v vs %+v", whole, parts)
		}
		if len(whole.text) > maxAnswerText || len(whole.words()) > 200 {
			t.Fatal("unbounded")
		}
		for i := 0; i < len(whole.words()); i++ {
			if c := whole.words()[i]; c < 0x20 || c >= 0x7f {
				t.Fatalf("unprintable %q", whole.words())
			}
		}
		kind, nonce := parseEspotaReply(b)
		if kind != replyAuth && nonce != "" {
			t.Fatal("nonce without AUTH")
		}
		_, _ = classifyEspotaWords(string(b))
	})
}
