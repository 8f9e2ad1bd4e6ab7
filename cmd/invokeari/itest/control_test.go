package itest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/webhook"
)

// ctlReply is a call-control reply (DELETE /v2/calls/{id}, invokeari.hangup).
type ctlReply struct {
	Status int
	Env    struct {
		Call   *events.Call `json:"call"`
		Hangup *struct {
			Confirmed bool `json:"confirmed"`
		} `json:"hangup"`
	}
	Raw string
	Err error
}

// summary is what the suite's rows show of a hangup reply.
func (r ctlReply) summary() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	c := r.Env.Call
	if c == nil || r.Env.Hangup == nil {
		return fmt.Sprintf("%d without call/hangup", r.Status)
	}
	return fmt.Sprintf("%d confirmed=%v %s %s by=%s", r.Status, r.Env.Hangup.Confirmed, c.State, c.Outcome, c.HangupBy)
}

// hangup asks the daemon to hang call id up through door (http: DELETE /v2/calls/{id};
// nats: invokeari.hangup).
func (d *daemon) hangup(door, id string) ctlReply {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var r ctlReply
	var body []byte
	switch door {
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, d.base+"/v2/calls/"+id, nil)
		if err != nil {
			return ctlReply{Err: err}
		}
		r.Status, body, r.Err = d.doHTTP(req)
	case "nats":
		r.Status, body, r.Err = d.doNATS(ctx, natsdoor.HangupSubject, map[string]string{"id": id})
	default:
		return ctlReply{Err: fmt.Errorf("door %q", door)}
	}
	if r.Err != nil {
		return ctlReply{Err: r.Err}
	}
	r.Raw = string(body)
	if err := json.Unmarshal(body, &r.Env); err != nil {
		r.Err = fmt.Errorf("decode reply: %w: %s", err, body)
	}
	return r
}

// reached reports whether call id has an event of kind on the stream.
func (s *stream) reached(id string, kind events.Kind) bool {
	return slices.ContainsFunc(s.byID[id], func(ev events.Event) bool { return ev.Event == kind })
}

// TestCallControl hangs up real calls on the kit: a ringing Local and SIPp call (→
// canceled) and an answered Local call (→ completed, hangup_by api, a duration), each
// asked twice (the second reply is the same ended call), through DELETE /v2/calls/{id}
// and invokeari.hangup; the stream has exactly one `ended` per call.
func TestCallControl(t *testing.T) {
	d := startDaemon(t, "itest-control")
	st := d.openStream()
	cases := []struct {
		name, door string
		call       call
		reach      events.Kind // the state the call is in when hung up
		outcome    events.Outcome
	}{
		{"DELETE ringing Local/ring", "http", call{ID: "ctl-ringL", D: "Local/ring@sim", T: "30", Wait: "accepted"}, events.Ringing, events.Canceled},
		{"hangup ringing sipp-noanswer", "nats", call{ID: "ctl-ringS", D: "PJSIP/sipp-noanswer", T: "30", Wait: "accepted"}, events.Ringing, events.Canceled},
		{"DELETE answered Local/answerlong", "http", call{ID: "ctl-ansL", D: "Local/answerlong@sim", T: "30", Wait: "answer"}, events.KindAnswered, events.Completed},
	}
	var ps []*placed
	for _, tc := range cases {
		c := tc.call
		c.C, c.E, c.Door = "sink", "s", "http"
		ps = append(ps, &placed{call: c})
	}
	placeAll(d, ps, 30*time.Second)
	var ids []string
	for _, p := range ps {
		if p.r.Err != nil || p.r.Status != 200 || p.r.Env.Status != "success" {
			t.Fatalf("%s not placed: %d %v %s", p.call.ID, p.r.Status, p.r.Err, p.r.Raw)
		}
		ids = append(ids, p.call.ID)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, tc := range cases {
		for !st.reached(tc.call.ID, tc.reach) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %s event within 20s", tc.call.ID, tc.reach)
			}
			st.readSome(t, 200*time.Millisecond)
		}
	}
	for _, tc := range cases {
		start := time.Now()
		r := d.hangup(tc.door, tc.call.ID)
		t.Logf("%s [%s]: replied in %v", tc.name, tc.door, time.Since(start).Round(time.Millisecond))
		want := fmt.Sprintf("200 confirmed=true ended %s by=api", tc.outcome)
		check(t, tc.name+": reply", tc.door, want, r.summary())
		if tc.outcome == events.Completed {
			var dur *int64
			if r.Env.Call != nil {
				dur = r.Env.Call.DurationMS
			}
			checkOK(t, tc.name+": duration_ms", tc.door, "> 0", fmtMS(dur), dur != nil && *dur > 0)
		}
		again := d.hangup(tc.door, tc.call.ID)
		sameEnd := "other ended_at"
		if r.Env.Call != nil && again.Env.Call != nil && again.Env.Call.EndedAt != nil && r.Env.Call.EndedAt != nil &&
			again.Env.Call.EndedAt.Equal(*r.Env.Call.EndedAt) {
			sameEnd = "same ended_at"
		}
		check(t, tc.name+": again", tc.door, want+", same ended_at", again.summary()+", "+sameEnd)
	}
	st.readUntil(t, ids, 2*time.Second, 30*time.Second)
	for _, tc := range cases {
		ev := st.ended(tc.call.ID)
		gotEnd := "no ended event"
		if ev != nil {
			by := ""
			if ev.Call != nil {
				by = ev.Call.HangupBy
			}
			gotEnd = fmt.Sprintf("%s by=%s", ev.Outcome, by)
		}
		check(t, tc.name+": ended", "stream", fmt.Sprintf("%s by=api", tc.outcome), gotEnd)
		check(t, tc.name+": stream", "stream", sound, st.integrity(tc.call.ID))
	}
}

// callbackReceiver is a status callback receiver that checks every request's signature
// and event id against its body.
type callbackReceiver struct {
	srv    *httptest.Server
	secret []byte

	mu      sync.Mutex
	got     []string // "<event>:<Invokeari-Event-Id>" in arrival order
	bad     []string // why a request was refused
	ended   *events.Event
	changed chan struct{}
}

func newCallbackReceiver(t *testing.T, secret string) *callbackReceiver {
	r := &callbackReceiver{secret: []byte(secret), changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		defer func() { close(r.changed); r.changed = make(chan struct{}) }()
		var ev events.Event
		err := webhook.Verify(r.secret, req.Header.Get(webhook.SignatureHeader), body, time.Now(), webhook.DefaultMaxAge)
		if err == nil {
			err = json.Unmarshal(body, &ev)
		}
		eid := req.Header.Get(webhook.EventIDHeader)
		if err == nil && eid != events.MsgID(ev.ID, ev.Seq) {
			err = fmt.Errorf("event id header %q for %s.%d", eid, ev.ID, ev.Seq)
		}
		if err != nil {
			r.bad = append(r.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.got = append(r.got, fmt.Sprintf("%s:%s", ev.Event, eid))
		if ev.Event == events.Ended {
			r.ended = &ev
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// waitEnded waits until the receiver got an `ended` callback, or limit passes.
func (r *callbackReceiver) waitEnded(limit time.Duration) bool {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		r.mu.Lock()
		done, ch := r.ended != nil, r.changed
		r.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// TestCallbacks places one real call (Local/answer@sim) with a status callback for
// initiated, ringing, answered and ended to a receiver in the test: the four arrive in
// order, each once, with Invokeari-Event-Id <id>.<seq> matching the stream's events, every
// signature valid under the key's secret (from the env), and `ended` says completed.
func TestCallbacks(t *testing.T) {
	const secret = "itest-Hook-Secret-7a31"
	rcv := newCallbackReceiver(t, secret)
	d := startDaemonWith(t, "itest-callbacks", "    webhooks: {allow: [\"127.0.0.1\"], secret_env: ITEST_WEBHOOK_SECRET}\n",
		"ITEST_WEBHOOK_SECRET="+secret)
	st := d.openStream()
	kinds := []events.Kind{events.Initiated, events.Ringing, events.KindAnswered, events.Ended}
	var names []string
	for _, k := range kinds {
		names = append(names, string(k))
	}
	p := &placed{call: call{ID: "cb-answer", D: "Local/answer@sim", C: "sink", E: "s", Wait: "end", Door: "http",
		Extra: map[string]string{"callback": rcv.srv.URL + "/status", "callback_events": strings.Join(names, ",")}}}
	placeAll(d, []*placed{p}, 30*time.Second)
	if p.r.Err != nil || p.r.Status != 200 || p.r.Env.Call == nil {
		t.Fatalf("originate: %d %v %s", p.r.Status, p.r.Err, p.r.Raw)
	}
	id := p.call.ID
	st.readUntil(t, []string{id}, time.Second, 30*time.Second)
	var want []string
	for _, ev := range st.byID[id] {
		if slices.Contains(kinds, ev.Event) {
			want = append(want, fmt.Sprintf("%s:%s", ev.Event, events.MsgID(ev.ID, ev.Seq)))
		}
	}
	start := time.Now()
	delivered := rcv.waitEnded(20 * time.Second)
	t.Logf("ended callback %v after the stream's ended was read (delivered=%v)", time.Since(start).Round(time.Millisecond), delivered)
	// A late duplicate would come within the retry's first backoff; read the stream on
	// meanwhile so nothing is guessed from a sleep.
	st.readSome(t, 1500*time.Millisecond)
	rcv.mu.Lock()
	gotSeq, bad, ended := slices.Clone(rcv.got), slices.Clone(rcv.bad), rcv.ended
	rcv.mu.Unlock()
	check(t, "callbacks Local/answer: kinds", "http", strings.Join(names, ","), kindsOf(want))
	check(t, "callbacks Local/answer: sequence", "http", strings.Join(want, " "), strings.Join(gotSeq, " "))
	check(t, "callbacks Local/answer: signatures", "http", fmt.Sprintf("%d valid, 0 bad", len(want)),
		strings.TrimSpace(fmt.Sprintf("%d valid, %d bad %s", len(gotSeq), len(bad), strings.Join(bad, "; "))))
	gotEnd := "no ended callback"
	if ended != nil {
		gotEnd = string(ended.Outcome)
	}
	check(t, "callbacks Local/answer: ended outcome", "http", string(events.Completed), gotEnd)
	check(t, "callbacks Local/answer: stream", "stream", sound, st.integrity(id))
}

// kindsOf lists the kinds of "<kind>:<event id>" entries.
func kindsOf(entries []string) string {
	var out []string
	for _, e := range entries {
		k, _, _ := strings.Cut(e, ":")
		out = append(out, k)
	}
	return strings.Join(out, ",")
}
