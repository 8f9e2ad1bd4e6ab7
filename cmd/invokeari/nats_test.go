package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
)

// TestNATSOutcomes places one call per outcome over NATS request/reply on
// invokeari.originate (wait=answer and wait=end) and checks the envelope, the
// Invokeari-Status header and the single `ended` event in INVOKEARI_CALLS.
func TestNATSOutcomes(t *testing.T) {
	e := startEnv(t, "")
	nc := natsClient(t, e.nats)
	cases := []struct {
		name      string
		d         string
		t         string
		outcome   events.Outcome
		cause     int
		sipCode   int
		ariStatus int
		answered  bool
	}{
		{"completed", "PJSIP/answerwait", "", events.Completed, 16, 0, 200, true},
		{"busy", "PJSIP/busy", "", events.Busy, 17, 486, 200, false},
		{"no_answer", "PJSIP/ring", "1", events.NoAnswer, 19, 480, 200, false},
		{"rejected", "PJSIP/decline", "", events.Rejected, 21, 603, 200, false},
		{"invalid_number", "PJSIP/notfound", "", events.InvalidNumber, 1, 404, 200, false},
		{"unavailable", "PJSIP/offline", "", events.Unavailable, 0, 0, 500, false},
		{"congestion", "PJSIP/congest", "", events.Congestion, 34, 503, 200, false},
		{"failed", "Local/nope@nocontext", "", events.Failed, 0, 0, 200, false},
	}
	for _, wait := range []string{"answer", "end"} {
		for i, tc := range cases {
			t.Run(wait+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				id := fmt.Sprintf("nats-%s-%02d", wait, i)
				f := map[string]string{"d": tc.d, "c": "confirmcode", "e": "s", "wait": wait, "id": id,
					"i": `"InvokeARI" <+15550001111>`, "v": "CONFCODE=4711"}
				if tc.t != "" {
					f["t"] = tc.t
				}
				r := natsReq(t, nc, jsonBody(t, f), nil)
				if r.Status != http.StatusOK {
					t.Fatalf("%s = %d, want 200: %s", natsdoor.StatusHeader, r.Status, r.Raw)
				}
				env := r.Envelope
				if env.Call == nil || env.Call.ID != id {
					t.Fatalf("call = %+v, want id %s", env.Call, id)
				}
				if env.Response.HTTPCode != tc.ariStatus {
					t.Errorf("response.http_code = %d, want %d", env.Response.HTTPCode, tc.ariStatus)
				}
				if env.Debug == nil || len(env.Debug.Transcript) == 0 {
					t.Errorf("no debug transcript")
				}
				wantStatus := map[bool]string{true: "success", false: "fail"}[tc.answered]
				if env.Status != wantStatus || env.Response.Success != tc.answered {
					t.Errorf("status %q success %v, want %q", env.Status, env.Response.Success, wantStatus)
				}
				if wait == "answer" && tc.answered {
					if env.Call.AnsweredAt == nil {
						t.Errorf("answered call without answered_at")
					}
				} else {
					if env.Call.Outcome != tc.outcome {
						t.Errorf("outcome = %q (reason %q), want %q", env.Call.Outcome, env.Call.Reason, tc.outcome)
					}
					if env.Call.Cause != tc.cause || env.Call.SIPCode != tc.sipCode {
						t.Errorf("cause %d sip %d, want %d/%d", env.Call.Cause, env.Call.SIPCode, tc.cause, tc.sipCode)
					}
					if env.Call.EndedAt == nil {
						t.Errorf("ended call without ended_at")
					}
				}
				evs := e.streamEvents(t, events.Subject(id, events.Ended), 1)
				if evs[0].Outcome != tc.outcome || evs[0].Call == nil || evs[0].Call.Outcome != tc.outcome {
					t.Errorf("ended event outcome %q (call %+v), want %q", evs[0].Outcome, evs[0].Call, tc.outcome)
				}
				if evs[0].Request == nil || evs[0].Request.Door != "nats" || evs[0].Key != "tester" {
					t.Errorf("ended event request %+v key %q, want door nats key tester", evs[0].Request, evs[0].Key)
				}
			})
		}
	}
}

// TestNATSEnvelopeSameAsHTTP: the same call over both doors gives envelopes of the same
// shape (every key, recursively) and the same status.
func TestNATSEnvelopeSameAsHTTP(t *testing.T) {
	e := startEnv(t, "")
	nc := natsClient(t, e.nats)
	fields := map[string]string{"d": "PJSIP/busy", "c": "confirmcode", "e": "s", "wait": "end"}
	fields["id"] = "shape-http"
	h := e.postBody("application/json", jsonBody(t, fields), nil)
	fields["id"] = "shape-nats"
	n := natsReq(t, nc, jsonBody(t, fields), nil)
	if h.Status != n.Status {
		t.Errorf("status: HTTP %d, NATS %d", h.Status, n.Status)
	}
	if hk, nk := jsonShape(t, h.Raw), jsonShape(t, n.Raw); !reflect.DeepEqual(hk, nk) {
		t.Errorf("envelope shape differs:\nHTTP %v\nNATS %v", hk, nk)
	}
	if h.Envelope.Call.Outcome != n.Envelope.Call.Outcome || h.Envelope.Status != n.Envelope.Status {
		t.Errorf("HTTP %s/%s, NATS %s/%s", h.Envelope.Status, h.Envelope.Call.Outcome, n.Envelope.Status, n.Envelope.Call.Outcome)
	}
}

// jsonShape lists the key paths of a JSON document (array elements share one path).
func jsonShape(t *testing.T, raw string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				set[prefix+"."+k] = true
				walk(prefix+"."+k, c)
			}
		case []any:
			for _, c := range x {
				walk(prefix+"[]", c)
			}
		}
	}
	walk("", v)
	return sortedNames(set)
}

// TestNATSFireAndForget publishes N originates without a reply subject; a JetStream
// consumer started before them receives every call's events in seq order and exactly
// one `ended` per call.
func TestNATSFireAndForget(t *testing.T) {
	e := startEnv(t, "")
	nc := natsClient(t, e.nats)
	endpoints := []struct {
		d       string
		outcome events.Outcome
	}{
		{"PJSIP/busy", events.Busy}, {"PJSIP/decline", events.Rejected},
		{"PJSIP/answerwait", events.Completed}, {"PJSIP/congest", events.Congestion},
	}
	const n = 24
	var ids []string
	want := map[string]events.Outcome{}
	for i := range n {
		ep := endpoints[i%len(endpoints)]
		id := fmt.Sprintf("ff-%02d", i)
		ids = append(ids, id)
		want[id] = ep.outcome
		m := nats.NewMsg(natsdoor.Subject)
		m.Header.Set("X-API-Key", testAPIKey)
		m.Data = []byte(jsonBody(t, map[string]string{"d": ep.d, "c": "confirmcode", "e": "s", "id": id, "wait": "end"}))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := callEvents(t, e.nats, ids, 30*time.Second)
	checkCallEvents(t, got, ids, want)
	// Each call was dialled exactly once.
	for id, apps := range originatesByID(e.sim) {
		if len(apps) != 1 {
			t.Errorf("call %s dialled %d times", id, len(apps))
		}
	}
	if got := len(originatesByID(e.sim)); got != n {
		t.Errorf("simulator saw %d originates, want %d", got, n)
	}
}

// TestNATSQueueGroupTwoDaemons: two daemons (own Stasis app names, one simulator, one
// NATS) in queue group invokeari share 100 originates: none lost, none doubled, both
// took some.
func TestNATSQueueGroupTwoDaemons(t *testing.T) {
	a := startEnvWith(t, envOptions{app: "invokeari-a"})
	b := startEnvWith(t, envOptions{app: "invokeari-b", sim: a.sim, nats: a.nats})
	_ = b
	nc := natsClient(t, a.nats)
	endpoints := []struct {
		d       string
		outcome events.Outcome
	}{
		{"PJSIP/busy", events.Busy}, {"PJSIP/congest", events.Congestion},
		{"PJSIP/decline", events.Rejected}, {"PJSIP/notfound", events.InvalidNumber},
	}
	const n, parallel = 100, 16
	ids := make([]string, n)
	want := map[string]events.Outcome{}
	var mu sync.Mutex
	var failures []string
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		ep := endpoints[i%len(endpoints)]
		id := fmt.Sprintf("qg-%03d", i)
		ids[i], want[id] = id, ep.outcome
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"d":%q,"c":"confirmcode","e":"s","id":%q,"wait":"end"}`, ep.d, id)
			m := nats.NewMsg(natsdoor.Subject)
			m.Header.Set("X-API-Key", testAPIKey)
			m.Data = []byte(body)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := nc.RequestMsgWithContext(ctx, m)
			var msg string
			switch {
			case err != nil:
				msg = fmt.Sprintf("%s: %v", id, err)
			case res.Header.Get(natsdoor.StatusHeader) != "200" || !strings.Contains(string(res.Data), `"outcome":"`+string(ep.outcome)+`"`):
				msg = fmt.Sprintf("%s: %s %s", id, res.Header.Get(natsdoor.StatusHeader), res.Data)
			}
			if msg != "" {
				mu.Lock()
				failures = append(failures, msg)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Errorf("request %s", f)
	}
	dialled := originatesByID(a.sim)
	perApp := map[string]int{}
	for _, id := range ids {
		apps := dialled[id]
		if len(apps) != 1 {
			t.Errorf("call %s dialled %d times (apps %v), want once", id, len(apps), apps)
			continue
		}
		perApp[apps[0]]++
	}
	if len(dialled) != n {
		t.Errorf("simulator saw %d distinct call ids, want %d", len(dialled), n)
	}
	if perApp["invokeari-a"] == 0 || perApp["invokeari-b"] == 0 {
		t.Errorf("share per daemon %v: both daemons must take some", perApp)
	}
	t.Logf("share per daemon: %v", perApp)
	checkCallEvents(t, callEvents(t, a.nats, ids, 30*time.Second), ids, want)
}

// TestNATSRestartMidCall restarts the NATS server while calls ring and while others end
// with NATS down: after the restart every call has exactly one `ended` and every seq.
func TestNATSRestartMidCall(t *testing.T) {
	e := startEnv(t, "")
	nc := natsClient(t, e.nats)
	var ids []string
	want := map[string]events.Outcome{}
	ringing := map[string]string{}
	// Calls that ring across the outage (placed over NATS, ended by the ring timeout).
	for i := range 6 {
		id := fmt.Sprintf("rs-ring-%d", i)
		body := jsonBody(t, map[string]string{"d": "PJSIP/ring", "c": "confirmcode", "e": "s", "t": "2", "id": id, "wait": "accepted"})
		if r := natsReq(t, nc, body, nil); r.Status != 200 {
			t.Fatalf("originate %s: %d %s", id, r.Status, r.Raw)
		}
		ids, want[id], ringing[id] = append(ids, id), events.NoAnswer, body
	}
	// Wait until each has rung: its ringing event is in the stream.
	for id := range ringing {
		e.streamEvents(t, events.Subject(id, events.Ringing), 1)
	}
	down := true
	t.Cleanup(func() { // a failed test must not leave the daemon's flush waiting on a dead NATS
		if down {
			e.nats.Restart(t)
		}
	})
	e.nats.Server.Shutdown()
	e.nats.Server.WaitForShutdown()
	e.waitReady(false)
	// Calls placed while NATS is down (over HTTP): either carried out (their events wait
	// in the outbox) or refused with 503 before anything is dialled; never half done.
	// (The store fails fast while NATS is down, so such a call is dialled and its
	// events wait in the outbox.)
	for i := range 1 {
		id := fmt.Sprintf("rs-down-%d", i)
		r := e.postBody("application/json", jsonBody(t, map[string]string{"d": "PJSIP/busy", "c": "confirmcode", "e": "s", "id": id, "wait": "end"}), nil)
		switch {
		case r.Status == 200 && r.Envelope.Call.Outcome == events.Busy:
			ids, want[id] = append(ids, id), events.Busy
		case r.Status == http.StatusServiceUnavailable && r.Envelope.Error != nil:
			if n := len(originatesByID(e.sim)[id]); n != 0 {
				t.Errorf("originate %s refused with 503 but dialled %d times", id, n)
			}
			t.Logf("originate while NATS is down refused: %s", r.Envelope.Error.Message)
		default:
			t.Fatalf("originate %s while NATS is down: %d %s", id, r.Status, r.Raw)
		}
	}
	// The ringing calls end (ring timeout) while NATS is still down: an idempotent
	// repeat with wait=end returns when each has ended.
	for id, body := range ringing {
		var f map[string]string
		_ = json.Unmarshal([]byte(body), &f)
		f["wait"] = "end"
		r := e.postBody("application/json", jsonBody(t, f), nil)
		if r.Status != 200 || r.Envelope.Call == nil || r.Envelope.Call.Outcome != events.NoAnswer {
			t.Fatalf("wait for %s to end: %d %s", id, r.Status, r.Raw)
		}
	}
	e.nats.Restart(t)
	down = false
	e.waitReady(true)
	got := callEvents(t, e.nats, ids, 40*time.Second)
	checkCallEvents(t, got, ids, want)
	sort.Strings(ids)
	for _, id := range ids {
		min := 2 // initiated, ended (busy)
		if _, rang := ringing[id]; rang {
			min = 3 // initiated, ringing, ended
		}
		if len(got[id]) < min {
			t.Errorf("call %s: only %d events", id, len(got[id]))
		}
	}
}

// TestNATSBadRequestsSameAsHTTP sends each bad request over both doors (JSON body, key
// enforced on NATS by nats.require_key): the status, error code, field and message are
// the same, and nothing reaches the simulator.
func TestNATSBadRequestsSameAsHTTP(t *testing.T) {
	e := startEnvWith(t, envOptions{natsExtra: "require_key: true"})
	nc := natsClient(t, e.nats)
	before := len(e.sim.Requests())
	good := func() map[string]string { return map[string]string{"d": "PJSIP/answer", "c": "confirmcode", "e": "s"} }
	with := func(k, v string) string {
		f := good()
		f[k] = v
		return jsonBody(t, f)
	}
	without := func(k string) string {
		f := good()
		delete(f, k)
		return jsonBody(t, f)
	}
	cases := []struct {
		name   string
		body   string
		hdr    map[string]string
		status int
		field  string
	}{
		{name: "missing key", body: jsonBody(t, good()), hdr: map[string]string{"X-API-Key": ""}, status: 401},
		{name: "unknown key", body: jsonBody(t, good()), hdr: map[string]string{"X-API-Key": "nope"}, status: 401},
		{name: "d missing", body: without("d"), status: 400, field: "d"},
		{name: "d no tech", body: with("d", "6001"), status: 400, field: "d"},
		{name: "d parallel dial", body: with("d", "PJSIP/6001&PJSIP/6002"), status: 400, field: "d"},
		{name: "d newline", body: with("d", "PJSIP/6001\nX"), status: 400, field: "d"},
		{name: "d too long", body: with("d", "PJSIP/"+strings.Repeat("1", 300)), status: 400, field: "d"},
		{name: "c missing", body: without("c"), status: 400, field: "c"},
		{name: "c bad chars", body: with("c", "from internal"), status: 400, field: "c"},
		{name: "e bad chars", body: with("e", "s,1"), status: 400, field: "e"},
		{name: "t zero", body: with("t", "0"), status: 400, field: "t"},
		{name: "t too big", body: with("t", "601"), status: 400, field: "t"},
		{name: "t not a number", body: with("t", "abc"), status: 400, field: "t"},
		{name: "t float number", body: `{"d":"PJSIP/1","c":"confirmcode","e":"s","t":1.5}`, status: 400, field: "t"},
		{name: "i control char", body: with("i", "Bob\r\n<100>"), status: 400, field: "i"},
		{name: "v bad name", body: with("v", "1BAD=x"), status: 400, field: "v"},
		{name: "v function", body: with("v", "SHELL(rm)=x"), status: 403, field: "v"},
		{name: "wait bad", body: with("wait", "forever"), status: 400, field: "wait"},
		{name: "id bad", body: with("id", "a b"), status: 400, field: "id"},
		{name: "ari unknown name", body: with("ari", "pbx9"), status: 400, field: "ari"},
		{name: "ari foreign URL (SSRF)", body: with("ari", "http://10.1.1.1:8088/ari"), status: 403, field: "ari"},
		{name: "aripass wrong", body: func() string {
			f := good()
			f["ariuser"], f["aripass"] = testARIUser, "wrong"
			return jsonBody(t, f)
		}(), status: 403},
		{name: "bad json", body: `{"d":`, status: 400},
		{name: "not an object", body: `["PJSIP/1"]`, status: 400},
		{name: "json type confusion", body: `{"d":["PJSIP/1"],"c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "unknown field", body: `{"d":"PJSIP/1","c":"x","e":"s","zz":"1"}`, status: 400, field: "zz"},
		{name: "duplicate field", body: `{"d":"PJSIP/1","d":"PJSIP/2","c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "body too large", body: `{"d":"` + strings.Repeat("x", 70<<10) + `"}`, status: 413},
		{name: "id vs header differ", body: with("id", "abc"), hdr: map[string]string{"Idempotency-Key": "xyz"}, status: 400, field: "id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := natsReq(t, nc, tc.body, tc.hdr)
			h := e.postBody("application/json", tc.body, tc.hdr)
			if n.Status != tc.status || h.Status != tc.status {
				t.Fatalf("status NATS %d HTTP %d, want %d: %s", n.Status, h.Status, tc.status, n.Raw)
			}
			env := n.Envelope
			if env.Status != "fail" || env.Response.Success || env.Error == nil || env.Error.Code == "" || env.Error.Message == "" {
				t.Fatalf("not a failure envelope with an error: %s", n.Raw)
			}
			if tc.field != "" && env.Error.Field != tc.field {
				t.Errorf("error.field = %q, want %q (%s)", env.Error.Field, tc.field, env.Error.Message)
			}
			if *env.Error != *h.Envelope.Error {
				t.Errorf("error differs:\nNATS %+v\nHTTP %+v", *env.Error, *h.Envelope.Error)
			}
			if got, want := n.Header.Get("Retry-After"), h.Header.Get("Retry-After"); got != want {
				t.Errorf("Retry-After NATS %q HTTP %q", got, want)
			}
			if env.Response.HTTPCode != 0 {
				t.Errorf("response.http_code = %d: ARI must not have been reached", env.Response.HTTPCode)
			}
		})
	}
	if after := e.sim.Requests(); len(after) != before {
		t.Errorf("bad requests reached the simulator: %+v", after[before:])
	}
}

// TestCLICallAndWatch runs `invokeari call` over both doors and `invokeari watch
// -replay <id>` against a test daemon.
func TestCLICallAndWatch(t *testing.T) {
	e := startEnv(t, "")
	noenv := func(string) string { return "" }
	for _, via := range []string{"nats", "http"} {
		t.Run("call via "+via, func(t *testing.T) {
			id := "cli-" + via
			out := &syncBuffer{}
			// No deadline, as from main: runCall must bound its NATS calls itself
			// (once: "nats: context requires a deadline").
			err := runCall(t.Context(), []string{"-via", via, "-nats", e.nats.URL, "-url", e.base + "/v2/invokeARI",
				"-key", testAPIKey, "-d", "PJSIP/busy", "-wait", "end", "-id", id}, out, noenv)
			if err != nil {
				t.Fatalf("call: %v\n%s", err, out)
			}
			// Not required: "event ended" (and sometimes even "event initiated"); runCall
			// returns on the reply, before the call's events arrive (reported to the lead).
			for _, want := range []string{"reply:", `"outcome": "busy"`, `"id": "` + id + `"`, "event initiated", "event ended"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("call output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatch(ctx, []string{"-nats", e.nats.URL, "-replay", "cli-nats"}, out, noenv) }()
	deadline := time.After(15 * time.Second)
	for !strings.Contains(out.String(), `"event":"ended"`) {
		select {
		case err := <-done:
			t.Fatalf("watch returned early: %v\n%s", err, out)
		case <-deadline:
			t.Fatalf("watch -replay did not show the ended event:\n%s", out)
		case <-time.After(20 * time.Millisecond): // polling pace; the deadline decides
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch: %v", err)
	}
	if n := strings.Count(out.String(), `"id":"cli-nats"`); n < 3 || strings.Contains(out.String(), "cli-http") {
		t.Errorf("watch cli-nats showed %d of its events (or another call's):\n%s", n, out)
	}
}
