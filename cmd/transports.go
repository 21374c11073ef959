package cmd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/elegantota"
	"github.com/ots-ota/ots-ota/upload/esphome"
	"github.com/ots-ota/ots-ota/upload/espota"
	"github.com/ots-ota/ots-ota/upload/form"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
	"github.com/ots-ota/ots-ota/upload/tasmota"
	"github.com/ots-ota/ots-ota/upload/wled"
)

// tasmotaQuiet shortens Tasmota's quiet rule (tasmota.Transport's
// QuietProbe, QuietHold; zero = the package's) for this package's tests,
// whose stand-in devices restart in a fraction of a real one's time.
var tasmotaQuiet struct{ probe, hold time.Duration }

// pushTransports builds the transport of every protocol family push speaks,
// keyed by protocol as upload.Options.Transports takes them. It is the one
// place cmd/ names the client packages under upload/, as a program names
// its database/sql drivers: a new family is one more entry here. closeAll
// releases what the transports share: the one connect-back listener that
// serves every espota upload (an explicit --host-ip is bound now, so a taken
// port fails before any device is touched) and Tasmota's file servers
// (--via-url), which serve the image until the push ends.
func pushTransports(o *pushOptions, log *slog.Logger) (transports map[upload.Protocol]upload.Transport, closeAll func(), err error) {
	ln, err := espota.NewListener(o.HostIP, o.HostPort, log)
	if err != nil {
		return nil, nil, fmt.Errorf("espota connect-back listener: %v", err)
	}
	files := &tasmota.Server{Serve: serveFiles(log), Route: routeAddr, Addr: o.ServeAddr, Logger: log}
	return map[upload.Protocol]upload.Transport{
		upload.HTTP: &rawhttp.Transport{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, Logger: log},
		upload.Espota: &espota.Transport{Listener: ln, ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout,
			MD5Password: o.MD5Password, Logger: log},
		// The web uploaders: the Arduino libraries, WLED and Tasmota.
		upload.Form:       &form.Transport{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, Logger: log},
		upload.ElegantOTA: &elegantota.Transport{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, Logger: log},
		// --force skips WLED's release check, on both sides (skipValidation=1).
		upload.WLED: &wled.Transport{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, SkipValidation: o.Force, Logger: log},
		upload.Tasmota: &tasmota.Transport{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, Logger: log,
			ViaURL: o.ViaURL, Server: files, QuietProbe: tasmotaQuiet.probe, QuietHold: tasmotaQuiet.hold},
		// ESPHome's native OTA keeps its own data timeout (160 s: the
		// device allows 90 s without data); one gzip per push, shared.
		upload.ESPHome: &esphome.Transport{ConnectTimeout: o.ConnectTimeout, Logger: log},
	}, func() { ln.Close(); files.Close() }, nil
}
