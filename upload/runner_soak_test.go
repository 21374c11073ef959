package upload_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/espota"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
)

// soakScenario is one device's random set-up, drawn from every shape the
// simulator can produce (issue "push never lies"): facts left out,
// same-version rebuilds, a third image, early and lost answers, espota's
// early OK, chatter and trickle, besides the classic faults.
type soakScenario struct {
	personality sim.Personality
	extensions  bool
	apiUptime   bool
	omit        []string
	behaviour   sim.Behaviour
	// buildSeed: the device runs another build of the image's version (a
	// same-version rebuild); its behaviour then keys on @uploaded.
	buildSeed int64
	factory   string // the factory app's version: the third image
	faults    []string
	wrongCred bool
	otherChip bool
}

func (s soakScenario) String() string {
	return fmt.Sprintf("%s ext=%v apiuptime=%v omit=%v behave=%s buildseed=%d factory=%q faults=%v wrongcred=%v otherchip=%v",
		s.personality, s.extensions, s.apiUptime, s.omit, s.behaviour, s.buildSeed, s.factory, s.faults, s.wrongCred, s.otherChip)
}

// shapes names what the scenario draws, for the soak's tally: every shape
// must be drawn at least once.
func (s soakScenario) shapes() []string {
	out := []string{"personality:" + string(s.personality), "behaviour:" + string(s.behaviour)}
	if s.extensions {
		out = append(out, "extensions")
	}
	if s.apiUptime {
		out = append(out, "api-uptime")
	}
	for _, f := range s.omit {
		switch {
		case f == "ota-status.uptime_s", f == "ota-status.elf_sha256", f == "ota-status.state", f == "ota-status.version",
			f == "api-status.firmwareVersion", f == "txt.version":
			out = append(out, "omit:"+f)
		default:
			out = append(out, "omit:other")
		}
	}
	if s.buildSeed != 0 {
		out = append(out, "same-version-rebuild")
	}
	if s.factory != "" {
		out = append(out, "factory-app")
	}
	for _, f := range s.faults {
		k, _, _ := strings.Cut(f, "@")
		k, _, _ = strings.Cut(k, ":")
		k, _, _ = strings.Cut(k, "/")
		out = append(out, "fault:"+k)
	}
	if s.wrongCred {
		out = append(out, "wrong-credentials")
	}
	if s.otherChip {
		out = append(out, "other-chip")
	}
	return out
}

// espotaOnlyFaults are forced once every 25 scenarios.
var espotaOnlyFaults = []string{"lose-ok", "no-connect-back/50%", "early-ok@30%", "chatter@100%"}

// soakShapes is every shape the soak must draw.
var soakShapes = []string{
	"personality:seed", "personality:ots", "personality:arduino", "extensions", "api-uptime",
	"omit:ota-status.uptime_s", "omit:ota-status.elf_sha256", "omit:ota-status.state", "omit:ota-status.version",
	"omit:api-status.firmwareVersion", "omit:other",
	"behaviour:healthy", "behaviour:crash-on-boot", "behaviour:unstable", "behaviour:no-network", "behaviour:unconfirmed",
	"behaviour:foreign-elf", "behaviour:crash-to-factory", "behaviour:crash-loop",
	"same-version-rebuild", "factory-app",
	"fault:drop", "fault:stall", "fault:error", "fault:power-loss", "fault:refuse", "fault:no-return", "fault:latency",
	"fault:slow", "fault:lose-ok", "fault:no-connect-back", "fault:no-reboot", "fault:early-answer", "fault:lose-answer",
	"fault:status-error", "fault:trickle", "fault:early-ok", "fault:chatter",
	"wrong-credentials", "other-chip",
}

func randomScenario(r *rand.Rand) soakScenario {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	s := soakScenario{}
	switch r.IntN(10) {
	case 0, 1, 2:
		s.personality, s.extensions = sim.Seed, true
	case 3, 4:
		s.personality = sim.Seed
	case 5, 6, 7:
		s.personality = sim.OTS
		s.extensions = r.IntN(3) == 0
		s.apiUptime = r.IntN(2) == 0
	default:
		s.personality = sim.Arduino
		s.extensions = r.IntN(2) == 0
	}
	http := s.personality != sim.Arduino
	s.behaviour = sim.Behaviour(pick("healthy", "healthy", "healthy", "crash-on-boot", "unstable", "no-network", "unconfirmed",
		"foreign-elf", "crash-to-factory", "crash-loop"))
	switch {
	case s.personality == sim.Arduino && (s.behaviour == sim.Unstable || s.behaviour == sim.Unconfirmed):
		// initArduino() marks a new image valid before setup(): only a
		// sketch that confirms itself can fail its own check.
		s.behaviour = sim.CrashOnBoot
	case s.behaviour == sim.CrashToFactory && !http:
		s.behaviour = sim.CrashLoop
	}
	if s.behaviour == sim.CrashToFactory || http && r.IntN(8) == 0 {
		s.factory = "0.9.0"
	}
	if r.IntN(6) == 0 {
		s.buildSeed = 1 + r.Int64N(1000)
	}
	if fields := sim.OmittableFields(s.personality, s.extensions, s.apiUptime); len(fields) > 0 && r.IntN(3) == 0 {
		// Half the draws from the facts the verdict leans on.
		key := slices.DeleteFunc([]string{"ota-status.uptime_s", "ota-status.elf_sha256", "ota-status.state", "ota-status.version",
			"api-status.firmwareVersion", "txt.version"}, func(f string) bool { return !slices.Contains(fields, f) })
		for range 1 + r.IntN(3) {
			f := fields[r.IntN(len(fields))]
			if len(key) > 0 && r.IntN(2) == 0 {
				f = key[r.IntN(len(key))]
			}
			if !slices.Contains(s.omit, f) {
				s.omit = append(s.omit, f)
			}
		}
	}
	pct := func() string { return strconv.Itoa(5+r.IntN(90)) + "%" }
	chance := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return "/" + strconv.Itoa(20+r.IntN(60)) + "%"
	}
	kinds := []string{"drop", "stall", "error", "power-loss", "refuse", "no-return", "latency", "slow", "no-reboot", "trickle"}
	if http {
		kinds = append(kinds, "early-answer", "lose-answer", "status-error")
	} else {
		// Weighted: espota devices are a fifth of the fleet.
		kinds = append(kinds, "lose-ok", "no-connect-back", "early-ok", "chatter", "lose-ok", "no-connect-back", "early-ok", "chatter")
	}
	for range r.IntN(3) {
		f := kinds[r.IntN(len(kinds))]
		switch f {
		case "drop", "error", "power-loss":
			s.faults = append(s.faults, f+"@"+pct()+chance())
		case "stall":
			s.faults = append(s.faults, "stall@"+pct()+":"+strconv.Itoa(100+r.IntN(400))+"ms"+chance())
		case "refuse":
			if !slices.ContainsFunc(s.faults, func(f string) bool { return strings.HasPrefix(f, "refuse:") }) {
				s.faults = append(s.faults, "refuse:"+strconv.Itoa(50+r.IntN(300))+"ms")
			}
		case "latency":
			s.faults = append(s.faults, "latency:"+strconv.Itoa(1+r.IntN(5))+"ms")
		case "slow":
			s.faults = append(s.faults, "slow:"+strconv.Itoa(500+r.IntN(4000))+"KB/s")
		case "trickle":
			// Slow enough to be a trickle, fast enough to end within the
			// default per-try bound.
			s.faults = append(s.faults, "trickle:"+strconv.Itoa(16+r.IntN(48))+"KB/s")
		case "early-answer":
			s.faults = append(s.faults, "early-answer@"+strconv.Itoa(r.IntN(60))+"%"+pick("", ":discard", ":close")+chance())
		case "lose-answer":
			s.faults = append(s.faults, "lose-answer"+pick("", ":reset")+chance())
		case "status-error":
			s.faults = append(s.faults, "status-error:"+strconv.Itoa(1+r.IntN(2)))
		case "early-ok":
			s.faults = append(s.faults, "early-ok@"+strconv.Itoa(10+r.IntN(70))+"%"+pick("", ":close")+chance())
		case "chatter":
			s.faults = append(s.faults, "chatter@"+pick("30%", "100%")+chance())
		case "no-return", "no-reboot":
			s.faults = append(s.faults, f)
		default: // lose-ok, no-connect-back
			s.faults = append(s.faults, f+chance())
		}
	}
	s.wrongCred = r.IntN(12) == 0
	s.otherChip = r.IntN(15) == 0
	return s
}

// TestRunSoak runs seeded random fault scenarios against simulated fleets
// and checks the two promises that must hold whatever happens: no device is
// reported updated unless the simulator runs the new version, and no
// upload follows an auth failure or an image rejection. OTS_OTA_SOAK=N sets
// the number of scenarios (default 200); OTS_OTA_SOAK_SEED the seed.
func TestRunSoak(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	if v, err := strconv.Atoi(os.Getenv("OTS_OTA_SOAK")); err == nil && v > 0 {
		n = v
	}
	seed := uint64(20261201)
	if v, err := strconv.ParseUint(os.Getenv("OTS_OTA_SOAK_SEED"), 10, 64); err == nil {
		seed = v
	}
	batch := 50
	if n > 1000 {
		batch = 100
	}
	r := rand.New(rand.NewPCG(seed, seed+1))
	fw := simFirmware(t, "1.0.1")
	sentELF := hex.EncodeToString(fw.Image.App.ELFSHA256[:])
	var updated, total int
	counts := map[upload.Outcome]int{}
	drawn := map[string]int{}
	for start := 0; start < n; start += batch {
		size := min(batch, n-start)
		scen := make([]soakScenario, size)
		for i := range scen {
			scen[i] = randomScenario(r)
			if k := (start + i) % 25; k < len(espotaOnlyFaults) {
				// espota devices are a fifth of the fleet and each of their
				// session faults a rarer draw still: force one of each
				// every 25 scenarios, so every shape is drawn.
				scen[i].personality, scen[i].apiUptime, scen[i].omit = sim.Arduino, false, nil
				if scen[i].behaviour == sim.Unstable || scen[i].behaviour == sim.Unconfirmed || scen[i].behaviour == sim.CrashToFactory {
					scen[i].behaviour = sim.CrashOnBoot
				}
				scen[i].factory, scen[i].faults = "", []string{espotaOnlyFaults[k]}
			}
			for _, sh := range scen[i].shapes() {
				drawn[sh]++
			}
		}
		const pw = "soak-pw"
		tm := sim.FastTiming()
		tm.ErrorCloseDelay = time.Duration(r.IntN(2)) * 50 * time.Millisecond
		// Boots long enough for the silence to prove a restart (2 reads
		// over 1 s), as a real ESP32's 2-6 s do.
		tm.BootTime = 1300 * time.Millisecond
		fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{
			N: size, BaseIP: nextBase(t), Seed: int64(seed) + int64(start), WebPort: 18080,
			Template: sim.Config{Timing: &tm, Project: "proj", Version: "1.0.0"},
			Configure: func(i int, c *sim.Config) {
				s := scen[i]
				c.Personality, c.Extensions, c.APIUptime, c.Omit = s.personality, s.extensions, s.apiUptime, s.omit
				c.Behaviours = map[string]sim.Behaviour{"1.0.1": s.behaviour}
				if s.buildSeed != 0 {
					// Another build of 1.0.1 runs; the behaviour follows the
					// image that arrives, whatever its version.
					c.Version, c.BuildSeed = "1.0.1", s.buildSeed
					c.Behaviours = map[string]sim.Behaviour{sim.BehaveUploaded: s.behaviour}
				}
				c.FactoryVersion = s.factory
				if s.personality != sim.OTS {
					c.Password = auth.NewSecret(pw)
				}
				if s.otherChip {
					c.Chip = "esp32c3"
				}
				for _, spec := range s.faults {
					c.Faults = append(c.Faults, mustFault(spec))
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		o := espotaRunOptions(t)
		o.Parallel = 0
		o.Retries = 2
		o.VerifyTimeout, o.RebootGrace = 8*time.Second, 2*time.Second
		o.Backoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
		o.Transports[upload.HTTP] = &rawhttp.Transport{ConnectTimeout: 500 * time.Millisecond, IdleTimeout: time.Second}
		o.Transports[upload.Espota].(*espota.Transport).IdleTimeout = time.Second
		o.Seed = seed + uint64(start)
		// Wrong credentials per device: the runner has one set, so those
		// devices get a fleet of their own credentials by password mismatch.
		good := upload.Credentials{Password: auth.NewSecret(pw)}
		bad := upload.Credentials{Password: auth.NewSecret("wrong-" + pw)}
		targets := targetsOf(fl)
		var goodT, badT []upload.Target
		var goodI, badI []int
		for i, tg := range targets {
			if scen[i].wrongCred {
				badT, badI = append(badT, tg), append(badI, i)
			} else {
				goodT, goodI = append(goodT, tg), append(goodI, i)
			}
		}
		results := make([]upload.Result, size)
		for _, part := range []struct {
			ts   []upload.Target
			idx  []int
			cred upload.Credentials
		}{{goodT, goodI, good}, {badT, badI, bad}} {
			if len(part.ts) == 0 {
				continue
			}
			o.Credentials = part.cred
			for k, res := range upload.Run(context.Background(), fw, part.ts, o) {
				results[part.idx[k]] = res
			}
		}
		for i, res := range results {
			total++
			counts[res.Outcome]++
			st := fl.Devices()[i].State()
			if res.Outcome == upload.OutcomeUpdated {
				updated++
				// The sim's own truth: the very build that was sent runs.
				// A foreign build of the same version can be told apart
				// only by a device that tells its elf.
				tellsELF := scen[i].extensions && !slices.Contains(scen[i].omit, "ota-status") && !slices.Contains(scen[i].omit, "ota-status.elf_sha256")
				if st.Version != "1.0.1" || st.ELFSHA256 != sentELF && (tellsELF || scen[i].behaviour != sim.ForeignELF) {
					t.Errorf("scenario %d (%s): reported updated (%s), but the sim runs %s elf %.8s (%s)", start+i, scen[i], res.Message, st.Version, st.ELFSHA256, st.AppState)
				}
			}
			// A device that never restarts and tells no boot slot shows no
			// sign of the image it took: the rule lets that one be
			// sent again.
			tellsBoot := scen[i].extensions && !slices.Contains(scen[i].omit, "ota-status") && !slices.Contains(scen[i].omit, "ota-status.boot")
			silentInstall := slices.Contains(scen[i].faults, "no-reboot") && !tellsBoot
			if j, ok := resentAfterInstall(st.Uploads); ok && !silentInstall {
				t.Errorf("scenario %d (%s): upload %d follows an installed image (%s: %s): push sent it again before verifying", start+i, scen[i], j+1, res.Outcome, res.Message)
			}
			if res.Outcome == upload.OutcomeUnverified && res.Reason == "" {
				t.Errorf("scenario %d (%s): unverified without a reason (%s)", start+i, scen[i], res.Message)
			}
			if (res.Class == upload.ClassAuth || res.Class == upload.ClassRejected) && res.Tries > 1 {
				// The last failure was a never-retry class: it must have been
				// the last try; the device log below checks the order.
				t.Logf("scenario %d: %s after %d tries", start+i, res.Class, res.Tries)
			}
			if j, ok := retriedRejection(st.Uploads, scen[i].personality); ok {
				t.Errorf("scenario %d (%s): upload %d follows a %s (%q): push retried a rejection", start+i, scen[i], j+1, st.Uploads[j-1].Outcome, st.Uploads[j-1].Text)
			}
		}
		fl.Close()
	}
	t.Logf("%d scenarios (seed %d): %v; %d updated, each confirmed by the simulator", total, seed, counts, updated)
	var tally []string
	for _, sh := range soakShapes {
		tally = append(tally, fmt.Sprintf("%s=%d", sh, drawn[sh]))
		if drawn[sh] == 0 && n >= 200 {
			t.Errorf("shape %s was never drawn in %d scenarios: the soak does not cover it", sh, n)
		}
	}
	t.Logf("shapes drawn: %s", strings.Join(tally, " "))
}

// resentAfterInstall finds an upload that follows one the device took and
// installed ("ok"): nothing may be sent again before it was verified, and a
// verified device is never sent to again.
func resentAfterInstall(ups []sim.UploadRecord) (int, bool) {
	for j, u := range ups {
		if u.Outcome == "ok" && j+1 < len(ups) {
			return j + 1, true
		}
	}
	return 0, false
}

// retriedRejection finds an upload record that follows an auth failure or
// an image rejection. espota's PBKDF2 auth is one attempt of up to two
// device-side failures (SHA-256 hash, then the MD5 hash after a fresh
// invitation), so a second auth failure right behind the first is allowed.
func retriedRejection(ups []sim.UploadRecord, p sim.Personality) (int, bool) {
	for j, u := range ups {
		if u.Outcome != "auth_failed" && !rejection(u) {
			continue
		}
		rest := ups[j+1:]
		if len(rest) == 1 && u.Outcome == "auth_failed" && rest[0].Outcome == "auth_failed" && p == sim.Arduino {
			return 0, false
		}
		if len(rest) > 0 {
			return j + 1, true
		}
		return 0, false
	}
	return 0, false
}

// rejection reports whether the device refused the image itself (never
// retried), as opposed to a transfer failure.
func rejection(u sim.UploadRecord) bool {
	if u.Outcome != "failed" {
		return false
	}
	c, _ := upload.ClassifyAnswer(u.Status, u.Text)
	return c == upload.ClassRejected && !strings.HasPrefix(u.Text, "Write failed")
}
