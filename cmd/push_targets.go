package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/devinfo"
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
	// leftOut counts the ESPHome devices --all found and left out
	// (ESPHome was not asked for); mqttOnly the inventory devices left
	// out for having no address.
	leftOut  int
	mqttOnly int
	mu       sync.Mutex
}

// needsDiscover says whether the targets need package discover: --all,
// --group, .local names, inventory names, or --protocol esphome (an
// ESPHome device tells its platform and what it runs only in its
// _esphomelib._tcp record, which is matched to a plain address too).
// Otherwise plain addresses, host names and URLs do not, and then push
// sends no multicast at all.
func (o *pushOptions) needsDiscover(proto upload.Protocol, isInventory func(string) bool) bool {
	if o.sel.All || o.sel.Group != "" || proto == upload.ESPHome {
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

// candidate is one target as given, before targets that name one device
// are merged.
type candidate struct {
	t upload.Target
	// addrs are the resolved addresses (nil: the name did not resolve;
	// the target then stays a device of its own and fails on its own).
	addrs []netip.Addr
	// cred is the device's own credentials (the inventory's auth:, a
	// URL's user:password@); nil means the command line's.
	cred *upload.Credentials
	hint upload.Hint
}

// resolveTargets turns the arguments, --all and --group into targets, one
// per device: targets whose resolved addresses intersect, on the same
// port, are merged before anything is sent.
func (o *pushOptions) resolveTargets(ctx context.Context, a *app, p *pushPlan) (*pushTargets, error) {
	pt := &pushTargets{hints: map[string]upload.Hint{}, creds: map[string]upload.Credentials{}}
	var cands []candidate
	inv := p.inv
	res := &discover.Resolver{NoMDNS: true} // plain names: the system's resolver only
	if !o.needsDiscover(p.proto, func(name string) bool { _, ok := inv.Device(name); return ok }) {
		for i, t := range p.targets {
			cands = append(cands, candidate{t: t, cred: p.targetCreds[i], hint: wordHint(t, p.proto)})
		}
	} else {
		cfg := p.mdns
		if !o.sel.InventoryOnly {
			pt.mdns = &cfg
		}
		var err error
		if cands, err = o.discoverTargets(ctx, a, p, pt); err != nil {
			return nil, err
		}
	}
	// Every name is resolved before any upload, so that two names of one
	// device are seen to be one.
	parallel(len(cands), 16, func(i int) {
		c := &cands[i]
		if c.addrs != nil {
			return
		}
		if addrs, err := res.Lookup(ctx, c.t.Host); err == nil {
			c.addrs = addrs
		} else {
			a.log.Debug("target not resolved before the upload", "target", c.t.Name, "err", err)
		}
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	addrs := make([][]netip.Addr, len(cands))
	ports := make([]int, len(cands))
	for i, c := range cands {
		addrs[i], ports[i] = c.addrs, portOr(c.t.Port)
	}
	for _, g := range discover.SameDevice(addrs, ports) {
		first := cands[g.Items[0]]
		if len(g.Items) > 1 {
			names := make([]string, len(g.Items))
			var cred *upload.Credentials
			for k, i := range g.Items {
				c := cands[i]
				names[k] = c.t.Name
				if c.cred == nil {
					continue
				}
				if cred != nil && !sameCredentials(*cred, *c.cred) {
					return nil, usageErrorf("%s are the same device (%s) but have different credentials (inventory auth:, or a URL's user:password@): give it one; nothing was sent",
						joinNames(names[:k+1]), net.JoinHostPort(g.Shared.String(), strconv.Itoa(ports[i])))
				}
				cred = c.cred
			}
			// The first target labels the device (and is its Host
			// header); the device's own credentials go with it.
			first.cred = cred
			if first.hint.TXT == nil {
				for _, i := range g.Items[1:] {
					if h := cands[i].hint; h.TXT != nil {
						first.hint = h
						break
					}
				}
			}
			if !a.opts.Quiet {
				fmt.Fprintf(a.io.ErrOut, "ots-ota: %s are the same device (%s): updating it once as %s\n",
					a.secrets.Redact(joinNames(names)), net.JoinHostPort(g.Shared.String(), strconv.Itoa(ports[g.Items[0]])),
					a.secrets.Redact(first.t.Name))
			}
		}
		t := first.t
		// Every device goes through the detection table (the runner's
		// probe): the word (--protocol, a URL, the inventory) travels in
		// the hint, so that a raw body never goes to a device recognised
		// as a family ots-ota does not speak, whoever named http.
		t.Protocol = upload.Auto
		pt.targets = append(pt.targets, t)
		if first.cred != nil {
			pt.creds[t.Addr()] = *first.cred
		}
		pt.hints[t.Addr()] = first.hint
	}
	return pt, nil
}

// discoverTargets selects the devices package discover finds: inventory
// names, .local names, --all, --group; URL targets are added as given.
// Devices that could not be resolved become results of their own.
func (o *pushOptions) discoverTargets(ctx context.Context, a *app, p *pushPlan, pt *pushTargets) ([]candidate, error) {
	var args []string
	var urls []candidate
	for i, s := range o.Targets {
		if strings.Contains(s, "://") {
			urls = append(urls, candidate{t: p.targets[i], cred: p.targetCreds[i], hint: wordHint(p.targets[i], p.proto)})
			continue
		}
		args = append(args, s)
	}
	if o.sel.InventoryOnly {
		a.log.Info("selecting devices from the inventory")
	} else {
		a.log.Info("selecting devices: mDNS and the inventory", "browse_timeout", o.Browse)
	}
	sel, err := discover.Select(ctx, discover.Selection{
		Args: args, All: o.sel.All, Group: o.sel.Group, InventoryOnly: o.sel.InventoryOnly, Cached: o.sel.Cached,
		Inventory: p.inv, Config: p.mdns, BrowseTimeout: o.Browse, KeepDuplicates: true,
		// --all takes ESPHome devices only when ESPHome is asked for.
		SkipESPHome: p.proto != upload.ESPHome && !slices.ContainsFunc(o.mdns.Services, func(s string) bool {
			n, err := discover.ServiceName(s)
			return err == nil && n == devinfo.ESPHomeService
		}),
		SkippedESPHome: func(n int) { pt.leftOut = n },
		MQTTOnly: func(d inventory.Device) {
			pt.mqttOnly++
			leftOutMQTTOnly(a, d, "not pushed")
		},
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
	var cands []candidate
	for _, s := range sel {
		t := s.Target
		if s.Err != nil {
			pt.failed = append(pt.failed, upload.Result{Device: t.Name, Addr: t.Host, Outcome: upload.OutcomeUnreachable,
				Message: "could not resolve: " + s.Err.Error()})
			continue
		}
		ut := upload.Target{Name: t.Name, Host: t.Host, Port: t.Port, WebPort: t.WebPort, Protocol: upload.Auto, Chip: t.Chip}
		if t.Service == devinfo.ESPHomeService {
			// The platform its record names, for the transport's screen.
			ut.Platform = t.TXT["platform"]
		}
		if len(t.Addrs) > 0 {
			ut.Host = t.Addrs[0].String()
		}
		if ut.Port == 0 {
			ut.Port = o.Port
		}
		if ut.WebPort == 0 {
			ut.WebPort = o.WebPort
		}
		h := upload.Hint{Service: t.Service, TXT: t.TXT}
		// --protocol wins over the inventory's protocol: (docs/protocols).
		if pr, err := upload.ParseProtocol(t.Protocol); p.proto == upload.Auto && err == nil && pr != upload.Auto {
			h.Protocol, h.From = pr, "the inventory"
		} else if p.proto != upload.Auto {
			h.Protocol, h.From = p.proto, "--protocol"
		}
		c := candidate{t: ut, addrs: slices.Clone(t.Addrs), hint: h}
		if c.addrs == nil {
			c.addrs = []netip.Addr{} // resolved by Select: not to be looked up again
		}
		if !t.Auth.IsZero() {
			secret, err := inventorySecret(t.Auth)
			if err != nil {
				pt.failed = append(pt.failed, upload.Result{Device: ut.Name, Addr: ut.Addr(), Outcome: upload.OutcomeFailed,
					Message: "nothing sent: the inventory's auth for this device: " + err.Error()})
				continue
			}
			// The device's own secret: Bearer over HTTP, the espota password.
			c.cred = &upload.Credentials{Password: secret}
			a.secrets.Add(secret)
		}
		cands = append(cands, c)
	}
	return append(cands, urls...), nil
}

// wordHint is what the command line says of a target's protocol: a URL
// names raw HTTP unless --protocol names a web uploader, else --protocol
// when it is not auto.
func wordHint(t upload.Target, flag upload.Protocol) upload.Hint {
	switch {
	case flag == upload.Form || flag == upload.ElegantOTA || flag == upload.WLED:
		return upload.Hint{Protocol: flag, From: "--protocol"}
	case strings.Contains(t.Name, "://"):
		return upload.Hint{Protocol: upload.HTTP, From: "the URL"}
	case flag != upload.Auto && flag != "":
		return upload.Hint{Protocol: flag, From: "--protocol"}
	}
	return upload.Hint{}
}

// sameCredentials reports whether two per-device credentials send the
// same thing.
func sameCredentials(x, y upload.Credentials) bool {
	return x.User == y.User && x.Token.Equal(y.Token) && x.Password.Equal(y.Password)
}

// joinNames is "a and b", "a, b and c".
func joinNames(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func portOr(p int) int {
	if p == 0 {
		return 3232
	}
	return p
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
	// An ESPHome record names its API port, not the OTA port, which is
	// only its platform's default unless HOST:PORT or the inventory says
	// otherwise: it matches by address alone.
	match := func(d discover.Device) bool {
		return (d.Service == devinfo.ESPHomeService || d.OTAPort() == port) && slices.Contains(d.Addrs, addr)
	}
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
