package stasisapp

import (
	"errors"

	"github.com/invokeari/invokeari/events"
)

// Errors Originate returns before or instead of dialling. Front doors map them to
// status codes (bridge/api); ARI's own refusals arrive as *ari.Error.
var (
	// ErrNotConnected: the app's websocket to that Asterisk is down; nothing was sent.
	ErrNotConnected = errors.New("no ARI connection to that Asterisk")
	// ErrDraining: the daemon is shutting down and accepts no new calls.
	ErrDraining = errors.New("draining: not accepting new calls")
	// ErrUnknownServer: the request named an Asterisk that is not configured.
	ErrUnknownServer = errors.New("unknown Asterisk server")
	// ErrIdempotencyConflict: the call id is in use by a call with other parameters.
	ErrIdempotencyConflict = errors.New("call id already used with different parameters")
	// ErrBackpressure: the event outbox or the in-flight table is full; try again later.
	ErrBackpressure = errors.New("too many calls in flight")
	// ErrWaitTimeout: the reply deadline passed before the awaited state (the call goes on
	// and still ends in exactly one outcome event).
	ErrWaitTimeout = errors.New("wait outlived the ring timeout plus margin")
)

// Step is one line of a reply's debug transcript. It never holds secrets.
type Step struct {
	TMS      int64  `json:"t_ms"`
	Step     string `json:"step"`
	HTTPCode int    `json:"http_code,omitempty"`
}

// Result is what Originate reports: the call record as of the reply, and what ARI said
// to the originate.
type Result struct {
	Call events.Call
	// ARIStatus is the HTTP status of POST /channels (0 when ARI was not reached).
	ARIStatus int
	// ARIBody is ARI's decoded reply body to POST /channels (the channel, or the error).
	ARIBody any
	// TransportError is the transport error text when ARI was not reached.
	TransportError string
	// Replayed is true when the id named an existing call (idempotent repeat).
	Replayed   bool
	Transcript []Step
}
