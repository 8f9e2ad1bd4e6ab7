package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
)

// Keys of the call-control tests besides the test key ("tester"): another ordinary key
// and an admin key.
const (
	otherAPIKey = "tk-Other-Key-51e0aa"
	adminAPIKey = "tk-Admin-Key-9d2c77"
)

func keyEntry(name, key string, admin bool) string {
	sum := sha256.Sum256([]byte(key))
	s := fmt.Sprintf("  - name: %s\n    sha256: %q\n", name, hex.EncodeToString(sum[:]))
	if admin {
		s += "    admin: true\n"
	}
	return s
}

// startControlEnv is startEnv with the keys "other" and "boss" (admin), and an HTTP
// client that checks every reply against openapi.json.
func startControlEnv(t *testing.T) *testEnv {
	t.Helper()
	return startEnvWith(t, envOptions{keysExtra: keyEntry("other", otherAPIKey, false) + keyEntry("boss", adminAPIKey, true),
		client: newValidatingClient(t)})
}

// ctlReply is a decoded call-control reply (HTTP or NATS) with its status.
type ctlReply struct {
	Status int
	Env    struct {
		Status   string `json:"status"`
		Response struct {
			Success  bool `json:"success"`
			HTTPCode int  `json:"http_code"`
		} `json:"response"`
		Call       *events.Call  `json:"call"`
		Calls      []events.Call `json:"calls"`
		NextCursor string        `json:"next_cursor"`
		Hangup     *struct {
			Confirmed bool   `json:"confirmed"`
			Message   string `json:"message"`
		} `json:"hangup"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	Raw string
}

func decodeCtl(t *testing.T, status int, raw []byte) ctlReply {
	t.Helper()
	r := ctlReply{Status: status, Raw: string(raw)}
	if err := json.Unmarshal(raw, &r.Env); err != nil {
		t.Fatalf("reply is not the JSON envelope (%d): %v\n%s", status, err, raw)
	}
	return r
}

// ctl sends an HTTP call-control request with key ("" sends none).
func (e *testEnv) ctl(method, path, key string) ctlReply {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := e.http().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q, want application/json: %s", method, path, ct, raw)
	}
	return decodeCtl(e.t, resp.StatusCode, raw)
}

// natsCtl sends a call-control request on subject with key ("" sends none).
func natsCtl(t *testing.T, nc *nats.Conn, subject, body, key string) ctlReply {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	if key != "" {
		m.Header.Set("X-API-Key", key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("NATS %s: %v", subject, err)
	}
	var status int
	if _, err := fmt.Sscan(res.Header.Get(natsdoor.StatusHeader), &status); err != nil {
		t.Fatalf("reply without a valid %s header: %s", natsdoor.StatusHeader, res.Data)
	}
	return decodeCtl(t, status, res.Data)
}

// placeCall originates d with id as key and returns once the reply came (wait as given).
func (e *testEnv) placeCall(d, id, wait, key string) {
	e.t.Helper()
	r := e.post(url.Values{"d": {d}, "c": {"confirmcode"}, "e": {"s"}, "id": {id}, "wait": {wait}},
		map[string]string{"X-API-Key": key})
	if r.Status != http.StatusOK {
		e.t.Fatalf("originate %s: %d %s", id, r.Status, r.Raw)
	}
}

// waitState polls GET /v2/calls/{id} (as the admin key) until the call is in state want.
func (e *testEnv) waitState(id string, want events.State) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last ctlReply
	for time.Now().Before(deadline) {
		last = e.ctl(http.MethodGet, "/v2/calls/"+id, adminAPIKey)
		if last.Env.Call != nil && last.Env.Call.State == want {
			return
		}
		waitABit()
	}
	e.t.Fatalf("call %s never reached state %s; last reply %d %s", id, want, last.Status, last.Raw)
}

// wantError checks a refusal: status, error code and field.
func wantError(t *testing.T, name string, r ctlReply, status int, code, field string) {
	t.Helper()
	if r.Status != status || r.Env.Status != "fail" || r.Env.Error == nil ||
		r.Env.Error.Code != code || r.Env.Error.Field != field {
		t.Errorf("%s: got %d %s; want %d %s field %q", name, r.Status, r.Raw, status, code, field)
	}
}

// TestCallControlHTTP drives GET/DELETE /v2/calls/{id} and GET /v2/calls over real HTTP
// against the daemon on the simulator: key scoping, admin, filters, paging, hangup of a
// ringing and an answered call, idempotence and bad input.
func TestCallControlHTTP(t *testing.T) {
	e := startControlEnv(t)
	e.placeCall("PJSIP/ring", "ring1", "accepted", testAPIKey)
	e.placeCall("PJSIP/answerwait", "ans1", "answer", testAPIKey)
	e.placeCall("PJSIP/busy", "busy1", "end", testAPIKey)
	e.placeCall("PJSIP/ring", "other1", "accepted", otherAPIKey)
	e.waitState("ring1", events.StateRinging)
	e.waitState("other1", events.StateRinging)

	t.Run("get", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, key string
			status          int
			code, field     string
			wantState       events.State
			wantOutcome     events.Outcome
		}{
			{name: "live ringing", path: "ring1", key: testAPIKey, status: 200, wantState: events.StateRinging},
			{name: "live answered", path: "ans1", key: testAPIKey, status: 200, wantState: events.StateAnswered, wantOutcome: events.Answered},
			{name: "ended", path: "busy1", key: testAPIKey, status: 200, wantState: events.StateEnded, wantOutcome: events.Busy},
			{name: "unknown", path: "nosuchcall", key: testAPIKey, status: 404, code: "call_not_found", field: "id"},
			{name: "another key's call", path: "other1", key: testAPIKey, status: 404, code: "call_not_found", field: "id"},
			{name: "own call of the other key", path: "other1", key: otherAPIKey, status: 200, wantState: events.StateRinging},
			{name: "not the other key's", path: "ring1", key: otherAPIKey, status: 404, code: "call_not_found", field: "id"},
			{name: "admin sees all", path: "other1", key: adminAPIKey, status: 200, wantState: events.StateRinging},
			{name: "bad id", path: "bad%21id", key: testAPIKey, status: 400, code: "invalid_field", field: "id"},
			{name: "id too long", path: strings.Repeat("x", 65), key: testAPIKey, status: 400, code: "invalid_field", field: "id"},
			{name: "no key", path: "ring1", status: 401, code: "missing_api_key"},
			{name: "wrong key", path: "ring1", key: "nope", status: 401, code: "invalid_api_key"},
			{name: "reason is for DELETE", path: "ring1?reason=x", key: testAPIKey, status: 400, code: "unknown_field", field: "reason"},
			{name: "unknown parameter", path: "ring1?foo=1", key: testAPIKey, status: 400, code: "unknown_field", field: "foo"},
		} {
			r := e.ctl(http.MethodGet, "/v2/calls/"+tc.path, tc.key)
			if tc.code != "" {
				wantError(t, tc.name, r, tc.status, tc.code, tc.field)
				continue
			}
			id, _, _ := strings.Cut(tc.path, "?")
			if r.Status != tc.status || r.Env.Status != "success" || r.Env.Call == nil || r.Env.Call.ID != id ||
				r.Env.Call.State != tc.wantState || r.Env.Call.Outcome != tc.wantOutcome {
				t.Errorf("%s: got %d %s; want %d, call %s in state %s, outcome %q", tc.name, r.Status, r.Raw, tc.status, id, tc.wantState, tc.wantOutcome)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		for _, tc := range []struct {
			name, query, key string
			want             []string // in order, newest first
		}{
			{name: "all of mine", query: "", key: testAPIKey, want: []string{"busy1", "ans1", "ring1"}},
			{name: "active", query: "?state=active", key: testAPIKey, want: []string{"ans1", "ring1"}},
			{name: "ended", query: "?state=ended", key: testAPIKey, want: []string{"busy1"}},
			{name: "server", query: "?server=pbx1", key: testAPIKey, want: []string{"busy1", "ans1", "ring1"}},
			{name: "other server", query: "?server=pbx9", key: testAPIKey, want: []string{}},
			{name: "other key", query: "", key: otherAPIKey, want: []string{"other1"}},
			{name: "admin", query: "?state=active", key: adminAPIKey, want: []string{"other1", "ans1", "ring1"}},
		} {
			r := e.ctl(http.MethodGet, "/v2/calls"+tc.query, tc.key)
			if r.Status != 200 || r.Env.Calls == nil || r.Env.NextCursor != "" {
				t.Errorf("%s: got %d %s", tc.name, r.Status, r.Raw)
				continue
			}
			if got := callIDs(r.Env.Calls); !slices.Equal(got, tc.want) {
				t.Errorf("%s: calls %v, want %v", tc.name, got, tc.want)
			}
		}
		// Paging one call at a time walks the same list, each call once.
		var paged []string
		cursor := ""
		for range 10 {
			r := e.ctl(http.MethodGet, "/v2/calls?limit=1&cursor="+url.QueryEscape(cursor), adminAPIKey)
			if r.Status != 200 || len(r.Env.Calls) > 1 {
				t.Fatalf("page after %q: %d %s", cursor, r.Status, r.Raw)
			}
			paged = append(paged, callIDs(r.Env.Calls)...)
			if cursor = r.Env.NextCursor; cursor == "" {
				break
			}
		}
		if want := []string{"other1", "busy1", "ans1", "ring1"}; !slices.Equal(paged, want) {
			t.Errorf("paged with limit=1: %v, want %v", paged, want)
		}
		r := e.ctl(http.MethodGet, "/v2/calls?limit=2", adminAPIKey)
		if got := callIDs(r.Env.Calls); !slices.Equal(got, []string{"other1", "busy1"}) || r.Env.NextCursor == "" {
			t.Errorf("limit=2: %v next %q", got, r.Env.NextCursor)
		}
		for _, tc := range []struct{ name, query, code, field string }{
			{"limit 0", "?limit=0", "invalid_field", "limit"},
			{"limit over max", "?limit=501", "invalid_field", "limit"},
			{"limit not a number", "?limit=ten", "invalid_field", "limit"},
			{"bad cursor", "?cursor=zzz", "invalid_field", "cursor"},
			{"forged cursor", "?cursor=" + "djEuMS5hLmI", "invalid_field", "cursor"},
			{"bad state", "?state=ringing", "invalid_field", "state"},
			{"bad server", "?server=a%20b", "invalid_field", "server"},
			{"unknown parameter", "?page=2", "unknown_field", "page"},
			{"repeated parameter", "?state=active&state=ended", "duplicate_field", "state"},
		} {
			wantError(t, tc.name, e.ctl(http.MethodGet, "/v2/calls"+tc.query, testAPIKey), 400, tc.code, tc.field)
		}
		wantError(t, "list without key", e.ctl(http.MethodGet, "/v2/calls", ""), 401, "missing_api_key", "")
	})

	t.Run("hangup", func(t *testing.T) {
		// Another key cannot see, so cannot hang up, the call.
		wantError(t, "other key", e.ctl(http.MethodDelete, "/v2/calls/ring1", otherAPIKey), 404, "call_not_found", "id")
		if r := e.ctl(http.MethodGet, "/v2/calls/ring1", testAPIKey); r.Env.Call == nil || r.Env.Call.State != events.StateRinging {
			t.Fatalf("ring1 after another key's DELETE: %s", r.Raw)
		}
		for _, tc := range []struct {
			name, path, key string
			wantOutcome     events.Outcome
			wantBy          string
			wantReason      string
			wantARI         int
		}{
			{name: "ringing", path: "ring1", key: testAPIKey, wantOutcome: events.Canceled, wantBy: "api", wantReason: "canceled by api", wantARI: 204},
			{name: "ringing again", path: "ring1", key: testAPIKey, wantOutcome: events.Canceled, wantBy: "api", wantReason: "canceled by api"},
			{name: "answered, with a reason", path: "ans1?reason=" + url.QueryEscape("agent done"), key: testAPIKey,
				wantOutcome: events.Completed, wantBy: "api", wantReason: "hung up by api: agent done", wantARI: 204},
			{name: "answered again", path: "ans1", key: testAPIKey, wantOutcome: events.Completed, wantBy: "api"},
			{name: "ended by the far end", path: "busy1", key: testAPIKey, wantOutcome: events.Busy},
			{name: "admin hangs up another key's call", path: "other1", key: adminAPIKey, wantOutcome: events.Canceled, wantBy: "api", wantARI: 204},
		} {
			r := e.ctl(http.MethodDelete, "/v2/calls/"+tc.path, tc.key)
			c := r.Env.Call
			if r.Status != 200 || r.Env.Hangup == nil || !r.Env.Hangup.Confirmed || c == nil ||
				c.State != events.StateEnded || c.Outcome != tc.wantOutcome || c.HangupBy != tc.wantBy ||
				!strings.Contains(c.Reason, tc.wantReason) || r.Env.Response.HTTPCode != tc.wantARI {
				t.Errorf("%s: got %d %s; want 200 confirmed, outcome %s, hangup_by %q, reason ~%q, http_code %d",
					tc.name, r.Status, r.Raw, tc.wantOutcome, tc.wantBy, tc.wantReason, tc.wantARI)
			}
		}
		if c := e.ctl(http.MethodGet, "/v2/calls/ans1", testAPIKey).Env.Call; c == nil || c.DurationMS == nil {
			t.Errorf("ans1 after hangup has no duration: %+v", c)
		}
		wantError(t, "unknown", e.ctl(http.MethodDelete, "/v2/calls/nosuchcall", testAPIKey), 404, "call_not_found", "id")
		wantError(t, "bad id", e.ctl(http.MethodDelete, "/v2/calls/bad%2Aid", testAPIKey), 400, "invalid_field", "id")
		wantError(t, "reason too long", e.ctl(http.MethodDelete, "/v2/calls/ring1?reason="+strings.Repeat("r", 129), testAPIKey), 400, "invalid_field", "reason")
		wantError(t, "reason with a control character", e.ctl(http.MethodDelete, "/v2/calls/ring1?reason=a%0Ab", testAPIKey), 400, "invalid_field", "reason")
		wantError(t, "no key", e.ctl(http.MethodDelete, "/v2/calls/ring1", ""), 401, "missing_api_key", "")

		// The stream's `ended` events carry who hung up, exactly once per call.
		got := callEvents(t, e.nats, []string{"ring1", "ans1", "other1"}, 20*time.Second)
		checkCallEvents(t, got, []string{"ring1", "ans1", "other1"},
			map[string]events.Outcome{"ring1": events.Canceled, "ans1": events.Completed, "other1": events.Canceled})
		for _, id := range []string{"ring1", "ans1", "other1"} {
			evs := got[id]
			if last := evs[len(evs)-1]; last.Call == nil || last.Call.HangupBy != events.HangupByAPI {
				t.Errorf("%s: ended event without hangup_by api: %+v", id, last.Call)
			}
		}
		// Exactly one DELETE reached Asterisk per call hung up, however often it was asked.
		if n := e.requestsTo(http.MethodDelete, "/ari/channels/"); n != 3 {
			t.Errorf("%d DELETE /channels requests reached the simulator, want 3", n)
		}
	})
}

func callIDs(calls []events.Call) []string {
	out := []string{}
	for _, c := range calls {
		out = append(out, c.ID)
	}
	return out
}

// TestCallControlNATS drives invokeari.calls.get and invokeari.hangup over real NATS:
// the same replies and key rules as HTTP, and bad bodies refused like an originate's.
func TestCallControlNATS(t *testing.T) {
	e := startControlEnv(t)
	nc := natsClient(t, e.nats)
	e.placeCall("PJSIP/answerwait", "nans", "answer", testAPIKey)
	e.placeCall("PJSIP/busy", "nbusy", "end", testAPIKey)

	// The NATS reply is the HTTP reply, byte for byte, for a call that no longer changes.
	viaHTTP := e.ctl(http.MethodGet, "/v2/calls/nbusy", testAPIKey)
	viaNATS := natsCtl(t, nc, natsdoor.GetSubject, `{"id":"nbusy"}`, testAPIKey)
	if viaHTTP.Status != 200 || viaNATS.Status != 200 || strings.TrimSpace(viaHTTP.Raw) != strings.TrimSpace(viaNATS.Raw) {
		t.Errorf("GET over HTTP and NATS differ:\nhttp %d %s\nnats %d %s", viaHTTP.Status, viaHTTP.Raw, viaNATS.Status, viaNATS.Raw)
	}

	for _, tc := range []struct {
		name, subject, body, key string
		status                   int
		code, field              string
	}{
		{"get another key's call", natsdoor.GetSubject, `{"id":"nans"}`, otherAPIKey, 404, "call_not_found", "id"},
		{"get unknown", natsdoor.GetSubject, `{"id":"nosuchcall"}`, testAPIKey, 404, "call_not_found", "id"},
		{"get without id", natsdoor.GetSubject, `{}`, testAPIKey, 400, "missing_field", "id"},
		{"get bad id", natsdoor.GetSubject, `{"id":"a.b"}`, testAPIKey, 400, "invalid_field", "id"},
		{"get with a reason", natsdoor.GetSubject, `{"id":"nans","reason":"x"}`, testAPIKey, 400, "unknown_field", "reason"},
		{"get unknown field", natsdoor.GetSubject, `{"id":"nans","d":"PJSIP/1"}`, testAPIKey, 400, "unknown_field", "d"},
		{"get not JSON", natsdoor.GetSubject, `nans`, testAPIKey, 400, "invalid_body", ""},
		{"get id not a string", natsdoor.GetSubject, `{"id":7}`, testAPIKey, 400, "invalid_type", "id"},
		{"get wrong key", natsdoor.GetSubject, `{"id":"nans"}`, "nope", 401, "invalid_api_key", ""},
		{"hangup another key's call", natsdoor.HangupSubject, `{"id":"nans"}`, otherAPIKey, 404, "call_not_found", "id"},
		{"hangup unknown", natsdoor.HangupSubject, `{"id":"nosuchcall"}`, testAPIKey, 404, "call_not_found", "id"},
		{"hangup repeated field", natsdoor.HangupSubject, `{"id":"nans","id":"nans"}`, testAPIKey, 400, "duplicate_field", "id"},
	} {
		wantError(t, tc.name, natsCtl(t, nc, tc.subject, tc.body, tc.key), tc.status, tc.code, tc.field)
	}
	if r := natsCtl(t, nc, natsdoor.GetSubject, `{"id":"nans"}`, testAPIKey); r.Status != 200 || r.Env.Call == nil ||
		r.Env.Call.State != events.StateAnswered {
		t.Errorf("get answered call: %d %s", r.Status, r.Raw)
	}
	r := natsCtl(t, nc, natsdoor.HangupSubject, `{"id":"nans","reason":"from nats"}`, testAPIKey)
	if c := r.Env.Call; r.Status != 200 || c == nil || c.Outcome != events.Completed || c.HangupBy != events.HangupByAPI ||
		!strings.Contains(c.Reason, "from nats") || r.Env.Hangup == nil || !r.Env.Hangup.Confirmed {
		t.Errorf("hangup over NATS: %d %s", r.Status, r.Raw)
	}
	// The admin key sees every call over NATS too; a repeated hangup returns the call.
	if r := natsCtl(t, nc, natsdoor.HangupSubject, `{"id":"nans"}`, adminAPIKey); r.Status != 200 || r.Env.Call == nil ||
		r.Env.Call.Outcome != events.Completed {
		t.Errorf("repeated hangup by the admin key: %d %s", r.Status, r.Raw)
	}
}

// TestCallControlEndedFromStream: a call this daemon does not hold in memory (it ended
// on another daemon, or before a restart past retention of the in-memory table) is
// found through its `ended` event in the stream, for its own key and admin keys only.
func TestCallControlEndedFromStream(t *testing.T) {
	e := startControlEnv(t)
	nc := natsClient(t, e.nats)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 9, 30, 57, 0, time.UTC)
	rec := events.Call{ID: "elsewhere1", Server: "pbx1", Channel: "PJSIP/x-00000001", State: events.StateEnded,
		Outcome: events.Busy, Reason: "Dial BUSY", Cause: 17, CauseTxt: "User busy", SIPCode: 486, DialStatus: "BUSY",
		CreatedAt: at, EndedAt: &at}
	for seq, kind := range []events.Kind{events.Initiated, events.Ended} {
		ev := events.Event{ID: rec.ID, Seq: uint64(seq + 1), Event: kind, Time: at, Server: "pbx1", Key: "tester"}
		if kind == events.Ended {
			ev.Outcome, ev.Call = rec.Outcome, &rec
		}
		b, _ := json.Marshal(ev)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.Publish(ctx, events.Subject(rec.ID, kind), b)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	r := e.ctl(http.MethodGet, "/v2/calls/elsewhere1", testAPIKey)
	if r.Status != 200 || r.Env.Call == nil || r.Env.Call.Outcome != events.Busy || r.Env.Call.Cause != 17 {
		t.Errorf("ended call from the stream: %d %s", r.Status, r.Raw)
	}
	if r := e.ctl(http.MethodDelete, "/v2/calls/elsewhere1", testAPIKey); r.Status != 200 || r.Env.Call == nil ||
		r.Env.Call.Outcome != events.Busy || r.Env.Hangup == nil || !r.Env.Hangup.Confirmed {
		t.Errorf("DELETE of a call ended elsewhere: %d %s", r.Status, r.Raw)
	}
	wantError(t, "other key", e.ctl(http.MethodGet, "/v2/calls/elsewhere1", otherAPIKey), 404, "call_not_found", "id")
	if r := e.ctl(http.MethodGet, "/v2/calls/elsewhere1", adminAPIKey); r.Status != 200 {
		t.Errorf("admin: %d %s", r.Status, r.Raw)
	}
	// The request subject is not an event subject: the stream does not take it in.
	if r := natsCtl(t, nc, natsdoor.GetSubject, `{"id":"elsewhere1"}`, testAPIKey); r.Status != 200 || r.Env.Call == nil {
		t.Errorf("NATS get: %d %s", r.Status, r.Raw)
	}
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(context.Background(), natsdoor.GetSubject); err == nil {
		t.Errorf("the stream stored a %s request", natsdoor.GetSubject)
	}
}
