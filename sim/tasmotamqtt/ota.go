package tasmotamqtt

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// attempts is OTA_ATTEMPTS (tasmota.h: ESP8266 10, ESP32 5): the counter
// starts there and each try takes one, so a device tries 9 or 4 times.
func (d *device) attempts() int {
	if d.esp8266 {
		return 10
	}
	return 5
}

// otaStep is the upgrade part of Every250mSeconds (once a second, while no
// backlog command waits):
//   - Upgrade sets the flag to 3; at 2 ota_loader is cleared (the requested
//     image first) and the counter set to OTA_ATTEMPTS; at 0 a try runs,
//     the flag becomes 92. OtaUrl is read then (GetOtaUrl).
//   - ESP8266, not minimal: with ota_loader set the URL's file name gets
//     "-minimal"; when the counter drops below OTA_ATTEMPTS/2 ".gz" is
//     appended (a URL with ".gz" already makes that try the last).
//   - A failed try sets the flag to 2 (the next try two seconds later);
//     "Not Enough space" sets ota_loader on an ESP8266 full build.
//   - 92 → 91 → 90: UPGRADE is published once: "Successful. Restarting"
//     (the restart follows) or "Failed <error>" (the device runs on).
func (d *device) otaStep(ctx context.Context) {
	if d.otaFlag <= 0 || len(d.backlog) > 0 {
		return
	}
	d.otaFlag--
	if d.otaFlag == 2 {
		d.mu.Lock()
		d.otaLoader = false
		d.mu.Unlock()
		d.otaRetry = d.attempts()
		d.otaErr = ""
	}
	if d.otaFlag <= 0 {
		d.otaFlag = 92
		d.otaOK = false // the last try's error stays (getLastErrorString)
		d.otaRetry--
		if d.otaRetry > 0 {
			u := d.getOtaURL()
			d.mu.Lock()
			loader := d.otaLoader
			d.mu.Unlock()
			minimal := d.isMinimal()
			if d.esp8266 {
				if !minimal && loader {
					u = tasmotafw.MinimalURL(u)
				}
				if d.otaRetry < d.attempts()/2 {
					if strings.Contains(strings.ToLower(u), ".gz") {
						d.otaRetry = 1
					} else {
						u += ".gz"
					}
				}
			}
			attempt := d.attempts() - d.otaRetry
			var why string
			d.otaOK, why = d.fetch(ctx, u, attempt)
			if !d.otaOK {
				d.otaErr = why
			}
			if ctx.Err() != nil {
				return
			}
			if !d.otaOK {
				if d.esp8266 && !minimal && d.otaErr == tasmotafw.ErrNotEnoughSpace {
					d.mu.Lock()
					d.otaLoader = true
					d.mu.Unlock()
				}
				d.otaFlag = 2
			}
		}
	}
	if d.otaFlag == 90 {
		d.otaFlag = 0
		// Always stat/<t>/UPGRADE: a publish of its own, not a reply.
		words := "Successful. Restarting"
		if !d.otaOK {
			words = "Failed " + d.otaErr
		}
		sent := d.publish(d.topic(prefixStat, "UPGRADE"), object{{"Upgrade", words}}.String(), false)
		if !d.otaOK {
			text := words
			if !sent {
				text += " (not delivered: the link is down)"
			}
			d.emit(Event{Event: EventUpgradeFailed, Text: text})
			d.pending = nil
			return
		}
		text := "upgrade"
		if !sent {
			text += " (UPGRADE not delivered: the link is down)"
		}
		d.emit(Event{Event: EventRestarting, Text: text})
		d.restartFlag = 2
	}
}

// fetch is ESPhttpUpdate.update(url): the GET with the core's headers,
// the checks, the write at flash speed, x-MD5 at the end. The firmware's
// loop does not run meanwhile: commands wait, and a download longer than
// 1.5 × the keepalive loses the broker link.
func (d *device) fetch(ctx context.Context, raw string, attempt int) (bool, string) {
	d.emit(Event{Event: EventFetching, URL: raw, Attempt: attempt})
	fail := func(why string) (bool, string) {
		d.emit(Event{Event: EventFetchFailed, URL: raw, Attempt: attempt, Text: why})
		return false, why
	}
	start := time.Now()
	pu, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(pu.Scheme, "http") || pu.Host == "" {
		return fail(tasmotafw.ErrConnect)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", raw, nil)
	if err != nil {
		return fail(tasmotafw.ErrConnect)
	}
	d.mu.Lock()
	ver := d.versionString()
	free := int64(d.freeKiB) << 10
	program := d.programKiB
	d.mu.Unlock()
	mac := strings.ToUpper(net.HardwareAddr(d.mac[:]).String())
	p, ua := "x-ESP32-", "ESP32-http-Update"
	if d.esp8266 {
		p, ua = "x-ESP8266-", "ESP8266-http-Update"
	}
	ap := d.mac
	ap[5]++
	hdr := map[string]string{"User-Agent": ua, p + "STA-MAC": mac, p + "AP-MAC": strings.ToUpper(net.HardwareAddr(ap[:]).String()),
		p + "free-space": strconv.FormatInt(free, 10), p + "sketch-size": strconv.Itoa(program << 10),
		p + "sketch-md5": d.sketchMD5(ver), p + "chip-size": "4194304", p + "sdk-version": "2.2.2-dev(38a443e)",
		p + "mode": "sketch", p + "version": ver}
	if d.esp8266 {
		hdr[p+"Chip-ID"] = strconv.FormatUint(uint64(d.chipID()), 10)
	} else {
		hdr[p+"sdk-version"] = "v5.3.2"
		hdr["Cache-Control"] = "no-cache"
	}
	for k, v := range hdr {
		req.Header[k] = []string{v}
	}
	resp, err := tasmotafw.Client(d.f.cfg.AllowNonLoopback).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, ""
		}
		return fail(tasmotafw.ErrConnect)
	}
	defer resp.Body.Close()
	size := resp.ContentLength
	switch {
	case resp.StatusCode == http.StatusNotModified:
		// HTTP_UPDATE_NO_UPDATES is not HTTP_UPDATE_FAILED: Tasmota counts
		// it a success and restarts on what it runs.
		d.emit(Event{Event: EventFetched, URL: raw, Attempt: attempt, Text: "304 Not Modified: nothing written, counted a success"})
		return true, ""
	case resp.StatusCode == http.StatusNotFound:
		return fail(tasmotafw.ErrNotFound)
	case resp.StatusCode == http.StatusForbidden:
		return fail(tasmotafw.ErrForbidden)
	case resp.StatusCode != http.StatusOK:
		return fail(tasmotafw.ErrWrongCode)
	case size <= 0:
		return fail(tasmotafw.ErrNoSize)
	case size > free:
		return fail(tasmotafw.ErrNotEnoughSpace)
	}
	wantMD5 := strings.ToLower(resp.Header.Get("x-MD5"))
	if d.esp8266 {
		// ESP8266httpUpdate closes every other socket before the body
		// (WiFiClient::stopAllExcept): the MQTT link goes without a
		// DISCONNECT, and the broker publishes the will.
		d.dropLink("the ESP8266 updater closes every other connection for the download")
	}
	cut := int64(-1)
	if d.cfg.has(FaultDownloadCut) {
		cut = size / 2
	}
	drop := int64(-1)
	if d.dropArmed {
		d.dropArmed = false
		drop = size / 2
	}
	dl := d.f.store.begin()
	defer dl.release()
	h := md5.New()
	buf := make([]byte, sectorSize)
	rate := d.cfg.FlashRate
	keepalive := d.f.cfg.KeepAlive * 3 / 2
	var got int64
	for got < size {
		want := min(int64(len(buf)), size-got)
		if cut >= 0 && got+want > cut {
			want = cut - got
		}
		n, rerr := io.ReadFull(resp.Body, buf[:want])
		if n > 0 {
			if got == 0 && buf[0] != 0xE9 && !(d.esp8266 && buf[0] == 0x1F) {
				return fail(tasmotafw.ErrHeader) // both updaters peek at the first byte
			}
			h.Write(buf[:n])
			dl.add(buf[:n])
			got += int64(n)
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return false, ""
			}
			return fail(streamError(d.esp8266))
		}
		if got == cut {
			_ = resp.Body.Close()
			d.emit(Event{Event: EventFault, URL: raw, Bytes: got, Text: "fault download-cut: the connection broke halfway"})
			return fail(streamError(d.esp8266))
		}
		if got >= drop && drop >= 0 {
			drop = -1
			d.dropLink("fault broker-drop: the link broke during the download")
			// …and the first reconnect fails: the next is MQTT_RETRY_SECS
			// away, past the UPGRADE publish, which is lost.
			d.retryWait = mqttRetryTicks
		}
		if time.Since(start) > keepalive && d.connected() {
			d.dropLink("the download outlasted 1.5 × the keepalive: the broker dropped the link")
		}
		if rate > 0 {
			if due := start.Add(time.Duration(float64(got) / float64(rate) * float64(time.Second))); !mqttlink.Sleep(ctx, time.Until(due)) {
				return false, ""
			}
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if d.cfg.has(FaultMD5Mismatch) {
		if wantMD5 == "" {
			d.emit(Event{Event: EventFault, URL: raw, Text: "fault md5-mismatch: no x-MD5 was sent, nothing to check"})
		} else {
			corrupt := md5.Sum([]byte("corrupted " + sum))
			sum = hex.EncodeToString(corrupt[:])
			d.emit(Event{Event: EventFault, URL: raw, Text: "fault md5-mismatch: the bytes written differ from those sent"})
		}
	}
	if wantMD5 != "" && sum != wantMD5 {
		return fail(md5Error(d.esp8266, wantMD5, sum))
	}
	info := dl.info(d.cfg.Chip)
	if !info.ok {
		return fail(info.why)
	}
	d.pending = &install{info: info}
	v := info.version
	if v == "" {
		v = d.f.cfg.InstallVersion
	}
	d.emit(Event{Event: EventFetched, URL: raw, Attempt: attempt, Bytes: got, Version: v})
	return true, ""
}

// sketchMD5 stands for the running sketch's MD5 (derived from what runs).
func (d *device) sketchMD5(version string) string {
	sum := md5.Sum([]byte(d.id + " " + version))
	return hex.EncodeToString(sum[:])
}
