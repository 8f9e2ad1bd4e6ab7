// Package ari is a small client for the Asterisk REST Interface: typed REST calls
// and a websocket event stream, modelled on Asterisk 22's own resource descriptions.
package ari

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// TimeLayout is the layout of ARI timestamps, e.g. 2026-11-26T07:59:01.079+0000 (not RFC 3339).
const TimeLayout = "2006-01-02T15:04:05.000-0700"

// Time is an ARI timestamp.
type Time struct{ time.Time }

// UnmarshalJSON parses ARI's timestamp layout.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" || string(b) == `""` {
		t.Time = time.Time{}
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("ari time: not a string: %s", b)
	}
	v, err := time.Parse(TimeLayout, string(b[1:len(b)-1]))
	if err != nil {
		return fmt.Errorf("ari time: %w", err)
	}
	t.Time = v
	return nil
}

// MarshalJSON writes ARI's timestamp layout.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte(`""`), nil
	}
	return []byte(`"` + t.Format(TimeLayout) + `"`), nil
}

// CallerID is a name/number pair.
type CallerID struct {
	Name   string `json:"name"`
	Number string `json:"number"`
}

// DialplanCEP is a channel's dialplan location.
type DialplanCEP struct {
	Context  string `json:"context"`
	Exten    string `json:"exten"`
	Priority int64  `json:"priority"`
	AppName  string `json:"app_name"`
	AppData  string `json:"app_data"`
}

// Channel is ARI's Channel model (the fields Asterisk 22.10 sends).
type Channel struct {
	ID           string      `json:"id"`
	Name         string      `json:"name"`
	State        string      `json:"state"`
	ProtocolID   string      `json:"protocol_id"`
	Caller       CallerID    `json:"caller"`
	Connected    CallerID    `json:"connected"`
	AccountCode  string      `json:"accountcode"`
	Dialplan     DialplanCEP `json:"dialplan"`
	CreationTime Time        `json:"creationtime"`
	Language     string      `json:"language"`
	// ChannelVars is present only when requested.
	ChannelVars map[string]string `json:"channelvars,omitempty"`
}

// Event is one message from the ARI websocket. Concrete types are the *XxxEvent structs
// below; types this package does not model arrive as *RawEvent.
type Event interface {
	// EventType is ARI's "type" field.
	EventType() string
	// At is ARI's "timestamp" field.
	At() time.Time
}

// Base holds the fields every ARI message carries.
type Base struct {
	Type        string `json:"type"`
	Timestamp   Time   `json:"timestamp"`
	Application string `json:"application"`
	AsteriskID  string `json:"asterisk_id,omitempty"`
}

// EventType implements Event.
func (b *Base) EventType() string { return b.Type }

// At implements Event.
func (b *Base) At() time.Time { return b.Timestamp.Time }

// ChannelEvent is an event about one channel.
type ChannelEvent interface {
	Event
	// ChannelID is the id of the channel the event is about (for Dial: the peer).
	ChannelID() string
	// ChannelSnapshot is that channel as the event describes it.
	ChannelSnapshot() *Channel
}

// channelBase is embedded by events that carry a "channel" object.
type channelBase struct {
	Base
	Channel Channel `json:"channel"`
}

// ChannelID implements ChannelEvent.
func (c *channelBase) ChannelID() string { return c.Channel.ID }

// ChannelSnapshot implements ChannelEvent.
func (c *channelBase) ChannelSnapshot() *Channel { return &c.Channel }

// ChannelCreated is sent when a channel is created.
type ChannelCreated struct{ channelBase }

// ChannelStateChange is sent when a channel's state (Down, Ringing, Up…) changes.
type ChannelStateChange struct{ channelBase }

// ChannelDialplan is sent when a channel enters a new dialplan application.
type ChannelDialplan struct {
	channelBase
	DialplanApp     string `json:"dialplan_app"`
	DialplanAppData string `json:"dialplan_app_data"`
}

// ChannelCallerID is sent when a channel's caller id changes.
type ChannelCallerID struct {
	channelBase
	CallerPresentation    int    `json:"caller_presentation"`
	CallerPresentationTxt string `json:"caller_presentation_txt"`
}

// ChannelConnectedLine is sent when a channel's connected line changes.
type ChannelConnectedLine struct{ channelBase }

// ChannelVarset is sent when a channel variable is set. Channel is empty for global variables.
type ChannelVarset struct {
	channelBase
	Variable string `json:"variable"`
	Value    string `json:"value"`
}

// ChannelHangupRequest is sent when hangup is requested. With Soft set, Cause is
// Asterisk's soft-hangup flag (4 shutdown, 8 timeout, 16 unload, 32 explicit/ARI), not a
// Q.850 cause. Cause may be absent (nil), e.g. for a PJSIP BYE.
type ChannelHangupRequest struct {
	channelBase
	Cause     *int `json:"cause,omitempty"`
	TechCause int  `json:"tech_cause,omitempty"`
	Soft      bool `json:"soft,omitempty"`
}

// ChannelDestroyed is the last event of a channel.
type ChannelDestroyed struct {
	channelBase
	Cause     int    `json:"cause"`
	CauseTxt  string `json:"cause_txt"`
	TechCause int    `json:"tech_cause,omitempty"`
}

// Dial is sent by the dialing logic. For an originated channel the channel is Peer and
// Caller is absent; the first Dial has an empty DialStatus.
type Dial struct {
	Base
	Caller     *Channel `json:"caller,omitempty"`
	Peer       Channel  `json:"peer"`
	Forwarded  *Channel `json:"forwarded,omitempty"`
	Forward    string   `json:"forward"`
	DialString string   `json:"dialstring"`
	DialStatus string   `json:"dialstatus"`
}

// ChannelID implements ChannelEvent: the peer, which is the originated channel.
func (d *Dial) ChannelID() string { return d.Peer.ID }

// ChannelSnapshot implements ChannelEvent: the peer.
func (d *Dial) ChannelSnapshot() *Channel { return &d.Peer }

// StasisStart is sent when a channel enters our Stasis application.
type StasisStart struct {
	channelBase
	Args           []string `json:"args"`
	ReplaceChannel *Channel `json:"replace_channel,omitempty"`
}

// StasisEnd is sent when a channel leaves our Stasis application.
type StasisEnd struct{ channelBase }

// ApplicationReplaced is sent when another websocket connection took our application name.
type ApplicationReplaced struct{ Base }

// RawEvent is any event type this package does not model; Data is the message as received.
type RawEvent struct {
	Base
	Data json.RawMessage `json:"-"`
}

var typeKey = []byte(`"type":"`)

// peekType finds the value of the top-level "type" key without decoding the message.
// ARI writes compact JSON; the first `"type":"` is the top-level one because nested
// objects (channel, peer) have no "type" key.
func peekType(msg []byte) (string, error) {
	i := bytes.Index(msg, typeKey)
	if i < 0 {
		return "", errors.New("ari event: no type field")
	}
	rest := msg[i+len(typeKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", errors.New("ari event: unterminated type field")
	}
	return string(rest[:j]), nil
}

// DecodeEvent decodes one websocket message: a peek at "type", then one typed decode.
// The peek takes the first "type" key; should a nested object (a requested channel
// variable named "type") come first, the decoded top-level type disagrees with the peek
// and the message is decoded again under its real type.
func DecodeEvent(msg []byte) (Event, error) {
	typ, err := peekType(msg)
	if err != nil {
		return nil, err
	}
	return decodePeeked(typ, msg)
}

// decodePeeked is DecodeEvent after the peek, for a reader that peeked already.
func decodePeeked(typ string, msg []byte) (Event, error) {
	ev, err := decodeAs(typ, msg)
	if err != nil || ev.EventType() == typ {
		return ev, err
	}
	return decodeAs(ev.EventType(), msg)
}

func decodeAs(typ string, msg []byte) (Event, error) {
	var ev Event
	switch typ {
	case "ChannelCreated":
		ev = &ChannelCreated{}
	case "ChannelStateChange":
		ev = &ChannelStateChange{}
	case "ChannelDialplan":
		ev = &ChannelDialplan{}
	case "ChannelCallerId":
		ev = &ChannelCallerID{}
	case "ChannelConnectedLine":
		ev = &ChannelConnectedLine{}
	case "ChannelVarset":
		ev = &ChannelVarset{}
	case "ChannelHangupRequest":
		ev = &ChannelHangupRequest{}
	case "ChannelDestroyed":
		ev = &ChannelDestroyed{}
	case "Dial":
		ev = &Dial{}
	case "StasisStart":
		ev = &StasisStart{}
	case "StasisEnd":
		ev = &StasisEnd{}
	case "ApplicationReplaced":
		ev = &ApplicationReplaced{}
	default:
		if ev = mediaEvent(typ); ev != nil {
			break
		}
		raw := &RawEvent{Data: append(json.RawMessage(nil), msg...)}
		if err := json.Unmarshal(msg, &raw.Base); err != nil {
			return nil, fmt.Errorf("ari event %s: %w", typ, err)
		}
		return raw, nil
	}
	if err := json.Unmarshal(msg, ev); err != nil {
		return nil, fmt.Errorf("ari event %s: %w", typ, err)
	}
	return ev, nil
}

// Error is an ARI REST failure: the HTTP status and ARI's message (from {"message":…}
// or, for allocation failures, {"error":…}).
type Error struct {
	Method  string
	Path    string
	Status  int
	Message string
	// Body is ARI's decoded reply body (nil when empty or not JSON).
	Body any
}

func (e *Error) Error() string {
	return "ari " + e.Method + " " + e.Path + ": " + strconv.Itoa(e.Status) + " " + e.Message
}
