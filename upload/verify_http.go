package upload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HTTPObserver reads what a device tells over HTTP: GET /ota/status on the
// OTA port (contract §4), then GET /api/status on the web port (the OTS
// firmware). It never touches an espota device's UDP port.
type HTTPObserver struct {
	client *http.Client
}

// NewHTTPObserver returns an observer; each request also honours its ctx.
func NewHTTPObserver() *HTTPObserver {
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil, MaxResponseHeaderBytes: 16 << 10}
	return &HTTPObserver{client: &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type otaStatusBody struct {
	Project   string `json:"project"`
	Version   string `json:"version"`
	Chip      string `json:"chip"`
	State     string `json:"state"`
	ELFSHA256 string `json:"elf_sha256"`
	SlotSize  int64  `json:"slot_size"`
	UptimeS   *int64 `json:"uptime_s"`
}

type apiStatusBody struct {
	FirmwareVersion string `json:"firmwareVersion"`
	Uptime          *int64 `json:"uptime"`
}

// Observe implements Observer.
func (o *HTTPObserver) Observe(ctx context.Context, t Target) (Facts, error) {
	var f Facts
	var errs []error
	if t.Protocol != Espota {
		code, body, err := o.get(ctx, "http://"+t.Addr()+"/ota/status")
		switch {
		case err != nil:
			errs = append(errs, err)
		default:
			f.Answered = true
			var s otaStatusBody
			if code == 200 && json.Unmarshal(body, &s) == nil && s.Version != "" {
				f.Project, f.Version, f.Chip, f.State, f.ELFSHA256, f.SlotSize = s.Project, s.Version, s.Chip, s.State, s.ELFSHA256, s.SlotSize
				f.VersionSource = "/ota/status"
				if s.UptimeS != nil {
					f.Uptime, f.UptimeKnown = time.Duration(*s.UptimeS)*time.Second, true
				}
				return f, nil
			}
		}
	}
	web := t.WebPort
	if web == 0 {
		web = 80
	}
	if web > 0 && ctx.Err() == nil {
		code, body, err := o.get(ctx, "http://"+joinHostPort(t.Host, web)+"/api/status")
		switch {
		case err != nil:
			errs = append(errs, err)
		default:
			f.Answered = f.Answered || t.Protocol != Espota
			var s apiStatusBody
			if code == 200 && json.Unmarshal(body, &s) == nil && s.FirmwareVersion != "" {
				f.Version, f.VersionSource = s.FirmwareVersion, "/api/status"
				if s.Uptime != nil && !f.UptimeKnown {
					f.Uptime, f.UptimeKnown = time.Duration(*s.Uptime)*time.Second, true
				}
			}
		}
	}
	if !f.Answered && len(errs) > 0 {
		return f, errors.Join(errs...)
	}
	return f, nil
}

func (o *HTTPObserver) get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, body, nil
}
