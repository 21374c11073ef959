package cmd

import (
	"time"

	"github.com/ots-ota/ots-ota/discover"
)

// discover --json: one device line per device, or with --watch one line
// per event, then the summary (docs/json.md, docs/schema/discover.json).

// deviceLine is one device of discover's list.
type deviceLine struct {
	lineHead
	Name     string   `json:"name"`
	Instance *string  `json:"instance"` // the mDNS instance name; null for inventory devices
	Host     *string  `json:"host"`
	Addrs    []string `json:"addrs"`
	Port     *int     `json:"port"`
	Service  *string  `json:"service"`
	Protocol *string  `json:"protocol"`
	// Reachable and Unconfirmed are null with --no-probe (nothing was
	// tried).
	Reachable   *bool             `json:"reachable"`
	Unconfirmed *bool             `json:"unconfirmed"`
	Version     *string           `json:"version"`
	Project     *string           `json:"project"`
	Chip        *string           `json:"chip"`
	Auth        *string           `json:"auth"`
	WebPort     *int              `json:"web_port"`
	TXT         map[string]string `json:"txt"` // null when no TXT record was seen
	Sources     []string          `json:"sources"`
	Note        *string           `json:"note"`
}

func deviceLineOf(r discoverRow) deviceLine {
	l := deviceLine{lineHead: head("device"), Name: r.Name, Instance: nullString(r.Instance), Host: nullString(r.Host),
		Addrs: listOf(r.Addrs), Port: nullPositive(r.Port), Service: nullString(r.Service), Protocol: nullString(r.Protocol),
		Reachable: r.Reachable, Version: nullString(r.Version), Project: nullString(r.Project),
		Chip: nullString(r.Chip), Auth: nullString(r.Auth), WebPort: nullPositive(r.WebPort), TXT: r.TXT,
		Sources: listOf(r.Sources), Note: nullString(r.Note)}
	if r.Reachable != nil {
		l.Unconfirmed = &r.Unconfirmed
	}
	return l
}

// watchLine is one --watch event: its type is the event's kind. Event is
// the same kind under the key watch used before schema 2, kept until the
// first tagged release.
type watchLine struct {
	Type   string      `json:"type"`
	Event  string      `json:"event"`
	Schema int         `json:"schema"`
	Time   time.Time   `json:"time"`
	Device watchDevice `json:"device"`
	// Reason of a removal: goodbye or expired; null otherwise.
	Reason *string `json:"reason"`
}

// watchDevice is a device as mDNS announced it.
type watchDevice struct {
	Instance   string            `json:"instance"`
	Service    string            `json:"service"`
	Host       *string           `json:"host"`
	Port       *int              `json:"port"`
	Addrs      []string          `json:"addrs"`
	TXT        map[string]string `json:"txt"`
	WebPort    *int              `json:"web_port"`
	Interfaces []string          `json:"interfaces"`
	Seen       time.Time         `json:"seen"`
}

func watchLineOf(e discover.Event) watchLine {
	d := e.Device
	addrs := make([]string, 0, len(d.Addrs))
	for _, ad := range d.Addrs {
		addrs = append(addrs, ad.String())
	}
	return watchLine{Type: string(e.Kind), Event: string(e.Kind), Schema: jsonSchemaVersion, Time: e.Time,
		Device: watchDevice{Instance: d.Instance, Service: d.Service, Host: nullString(d.Host), Port: nullPositive(d.Port),
			Addrs: addrs, TXT: d.TXT, WebPort: nullPositive(d.WebPort), Interfaces: listOf(d.Interfaces), Seen: d.Seen},
		Reason: nullString(e.Reason)}
}
