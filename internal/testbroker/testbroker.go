// Package testbroker runs Debian's mosquitto for a test, on 127.0.0.1 and
// a free port, with a configuration of its own (never the system's
// service).
package testbroker

import "testing"

// Option changes how the broker is started.
type Option func(*options)

type options struct {
	users    map[string]string
	keepLogs bool
}

// WithUser makes the broker require a user name and password; each call
// adds one user.
func WithUser(name, password string) Option {
	return func(o *options) {
		if o.users == nil {
			o.users = map[string]string{}
		}
		o.users[name] = password
	}
}

// KeepLogs writes the broker's log to the test's log when the test fails.
func KeepLogs() Option { return func(o *options) { o.keepLogs = true } }

// Broker is a running mosquitto.
type Broker struct {
	addr string
}

// Start runs mosquitto on 127.0.0.1:<free port> for the test (t.Cleanup
// stops it). Without mosquitto: t.Skip with one line, unless CI=true,
// then t.Fatal.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Skip("testbroker: not implemented")
	return nil
}

// URL is mqtt://127.0.0.1:PORT.
func (b *Broker) URL() string { return "mqtt://" + b.addr }

// Addr is 127.0.0.1:PORT.
func (b *Broker) Addr() string { return b.addr }

// Stop stops the broker.
func (b *Broker) Stop() {}

// Restart stops the broker and starts it again on the same port, to test
// reconnects.
func (b *Broker) Restart() {}
