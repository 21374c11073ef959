package upload_test

import (
	"context"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
)

// The runner with the real transports where a family's trait decides.

// A port that neither accepts nor refuses (a rebooting device): the HTTP
// transport says unreachable, as the probe does
// (TestChooseProtocolSilentIsUnreachable).
func TestHTTPSilentIsUnreachable(t *testing.T) {
	host, port := testkit.HostPort(t, testnet.SilentAddr(t))
	tg := upload.Target{Name: "dev", Host: host, Port: port, Protocol: upload.Auto}
	de := upload.AsDeviceError(t, (&rawhttp.Transport{ConnectTimeout: 200 * time.Millisecond}).Send(testkit.Ctx(t), tg, &upload.Firmware{Data: []byte{0xE9}}, upload.Credentials{}, nil))
	if de.Class != upload.ClassUnreachable {
		t.Fatalf("HTTP to a silent port: %+v", de)
	}
}

// A filesystem image for an HTTP device is refused before anything is
// sent or read: the HTTP family takes app images only.
func TestRunFilesystemOverHTTPRefused(t *testing.T) {
	o := upload.Options{Transports: map[upload.Protocol]upload.Transport{upload.HTTP: &rawhttp.Transport{}}}
	tg := upload.Target{Name: "d1", Host: "127.0.0.1", Port: 9, Protocol: upload.HTTP}
	r := upload.Run(context.Background(), upload.NewFirmware("fs.bin", make([]byte, 4096), true), []upload.Target{tg}, o)[0]
	if r.Outcome != upload.OutcomeRefused || r.Tries != 0 ||
		r.Message != "HTTP devices (seed and OTS firmware) have no filesystem upload; send filesystem images to espota devices" {
		t.Fatalf("%s after %d tries: %s", r.Outcome, r.Tries, r.Message)
	}
}
