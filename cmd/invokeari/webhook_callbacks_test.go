package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/webhook"
)

// hookRequest is one signed POST a webhook URL got: its event id header and event name.
type hookRequest struct{ id, event string }

// TestWebhookCallCallbacksShareItsURL: with a URL in e and no callback, the call's status
// callbacks go to that URL too (SPEC §9), signed like the webhook's own requests; the
// receiver tells them apart by Invokeari-Event-Id (<id>.<seq> for a status callback, whose
// body carries that seq; <id>.w<n> for the call's requests), as README says, even when both
// are `answered`. With callback naming another URL, the status callbacks go there only.
func TestWebhookCallCallbacksShareItsURL(t *testing.T) {
	type receiver struct {
		srv  *httptest.Server
		mu   sync.Mutex
		got  []hookRequest
		bad  []string
		seen chan struct{} // closed and replaced on every request
	}
	newReceiver := func() *receiver {
		r := &receiver{seen: make(chan struct{})}
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			body, _ := io.ReadAll(req.Body)
			r.mu.Lock()
			defer r.mu.Unlock()
			defer func() { close(r.seen); r.seen = make(chan struct{}) }()
			var ev struct {
				Event string               `json:"event"`
				ID    string               `json:"id"`
				Seq   *uint64              `json:"seq"`
				Call  *struct{ ID string } `json:"call"`
			}
			err := webhook.Verify([]byte(hookSecret), req.Header.Get(webhook.SignatureHeader), body, time.Now(), webhook.DefaultMaxAge)
			if err == nil {
				err = json.Unmarshal(body, &ev)
			}
			id := req.Header.Get(webhook.EventIDHeader)
			switch {
			case err != nil:
			case ev.Seq != nil && id != events.MsgID(ev.ID, *ev.Seq):
				err = fmt.Errorf("status callback %s: event id header %q, body %s.%d", ev.Event, id, ev.ID, *ev.Seq)
			case ev.Seq == nil && (ev.Call == nil || !strings.HasPrefix(id, ev.Call.ID+".w")):
				err = fmt.Errorf("webhook request %s: event id header %q, body %s", ev.Event, id, body)
			}
			if err != nil {
				r.bad = append(r.bad, err.Error())
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.got = append(r.got, hookRequest{id: id, event: ev.Event})
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`)) // no actions: the call is hung up
		}))
		t.Cleanup(r.srv.Close)
		return r
	}
	// waitEnded waits until r got the ended status callback of call id and returns all it got.
	waitEnded := func(r *receiver, id string) []hookRequest {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			r.mu.Lock()
			got, bad, ch := slices.Clone(r.got), slices.Clone(r.bad), r.seen
			r.mu.Unlock()
			if len(bad) > 0 {
				t.Fatalf("receiver refused: %v", bad)
			}
			if slices.ContainsFunc(got, func(h hookRequest) bool {
				return h.event == "ended" && strings.HasPrefix(h.id, id+".") && !strings.HasPrefix(h.id, id+".w")
			}) {
				return got
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("no ended status callback of %s within 20s; got %v", id, got)
			}
		}
	}
	kinds := func(got []hookRequest, id string) (status, hook []string) {
		for _, h := range got {
			if rest, ok := strings.CutPrefix(h.id, id+".w"); ok && rest != "" {
				hook = append(hook, h.event)
			} else if strings.HasPrefix(h.id, id+".") {
				status = append(status, h.event)
			}
		}
		return status, hook
	}

	hook, other := newReceiver(), newReceiver()
	e := startEnvWith(t, envOptions{keyExtra: hookKeyYAML(t)})
	for _, tc := range []struct {
		id, callback string
		wantHere     []string // status callbacks the e URL gets
	}{
		{id: "wh-shared", wantHere: []string{"answered", "ended"}},
		{id: "wh-other", callback: other.srv.URL + "/status"},
	} {
		form := url.Values{"d": {"PJSIP/answerwait"}, "c": {"confirmcode"}, "e": {hook.srv.URL + "/hook"}, "wait": {"end"},
			"id": {tc.id}, "callback_events": {"answered,ended"}}
		if tc.callback != "" {
			form.Set("callback", tc.callback)
		}
		r := e.post(form, nil)
		if r.Status != http.StatusOK || r.Envelope.Call == nil || r.Envelope.Call.Outcome != events.Completed || r.Envelope.Call.WebhookError != "" {
			t.Fatalf("%s: %d %s; want 200, completed, no webhook_error", tc.id, r.Status, r.Raw)
		}
		statusRcv := hook
		if tc.callback != "" {
			statusRcv = other
		}
		got := waitEnded(statusRcv, tc.id)
		if st, _ := kinds(got, tc.id); !slices.Equal(st, []string{"answered", "ended"}) {
			t.Errorf("%s: the status callback receiver got status callbacks %v; want [answered ended]", tc.id, st)
		}
		hook.mu.Lock()
		st, wh := kinds(hook.got, tc.id)
		hook.mu.Unlock()
		if !slices.Equal(wh, []string{"answered"}) || !slices.Equal(st, tc.wantHere) {
			t.Errorf("%s: the e URL got webhook requests %v and status callbacks %v; want [answered] and %v", tc.id, wh, st, tc.wantHere)
		}
	}
}
