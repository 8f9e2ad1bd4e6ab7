package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

var update = flag.Bool("update", false, "rewrite golden files")

func answeredResult() stasisapp.Result {
	created := time.Date(2026, 11, 26, 7, 59, 0, 0, time.UTC)
	ringing := created.Add(10 * time.Millisecond)
	answered := ringing.Add(1180 * time.Millisecond)
	ring := int64(1180)
	return stasisapp.Result{
		Call: events.Call{ID: "c0ffee", Server: "pbx1", Channel: "PJSIP/6001-00000001", State: events.StateAnswered,
			Outcome: events.Answered, Cause: 16, CauseTxt: "Normal Clearing", SIPCode: 200, DialStatus: "ANSWER",
			CreatedAt: created, RingingAt: &ringing, AnsweredAt: &answered, RingMS: &ring},
		ARIStatus: 200,
		ARIBody:   map[string]any{"id": "c0ffee", "name": "PJSIP/6001-00000001", "state": "Down"},
		Transcript: []stasisapp.Step{{TMS: 0, Step: "validated"}, {TMS: 1, Step: "ari POST /channels", HTTPCode: 200},
			{TMS: 1190, Step: "ChannelStateChange Up"}},
	}
}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden:\n%s\nwant:\n%s", name, got, want)
	}
}

// keysOf returns the sorted keys of a JSON object.
func keysOf(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestEnvelopeShape(t *testing.T) {
	env, status := Success(answeredResult(), stasisapp.WaitAnswer)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	golden(t, "envelope_success.golden.json", env)
	b, _ := json.Marshal(env)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	// The keys of the SPEC §2 example reply.
	checks := []struct {
		obj  string
		raw  json.RawMessage
		want []string
	}{
		{"envelope", b, []string{"call", "debug", "response", "status"}},
		{"response", top["response"], []string{"curl_error", "http_code", "response", "success"}},
		{"call", top["call"], []string{"answered_at", "cause", "cause_txt", "channel", "created_at", "dialstatus",
			"duration_ms", "ended_at", "id", "outcome", "ring_ms", "ringing_at", "server", "sip_code", "state"}},
		{"debug", top["debug"], []string{"transcript"}},
	}
	for _, c := range checks {
		if got := keysOf(t, c.raw); !slices.Equal(got, c.want) {
			t.Errorf("%s keys = %v, want %v", c.obj, got, c.want)
		}
	}

	fail, status := Failure(FromOriginateError(stasisapp.ErrNotConnected), nil)
	if status != 503 {
		t.Fatalf("status %d", status)
	}
	golden(t, "envelope_failure.golden.json", fail)
}

func TestSuccessStatus(t *testing.T) {
	answered := answeredResult()
	busy := answeredResult()
	busy.Call.Outcome, busy.Call.AnsweredAt, busy.Call.State = events.Busy, nil, events.StateEnded
	completed := answeredResult()
	completed.Call.Outcome = events.Completed
	refused := busy
	refused.ARIStatus = 500
	ringing := busy
	ringing.Call.Outcome, ringing.Call.State = "", events.StateRinging
	tests := []struct {
		name string
		res  stasisapp.Result
		wait stasisapp.Wait
		want string
	}{
		{"answered/answer", answered, stasisapp.WaitAnswer, StatusSuccess},
		{"completed/end", completed, stasisapp.WaitEnd, StatusSuccess},
		{"busy/answer", busy, stasisapp.WaitAnswer, StatusFail},
		{"busy/end", busy, stasisapp.WaitEnd, StatusFail},
		{"ringing/accepted", ringing, stasisapp.WaitAccepted, StatusSuccess},
		{"ari refused/accepted", refused, stasisapp.WaitAccepted, StatusFail},
	}
	for _, tt := range tests {
		env, code := Success(tt.res, tt.wait)
		if code != 200 || env.Status != tt.want || env.Response.Success != (tt.want == StatusSuccess) || env.Error != nil {
			t.Errorf("%s: Success = %d %s success=%v, want 200 %s", tt.name, code, env.Status, env.Response.Success, tt.want)
		}
	}
}

func TestFailureWithResult(t *testing.T) {
	res := answeredResult()
	res.ARIStatus, res.ARIBody = 500, map[string]any{"error": "Allocation failed"}
	env, code := Failure(FromOriginateError(&ari.Error{Method: "POST", Path: "/channels", Status: 500, Message: "Allocation failed"}), &res)
	if code != 502 || env.Status != StatusFail || env.Error.Code != CodeARIError || env.Response.HTTPCode != 500 || env.Call == nil {
		t.Fatalf("Failure = %d %+v", code, env)
	}
	if env, code := Failure(nil, nil); code != 500 || env.Error == nil {
		t.Fatalf("Failure(nil) = %d %+v", code, env)
	}
}

func TestFromOriginateError(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		retry  bool
	}{
		{fmt.Errorf("originate: %w", stasisapp.ErrNotConnected), 503, CodeNotConnected, false},
		{stasisapp.ErrDraining, 503, CodeDraining, false},
		{fmt.Errorf("x: %w", stasisapp.ErrBackpressure), 503, CodeBackpressure, true},
		{stasisapp.ErrUnknownServer, 400, CodeUnknownServer, false},
		{stasisapp.ErrIdempotencyConflict, 409, CodeIdempotencyConflict, false},
		{stasisapp.ErrWaitTimeout, 504, CodeWaitTimeout, false},
		{fmt.Errorf("post: %w", &ari.Error{Status: 409, Message: "Channel with given unique ID already exists"}), 502, CodeARIError, false},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), 504, CodeWaitTimeout, false},
		{context.Canceled, 503, CodeCanceled, false},
		{errors.New("dial tcp 127.0.0.1:8088: connection refused"), 502, CodeARIUnreachable, false},
	}
	for _, tt := range tests {
		e := FromOriginateError(tt.err)
		if e == nil || e.Status != tt.status || e.Code != tt.code || (e.RetryAfter > 0) != tt.retry {
			t.Errorf("FromOriginateError(%v) = %+v, want %d %s", tt.err, e, tt.status, tt.code)
		}
	}
	if FromOriginateError(nil) != nil {
		t.Error("FromOriginateError(nil) != nil")
	}
}
