package core

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultKind names a fault.
type FaultKind string

// Fault kinds. The upload faults (drop, stall, error, power-loss) fire at a
// point of every upload; slow, trickle and latency hold while armed;
// no-return, refuse and status-error act once; early-answer, lose-answer and
// status-error act on HTTP devices only; no-connect-back, lose-ok, early-ok
// and chatter on espota sessions only (on the other protocol they do nothing:
// see FaultKind.Protocol).
const (
	FaultDrop          FaultKind = "drop"
	FaultStall         FaultKind = "stall"
	FaultError         FaultKind = "error"
	FaultPowerLoss     FaultKind = "power-loss"
	FaultSlow          FaultKind = "slow"
	FaultNoReturn      FaultKind = "no-return"
	FaultRefuse        FaultKind = "refuse"
	FaultLatency       FaultKind = "latency"
	FaultNoConnectBack FaultKind = "no-connect-back"
	FaultLoseOK        FaultKind = "lose-ok"
	// FaultEarlyAnswer: the HTTP handler answers its 200 once a point of
	// the body was read (0 %: right after the headers, before the erase).
	FaultEarlyAnswer FaultKind = "early-answer"
	// FaultLoseAnswer: the HTTP handler installs the image and restarts
	// without its 200 reaching the client.
	FaultLoseAnswer FaultKind = "lose-answer"
	// FaultNoReboot: the upload is accepted and answered, the new image is
	// made the boot image, but the device never restarts: it keeps running
	// the old one (a handler without esp_restart(); ArduinoOTA's
	// setRebootOnSuccess(false)).
	FaultNoReboot FaultKind = "no-reboot"
	// FaultStatusError: the next status reads answer 500.
	FaultStatusError FaultKind = "status-error"
	// FaultStatusDuringUpgrade (tasmota): a Status command that arrives
	// while an upgrade runs corrupts the image being written, as Tasmota's
	// maintainers warn it can: the upgrade fails and the old image keeps
	// running. Armed, it lets a test prove a client never asks.
	FaultStatusDuringUpgrade FaultKind = "status-during-upgrade"
	// FaultTrickle: the device takes the image a few bytes at a time at a
	// steady, very low rate.
	FaultTrickle FaultKind = "trickle"
	// FaultEarlyOK: espota sends its "OK" once a point of the image was taken.
	FaultEarlyOK FaultKind = "early-ok"
	// FaultChatter: espota stops taking data at a point and keeps repeating
	// its last count, never sending OK.
	FaultChatter FaultKind = "chatter"
)

// Modes of the faults that take one (Fault.Mode).
const (
	// ModeInstall (early-answer, early-ok; the default): after the early
	// answer the device reads the rest, installs the image and restarts.
	ModeInstall = "install"
	// ModeDiscard (early-answer): it reads the rest but does not install
	// the image, and does not restart.
	ModeDiscard = "discard"
	// ModeClose (early-answer, early-ok): it stops reading and closes the
	// connection right after the answer (unread data makes it an RST); the
	// old image keeps running.
	ModeClose = "close"
	// ModeSilent (lose-answer; the default): no answer at all, the
	// connection goes quiet when the chip restarts.
	ModeSilent = "silent"
	// ModeReset (lose-answer): the connection is reset before the answer,
	// then the chip restarts.
	ModeReset = "reset"
)

// defaultChatterEvery is how often a chattering espota device repeats its count.
const defaultChatterEvery = 250 * time.Millisecond

// Protocol says which uploads a fault acts on: "http", "espota", or "" for both.
func (k FaultKind) Protocol() string {
	switch k {
	case FaultEarlyAnswer, FaultLoseAnswer, FaultStatusError, FaultStatusDuringUpgrade:
		return "http"
	case FaultNoConnectBack, FaultLoseOK, FaultEarlyOK, FaultChatter:
		return "espota"
	}
	return ""
}

// FaultKinds lists every fault kind, in documentation order.
func FaultKinds() []FaultKind {
	return []FaultKind{FaultDrop, FaultStall, FaultError, FaultPowerLoss, FaultSlow, FaultTrickle, FaultNoReturn,
		FaultRefuse, FaultLatency, FaultNoReboot, FaultEarlyAnswer, FaultLoseAnswer, FaultStatusError,
		FaultStatusDuringUpgrade, FaultNoConnectBack, FaultLoseOK, FaultEarlyOK, FaultChatter}
}

// Fault is one injected misbehaviour. Build it with ParseFault; the zero
// value is not a valid fault.
//
// Syntax (the CLI's --fault):
//
//	drop@40%          close the connection (RST) when 40 % of the image is in
//	drop@20-80%       … at a point drawn per upload between 20 and 80 %
//	drop@64KiB        … at byte 65536 (B, KB, KiB, MB, MiB; KB = 1000)
//	stall@50%:10s     stop reading for 10 s at 50 %
//	error@30%         answer 500 "Write failed" at 30 % (espota: "Flash Write Failed")
//	power-loss@60%    lose power at 60 %: no answer, reboot, the old image runs
//	slow:20KB/s       cap the rate the device reads the image at
//	no-return         after the next reboot the device never comes back
//	refuse:5s         close the listeners for 5 s from now (connections refused)
//	latency:5ms       delay every reply by 5 ms
//	no-connect-back   espota: accept the invitation, never connect back
//	lose-ok           espota: never send the final OK (the image is applied)
//	trickle:8B/s      take the image a few bytes at a time at 8 B/s (reads of
//	                  at most a quarter second's worth, at least 1 byte)
//	no-reboot         accept and answer, make the new image the boot image,
//	                  never restart (the old image keeps running)
//	early-answer@30%  HTTP: answer 200 when 30 % of the body was read (0 %:
//	                  right after the headers), then read the rest, install
//	                  and restart; ":discard" reads the rest and installs
//	                  nothing, ":close" closes at once and installs nothing
//	lose-answer       HTTP: install and restart without sending the 200;
//	                  ":reset" resets the connection instead of the answer
//	status-error      HTTP: the next read of /ota/status, and of /api/status,
//	                  answers 500; "status-error:3" the next three of each
//	status-during-upgrade
//	                  tasmota: a Status command during an upgrade corrupts
//	                  the image being written (the upgrade fails)
//	early-ok@30%      espota: send "OK" when 30 % was taken, then take the
//	                  rest and install (no second OK); ":close" closes at
//	                  once and installs nothing
//	chatter@50%       espota: stop taking data at 50 % and repeat the last
//	                  count every 250 ms (":100ms" sets the pace) without
//	                  ever sending OK or installing; chatter@100% does so
//	                  after the last byte
//
// drop, stall, error, power-loss, early-answer, early-ok, chatter,
// lose-answer, no-reboot, no-connect-back and lose-ok take an optional "/P%"
// suffix: they act on P % of uploads only, drawn from the device's seeded
// random source (error@30%/50%: half of the uploads fail).
type Fault struct {
	Kind FaultKind
	// Percent: From and To are percentages of the image size, else byte offsets.
	Percent  bool
	From, To float64
	// Duration is the stall or refuse time, or the latency.
	Duration time.Duration
	// Rate is the slow fault's bytes per second.
	Rate int64
	// Chance is the share of uploads a fault acts on, in (0, 1].
	Chance float64
	// Mode is what early-answer, early-ok and lose-answer do after (or
	// instead of) the answer: ModeInstall, ModeDiscard, ModeClose,
	// ModeSilent, ModeReset. Empty for the other kinds.
	Mode string
	// Count is how many status reads status-error fails (≥ 1).
	Count int
}

func (k FaultKind) hasPoint() bool {
	switch k {
	case FaultDrop, FaultStall, FaultError, FaultPowerLoss, FaultEarlyAnswer, FaultEarlyOK, FaultChatter:
		return true
	}
	return false
}

// writeFault: the point fault acts inside the flash write (upload.write);
// the others at a point are the protocols' own.
func (k FaultKind) writeFault() bool {
	return k == FaultDrop || k == FaultStall || k == FaultError || k == FaultPowerLoss
}

func (k FaultKind) hasChance() bool {
	return k.hasPoint() || k == FaultNoConnectBack || k == FaultLoseOK || k == FaultLoseAnswer || k == FaultNoReboot
}

// modes are the modes a kind accepts, the default first.
func (k FaultKind) modes() []string {
	switch k {
	case FaultEarlyAnswer:
		return []string{ModeInstall, ModeDiscard, ModeClose}
	case FaultEarlyOK:
		return []string{ModeInstall, ModeClose}
	case FaultLoseAnswer:
		return []string{ModeSilent, ModeReset}
	}
	return nil
}

func (f *Fault) parseMode(arg string) error {
	modes := f.Kind.modes()
	if arg == "" {
		f.Mode = modes[0]
		return nil
	}
	m := strings.ToLower(strings.TrimSpace(arg))
	if !slices.Contains(modes, m) {
		return fmt.Errorf("unknown mode %q (want %s)", arg, strings.Join(modes, " or "))
	}
	f.Mode = m
	return nil
}

// ParseFault reads one fault spec (see Fault for the syntax).
func ParseFault(spec string) (Fault, error) {
	f, err := parseFault(strings.TrimSpace(spec))
	if err != nil {
		return Fault{}, fmt.Errorf("fault %q: %w", spec, err)
	}
	return f, nil
}

// ParseFaults reads several specs.
func ParseFaults(specs []string) ([]Fault, error) {
	out := make([]Fault, 0, len(specs))
	for _, s := range specs {
		f, err := ParseFault(s)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func parseFault(s string) (Fault, error) {
	f := Fault{Chance: 1}
	// The kind runs up to the first '@', ':' or '/'.
	i := strings.IndexAny(s, "@:/")
	name := s
	rest := ""
	if i >= 0 {
		name, rest = s[:i], s[i:]
	}
	f.Kind = FaultKind(strings.ToLower(name))
	if !slices.Contains(FaultKinds(), f.Kind) {
		var names []string
		for _, k := range FaultKinds() {
			names = append(names, string(k))
		}
		return Fault{}, fmt.Errorf("unknown kind %q (want %s)", name, strings.Join(names, ", "))
	}
	// The chance suffix: a trailing "/P%" on the kinds that take one.
	if j := strings.LastIndexByte(rest, '/'); j >= 0 && !f.Kind.hasChance() && strings.HasSuffix(rest, "%") {
		if _, err := parsePercent(rest[j+1:]); err == nil {
			return Fault{}, fmt.Errorf("%s takes no /P%%: it acts on every upload", f.Kind)
		}
	}
	if f.Kind.hasChance() {
		if j := strings.LastIndexByte(rest, '/'); j >= 0 {
			p, err := parsePercent(rest[j+1:])
			if err != nil {
				return Fault{}, fmt.Errorf("chance: %w", err)
			}
			if p <= 0 {
				return Fault{}, errors.New("chance must be above 0%")
			}
			f.Chance = p / 100
			rest = rest[:j]
		}
	}
	if f.Kind.hasPoint() {
		if !strings.HasPrefix(rest, "@") {
			return Fault{}, fmt.Errorf("want %s@POINT, e.g. %s@40%%", f.Kind, f.Kind)
		}
		point := rest[1:]
		arg := ""
		if j := strings.IndexByte(point, ':'); j >= 0 {
			point, arg = point[:j], point[j+1:]
			if arg == "" {
				return Fault{}, errors.New(`nothing after ":"`)
			}
		}
		if err := f.parsePoint(point); err != nil {
			return Fault{}, err
		}
		switch {
		case f.Kind == FaultStall:
			if arg == "" {
				return Fault{}, errors.New("want stall@POINT:DURATION, e.g. stall@50%:10s")
			}
			d, err := parseDuration(arg)
			if err != nil {
				return Fault{}, err
			}
			f.Duration = d
		case f.Kind == FaultChatter:
			f.Duration = defaultChatterEvery
			if arg != "" {
				d, err := parseDuration(arg)
				if err != nil {
					return Fault{}, err
				}
				if d < time.Millisecond {
					return Fault{}, errors.New("chatter needs a pace of at least 1ms")
				}
				f.Duration = d
			}
		case f.Kind.modes() != nil:
			if err := f.parseMode(arg); err != nil {
				return Fault{}, err
			}
		case arg != "":
			return Fault{}, fmt.Errorf("unexpected %q", ":"+arg)
		}
		return f, nil
	}
	switch f.Kind {
	case FaultSlow, FaultTrickle:
		r, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return Fault{}, fmt.Errorf("want %s:RATE, e.g. %s:20KB/s", f.Kind, f.Kind)
		}
		rate, err := ParseRate(r)
		if err != nil {
			return Fault{}, err
		}
		f.Rate = rate
	case FaultRefuse, FaultLatency:
		d, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return Fault{}, fmt.Errorf("want %s:DURATION, e.g. %s:5s", f.Kind, f.Kind)
		}
		dur, err := parseDuration(d)
		if err != nil {
			return Fault{}, err
		}
		if f.Kind == FaultRefuse && dur == 0 {
			return Fault{}, errors.New("refuse needs a duration above 0")
		}
		f.Duration = dur
	case FaultLoseAnswer:
		arg, ok := strings.CutPrefix(rest, ":")
		if !ok && rest != "" {
			return Fault{}, fmt.Errorf("unexpected %q", rest)
		}
		if ok && arg == "" {
			return Fault{}, errors.New("empty mode")
		}
		if err := f.parseMode(arg); err != nil {
			return Fault{}, err
		}
	case FaultStatusError:
		f.Count = 1
		if n, ok := strings.CutPrefix(rest, ":"); ok {
			v, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil || v < 1 || v > 1000 {
				return Fault{}, fmt.Errorf("%q: want a count of reads from 1 to 1000, e.g. status-error:3", n)
			}
			f.Count = v
		} else if rest != "" {
			return Fault{}, fmt.Errorf("unexpected %q", rest)
		}
	default: // no-return, no-connect-back, lose-ok, no-reboot, status-during-upgrade
		if rest != "" {
			return Fault{}, fmt.Errorf("unexpected %q", rest)
		}
	}
	return f, nil
}

func (f *Fault) parsePoint(p string) error {
	if p == "" {
		return errors.New("empty point")
	}
	if strings.HasSuffix(p, "%") {
		f.Percent = true
		body := strings.TrimSuffix(p, "%")
		lo, hi, isRange := strings.Cut(body, "-")
		a, err := parsePercent(lo + "%")
		if err != nil {
			return err
		}
		b := a
		if isRange {
			if b, err = parsePercent(hi + "%"); err != nil {
				return err
			}
			if b < a {
				return fmt.Errorf("range %s: end before start", p)
			}
		}
		f.From, f.To = a, b
		return nil
	}
	lo, hi, isRange := strings.Cut(p, "-")
	a, err := parseBytes(lo)
	if err != nil {
		return err
	}
	b := a
	if isRange {
		if b, err = parseBytes(hi); err != nil {
			return err
		}
		if b < a {
			return fmt.Errorf("range %s: end before start", p)
		}
	}
	f.From, f.To = float64(a), float64(b)
	return nil
}

// parsePercent reads "40%" or "12.5%" in [0, 100].
func parsePercent(s string) (float64, error) {
	body, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q: want a percentage such as 40%%", s)
	}
	v, err := strconv.ParseFloat(body, 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 100 || strings.ContainsAny(body, "eEinfxX_") {
		return 0, fmt.Errorf("%q: want a percentage between 0%% and 100%%", s)
	}
	return v, nil
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{ // longest first
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"KB", 1000}, {"MB", 1000 * 1000},
	{"kB", 1000}, {"K", 1000}, {"k", 1000}, {"M", 1000 * 1000}, {"B", 1},
}

// parseBytes reads "65536", "64KiB", "1.5MB".
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) || v < 0 || strings.ContainsAny(num, "eEinfxX_") {
		return 0, fmt.Errorf("%q: want a size such as 65536, 64KiB or 1.5MB", s)
	}
	b := v * float64(mult)
	if b > 1<<40 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return int64(b), nil
}

// ParseRate reads a rate such as "20KB/s", "1MiB/s" or "500B/s" (bytes per
// second, above 0; KB = 1000, KiB = 1024), for Timing's rates.
func ParseRate(s string) (int64, error) {
	body, ok := strings.CutSuffix(strings.TrimSpace(s), "/s")
	if !ok {
		return 0, fmt.Errorf("%q: want a rate such as 20KB/s", s)
	}
	r, err := parseBytes(body)
	if err != nil {
		return 0, err
	}
	if r <= 0 {
		return 0, fmt.Errorf("%q: rate must be above 0", s)
	}
	return r, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 10s or 500ms", s)
	}
	if d > 24*time.Hour {
		return 0, fmt.Errorf("%q: longer than a day", s)
	}
	return d, nil
}

// String renders the fault in the ParseFault syntax (canonical form).
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(string(f.Kind))
	if f.Kind.hasPoint() {
		b.WriteByte('@')
		b.WriteString(f.pointString())
		if f.Kind == FaultStall || f.Kind == FaultChatter {
			b.WriteByte(':')
			b.WriteString(f.Duration.String())
		}
	}
	if modes := f.Kind.modes(); modes != nil && f.Mode != "" && f.Mode != modes[0] {
		b.WriteByte(':')
		b.WriteString(f.Mode)
	}
	switch f.Kind {
	case FaultStatusError:
		if f.Count > 1 {
			fmt.Fprintf(&b, ":%d", f.Count)
		}
	case FaultSlow, FaultTrickle:
		fmt.Fprintf(&b, ":%dB/s", f.Rate)
	case FaultRefuse, FaultLatency:
		b.WriteByte(':')
		b.WriteString(f.Duration.String())
	}
	if f.Kind.hasChance() && f.Chance > 0 && f.Chance < 1 {
		pct := math.Round(f.Chance*100*1e6) / 1e6 // 0.33*100 is 33.00000000000001
		fmt.Fprintf(&b, "/%s%%", strconv.FormatFloat(pct, 'f', -1, 64))
	}
	return b.String()
}

func (f Fault) pointString() string {
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	if f.Percent {
		if f.From == f.To {
			return num(f.From) + "%"
		}
		return num(f.From) + "-" + num(f.To) + "%"
	}
	if f.From == f.To {
		return num(f.From) + "B"
	}
	return num(f.From) + "B-" + num(f.To) + "B"
}

// MarshalText makes faults print as their spec in JSON and logs.
func (f Fault) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText parses a spec.
func (f *Fault) UnmarshalText(b []byte) error {
	v, err := ParseFault(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// ArmedFault is a fault resolved for one upload: the byte at which it
// fires.
type ArmedFault struct {
	Fault
	At    int64
	fired bool
}

// armUpload resolves the faults that act inside the flash write for an
// upload of size bytes. rnd returns uniform floats in [0,1) (the device's
// seeded source).
func armUpload(faults []Fault, size int64, rnd func() float64) []ArmedFault {
	var out []ArmedFault
	for _, f := range faults {
		if !f.Kind.writeFault() {
			continue
		}
		if a, ok := armOne(f, size, rnd); ok {
			out = append(out, a)
		}
	}
	return out
}

// armOne draws whether f acts on this upload and, for a point fault, where.
func armOne(f Fault, size int64, rnd func() float64) (ArmedFault, bool) {
	if f.Chance < 1 && rnd() >= f.Chance {
		return ArmedFault{}, false
	}
	p := f.From
	if f.To > f.From {
		p += (f.To - f.From) * rnd()
	}
	at := int64(p)
	if f.Percent {
		at = int64(float64(size) * p / 100)
	}
	return ArmedFault{Fault: f, At: at}, true
}
