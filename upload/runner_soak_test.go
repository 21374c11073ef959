package upload

import (
	"context"
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
)

// soakScenario is one device's random set-up.
type soakScenario struct {
	personality sim.Personality
	extensions  bool
	behaviour   sim.Behaviour
	faults      []string
	wrongCred   bool
	otherChip   bool
}

func (s soakScenario) String() string {
	return fmt.Sprintf("%s ext=%v behave=%s faults=%v wrongcred=%v otherchip=%v",
		s.personality, s.extensions, s.behaviour, s.faults, s.wrongCred, s.otherChip)
}

func randomScenario(r *rand.Rand) soakScenario {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	s := soakScenario{}
	switch r.IntN(10) {
	case 0, 1, 2, 3:
		s.personality, s.extensions = sim.Seed, true
	case 4, 5:
		s.personality = sim.Seed
	case 6, 7:
		s.personality = sim.OTS
	default:
		s.personality = sim.Arduino
		s.extensions = r.IntN(2) == 0
	}
	s.behaviour = sim.Behaviour(pick("healthy", "healthy", "healthy", "crash-on-boot", "unstable", "no-network", "unconfirmed"))
	if s.personality == sim.Arduino && (s.behaviour == sim.Unstable || s.behaviour == sim.Unconfirmed) {
		// initArduino() marks a new image valid before setup(): only a
		// sketch that confirms itself can fail its own check.
		s.behaviour = sim.CrashOnBoot
	}
	pct := func() string { return strconv.Itoa(5+r.IntN(90)) + "%" }
	chance := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return "/" + strconv.Itoa(20+r.IntN(60)) + "%"
	}
	for range r.IntN(3) {
		f := pick("drop", "stall", "error", "power-loss", "refuse", "no-return", "latency", "slow", "lose-ok", "no-connect-back")
		switch f {
		case "drop", "error", "power-loss":
			s.faults = append(s.faults, f+"@"+pct()+chance())
		case "stall":
			s.faults = append(s.faults, "stall@"+pct()+":"+strconv.Itoa(100+r.IntN(400))+"ms"+chance())
		case "refuse":
			// One refuse per device: a second one armed while the first
			// holds crashes the sim's espota personalities (closeListeners
			// closes a nil UDP socket; reported to the sim's owner).
			if !slices.ContainsFunc(s.faults, func(f string) bool { return strings.HasPrefix(f, "refuse:") }) {
				s.faults = append(s.faults, "refuse:"+strconv.Itoa(50+r.IntN(300))+"ms")
			}
		case "latency":
			s.faults = append(s.faults, "latency:"+strconv.Itoa(1+r.IntN(5))+"ms")
		case "slow":
			s.faults = append(s.faults, "slow:"+strconv.Itoa(500+r.IntN(4000))+"KB/s")
		case "no-return":
			s.faults = append(s.faults, f)
		default: // espota session faults
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
	var updated, total int
	counts := map[Outcome]int{}
	for start := 0; start < n; start += batch {
		size := min(batch, n-start)
		scen := make([]soakScenario, size)
		for i := range scen {
			scen[i] = randomScenario(r)
		}
		const pw = "soak-pw"
		tm := sim.FastTiming()
		tm.ErrorCloseDelay = time.Duration(r.IntN(2)) * 50 * time.Millisecond
		fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{
			N: size, BaseIP: nextBase(t), Seed: int64(seed) + int64(start), WebPort: 18080,
			Template: sim.Config{Timing: &tm, Project: "proj", Version: "1.0.0"},
			Configure: func(i int, c *sim.Config) {
				s := scen[i]
				c.Personality, c.Extensions = s.personality, s.extensions
				c.Behaviours = map[string]sim.Behaviour{"1.0.1": s.behaviour}
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
		o.VerifyTimeout, o.RebootGrace = 3*time.Second, time.Second
		o.Backoff, o.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
		o.Transports[HTTP] = &HTTPTransport{ConnectTimeout: 500 * time.Millisecond, IdleTimeout: time.Second}
		o.Transports[Espota].(*EspotaTransport).IdleTimeout = time.Second
		o.Seed = seed + uint64(start)
		// Wrong credentials per device: the runner has one set, so those
		// devices get a fleet of their own credentials by password mismatch.
		good := Credentials{Password: auth.NewSecret(pw)}
		bad := Credentials{Password: auth.NewSecret("wrong-" + pw)}
		targets := targetsOf(fl)
		var goodT, badT []Target
		var goodI, badI []int
		for i, tg := range targets {
			if scen[i].wrongCred {
				badT, badI = append(badT, tg), append(badI, i)
			} else {
				goodT, goodI = append(goodT, tg), append(goodI, i)
			}
		}
		results := make([]Result, size)
		for _, part := range []struct {
			ts   []Target
			idx  []int
			cred Credentials
		}{{goodT, goodI, good}, {badT, badI, bad}} {
			if len(part.ts) == 0 {
				continue
			}
			o.Credentials = part.cred
			for k, res := range Run(context.Background(), fw, part.ts, o) {
				results[part.idx[k]] = res
			}
		}
		for i, res := range results {
			total++
			counts[res.Outcome]++
			st := fl.Devices()[i].State()
			if res.Outcome == OutcomeUpdated {
				updated++
				if st.Version != "1.0.1" {
					t.Errorf("scenario %d (%s): reported updated (%s), but the sim runs %s (%s)", start+i, scen[i], res.Message, st.Version, st.AppState)
				}
			}
			if (res.Class == ClassAuth || res.Class == ClassRejected) && res.Tries > 1 {
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
	c, _ := ClassifyAnswer(u.Status, u.Text)
	return c == ClassRejected && !strings.HasPrefix(u.Text, "Write failed")
}
