package stasisapp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

const recordingsDir = "../testdata/ari/recordings"

// recStep is one thing that happens to a Call while a recording is replayed.
type recStep struct {
	ev     ari.Event    // a websocket event about the call's channel
	accept *ari.Channel // POST /channels answered 200 with this channel
	cancel bool         // we are about to DELETE the channel
	at     time.Time
}

// recording is the part of a scenario that concerns the originated channel.
type recording struct {
	name    string
	id      string // originated channel id ("" when the originate was refused)
	status  int    // HTTP status of the originate
	message string // ARI's error text when refused
	timeout time.Duration
	steps   []recStep
}

type recLine struct {
	TMS          float64         `json:"t_ms"`
	Kind         string          `json:"kind"`
	What         string          `json:"what"`
	Started      time.Time       `json:"started"`
	SentTMS      float64         `json:"sent_t_ms"`
	Method       string          `json:"method"`
	Path         string          `json:"path"`
	Query        json.RawMessage `json:"query"`
	Status       int             `json:"status"`
	ResponseBody json.RawMessage `json:"response_body"`
	Event        json.RawMessage `json:"event"`
}

// loadRecording reads a scenario: the first POST /channels (or /channels/create) gives
// the channel id; every websocket event about that channel is kept in file order, the
// REST reply becomes an Accepted step where it was logged, and a DELETE of the channel
// becomes a Canceling step placed at the time the DELETE was sent (REST lines are
// logged when the response arrives, after the events it caused may have been logged).
func loadRecording(tb testing.TB, file string) recording {
	tb.Helper()
	f, err := os.Open(filepath.Join(recordingsDir, file))
	if err != nil {
		tb.Fatalf("open recording: %v", err)
	}
	defer f.Close()
	var lines []recLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<22)
	for sc.Scan() {
		var l recLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("%s: %v", file, err)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", file, err)
	}

	rec := recording{name: file, timeout: 30 * time.Second}
	var started time.Time
	originate, cancelAt := -1, -1.0
	for i, l := range lines {
		if l.Kind == "meta" && l.What == "scenario" {
			started = l.Started
		}
		if l.Kind != "rest" || l.Method != "POST" || (l.Path != "/ari/channels" && l.Path != "/ari/channels/create") {
			continue
		}
		originate = i
		rec.status = l.Status
		var q map[string]string
		_ = json.Unmarshal(l.Query, &q)
		if t, err := time.ParseDuration(q["timeout"] + "s"); err == nil {
			rec.timeout = t
		}
		var body struct{ ID, Message, Error string }
		_ = json.Unmarshal(l.ResponseBody, &body)
		rec.id = body.ID
		rec.message = body.Message + body.Error
		break
	}
	if originate < 0 {
		tb.Fatalf("%s: no originate", file)
	}
	if rec.status != 200 {
		rec.id = ""
		return rec
	}
	for _, l := range lines {
		if l.Kind == "rest" && l.Method == "DELETE" && l.Path == "/ari/channels/"+rec.id {
			cancelAt = l.SentTMS
		}
	}
	at := func(l recLine) time.Time { return started.Add(time.Duration(l.TMS * float64(time.Millisecond))) }
	canceled := false
	for i, l := range lines {
		if cancelAt >= 0 && !canceled && (l.TMS >= cancelAt && l.Kind == "ws" || l.Kind == "rest" && l.Method == "DELETE" && l.Path == "/ari/channels/"+rec.id) {
			rec.steps = append(rec.steps, recStep{cancel: true, at: at(l)})
			canceled = true
		}
		switch {
		case i == originate:
			var ch ari.Channel
			if err := json.Unmarshal(l.ResponseBody, &ch); err != nil {
				tb.Fatalf("%s: channel: %v", file, err)
			}
			rec.steps = append(rec.steps, recStep{accept: &ch, at: at(l)})
		case l.Kind == "ws":
			ev, err := ari.DecodeEvent(l.Event)
			if err != nil {
				tb.Fatalf("%s: %v", file, err)
			}
			if ce, ok := ev.(ari.ChannelEvent); ok && ce.ChannelID() == rec.id {
				rec.steps = append(rec.steps, recStep{ev: ev, at: ev.At()})
			}
		}
	}
	return rec
}

// replay feeds a recording into a new Call and returns it with the kinds it reported.
func replay(rec recording) (*Call, []events.Kind) {
	c := NewCall(rec.id, "pbx1", rec.timeout)
	var kinds []events.Kind
	add := func(chs []Change) {
		for _, ch := range chs {
			kinds = append(kinds, ch.Kind)
		}
	}
	if rec.status != 200 {
		add(c.OriginateFailed(rec.status, rec.message, time.Unix(0, 0)))
		return c, kinds
	}
	for _, s := range rec.steps {
		switch {
		case s.cancel:
			c.Canceling("request")
		case s.accept != nil:
			add(c.Accepted(*s.accept, s.at))
		default:
			add(c.Apply(s.ev))
		}
	}
	return c, kinds
}

func i64(v int64) *int64 { return &v }

// want is what a telephony engineer expects from a scenario.
type want struct {
	outcome  events.Outcome
	cause    int
	causeTxt string
	sip      int
	dial     string
	reason   string // substring of the reason
	kinds    []events.Kind
	rang     bool
	answered bool
}

var (
	kAnsweredRing = []events.Kind{events.Initiated, events.Ringing, events.KindAnswered, events.Ended}
	kRang         = []events.Kind{events.Initiated, events.Ringing, events.Ended}
	kEnded        = []events.Kind{events.Initiated, events.Ended}
	kRefused      = []events.Kind{events.Ended}
)

// scenarioWants is keyed by scenario name without the .nosuball / .jsonl suffix.
var scenarioWants = map[string]want{
	"local_answer":       {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"local_answer_nosub": {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"local_answer_sub":   {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"local_answerlong":   {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"local_answerlong_sub": {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered",
		kAnsweredRing, true, true},
	// A remote BYE ends an answered PJSIP call with cause 0: answered-ness decides.
	"pjsip_answer":         {events.Completed, 0, "Unknown", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"pjsip_answer_nosub":   {events.Completed, 0, "Unknown", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"pjsip_answer_sub":     {events.Completed, 0, "Unknown", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"pjsip_answerwait":     {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"pjsip_answerwait_sub": {events.Completed, 16, "Normal Clearing", 0, "ANSWER", "answered", kAnsweredRing, true, true},
	"local_busy":           {events.Busy, 0, "Unknown", 0, "BUSY", "Dial BUSY", kEnded, false, false},
	"local_congestion":     {events.Congestion, 0, "Unknown", 0, "CONGESTION", "Dial CONGESTION", kEnded, false, false},
	"local_noanswer":       {events.NoAnswer, 19, "User alerting, no answer", 0, "RINGING", "cause 19", kRang, true, false},
	"pjsip_noanswer":       {events.NoAnswer, 19, "User alerting, no answer", 480, "RINGING", "cause 19", kRang, true, false},
	"local_nonexistent":    {events.Failed, 0, "Unknown", 0, "", "cause 0 Unknown", kEnded, false, false},
	"local_reject":         {events.Rejected, 21, "Call Rejected", 0, "NOANSWER", "cause 21 Call Rejected", kEnded, false, false},
	"local_ringreject":     {events.Rejected, 21, "Call Rejected", 0, "NOANSWER", "cause 21", kRang, true, false},
	"local_unavail":        {events.Unavailable, 20, "Subscriber absent", 0, "CHANUNAVAIL", "Dial CHANUNAVAIL", kEnded, false, false},
	"pjsip_busy486":        {events.Busy, 17, "User busy", 486, "BUSY", "Dial BUSY", kEnded, false, false},
	"pjsip_congest503":     {events.Congestion, 34, "Circuit/channel congestion", 503, "CONGESTION", "Dial CONGESTION", kEnded, false, false},
	"pjsip_decline603":     {events.Rejected, 21, "Call Rejected", 603, "NOANSWER", "cause 21", kRang, true, false},
	"pjsip_notfound404":    {events.InvalidNumber, 1, "Unallocated (unassigned) number", 404, "NOANSWER", "cause 1 ", kEnded, false, false},
	"pjsip_unavail480":     {events.NoAnswer, 19, "User alerting, no answer", 480, "NOANSWER", "cause 19", kRang, true, false},
	"pjsip_unreachable":    {events.NoAnswer, 18, "No user responding", 408, "NOANSWER", "cause 18 No user responding", kEnded, false, false},
	"pjsip_offline_nocontact": {events.Failed, 0, "", 0, "", "ARI refused originate: 500 Allocation failed",
		kRefused, false, false},
	"pjsip_unknown_endpoint": {events.Failed, 0, "", 0, "", "ARI refused originate: 500 Allocation failed",
		kRefused, false, false},
	"unknown_tech": {events.Failed, 0, "", 0, "", "ARI refused originate: 500 Allocation failed", kRefused, false, false},
	// Our own DELETE while ringing: NOANSWER + cause 16 (or BUSY + 17 with ?reason=busy).
	"ringing_createdial_pjsip": {events.Canceled, 16, "Normal Clearing", 0, "RINGING", "canceled by request", kRang, true, false},
	"ringing_dialplan_local":   {events.Canceled, 16, "Normal Clearing", 0, "NOANSWER", "canceled by request", kRang, true, false},
	"ringing_dialplan_pjsip":   {events.Canceled, 16, "Normal Clearing", 0, "NOANSWER", "canceled by request", kRang, true, false},
	"ringing_stasis_local_reason_busy": {events.Canceled, 17, "User busy", 0, "BUSY", "canceled by request",
		kRang, true, false},
	"ringing_stasis_pjsip": {events.Canceled, 16, "Normal Clearing", 0, "NOANSWER", "canceled by request", kRang, true, false},
}

// scenarioKey strips the family prefix and file suffixes: s2_stasis_pjsip_busy486.nosuball.jsonl → pjsip_busy486.
func scenarioKey(file string) string {
	k := strings.TrimSuffix(strings.TrimSuffix(file, ".jsonl"), ".nosuball")
	for _, p := range []string{"s1_dialplan_", "s2_stasis_", "s5_cancel_", "s1_", "s2_"} {
		if strings.HasPrefix(k, p) {
			return strings.TrimPrefix(k, p)
		}
	}
	return k
}

// recordedScenarios lists the recordings the Call is checked against: s1, s2 and
// s5_cancel, in both websocket modes except for dialplan originates, which send the app
// no events without subscribeAll.
func recordedScenarios(tb testing.TB) []string {
	tb.Helper()
	var files []string
	for _, pat := range []string{"s1_*.jsonl", "s2_*.jsonl", "s5_cancel_*.jsonl"} {
		m, err := filepath.Glob(filepath.Join(recordingsDir, pat))
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range m {
			base := filepath.Base(p)
			if strings.Contains(base, "_dialplan_") && strings.HasSuffix(base, ".nosuball.jsonl") {
				continue
			}
			files = append(files, base)
		}
	}
	if len(files) < 60 {
		tb.Fatalf("found %d recordings in %s; want the s1/s2/s5_cancel set", len(files), recordingsDir)
	}
	return files
}

func TestCallRecordings(t *testing.T) {
	for _, file := range recordedScenarios(t) {
		t.Run(file, func(t *testing.T) {
			w, ok := scenarioWants[scenarioKey(file)]
			if !ok {
				t.Fatalf("no expectation for scenario %q", scenarioKey(file))
			}
			c, kinds := replay(loadRecording(t, file))
			got := c.Record()
			if !c.Final() {
				t.Fatalf("call not final; record %+v", got)
			}
			if got.Outcome != w.outcome {
				t.Errorf("outcome = %q, want %q (reason %q)", got.Outcome, w.outcome, got.Reason)
			}
			if got.State != events.StateEnded {
				t.Errorf("state = %q, want ended", got.State)
			}
			if got.Cause != w.cause || got.CauseTxt != w.causeTxt {
				t.Errorf("cause = %d %q, want %d %q", got.Cause, got.CauseTxt, w.cause, w.causeTxt)
			}
			if got.SIPCode != w.sip {
				t.Errorf("sip_code = %d, want %d", got.SIPCode, w.sip)
			}
			if got.DialStatus != w.dial {
				t.Errorf("dialstatus = %q, want %q", got.DialStatus, w.dial)
			}
			if !strings.Contains(got.Reason, w.reason) {
				t.Errorf("reason = %q, want it to contain %q", got.Reason, w.reason)
			}
			if !slices.Equal(kinds, w.kinds) {
				t.Errorf("changes = %v, want %v", kinds, w.kinds)
			}
			if gotRang := got.RingingAt != nil && got.RingMS != nil; gotRang != w.rang {
				t.Errorf("rang (ringing_at, ring_ms set) = %v, want %v", gotRang, w.rang)
			}
			gotAns := got.AnsweredAt != nil && got.DurationMS != nil
			if gotAns != w.answered {
				t.Errorf("answered (answered_at, duration_ms set) = %v, want %v", gotAns, w.answered)
			}
			if c.Answered() != w.answered {
				t.Errorf("Answered() = %v, want %v", c.Answered(), w.answered)
			}
			if w.outcome == events.Failed && len(kinds) == 1 {
				return // refused: no channel, no times
			}
			if got.Channel == "" || got.CreatedAt.IsZero() || got.EndedAt == nil {
				t.Errorf("channel %q, created_at %v, ended_at %v: want all set", got.Channel, got.CreatedAt, got.EndedAt)
			}
		})
	}
}

// TestCallTimings checks ring_ms and duration_ms against the event timestamps of a few
// recordings (values read off the files by hand).
func TestCallTimings(t *testing.T) {
	tests := []struct {
		file          string
		ringMS, durMS *int64
		createdAt     string
		ringingAt     string
		answeredAt    string
		endedAt       string
	}{
		{file: "s2_stasis_pjsip_unavail480.jsonl", ringMS: i64(1009), durMS: nil,
			createdAt: "2026-11-26T08:02:41.383+0000", ringingAt: "2026-11-26T08:02:41.386+0000",
			endedAt: "2026-11-26T08:02:42.395+0000"},
		{file: "s1_dialplan_local_noanswer.jsonl", ringMS: i64(3003), durMS: nil,
			createdAt: "2026-11-26T07:58:11.460+0000", ringingAt: "2026-11-26T07:58:11.462+0000",
			endedAt: "2026-11-26T07:58:14.465+0000"},
		{file: "s5_cancel_ringing_stasis_pjsip.jsonl", ringMS: i64(505), durMS: nil,
			createdAt: "2026-11-26T08:08:01.042+0000", ringingAt: "2026-11-26T08:08:01.046+0000",
			endedAt: "2026-11-26T08:08:01.551+0000"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, _ := replay(loadRecording(t, tt.file))
			got := c.Record()
			checkTime(t, "created_at", &got.CreatedAt, tt.createdAt)
			checkTime(t, "ringing_at", got.RingingAt, tt.ringingAt)
			checkTime(t, "answered_at", got.AnsweredAt, tt.answeredAt)
			checkTime(t, "ended_at", got.EndedAt, tt.endedAt)
			checkMS(t, "ring_ms", got.RingMS, tt.ringMS)
			checkMS(t, "duration_ms", got.DurationMS, tt.durMS)
		})
	}
}

// TestCallAnsweredTimings checks an answered call's timings against its own Dial events.
func TestCallAnsweredTimings(t *testing.T) {
	for _, file := range []string{"s2_stasis_local_answer_sub.jsonl", "s2_stasis_pjsip_answerwait_sub.jsonl", "s1_dialplan_pjsip_answer.jsonl"} {
		t.Run(file, func(t *testing.T) {
			rec := loadRecording(t, file)
			var ringing, answer, destroyed time.Time
			for _, s := range rec.steps {
				switch e := s.ev.(type) {
				case *ari.Dial:
					if e.DialStatus == "RINGING" && ringing.IsZero() {
						ringing = e.At()
					}
					if e.DialStatus == "ANSWER" && answer.IsZero() {
						answer = e.At()
					}
				case *ari.ChannelStateChange:
					if e.Channel.State == "Up" && answer.IsZero() {
						answer = e.At()
					}
				case *ari.ChannelDestroyed:
					destroyed = e.At()
				}
			}
			c, _ := replay(rec)
			got := c.Record()
			wantRing, wantDur := answer.Sub(ringing).Milliseconds(), destroyed.Sub(answer).Milliseconds()
			if wantRing < 900 || wantRing > 1200 || wantDur < 1500 {
				t.Fatalf("recording timings unexpected: ring %d ms, duration %d ms", wantRing, wantDur)
			}
			checkMS(t, "ring_ms", got.RingMS, &wantRing)
			checkMS(t, "duration_ms", got.DurationMS, &wantDur)
			if got.Outcome != events.Completed {
				t.Errorf("outcome = %q, want completed", got.Outcome)
			}
		})
	}
}

func checkTime(t *testing.T, name string, got *time.Time, want string) {
	t.Helper()
	if want == "" {
		if got != nil {
			t.Errorf("%s = %v, want null", name, got)
		}
		return
	}
	w, err := time.Parse(ari.TimeLayout, want)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.Equal(w) {
		t.Errorf("%s = %v, want %v", name, got, w)
	}
}

func checkMS(t *testing.T, name string, got, want *int64) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", name, fmtMS(got), fmtMS(want))
	case *got != *want:
		t.Errorf("%s = %d, want %d", name, *got, *want)
	}
}

func fmtMS(p *int64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

// --- order tolerance -------------------------------------------------------------

// moveStep returns steps with the first step matching from moved to just before the
// first step matching before (or after it, when after is true).
func moveStep(tb testing.TB, steps []recStep, from, to func(recStep) bool, after bool) []recStep {
	tb.Helper()
	fi := slices.IndexFunc(steps, from)
	if fi < 0 {
		tb.Fatal("step to move not found")
	}
	moved := steps[fi]
	rest := slices.Delete(slices.Clone(steps), fi, fi+1)
	ti := slices.IndexFunc(rest, to)
	if ti < 0 {
		tb.Fatal("anchor step not found")
	}
	if after {
		ti++
	}
	return slices.Insert(rest, ti, moved)
}

func isType(typ string) func(recStep) bool {
	return func(s recStep) bool { return s.ev != nil && s.ev.EventType() == typ }
}

func isHardHangup(s recStep) bool {
	h, ok := s.ev.(*ari.ChannelHangupRequest)
	return ok && !h.Soft && h.Cause != nil
}

func isFinalDial(s recStep) bool {
	d, ok := s.ev.(*ari.Dial)
	return ok && d.DialStatus != "" && d.DialStatus != "RINGING" && d.DialStatus != "PROGRESS" && d.DialStatus != "ANSWER"
}

// orderCase replays a recording with some steps permuted.
type orderCase struct {
	name    string
	file    string
	reorder func(testing.TB, []recStep) []recStep
	want    events.Outcome
}

func TestCallOrderTolerance(t *testing.T) {
	hangupFirst := func(tb testing.TB, s []recStep) []recStep {
		return moveStep(tb, s, isHardHangup, isType("Dial"), false)
	}
	destroyedFirst := func(tb testing.TB, s []recStep) []recStep {
		return moveStep(tb, s, isFinalDial, isType("ChannelDestroyed"), true)
	}
	// Scenarios whose outcome the cause can decide, so both permutations are safe.
	decidable := []struct {
		file string
		want events.Outcome
	}{
		{"s2_stasis_pjsip_busy486.jsonl", events.Busy},
		{"s2_stasis_pjsip_congest503.jsonl", events.Congestion},
		{"s2_stasis_pjsip_decline603.jsonl", events.Rejected},
		{"s2_stasis_pjsip_notfound404.jsonl", events.InvalidNumber},
		{"s2_stasis_pjsip_unavail480.jsonl", events.NoAnswer},
		{"s1_dialplan_pjsip_unreachable.jsonl", events.NoAnswer},
		{"s2_stasis_local_reject.jsonl", events.Rejected},
		{"s2_stasis_local_ringreject.jsonl", events.Rejected},
		{"s2_stasis_local_unavail.jsonl", events.Unavailable},
	}
	var tests []orderCase
	for _, d := range decidable {
		tests = append(tests,
			orderCase{"hangup before first Dial/" + d.file, d.file, hangupFirst, d.want},
			orderCase{"Destroyed before final Dial/" + d.file, d.file, destroyedFirst, d.want},
		)
	}
	// Answered call: Destroyed (state Up) overtakes the Dial ANSWER; the snapshot state
	// is the answer evidence, so the call still completes.
	tests = append(tests, orderCase{"Destroyed before ANSWER/local_answer", "s2_stasis_local_answer_sub.jsonl",
		func(tb testing.TB, s []recStep) []recStep {
			isAnswer := func(r recStep) bool { d, ok := r.ev.(*ari.Dial); return ok && d.DialStatus == "ANSWER" }
			i := slices.IndexFunc(s, isAnswer)
			j := slices.IndexFunc(s, isType("ChannelDestroyed"))
			if i < 0 || j < 0 {
				tb.Fatal("answer or destroyed not found")
			}
			// Drop everything between the answer and the end, then swap them.
			out := slices.Clone(s[:i])
			return append(out, s[j], s[i])
		}, events.Completed})

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := loadRecording(t, tt.file)
			rec.steps = tt.reorder(t, rec.steps)
			c, kinds := replay(rec)
			got := c.Record()
			if got.Outcome != tt.want {
				t.Errorf("outcome = %q, want %q (reason %q)", got.Outcome, tt.want, got.Reason)
			}
			if n := countKind(kinds, events.Ended); n != 1 {
				t.Errorf("%d ended changes, want 1: %v", n, kinds)
			}
		})
	}
}

// TestCallLateBusyAfterDestroyed documents a limit: with Local Busy() the only evidence
// is the Dial BUSY (cause 0); if Destroyed overtook it, the call is already final and the
// late Dial is ignored, so the outcome falls back to failed with the raw evidence.
func TestCallLateBusyAfterDestroyed(t *testing.T) {
	rec := loadRecording(t, "s2_stasis_local_busy.jsonl")
	rec.steps = moveStep(t, rec.steps, isFinalDial, isType("ChannelDestroyed"), true)
	c, _ := replay(rec)
	got := c.Record()
	if got.Outcome != events.Failed || got.DialStatus != "" || !strings.Contains(got.Reason, "cause 0 Unknown") {
		t.Errorf("got outcome %q dialstatus %q reason %q; want failed, no dialstatus, cause 0 evidence",
			got.Outcome, got.DialStatus, got.Reason)
	}
}

func countKind(kinds []events.Kind, k events.Kind) int {
	n := 0
	for _, x := range kinds {
		if x == k {
			n++
		}
	}
	return n
}

// --- synthetic events ------------------------------------------------------------

var t0 = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

const testID = "call-1"

// ev builds an ARI event about testID through DecodeEvent, as the websocket would.
// kv adds top-level fields (dialstatus, cause, soft, tech_cause, cause_txt).
func ev(tb testing.TB, typ string, ms int, state string, kv ...any) ari.Event {
	tb.Helper()
	ts := t0.Add(time.Duration(ms) * time.Millisecond).Format(ari.TimeLayout)
	ch := map[string]any{"id": testID, "name": "PJSIP/6001-00000001", "state": state, "creationtime": t0.Format(ari.TimeLayout)}
	m := map[string]any{"type": typ, "timestamp": ts, "application": "invokeari"}
	if typ == "Dial" {
		m["peer"] = ch
		m["dialstatus"] = ""
	} else {
		m["channel"] = ch
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := ari.DecodeEvent(b)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// action is one step of a synthetic scenario.
type action func(c *Call) []Change

func apply(e ari.Event) action { return func(c *Call) []Change { return c.Apply(e) } }
func cancelCall(reason string) action {
	return func(c *Call) []Change { c.Canceling(reason); return nil }
}
func lose(reason string, ms int) action {
	return func(c *Call) []Change { return c.Lost(reason, t0.Add(time.Duration(ms)*time.Millisecond)) }
}
func accept(ms int) action {
	return func(c *Call) []Change {
		return c.Accepted(ari.Channel{ID: testID, Name: "PJSIP/6001-00000001"}, t0.Add(time.Duration(ms)*time.Millisecond))
	}
}

func TestCallSynthetic(t *testing.T) {
	tests := []struct {
		name       string
		timeout    time.Duration
		steps      func(testing.TB) []action
		want       events.Outcome
		wantReason string
		wantKinds  []events.Kind
		wantCause  int
		wantRingMS *int64
		wantDurMS  *int64
	}{
		{
			name: "soft hangup flag is not a cause", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 1, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "ChannelHangupRequest", 500, "Ringing", "cause", 16, "soft", true)),
					apply(ev(tb, "ChannelDestroyed", 501, "Ringing", "cause", 0, "cause_txt", "Unknown"))}
			},
			want: events.Failed, wantReason: "module unload", wantKinds: kRang, wantCause: 0, wantRingMS: i64(500),
		},
		{
			name: "hard hangup cause fills a missing Destroyed cause", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelHangupRequest", 10, "Down", "cause", 17)),
					apply(ev(tb, "ChannelDestroyed", 11, "Down", "cause", 0, "cause_txt", "Unknown"))}
			},
			want: events.Busy, wantReason: "cause 17 User busy", wantKinds: kEnded, wantCause: 17,
		},
		{
			name: "old Asterisk ring timeout: cause 16 after the timeout is no_answer", timeout: 3 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelStateChange", 5, "Ringing")),
					apply(ev(tb, "ChannelDestroyed", 3005, "Ringing", "cause", 16, "cause_txt", "Normal Clearing"))}
			},
			want: events.NoAnswer, wantReason: "ring timeout", wantKinds: kRang, wantCause: 16, wantRingMS: i64(3000),
		},
		{
			name: "old Asterisk ring timeout: cause 0 after the timeout is no_answer", timeout: 3 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 5, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "ChannelDestroyed", 3000, "Ringing", "cause", 0, "cause_txt", "Unknown"))}
			},
			want: events.NoAnswer, wantReason: "ring timeout", wantKinds: kRang, wantRingMS: i64(2995),
		},
		{
			name: "cause 16 while ringing before the timeout is failed", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelStateChange", 5, "Ringing")),
					apply(ev(tb, "ChannelDestroyed", 3005, "Ringing", "cause", 16, "cause_txt", "Normal Clearing"))}
			},
			want: events.Failed, wantReason: "cause 16 Normal Clearing", wantKinds: kRang, wantCause: 16, wantRingMS: i64(3000),
		},
		{
			name: "cause 0 without ringing after the timeout is failed", timeout: 3 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelDestroyed", 4000, "Down", "cause", 0, "cause_txt", "Unknown"))}
			},
			want: events.Failed, wantReason: "no decisive evidence", wantKinds: kEnded,
		},
		{
			name: "SIP code decides when the cause does not", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelDestroyed", 40, "Down", "cause", 31, "cause_txt", "Normal, unspecified", "tech_cause", 486))}
			},
			want: events.Busy, wantReason: "SIP 486", wantKinds: kEnded, wantCause: 31,
		},
		{
			name: "unmapped cause is failed with the evidence", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "ChannelDestroyed", 40, "Down", "cause", 88, "cause_txt", "Incompatible destination", "tech_cause", 488))}
			},
			want: events.Failed, wantReason: "cause 88 Incompatible destination, SIP 488", wantKinds: kEnded, wantCause: 88,
		},
		{
			name: "Canceling after answer is completed", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 5, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "ChannelStateChange", 1005, "Up")), cancelCall("shutdown"),
					apply(ev(tb, "ChannelHangupRequest", 2000, "Up", "cause", 32, "soft", true)),
					apply(ev(tb, "ChannelDestroyed", 2001, "Up", "cause", 16, "cause_txt", "Normal Clearing"))}
			},
			want: events.Completed, wantReason: "answered", wantKinds: kAnsweredRing, wantCause: 16,
			wantRingMS: i64(1000), wantDurMS: i64(996),
		},
		{
			name: "Canceling after the callee's BUSY keeps busy", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 5, "Down", "dialstatus", "BUSY")), cancelCall("request"),
					apply(ev(tb, "ChannelDestroyed", 6, "Down", "cause", 17, "cause_txt", "User busy"))}
			},
			want: events.Busy, wantReason: "Dial BUSY", wantKinds: kEnded, wantCause: 17,
		},
		{
			name: "Canceling by shutdown while ringing", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 5, "Ringing", "dialstatus", "RINGING")), cancelCall("shutdown"),
					apply(ev(tb, "Dial", 100, "Ringing", "dialstatus", "NOANSWER")),
					apply(ev(tb, "ChannelDestroyed", 101, "Ringing", "cause", 16, "cause_txt", "Normal Clearing"))}
			},
			want: events.Canceled, wantReason: "canceled by shutdown", wantKinds: kRang, wantCause: 16, wantRingMS: i64(96),
		},
		{
			name: "explicit hangup by someone else while ringing is canceled", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 5, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "ChannelHangupRequest", 99, "Ringing", "cause", 32, "soft", true)),
					apply(ev(tb, "Dial", 100, "Ringing", "dialstatus", "NOANSWER")),
					apply(ev(tb, "ChannelDestroyed", 101, "Ringing", "cause", 16, "cause_txt", "Normal Clearing"))}
			},
			want: events.Canceled, wantReason: "explicit request outside", wantKinds: kRang, wantCause: 16, wantRingMS: i64(96),
		},
		{
			name: "StasisStart in state Down (create+dial) is not an answer", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "StasisStart", 1, "Down", "args", []string{})),
					apply(ev(tb, "ChannelDestroyed", 50, "Down", "cause", 21, "cause_txt", "Call Rejected"))}
			},
			want: events.Rejected, wantReason: "cause 21", wantKinds: kEnded, wantCause: 21,
		},
		{
			name: "StasisStart Up is the answer", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "StasisStart", 900, "Up", "args", []string{"outbound"})),
					apply(ev(tb, "ChannelDestroyed", 2900, "Up", "cause", 0, "cause_txt", "Unknown"))}
			},
			want: events.Completed, wantReason: "answered", wantKinds: []events.Kind{events.Initiated, events.KindAnswered, events.Ended},
			wantDurMS: i64(2000),
		},
		{
			name: "early media: PROGRESS then RINGING does not regress", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 10, "Down", "dialstatus", "PROGRESS")),
					apply(ev(tb, "Dial", 20, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "ChannelDestroyed", 1010, "Ringing", "cause", 19, "cause_txt", "User alerting, no answer"))}
			},
			want: events.NoAnswer, wantReason: "cause 19", wantKinds: []events.Kind{events.Initiated, events.Progress, events.Ended},
			wantCause: 19, wantRingMS: i64(1000),
		},
		{
			name: "ringing then progress", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 10, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "Dial", 20, "Ringing", "dialstatus", "PROGRESS")),
					apply(ev(tb, "ChannelDestroyed", 1010, "Ringing", "cause", 19, "cause_txt", "User alerting, no answer"))}
			},
			want: events.NoAnswer, wantReason: "cause 19", wantKinds: []events.Kind{events.Initiated, events.Ringing, events.Progress, events.Ended},
			wantCause: 19, wantRingMS: i64(1000),
		},
		{
			name: "lost while ringing is unknown without ring_ms", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 10, "Ringing", "dialstatus", "RINGING")), lose("channel gone after reconnect", 5000),
					apply(ev(tb, "ChannelDestroyed", 6000, "Ringing", "cause", 17, "cause_txt", "User busy"))}
			},
			want: events.Unknown, wantReason: "tracking lost: channel gone after reconnect", wantKinds: kRang,
		},
		{
			name: "lost after answer is unknown, says it was answered", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{accept(0), apply(ev(tb, "Dial", 10, "Ringing", "dialstatus", "RINGING")),
					apply(ev(tb, "Dial", 1010, "Up", "dialstatus", "ANSWER")), lose("Asterisk restarted", 5000)}
			},
			want: events.Unknown, wantReason: "was answered", wantKinds: kAnsweredRing, wantRingMS: i64(1000),
		},
		{
			name: "events before the REST reply, Accepted after the end", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				return []action{apply(ev(tb, "Dial", 1, "Down")), apply(ev(tb, "ChannelDestroyed", 2, "Down", "cause", 0, "cause_txt", "Unknown")), accept(3)}
			},
			want: events.Failed, wantReason: "cause 0", wantKinds: kEnded,
		},
		{
			name: "events for another channel are ignored", timeout: 30 * time.Second,
			steps: func(tb testing.TB) []action {
				other := ev(tb, "ChannelDestroyed", 2, "Down", "cause", 17, "cause_txt", "User busy")
				other.(*ari.ChannelDestroyed).Channel.ID = "someone-else"
				return []action{accept(0), apply(other), apply(ev(tb, "ChannelDestroyed", 9, "Down", "cause", 21, "cause_txt", "Call Rejected"))}
			},
			want: events.Rejected, wantReason: "cause 21", wantKinds: kEnded, wantCause: 21,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCall(testID, "pbx1", tt.timeout)
			var kinds []events.Kind
			for _, a := range tt.steps(t) {
				for _, ch := range a(c) {
					kinds = append(kinds, ch.Kind)
				}
			}
			got := c.Record()
			if !c.Final() {
				t.Fatalf("not final: %+v", got)
			}
			if got.Outcome != tt.want {
				t.Errorf("outcome = %q, want %q (reason %q)", got.Outcome, tt.want, got.Reason)
			}
			if !strings.Contains(got.Reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", got.Reason, tt.wantReason)
			}
			if !slices.Equal(kinds, tt.wantKinds) {
				t.Errorf("changes = %v, want %v", kinds, tt.wantKinds)
			}
			if got.Cause != tt.wantCause {
				t.Errorf("cause = %d, want %d", got.Cause, tt.wantCause)
			}
			checkMS(t, "ring_ms", got.RingMS, tt.wantRingMS)
			checkMS(t, "duration_ms", got.DurationMS, tt.wantDurMS)
		})
	}
}

func TestCallOriginateFailed(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		message    string
		refine     events.Outcome
		want       events.Outcome
		wantReason string
	}{
		{"not reached", 0, "dial tcp 127.0.0.1:8088: connection refused", "", events.Failed, "ARI not reached: dial tcp"},
		{"allocation failed", 500, "Allocation failed", "", events.Failed, "ARI refused originate: 500 Allocation failed"},
		{"no such endpoint", 500, "Allocation failed", events.InvalidNumber, events.InvalidNumber, "500 Allocation failed; endpoint lookup"},
		{"offline endpoint", 500, "Allocation failed", events.Unavailable, events.Unavailable, "500 Allocation failed; endpoint lookup"},
		{"refine to another outcome is ignored", 500, "Allocation failed", events.Busy, events.Failed, "500 Allocation failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCall(testID, "pbx1", 30*time.Second)
			chs := c.OriginateFailed(tt.status, tt.message, t0)
			if len(chs) != 1 || chs[0].Kind != events.Ended || !chs[0].At.Equal(t0) {
				t.Fatalf("changes = %v, want one ended at %v", chs, t0)
			}
			if tt.refine != "" {
				c.RefineFailure(tt.refine, "endpoint lookup")
			}
			got := c.Record()
			if got.Outcome != tt.want || !strings.Contains(got.Reason, tt.wantReason) {
				t.Errorf("got %q %q, want %q containing %q", got.Outcome, got.Reason, tt.want, tt.wantReason)
			}
			if again := c.OriginateFailed(500, "x", t0); again != nil {
				t.Errorf("second OriginateFailed = %v, want nil", again)
			}
		})
	}
	// RefineFailure only applies to a call ARI refused.
	c := NewCall(testID, "pbx1", 30*time.Second)
	c.Accepted(ari.Channel{ID: testID}, t0)
	c.Apply(ev(t, "ChannelDestroyed", 10, "Down", "cause", 0, "cause_txt", "Unknown"))
	c.RefineFailure(events.Unavailable, "endpoint offline")
	if got := c.Record().Outcome; got != events.Failed {
		t.Errorf("RefineFailure on a destroyed call changed outcome to %q", got)
	}
}

func TestCallRecordWhileAnswered(t *testing.T) {
	c := NewCall(testID, "pbx1", 30*time.Second)
	c.Accepted(ari.Channel{ID: testID, Name: "PJSIP/6001-00000001", CreationTime: ari.Time{Time: t0}}, t0.Add(time.Second))
	if got := c.Record(); got.State != events.StateDialing || got.Outcome != "" || !got.CreatedAt.Equal(t0) {
		t.Errorf("after Accepted: state %q outcome %q created %v; want dialing, none, %v", got.State, got.Outcome, got.CreatedAt, t0)
	}
	c.Apply(ev(t, "Dial", 10, "Ringing", "dialstatus", "RINGING"))
	c.Apply(ev(t, "Dial", 1010, "Up", "dialstatus", "ANSWER"))
	got := c.Record()
	if got.State != events.StateAnswered || got.Outcome != events.Answered || got.DurationMS != nil || got.EndedAt != nil {
		t.Errorf("answered: %+v", got)
	}
	checkMS(t, "ring_ms", got.RingMS, i64(1000))
	if c.Final() || !c.Answered() {
		t.Errorf("Final %v Answered %v, want false true", c.Final(), c.Answered())
	}
}

// --- property test ---------------------------------------------------------------

// randomAction draws an arbitrary step: any event type, state, dial status, cause and
// soft flag, or one of the App's calls.
func randomAction(tb testing.TB, r *rand.Rand, ms int) action {
	states := []string{"Down", "Ringing", "Up", "Ring", "Busy", ""}
	dials := []string{"", "RINGING", "PROGRESS", "ANSWER", "BUSY", "NOANSWER", "CONGESTION", "CHANUNAVAIL", "CANCEL"}
	causes := []int{0, 1, 16, 17, 18, 19, 20, 21, 34, 88}
	st := states[r.IntN(len(states))]
	switch r.IntN(12) {
	case 0, 1, 2:
		return apply(ev(tb, "Dial", ms, st, "dialstatus", dials[r.IntN(len(dials))]))
	case 3:
		return apply(ev(tb, "ChannelStateChange", ms, st))
	case 4:
		return apply(ev(tb, "ChannelHangupRequest", ms, st, "cause", causes[r.IntN(len(causes))], "soft", r.IntN(2) == 0))
	case 5:
		return apply(ev(tb, "ChannelDestroyed", ms, st, "cause", causes[r.IntN(len(causes))], "tech_cause", []int{0, 486, 480, 603}[r.IntN(4)]))
	case 6:
		return apply(ev(tb, "StasisStart", ms, st))
	case 7:
		return apply(ev(tb, "ChannelVarset", ms, st, "variable", "X", "value", "1"))
	case 8:
		return accept(ms)
	case 9:
		return cancelCall("request")
	case 10:
		if r.IntN(4) == 0 {
			return lose("random", ms)
		}
		return apply(ev(tb, "StasisEnd", ms, st))
	default:
		if r.IntN(6) == 0 {
			return func(c *Call) []Change { return c.OriginateFailed(500, "Allocation failed", t0) }
		}
		return apply(ev(tb, "ChannelDialplan", ms, st))
	}
}

func TestCallProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	kindRank := map[events.Kind]int{events.Initiated: 0, events.Ringing: 1, events.Progress: 2, events.KindAnswered: 3, events.Ended: 4}
	for run := 0; run < 3000; run++ {
		c := NewCall(testID, "pbx1", time.Duration(r.IntN(5))*time.Second)
		n := 1 + r.IntN(14)
		var kinds []events.Kind
		var finalRec *events.Call
		prevRank := -1
		for i := 0; i < n; i++ {
			a := randomAction(t, r, i*(1+r.IntN(2000)))
			for _, ch := range a(c) {
				kinds = append(kinds, ch.Kind)
			}
			rec := c.Record()
			rank := stateRank(rec.State)
			if rank < prevRank {
				t.Fatalf("run %d: state regressed to %q after %v", run, rec.State, kinds)
			}
			prevRank = rank
			if finalRec != nil && !equalRecord(*finalRec, rec) {
				t.Fatalf("run %d: final record changed:\n was %+v\n now %+v", run, *finalRec, rec)
			}
			if c.Final() && finalRec == nil {
				finalRec = &rec
				if rec.Outcome == "" || rec.Outcome == events.Answered || rec.State != events.StateEnded || rec.EndedAt == nil {
					t.Fatalf("run %d: bad final record %+v", run, rec)
				}
				if (rec.Outcome == events.Completed) != (rec.DurationMS != nil) {
					t.Fatalf("run %d: completed %v but duration_ms %v", run, rec.Outcome, fmtMS(rec.DurationMS))
				}
			}
		}
		if got := countKind(kinds, events.Ended); got > 1 || (got == 1) != c.Final() {
			t.Fatalf("run %d: %d ended changes, final %v: %v", run, got, c.Final(), kinds)
		}
		for i := 1; i < len(kinds); i++ {
			if kindRank[kinds[i]] <= kindRank[kinds[i-1]] {
				t.Fatalf("run %d: changes out of order or repeated: %v", run, kinds)
			}
		}
	}
}

func equalRecord(a, b events.Call) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// --- benchmark -------------------------------------------------------------------

// BenchmarkApply replays a recorded busy call and a recorded answered call per
// iteration (including NewCall, Accepted and Record) and reports events/s.
func BenchmarkApply(b *testing.B) {
	var recs []recording
	total := 0
	for _, f := range []string{"s2_stasis_pjsip_busy486.jsonl", "s2_stasis_pjsip_answer_sub.jsonl"} {
		rec := loadRecording(b, f)
		recs = append(recs, rec)
		total += len(rec.steps)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, rec := range recs {
			c := NewCall(rec.id, "pbx1", rec.timeout)
			for _, s := range rec.steps {
				switch {
				case s.accept != nil:
					c.Accepted(*s.accept, s.at)
				case s.ev != nil:
					c.Apply(s.ev)
				}
			}
			if !c.Final() {
				b.Fatal("call not final")
			}
			_ = c.Record()
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestCallRecordingsReaderFilter replays every recording twice, with all of the call's
// events and without the types the websocket reader skips (silentTypes, in
// linkHandler.WantsEvent): the records must be identical, so those frames carry no
// evidence. (The recordings' channel ids are Asterisk's, with a '.', so WantsEvent's
// id rule, which is about our own ids, is left out here.)
func TestCallRecordingsReaderFilter(t *testing.T) {
	h := &linkHandler{}
	skipped := 0
	for _, file := range recordedScenarios(t) {
		rec := loadRecording(t, file)
		full, fullKinds := replay(rec)
		kept := rec
		kept.steps = nil
		for _, s := range rec.steps {
			if s.ev != nil && !h.WantsEvent(s.ev.EventType(), "our-id") {
				skipped++
				continue
			}
			kept.steps = append(kept.steps, s)
		}
		filtered, filteredKinds := replay(kept)
		a, _ := json.Marshal(full.Record())
		b, _ := json.Marshal(filtered.Record())
		if string(a) != string(b) || !slices.Equal(fullKinds, filteredKinds) {
			t.Errorf("%s: with every event %s %v\nwith the reader's filter %s %v", file, a, fullKinds, b, filteredKinds)
		}
	}
	if skipped == 0 {
		t.Fatal("the filter skipped no event of any recording: nothing was compared")
	}
	t.Logf("%d events skipped across the recordings", skipped)
}
