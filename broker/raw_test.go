package broker

import (
	"fmt"
	"sync/atomic"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// device is a plain paho client standing for a device: clean session,
// QoS 0 publishes, as Tasmota's PubSubClient.
type device struct{ c mqtt.Client }

var devN atomic.Int32

func rawClient(t *testing.T, addr string) *device {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("dev%d", devN.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &device{c}
}

func (d *device) publish(t *testing.T, topic, payload string) {
	t.Helper()
	if tok := d.c.Publish(topic, 0, false, payload); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
}

func (d *device) publishRetained(t *testing.T, topic, payload string) {
	t.Helper()
	if tok := d.c.Publish(topic, 1, true, payload); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
}
