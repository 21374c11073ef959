package esphomepull

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// manifestLimit bounds what a node reads of a manifest (its buffer).
const manifestLimit = 64 << 10

// httpTimeout is http_request's timeout.
const httpTimeout = 4500 * time.Millisecond

// newClient is the fleet's HTTP client: a connection per request (a node
// keeps none open between polls), redirects followed as http_request does
// (at most 3), loopback only unless allowed.
func newClient(allowNonLoopback bool) *http.Client {
	dialer := &net.Dialer{Timeout: httpTimeout}
	tr := &http.Transport{
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: httpTimeout,
		Proxy:                 nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			addr, err := mqttlink.CheckAddr(addr, allowNonLoopback)
			if err != nil {
				return nil, err
			}
			c, err := dialer.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				// A node's receive window is a few KiB: the server cannot
				// run megabytes ahead of what the node has written.
				_ = tc.SetReadBuffer(32 << 10)
			}
			return c, err
		},
	}
	return &http.Client{Transport: tr, CheckRedirect: func(_ *http.Request, via []*http.Request) error {
		if len(via) > 3 {
			return errors.New("too many redirects")
		}
		return nil
	}}
}

// manifest is what http_request_update.cpp reads of the JSON: pointers so
// that a missing field is told from an empty one.
type manifest struct {
	Name    *string `json:"name"`
	Version *string `json:"version"`
	Builds  *[]struct {
		ChipFamily *string `json:"chipFamily"`
		OTA        *struct {
			Path       *string `json:"path"`
			MD5        *string `json:"md5"`
			Summary    *string `json:"summary"`
			ReleaseURL *string `json:"release_url"`
		} `json:"ota"`
	} `json:"builds"`
}

// check is HttpRequestUpdate::update(): fetch the manifest, take this
// build's entry, set update_info and the state, publish it. A failed check
// changes nothing and publishes nothing.
func (d *device) check(ctx context.Context) (turnedAvailable bool) {
	info, err := d.fetchManifest(ctx)
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		if why := err.Error(); why != d.lastFail {
			d.lastFail = why
			d.emit(Event{Event: EventCheckFailed, URL: d.source, Text: why})
		}
		return false
	}
	d.lastFail = ""
	old, oldState := d.info, d.state
	d.info = info
	d.state = stateNoUpdate
	if info.latest != "" && info.latest != info.current {
		d.state = stateAvailable
	}
	d.checks++
	d.publishState()
	if d.checks == 1 || old.latest != info.latest || oldState != d.state {
		d.emit(Event{Event: EventChecked, Version: info.latest, Text: d.state.String()})
	}
	return d.state == stateAvailable && oldState != stateAvailable
}

func (d *device) fetchManifest(ctx context.Context) (updateInfo, error) {
	var info updateInfo
	release, ok := d.f.conn(ctx)
	if !ok {
		return info, ctx.Err()
	}
	defer release()
	rctx, cancel := context.WithTimeout(ctx, 2*httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, "GET", d.source, nil)
	if err != nil {
		return info, errors.New("the source URL does not parse")
	}
	req.Header.Set("User-Agent", "ESPHome")
	resp, err := d.f.client.Do(req)
	if err != nil {
		return info, fmt.Errorf("cannot fetch the manifest: %s", describe(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return info, fmt.Errorf("the manifest's server answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, manifestLimit+1))
	if err != nil {
		return info, fmt.Errorf("cannot read the manifest: %s", describe(err))
	}
	if len(body) > manifestLimit {
		return info, fmt.Errorf("the manifest is larger than %d bytes", manifestLimit)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return info, errors.New("the manifest is not JSON of the expected shape")
	}
	if m.Name == nil || m.Version == nil || m.Builds == nil {
		return info, errors.New(`the manifest lacks "name", "version" or "builds"`)
	}
	for _, b := range *m.Builds {
		if b.ChipFamily == nil {
			return info, errors.New(`a build in the manifest lacks "chipFamily"`)
		}
		if *b.ChipFamily != d.cfg.ChipFamily {
			continue
		}
		if b.OTA == nil || b.OTA.Path == nil || b.OTA.MD5 == nil {
			return info, fmt.Errorf(`the manifest's %s build lacks "ota" with "path" and "md5"`, d.cfg.ChipFamily)
		}
		info = updateInfo{title: *m.Name, latest: *m.Version, firmwareURL: FirmwareURL(d.source, *b.OTA.Path), md5: *b.OTA.MD5}
		if b.OTA.Summary != nil {
			info.summary = *b.OTA.Summary
		}
		if b.OTA.ReleaseURL != nil {
			info.releaseURL = *b.OTA.ReleaseURL
		}
		d.mu.Lock()
		info.current = d.version
		d.mu.Unlock()
		return info, nil
	}
	return info, fmt.Errorf("the manifest has no build for %s", d.cfg.ChipFamily)
}

// installed is an image written, to boot next.
type installed struct {
	version string // the project version it tells
	// crash: no install, a crash of the running image; version is the
	// old image the bootloader boots.
	crash bool
}

// install is UpdateEntity::perform() while AVAILABLE: INSTALLING and the
// state published, the download (the main loop blocked: no progress
// reaches MQTT), the MD5 check; on failure AVAILABLE and the state again,
// once. nil: the node runs on.
func (d *device) install(ctx context.Context) *installed {
	d.installs.Add(1)
	d.state = stateInstalling
	d.dropArmed = d.cfg.has(FaultBrokerDrop)
	d.emit(Event{Event: EventUpgrade, URL: d.info.firmwareURL, Version: d.info.latest})
	d.publishState()
	if u := d.info.firmwareURL; !strings.HasPrefix(u, "http") || !strings.Contains(u, "://") || len(u) < 8 {
		// set_url clears it, and flash() returns without an OTA callback:
		// the state stays INSTALLING until the next check.
		d.emit(Event{Event: EventUpgradeFailed, URL: u, Text: "URL not set: the image's URL is no http(s) URL; the state stays installing until the next check"})
		return nil
	}
	n, err := d.download(ctx, d.info.firmwareURL, d.info.md5)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		d.emit(Event{Event: EventFetchFailed, URL: d.info.firmwareURL, Bytes: n, Text: err.Error()})
		d.state = stateAvailable
		d.publishState()
		d.emit(Event{Event: EventUpgradeFailed, Version: d.info.latest, Text: err.Error()})
		return nil
	}
	v := d.info.latest
	if d.cfg.has(FaultWrongVersion) {
		v = d.cfg.WrongVersion
		if v == "" {
			v = d.info.latest + "-other"
		}
		d.emit(Event{Event: EventFault, Version: v, Text: "fault wrong-version: the image was built with another project version than the manifest's"})
	}
	d.emit(Event{Event: EventFetched, URL: d.info.firmwareURL, Bytes: n, Version: v})
	d.emit(Event{Event: EventRestarting, Text: "update installed"})
	return &installed{version: v}
}

// download is OtaHttpRequestComponent::flash(): GET the image, write it at
// flash speed, check its MD5 against the manifest's. The bytes go through
// the fleet's image store: the node keeps none.
func (d *device) download(ctx context.Context, raw, wantMD5 string) (int64, error) {
	release, ok := d.f.conn(ctx)
	if !ok {
		return 0, ctx.Err()
	}
	defer release()
	d.emit(Event{Event: EventFetching, URL: raw})
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "GET", raw, nil)
	if err != nil {
		return 0, errors.New("the image URL does not parse")
	}
	req.Header.Set("User-Agent", "ESPHome")
	resp, err := d.f.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot fetch the image: %s", describe(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("the image's server answered HTTP %d", resp.StatusCode)
	}
	size := resp.ContentLength
	rd := d.f.images.reader(raw, size)
	defer rd.close()
	cut, drop := int64(-1), int64(-1)
	if d.cfg.has(FaultDownloadCut) {
		cut = max(size/2, 1)
	}
	if d.dropArmed {
		d.dropArmed = false
		drop = max(size/2, 1)
	}
	var dropAt time.Time
	buf := getBuf()
	defer putBuf(buf)
	var got int64
	for {
		want := int64(len(buf))
		if cut >= 0 && got+want > cut {
			want = cut - got
		}
		n, rerr := io.ReadFull(resp.Body, buf[:want])
		if n > 0 {
			if got == 0 && buf[0] != 0xE9 && !(d.cfg.ChipFamily == "ESP8266" && buf[0] == 0x1F) {
				return int64(n), errors.New("the image has the wrong magic byte")
			}
			rd.add(buf[:n])
			got += int64(n)
		}
		if got == cut {
			_ = resp.Body.Close()
			d.emit(Event{Event: EventFault, URL: raw, Bytes: got, Text: "fault download-cut: the connection broke halfway"})
			return got, errors.New("the download ended early")
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			if size >= 0 && got < size {
				return got, errors.New("the download ended early")
			}
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return got, ctx.Err()
			}
			return got, fmt.Errorf("the download failed: %s", describe(rerr))
		}
		if drop >= 0 && got >= drop {
			drop = -1
			d.dropLink("fault broker-drop: the link broke during the download")
			dropAt = time.Now()
		}
		// The MQTT client runs beside the download: it reconnects by
		// itself ("online" and the state again).
		if !dropAt.IsZero() && time.Since(dropAt) >= d.f.cfg.ReconnectWait && !d.connected() {
			dropAt = time.Time{}
			_ = d.connect(ctx)
		}
		if rate := d.cfg.FlashRate; rate > 0 {
			if due := start.Add(time.Duration(float64(got) / float64(rate) * float64(time.Second))); !mqttlink.Sleep(ctx, time.Until(due)) {
				return got, ctx.Err()
			}
		}
	}
	if got == 0 {
		return 0, errors.New("the image is empty")
	}
	sum := rd.sum()
	if d.cfg.has(FaultMD5Mismatch) {
		corrupt := md5.Sum([]byte("corrupted " + sum))
		sum = hex.EncodeToString(corrupt[:])
		d.emit(Event{Event: EventFault, URL: raw, Text: "fault md5-mismatch: the bytes written differ from those sent"})
	}
	// strncmp over 32 characters: an upper-case md5 fails.
	if len(wantMD5) < 32 || wantMD5[:32] != sum {
		return got, fmt.Errorf("MD5 mismatch: computed %s, the manifest says %s", sum, strconv.Quote(wantMD5))
	}
	return got, nil
}
