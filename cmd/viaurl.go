package cmd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/tasmota"
)

// checkViaURL validates --via-url and --serve-addr before any work: the
// file server is Tasmota's, for firmware images, bound to one IP.
func (o *pushOptions) checkViaURL(a *app, proto upload.Protocol) error {
	if proto == upload.Tasmota && o.ExpectVersion != "" && strings.Trim(o.ExpectVersion, "0123456789.") != "" {
		return a.flagError("expect-version", "Tasmota reports its release as digits and dots (14.3.0 of \"14.3.0(tasmota)\"): give that")
	}
	if o.ServeAddr != "" && !o.ViaURL {
		return a.flagError("serve-addr", "needs --via-url: only the upgrade by URL runs a file server")
	}
	if !o.ViaURL {
		return nil
	}
	if proto != upload.Tasmota {
		return usageErrorf("--via-url needs --protocol tasmota: only Tasmota devices fetch their image by URL")
	}
	if o.Filesystem {
		return usageErrorf("--via-url sends firmware only: Tasmota's upgrade by URL takes no filesystem image")
	}
	if o.ServeAddr != "" {
		if err := checkServeAddr(o.ServeAddr); err != nil {
			return a.flagError("serve-addr", "%v", err)
		}
	}
	return nil
}

// parseServeAddr reads --serve-addr: an IP, or IP:PORT, never a name (the
// server binds exactly what is given).
func parseServeAddr(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, errBadServeAddr
	}
	return netip.AddrPortFrom(a, 0), nil
}

// checkServeAddr refuses what the file server must not bind: a wildcard
// would offer the image (and the Wi-Fi credentials in it) on every
// network this host is on.
func checkServeAddr(s string) error {
	ap, err := parseServeAddr(s)
	if err != nil {
		return err
	}
	if ap.Addr().IsUnspecified() {
		return errors.New("a wildcard address would serve the image on every network this host is on: give this host's address on the devices' network")
	}
	// Bound now, and let go, as --host-ip is: an address this host does
	// not have fails before any device is touched, not per device.
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		switch {
		case isErrno(err, errnoAddrNotAvail):
			return fmt.Errorf("%s is not an address of this host: give this host's address on the devices' network", ap.Addr())
		case isErrno(err, errnoAddrInUse):
			return fmt.Errorf("port %d is in use on this host: pick another port, or give the IP alone (any free port)", ap.Port())
		}
		return fmt.Errorf("cannot serve on it: %v", rootCause(err))
	}
	ln.Close()
	return nil
}

var errBadServeAddr = errors.New("want an IP address or IP:PORT")

// serveFiles starts package fileserve's server for Tasmota's upgrade by URL.
func serveFiles(log *slog.Logger) tasmota.ServeFunc {
	return func(addr string, files map[string]string, onFetch func(tasmota.Fetch)) (tasmota.FileServer, error) {
		return fileserve.Start(fileserve.Config{Addr: addr, Files: files, Logger: log, OnFetch: func(f fileserve.Fetch) {
			onFetch(tasmota.Fetch{Name: f.Name, Remote: f.Remote, MAC: f.MAC, Status: f.Status, Bytes: f.Bytes, Range: f.Range})
		}})
	}
}

// routeAddr is the local address that routes to a device.
func routeAddr(dst netip.Addr) (netip.Addr, error) { return fileserve.RouteAddr(dst) }
