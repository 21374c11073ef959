package devinfo

import (
	"context"
	"net"
	"time"
)

// UDPWait bounds how long UDPClosed waits for the ICMP answer. On a LAN
// it comes back in milliseconds; a device that listens answers nothing,
// so this is what probing a live espota device costs.
const UDPWait = time.Second

// UDPClosed reports whether nothing listens on UDP at addr (host:port):
// one empty datagram, sent on a connected UDP socket, drew an ICMP port
// unreachable within wait (UDPWait when wait <= 0). ArduinoOTA ignores an
// empty datagram (parsePacket returns 0; ESP8266's parser finds no
// command), so this tells a dead espota port from a live one without an
// invitation, which would start an update session. Silence, or any other
// error, is false: a device may listen there, and ICMP may be filtered.
func UDPClosed(ctx context.Context, addr string, wait time.Duration) bool {
	if wait <= 0 {
		wait = UDPWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	uc, ok := c.(*net.UDPConn)
	if !ok || reportPortUnreachable(uc) != nil {
		return false
	}
	if _, err := uc.Write(nil); err != nil {
		return isPortUnreachable(err)
	}
	dl, _ := ctx.Deadline()
	_ = uc.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	// A datagram back is something listening; ArduinoOTA sends none
	// unasked, but whatever answers is not nothing.
	var b [512]byte
	_, err = uc.Read(b[:])
	return err != nil && isPortUnreachable(err)
}
