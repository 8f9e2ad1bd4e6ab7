// Package events is the call event and outcome model that invokeari publishes, and the
// durable publishing of it to NATS JetStream.
package events

import (
	"slices"
	"time"
)

// Outcome is a call's terminal result (SPEC §4). The empty Outcome means "not final yet".
type Outcome string

// The outcome vocabulary, strongest evidence first where it matters.
const (
	Answered      Outcome = "answered" // reply-time value for wait=answer once Up; never final in `ended`
	Completed     Outcome = "completed"
	Busy          Outcome = "busy"
	NoAnswer      Outcome = "no_answer"
	Rejected      Outcome = "rejected"
	InvalidNumber Outcome = "invalid_number"
	Unavailable   Outcome = "unavailable"
	Congestion    Outcome = "congestion"
	Canceled      Outcome = "canceled"
	Failed        Outcome = "failed"
	Unknown       Outcome = "unknown"
)

// Kind names a call event: the last segment of invokeari.calls.<id>.<kind>.
type Kind string

// The call event kinds, in the order a call can pass through them.
const (
	Initiated    Kind = "initiated"
	Ringing      Kind = "ringing"
	Progress     Kind = "progress"
	KindAnswered Kind = "answered"
	Ended        Kind = "ended"
	// Webhook reports one exchange with a webhook-driven call's webhook (SPEC §9); it
	// comes between answered and ended and carries Event.Webhook.
	Webhook Kind = "webhook"
)

// State is where a call is now.
type State string

// Call states. A call only moves forward through them.
const (
	StateDialing  State = "dialing"
	StateRinging  State = "ringing"
	StateProgress State = "progress"
	StateAnswered State = "answered"
	StateEnded    State = "ended"
)

// Call is the call record: the `call` object of a reply and the payload of `ended`.
// Raw evidence (cause, sip code, dialstatus) is carried beside the outcome.
type Call struct {
	ID         string     `json:"id"`
	Server     string     `json:"server"`
	Channel    string     `json:"channel"` // ARI channel name, e.g. PJSIP/6001-00000001
	State      State      `json:"state"`
	Outcome    Outcome    `json:"outcome,omitempty"`
	Reason     string     `json:"reason,omitempty"` // why the outcome was decided (always set for unknown)
	Cause      int        `json:"cause"`
	CauseTxt   string     `json:"cause_txt"`
	SIPCode    int        `json:"sip_code"`
	DialStatus string     `json:"dialstatus"`
	CreatedAt  time.Time  `json:"created_at"`
	RingingAt  *time.Time `json:"ringing_at"`
	AnsweredAt *time.Time `json:"answered_at"`
	EndedAt    *time.Time `json:"ended_at"`
	RingMS     *int64     `json:"ring_ms"`
	DurationMS *int64     `json:"duration_ms"`
	// WebhookError says why the webhook of a webhook-driven call failed (SPEC §9).
	WebhookError string `json:"webhook_error,omitempty"`
	// HangupBy says who hung the call up when invokeari did (HangupByAPI, HangupByDaemon);
	// empty when the far end or Asterisk ended it, or when that is not known.
	HangupBy string `json:"hangup_by,omitempty"`
}

// WebhookExchange is one request to a call's webhook and its answer: the host only,
// never the path, query or body (they may carry secrets).
type WebhookExchange struct {
	Event  string `json:"event"`  // what was posted: answered, gathered, recorded, dialed, redirected
	Host   string `json:"host"`   // host[:port] of the URL
	Status int    `json:"status"` // HTTP status; 0 when no answer came
	MS     int64  `json:"ms"`     // how long the exchange took
	Error  string `json:"error,omitempty"`
}

// Who hung a call up, when invokeari did (Call.HangupBy).
const (
	HangupByAPI    = "api"    // DELETE /v2/calls/{id} or invokeari.hangup
	HangupByDaemon = "daemon" // the daemon's drain at shutdown
)

// Request is what was asked for, without secrets (no aripass, no API key).
type Request struct {
	Destination string            `json:"d"`
	Context     string            `json:"c"`
	Extension   string            `json:"e"`
	TimeoutSec  int               `json:"t"`
	CallerID    string            `json:"i,omitempty"`
	Variables   map[string]string `json:"v,omitempty"`
	Server      string            `json:"ari,omitempty"` // configured server name
	Wait        string            `json:"wait"`
	Door        string            `json:"door,omitempty"` // http or nats
	// Callback is the status callback URL and CallbackEvents the kinds sent to it
	// (initiated, ringing, answered, ended); events/callbacks delivers from these.
	Callback       string   `json:"callback,omitempty"`
	CallbackEvents []string `json:"callback_events,omitempty"`
}

// CallbackHeader says on each event whether it asks for a status callback ("yes" or
// "no"), so the callbacks deliverer acks the others without decoding them. Events
// stored before the header existed have none and are decoded.
const CallbackHeader = "Invokeari-Callback"

// WantsCallback reports whether ev asks for a status callback: its request has a
// callback URL and lists ev's kind.
func WantsCallback(ev *Event) bool {
	return ev.Request != nil && CallbackAsked(ev.Request.Callback, ev.Request.CallbackEvents, ev.Event)
}

// CallbackAsked is WantsCallback's rule on a request's callback URL and kinds.
func CallbackAsked(url string, kinds []string, kind Kind) bool {
	return url != "" && slices.Contains(kinds, string(kind))
}

// Event is published on invokeari.calls.<id>.<event> (SPEC §3).
type Event struct {
	ID         string    `json:"id"`
	Seq        uint64    `json:"seq"`
	Event      Kind      `json:"event"`
	Time       time.Time `json:"time"`
	Server     string    `json:"server"`
	Channel    string    `json:"channel"`
	State      State     `json:"state"`
	Outcome    Outcome   `json:"outcome,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Cause      int       `json:"cause"`
	CauseTxt   string    `json:"cause_txt"`
	SIPCode    int       `json:"sip_code"`
	DialStatus string    `json:"dialstatus"`
	RingMS     *int64    `json:"ring_ms"`
	DurationMS *int64    `json:"duration_ms"`
	Request    *Request  `json:"request,omitempty"`
	Key        string    `json:"key,omitempty"` // API key name, never the key
	// Call is the complete call record; always set on `ended`.
	Call *Call `json:"call,omitempty"`
	// Webhook is set on `webhook` events.
	Webhook *WebhookExchange `json:"webhook,omitempty"`
	// Fingerprint of the request, sent on `ended` as the FingerprintHeader header (not
	// in the JSON): a restarted daemon tells a repeated id from a conflicting one by it.
	Fingerprint string `json:"-"`
}
