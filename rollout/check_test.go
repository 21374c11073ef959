package rollout

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// checkingFamily adds the optional checks to the fake family.
type checkingFamily struct {
	*fakeFamily
	urlErr, compErr error

	mu    sync.Mutex
	urls  []string
	comps map[string]string
}

func (c *checkingFamily) CheckURL(u string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.urls = append(c.urls, u)
	return c.urlErr
}

func (c *checkingFamily) CheckCompanions(_ string, comps map[string]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.comps = comps
	return c.compErr
}

// The family's own checks of the URL and of the companions run before
// anything is published or told: a refusal ends the run with its error,
// and no device is read or commanded.
func TestFamilyChecksBeforePublishing(t *testing.T) {
	for _, tc := range []struct {
		name            string
		public          string
		urlErr, compErr error
	}{
		{name: "url refused", urlErr: errors.New("no % here")},
		{name: "public url refused", public: "http://proxy.example/ota", urlErr: errors.New("no % here")},
		{name: "companion refused", compErr: errors.New("fw.bin.gz is not fw.bin")},
		{name: "accepted", public: "http://127.0.0.1:9/ota"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Plan{}, succeed)
			c := &checkingFamily{fakeFamily: r.f, urlErr: tc.urlErr, compErr: tc.compErr}
			r.cfg.Family = c
			r.cfg.PublicURL = tc.public
			res, err := Run(context.Background(), r.cfg)
			want := tc.urlErr
			if tc.compErr != nil {
				want = tc.compErr
			}
			if want == nil {
				if err != nil || len(res) != 1 {
					t.Fatalf("Run: %v", err)
				}
			} else if err == nil || err.Error() != want.Error() {
				t.Fatalf("Run: %v, want %v", err, want)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if _, ok := c.comps["fw-minimal.bin"]; !ok || len(c.comps) != 1 {
				t.Errorf("companions checked: %v", c.comps)
			}
			if tc.compErr == nil && (len(c.urls) != 1 || !strings.HasSuffix(c.urls[0], "/fw.bin") ||
				tc.public != "" && !strings.HasPrefix(c.urls[0], tc.public+"/")) {
				t.Errorf("URLs checked: %q", c.urls)
			}
			if want != nil && r.f.commands(r.devs[0].Topic) != 0 {
				t.Errorf("commanded after a refusal")
			}
		})
	}
}
