package sim

import (
	"strconv"
	"strings"
	"time"
)

// This file drives a call through the event sequences recorded from Asterisk 22.10.
// Every function here runs with s.mu held; timers re-take the lock and check that the
// call is still alive before acting.

// sayDigitsFor is how long confirmcode's SayDigits(4711) plays before its Hangup().
const sayDigitsFor = 3500 * time.Millisecond

// localBusyFor is the timeout of the `sim` context's Busy(10) and Congestion(10).
const localBusyFor = 10 * time.Second

// localWaitAfter is when the Local ;2 half starts Wait() after answering.
const localWaitAfter = 3 * time.Millisecond

// schedule runs fn after d (scaled) under s.mu, unless the call has ended.
func (s *Server) schedule(c *call, d time.Duration, fn func()) *time.Timer {
	return time.AfterFunc(s.dur(d), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || c.ended {
			return
		}
		fn()
	})
}

func (s *Server) after(c *call, d time.Duration, fn func()) {
	if c.far != nil {
		c.far.Stop()
	}
	c.far = s.schedule(c, d, fn)
}

func (s *Server) afterNear(c *call, d time.Duration, fn func()) {
	if c.near != nil {
		c.near.Stop()
	}
	c.near = s.schedule(c, d, fn)
}

// end forgets the call: its channels are gone and its timers stopped.
func (s *Server) end(c *call) {
	c.ended = true
	if c.far != nil {
		c.far.Stop()
	}
	if c.near != nil {
		c.near.Stop()
	}
	delete(s.channels, c.o.id)
	if c.p != nil {
		delete(s.channels, c.p.id)
	}
}

// localKind maps any Result onto the recorded `sim` dialplan flavours.
func localKind(r Result) Result {
	switch r {
	case Answer, RingForever:
		return r
	case Busy, LocalBusy:
		return LocalBusy
	case Congestion, LocalCongestion:
		return LocalCongestion
	case NotFound, LocalReject:
		return LocalReject
	case Decline, LocalRingReject:
		return LocalRingReject
	case Unavail, Unreachable, LocalUnavail:
		return LocalUnavail
	default:
		return LocalNonexistent
	}
}

// pjsipKind maps Local flavours onto the nearest SIP response.
func pjsipKind(b Behavior) Behavior {
	switch b.Result {
	case LocalBusy:
		b.Result = Busy
	case LocalCongestion:
		b.Result = Congestion
	case LocalReject:
		b.Result, b.RingFor = Decline, 0
	case LocalRingReject:
		b.Result = Decline
	case LocalUnavail:
		b.Result = Unavail
	case LocalNonexistent:
		b.Result = NotFound
	}
	return b
}

func secs(d time.Duration) string { return strconv.Itoa(int(d.Round(time.Second) / time.Second)) }

// startDial starts dialling the far end: at originate, or at /dial for a created channel.
func (s *Server) startDial(c *call) {
	c.dialed = true
	if c.timeout > 0 {
		s.afterNear(c, c.timeout, func() { s.ringTimeout(c) })
	}
	if c.local {
		s.startLocal(c)
		return
	}
	b := pjsipKind(c.beh)
	c.beh = b
	c.far = time.AfterFunc(time.Millisecond, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || c.ended {
			return
		}
		s.evDial(c.o, "")
		switch b.Result {
		case Busy:
			s.after(c, b.RingAfter, func() { s.pjsipFail(c, 17, 486, "BUSY") })
		case Congestion:
			s.after(c, b.RingAfter, func() { s.pjsipFail(c, 34, 503, "CONGESTION") })
		case NotFound:
			s.after(c, b.RingAfter, func() { s.pjsipFail(c, 1, 404, "NOANSWER") })
		case Unreachable:
			s.after(c, b.RingFor, func() { s.pjsipFail(c, 18, 408, "NOANSWER") })
		default:
			s.after(c, b.RingAfter, func() { s.pjsipRing(c) })
		}
	})
}

func (s *Server) pjsipRing(c *call) {
	c.ringing = true
	s.evState(c.o, "Ringing")
	s.evDial(c.o, "RINGING")
	b := c.beh
	switch b.Result {
	case Answer:
		s.after(c, b.AnswerAfter, func() { s.answer(c) })
	case Decline:
		s.after(c, b.RingFor, func() { s.pjsipFail(c, 21, 603, "NOANSWER") })
	case Unavail:
		s.after(c, b.RingFor, func() { s.pjsipFail(c, 19, 480, "NOANSWER") })
	}
}

// pjsipFail ends an unanswered PJSIP call on a final SIP response.
func (s *Server) pjsipFail(c *call, cause, tech int, status string) {
	o := c.o
	s.evHangupReq(o, cause, tech, false)
	if c.mode == modeCreate {
		// create+dial publishes no final Dial for PJSIP failures.
		s.leaveStasis(o)
	} else {
		s.evDial(o, status)
	}
	s.evDestroyed(o, cause, tech)
	s.end(c)
}

// leaveStasis reports the channel leaving Stasis on hangup.
func (s *Server) leaveStasis(ch *channel) {
	if ch.inStasis {
		s.evStasisEnd(ch)
		s.evVarset(ch, "STASISSTATUS", "SUCCESS")
	}
}

func (s *Server) startLocal(c *call) {
	o, p := c.o, c.p
	// The ;2 half gets the variables first, then the caller id (only when one was given).
	name, number := p.callerName, p.callerNum
	p.callerName, p.callerNum = "", ""
	if c.mode != modeCreate {
		for i := len(p.vars) - 1; i >= 0; i-- {
			s.evVarset(p, p.vars[i][0], p.vars[i][1])
		}
	}
	if name != "" || number != "" {
		p.callerName, p.callerNum = name, number
		s.evCallerID(p)
		s.evConnectedLine(p)
	}
	kind := localKind(c.beh.Result)
	noop := func() { s.evDialplan(p, c.lctx, c.lexten, 1, "NoOp", c.lctx+": "+c.lexten) }
	switch kind {
	case LocalNonexistent:
		s.evDestroyed(p, 0, 0)
		if c.mode == modeCreate {
			s.leaveStasis(o)
			s.evDestroyed(o, 16, 0)
		} else {
			s.evDestroyed(o, 0, 0)
		}
		s.end(c)
	case LocalBusy, LocalCongestion:
		app, status, pcause := "Busy", "BUSY", 17
		if kind == LocalCongestion {
			app, status, pcause = "Congestion", "CONGESTION", 34
		}
		s.evDial(o, "")
		noop()
		s.evDialplan(p, c.lctx, c.lexten, 2, app, "10")
		s.evState(p, "Busy")
		s.evDial(o, status)
		if c.mode == modeCreate {
			// The created channel stays in Stasis (Down) and ;2 in Busy(10)/Congestion(10)
			// until the app hangs ;1 up or the 10 s are over; then ;2 hangs up and ;1
			// follows with the busy/congestion cause (kit: s3_createdial_local_*_hold).
			if c.near != nil {
				c.near.Stop() // the dial is over: no dial timeout
			}
			s.after(c, localBusyFor, func() {
				s.evHangupReq(p, 16, 0, true)
				s.evHangupReq(o, pcause, 0, false)
				s.evDestroyed(p, pcause, 0)
				s.leaveStasis(o)
				s.evDestroyed(o, pcause, 0)
				s.end(c)
			})
			return
		}
		s.evHangupReq(p, 0, 0, false)
		s.evDestroyed(o, 0, 0)
		s.evHangupReq(p, 16, 0, true)
		s.evDestroyed(p, pcause, 0)
		s.end(c)
	case LocalReject:
		s.evDial(o, "")
		noop()
		s.localReject(c, 2, 21)
	case LocalUnavail:
		if c.mode == modeCreate {
			s.evDial(o, "")
		}
		noop()
		s.evDialplan(p, c.lctx, c.lexten, 2, "Hangup", "20")
		s.evHangupReq(p, 16, 0, true)
		s.evHangupReq(o, 20, 0, false)
		s.evDestroyed(p, 20, 0)
		if c.mode == modeCreate {
			s.leaveStasis(o)
		} else {
			s.evDial(o, "")
			s.evDial(o, "CHANUNAVAIL")
		}
		s.evDestroyed(o, 20, 0)
		s.end(c)
	default: // Answer, RingForever, LocalRingReject: Ringing, Wait(n)
		wait := "120"
		switch kind {
		case Answer:
			wait = secs(c.beh.AnswerAfter)
		case LocalRingReject:
			wait = secs(c.beh.RingFor)
		}
		s.evDial(o, "")
		noop()
		s.evDialplan(p, c.lctx, c.lexten, 2, "Ringing", "")
		c.ringing = true
		s.evState(o, "Ringing")
		s.evDialplan(p, c.lctx, c.lexten, 3, "Wait", wait)
		s.evDial(o, "RINGING")
		switch kind {
		case Answer:
			s.after(c, c.beh.AnswerAfter, func() { s.answer(c) })
		case LocalRingReject:
			s.after(c, c.beh.RingFor, func() { s.localReject(c, 4, 21) })
		}
	}
}

// localReject is the ;2 side running Hangup(cause) before answer.
func (s *Server) localReject(c *call, prio, cause int) {
	o, p := c.o, c.p
	s.evDialplan(p, c.lctx, c.lexten, prio, "Hangup", strconv.Itoa(cause))
	s.evHangupReq(p, 16, 0, true)
	s.evHangupReq(o, cause, 0, false)
	s.evDestroyed(p, cause, 0)
	if c.mode == modeCreate {
		s.leaveStasis(o)
	} else {
		s.evDial(o, "NOANSWER")
	}
	s.evDestroyed(o, cause, 0)
	s.end(c)
}

// ringTimeout is the originate (or dial) timeout expiring before answer: no final Dial.
func (s *Server) ringTimeout(c *call) {
	if c.answered {
		return
	}
	o, p := c.o, c.p
	tech := 0
	if !c.local && c.ringing {
		tech = 480
	}
	if c.mode == modeCreate {
		// The /dial timeout is a soft hangup (flag 32) of the channel in Stasis.
		s.evHangupReq(o, 32, 0, true)
		s.leaveStasis(o)
		s.evDestroyed(o, 19, tech)
		if p != nil {
			s.evHangupReq(p, 16, 0, true)
			s.evDestroyed(p, 19, 0)
		}
		s.end(c)
		return
	}
	if p != nil {
		s.evHangupReq(p, 19, 0, false)
	}
	s.evDestroyed(o, 19, tech)
	if p != nil {
		s.evHangupReq(p, 16, 0, true)
		s.evDestroyed(p, 19, 0)
	}
	s.end(c)
}

func (s *Server) answer(c *call) {
	o, p := c.o, c.p
	c.answered = true
	if c.near != nil {
		c.near.Stop()
	}
	if p != nil {
		s.evDialplan(p, c.lctx, c.lexten, 4, "Answer", "")
		s.evState(p, "Up")
	}
	s.evState(o, "Up")
	s.evDial(o, "ANSWER")
	switch c.mode {
	case modeApp:
		if s.apps[c.app] == nil {
			// Stasis() for an app that is not registered fails at once: STASISSTATUS=FAILED.
			s.setDialplan(o, "Stasis", stasisData(c.app, c.appArgs))
			s.evVarset(o, "STASISSTATUS", "FAILED")
			s.evDestroyed(o, 0, 0)
			if p != nil {
				s.evHangupReq(p, 16, 0, true)
				s.evDestroyed(p, 16, 0)
			}
			s.end(c)
			return
		}
		s.setDialplan(o, "Stasis", stasisData(c.app, c.appArgs))
		s.evVarset(o, "STASISSTATUS", "")
		s.evStasisStart(o, splitArgs(c.appArgs))
		s.startDTMF(c)
	case modeDialplan:
		s.runDialplan(c, c.ctx, c.exten)
	}
	if c.ended {
		return
	}
	hang := c.beh.HangupAfter
	if p == nil {
		if hang > 0 {
			s.after(c, hang, func() { s.farHangup(c) })
		}
		return
	}
	// The ;2 half reaches its Wait() 3-500 ms after Answer() in the recordings; the far
	// end's Hangup(16) follows HangupAfter after that Wait starts.
	s.after(c, localWaitAfter, func() {
		wait := "30"
		if hang > 0 {
			wait = secs(hang)
		}
		s.evDialplan(p, c.lctx, c.lexten, 5, "Wait", wait)
		if hang > 0 {
			s.after(c, hang, func() { s.farHangup(c) })
		}
	})
}

func (s *Server) setDialplan(ch *channel, app, data string) { ch.appName, ch.appData = app, data }

func stasisData(app, args string) string {
	if args == "" {
		return app
	}
	return app + "," + args
}

func splitArgs(a string) []string {
	if a == "" {
		return []string{}
	}
	return strings.Split(a, ",")
}

// runDialplan sends the answered channel o into ctx/exten (continue or dialplan originate).
func (s *Server) runDialplan(c *call, ctx, exten string) {
	o := c.o
	c.continued = true
	switch {
	case ctx == "confirmcode":
		code, _ := o.getVar("CONFCODE")
		s.evDialplan(o, ctx, exten, 1, "NoOp", "confirmcode: "+code)
		s.evDialplan(o, ctx, exten, 2, "Answer", "")
		s.evDialplan(o, ctx, exten, 3, "SayDigits", code)
		s.afterNear(c, sayDigitsFor, func() { s.dialplanHangup(c, 4) })
	case ctx == "sink" && exten == "s":
		s.evDialplan(o, ctx, exten, 1, "Wait", "5")
		s.afterNear(c, 5*time.Second, func() { s.dialplanHangup(c, 2) })
	case s.contextHas(ctx, exten):
		s.evDialplan(o, ctx, exten, 1, "Answer", "")
		s.afterNear(c, time.Second, func() { s.dialplanHangup(c, 2) })
	default:
		// No such extension: the PBX ends the channel at once.
		s.dialplanHangup(c, 0)
	}
}

// dialplanHangup is our side's dialplan running Hangup() on an answered call.
func (s *Server) dialplanHangup(c *call, prio int) {
	o, p := c.o, c.p
	if prio > 0 {
		s.evDialplan(o, o.ctx, o.exten, prio, "Hangup", "")
	}
	if c.mode == modeDialplan && p == nil {
		s.evHangupReq(o, 16, 0, true)
	}
	if c.mode != modeDialplan {
		s.evVarset(o, "STASISSTATUS", "SUCCESS")
	}
	if p == nil {
		s.rtpQoS(o)
		s.evDestroyed(o, 16, 0)
		s.end(c)
		return
	}
	s.evHangupReq(p, 16, 0, false)
	s.evDestroyed(o, 16, 0)
	s.evHangupReq(p, 16, 0, true)
	s.evDestroyed(p, 16, 0)
	s.end(c)
}

// farHangup is the far end hanging up an answered call (SIP BYE, or Local Hangup(16)).
func (s *Server) farHangup(c *call) {
	o, p := c.o, c.p
	if p != nil {
		s.evDialplan(p, c.lctx, c.lexten, 6, "Hangup", "16")
		s.evHangupReq(p, 16, 0, true)
		s.evHangupReq(o, 16, 0, false)
		s.evDestroyed(p, 16, 0)
		if c.mode != modeDialplan {
			if o.inStasis {
				s.evStasisEnd(o)
			}
			s.evVarset(o, "STASISSTATUS", "SUCCESS")
		}
		s.evDestroyed(o, 16, 0)
		s.end(c)
		return
	}
	if c.mode == modeCreate {
		s.rtpQoS(o)
		s.evHangupReq(o, 16, 0, false)
		if o.inStasis {
			s.evStasisEnd(o)
		}
		s.evVarset(o, "STASISSTATUS", "SUCCESS")
		s.evDestroyed(o, 16, 0)
		s.end(c)
		return
	}
	s.rtpQoS(o)
	s.evHangupReq(o, -1, 0, false) // a BYE carries no cause
	switch {
	case o.inStasis:
		s.evStasisEnd(o)
		s.evVarset(o, "STASISSTATUS", "SUCCESS")
	case c.mode == modeApp:
		s.evVarset(o, "STASISSTATUS", "SUCCESS")
	default:
		s.evHangupReq(o, 16, 0, true)
	}
	s.evDestroyed(o, 0, 0)
	s.end(c)
}

// hangupReasons maps DELETE ?reason= to a Q.850 cause and the Dial status it produces.
var hangupReasons = map[string]struct {
	cause  int
	status string
}{
	"normal": {16, "NOANSWER"}, "busy": {17, "BUSY"}, "congestion": {34, "CONGESTION"},
	"no_answer": {19, "NOANSWER"}, "timeout": {19, "NOANSWER"}, "rejected": {21, "NOANSWER"},
	"unallocated": {1, "NOANSWER"}, "normal_unspecified": {31, "NOANSWER"},
	"number_incomplete": {28, "NOANSWER"}, "codec_mismatch": {58, "NOANSWER"},
	"interworking": {127, "NOANSWER"}, "failure": {38, "NOANSWER"},
	"answered_elsewhere": {26, "NOANSWER"},
}

// hangupRequest is DELETE /channels/{id}: soft hangup flag 32, then the call ends.
func (s *Server) hangupRequest(ch *channel, cause int, status string) {
	c := ch.call
	o, p := c.o, c.p
	if ch == p && c.answered {
		s.farHangup(c)
		return
	}
	if ch == p {
		s.localReject(c, p.prio+1, cause)
		return
	}
	if !c.answered || p != nil {
		s.evHangupReq(o, 32, 0, true)
	}
	switch {
	case !c.answered && c.mode == modeCreate:
		s.leaveStasis(o)
		if p != nil {
			s.evHangupReq(p, 16, 0, false)
		}
		s.evDestroyed(o, cause, 0)
		if p != nil {
			s.evHangupReq(p, 16, 0, true)
			s.evDestroyed(p, cause, 0)
		}
	case !c.answered:
		s.evDial(o, status)
		if p != nil {
			s.evHangupReq(p, cause, 0, false)
			s.evHangupReq(p, 16, 0, true)
		}
		s.evDestroyed(o, cause, 0)
		if p != nil {
			s.evDestroyed(p, cause, 0)
		}
	default:
		if p == nil {
			s.rtpQoS(o)
			s.evHangupReq(o, 32, 0, true)
		}
		wasStasis := o.inStasis
		if wasStasis {
			s.evStasisEnd(o)
		}
		if wasStasis || c.mode != modeDialplan {
			s.evVarset(o, "STASISSTATUS", "SUCCESS")
		}
		if p != nil {
			s.evHangupReq(p, 16, 0, false)
		}
		s.evDestroyed(o, cause, 0)
		if p != nil {
			s.evHangupReq(p, 16, 0, true)
			s.evDestroyed(p, cause, 0)
		}
	}
	s.end(c)
}

// shutdownCall is `core restart now` reaching the call.
func (s *Server) shutdownCall(c *call) {
	o, p := c.o, c.p
	s.evHangupReq(o, 4, 0, true)
	s.leaveStasis(o)
	if p != nil {
		s.evHangupReq(p, 4, 0, true)
		s.evHangupReq(p, 16, 0, true)
		s.evHangupReq(o, 0, 0, false)
		s.evDestroyed(p, 0, 0)
	}
	s.evDestroyed(o, 0, 0)
	s.end(c)
}
