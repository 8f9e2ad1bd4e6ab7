package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/webhook"
)

const hookSecret = "hook-Secret-5e11"

// hookKeyYAML gives the test key callbacks to 127.0.0.1, signed with hookSecret from a file.
func hookKeyYAML(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "webhook-secret")
	if err := os.WriteFile(p, []byte(hookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("    webhooks: {allow: [\"127.0.0.1\"], secret_file: %q}", p)
}

// hookReceiver is a status callback receiver that checks every signature; while down it
// answers 500 to everything.
type hookReceiver struct {
	t    *testing.T
	srv  *httptest.Server
	down atomic.Bool

	mu      sync.Mutex
	got     map[string][]events.Event // call id → events answered 2xx, in arrival order
	refused int                       // requests answered 500 while down
	bad     []string
	changed chan struct{}
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{t: t, got: map[string][]events.Event{}, changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		defer func() { close(r.changed); r.changed = make(chan struct{}) }()
		var ev events.Event
		err := webhook.Verify([]byte(hookSecret), req.Header.Get(webhook.SignatureHeader), body, time.Now(), webhook.DefaultMaxAge)
		if err == nil {
			err = json.Unmarshal(body, &ev)
		}
		if err == nil && req.Header.Get(webhook.EventIDHeader) != events.MsgID(ev.ID, ev.Seq) {
			err = fmt.Errorf("event id header %q for %s.%d", req.Header.Get(webhook.EventIDHeader), ev.ID, ev.Seq)
		}
		if err != nil {
			r.bad = append(r.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.down.Load() {
			r.refused++
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		r.got[ev.ID] = append(r.got[ev.ID], ev)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// wait waits until ok holds over the receiver's state.
func (r *hookReceiver) wait(limit time.Duration, what string, ok func() bool) {
	r.t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		r.mu.Lock()
		done, ch := ok(), r.changed
		r.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			r.t.Fatalf("callback receiver: %s not within %s", what, limit)
		}
	}
}

// seqs of call id's delivered events, in arrival order.
func (r *hookReceiver) seqs(id string) []uint64 {
	var out []uint64
	for _, ev := range r.got[id] {
		out = append(out, ev.Seq)
	}
	return out
}

func TestCallbacksEndToEnd(t *testing.T) {
	rcv := newHookReceiver(t)
	e := startEnvWith(t, envOptions{keyExtra: hookKeyYAML(t)})

	// HTTP door, every event kind.
	r := e.post(url.Values{"d": {"PJSIP/answer"}, "c": {"confirmcode"}, "e": {"s"}, "wait": {"end"}, "id": {"cb-http"},
		"callback": {rcv.srv.URL + "/status"}, "callback_events": {"initiated,ringing,answered,ended"}}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("originate: %d %s", r.Status, r.Raw)
	}
	// NATS door, the default event set (ended).
	nc := natsClient(t, e.nats)
	nr := natsReq(t, nc, jsonBody(t, map[string]string{"d": "PJSIP/busy", "c": "confirmcode", "e": "s", "wait": "end",
		"id": "cb-nats", "callback": rcv.srv.URL}), nil)
	if nr.Status != http.StatusOK {
		t.Fatalf("NATS originate: %d %s", nr.Status, nr.Raw)
	}
	stream := e.streamEvents(t, events.SubjectPrefix+".cb-http.>", 4)
	var want []uint64
	for _, ev := range stream {
		if ev.Event != events.Progress {
			want = append(want, ev.Seq)
		}
		if ev.Request == nil || ev.Request.Callback != rcv.srv.URL+"/status" || len(ev.Request.CallbackEvents) != 4 {
			t.Errorf("event %s.%d: request %+v; want the callback and its 4 kinds", ev.ID, ev.Seq, ev.Request)
		}
	}
	rcv.wait(20*time.Second, "all events of both calls", func() bool {
		return len(rcv.got["cb-http"]) >= len(want) && len(rcv.got["cb-nats"]) >= 1
	})
	rcv.mu.Lock()
	if got := rcv.seqs("cb-http"); !slices.Equal(got, want) {
		t.Errorf("cb-http delivered seqs %v; want %v (the stream's, in order, once each)", got, want)
	}
	if got := rcv.got["cb-nats"]; len(got) != 1 || got[0].Event != events.Ended || got[0].Call == nil || got[0].Call.Outcome != events.Busy {
		t.Errorf("cb-nats delivered %+v; want one ended event with outcome busy", got)
	}
	if len(rcv.bad) > 0 {
		t.Errorf("receiver refused: %v", rcv.bad)
	}
	rcv.mu.Unlock()
	if err := waitFor(t.Context(), 5*time.Second, func() bool {
		st, ok := e.d.callbacks.State("cb-http")
		return ok && st.Delivered == len(want) && st.Pending == 0
	}); err != nil {
		st, _ := e.d.callbacks.State("cb-http")
		t.Errorf("State(cb-http) = %+v; want %d delivered, none pending", st, len(want))
	}

	// Not allowed: refused before anything is dialled.
	for _, tc := range []struct{ field, value string }{
		{"callback", "http://127.0.0.2:1/x"}, {"callback", "http://169.254.169.254/latest"}, {"e", "http://10.0.0.1/hook"},
	} {
		id := "cb-denied-" + tc.field
		form := url.Values{"d": {"PJSIP/answer"}, "c": {"confirmcode"}, "e": {"s"}, "id": {id}}
		form.Set(tc.field, tc.value)
		r := e.post(form, nil)
		if r.Status != http.StatusForbidden || r.Envelope.Error == nil || r.Envelope.Error.Code != "webhook_not_allowed" || r.Envelope.Error.Field != tc.field {
			t.Errorf("%s=%s: %d %s; want 403 webhook_not_allowed on %s", tc.field, tc.value, r.Status, r.Raw, tc.field)
		}
		for _, req := range e.sim.Requests() {
			if req.Path == "/ari/channels" && strings.Contains(req.Query, id) {
				t.Errorf("%s: dialled although refused", id)
			}
		}
	}
}

// TestCallbacksSurviveSIGKILL: the receiver is down while calls end, the daemon is
// SIGKILLed with deliveries pending, a new daemon starts and retries, NATS restarts, the
// receiver recovers: every asked-for event arrives, in order per call, with the stream's
// event ids.
func TestCallbacksSurviveSIGKILL(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.down.Store(true)
	keyYAML := hookKeyYAML(t)
	e := newFaultEnvWith(t, "callbacks-sigkill", 5*time.Second, func(c *testConfig) {
		c.keyExtra = keyYAML
		c.extra = "callbacks: {min_backoff: 50ms, max_backoff: 300ms, timeout: 1s}\n"
	})
	const n = 12
	var ids []string
	for i := range n {
		id := fmt.Sprintf("cbk-%02d", i)
		ids = append(ids, id)
		kind := faultKinds[i%len(faultKinds)]
		form := url.Values{"d": {kind.endpoint}, "c": {"from-internal"}, "e": {"100"}, "t": {fmt.Sprint(kind.t)},
			"wait": {"accepted"}, "id": {id}, "callback": {rcv.srv.URL + "/cb"}, "callback_events": {"initiated,ringing,answered,ended"}}
		req, _ := http.NewRequest(http.MethodPost, *e.base.Load()+"/v2/invokeARI", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-API-Key", testAPIKey)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("originate %s: %d %s", id, resp.StatusCode, body)
		}
	}
	e.watch.waitCount(t, events.Ended, n/2, 30*time.Second)
	rcv.wait(20*time.Second, "retries while down", func() bool { return rcv.refused >= 2*n })
	e.current().kill() // SIGKILL
	e.startDaemon()
	e.watch.waitCount(t, events.Ended, n, 30*time.Second)
	refused := func() int { rcv.mu.Lock(); defer rcv.mu.Unlock(); return rcv.refused }
	before := refused()
	rcv.wait(30*time.Second, "the new daemon retrying", func() bool { return rcv.refused > before })
	e.nats.Restart(t) // and NATS restarts while deliveries are pending
	rcv.down.Store(false)

	// What must arrive: every stream event of the asked-for kinds.
	log := e.openStream()
	log.readUntil(t, func() bool {
		for _, id := range ids {
			if log.endedCount(id) == 0 {
				return false
			}
		}
		return true
	}, 300*time.Millisecond, 30*time.Second)
	want := map[string][]uint64{}
	for _, id := range ids {
		for _, ev := range log.byID[id] {
			if ev.Event != events.Progress {
				want[id] = append(want[id], ev.Seq)
			}
		}
	}
	rcv.wait(60*time.Second, "every event after the restart", func() bool {
		for id, seqs := range want {
			for _, s := range seqs {
				if !slices.Contains(rcv.seqs(id), s) {
					return false
				}
			}
		}
		return true
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	repeats := 0
	for id, seqs := range want {
		got := rcv.seqs(id)
		for i := 1; i < len(got); i++ {
			if got[i] < got[i-1] {
				t.Errorf("call %s: delivered out of order %v (stream %v)", id, got, seqs)
			}
		}
		repeats += len(got) - len(slices.Compact(slices.Clone(got)))
	}
	if len(rcv.bad) > 0 {
		t.Errorf("receiver refused: %v", rcv.bad)
	}
	t.Logf("%d calls, %d events, %d refused while down, %d repeated after the SIGKILL (at-least-once)",
		n, countSeqs(want), rcv.refused, repeats)
	e.stopDaemon()
	if r := e.raced(); r != "" {
		t.Errorf("daemon race:\n%s", r)
	}
}

func countSeqs(m map[string][]uint64) int {
	n := 0
	for _, s := range m {
		n += len(s)
	}
	return n
}

// TestExampleConfigWebhooks: the example config, with its secrets present, loads and
// validates, and its webhooks block reaches the key.
func TestExampleConfigWebhooks(t *testing.T) {
	c, err := loadConfig("../../configs/invokeari.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.applyDefaults()
	if err := c.resolveSecrets(func(string) string { return "from-env" }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	w := c.Keys[0].Webhooks
	if string(w.Secret) != "from-env" || len(w.Allow) == 0 || c.Callbacks.GiveUpAfter != 24*time.Hour {
		t.Errorf("webhooks %+v, callbacks %+v", w, c.Callbacks)
	}
	c.Keys[0].Webhooks.SecretEnv = "UNSET"
	if err := c.resolveSecrets(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "keys[0].webhooks.secret_env") {
		t.Errorf("empty secret env: %v", err)
	}
}

// TestCLICallCallback: `invokeari call -callback URL -callback-events …` over both doors
// gets the asked-for events POSTed to the receiver.
func TestCLICallCallback(t *testing.T) {
	rcv := newHookReceiver(t)
	e := startEnvWith(t, envOptions{keyExtra: hookKeyYAML(t)})
	for _, via := range []string{"http", "nats"} {
		id := "cli-cb-" + via
		out := &syncBuffer{}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		err := runCall(ctx, []string{"-via", via, "-nats", e.nats.URL, "-url", e.base + "/v2/invokeARI", "-key", testAPIKey,
			"-d", "PJSIP/answer", "-wait", "end", "-id", id, "-callback", rcv.srv.URL + "/cb", "-callback-events", "answered,ended"},
			out, func(string) string { return "" })
		cancel()
		if err != nil {
			t.Fatalf("call via %s: %v\n%s", via, err, out)
		}
		rcv.wait(20*time.Second, id+" answered and ended", func() bool { return len(rcv.got[id]) >= 2 })
		rcv.mu.Lock()
		got := rcv.got[id]
		if len(got) != 2 || got[0].Event != events.KindAnswered || got[1].Event != events.Ended {
			t.Errorf("%s: receiver got %d events %v; want answered, ended", id, len(got), got)
		}
		rcv.mu.Unlock()
	}
}
