package stasisapp

import (
	"strconv"

	"github.com/invokeari/invokeari/events"
)

// This file holds the evidence tables a Call decides its outcome from (SPEC §4, §4b.4).
// They are data on purpose: a telephony engineer should be able to review or extend
// them without reading the state machine.

// dialStatusOutcomes maps the final Dial dialstatus values that name a result on their
// own. NOANSWER is deliberately absent: Asterisk reports it for a 603 decline, a 404, a
// 480, an unreachable peer and our own DELETE alike, so the hangup cause decides those.
var dialStatusOutcomes = map[string]events.Outcome{
	"BUSY":        events.Busy,
	"CONGESTION":  events.Congestion,
	"CHANUNAVAIL": events.Unavailable,
}

// causeOutcomes maps Q.850 hangup causes (ChannelDestroyed.cause) to outcomes. Causes
// not listed here (0 Unknown, 16 Normal Clearing, …) do not decide an outcome alone.
var causeOutcomes = map[int]events.Outcome{
	17: events.Busy,
	// 19 "User alerting, no answer" is also what Asterisk maps a SIP 480 Temporarily
	// Unavailable to. A 480 usually arrives after a 180 (the callee was alerted and did
	// not pick up, or a do-not-disturb/voicemail-less phone declined softly), so to
	// the caller it is a no-answer, not an unreachable subscriber.
	19:  events.NoAnswer,
	18:  events.NoAnswer,
	21:  events.Rejected,
	52:  events.Rejected,
	1:   events.InvalidNumber,
	22:  events.InvalidNumber,
	28:  events.InvalidNumber,
	3:   events.Unavailable,
	20:  events.Unavailable,
	27:  events.Unavailable,
	44:  events.Unavailable,
	66:  events.Unavailable,
	34:  events.Congestion,
	38:  events.Congestion,
	41:  events.Congestion,
	42:  events.Congestion,
	102: events.Congestion,
}

// sipOutcomes maps SIP final response codes (ChannelDestroyed.tech_cause) to outcomes;
// consulted only when the Q.850 cause did not decide.
var sipOutcomes = map[int]events.Outcome{
	486: events.Busy,
	600: events.Busy,
	480: events.NoAnswer, // see cause 19 above
	408: events.NoAnswer,
	603: events.Rejected,
	403: events.Rejected,
	404: events.InvalidNumber,
	604: events.InvalidNumber,
	410: events.InvalidNumber,
	484: events.InvalidNumber,
	503: events.Congestion,
	500: events.Congestion,
	504: events.Congestion,
}

// causeTexts are Asterisk's texts for Q.850 causes (main/causes.h, ast_cause2str), used
// when the cause comes from a ChannelHangupRequest, which carries no text.
var causeTexts = map[int]string{
	0:   "Unknown",
	1:   "Unallocated (unassigned) number",
	2:   "No route to specified transmit network",
	3:   "No route to destination",
	6:   "Channel unacceptable",
	7:   "Call awarded and being delivered in an established channel",
	16:  "Normal Clearing",
	17:  "User busy",
	18:  "No user responding",
	19:  "User alerting, no answer",
	20:  "Subscriber absent",
	21:  "Call Rejected",
	22:  "Number changed",
	27:  "Destination out of order",
	28:  "Invalid number format",
	29:  "Facility rejected",
	30:  "Response to STATus ENQuiry",
	31:  "Normal, unspecified",
	34:  "Circuit/channel congestion",
	38:  "Network out of order",
	41:  "Temporary failure",
	42:  "Switching equipment congestion",
	43:  "Access information discarded",
	44:  "Requested channel not available",
	50:  "Requested facility not subscribed",
	52:  "Outgoing call barred",
	54:  "Incoming call barred",
	57:  "Bearer capability not authorized",
	58:  "Bearer capability not available",
	65:  "Bearer capability not implemented",
	66:  "Channel not implemented",
	69:  "Facility not implemented",
	81:  "Invalid call reference value",
	88:  "Incompatible destination",
	95:  "Invalid message unspecified",
	96:  "Mandatory information element is missing",
	97:  "Message type nonexist.",
	98:  "Wrong message",
	99:  "Info. element nonexist or not implemented",
	100: "Invalid information element contents",
	101: "Message not compatible with call state",
	102: "Recover on timer expiry",
	103: "Mandatory IE length error",
	111: "Protocol error, unspecified",
	127: "Interworking, unspecified",
}

// Soft-hangup flags carried in ChannelHangupRequest.cause when soft is true. They are
// not Q.850 causes (Asterisk's main/channel.c publishes the flag).
const (
	softShutdown = 4  // AST_SOFTHANGUP_SHUTDOWN: Asterisk is stopping
	softTimeout  = 8  // AST_SOFTHANGUP_TIMEOUT: absolute channel timeout
	softUnload   = 16 // AST_SOFTHANGUP_APPUNLOAD
	softExplicit = 32 // AST_SOFTHANGUP_EXPLICIT: ARI DELETE, AMI Hangup, CLI
)

// softFlagTexts describe soft-hangup flags for reasons.
var softFlagTexts = []struct {
	flag int
	text string
}{
	{softShutdown, "Asterisk shutdown"},
	{softTimeout, "channel timeout"},
	{softUnload, "module unload"},
	{softExplicit, "explicit hangup request (ARI/AMI/CLI)"},
}

// causeText returns Asterisk's text for a Q.850 cause.
func causeText(cause int) string {
	if t, ok := causeTexts[cause]; ok {
		return t
	}
	return "cause " + strconv.Itoa(cause)
}

// byDialStatus decides from a final Dial status; reason e.g. "Dial BUSY".
func byDialStatus(status string) (events.Outcome, string, bool) {
	o, ok := dialStatusOutcomes[status]
	if !ok {
		return "", "", false
	}
	return o, "Dial " + status, true
}

// byCause decides from a Q.850 cause; reason e.g. "cause 17 User busy".
func byCause(cause int, text string) (events.Outcome, string, bool) {
	o, ok := causeOutcomes[cause]
	if !ok {
		return "", "", false
	}
	return o, causeReason(cause, text), true
}

// bySIP decides from a SIP response code; reason e.g. "SIP 486".
func bySIP(code int) (events.Outcome, string, bool) {
	o, ok := sipOutcomes[code]
	if !ok {
		return "", "", false
	}
	return o, "SIP " + strconv.Itoa(code), true
}

// causeReason formats a cause as evidence: "cause 17 User busy".
func causeReason(cause int, text string) string {
	if text == "" {
		text = causeText(cause)
	}
	return "cause " + strconv.Itoa(cause) + " " + text
}

// softFlagsText describes the soft-hangup flags seen, "" when none.
func softFlagsText(flags int) string {
	s := ""
	for _, f := range softFlagTexts {
		if flags&f.flag == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += f.text
	}
	return s
}
