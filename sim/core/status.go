package core

import "time"

// OmitOTAStatus is GET /ota/status's name in Config.Omit.
const OmitOTAStatus = "ota-status"

// OTAStatusKeys are the keys of GET /ota/status (device-contract.md §4), in
// the order a device sends them.
var OTAStatusKeys = []string{"project", "version", "idf", "chip", "running", "boot", "state", "secure_version",
	"elf_sha256", "slot_size", "uptime_s"}

// OTAStatusFields are GET /ota/status's keys for a device in state st: what
// a firmware that follows the contract tells (a web-uploader sketch with
// Extensions adds it on its web server).
func OTAStatusFields(st State) []JSONField {
	return []JSONField{
		{Key: "project", Val: st.Project}, {Key: "version", Val: st.Version}, {Key: "idf", Val: st.IDFVer},
		{Key: "chip", Val: st.Chip}, {Key: "running", Val: st.Running}, {Key: "boot", Val: st.Boot},
		{Key: "state", Val: st.AppState}, {Key: "secure_version", Val: st.SecureVersion},
		{Key: "elf_sha256", Val: st.ELFSHA256}, {Key: "slot_size", Val: st.SlotSize},
		{Key: "uptime_s", Val: int64(st.Uptime / time.Second)},
	}
}
