package sim

import "time"

// RecordedEndpoints returns the endpoints of the recordings with their recorded timings:
// the SIPp UAS behind PJSIP/sipp-*, the contact-less PJSIP/offline, and the `sim`
// dialplan context reached through Local/<exten>@sim.
func RecordedEndpoints() map[string]Behavior {
	const ms = time.Millisecond
	return map[string]Behavior{
		"PJSIP/sipp-answer":     {Result: Answer, RingAfter: ms, AnswerAfter: time.Second, HangupAfter: 2 * time.Second},
		"PJSIP/sipp-answerwait": {Result: Answer, RingAfter: ms, AnswerAfter: time.Second},
		"PJSIP/sipp-busy":       {Result: Busy, RingAfter: ms},
		"PJSIP/sipp-decline":    {Result: Decline, RingAfter: ms, RingFor: time.Second},
		"PJSIP/sipp-notfound":   {Result: NotFound, RingAfter: ms},
		"PJSIP/sipp-noanswer":   {Result: RingForever, RingAfter: ms},
		"PJSIP/sipp-unavail":    {Result: Unavail, RingAfter: ms, RingFor: time.Second},
		"PJSIP/sipp-congest":    {Result: Congestion, RingAfter: ms},
		"PJSIP/sipp-down":       {Result: Unreachable, RingFor: 32 * time.Second},
		"PJSIP/offline":         {Result: Offline},
		"Local/answer@sim":      {Result: Answer, AnswerAfter: time.Second, HangupAfter: 2 * time.Second},
		"Local/answerlong@sim":  {Result: Answer, AnswerAfter: time.Second, HangupAfter: 30 * time.Second},
		"Local/answerfast@sim":  {Result: Answer, HangupAfter: time.Second},
		"Local/busy@sim":        {Result: LocalBusy},
		"Local/congestion@sim":  {Result: LocalCongestion},
		"Local/ring@sim":        {Result: RingForever},
		"Local/reject@sim":      {Result: LocalReject},
		"Local/ringreject@sim":  {Result: LocalRingReject, RingFor: time.Second},
		"Local/unavail@sim":     {Result: LocalUnavail},
		// Webhook-call callees (recordings/webhook): keys pressed, a silent line.
		"Local/dtmf@sim":  {Result: Answer, AnswerAfter: time.Second, HangupAfter: 22*time.Second + 1250*ms, DTMF: "1234#", DTMFAfter: 2 * time.Second},
		"Local/dtmf1@sim": {Result: Answer, HangupAfter: 23*time.Second + 250*ms, DTMF: "1", DTMFAfter: 3*time.Second + 200*ms},
		"Local/talk@sim":  {Result: Answer, HangupAfter: 60 * time.Second},
	}
}

// RecordedContexts is the dialplan of the recordings that continue and dialplan
// originates can reach.
func RecordedContexts() map[string][]string {
	return map[string][]string{"confirmcode": {"s"}, "sink": {"s"}, "from-internal": {"100"}}
}
