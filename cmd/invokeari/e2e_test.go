package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/invokeari/invokeari/events"
)

// TestOutcomesEndToEnd places one call per outcome of SPEC §4 and per wait mode through
// POST /v2/invokeARI against the simulator, and checks the envelope, the call record,
// the HTTP status and the single `ended` event in the JetStream stream.
func TestOutcomesEndToEnd(t *testing.T) {
	e := startEnv(t, "")
	type want struct {
		outcome   events.Outcome // final outcome (wait=end, and wait=answer when not answered)
		cause     int
		sipCode   int
		ariStatus int // response.http_code
		answered  bool
	}
	cases := []struct {
		name string
		d    string
		t    string
		want want
	}{
		{"answered then completed", "PJSIP/answer", "", want{events.Completed, 0, 0, 200, true}}, // remote BYE: cause 0 recorded
		{"completed by our dialplan", "PJSIP/answerwait", "", want{events.Completed, 16, 0, 200, true}},
		{"busy", "PJSIP/busy", "", want{events.Busy, 17, 486, 200, false}},
		{"no answer: ring timeout", "PJSIP/ring", "1", want{events.NoAnswer, 19, 480, 200, false}}, // Asterisk reports 480 on its own timeout
		{"no answer: 480", "PJSIP/unavail", "", want{events.NoAnswer, 19, 480, 200, false}},
		{"rejected: 603", "PJSIP/decline", "", want{events.Rejected, 21, 603, 200, false}},
		{"invalid number: 404", "PJSIP/notfound", "", want{events.InvalidNumber, 1, 404, 200, false}},
		{"invalid number: no such endpoint", "PJSIP/nosuch", "", want{events.InvalidNumber, 0, 0, 500, false}},
		{"unavailable: offline", "PJSIP/offline", "", want{events.Unavailable, 0, 0, 500, false}},
		{"unavailable: Local CHANUNAVAIL", "Local/unavail@sim", "", want{events.Unavailable, 20, 0, 200, false}},
		{"congestion: 503", "PJSIP/congest", "", want{events.Congestion, 34, 503, 200, false}},
		{"busy: Local Busy()", "Local/busy@sim", "", want{events.Busy, 0, 0, 200, false}},
		{"failed: Local no such context", "Local/nope@nocontext", "", want{events.Failed, 0, 0, 200, false}},
	}
	for _, wait := range []string{"accepted", "answer", "end"} {
		for i, tc := range cases {
			t.Run(wait+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				id := fmt.Sprintf("e2e-%s-%02d", wait, i)
				form := url.Values{"d": {tc.d}, "c": {"confirmcode"}, "e": {"s"}, "wait": {wait}, "id": {id},
					"i": {`"InvokeARI" <+15550001111>`}, "v": {"CONFCODE=4711"}}
				if tc.t != "" {
					form.Set("t", tc.t)
				}
				r := e.post(form, nil)
				if r.Status != http.StatusOK {
					t.Fatalf("HTTP status %d, want 200: %s", r.Status, r.Raw)
				}
				env := r.Envelope
				if env.Call == nil || env.Call.ID != id {
					t.Fatalf("call = %+v, want id %s", env.Call, id)
				}
				if env.Response.HTTPCode != tc.want.ariStatus {
					t.Errorf("response.http_code = %d, want %d", env.Response.HTTPCode, tc.want.ariStatus)
				}
				if env.Debug == nil || len(env.Debug.Transcript) == 0 {
					t.Errorf("no debug transcript")
				}
				refused := tc.want.ariStatus != 200
				switch {
				case wait == "accepted" && !refused:
					if env.Status != "success" || !env.Response.Success {
						t.Errorf("accepted originate: status %q success %v, want success/true", env.Status, env.Response.Success)
					}
					if !strings.Contains(string(env.Response.Response), `"id":"`+id+`"`) {
						t.Errorf("response.response is not ARI's channel: %s", env.Response.Response)
					}
				case wait == "answer" && tc.want.answered:
					if env.Call.Outcome != "" && env.Call.Outcome != events.Answered && env.Call.Outcome != events.Completed {
						t.Errorf("outcome = %q, want answered", env.Call.Outcome)
					}
					if env.Call.AnsweredAt == nil || env.Status != "success" {
						t.Errorf("answered call: answered_at %v status %q", env.Call.AnsweredAt, env.Status)
					}
				default:
					if env.Call.Outcome != tc.want.outcome {
						t.Errorf("outcome = %q (reason %q), want %q", env.Call.Outcome, env.Call.Reason, tc.want.outcome)
					}
					wantStatus := "fail"
					if tc.want.answered {
						wantStatus = "success"
					}
					if env.Status != wantStatus || env.Response.Success != (wantStatus == "success") {
						t.Errorf("status %q success %v, want %q", env.Status, env.Response.Success, wantStatus)
					}
					if env.Call.Cause != tc.want.cause || env.Call.SIPCode != tc.want.sipCode {
						t.Errorf("cause %d sip %d, want %d/%d", env.Call.Cause, env.Call.SIPCode, tc.want.cause, tc.want.sipCode)
					}
					if env.Call.EndedAt == nil {
						t.Errorf("ended call without ended_at")
					}
					if tc.want.outcome == events.Completed && (env.Call.DurationMS == nil || *env.Call.DurationMS <= 0) {
						t.Errorf("completed call without duration_ms: %v", env.Call.DurationMS)
					}
				}
				// Whatever the wait, exactly one `ended` event carries the final outcome.
				evs := e.streamEvents(t, events.Subject(id, events.Ended), 1)
				if evs[0].Outcome != tc.want.outcome || evs[0].Call == nil || evs[0].Call.Outcome != tc.want.outcome {
					t.Errorf("ended event outcome %q (call %+v), want %q", evs[0].Outcome, evs[0].Call, tc.want.outcome)
				}
			})
		}
	}
}

// TestEventsSequence checks one answered call's events: initiated, ringing, answered,
// ended, with increasing seq and the request carried without secrets.
func TestEventsSequence(t *testing.T) {
	e := startEnv(t, "")
	id := "seq-answer-1"
	r := e.post(url.Values{"d": {"PJSIP/answerwait"}, "c": {"confirmcode"}, "e": {"s"}, "wait": {"end"}, "id": {id},
		"ariuser": {testARIUser}, "aripass": {testARIPass}}, nil)
	if r.Status != 200 || r.Envelope.Call.Outcome != events.Completed {
		t.Fatalf("reply %d outcome %v: %s", r.Status, r.Envelope.Call, r.Raw)
	}
	evs := e.streamEvents(t, events.SubjectPrefix+"."+id+".>", 4)
	var kinds []string
	for i, ev := range evs {
		kinds = append(kinds, string(ev.Event))
		if ev.Seq != uint64(i+1) {
			t.Errorf("event %d seq = %d", i, ev.Seq)
		}
		if ev.Request == nil || ev.Request.Destination != "PJSIP/answerwait" || ev.Key != "tester" {
			t.Errorf("event %d request %+v key %q", i, ev.Request, ev.Key)
		}
	}
	if got := strings.Join(kinds, ","); got != "initiated,ringing,answered,ended" {
		t.Errorf("events = %s", got)
	}
	if n := e.requestsTo("POST", "/ari/channels/"+id+"/continue"); n != 1 {
		t.Errorf("continue sent %d times, want 1", n)
	}
}

// TestIdempotency: a retried request during ringing and after the end returns the same
// call and dials once; the same id with other parameters is a 409.
func TestIdempotency(t *testing.T) {
	e := startEnv(t, "")
	id := "idem-1"
	form := url.Values{"d": {"PJSIP/decline"}, "c": {"confirmcode"}, "e": {"s"}, "id": {id}, "wait": {"accepted"}}
	first := e.post(form, nil)
	if first.Status != 200 {
		t.Fatalf("first: %d %s", first.Status, first.Raw)
	}
	form.Set("wait", "end") // a retry may wait differently
	during := e.post(form, nil)
	after := e.post(form, nil)
	for _, r := range []reply{during, after} {
		if r.Status != 200 || r.Envelope.Call == nil || r.Envelope.Call.ID != id || r.Envelope.Call.Outcome != events.Rejected {
			t.Errorf("retry: %d %s", r.Status, r.Raw)
		}
		if !strings.Contains(r.Raw, "idempotent repeat") {
			t.Errorf("retry transcript does not say it is a repeat: %s", r.Raw)
		}
	}
	hdr := e.post(url.Values{"d": {"PJSIP/decline"}, "c": {"confirmcode"}, "e": {"s"}, "wait": {"end"}},
		map[string]string{"Idempotency-Key": id})
	if hdr.Status != 200 || hdr.Envelope.Call.ID != id {
		t.Errorf("Idempotency-Key header retry: %d %s", hdr.Status, hdr.Raw)
	}
	if n := e.requestsTo("POST", "/ari/channels"); n != 1 {
		t.Errorf("simulator saw %d POST /channels, want 1", n)
	}
	form.Set("d", "PJSIP/busy")
	conflict := e.post(form, nil)
	if conflict.Status != http.StatusConflict || conflict.Envelope.Error == nil || conflict.Envelope.Status != "fail" {
		t.Errorf("same id, other destination: %d %s", conflict.Status, conflict.Raw)
	}
	e.streamEvents(t, events.Subject(id, events.Ended), 1)
}

// TestARIErrorIs502: when ARI refuses the originate for a reason that is not a dial
// outcome (here 409: a channel with that id already exists, created behind our back),
// the reply is 502 with ARI's status and message, and the call still ends once (failed).
func TestARIErrorIs502(t *testing.T) {
	e := startEnv(t, "")
	id := "taken-id-1"
	q := url.Values{"endpoint": {"PJSIP/ring"}, "app": {"someone-else"}, "channelId": {id}, "timeout": {"5"}}
	req, err := http.NewRequest(http.MethodPost, e.sim.URL()+"/channels?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(testARIUser, testARIPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("direct originate: %d", resp.StatusCode)
	}
	r := e.post(url.Values{"d": {"PJSIP/busy"}, "c": {"confirmcode"}, "e": {"s"}, "id": {id}}, nil)
	if r.Status != http.StatusBadGateway || r.Envelope.Error == nil || r.Envelope.Error.Code != "ari_error" {
		t.Fatalf("reply %d: %s", r.Status, r.Raw)
	}
	if r.Envelope.Response.HTTPCode != 409 || !strings.Contains(string(r.Envelope.Response.Response), "already exists") {
		t.Errorf("response = %d %s, want ARI's 409 body", r.Envelope.Response.HTTPCode, r.Envelope.Response.Response)
	}
	evs := e.streamEvents(t, events.Subject(id, events.Ended), 1)
	if evs[0].Outcome != events.Failed {
		t.Errorf("ended outcome %q, want failed", evs[0].Outcome)
	}
}
