package fakedev

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// A minimal MQTT 3.1.1 client, written from the OASIS MQTT Version 3.1.1
// specification alone (packet layouts §2–§3, keep alive §3.1.2.10, the will
// §3.1.2.5): what a device needs to connect with a will, subscribe, publish
// at QoS 0 or 1 and keep its link alive. It shares no code with the
// project's broker package, so the two cannot agree on a misreading.

// MQTT control packet types (§2.2.1).
const (
	mqttCONNECT     = 1
	mqttCONNACK     = 2
	mqttPUBLISH     = 3
	mqttPUBACK      = 4
	mqttPUBREC      = 5
	mqttPUBREL      = 6
	mqttPUBCOMP     = 7
	mqttSUBSCRIBE   = 8
	mqttSUBACK      = 9
	mqttUNSUBSCRIBE = 10
	mqttUNSUBACK    = 11
	mqttPINGREQ     = 12
	mqttPINGRESP    = 13
	mqttDISCONNECT  = 14
)

// mqttMaxPacket bounds what the client takes from a broker: a broker's
// bytes never make it allocate more (the remaining length can claim up to
// 256 MiB).
const mqttMaxPacket = 1 << 20

// mqttPacket is one decoded packet a broker sends a client.
type mqttPacket struct {
	Type  byte
	Flags byte // the fixed header's low nibble

	// CONNACK.
	SessionPresent bool
	ReturnCode     byte

	// PUBLISH.
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Dup     bool

	// PUBLISH at QoS > 0, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
	ID uint16
	// SUBACK: the granted QoS per filter, 0x80 for a refused one.
	Granted []byte
}

var errMQTTMalformed = errors.New("malformed MQTT packet")

func mqttMalformed(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMQTTMalformed}, a...)...)
}

// readMQTTPacket reads one packet: the fixed header, the remaining length
// (§2.2.3, at most four bytes) and the body, then decodes it.
func readMQTTPacket(r io.ByteReader, body io.Reader) (mqttPacket, error) {
	first, err := r.ReadByte()
	if err != nil {
		return mqttPacket{}, err
	}
	n, err := readMQTTLength(r)
	if err != nil {
		return mqttPacket{}, err
	}
	if n > mqttMaxPacket {
		return mqttPacket{}, mqttMalformed("a packet of %d bytes is more than this client takes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return mqttPacket{}, err
	}
	return decodeMQTTPacket(first, b)
}

// readMQTTLength is the variable length encoding of §2.2.3.
func readMQTTLength(r io.ByteReader) (int, error) {
	n, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return 0, mqttMalformed("remaining length longer than four bytes")
		}
		b, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		n += int(b&0x7F) * mul
		if b&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
}

// decodeMQTTPacket decodes the body of a packet a broker may send a client
// and checks what §3 requires of it. Packets only a client sends (CONNECT,
// SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT) are protocol violations from
// a broker.
func decodeMQTTPacket(first byte, b []byte) (mqttPacket, error) {
	p := mqttPacket{Type: first >> 4, Flags: first & 0x0F}
	idOnly := func(flags byte) error {
		if p.Flags != flags {
			return mqttMalformed("type %d with flags %#x", p.Type, p.Flags)
		}
		if len(b) != 2 {
			return mqttMalformed("type %d with %d bytes, want 2", p.Type, len(b))
		}
		p.ID = binary.BigEndian.Uint16(b)
		return nil
	}
	switch p.Type {
	case mqttCONNACK:
		if p.Flags != 0 || len(b) != 2 {
			return p, mqttMalformed("CONNACK with flags %#x and %d bytes", p.Flags, len(b))
		}
		if b[0]&^1 != 0 {
			return p, mqttMalformed("CONNACK acknowledge flags %#x", b[0])
		}
		p.SessionPresent, p.ReturnCode = b[0] == 1, b[1]
		if p.ReturnCode > 5 {
			return p, mqttMalformed("CONNACK return code %d", p.ReturnCode)
		}
		if p.ReturnCode != 0 && p.SessionPresent {
			return p, mqttMalformed("CONNACK refusing with a session present")
		}
	case mqttPUBLISH:
		p.Dup, p.QoS, p.Retain = p.Flags&8 != 0, p.Flags>>1&3, p.Flags&1 != 0
		if p.QoS == 3 {
			return p, mqttMalformed("PUBLISH at QoS 3")
		}
		if p.QoS == 0 && p.Dup {
			return p, mqttMalformed("PUBLISH at QoS 0 marked duplicate")
		}
		topic, rest, err := mqttString(b)
		if err != nil {
			return p, err
		}
		if err := mqttTopicName(topic); err != nil {
			return p, err
		}
		p.Topic = topic
		if p.QoS > 0 {
			if len(rest) < 2 {
				return p, mqttMalformed("PUBLISH without its packet identifier")
			}
			p.ID, rest = binary.BigEndian.Uint16(rest), rest[2:]
			if p.ID == 0 {
				return p, mqttMalformed("PUBLISH with packet identifier 0")
			}
		}
		p.Payload = rest
	case mqttPUBACK, mqttPUBREC, mqttPUBCOMP, mqttUNSUBACK:
		if err := idOnly(0); err != nil {
			return p, err
		}
	case mqttPUBREL:
		if err := idOnly(2); err != nil {
			return p, err
		}
	case mqttSUBACK:
		if p.Flags != 0 || len(b) < 3 {
			return p, mqttMalformed("SUBACK with flags %#x and %d bytes", p.Flags, len(b))
		}
		p.ID = binary.BigEndian.Uint16(b)
		for _, g := range b[2:] {
			if g > 2 && g != 0x80 {
				return p, mqttMalformed("SUBACK return code %#x", g)
			}
		}
		p.Granted = append([]byte(nil), b[2:]...)
	case mqttPINGRESP:
		if p.Flags != 0 || len(b) != 0 {
			return p, mqttMalformed("PINGRESP with flags %#x and %d bytes", p.Flags, len(b))
		}
	default:
		return p, mqttMalformed("packet type %d from a broker", p.Type)
	}
	return p, nil
}

// mqttString reads one UTF-8 encoded string (§1.5.3): a two-byte length,
// then well-formed UTF-8 without U+0000.
func mqttString(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, mqttMalformed("string length cut short")
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, mqttMalformed("string of %d bytes in %d", n, len(b)-2)
	}
	s := string(b[2 : 2+n])
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return "", nil, mqttMalformed("string is not well-formed UTF-8")
	}
	return s, b[2+n:], nil
}

// mqttTopicName checks a topic a message is published to (§4.7): at least
// one character, no wildcard.
func mqttTopicName(t string) error {
	if t == "" {
		return mqttMalformed("empty topic name")
	}
	if strings.ContainsAny(t, "+#") {
		return mqttMalformed("wildcard in topic name %q", t)
	}
	return nil
}

// mqttPacketBytes frames a body with its fixed header.
func mqttPacketBytes(first byte, body []byte) []byte {
	out := []byte{first}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func appendMQTTString(b []byte, s string) []byte {
	return appendMQTTBinary(b, []byte(s))
}

func appendMQTTBinary(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// mqttOptions is what a client tells in CONNECT (§3.1).
type mqttOptions struct {
	ClientID     string
	KeepAlive    time.Duration // 0: no keep alive
	CleanSession bool
	// WillTopic "" sends no will.
	WillTopic   string
	WillPayload []byte
	WillQoS     byte
	WillRetain  bool
	// Username/Password are sent when HasUsername/HasPassword (§3.1.2.8:
	// a password only with a user name).
	Username, Password       string
	HasUsername, HasPassword bool
}

// connectPacket builds CONNECT.
func (o mqttOptions) connectPacket() ([]byte, error) {
	for _, s := range []string{o.ClientID, o.WillTopic, o.Username, o.Password} {
		if len(s) > 0xFFFF {
			return nil, errors.New("a CONNECT field is longer than 65535 bytes")
		}
	}
	if len(o.WillPayload) > 0xFFFF {
		return nil, errors.New("the will is longer than 65535 bytes")
	}
	if o.HasPassword && !o.HasUsername {
		return nil, errors.New("MQTT 3.1.1 sends a password only with a user name")
	}
	if o.WillQoS > 2 {
		return nil, fmt.Errorf("will QoS %d", o.WillQoS)
	}
	ka := o.KeepAlive / time.Second
	if ka > 0xFFFF || o.KeepAlive < 0 {
		return nil, fmt.Errorf("keep alive %s out of range", o.KeepAlive)
	}
	if o.KeepAlive > 0 && ka == 0 {
		ka = 1
	}
	var flags byte
	if o.CleanSession {
		flags |= 0x02
	}
	if o.WillTopic != "" {
		if err := mqttTopicName(o.WillTopic); err != nil {
			return nil, err
		}
		flags |= 0x04 | o.WillQoS<<3
		if o.WillRetain {
			flags |= 0x20
		}
	}
	if o.HasPassword {
		flags |= 0x40
	}
	if o.HasUsername {
		flags |= 0x80
	}
	b := appendMQTTString(nil, "MQTT")
	b = append(b, 4, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(ka))
	b = appendMQTTString(b, o.ClientID)
	if o.WillTopic != "" {
		b = appendMQTTString(b, o.WillTopic)
		b = appendMQTTBinary(b, o.WillPayload)
	}
	if o.HasUsername {
		b = appendMQTTString(b, o.Username)
	}
	if o.HasPassword {
		b = appendMQTTString(b, o.Password)
	}
	return mqttPacketBytes(mqttCONNECT<<4, b), nil
}

// publishPacket builds PUBLISH (§3.3).
func publishPacket(topic string, payload []byte, qos byte, retain, dup bool, id uint16) ([]byte, error) {
	if err := mqttTopicName(topic); err != nil {
		return nil, err
	}
	if len(topic) > 0xFFFF || !utf8.ValidString(topic) {
		return nil, fmt.Errorf("topic %q cannot be sent", topic)
	}
	if qos > 2 {
		return nil, fmt.Errorf("QoS %d", qos)
	}
	first := byte(mqttPUBLISH<<4) | qos<<1
	if retain {
		first |= 1
	}
	if dup && qos > 0 {
		first |= 8
	}
	b := appendMQTTString(nil, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	b = append(b, payload...)
	if len(b) > 268435455 {
		return nil, errors.New("message too large for MQTT")
	}
	return mqttPacketBytes(first, b), nil
}

// idPacket builds PUBACK, PUBREC, PUBREL or PUBCOMP.
func idPacket(typ byte, id uint16) []byte {
	first := typ << 4
	if typ == mqttPUBREL {
		first |= 2
	}
	return mqttPacketBytes(first, binary.BigEndian.AppendUint16(nil, id))
}

// mqttMessage is one message the broker delivered.
type mqttMessage struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
	Dup      bool
}

// mqttClient is one MQTT connection. Handlers given to mqttDial run on the
// reader goroutine: they must not wait on the client (a QoS 1 publish from
// there would wait for a PUBACK only that goroutine can read).
type mqttClient struct {
	conn      net.Conn
	keepAlive time.Duration
	onMessage func(mqttMessage)

	wmu sync.Mutex // one packet written at a time

	mu        sync.Mutex
	nextID    uint16
	waits     map[uint16]chan mqttPacket
	lastSent  time.Time
	pingSent  time.Time // zero when no PINGREQ waits for its PINGRESP
	pings     int
	pongs     int
	sessionOn bool
	err       error

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// mqttConnectError is a broker's refusal in CONNACK.
type mqttConnectError byte

func (e mqttConnectError) Error() string {
	words := [...]string{"accepted", "unacceptable protocol version", "client identifier rejected",
		"server unavailable", "bad user name or password", "not authorized"}
	if int(e) < len(words) {
		return "broker refused the connection: " + words[e]
	}
	return fmt.Sprintf("broker refused the connection: code %d", byte(e))
}

// mqttDial connects and waits for CONNACK within ctx. onMessage gets every
// PUBLISH the broker delivers (nil: dropped).
func mqttDial(ctx context.Context, addr string, o mqttOptions, onMessage func(mqttMessage)) (*mqttClient, error) {
	pkt, err := o.connectPacket()
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The handshake is bounded by ctx: a broker that takes the connection
	// and says nothing must not hang the device.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(conn)
	ack, err := func() (mqttPacket, error) {
		if _, err := conn.Write(pkt); err != nil {
			return mqttPacket{}, err
		}
		return readMQTTPacket(br, br)
	}()
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("no CONNACK from %s: %w", addr, ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	switch {
	case err != nil:
		conn.Close()
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	case ack.Type != mqttCONNACK:
		conn.Close()
		return nil, fmt.Errorf("broker %s answered CONNECT with packet type %d", addr, ack.Type)
	case ack.ReturnCode != 0:
		conn.Close()
		return nil, mqttConnectError(ack.ReturnCode)
	}
	c := &mqttClient{conn: conn, keepAlive: o.KeepAlive, onMessage: onMessage, waits: map[uint16]chan mqttPacket{},
		lastSent: time.Now(), sessionOn: ack.SessionPresent, done: make(chan struct{})}
	c.wg.Add(1)
	go c.read(br)
	if o.KeepAlive > 0 {
		c.wg.Add(1)
		go c.keep()
	}
	return c, nil
}

// SessionPresent is CONNACK's flag.
func (c *mqttClient) SessionPresent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessionOn
}

// Done is closed when the link is gone (lost, aborted or disconnected).
func (c *mqttClient) Done() <-chan struct{} { return c.done }

// Err is why the link ended; nil while it is up or after Disconnect.
func (c *mqttClient) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Pings is how many PINGREQ were sent and how many PINGRESP came back.
func (c *mqttClient) Pings() (sent, answered int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pings, c.pongs
}

func (c *mqttClient) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	// A write that cannot finish in time means a dead link: a blocked
	// writer must not outlive it.
	_ = c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.conn.Write(b)
	if err != nil {
		c.fail(err)
		return err
	}
	c.mu.Lock()
	c.lastSent = time.Now()
	c.mu.Unlock()
	return nil
}

// fail ends the link for err (the first reason is kept).
func (c *mqttClient) fail(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
		c.conn.Close()
	})
}

// read is the reader goroutine: it hands messages on, acknowledges them,
// and wakes the waiters of PUBACK, SUBACK and PINGRESP.
func (c *mqttClient) read(br *bufio.Reader) {
	defer c.wg.Done()
	for {
		p, err := readMQTTPacket(br, br)
		if err != nil {
			c.fail(err)
			return
		}
		switch p.Type {
		case mqttPUBLISH:
			if c.onMessage != nil {
				c.onMessage(mqttMessage{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retained: p.Retain, Dup: p.Dup})
			}
			switch p.QoS {
			case 1:
				_ = c.write(idPacket(mqttPUBACK, p.ID))
			case 2:
				// Never asked for (subscriptions are at most QoS 1), but a
				// broker's QoS 2 is answered rather than left hanging.
				_ = c.write(idPacket(mqttPUBREC, p.ID))
			}
		case mqttPUBREL:
			_ = c.write(idPacket(mqttPUBCOMP, p.ID))
		case mqttPINGRESP:
			c.mu.Lock()
			c.pongs++
			c.pingSent = time.Time{}
			c.mu.Unlock()
		case mqttPUBACK, mqttSUBACK, mqttUNSUBACK, mqttPUBREC, mqttPUBCOMP:
			c.mu.Lock()
			ch := c.waits[p.ID]
			delete(c.waits, p.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- p
			}
		case mqttCONNACK:
			c.fail(errors.New("a second CONNACK from the broker"))
			return
		}
	}
}

// keep sends PINGREQ when nothing went out for half the keep alive (the
// broker cuts a client silent for 1.5 times it), and ends a link whose
// PINGRESP has not come back within the keep alive.
func (c *mqttClient) keep() {
	defer c.wg.Done()
	tick := time.NewTicker(max(c.keepAlive/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-tick.C:
			c.mu.Lock()
			idle, waiting := now.Sub(c.lastSent), c.pingSent
			c.mu.Unlock()
			if !waiting.IsZero() {
				if now.Sub(waiting) > c.keepAlive {
					c.fail(errors.New("no PINGRESP within the keep alive"))
					return
				}
				continue
			}
			if idle >= c.keepAlive/2 {
				c.mu.Lock()
				c.pingSent = now
				c.pings++
				c.mu.Unlock()
				_ = c.write(mqttPacketBytes(mqttPINGREQ<<4, nil))
			}
		}
	}
}

// id allocates a packet identifier and the channel its answer comes on.
func (c *mqttClient) id() (uint16, chan mqttPacket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		c.nextID++
		if c.nextID != 0 && c.waits[c.nextID] == nil {
			break
		}
	}
	ch := make(chan mqttPacket, 1)
	c.waits[c.nextID] = ch
	return c.nextID, ch
}

func (c *mqttClient) forget(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waits, id)
}

// await waits for the answer to packet id.
func (c *mqttClient) await(ctx context.Context, id uint16, ch chan mqttPacket, want byte) (mqttPacket, error) {
	select {
	case p := <-ch:
		if p.Type != want {
			return p, fmt.Errorf("broker answered packet %d with type %d, want %d", id, p.Type, want)
		}
		return p, nil
	case <-c.done:
		c.forget(id)
		return mqttPacket{}, fmt.Errorf("link closed before the broker answered: %w", net.ErrClosed)
	case <-ctx.Done():
		c.forget(id)
		return mqttPacket{}, ctx.Err()
	}
}

// Publish sends a message at QoS 0 (returns once written) or QoS 1 (waits
// for PUBACK or ctx).
func (c *mqttClient) Publish(ctx context.Context, topic string, payload []byte, qos byte, retain bool) error {
	if qos > 1 {
		return fmt.Errorf("this client publishes at QoS 0 or 1, not %d", qos)
	}
	if qos == 0 {
		b, err := publishPacket(topic, payload, 0, retain, false, 0)
		if err != nil {
			return err
		}
		return c.write(b)
	}
	id, ch := c.id()
	b, err := publishPacket(topic, payload, 1, retain, false, id)
	if err != nil {
		c.forget(id)
		return err
	}
	if err := c.write(b); err != nil {
		c.forget(id)
		return err
	}
	_, err = c.await(ctx, id, ch, mqttPUBACK)
	return err
}

// Subscribe subscribes to filters at qos and waits for SUBACK; a filter
// the broker refuses is an error.
func (c *mqttClient) Subscribe(ctx context.Context, qos byte, filters ...string) ([]byte, error) {
	if len(filters) == 0 || qos > 2 {
		return nil, errors.New("SUBSCRIBE needs a filter and QoS 0 to 2")
	}
	id, ch := c.id()
	b := binary.BigEndian.AppendUint16(nil, id)
	for _, f := range filters {
		if f == "" || len(f) > 0xFFFF || !utf8.ValidString(f) {
			c.forget(id)
			return nil, fmt.Errorf("topic filter %q cannot be sent", f)
		}
		b = appendMQTTString(b, f)
		b = append(b, qos)
	}
	if err := c.write(mqttPacketBytes(mqttSUBSCRIBE<<4|2, b)); err != nil {
		c.forget(id)
		return nil, err
	}
	p, err := c.await(ctx, id, ch, mqttSUBACK)
	if err != nil {
		return nil, err
	}
	if len(p.Granted) != len(filters) {
		return p.Granted, fmt.Errorf("SUBACK granted %d filters of %d", len(p.Granted), len(filters))
	}
	for i, g := range p.Granted {
		if g == 0x80 {
			return p.Granted, fmt.Errorf("broker refused the subscription to %q", filters[i])
		}
	}
	return p.Granted, nil
}

// Abort drops the link without DISCONNECT, as a device that loses power or
// restarts: the broker then publishes the will.
func (c *mqttClient) Abort() {
	c.fail(errors.New("aborted"))
	c.wg.Wait()
}

// Disconnect says goodbye (DISCONNECT: the broker discards the will), then
// closes.
func (c *mqttClient) Disconnect() {
	_ = c.write(mqttPacketBytes(mqttDISCONNECT<<4, nil))
	c.closeOnce.Do(func() {
		close(c.done)
		c.conn.Close()
	})
	c.wg.Wait()
}
