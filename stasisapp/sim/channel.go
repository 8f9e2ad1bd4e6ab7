package sim

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/invokeari/invokeari/stasisapp/ari"
)

// asteriskID is the entity id the recorded Asterisk reported.
const asteriskID = "02:fc:00:00:00:01"

// callMode says how a call was started; the recordings differ between them.
type callMode uint8

const (
	modeApp      callMode = iota // POST /channels?app=
	modeDialplan                 // POST /channels?context=&extension=
	modeCreate                   // POST /channels/create, then /dial
)

// call is one originate: the channel we dialled (o) and, for Local, its ;2 half (p).
// All fields are guarded by Server.mu. Timers carry the generation they were armed
// with so a stale timer does nothing.
type call struct {
	o, p       *channel
	beh        Behavior
	local      bool
	mode       callMode
	app        string // Stasis app (modeApp, modeCreate)
	appArgs    string
	ctx, exten string // dialplan destination (modeDialplan)
	dialstring string
	lexten     string // Local extension (for the ;2 dialplan data)
	lctx       string
	timeout    time.Duration
	dialed     bool
	ringing    bool
	answered   bool
	continued  bool // left Stasis into the dialplan
	ended      bool
	gen        uint64
	far, near  *time.Timer
}

// channel is one Asterisk channel as ARI shows it.
type channel struct {
	call                  *call
	id, name, state       string
	protocolID            string
	callerName, callerNum string
	ctx, exten            string
	prio                  int
	appName, appData      string
	baseApp, baseData     string // what the dialplan location shows between applications
	created               string
	app                   string // app subscribed to this channel's events
	inStasis              bool
	vars                  [][2]string
}

func (ch *channel) stopTimers() {
	c := ch.call
	if c == nil {
		return
	}
	c.gen++
	if c.far != nil {
		c.far.Stop()
	}
	if c.near != nil {
		c.near.Stop()
	}
}

func (ch *channel) getVar(name string) (string, bool) {
	for _, kv := range ch.vars {
		if kv[0] == name {
			return kv[1], true
		}
	}
	return "", false
}

// appendStr appends s as a JSON string (jansson-compatible escaping).
func appendStr(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, fmt.Sprintf("\\u%04x", c)...)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendChannel writes the channel object with Asterisk 22.10's key order.
func (ch *channel) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendStr(b, ch.id)
	b = append(b, `,"name":`...)
	b = appendStr(b, ch.name)
	b = append(b, `,"state":`...)
	b = appendStr(b, ch.state)
	b = append(b, `,"protocol_id":`...)
	b = appendStr(b, ch.protocolID)
	b = append(b, `,"caller":{"name":`...)
	b = appendStr(b, ch.callerName)
	b = append(b, `,"number":`...)
	b = appendStr(b, ch.callerNum)
	b = append(b, `},"connected":{"name":`...)
	b = appendStr(b, ch.callerName)
	b = append(b, `,"number":`...)
	b = appendStr(b, ch.callerNum)
	b = append(b, `},"accountcode":"","dialplan":{"context":`...)
	b = appendStr(b, ch.ctx)
	b = append(b, `,"exten":`...)
	b = appendStr(b, ch.exten)
	b = append(b, `,"priority":`...)
	b = strconv.AppendInt(b, int64(ch.prio), 10)
	b = append(b, `,"app_name":`...)
	b = appendStr(b, ch.appName)
	b = append(b, `,"app_data":`...)
	b = appendStr(b, ch.appData)
	b = append(b, `},"creationtime":`...)
	b = appendStr(b, ch.created)
	b = append(b, `,"language":"en"}`...)
	return b
}

func nowStamp() string { return time.Now().Format(ari.TimeLayout) }

// ev builds one event. Key order follows the recordings; the trailing
// "application" is added per recipient by emit.
type ev struct{ b []byte }

func newEv(head string) *ev {
	e := &ev{b: make([]byte, 0, 700)}
	e.b = append(e.b, '{')
	e.b = append(e.b, head...)
	return e
}

func (e *ev) typ(t string) *ev {
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = append(e.b, `"type":`...)
	e.b = appendStr(e.b, t)
	e.b = append(e.b, `,"timestamp":`...)
	e.b = appendStr(e.b, nowStamp())
	return e
}

func (e *ev) str(k, v string) *ev {
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = appendStr(e.b, k)
	e.b = append(e.b, ':')
	e.b = appendStr(e.b, v)
	return e
}

func (e *ev) num(k string, v int) *ev {
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = appendStr(e.b, k)
	e.b = append(e.b, ':')
	e.b = strconv.AppendInt(e.b, int64(v), 10)
	return e
}

func (e *ev) raw(k, v string) *ev {
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = appendStr(e.b, k)
	e.b = append(e.b, ':')
	e.b = append(e.b, v...)
	return e
}

func (e *ev) chanObj(k string, ch *channel) *ev {
	e.b = append(e.b, ',')
	e.b = appendStr(e.b, k)
	e.b = append(e.b, ':')
	e.b = ch.appendJSON(e.b)
	e.b = append(e.b, `,"asterisk_id":"`+asteriskID+`"`...)
	return e
}

// emit sends the event about ch to the app subscribed to ch and to every
// subscribeAll connection. Caller holds s.mu.
func (s *Server) emit(ch *channel, e *ev) {
	if ch.app != "" {
		if c := s.apps[ch.app]; c != nil {
			c.send(finish(e.b, ch.app))
		}
	}
	for c := range s.conns {
		if c.all && !c.replaced && (ch.app == "" || c.app != ch.app) {
			c.send(finish(e.b, c.app))
		}
	}
}

func finish(b []byte, app string) []byte {
	out := make([]byte, 0, len(b)+len(app)+20)
	out = append(out, b...)
	out = append(out, `,"application":`...)
	out = appendStr(out, app)
	return append(out, '}')
}

// Event helpers, one per ARI event type, in the recorded key order.

func (s *Server) evDial(ch *channel, status string) {
	ds := ch.call.dialstring
	if ch.call.mode == modeCreate && status != "" {
		ds = "" // after POST /dial only the first Dial carries the dial string
	}
	e := newEv("").typ("Dial").str("dialstatus", status).str("forward", "").str("dialstring", ds)
	s.emit(ch, e.chanObj("peer", ch))
}

func (s *Server) evState(ch *channel, state string) {
	ch.state = state
	s.emit(ch, newEv("").typ("ChannelStateChange").chanObj("channel", ch))
}

func (s *Server) evVarset(ch *channel, name, value string) {
	e := newEv("").str("variable", name).str("value", value).typ("ChannelVarset")
	s.emit(ch, e.chanObj("channel", ch))
}

func (s *Server) evCallerID(ch *channel) {
	e := newEv("").typ("ChannelCallerId").num("caller_presentation", 0).str("caller_presentation_txt", "Presentation Allowed, Not Screened")
	s.emit(ch, e.chanObj("channel", ch))
}

func (s *Server) evConnectedLine(ch *channel) {
	s.emit(ch, newEv("").typ("ChannelConnectedLine").chanObj("channel", ch))
}

// evDialplan moves ch to ctx/exten/prio running app(data) and reports it.
func (s *Server) evDialplan(ch *channel, ctx, exten string, prio int, app, data string) {
	ch.ctx, ch.exten, ch.prio, ch.appName, ch.appData = ctx, exten, prio, app, data
	e := newEv("").typ("ChannelDialplan").str("dialplan_app", app).str("dialplan_app_data", data)
	s.emit(ch, e.chanObj("channel", ch))
}

// hangup causes: cause < 0 means no cause field (PJSIP BYE).
func (s *Server) evHangupReq(ch *channel, cause, tech int, soft bool) {
	e := newEv("")
	if cause >= 0 {
		e.num("cause", cause)
	}
	if tech > 0 {
		e.num("tech_cause", tech)
	}
	if soft {
		e.raw("soft", "true")
	}
	e.typ("ChannelHangupRequest")
	s.emit(ch, e.chanObj("channel", ch))
}

func (s *Server) evDestroyed(ch *channel, cause, tech int) {
	ch.appName, ch.appData = ch.baseApp, ch.baseData
	e := newEv("").typ("ChannelDestroyed").num("cause", cause).str("cause_txt", causeText(cause))
	if tech > 0 {
		e.num("tech_cause", tech)
	}
	s.emit(ch, e.chanObj("channel", ch))
	delete(s.channels, ch.id)
	ch.inStasis = false
}

func (s *Server) evStasisStart(ch *channel, args []string) {
	ch.inStasis = true
	a := []byte{'['}
	for i, x := range args {
		if i > 0 {
			a = append(a, ',')
		}
		a = appendStr(a, x)
	}
	a = append(a, ']')
	e := newEv("").typ("StasisStart").raw("args", string(a))
	s.emit(ch, e.chanObj("channel", ch))
}

func (s *Server) evStasisEnd(ch *channel) {
	s.leaveMedia(ch)
	s.emit(ch, newEv("").typ("StasisEnd").chanObj("channel", ch))
	ch.inStasis = false
}

// rtpQoS reports the RTCP statistics PJSIP sets when an answered channel hangs up.
func (s *Server) rtpQoS(ch *channel) {
	s.evVarset(ch, "RTPAUDIOQOS", "ssrc=1984077477;themssrc=0;lp=0;rxjitter=0.000000;rxcount=0;txjitter=0.000000;txcount=101;rlp=0;rtt=0.000000;rxmes=0.000000;txmes=0.000000")
	s.evVarset(ch, "RTPAUDIOQOSJITTER", "minrxjitter=000.000000;maxrxjitter=000.000000;avgrxjitter=000.000000;stdevrxjitter=000.000000;mintxjitter=000.000000;maxtxjitter=000.000000;avgtxjitter=000.000000;stdevtxjitter=000.000000;")
	s.evVarset(ch, "RTPAUDIOQOSLOSS", "  minrxlost=000.000000;  maxrxlost=000.000000;  avgrxlost=000.000000;  stdevrxlost=000.000000;  mintxlost=000.000000;  maxtxlost=000.000000;  avgtxlost=000.000000;  stdevtxlost=000.000000;")
	s.evVarset(ch, "RTPAUDIOQOSRTT", "     minrtt=000.000000;     maxrtt=000.000000;     avgrtt=000.000000;     stdevrtt=000.000000;")
	s.evVarset(ch, "RTPAUDIOQOSMES", "   minrxmes=000.000000;   maxrxmes=000.000000;   avgrxmes=000.000000;   stdevrxmes=000.000000;   mintxmes=000.000000;   maxtxmes=000.000000;   avgtxmes=000.000000;   stdevtxmes=000.000000;")
}

var causeTexts = map[int]string{
	0: "Unknown", 1: "Unallocated (unassigned) number", 3: "No route to destination",
	16: "Normal Clearing", 17: "User busy", 18: "No user responding",
	19: "User alerting, no answer", 20: "Subscriber absent", 21: "Call Rejected",
	22: "Number changed", 26: "Answered elsewhere", 27: "Destination out of order",
	28: "Invalid number format", 31: "Normal, unspecified", 34: "Circuit/channel congestion",
	38: "Network out of order", 41: "Temporary failure", 42: "Switching equipment congestion",
	58: "Bearer capability not available", 127: "Interworking, unspecified",
}

func causeText(c int) string {
	if t, ok := causeTexts[c]; ok {
		return t
	}
	return "Unknown"
}

// sortedChannels lists live channels by creation order (uniqueid counter).
func (s *Server) sortedChannels() []*channel {
	out := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		out = append(out, ch)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].created != out[j].created {
			return out[i].created < out[j].created
		}
		return out[i].name < out[j].name
	})
	return out
}
