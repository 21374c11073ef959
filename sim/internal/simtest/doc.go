// Package simtest is what the simulator's tests share: devices started for
// a test, images built once, plain HTTP and espota clients written from the
// protocol notes (not from the simulator's or the client's code), event
// logs. Only tests import it.
package simtest
