package script

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// DefaultWebhookTimeout bounds one webhook exchange when Config.WebhookTimeout is zero.
const DefaultWebhookTimeout = 5 * time.Second

// MaxSteps bounds the actions one call may run (a webhook that redirects or pauses in
// a loop must not hold the line for ever).
const MaxSteps = 1000

// hangupRetries is how often a refused hangup of the call is tried again, a second apart.
const hangupRetries = 5

// recordingGrace is how long a recording may take to be stored after its channel is gone.
const recordingGrace = 5 * time.Second

// Config is what a Script needs to know about its call.
type Config struct {
	CallID  string // the answered channel's id; ids of playbacks, recordings, legs and bridges start with it
	Webhook string // the call's webhook (the request's e)
	// Context is the default context of {"continue":{}} (the request's c).
	Context string
	// FallbackContext and FallbackExtension, when set, take the call after a webhook
	// failure instead of a hangup (the key's webhooks.fallback).
	FallbackContext, FallbackExtension string
	// WebhookTimeout bounds each webhook exchange (default 5s).
	WebhookTimeout time.Duration
}

// Command is something the runner does for the script.
type Command interface{ command() }

// PostWebhook POSTs {"event":Event,"call":{…}, Data…} to URL. Seq numbers the exchange;
// its answer comes back through Script.Reply(Seq, …).
type PostWebhook struct {
	Seq   int
	URL   string
	Event string
	Data  map[string]any
}

// Play plays media on a channel (POST /channels/{id}/play/{playbackId}).
type Play struct {
	Channel, PlaybackID string
	Media               []string
}

// StopPlayback stops a playback (DELETE /playbacks/{id}).
type StopPlayback struct{ PlaybackID string }

// StartRecording records a channel (POST /channels/{id}/record).
type StartRecording struct {
	Channel, Name string
	MaxSeconds    int
	Beep          bool
	TerminateOn   string // none, any, *, #
}

// OriginateLeg dials a second party into our Stasis app (POST /channels); its events
// are followed by the runner, which reports LegAnswered and LegEnded.
type OriginateLeg struct {
	ChannelID, Endpoint, CallerID string
	Timeout                       int // seconds
}

// BridgeChannels creates a mixing bridge and adds the channels to it
// (POST /bridges/{id}?type=mixing, POST /bridges/{id}/addChannel).
type BridgeChannels struct {
	BridgeID string
	Channels []string
}

// DestroyBridge shuts a bridge down (DELETE /bridges/{id}).
type DestroyBridge struct{ BridgeID string }

// ContinueDialplan hands a channel to the dialplan (POST /channels/{id}/continue).
type ContinueDialplan struct{ Channel, Context, Extension string }

// HangupChannel hangs a channel up (DELETE /channels/{id}).
type HangupChannel struct{ Channel string }

// SetTimer asks for Script.Timer(Name) after After; a timer of the same name is replaced.
type SetTimer struct {
	Name  string
	After time.Duration
}

// CancelTimer drops a timer that is no longer needed (a late expiry is ignored anyway).
type CancelTimer struct{ Name string }

// Note is a line for the call's transcript.
type Note struct{ Text string }

func (PostWebhook) command()      {}
func (Play) command()             {}
func (StopPlayback) command()     {}
func (StartRecording) command()   {}
func (OriginateLeg) command()     {}
func (BridgeChannels) command()   {}
func (DestroyBridge) command()    {}
func (ContinueDialplan) command() {}
func (HangupChannel) command()    {}
func (SetTimer) command()         {}
func (CancelTimer) command()      {}
func (Note) command()             {}

// Reply is the answer to a PostWebhook (Err set when no answer came).
type Reply struct {
	Status int
	Body   []byte
	Err    error
}

type phase int

const (
	idle        phase = iota // between actions
	waitWebhook              // a PostWebhook whose reply decides what comes next
	playing                  // say/play
	gathering                // gather
	recording                // record
	dialing                  // dial: leg not answered yet
	bridged                  // dial: both legs in the bridge
	pausing                  // pause
	hangingUp                // hangup sent, waiting for the channel to go
	handedOver               // continue sent: the dialplan has the call
)

// Script is the action interpreter of one webhook-driven call. It is not safe for
// concurrent use; the runner serialises every input.
type Script struct {
	cfg     Config
	queue   []Action
	phase   phase
	n       int // counter for ids and timer names
	steps   int // actions started
	hangTry int // hangups of the call that failed
	seq     int // last PostWebhook.Seq
	waitSeq int // the PostWebhook whose reply is awaited (0: none)
	timer   string

	// The action in progress.
	playback  string
	prompting bool
	gather    *Gather
	digits    string
	record    *Record
	recName   string
	dial      *Dial
	leg       string
	bridge    string

	hangReq  bool // a hangup of the call's channel was requested (it is going)
	gone     bool // the call's channel is destroyed
	done     bool
	whErr    string
	finalize bool // after gone: waiting for a recording to be stored and reported
}

// New returns a script for an answered call; Start begins it.
func New(cfg Config) *Script {
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = DefaultWebhookTimeout
	}
	return &Script{cfg: cfg}
}

// Done reports whether the script has nothing more to do: the call was handed to the
// dialplan, or its channel is gone and everything it started is cleaned up.
func (s *Script) Done() bool { return s.done }

// WebhookError says why a webhook exchange failed ("" when none did).
func (s *Script) WebhookError() string { return s.whErr }

// Owns reports whether an ARI object id (playback, recording, leg, bridge) is one the
// script made.
func (s *Script) Owns(id string) bool {
	return len(id) > len(s.cfg.CallID) && id[:len(s.cfg.CallID)] == s.cfg.CallID && id[len(s.cfg.CallID)] == '-'
}

func (s *Script) newID(kind string) string {
	s.n++
	return s.cfg.CallID + "-" + kind + strconv.Itoa(s.n)
}

// Start POSTs `answered` to the call's webhook.
func (s *Script) Start() []Command {
	return s.post(nil, s.cfg.Webhook, "answered", nil)
}

// post sends a webhook request and waits for its reply (a timer bounds the wait).
func (s *Script) post(out []Command, u, event string, data map[string]any) []Command {
	if u == "" {
		u = s.cfg.Webhook
	}
	s.seq++
	s.waitSeq = s.seq
	s.phase = waitWebhook
	out = append(out, PostWebhook{Seq: s.seq, URL: u, Event: event, Data: data})
	return s.setTimer(out, s.cfg.WebhookTimeout)
}

func (s *Script) setTimer(out []Command, d time.Duration) []Command {
	s.timer = s.newID("t")
	return append(out, SetTimer{Name: s.timer, After: d})
}

func (s *Script) cancelTimer(out []Command) []Command {
	if s.timer == "" {
		return out
	}
	out = append(out, CancelTimer{Name: s.timer})
	s.timer = ""
	return out
}

// Reply takes the answer to PostWebhook seq. A reply to an exchange no longer awaited
// (it came after its timeout) is ignored.
func (s *Script) Reply(seq int, r Reply) []Command {
	if seq != s.waitSeq || s.done {
		return []Command{Note{Text: "late webhook reply ignored (exchange " + strconv.Itoa(seq) + ")"}}
	}
	s.waitSeq = 0
	out := s.cancelTimer(nil)
	var failure string
	switch {
	case r.Err != nil:
		failure = "webhook unreachable: " + r.Err.Error()
	case r.Status < 200 || r.Status > 299:
		failure = "webhook answered " + strconv.Itoa(r.Status)
	}
	var actions []Action
	if failure == "" {
		var err error
		if actions, err = Parse(r.Body); err != nil {
			failure = err.Error()
		}
	}
	if s.gone || s.hangReq {
		// A report sent while the call ended (a recording): nothing is left to run.
		if failure != "" {
			s.whErr = failure
		}
		if s.gone {
			s.done = true
		} else {
			s.phase = hangingUp // ChannelDestroyed follows
		}
		return out
	}
	if failure != "" {
		return s.fail(out, failure)
	}
	s.queue = actions
	return s.next(out)
}

// fail ends webhook control of the call: the fallback dialplan or a hangup.
func (s *Script) fail(out []Command, why string) []Command {
	s.whErr = why
	s.queue = nil
	out = append(out, Note{Text: why})
	if s.cfg.FallbackContext != "" {
		s.phase = handedOver
		s.done = true
		ext := s.cfg.FallbackExtension
		if ext == "" {
			ext = "s"
		}
		return append(out, ContinueDialplan{Channel: s.cfg.CallID, Context: s.cfg.FallbackContext, Extension: ext})
	}
	s.phase = hangingUp
	return append(out, HangupChannel{Channel: s.cfg.CallID})
}

// next starts the next action, or hangs up when there is none.
func (s *Script) next(out []Command) []Command {
	s.phase = idle
	s.playback, s.prompting, s.gather, s.digits, s.record, s.recName, s.dial = "", false, nil, "", nil, "", nil
	if s.steps++; s.steps > MaxSteps {
		return s.fail(out, fmt.Sprintf("more than %d actions on one call", MaxSteps))
	}
	if len(s.queue) == 0 {
		s.phase = hangingUp
		return append(out, Note{Text: "no more actions: hanging up"}, HangupChannel{Channel: s.cfg.CallID})
	}
	a := s.queue[0]
	s.queue = s.queue[1:]
	out = append(out, Note{Text: "action " + a.kind})
	id := s.cfg.CallID
	switch {
	case a.Say != "":
		return s.play(out, []string{"digits:" + a.Say})
	case a.Play != nil:
		return s.play(out, a.Play)
	case a.Gather != nil:
		s.phase = gathering
		s.gather = a.Gather
		if len(a.Gather.Prompt) > 0 {
			s.prompting = true
			s.playback = s.newID("p")
			return append(out, Play{Channel: id, PlaybackID: s.playback, Media: a.Gather.Prompt})
		}
		return s.setTimer(out, seconds(a.Gather.Timeout))
	case a.Record != nil:
		s.phase = recording
		s.record = a.Record
		s.recName = s.newID("r")
		return append(out, StartRecording{Channel: id, Name: s.recName, MaxSeconds: a.Record.MaxSeconds,
			Beep: a.Record.Beep, TerminateOn: a.Record.FinishOn})
	case a.Dial != nil:
		s.phase = dialing
		s.dial = a.Dial
		s.leg = s.newID("leg")
		return append(out, OriginateLeg{ChannelID: s.leg, Endpoint: a.Dial.D, CallerID: a.Dial.I, Timeout: a.Dial.T})
	case a.Continue != nil:
		ctx, ext := a.Continue.C, a.Continue.E
		if ctx == "" {
			ctx = s.cfg.Context
		}
		if ext == "" {
			ext = "s"
		}
		s.phase = handedOver
		s.done = true
		return append(out, ContinueDialplan{Channel: id, Context: ctx, Extension: ext})
	case a.Pause > 0:
		s.phase = pausing
		return s.setTimer(out, seconds(a.Pause))
	case a.Redirect != "":
		return s.post(out, a.Redirect, "redirected", nil)
	default: // hangup
		s.phase = hangingUp
		return append(out, HangupChannel{Channel: id})
	}
}

func (s *Script) play(out []Command, media []string) []Command {
	s.phase = playing
	s.playback = s.newID("p")
	return append(out, Play{Channel: s.cfg.CallID, PlaybackID: s.playback, Media: media})
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// Timer reports that the timer name expired; an expiry of a replaced or canceled timer
// is ignored.
func (s *Script) Timer(name string) []Command {
	if name != s.timer || s.done {
		return nil
	}
	s.timer = ""
	switch {
	case s.finalize:
		s.done = true
		return []Command{Note{Text: "recording not reported within " + recordingGrace.String() + " of the hangup"}}
	case s.phase == waitWebhook:
		s.waitSeq = 0
		why := "webhook did not answer within " + s.cfg.WebhookTimeout.String()
		if s.gone {
			s.whErr, s.done = why, true
			return []Command{Note{Text: why}}
		}
		return s.fail(nil, why)
	case s.phase == gathering:
		return s.gathered(nil, "timeout")
	case s.phase == pausing:
		return s.next(nil)
	case s.phase == hangingUp && !s.gone:
		return []Command{HangupChannel{Channel: s.cfg.CallID}}
	}
	return nil
}

// Event takes an ARI event about the call's channel or an object the script made.
func (s *Script) Event(ev ari.Event) []Command {
	if s.done {
		return nil
	}
	switch e := ev.(type) {
	case *ari.ChannelDestroyed:
		if e.Channel.ID == s.cfg.CallID {
			return s.hungUp()
		}
	case *ari.ChannelHangupRequest:
		// Asterisk ends a recording (RecordingFinished) between this and ChannelDestroyed.
		if e.Channel.ID == s.cfg.CallID {
			s.hangReq = true
		}
	case *ari.PlaybackFinished:
		if e.Playback.ID == "" || e.Playback.ID != s.playback {
			return nil
		}
		s.playback = ""
		switch {
		case s.phase == playing:
			return s.next(nil)
		case s.phase == gathering && s.prompting:
			s.prompting = false
			return s.setTimer(nil, seconds(s.gather.Timeout))
		}
	case *ari.ChannelDtmfReceived:
		if e.Channel.ID == s.cfg.CallID && s.phase == gathering && !s.gone {
			return s.key(e.Digit)
		}
	case *ari.RecordingFinished:
		return s.recorded(e.Recording, false)
	case *ari.RecordingFailed:
		return s.recorded(e.Recording, true)
	}
	return nil
}

// key takes one DTMF digit during a gather.
func (s *Script) key(d string) []Command {
	var out []Command
	if s.prompting {
		// A key stops the prompt (barge-in); its PlaybackFinished is then ignored.
		out = append(out, StopPlayback{PlaybackID: s.playback})
		s.prompting, s.playback = false, ""
	}
	g := s.gather
	if g.FinishOn != "" && d == g.FinishOn {
		return s.gathered(out, "finish_on")
	}
	s.digits += d
	if g.Digits > 0 && len(s.digits) >= g.Digits {
		return s.gathered(out, "digits")
	}
	return s.setTimer(out, seconds(g.Timeout))
}

func (s *Script) gathered(out []Command, by string) []Command {
	out = s.cancelTimer(out)
	if s.prompting {
		out = append(out, StopPlayback{PlaybackID: s.playback})
	}
	digits, action := s.digits, s.gather.Action
	return s.post(out, action, "gathered", map[string]any{"digits": digits, "finished_by": by})
}

func (s *Script) recorded(r ari.LiveRecording, failed bool) []Command {
	if s.recName == "" || r.Name != s.recName || (s.phase != recording && !s.finalize) {
		return nil
	}
	var out []Command
	if s.finalize {
		out = s.cancelTimer(out)
		s.finalize = false
	}
	data := map[string]any{"recording": map[string]any{
		"name": r.Name, "format": r.Format, "duration_s": r.Duration, "failed": failed, "cause": r.Cause,
	}}
	if s.gone || s.hangReq {
		data["hangup"] = true
	}
	s.recName = ""
	return s.post(out, s.record.Action, "recorded", data)
}

// hungUp handles the end of the call's channel: what is still running is cleaned up; a
// recording in progress is still reported once Asterisk has stored it.
func (s *Script) hungUp() []Command {
	if s.gone {
		return nil
	}
	s.gone = true
	s.queue = nil
	out := []Command{Note{Text: "call's channel is gone"}}
	switch s.phase {
	case dialing:
		out = append(out, HangupChannel{Channel: s.leg})
	case bridged:
		out = append(out, HangupChannel{Channel: s.leg}, DestroyBridge{BridgeID: s.bridge})
		s.bridge = ""
	case recording:
		s.finalize = true
		return s.setTimer(s.cancelTimer(out), recordingGrace)
	case waitWebhook:
		// A report (gathered, recorded, dialed) is on its way; its reply is not run.
		if s.waitSeq != 0 {
			return out
		}
	}
	if s.phase == dialing || s.phase == bridged {
		s.phase = hangingUp
		// Done comes with LegEnded.
		return s.cancelTimer(out)
	}
	s.done = true
	return s.cancelTimer(out)
}

// LegAnswered reports that the dial's second leg answered and entered Stasis.
func (s *Script) LegAnswered(id string) []Command {
	if id != s.leg || s.phase != dialing || s.gone {
		return nil
	}
	s.phase = bridged
	s.bridge = s.newID("b")
	return []Command{BridgeChannels{BridgeID: s.bridge, Channels: []string{s.cfg.CallID, s.leg}}}
}

// LegEnded reports the second leg's outcome, decided from its own evidence.
func (s *Script) LegEnded(id string, rec events.Call) []Command {
	if id != s.leg || id == "" {
		return nil
	}
	s.leg = ""
	var out []Command
	if s.bridge != "" {
		out = append(out, DestroyBridge{BridgeID: s.bridge})
		s.bridge = ""
	}
	if s.gone {
		s.done = s.waitSeq == 0 && !s.finalize
		return out
	}
	if s.phase != dialing && s.phase != bridged {
		return out
	}
	d := s.dial
	if d.Action == "" {
		return s.next(out)
	}
	return s.post(out, d.Action, "dialed", map[string]any{"dial": legReport(d, rec)})
}

func legReport(d *Dial, rec events.Call) map[string]any {
	return map[string]any{
		"d": d.D, "outcome": rec.Outcome, "reason": rec.Reason, "cause": rec.Cause,
		"cause_txt": rec.CauseTxt, "sip_code": rec.SIPCode, "dialstatus": rec.DialStatus,
		"ring_ms": rec.RingMS, "duration_ms": rec.DurationMS,
	}
}

// Failed reports that an ARI command the script asked for was refused or not sent.
func (s *Script) Failed(c Command, err error) []Command {
	note := Note{Text: fmt.Sprintf("%T failed: %v", c, err)}
	if c, ok := c.(ContinueDialplan); ok && c.Channel == s.cfg.CallID && !s.gone {
		// The dialplan did not take the call: it must not stay held.
		s.done = false
		s.phase = hangingUp
		return []Command{note, HangupChannel{Channel: s.cfg.CallID}}
	}
	if s.done || s.gone {
		return []Command{note}
	}
	switch c := c.(type) {
	case HangupChannel:
		// The call must not stay held: try again a little later, a few times.
		if c.Channel == s.cfg.CallID && s.phase == hangingUp && s.hangTry < hangupRetries {
			s.hangTry++
			return s.setTimer([]Command{note}, time.Second)
		}
	case Play:
		if c.PlaybackID != s.playback {
			return []Command{note}
		}
		s.playback = ""
		if s.phase == gathering {
			s.prompting = false
			return s.setTimer([]Command{note}, seconds(s.gather.Timeout))
		}
		return s.next([]Command{note})
	case StartRecording:
		if s.phase == recording {
			return s.post([]Command{note}, s.record.Action, "recorded", map[string]any{
				"recording": map[string]any{"name": c.Name, "failed": true, "cause": err.Error()}})
		}
	case BridgeChannels:
		// The leg is answered but cannot be connected: hang it up; LegEnded follows.
		return []Command{note, HangupChannel{Channel: s.leg}}
	}
	return []Command{note}
}

// Host is the host of a webhook URL, for events and logs (never the path or query,
// which may carry secrets).
func Host(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Host
}
