package broker

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyStore is paho's memory store holding its own copy of each PUBLISH,
// and handing out copies: paho keeps the packet it sends in the store,
// and after a reconnect its resume sets the DUP flag on the stored packet
// while its sender may still be writing that very packet (a data race,
// eclipse-paho/paho.mqtt.golang#703). With copies no two goroutines share
// one packet.
type copyStore struct{ *mqtt.MemoryStore }

func newCopyStore() mqtt.Store { return copyStore{mqtt.NewMemoryStore()} }

func (s copyStore) Put(key string, m packets.ControlPacket) { s.MemoryStore.Put(key, clonePublish(m)) }

func (s copyStore) Get(key string) packets.ControlPacket { return clonePublish(s.MemoryStore.Get(key)) }

func clonePublish(m packets.ControlPacket) packets.ControlPacket {
	if pub, ok := m.(*packets.PublishPacket); ok && pub != nil {
		c := *pub
		return &c
	}
	return m
}
