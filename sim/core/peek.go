package core

import (
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// Peek is what tests look at beyond a device's public face: its mDNS
// instance, the bytes in its slots, the moment it resumes reading. Not for
// use outside tests.
type Peek struct{ d *Device }

// PeekAt peeks at d.
func PeekAt(d *Device) Peek { return Peek{d} }

// Instance is the device's mDNS instance name.
func (p Peek) Instance() string { return p.d.s.Instance }

// SlotData is the image in app slot i (0 factory, 1 ota_0/app0, 2
// ota_1/app1): the store's bytes themselves, nil when the slot is empty.
func (p Peek) SlotData(i int) []byte {
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	if b := p.d.flash.slots[i]; b != nil {
		return b.data
	}
	return nil
}

// OnPause runs h when the device resumes reading after it stopped to erase
// (HTTP: the slot erase; both: a stall fault ending), with the number of
// image bytes it has read so far.
func (p Peek) OnPause(h func(read int64)) {
	p.d.mu.Lock()
	p.d.hookPause = h
	p.d.mu.Unlock()
}

// Services are the device's mDNS services as its firmware registers them now.
func (p Peek) Services() []mdnsd.Service { return p.d.s.fw.Services(p.d.env) }

// IdleEnv is the Env of a device of cfg that never starts (no sockets, no
// goroutines) with the given ports, for tests of what a firmware derives
// from its settings and flash alone (its mDNS records).
func IdleEnv(cfg Config, otaPort, webPort int) (*Env, error) {
	s, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	fac, err := makeFactory(s, NewStore())
	if err != nil {
		return nil, err
	}
	d := &Device{s: s, flash: newDeviceFlash(s, fac), ports: [numPorts]int{PortOTA: otaPort, PortWeb: webPort}}
	d.env = &Env{d: d}
	return d.env, nil
}
