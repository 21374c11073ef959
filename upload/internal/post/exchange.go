package post

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// WithTimeout bounds ctx by cfg.Timeout (none when 0), so that requests
// made under it word its end as the overall timeout.
func WithTimeout(ctx context.Context, cfg Config) (context.Context, context.CancelFunc) {
	if cfg.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, cfg.Timeout, errOverallTimeout)
}

// Exchange sends a request without a body (head, through its blank line)
// on a connection of its own and reads the answer, for at most the idle
// timeout. what names the request in errors ("GET /ota/start"). A request
// that got no answer is a *upload.DeviceError: network (closed or reset),
// timeout (silent), rejected (not HTTP), or the connect's own class; after
// ctx ended it wraps ctx.Err().
func Exchange(ctx context.Context, cfg Config, addr, what string, head []byte) (*Answer, error) {
	conn, err := Dial(ctx, cfg, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	idle := cfg.idleTimeout()
	_ = conn.SetDeadline(time.Now().Add(idle))
	if _, err = conn.Write(head); err == nil {
		var a *Answer
		if a, err = ReadAnswer(bufio.NewReaderSize(conn, 4<<10)); a != nil {
			cfg.log().Debug("answered", "addr", addr, "request", what, "status", a.Status)
			return a, nil
		}
	}
	var ne net.Error
	switch {
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errOverallTimeout):
		return nil, &upload.DeviceError{Class: upload.ClassTimeout, Err: ctx.Err(),
			Reason: fmt.Sprintf("no answer to %s within the overall timeout of %v", what, cfg.Timeout)}
	case ctx.Err() != nil:
		class := upload.ClassNetwork
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			class = upload.ClassTimeout
		}
		return nil, &upload.DeviceError{Class: class, Err: ctx.Err(), Reason: "interrupted during " + what}
	case errors.Is(err, ErrNotHTTP):
		return nil, &upload.DeviceError{Class: upload.ClassRejected, Err: err,
			Reason: fmt.Sprintf("%s answered %s with something that is not HTTP: is this the device's web port?", addr, what)}
	case errors.As(err, &ne) && ne.Timeout():
		return nil, &upload.DeviceError{Class: upload.ClassTimeout, Err: err,
			Reason: fmt.Sprintf("the device gave no answer to %s for %v", what, idle)}
	}
	return nil, &upload.DeviceError{Class: upload.ClassNetwork, Err: err,
		Reason: fmt.Sprintf("the device closed the connection without answering %s: it may have rebooted", what)}
}
