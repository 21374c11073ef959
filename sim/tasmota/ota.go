package tasmota

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// The upgrade by URL, as support_tasmota.ino runs it (Every250mSeconds,
// state 0) and ESP8266httpUpdate / HTTPUpdate fetch the image:
//
//   - Upgrade sets ota_state_flag 3; it counts down once a second; at 2
//     ota_loader is cleared (ESP8266 tries the requested image first) and
//     the retry counter set to OTA_ATTEMPTS (5); at 0 an attempt runs with
//     the counter decreased (4 attempts at most).
//   - ESP8266, not minimal: with ota_loader set, the URL's file name gets
//     "-minimal" in place of its last "-…" part or before its first dot
//     (tasmota.bin.gz → tasmota-minimal.bin.gz, tasmota-DE.bin →
//     tasmota-minimal.bin). From the third attempt ".gz" is appended (a
//     URL with .gz already: that attempt is the last).
//   - ESP32 on the safeboot layout (one OTA partition), not safeboot
//     itself: the attempt restarts into safeboot instead, which fetches
//     OtaUrl once it is up.
//   - The fetch: GET with the core's headers (x-ESP8266-STA-MAC …); 200
//     with a Content-Length is needed; an image larger than the free
//     sketch space is "Not Enough space" (HTTP_UE_TOO_LESS_SPACE), which on
//     an ESP8266 full build sets ota_loader for the next attempt; a first
//     byte other than 0xE9 (or 0x1F on ESP8266) fails the header check;
//     x-MD5 is checked at the end.
//   - A failed attempt sets the flag to 2: the next runs two seconds later.
//     After success the flag goes 92 → 90 (two seconds), restart_flag 2,
//     and the restart two seconds after that.
//   - A minimal build that boots with ota_loader set (and safeboot with
//     OtaFactoryWrite's flag) starts the same countdown at once and
//     fetches OtaUrl as it is.

// otaAttempts is OTA_ATTEMPTS.
const otaAttempts = 5

// startUpgrade arms ota_state_flag 3 (once: a running upgrade goes on).
func (d *device) startUpgrade() {
	if d.upgrading.Swap(true) {
		return
	}
	d.corrupt.Store(false)
	go d.upgradeTask(d.e.BootContext())
}

func (d *device) upgradeTask(ctx context.Context) {
	tick := d.e.FirmwareDelay(restartTick)
	defer d.upgrading.Store(false)
	flag := 3
	retry := otaAttempts
	for {
		if !core.Sleep(ctx, tick) {
			return
		}
		flag--
		if flag == 2 {
			d.p.mu.Lock()
			if !d.isMinimal() {
				d.p.otaLoader = false
			}
			d.p.otaFactory = false
			d.p.mu.Unlock()
			retry = otaAttempts
		}
		if flag > 0 {
			continue
		}
		retry--
		if retry == 0 {
			d.e.Logger().Debug("tasmota: upgrade failed", "attempts", otaAttempts-1)
			return
		}
		d.p.mu.Lock()
		u := d.p.otaURL
		loader := d.p.otaLoader
		d.p.mu.Unlock()
		if d.esp8266 {
			if !d.isMinimal() && loader {
				u = tasmotafw.MinimalURL(u)
			}
			if retry < otaAttempts/2 {
				if strings.Contains(strings.ToLower(u), ".gz") {
					retry = 1
				} else {
					u += ".gz"
				}
			}
		} else if d.e.Config().Safeboot && !d.runningFactory() {
			// EspSingleOtaPartition(): safeboot does the fetch.
			d.p.mu.Lock()
			d.p.otaFactory, d.p.otaLoader, d.p.bootFactory = true, true, true
			d.p.mu.Unlock()
			d.e.RequestReboot("safeboot")
			return
		}
		ok, tooLarge := d.fetch(ctx, u) // once corrupted, every attempt of this upgrade fails
		if ctx.Err() != nil {
			return
		}
		if !ok {
			if d.esp8266 && !d.isMinimal() && tooLarge {
				d.p.mu.Lock()
				d.p.otaLoader = true
				d.p.mu.Unlock()
			}
			flag = 2
			continue
		}
		if d.runningFactory() {
			d.p.mu.Lock()
			d.p.bootFactory = false
			d.p.mu.Unlock()
		}
		// 92 → 90, then restart_flag 2.
		if core.Sleep(ctx, 2*tick) {
			d.restartSoon("update")
		}
		return
	}
}

// fetch is ESPhttpUpdate.update(url): false when the attempt failed,
// tooLarge when it was HTTP_UE_TOO_LESS_SPACE.
func (d *device) fetch(ctx context.Context, raw string) (ok, tooLarge bool) {
	e := d.e
	fail := func(u *core.Upload, why string) (bool, bool) {
		if u == nil {
			u = e.NewUpload(ctx, "http", raw, "", 0)
		}
		u.Fail(0, "", "upgrade from "+raw+": "+why)
		return false, why == tasmotafw.ErrNotEnoughSpace
	}
	pu, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(pu.Scheme, "http") || pu.Host == "" {
		return fail(nil, tasmotafw.ErrConnect)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", raw, nil)
	if err != nil {
		return fail(nil, tasmotafw.ErrConnect)
	}
	for _, h := range d.updateHeaders() {
		req.Header[h.Name] = []string{h.Value}
	}
	resp, err := tasmotafw.Client(d.e.Config().AllowNonLoopback).Do(req)
	if err != nil {
		return fail(nil, tasmotafw.ErrConnect)
	}
	defer resp.Body.Close()
	size := resp.ContentLength
	u := e.NewUpload(ctx, "http", pu.Path, pu.Host, size)
	switch {
	case resp.StatusCode == 404:
		return fail(u, tasmotafw.ErrNotFound)
	case resp.StatusCode == 403:
		return fail(u, tasmotafw.ErrForbidden)
	case resp.StatusCode == 304:
		return fail(u, "no update")
	case resp.StatusCode != 200:
		return fail(u, tasmotafw.ErrWrongCode)
	case size <= 0:
		return fail(u, tasmotafw.ErrNoSize)
	case size > d.freeSketchSpace():
		return fail(u, tasmotafw.ErrNotEnoughSpace)
	}
	wantMD5 := strings.ToLower(resp.Header.Get("x-MD5"))
	hash := md5.New()
	if st := u.Begin(true); st != core.OTANone {
		return fail(u, "Update error: could not begin")
	}
	buf := make([]byte, 4096)
	var got int64
	first := true
	for got < size {
		n, rerr := io.ReadFull(resp.Body, buf[:min(int64(len(buf)), size-got)])
		if n > 0 {
			if first {
				first = false
				if buf[0] != 0xE9 && !(d.esp8266 && buf[0] == 0x1F) {
					return fail(u, tasmotafw.ErrHeader)
				}
			}
			hash.Write(buf[:n])
			if st := u.Write(buf[:n]); st != core.OTANone {
				return fail(u, fmt.Sprintf("Update error: write failed (%d)", st))
			}
			got += int64(n)
		}
		if rerr != nil {
			return fail(u, "Update error: Stream Read Timeout")
		}
	}
	if wantMD5 != "" && hex.EncodeToString(hash.Sum(nil)) != wantMD5 {
		return fail(u, "Update error: MD5 Check Failed")
	}
	if d.corrupt.Load() {
		return fail(u, "fault status-during-upgrade: a Status command during the upgrade corrupted the image")
	}
	if st := u.End(); st != core.OTANone {
		return fail(u, "Update error: the image does not verify")
	}
	u.Succeed(200, "")
	return true, false
}

// updateHeaders are what ESP8266httpUpdate (core 3.x) and arduino-esp32's
// HTTPUpdate send with the request.
func (d *device) updateHeaders() []core.Header {
	p := "x-ESP32-"
	ua := "ESP32-http-Update"
	if d.esp8266 {
		p, ua = "x-ESP8266-", "ESP8266-http-Update"
	}
	mac := strings.ToUpper(d.e.MAC().String())
	ap := d.e.MAC()
	apMAC := strings.ToUpper(net.HardwareAddr{ap[0], ap[1], ap[2], ap[3], ap[4], ap[5] + 1}.String())
	return []core.Header{
		{Name: "User-Agent", Value: ua},
		{Name: p + "STA-MAC", Value: mac},
		{Name: p + "AP-MAC", Value: apMAC},
		{Name: p + "free-space", Value: strconv.FormatInt(d.freeSketchSpace(), 10)},
		{Name: p + "sketch-size", Value: strconv.Itoa(len(d.e.RunningImage()))},
		{Name: p + "chip-size", Value: "4194304"},
		{Name: p + "mode", Value: "sketch"},
		{Name: p + "version", Value: d.version + "(" + d.image + ")"},
	}
}
