package arduino

import (
	"github.com/ots-ota/ots-ota/sim/core"
)

// StatusRoutes is GET /ota/status for a sketch that adds what ots-ota
// documents (Config.Extensions; device-contract.md §4) on its web server,
// less the keys the device omits; none when it omits the endpoint. The
// libraries themselves serve no such endpoint.
func StatusRoutes(e *core.Env, w *Web) []core.Route {
	if !e.Config().Extensions || e.Omits(core.OmitOTAStatus) {
		return nil
	}
	return []core.Route{{Method: "GET", Path: "/ota/status", Handle: func(r *core.Request) error {
		if e.TakeStatusFail(r.Path()) {
			e.Emit(core.Event{Event: core.EventFault, Fault: string(core.FaultStatusError), Protocol: "http",
				Path: r.Path(), Remote: r.Remote()})
			return w.Reply(r, 500, TypePlain, "")
		}
		body, err := e.ObjectJSON(core.OmitOTAStatus, core.OTAStatusFields(e.State()))
		if err != nil {
			return w.Reply(r, 500, TypePlain, "")
		}
		return w.Reply(r, 200, TypeJSON, string(body))
	}}}
}

// OmittableStatus is what Config.Omit can name of StatusRoutes.
func OmittableStatus(extensions bool) []string {
	if !extensions {
		return nil
	}
	out := []string{core.OmitOTAStatus}
	for _, k := range core.OTAStatusKeys {
		out = append(out, core.OmitOTAStatus+"."+k)
	}
	return out
}
