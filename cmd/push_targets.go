package cmd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/inventory"
	"github.com/ots-ota/ots-ota/upload"
)

// pushTargets is the resolved device list and what mDNS or the inventory
// told about each device before anything was sent to it.
type pushTargets struct {
	targets []upload.Target
	// failed are named devices that could not be resolved: results of
	// their own, outcome unreachable.
	failed []upload.Result
	// hints by OTA address, for the protocol choice.
	hints map[string]upload.Hint
	// creds by OTA address: the inventory's per-device auth.
	creds map[string]upload.Credentials
	// mdns is set when mDNS is in use (--all, --group, .local names,
	// inventory names): verification then reads fresh TXT records.
	mdns *discover.Config
	mu   sync.Mutex
}

// needsDiscover says whether the targets need package discover: --all,
// --group, .local names or inventory names. Plain addresses, host names
// and URLs do not, and then push sends no multicast at all.
func (o *pushOptions) needsDiscover(isInventory func(string) bool) bool {
	if o.sel.All || o.sel.Group != "" {
		return true
	}
	for _, t := range o.Targets {
		if strings.Contains(t, "://") {
			continue
		}
		h := t
		if host, _, ok := strings.Cut(t, ":"); ok && strings.Count(t, ":") == 1 {
			h = host
		}
		if discover.IsLocal(h) || isInventory(t) {
			return true
		}
	}
	return false
}

// resolveTargets turns the arguments, --all and --group into targets.
func (o *pushOptions) resolveTargets(ctx context.Context, a *app, p *pushPlan) (*pushTargets, error) {
	pt := &pushTargets{hints: map[string]upload.Hint{}, creds: map[string]upload.Credentials{}}
	inv := p.inv
	if !o.needsDiscover(func(name string) bool { _, ok := inv.Device(name); return ok }) {
		pt.targets = p.targets
		return pt, nil
	}
	cfg := p.mdns
	if !o.sel.InventoryOnly {
		pt.mdns = &cfg
	}
	var args []string
	var urls []upload.Target
	for i, s := range o.Targets {
		if strings.Contains(s, "://") {
			urls = append(urls, p.targets[i])
			continue
		}
		args = append(args, s)
	}
	sel, err := discover.Select(ctx, discover.Selection{
		Args: args, All: o.sel.All, Group: o.sel.Group, InventoryOnly: o.sel.InventoryOnly, Cached: o.sel.Cached,
		Inventory: inv, Config: cfg, BrowseTimeout: o.Browse,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, discover.ErrNoTargets) || errors.Is(err, discover.ErrBadTarget) || o.sel.Group != "" {
			return nil, usageError{err}
		}
		return nil, err
	}
	for _, s := range sel {
		t := s.Target
		if s.Err != nil {
			pt.failed = append(pt.failed, upload.Result{Device: t.Name, Addr: t.Host, Outcome: upload.OutcomeUnreachable,
				Message: "could not resolve: " + s.Err.Error()})
			continue
		}
		ut := upload.Target{Name: t.Name, Host: t.Host, Port: t.Port, WebPort: t.WebPort, Protocol: p.proto}
		if len(t.Addrs) > 0 {
			ut.Host = t.Addrs[0].String()
		}
		if ut.Port == 0 {
			ut.Port = o.Port
		}
		if ut.WebPort == 0 {
			ut.WebPort = o.WebPort
		}
		if pr, err := upload.ParseProtocol(t.Protocol); err == nil && t.Protocol != "" {
			ut.Protocol = pr // the inventory's word wins
		}
		if !t.Auth.IsZero() {
			secret, err := inventorySecret(t.Auth)
			if err != nil {
				pt.failed = append(pt.failed, upload.Result{Device: ut.Name, Addr: ut.Addr(), Outcome: upload.OutcomeFailed,
					Message: "nothing sent: the inventory's auth for this device: " + err.Error()})
				continue
			}
			// The device's own secret: Bearer over HTTP, the espota password.
			pt.creds[ut.Addr()] = upload.Credentials{Password: secret}
		}
		pt.targets = append(pt.targets, ut)
		pt.hints[ut.Addr()] = upload.Hint{Protocol: ut.Protocol, Service: t.Service, TXT: t.TXT}
	}
	pt.targets = append(pt.targets, urls...)
	return pt, nil
}

// txt is the observer's TXT source: what the selection's browse saw, for
// the pre-flight read; while verifying a fresh browse (a record from before
// the update would show the old version), or nothing without mDNS.
func (pt *pushTargets) txt(ctx context.Context, t upload.Target) map[string]string {
	pt.mu.Lock()
	h := pt.hints[t.Addr()]
	pt.mu.Unlock()
	if !upload.IsVerifying(ctx) {
		return h.TXT
	}
	if pt.mdns == nil {
		return nil
	}
	addr, err := netip.ParseAddr(t.Host)
	if err != nil {
		return nil
	}
	port := t.Port
	if port == 0 {
		port = 3232
	}
	match := func(d discover.Device) bool { return d.Port == port && slices.Contains(d.Addrs, addr) }
	ds, err := discover.Browse(ctx, *pt.mdns, discover.BrowseOptions{Timeout: 2 * time.Second, Until: func(ds []discover.Device) bool {
		return slices.ContainsFunc(ds, func(d discover.Device) bool { return match(d) && d.TXT != nil })
	}})
	if err != nil {
		return nil
	}
	for _, d := range ds {
		if match(d) {
			return d.TXT
		}
	}
	return nil
}

// credentialsFor gives a device the inventory's auth, when it has one.
func (pt *pushTargets) credentialsFor(t upload.Target) (upload.Credentials, bool) {
	c, ok := pt.creds[t.Addr()]
	return c, ok
}

// inventorySecret reads the secret an inventory entry points to: an
// environment variable or the first line of a file (~ is the home folder).
func inventorySecret(ref inventory.AuthRef) (auth.Secret, error) {
	if ref.Env != "" {
		v := os.Getenv(ref.Env)
		if v == "" {
			return auth.Secret{}, fmt.Errorf("$%s is not set", ref.Env)
		}
		return auth.NewSecret(v), nil
	}
	path := ref.File
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			path = filepath.Join(home, rest)
		}
	}
	return readSecretFile(path)
}
