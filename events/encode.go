package events

import (
	"bytes"
	"encoding/json"
	"sync"
)

// encoder is a reusable JSON encoder and its buffer: one event's encoding then costs
// a single allocation for the bytes kept in the outbox.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	// Caller ids look like "Name" <6001>; keep them readable for nats CLI users.
	e.enc.SetEscapeHTML(false)
	return e
}}

// encodeEvent returns ev as JSON, in a new slice owned by the caller.
func encodeEvent(ev *Event) ([]byte, error) {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(ev); err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	return bytes.Clone(b[:len(b)-1]), nil // drop the encoder's trailing newline
}
