package cmd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// espotaOptions are espota.py's arguments, spelled as its argparse has them
// (research/espota.md §1.11), so existing upload lines work unchanged.
type espotaOptions struct {
	IP       string
	HostIP   string
	Port     int
	HostPort int
	Auth     string
	MD5      bool
	File     string
	Spiffs   bool
	Debug    bool
	Progress bool
	Timeout  int
}

const espotaLong = `A drop-in for Arduino's espota.py: the same options, in any order, with the same
spellings (-p3232, -p 3232, --port=3232, --port 3232, --auth=, -a "", --host_ip,
--host_port), the same defaults and the same exit status: 0 when the device took the
image, 1 otherwise (2 for an option espota.py's parser would also reject).

It runs 'ots-ota push --protocol espota' on the one device: the image is checked
before anything is sent (not with -s, a filesystem image), a device that never
connects back is reported as such (a firewall on this computer, usually), transient
failures are retried, and where the device tells its version afterwards it is
verified. The output is push's.

As the ESP8266 script does, FILE.signed is sent instead of FILE when it exists.
Not supported: espota.py's option abbreviations (--ti for --timeout).`

func newEspotaCmd(a *app) *cobra.Command { return espotaCommand(a, &espotaOptions{}) }

// espotaCommand binds the command line into o.
func espotaCommand(a *app, o *espotaOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "espota -i ESP_IP -f FILE [-I HOST_IP] [-p ESP_PORT] [-P HOST_PORT] [-a AUTH] [-m] [-s] [-d] [-r] [-t TIMEOUT]",
		Short: "espota.py's command line, for Arduino IDE and PlatformIO espota set-ups",
		Long:  espotaLong,
		Example: `  ots-ota espota -i 192.168.1.40 -p 3232 "--auth=$PW" -f build/sketch.ino.bin
  ots-ota espota -r -i 192.168.1.41 -p 3232 -f build/littlefs.bin -s
  ots-ota espota -i esp8266-1a2b3c.local -p 8266 -a "$PW" -f firmware.bin`,
		Args: argsNone,
		// Only the command line counts, as for espota.py: a top-level
		// "port" or "timeout" in the config file means something else.
		Annotations:           map[string]string{"config": "skip"},
		DisableFlagsInUseLine: true,
	}
	c.RunE = func(cmd *cobra.Command, _ []string) error { return runEspota(cmd.Context(), a, o) }
	f := c.Flags()
	f.SortFlags = false
	f.StringVarP(&o.IP, "ip", "i", "", "ESP32 IP address (or host name)")
	f.StringVarP(&o.HostIP, "host_ip", "I", "0.0.0.0", "host IP address the device connects back to")
	f.IntVarP(&o.Port, "port", "p", 3232, "ESP32 OTA port (ESP8266: 8266)")
	f.IntVarP(&o.HostPort, "host_port", "P", 0, "host server OTA port (default: random)")
	f.StringVarP(&o.Auth, "auth", "a", "", "set authentication password")
	f.BoolVarP(&o.MD5, "md5-target", "m", false, "use the MD5 password hash (devices with stored MD5 passwords)")
	f.StringVarP(&o.File, "file", "f", "", "image file")
	f.BoolVarP(&o.Spiffs, "spiffs", "s", false, "transmit a SPIFFS/LittleFS image (no app-image check)")
	f.BoolVarP(&o.Debug, "debug", "d", false, "show debug output")
	f.BoolVarP(&o.Progress, "progress", "r", false, "show progress output (accepted; push shows bars on a terminal)")
	f.IntVarP(&o.Timeout, "timeout", "t", 10, "invitation timeout: a silent device is given up after about 10 × TIMEOUT seconds, as espota.py does (spread over the retries)")
	_ = c.MarkFlagFilename("file", "bin")
	_ = c.RegisterFlagCompletionFunc("ip", completeTargets(a))
	return c
}

// pushArgs is the push command line that does what o asks. The password
// travels inside the process only.
func (o *espotaOptions) pushArgs() ([]string, error) {
	switch {
	case o.Port < 1 || o.Port > 65535:
		return nil, usageErrorf("-p %d: port out of range (1–65535)", o.Port)
	case o.HostPort < 0 || o.HostPort > 65535:
		return nil, usageErrorf("-P %d: port out of range (1–65535)", o.HostPort)
	case o.Timeout <= 0:
		return nil, usageErrorf("-t %d: the timeout must be at least 1 second", o.Timeout)
	case net.ParseIP(o.HostIP) == nil:
		return nil, usageErrorf("-I %q: not an IP address", o.HostIP)
	}
	// espota.py waits -t seconds for each of its 10 invitations, then gives
	// up. push tries espotaTries times, each with 10 invitations: the same
	// total wait for a device that never answers, the retries for the rest.
	perTry := time.Duration(o.Timeout) * 10 * time.Second / espotaTries
	args := []string{"push", "--protocol", "espota", "--port", strconv.Itoa(o.Port),
		"--retries", strconv.Itoa(espotaTries - 1), "--connect-timeout", perTry.String()}
	if o.HostIP != "0.0.0.0" && o.HostIP != "::" {
		args = append(args, "--host-ip", o.HostIP)
	}
	if o.HostPort != 0 {
		args = append(args, "--host-port", strconv.Itoa(o.HostPort))
	}
	if o.Auth != "" {
		args = append(args, "--password", o.Auth)
	}
	if o.MD5 {
		args = append(args, "--md5-password")
	}
	if o.Spiffs {
		args = append(args, "--filesystem")
	}
	if o.Debug {
		args = append(args, "-vv")
	}
	// HOST:PORT: espota's -p is explicit, and must win over the port mDNS
	// gives a .local name.
	return append(args, "--", o.File, net.JoinHostPort(strings.Trim(o.IP, "[]"), strconv.Itoa(o.Port))), nil
}

// espotaWords rewrites push's flag names in messages into espota.py's, so
// an Arduino IDE user is told a flag the espota command has. Push flags
// with no espota counterpart are named as push's ("ots-ota push --force").
var espotaWords = strings.NewReplacer(
	// The usage hint of the push command line espota built.
	"'ots-ota push --help'", "'ots-ota espota --help'",
	"--token, --user or --password", "-a/--auth",
	"--token or --password", "-a/--auth",
	"--password-file", "ots-ota push --password-file",
	"--password", "-a/--auth",
	"--host-ip/--host-port", "-I/--host_ip and -P/--host_port",
	"--host-ip", "-I/--host_ip",
	"--host-port", "-P/--host_port",
	"--idle-timeout", "the idle timeout",
	"--connect-timeout", "-t/--timeout",
	"--protocol espota", "-p with the device's espota port",
	"--filesystem", "-s/--spiffs",
	"--md5-password", "-m/--md5-target",
	"--force", "ots-ota push --force",
	"--timeout", "ots-ota push --timeout",
	"--expect-version", "ots-ota push --expect-version",
	"--no-verify", "ots-ota push --no-verify",
	"--no-wait-valid", "ots-ota push --no-wait-valid",
	"--retries", "ots-ota push --retries",
	"--canary-accept-unverified", "ots-ota push --canary-accept-unverified",
	"--interface", "ots-ota push --interface",
	"--inventory-only", "ots-ota push --inventory-only",
	"--chip", "ots-ota push --chip",
)

// espotaTries is how often the drop-in tries one upload.
const espotaTries = 4

func runEspota(ctx context.Context, a *app, o *espotaOptions) error {
	// The config loader is skipped, and with it the logger -v asks for.
	a.log = newLogger(a.io.ErrOut, a.opts, a.start, &a.secrets)
	if o.IP == "" || o.File == "" {
		// espota.py's own words and status for a missing -i or -f.
		const msg = "Not enough arguments (-i ESP_IP and -f FILE are required)."
		fmt.Fprintln(a.io.ErrOut, "ots-ota espota: "+msg)
		return silentError{code: ExitFailed, json: ptr(newErrorObject("usage", msg, "run 'ots-ota espota --help' for usage"))}
	}
	// The ESP8266 script sends FILE.signed instead of FILE when it exists
	// (the core's signed-update build step writes it).
	if _, err := os.Stat(o.File + ".signed"); err == nil {
		a.log.Info("sending the signed image, as the ESP8266 espota.py does", "file", o.File+".signed")
		o.File += ".signed"
	}
	args, err := o.pushArgs()
	if err != nil {
		return err
	}
	if a.opts.JSON {
		args = append([]string{"--json"}, args...)
	}
	if a.opts.Quiet {
		args = append([]string{"--quiet"}, args...)
	}
	if a.opts.ConfigFile != "" {
		args = append([]string{"--config", a.opts.ConfigFile}, args...)
	}
	// push's messages, in espota's flags.
	streams := *a.io
	streams.words = espotaWords.Replace
	// With --json, push's lines (its error lines and summary included) are
	// espota's, followed by espota's own summary.
	switch code := Execute(ctx, args, &streams); code {
	case ExitOK:
		return nil
	case ExitCancelled:
		return silentError{code: code}
	default:
		// espota.py knows two outcomes; push's 2 and 3 are failures here.
		return silentError{code: ExitFailed}
	}
}
