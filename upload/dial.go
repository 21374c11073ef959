package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ots-ota/ots-ota/detect"
)

// DefaultConnectTimeout bounds a connect to a device where nothing else
// does: the probe's, and the HTTP transport's default.
const DefaultConnectTimeout = 5 * time.Second

// ClassifyDial names a connect failure: refused (nothing listens on the TCP
// port), silent (timeout: off, rebooting or out of reach), or no route.
func ClassifyDial(addr string, timeout time.Duration, err error) (Class, string) {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case IsRefused(err):
		// Which protocol to try instead is the detection table's to say
		// (package detect); a transport sees only its own connect.
		return ClassNetwork, fmt.Sprintf("connection refused by %s: nothing listens on that TCP port", addr)
	case errors.As(err, &dnsErr):
		return ClassUnresolved, fmt.Sprintf("cannot resolve %s: %s", dnsErr.Name, ResolverReason(dnsErr))
	case isUnreachable(err):
		return ClassUnreachable, fmt.Sprintf("no route to %s: the device is not on a network this host reaches", addr)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return ClassUnreachable, fmt.Sprintf("no answer from %s within %v: the device is off, rebooting or out of reach", addr, timeout)
	case isReset(err):
		return ClassNetwork, fmt.Sprintf("%s reset the connection", addr)
	}
	return ClassNetwork, fmt.Sprintf("cannot connect to %s: %s", addr, lastErrText(err))
}

// ResolverReason words the system resolver's failure in a few words, as
// the detection table does (detect.ResolverReason), for the transports.
func ResolverReason(e *net.DNSError) string { return detect.ResolverReason(e) }

// lastErrText is the innermost message of err, without Go's wrap chain.
func lastErrText(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// IsRefused reports whether err is a refusal: a TCP connect answered with
// RST, or ICMP port unreachable for an earlier datagram on a connected UDP
// socket (detect.IsRefused).
func IsRefused(err error) bool { return detect.IsRefused(err) }

func isReset(err error) bool { return detect.IsReset(err) }

// isUnreachable: no route to the device, or no local address to reach it from.
func isUnreachable(err error) bool { return detect.IsUnreachable(err) || isAddrNotAvail(err) }
