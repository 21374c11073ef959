package core

import (
	"sync"
	"time"
)

// EventKind names an event. The values are stable: the CLI prints them in
// --json output.
type EventKind string

// Event kinds.
const (
	// EventReady: the device is serving (after Start and after every boot
	// that reaches the network). Carries every address and the running image.
	EventReady EventKind = "ready"
	// EventUploadStarted: a client began an upload (after auth, before the erase).
	EventUploadStarted EventKind = "upload_started"
	// EventUploadFinished: the image was accepted; a reboot follows.
	EventUploadFinished EventKind = "upload_finished"
	// EventUploadFailed: the upload ended without a new image; Text is what
	// the device answered ("" when it answered nothing).
	EventUploadFailed EventKind = "upload_failed"
	// EventAuthFailed: a request or espota session failed authentication.
	EventAuthFailed EventKind = "auth_failed"
	// EventFault: an injected fault acted.
	EventFault EventKind = "fault"
	// EventReboot: the device resets (Reason: update, crash, watchdog,
	// self_check_failed, power_loss, request).
	EventReboot EventKind = "reboot"
	// EventRollback: the bootloader did not boot the image otadata selected
	// (it was aborted, invalid or missing) and runs the previous one.
	EventRollback EventKind = "rollback"
	// EventValid: the running image marked itself valid.
	EventValid EventKind = "valid"
	// EventDown: the device stays off the network (no-return fault, or a
	// bricked ESP8266) until closed.
	EventDown EventKind = "down"
	// EventStopped: the device was closed.
	EventStopped EventKind = "stopped"
)

// Event is one thing that happened on a device. It marshals to JSON with
// stable snake_case fields, empty ones omitted:
//
//	{"event":"upload_finished","time":"…","device":"ots-sim-01","addr":"127.0.0.2:3232",…}
type Event struct {
	Event  EventKind `json:"event"`
	Time   time.Time `json:"time"`
	Device string    `json:"device"`
	// Addr is the OTA address (host:port; UDP for espota personalities).
	Addr string `json:"addr,omitempty"`
	// Web is the web server address (ready events of seed and ots).
	Web string `json:"web,omitempty"`
	// Host is the mDNS host name (ready).
	Host        string      `json:"host,omitempty"`
	Personality Personality `json:"personality,omitempty"`
	// Protocol is "http" or "espota" (upload and auth events).
	Protocol string `json:"protocol,omitempty"`
	// Path is the HTTP request path (upload and auth events).
	Path string `json:"path,omitempty"`
	// Remote is the client's address.
	Remote string `json:"remote,omitempty"`
	// Project and Version describe the running image (ready, valid,
	// rollback) or the uploaded one (upload_finished).
	Project string `json:"project,omitempty"`
	Version string `json:"version,omitempty"`
	// From is the version the device gave up on (rollback).
	From  string   `json:"from,omitempty"`
	Slot  string   `json:"slot,omitempty"`
	State AppState `json:"state,omitempty"`
	// Size is the announced image size; Bytes how many were received.
	Size  int64 `json:"size,omitempty"`
	Bytes int64 `json:"bytes,omitempty"`
	// Status is the HTTP status the device answered.
	Status int `json:"status,omitempty"`
	// Text is the device's own words (response body or espota reply).
	Text string `json:"text,omitempty"`
	// Reason says why (reboot, upload_failed, rollback, auth_failed).
	Reason string `json:"reason,omitempty"`
	// Fault is the fault spec (fault events).
	Fault string `json:"fault,omitempty"`
	// Boot counts the device's boots so far.
	Boot int `json:"boot,omitempty"`
}

// eventSink serialises calls to an OnEvent callback.
type eventSink struct {
	mu sync.Mutex
	fn func(Event)
}

func newEventSink(fn func(Event)) *eventSink { return &eventSink{fn: fn} }

func (s *eventSink) emit(e Event) {
	if s == nil || s.fn == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fn(e)
}
