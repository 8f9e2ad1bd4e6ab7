// Package stasisapp is the ARI side of invokeari: it originates calls on Asterisk as a
// Stasis application, follows each call's channel events through a pure state machine
// (Call), and reports progress and the final outcome.
package stasisapp

import (
	"time"

	"github.com/invokeari/invokeari/events"
)

// Wait says when Originate returns.
type Wait string

// Wait modes (SPEC §2).
const (
	WaitAccepted Wait = "accepted" // Asterisk accepted the originate
	WaitAnswer   Wait = "answer"   // answered, or failed to connect
	WaitEnd      Wait = "end"      // the call ended
)

// Request is one validated originate command. The front doors build it; nothing in it
// is a secret.
type Request struct {
	ID        string            // call id = ARI channel id; chosen by the caller or generated
	Server    string            // configured Asterisk name
	Endpoint  string            // TECH/resource
	Context   string            // where the answered call continues
	Extension string            // extension in Context (priority 1)
	Timeout   time.Duration     // ring timeout
	CallerID  string            // "Name" <number>, <number> or number; may be empty
	Variables map[string]string // channel variables
	Wait      Wait
	Key       string // API key name (not the key)
	Door      string // "http" or "nats"
	// Release, when set, is called exactly once: when the call has ended, or when it was
	// refused before anything reached Asterisk. Front doors use it to free admission slots.
	Release func() `json:"-"`
}

// EventRequest is the request as carried in published events (no secrets).
func (r Request) EventRequest() *events.Request {
	return &events.Request{
		Destination: r.Endpoint,
		Context:     r.Context,
		Extension:   r.Extension,
		TimeoutSec:  int(r.Timeout / time.Second),
		CallerID:    r.CallerID,
		Variables:   r.Variables,
		Server:      r.Server,
		Wait:        string(r.Wait),
		Door:        r.Door,
	}
}
