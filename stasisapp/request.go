// Package stasisapp is the ARI side of invokeari: it originates calls on Asterisk as a
// Stasis application, follows each call's channel events through a pure state machine
// (Call), and reports progress and the final outcome.
package stasisapp

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
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
// is a secret except Dynamic's credentials, which are never persisted or published.
type Request struct {
	ID string // call id = ARI channel id; chosen by the caller or generated
	// FreshID says the door generated ID (128 random bits), so it cannot repeat an
	// earlier call: no idempotency look-up in the event stream is made for it. Only a
	// caller's own id can be a repeat of a call this daemon no longer holds in memory.
	FreshID   bool              `json:"-"`
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
	// Callback is the status callback URL ("" for none) and CallbackEvents the event
	// kinds POSTed to it (SPEC §8); both are published in the events' request.
	Callback       string   `json:",omitempty"`
	CallbackEvents []string `json:",omitempty"`
	// Release, when set, is called exactly once: when the call has ended, or when it was
	// refused before anything reached Asterisk. Front doors use it to free admission slots.
	Release func() `json:"-"`
	// Dynamic is set when the request names an Asterisk that is not configured (the
	// front door's opt-in dynamic_servers); Server is then DynamicServerName(Dynamic.URL).
	// It holds secrets: it is never persisted (the Request JSON is stored), published
	// or logged, so a restarted daemon cannot follow such a call (it ends unknown).
	Dynamic *DynamicServer `json:"-"`
	// Webhook, when set, is the call's webhook (the request's e was a URL, SPEC §9): the
	// answered call stays in our Stasis app and the webhook's actions drive it.
	Webhook string
	// WebhookFallback is where a webhook-driven call goes when its webhook fails (the
	// key's webhooks.fallback); empty: the call is hung up.
	WebhookFallback struct{ Context, Extension string }
}

// DynamicServer is an Asterisk a request named by URL with its own ARI credentials.
type DynamicServer struct {
	URL      string // normalised ARI base URL, scheme://host[:port]/ari
	Username string
	Password string // secret: never logged (see String and LogValue)
}

// String shows the URL and user only; the password is never printed.
func (d DynamicServer) String() string { return d.URL + " (user " + d.Username + ")" }

// LogValue keeps the password out of structured logs.
func (d DynamicServer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", d.URL), slog.String("user", d.Username))
}

// DynamicPrefix starts the name of every dynamic server; configured names cannot use it.
const DynamicPrefix = "dyn-"

// DynamicServerName is the server name of a dynamic Asterisk: a digest of its URL, so
// it is a valid NATS subject token and KV key and leaks no host in metric labels.
func DynamicServerName(url string) string {
	sum := sha256.Sum256([]byte(url))
	return DynamicPrefix + hex.EncodeToString(sum[:8])
}

// IsDynamicName reports whether name has the form DynamicServerName gives.
func IsDynamicName(name string) bool {
	rest, ok := strings.CutPrefix(name, DynamicPrefix)
	if !ok || len(rest) != 16 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

// EventRequest is the request as carried in published events (no secrets).
func (r Request) EventRequest() *events.Request {
	return &events.Request{
		Destination:    r.Endpoint,
		Context:        r.Context,
		Extension:      r.Extension,
		TimeoutSec:     int(r.Timeout / time.Second),
		CallerID:       r.CallerID,
		Variables:      r.Variables,
		Server:         r.Server,
		Wait:           string(r.Wait),
		Door:           r.Door,
		Callback:       r.Callback,
		CallbackEvents: r.CallbackEvents,
	}
}
