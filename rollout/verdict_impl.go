package rollout

import "time"

func decide(spec DeviceSpec, reports []Report, now time.Time, final bool) (Verdict, bool) {
	return Verdict{}, false
}
