// Package testbroker runs Debian's mosquitto for a test, on 127.0.0.1 and
// a free port, with a configuration file of its own (never the system's
// configuration or service): a test inside its own network namespace
// cannot reach the host's broker anyway, and must not depend on it.
package testbroker

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Option changes how the broker is started.
type Option func(*options)

type options struct {
	users    map[string]string
	keepLogs bool
	persist  bool
	certFile string
	keyFile  string
}

// WithUser makes the broker require a user name and password (anonymous
// clients are refused); each call adds one user.
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

// WithPersistence makes the broker save its sessions (subscriptions and
// queued QoS 1 messages of clients with the clean session off) when it
// stops, and load them when Restart starts it again, as a production
// broker does. Without it a Restart forgets every session.
func WithPersistence() Option { return func(o *options) { o.persist = true } }

// WithTLS makes the listener TLS only (mqtts), with the server
// certificate and key in these PEM files (the certificate must name
// 127.0.0.1).
func WithTLS(certFile, keyFile string) Option {
	return func(o *options) { o.certFile, o.keyFile = certFile, keyFile }
}

// Broker is a running mosquitto.
type Broker struct {
	t    testing.TB
	bin  string
	dir  string
	conf string
	addr string
	opts options

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd ended
}

// mosquittoPaths are where the binary lives when it is not on PATH
// (Debian puts it in /usr/sbin, often not on a user's PATH).
var mosquittoPaths = []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto", "/usr/local/opt/mosquitto/sbin/mosquitto"}

// Binary returns the mosquitto binary's path, "" when none is found.
func Binary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range mosquittoPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// Start runs mosquitto on 127.0.0.1:<free port> for the test (t.Cleanup
// stops it). Without mosquitto: t.Skip with one line, unless CI=true,
// then t.Fatal.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("mosquitto is required (CI=true): install Debian's mosquitto package")
		}
		t.Skip("no mosquitto here: install it (Debian: apt-get install mosquitto) to run this test")
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(&b.opts)
	}
	t.Cleanup(func() {
		b.Stop()
		if b.opts.keepLogs && t.Failed() {
			if log, err := os.ReadFile(b.logFile()); err == nil {
				t.Logf("mosquitto's log:\n%s", log)
			}
		}
	})
	// A port found free can be taken before mosquitto binds it: try again.
	var err error
	for range 5 {
		var port int
		port, err = freePort()
		if err != nil {
			break
		}
		b.addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
		if err = b.writeConfig(); err != nil {
			break
		}
		if err = b.start(); err == nil {
			return b
		}
	}
	t.Fatalf("testbroker: %v", err)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("no free port on 127.0.0.1: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (b *Broker) logFile() string { return filepath.Join(b.dir, "mosquitto.log") }

func (b *Broker) writeConfig() error {
	_, port, _ := net.SplitHostPort(b.addr)
	var c strings.Builder
	fmt.Fprintf(&c, "listener %s 127.0.0.1\n", port)
	if b.opts.certFile != "" {
		fmt.Fprintf(&c, "certfile %s\nkeyfile %s\n", b.opts.certFile, b.opts.keyFile)
	}
	fmt.Fprintf(&c, "log_dest file %s\n", b.logFile())
	c.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\nlog_timestamp_format %H:%M:%S\n")
	if os.Geteuid() == 0 {
		// Run as root, mosquitto would switch to the user "mosquitto",
		// who cannot read the test's private directory.
		c.WriteString("user root\n")
	}
	if b.opts.persist {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s%c\nautosave_interval 0\n", b.dir, filepath.Separator)
	} else {
		c.WriteString("persistence false\n")
	}
	if len(b.opts.users) > 0 {
		pw := filepath.Join(b.dir, "passwd")
		if err := writePasswords(pw, b.opts.users); err != nil {
			return err
		}
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	return os.WriteFile(b.conf, []byte(c.String()), 0o600)
}

// writePasswords writes mosquitto's password file: user:$6$<salt>$<hash>,
// the hash SHA-512 over the password then the salt, both base64.
func writePasswords(file string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	var out strings.Builder
	for _, n := range names {
		salt := make([]byte, 12)
		_, _ = rand.Read(salt)
		sum := sha512.Sum512(append([]byte(users[n]), salt...))
		fmt.Fprintf(&out, "%s:$6$%s$%s\n", n, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(sum[:]))
	}
	return os.WriteFile(file, []byte(out.String()), 0o600)
}

// start runs mosquitto and waits until it accepts connections.
func (b *Broker) start() error {
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Dir = b.dir
	out, err := os.OpenFile(filepath.Join(b.dir, "stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("cannot start mosquitto: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(exit)
	}()
	b.mu.Lock()
	b.cmd, b.exit = cmd, exit
	b.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return fmt.Errorf("mosquitto exited at start: %s", b.tail())
		default:
		}
		if c, err := net.DialTimeout("tcp", b.addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Stop()
	return fmt.Errorf("mosquitto did not listen on %s within 15 s: %s", b.addr, b.tail())
}

// tail is the end of mosquitto's log and stderr, for an error.
func (b *Broker) tail() string {
	var s string
	for _, f := range []string{b.logFile(), filepath.Join(b.dir, "stderr")} {
		if x, err := os.ReadFile(f); err == nil {
			s += string(x)
		}
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// URL is mqtt://127.0.0.1:PORT (mqtts:// WithTLS).
func (b *Broker) URL() string {
	if b.opts.certFile != "" {
		return "mqtts://" + b.addr
	}
	return "mqtt://" + b.addr
}

// Addr is 127.0.0.1:PORT.
func (b *Broker) Addr() string { return b.addr }

// Stop stops the broker (clients see their connections end). Stopping a
// stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, exit := b.cmd, b.exit
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	// SIGTERM lets mosquitto save its sessions (WithPersistence); where
	// signals are not sent (Windows), Kill.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = cmd.Process.Kill()
	}
	select {
	case <-exit:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
}

// Restart stops the broker and starts it again on the same port, to test
// reconnects. Sessions survive only WithPersistence.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	var err error
	for range 50 { // the port may stay taken a moment
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("testbroker: restart: %v", err)
}
