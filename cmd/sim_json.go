package cmd

import (
	"errors"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// sim --json: one line per device event, then the summary; a fleet that
// fails to start says why in an error line before the stopped events
// (docs/json.md, docs/schema/sim.json).

// simLine is one event: its type is the event's kind. Event is the same
// kind under the key sim used before schema 2, kept until the first tagged
// release.
type simLine struct {
	Type        string    `json:"type"`
	Event       string    `json:"event"`
	Schema      int       `json:"schema"`
	Time        time.Time `json:"time"`
	Device      string    `json:"device"`
	Addr        *string   `json:"addr"`
	Web         *string   `json:"web"`
	Host        *string   `json:"host"`
	Personality *string   `json:"personality"`
	Protocol    *string   `json:"protocol"`
	Path        *string   `json:"path"`
	Remote      *string   `json:"remote"`
	Project     *string   `json:"project"`
	Version     *string   `json:"version"`
	From        *string   `json:"from"`
	Slot        *string   `json:"slot"`
	State       *string   `json:"state"`
	Size        *int64    `json:"size"`  // announced image size
	Bytes       *int64    `json:"bytes"` // received: a number on upload events, 0 included
	Status      *int      `json:"status"`
	Text        *string   `json:"text"`
	Reason      *string   `json:"reason"`
	Fault       *string   `json:"fault"`
	Boot        *int      `json:"boot"`
}

func simLineOf(e sim.Event) simLine {
	l := simLine{Type: string(e.Event), Event: string(e.Event), Schema: jsonSchemaVersion, Time: e.Time, Device: e.Device,
		Addr: nullString(e.Addr), Web: nullString(e.Web), Host: nullString(e.Host), Personality: nullString(string(e.Personality)),
		Protocol: nullString(e.Protocol), Path: nullString(e.Path), Remote: nullString(e.Remote), Project: nullString(e.Project),
		Version: nullString(e.Version), From: nullString(e.From), Slot: nullString(e.Slot), State: nullString(string(e.State)),
		Size: nullPositive(e.Size), Status: nullPositive(e.Status), Text: nullString(e.Text), Reason: nullString(e.Reason),
		Fault: nullString(e.Fault), Boot: nullPositive(e.Boot)}
	switch e.Event {
	case sim.EventUploadStarted, sim.EventUploadFinished, sim.EventUploadFailed:
		l.Bytes = &e.Bytes
	}
	return l
}

// simErrorLine is a fleet that could not start: an error line that also
// carries the keys of the error event sim printed before schema 2 (event,
// time, device, text), kept until the first tagged release.
type simErrorLine struct {
	errorLine
	Event  string    `json:"event"`
	Time   time.Time `json:"time"`
	Device *string   `json:"device"` // the device that failed, when one did
	Text   string    `json:"text"`
}

// simStartFailure writes the error line of a fleet that did not start.
func simStartFailure(a *app, err error, startErr error, at time.Time) {
	l := simErrorLine{errorLine: errorLine{lineHead: head("error"), Command: a.commandName(),
		Error: newErrorObject(errorCode(err), err.Error(), "")}, Event: "error", Time: at, Text: err.Error()}
	if se := (*sim.StartError)(nil); errors.As(startErr, &se) {
		l.Device = nullString(se.Device)
		if !se.At.IsZero() {
			l.Time = se.At
		}
	}
	a.jsonErrors++
	a.writeLine(l)
}
