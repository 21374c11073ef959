package cmd

import (
	"fmt"
	"strconv"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/upload"
)

// info --json: one info line per device, then the error line of a failed
// run and the summary (docs/json.md, docs/schema/info.json). Every fact is
// {"value","source"} when told and null when not.

type factJSON struct {
	Value  string  `json:"value"`
	Source *string `json:"source"`
}

type uptimeJSON struct {
	Value  int64   `json:"value"` // seconds
	Source *string `json:"source"`
}

// otaStatusJSON is the device's GET /ota/status body as read.
type otaStatusJSON struct {
	Project       *string `json:"project"`
	Version       *string `json:"version"`
	IDF           *string `json:"idf"`
	Chip          *string `json:"chip"`
	Running       *string `json:"running"`
	Boot          *string `json:"boot"`
	State         *string `json:"state"`
	SecureVersion *uint32 `json:"secure_version"`
	ELFSHA256     *string `json:"elf_sha256"`
	SlotSize      *int64  `json:"slot_size"`
	UptimeS       *int64  `json:"uptime_s"`
	Auth          *string `json:"auth"`
}

// apiStatusJSON is what was read of GET /api/status, in the firmware's own
// (camelCase) names.
type apiStatusJSON struct {
	FirmwareVersion *string `json:"firmwareVersion"`
	Hostname        *string `json:"hostname"`
	SerialNumber    *string `json:"serialNumber"`
	Uptime          *int64  `json:"uptime"`
}

// esphomeJSON is an ESPHome device's _esphomelib._tcp TXT record, each
// key null when the record does not carry it. version is the ESPHome
// release, never the firmware's version (project_version is that).
type esphomeJSON struct {
	Version                *string `json:"version"`
	Platform               *string `json:"platform"`
	Board                  *string `json:"board"`
	MAC                    *string `json:"mac"`
	ConfigHash             *string `json:"config_hash"`
	ProjectName            *string `json:"project_name"`
	ProjectVersion         *string `json:"project_version"`
	APIEncryption          *string `json:"api_encryption"`
	APIEncryptionSupported *string `json:"api_encryption_supported"`
	FriendlyName           *string `json:"friendly_name"`
	Network                *string `json:"network"`
}

type infoLine struct {
	lineHead
	Target         string         `json:"target"`
	Address        *string        `json:"address"`
	Given          []string       `json:"given"`
	Sources        []string       `json:"sources"`
	Reachable      bool           `json:"reachable"`
	Unconfirmed    bool           `json:"unconfirmed"`
	NothingListens bool           `json:"nothing_listens"`
	Protocol       *factJSON      `json:"protocol"`
	Auth           *factJSON      `json:"auth"`
	Project        *factJSON      `json:"project"`
	Version        *factJSON      `json:"version"`
	VersionNote    *string        `json:"version_note"`
	Chip           *factJSON      `json:"chip"`
	Board          *factJSON      `json:"board"`
	IDF            *factJSON      `json:"idf"`
	Running        *factJSON      `json:"running"`
	Boot           *factJSON      `json:"boot"`
	State          *factJSON      `json:"state"`
	UptimeS        *uptimeJSON    `json:"uptime_s"`
	OTAStatus      *otaStatusJSON `json:"ota_status"`
	APIStatus      *apiStatusJSON `json:"api_status"`
	ESPHome        *esphomeJSON   `json:"esphome_txt"`
	Notes          []string       `json:"notes"`
	Error          *errorObject   `json:"error"`
}

func factOf(f devinfo.Fact) *factJSON {
	if !f.Known() {
		return nil
	}
	return &factJSON{Value: f.Value, Source: nullString(string(f.Source))}
}

func infoLineOf(r infoResult) infoLine {
	l := infoLine{lineHead: head("info"), Target: r.Target, Address: nullString(r.Address), Given: listOf(r.Given),
		Sources: listOf(r.Sources), Reachable: r.Reachable, Unconfirmed: r.Unconfirmed, NothingListens: r.NothingListens,
		Protocol: factOf(r.Protocol), Auth: factOf(r.Auth), Project: factOf(r.Project), Version: factOf(r.Version),
		VersionNote: nullString(r.VersionNote), Chip: factOf(r.Chip), Board: factOf(r.Board), IDF: factOf(r.IDF),
		Running: factOf(r.Running), Boot: factOf(r.Boot), State: factOf(r.State), Notes: listOf(r.Notes), Error: r.failure()}
	if r.Uptime.Known() {
		if n, err := strconv.ParseInt(r.Uptime.Value, 10, 64); err == nil {
			l.UptimeS = &uptimeJSON{Value: n, Source: nullString(string(r.Uptime.Source))}
		}
	}
	if s := r.OTA; s != nil {
		l.OTAStatus = &otaStatusJSON{Project: nullString(s.Project), Version: nullString(s.Version), IDF: nullString(s.IDF),
			Chip: nullString(s.Chip), Running: nullString(s.Running), Boot: nullString(s.Boot), State: nullString(s.State),
			SecureVersion: s.SecureVersion, ELFSHA256: nullString(s.ELFSHA256), SlotSize: s.SlotSize, UptimeS: s.UptimeS,
			Auth: nullString(s.Auth)}
	}
	if s := r.API; s != nil {
		l.APIStatus = &apiStatusJSON{FirmwareVersion: nullString(s.FirmwareVersion), Hostname: nullString(s.Hostname),
			SerialNumber: nullString(s.SerialNumber), Uptime: s.Uptime}
	}
	if e := r.ESPHome; e != nil {
		l.ESPHome = &esphomeJSON{Version: nullString(e.Release), Platform: nullString(e.Platform), Board: nullString(e.Board),
			MAC: nullString(e.MAC), ConfigHash: nullString(e.ConfigHash), ProjectName: nullString(e.ProjectName),
			ProjectVersion: nullString(e.ProjectVersion), APIEncryption: nullString(e.APIEncryption),
			APIEncryptionSupported: nullString(e.APIEncryptionSupported), FriendlyName: nullString(e.FriendlyName),
			Network: nullString(e.Network)}
	}
	return l
}

// failure is why the device counts as failed (exit 1), nil when it
// answered. Each message is one line: a failed connect in push's words
// (upload.ClassifyDial); the notes keep every step.
func (r infoResult) failure() *errorObject {
	if r.errJSON != nil {
		return r.errJSON
	}
	code, words := r.reach(" at " + r.Address)
	switch code {
	case "":
		return nil
	case "unconfirmed":
		return ptr(newErrorObject(code, words, "an ArduinoOTA device shows itself by mDNS: try ots-ota discover"))
	case "unreachable":
		switch {
		case r.ConnectErr != nil:
			_, words = upload.ClassifyDial(r.Address, r.timeout, r.ConnectErr)
		case len(r.Notes) > 0:
			words += ": " + r.Notes[0]
		}
	}
	return ptr(newErrorObject(code, words, ""))
}

// infoJSON writes the lines, and fills in the summary.
func infoJSON(a *app, results []infoResult) error {
	var failed []string
	for _, r := range results {
		l := infoLineOf(r)
		if l.Error != nil {
			failed = append(failed, r.Target)
		}
		a.writeLine(l)
	}
	s := summaryAs[*countSummary](a)
	s.Count, s.Failed = ptr(len(results)), ptr(len(failed))
	if len(failed) == 0 {
		return nil
	}
	return silentError{code: ExitFailed, json: ptr(newErrorObject("devices_failed",
		fmt.Sprintf("%d of %d device(s) did not answer: %s", len(failed), len(results), firstFew(failed)), ""))}
}
