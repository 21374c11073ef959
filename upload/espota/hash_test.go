package espota

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/espota"
	"github.com/ots-ota/ots-ota/upload"
)

// memUpdater is the simplest Update class: it keeps the bytes and checks
// the MD5.
type memUpdater struct {
	mu   sync.Mutex
	sum  hash.Hash
	ends int
}

func (u *memUpdater) Begin(size, cmd int) error { u.sum = md5.New(); return nil }
func (u *memUpdater) Write(p []byte) error      { u.sum.Write(p); return nil }
func (u *memUpdater) Abort()                    {}
func (u *memUpdater) End(md5hex string) error {
	if hex.EncodeToString(u.sum.Sum(nil)) != md5hex {
		return espota.NewUpdateError(espota.ESP32, espota.ErrKindMD5)
	}
	u.mu.Lock()
	u.ends++
	u.mu.Unlock()
	return nil
}

func (u *memUpdater) accepted() int { u.mu.Lock(); defer u.mu.Unlock(); return u.ends }

// A PBKDF2 device whose sketch stores an MD5 password hash
// (setPasswordHash): the SHA-256 hash fails, a re-invitation and the MD5
// hash succeed, within one Send; with MD5Password the first try does.
func TestEspotaStoredMD5Hash(t *testing.T) {
	for _, md5First := range []bool{false, true} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		u := &memUpdater{}
		var mu sync.Mutex
		var kinds []espota.EventKind
		srv := espota.NewServer(espota.Config{
			Flavor:       espota.ESP32,
			PasswordHash: auth.EspotaPasswordHashMD5(auth.NewSecret(espotaTestPassword)),
			LocalIP:      net.ParseIP("127.0.0.1"),
			OnEvent: func(e espota.Event) {
				mu.Lock()
				kinds = append(kinds, e.Kind)
				mu.Unlock()
			},
		}, u)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ctx, pc) }()

		var logs bytes.Buffer
		tr := espotaFast()
		tr.MD5Password = md5First
		tr.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ap := netip.MustParseAddrPort(pc.LocalAddr().String())
		ev := &espotaEvents{}
		fw := upload.NewFirmware("fw.bin", append([]byte{0xE9}, make([]byte, 30000)...), false)
		err = tr.Send(context.Background(), upload.Target{Host: "127.0.0.1", Port: int(ap.Port())}, fw, upload.Credentials{Password: auth.NewSecret(espotaTestPassword)}, ev.add)
		espotaNoSecret(t, err, ev)
		if err != nil {
			t.Fatalf("md5First=%v: %v", md5First, err)
		}
		// The engine reports the end after its OK is out.
		for deadline := time.Now().Add(5 * time.Second); u.accepted() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		pc.Close()
		if u.accepted() != 1 {
			t.Errorf("md5First=%v: %d accepted updates", md5First, u.accepted())
		}
		failed := 0
		mu.Lock()
		for _, k := range kinds {
			if k == espota.EventAuthFailed {
				failed++
			}
		}
		mu.Unlock()
		if want := map[bool]int{false: 1, true: 0}[md5First]; failed != want {
			t.Errorf("md5First=%v: %d auth failures on the device, want %d", md5First, failed, want)
		}
		if logs.Len() == 0 || strings.Contains(logs.String(), espotaTestPassword) ||
			strings.Contains(logs.String(), auth.EspotaPasswordHashMD5(auth.NewSecret(espotaTestPassword)).Reveal()) {
			t.Errorf("debug log empty or holding the secret:\n%s", logs.String())
		}
	}
}
