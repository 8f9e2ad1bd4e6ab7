package stasisapp

import (
	"strconv"
	"strings"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// ringTimeoutSlack absorbs the millisecond rounding of ARI timestamps when the
// elapsed ringing time is compared with the ring timeout.
const ringTimeoutSlack = 100 * time.Millisecond

// Change is one published step of a call: Kind is Initiated, Ringing, Progress,
// KindAnswered or Ended, each reported at most once and in that order; At is the time of
// the event that caused it.
type Change struct {
	Kind events.Kind
	At   time.Time
}

// Call follows one originated channel and decides its outcome from the evidence ARI
// sends (SPEC §4, §4b.4).
//
// A Call is pure: it does no I/O, reads no clock (times come from events and
// arguments) and starts no goroutines. It is not safe for concurrent use; the App
// serialises access. It tolerates out-of-order events, never moves its state backwards,
// and reports exactly one Ended change. Once final it ignores further events.
//
// The call ends on ChannelDestroyed (or OriginateFailed / Lost). A final Dial status or
// a hangup request alone does not end it: the Destroyed that follows carries the
// cause. Events that arrive after ChannelDestroyed (e.g. a late final Dial) are ignored;
// a late answer cannot exist, because the Destroyed snapshot would then show state Up,
// which counts as answer evidence.
type Call struct {
	id          string
	server      string
	channel     string
	ringTimeout time.Duration

	state   events.State
	emitted uint8 // bit per Kind already reported (kindBit)
	final   bool
	outcome events.Outcome
	reason  string

	createdAt  time.Time
	ringingAt  time.Time
	answeredAt time.Time
	endedAt    time.Time

	// Evidence, kept raw beside the outcome.
	dialStatus  string // last meaningful Dial status; a final one is never replaced by a progress one
	finalDial   bool   // dialStatus is a final (non-progress) status
	chanState   string // last channel state seen in a snapshot
	cause       int
	causeTxt    string
	sipCode     int
	reqCause    int  // Q.850 cause of a non-soft ChannelHangupRequest
	hasReqCause bool // reqCause was seen
	softFlags   int  // OR of soft-hangup flags seen

	canceling    bool   // we sent DELETE (Canceling)
	cancelReason string // "api", "request" or "shutdown"
	cancelNote   string // the API client's own reason for hanging up (HangingUp)
	calleeFirst  bool   // the far end had already ended the call when Canceling was called
	refused      bool   // ended by OriginateFailed (RefineFailure allowed)
	lost         bool   // ended by Lost
	webhookError string // why the call's webhook failed (SetWebhookError)
}

// NewCall returns a call in state dialing. id is the ARI channel id chosen before the
// originate; ringTimeout is the originate timeout, used to recognise a ring timeout that
// an older Asterisk reports with cause 0 or 16.
func NewCall(id, server string, ringTimeout time.Duration) *Call {
	return &Call{id: id, server: server, ringTimeout: ringTimeout, state: events.StateDialing}
}

// kind order: a Change of a kind is reported once and never after a later kind.
var kindOrder = [...]events.Kind{events.Initiated, events.Ringing, events.Progress, events.KindAnswered, events.Ended}

func kindBit(k events.Kind) uint8 {
	for i, o := range kindOrder {
		if o == k {
			return 1 << i
		}
	}
	return 0
}

// stateRank orders states; a call only moves to a higher rank.
func stateRank(s events.State) int {
	switch s {
	case events.StateDialing:
		return 0
	case events.StateRinging:
		return 1
	case events.StateProgress:
		return 2
	case events.StateAnswered:
		return 3
	case events.StateEnded:
		return 4
	}
	return -1
}

// emit appends a Change of kind k unless it (or a later kind) was already reported.
func (c *Call) emit(out []Change, k events.Kind, at time.Time) []Change {
	b := kindBit(k)
	if c.emitted&b != 0 || c.emitted >= b<<1 && k != events.Ended {
		return out
	}
	c.emitted |= b
	return append(out, Change{Kind: k, At: at})
}

// advance moves the state forward to s (never back) and reports k.
func (c *Call) advance(out []Change, s events.State, k events.Kind, at time.Time) []Change {
	if stateRank(s) <= stateRank(c.state) {
		return out
	}
	c.state = s
	return c.emit(out, k, at)
}

// Accepted records that POST /channels answered 200 with ch: it sets the channel name
// and created_at (ch.CreationTime, else at) and reports Initiated. Events may have
// arrived before the REST reply; then Initiated was already reported and only missing
// fields are filled in.
func (c *Call) Accepted(ch ari.Channel, at time.Time) []Change {
	if c.final {
		return nil
	}
	c.noteChannel(&ch, at)
	return c.emit(nil, events.Initiated, at)
}

// OriginateFailed records that ARI refused the originate (status is its HTTP status, 0
// when ARI was not reached; message its error text). The call ends as Failed. If channel
// events were already seen (a transport error after Asterisk created the channel) the
// call still ends here; the App is expected to hang the channel up.
func (c *Call) OriginateFailed(status int, message string, at time.Time) []Change {
	if c.final {
		return nil
	}
	c.refused = true
	if status == 0 {
		c.reason = "ARI not reached: " + message
	} else {
		c.reason = "ARI refused originate: " + strconv.Itoa(status) + " " + message
	}
	return c.finish(nil, events.Failed, at)
}

// RefineFailure replaces the Failed outcome of a call ended by OriginateFailed with
// InvalidNumber (no such endpoint) or Unavailable (endpoint offline), as learnt from
// GET /endpoints after an "Allocation failed". reason is appended to the evidence. Any
// other call or outcome is left unchanged. Call it before publishing the Ended change.
func (c *Call) RefineFailure(o events.Outcome, reason string) {
	if !c.refused || c.outcome != events.Failed {
		return
	}
	if o != events.InvalidNumber && o != events.Unavailable {
		return
	}
	c.outcome = o
	if reason != "" {
		c.reason += "; " + reason
	}
}

// Canceling records that we are hanging the call up ourselves (reason "api", "request"
// or "shutdown"): if it was not answered and the far end had not already ended it, the
// NOANSWER / cause 16 (or, with ?reason=busy, BUSY / 17) that follows is ours and the
// call ends as Canceled. Either way, unless the far end was first, the record's
// hangup_by says who hung up ("daemon" for shutdown, else "api").
func (c *Call) Canceling(reason string) {
	if c.final || c.canceling {
		return
	}
	c.canceling = true
	c.cancelReason = reason
	c.calleeFirst = c.finalDial || c.hasReqCause
}

// HangingUp records that an API client asked to hang the call up (DELETE
// /v2/calls/{id}, invokeari.hangup): Canceling with reason "api", and note, the client's
// optional reason, kept in the record's reason. It reports whether this request is the
// one that started the hangup (false when the call is final or already being hung up).
func (c *Call) HangingUp(note string) bool {
	if c.final || c.canceling {
		return false
	}
	c.Canceling(cancelByAPI)
	c.cancelNote = note
	return true
}

// HangupRefused undoes HangingUp when Asterisk refused the hangup (the channel goes on,
// so its end is not ours). It does nothing once the call is final.
func (c *Call) HangupRefused() {
	if c.final || c.cancelReason != cancelByAPI {
		return
	}
	c.canceling, c.cancelReason, c.cancelNote, c.calleeFirst = false, "", "", false
}

// cancelByAPI is the Canceling reason of HangingUp.
const cancelByAPI = "api"

// hungUpByUs reports whether our own hangup ended the call (the far end was not first).
func (c *Call) hungUpByUs() bool { return c.canceling && !c.calleeFirst }

// canceler names who hung up, with the API client's note, for reasons.
func (c *Call) canceler() string {
	if c.cancelNote != "" {
		return c.cancelReason + ": " + c.cancelNote
	}
	return c.cancelReason
}

// Lost ends a call whose end was not seen (e.g. its channel was gone after an ARI
// reconnect) as Unknown, with reason saying why; at is when tracking was given up and
// becomes ended_at. A call that was answered also ends as Unknown, not Completed: its
// real end time, and so its duration, is not known (SPEC §4b.6: never silently). The
// reason then says it was answered, and answered_at is kept.
func (c *Call) Lost(reason string, at time.Time) []Change {
	if c.final {
		return nil
	}
	c.lost = true
	c.reason = "tracking lost: " + reason
	if c.answered() {
		c.reason += " (was answered; end not seen)"
	}
	return c.finish(nil, events.Unknown, at)
}

// Final reports whether the outcome is decided.
func (c *Call) Final() bool { return c.final }

// Answered reports whether any answer evidence was seen.
func (c *Call) Answered() bool { return c.answered() }

func (c *Call) answered() bool { return !c.answeredAt.IsZero() }

// Apply advances the call by one ARI event about its channel (for Dial, the peer) and
// returns the steps to publish, if any. Events about other channels, events without a
// channel and events after the call is final are ignored.
func (c *Call) Apply(ev ari.Event) []Change {
	if c.final {
		return nil
	}
	ce, ok := ev.(ari.ChannelEvent)
	if !ok || (c.id != "" && ce.ChannelID() != c.id) {
		return nil
	}
	at := ev.At()
	snap := ce.ChannelSnapshot()

	// The channel exists, so Asterisk accepted the originate, even if the REST reply
	// has not arrived yet (events can overtake it).
	c.noteChannel(snap, at)
	out := c.emit(nil, events.Initiated, at)

	switch e := ev.(type) {
	case *ari.Dial:
		out = c.noteDial(out, e.DialStatus, at)
	case *ari.ChannelHangupRequest:
		c.noteHangupRequest(e)
	}
	// Every snapshot carries the channel state; StasisStart counts as answer only
	// through it, because after /channels/create StasisStart comes in state Down.
	out = c.noteState(out, snap.State, at)

	if d, ok := ev.(*ari.ChannelDestroyed); ok {
		c.cause, c.causeTxt = d.Cause, d.CauseTxt
		if d.Cause == 0 && c.hasReqCause {
			c.cause, c.causeTxt = c.reqCause, causeText(c.reqCause)
		}
		if d.TechCause != 0 {
			c.sipCode = d.TechCause
		}
		o, reason := c.decide(at)
		c.reason = reason
		out = c.finish(out, o, at)
	}
	return out
}

// noteChannel fills the channel name and created_at from a snapshot, once.
func (c *Call) noteChannel(ch *ari.Channel, at time.Time) {
	if c.channel == "" {
		c.channel = ch.Name
	}
	if c.createdAt.IsZero() {
		c.createdAt = ch.CreationTime.Time
		if c.createdAt.IsZero() {
			c.createdAt = at
		}
	}
}

// noteDial records a Dial status. The first Dial has an empty status.
func (c *Call) noteDial(out []Change, status string, at time.Time) []Change {
	switch status {
	case "":
		return out
	case "RINGING":
		out = c.ring(out, events.StateRinging, events.Ringing, at)
	case "PROGRESS":
		out = c.ring(out, events.StateProgress, events.Progress, at)
	case "ANSWER":
		out = c.answer(out, at)
	default: // BUSY, NOANSWER, CONGESTION, CHANUNAVAIL, CANCEL, …
		c.dialStatus, c.finalDial = status, true
		return out
	}
	if !c.finalDial {
		c.dialStatus = status
	}
	return out
}

// noteHangupRequest keeps the Q.850 cause of a hard hangup request, or the flag of a
// soft one (which is not a cause and never used as one).
func (c *Call) noteHangupRequest(e *ari.ChannelHangupRequest) {
	if e.TechCause != 0 {
		c.sipCode = e.TechCause
	}
	if e.Cause == nil {
		return
	}
	if e.Soft {
		c.softFlags |= *e.Cause
		return
	}
	if *e.Cause != 0 {
		c.reqCause, c.hasReqCause = *e.Cause, true
	}
}

// noteState takes a channel state from a snapshot as evidence.
func (c *Call) noteState(out []Change, state string, at time.Time) []Change {
	if state == "" {
		return out
	}
	c.chanState = state
	switch state {
	case "Ringing":
		return c.ring(out, events.StateRinging, events.Ringing, at)
	case "Up":
		return c.answer(out, at)
	}
	return out
}

// ring records alerting (Ringing) or early media (Progress); ringing_at is the first of
// either, since both mean the far end was reached and ring_ms counts from there.
func (c *Call) ring(out []Change, s events.State, k events.Kind, at time.Time) []Change {
	if c.ringingAt.IsZero() && !c.answered() {
		c.ringingAt = at
	}
	return c.advance(out, s, k, at)
}

// answer records the first answer evidence.
func (c *Call) answer(out []Change, at time.Time) []Change {
	if c.answeredAt.IsZero() {
		c.answeredAt = at
	}
	return c.advance(out, events.StateAnswered, events.KindAnswered, at)
}

// finish makes the call final with outcome o.
func (c *Call) finish(out []Change, o events.Outcome, at time.Time) []Change {
	c.final = true
	c.outcome = o
	c.endedAt = at
	c.state = events.StateEnded
	return c.emit(out, events.Ended, at)
}

// decide picks the outcome from the evidence, strongest first (SPEC §4b.4).
func (c *Call) decide(at time.Time) (events.Outcome, string) {
	if c.answered() {
		r := "answered, then ended: " + causeReason(c.cause, c.causeTxt)
		if c.hungUpByUs() {
			r += "; hung up by " + c.canceler()
		}
		return events.Completed, r
	}
	if c.hungUpByUs() {
		return events.Canceled, "canceled by " + c.canceler() + " (" + c.evidence() + ")"
	}
	if c.finalDial {
		if o, r, ok := byDialStatus(c.dialStatus); ok {
			return o, r
		}
	}
	if o, r, ok := byCause(c.cause, c.causeTxt); ok {
		return o, r
	}
	if o, r, ok := bySIP(c.sipCode); ok {
		return o, r
	}
	// Nothing from the far end explains the end, but someone hung it up explicitly
	// (ARI DELETE by another client, AMI, CLI): the call was cancelled, not refused.
	if c.softFlags&softExplicit != 0 {
		return events.Canceled, "hung up by an explicit request outside this call (" + c.evidence() + ")"
	}
	// Older Asterisk reports a ring timeout as cause 0 or 16 instead of 19.
	if (c.cause == 0 || c.cause == 16) && c.rang() && c.ringTimeout > 0 &&
		at.Sub(c.createdAt) >= c.ringTimeout-ringTimeoutSlack {
		return events.NoAnswer, "rang until the ring timeout (" + c.ringTimeout.String() + ", " + c.evidence() + ")"
	}
	return events.Failed, "no decisive evidence (" + c.evidence() + ")"
}

// rang reports ringing evidence: a RINGING/PROGRESS Dial or a Ringing channel state.
func (c *Call) rang() bool { return !c.ringingAt.IsZero() }

// evidence lists the raw evidence for a reason string.
func (c *Call) evidence() string {
	var b strings.Builder
	b.WriteString(causeReason(c.cause, c.causeTxt))
	if c.sipCode != 0 {
		b.WriteString(", SIP ")
		b.WriteString(strconv.Itoa(c.sipCode))
	}
	if c.dialStatus != "" {
		b.WriteString(", Dial ")
		b.WriteString(c.dialStatus)
	}
	if c.chanState != "" {
		b.WriteString(", state ")
		b.WriteString(c.chanState)
	}
	if s := softFlagsText(c.softFlags); s != "" {
		b.WriteString(", soft hangup: ")
		b.WriteString(s)
	}
	return b.String()
}

// Record returns a snapshot of the call record for replies and events. Outcome is
// Answered while an answered call goes on, and empty while nothing is decided.
func (c *Call) Record() events.Call {
	r := events.Call{
		ID:         c.id,
		Server:     c.server,
		Channel:    c.channel,
		State:      c.state,
		Outcome:    c.outcome,
		Reason:     c.reason,
		Cause:      c.cause,
		CauseTxt:   c.causeTxt,
		SIPCode:    c.sipCode,
		DialStatus: c.dialStatus,
		CreatedAt:  c.createdAt,
		RingingAt:  timePtr(c.ringingAt),
		AnsweredAt: timePtr(c.answeredAt),
		EndedAt:    timePtr(c.endedAt),

		WebhookError: c.webhookError,
	}
	if !c.final && c.answered() {
		r.Outcome = events.Answered
	}
	if c.rang() {
		// ring_ms runs to the answer, else to the end; for a lost call the end is only
		// when we gave up, so it is left null.
		switch {
		case c.answered():
			r.RingMS = msPtr(c.answeredAt.Sub(c.ringingAt))
		case c.final && !c.lost:
			r.RingMS = msPtr(c.endedAt.Sub(c.ringingAt))
		}
	}
	if c.outcome == events.Completed {
		r.DurationMS = msPtr(c.endedAt.Sub(c.answeredAt))
	}
	if c.final && !c.lost && !c.refused && c.hungUpByUs() {
		r.HangupBy = events.HangupByAPI
		if c.cancelReason == "shutdown" {
			r.HangupBy = events.HangupByDaemon
		}
	}
	return r
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func msPtr(d time.Duration) *int64 {
	ms := d.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	return &ms
}
