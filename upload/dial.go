package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
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
		return ClassNetwork, fmt.Sprintf("connection refused by %s: nothing listens on that TCP port (an ArduinoOTA device speaks espota: try --protocol espota)", addr)
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

// ResolverReason words the system resolver's failure in a few words: Go's
// text carries the dial chain ("dial udp 10.0.0.53:53: connect: network is
// unreachable"), of which a user can act on the last part only.
func ResolverReason(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return "the system resolver has no such name"
	case e.IsTimeout:
		return "the system resolver timed out"
	case strings.Contains(e.Err, "dial ") || strings.Contains(e.Err, "connect: "):
		return "the system resolver could not reach a DNS server (" + lastPart(e.Err) + ")"
	}
	return "system resolver: " + lastPart(e.Err)
}

// lastPart is the innermost message of an "a: b: c" chain.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

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
