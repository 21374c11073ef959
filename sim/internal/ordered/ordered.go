// Package ordered writes JSON objects in the order a device's firmware
// builds them (ArduinoJson keeps insertion order), without spaces, as
// Tasmota and WLED answer.
package ordered

import (
	"encoding/json"
	"strings"
)

// Marshal writes o as one JSON object, its keys in o's order; pair tells
// an element's key and value.
func Marshal[E any](o []E, pair func(E) (string, any)) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		key, val := pair(e)
		k, _ := json.Marshal(key)
		v, err := json.Marshal(val)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}
