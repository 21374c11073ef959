// Package rollout updates a fleet of devices that fetch their image
// themselves (pull), in waves: a canary first, then cumulative steps over
// the rest, each gated on the one before. It publishes the image with the
// built-in file server (or in a store.Store), commands each device once (a second time only
// after the device itself reported a failed download and did not restart),
// watches what the devices report, and keeps its progress in a state file
// so that an interrupted rollout can be resumed without commanding any
// device twice. For devices that learn of an image by polling a file
// (Announcer), it writes that file at each wave's start, waits until each
// device saw it (Readier), and puts back what was there if a gate stops
// the rollout.
//
// The package knows no device family: a Family (rollout/tasmota) turns
// reports, reads and commands into the family's words.
package rollout
