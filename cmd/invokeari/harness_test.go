package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// Secrets used by the tests; TestNoSecretLeaks greps everything the daemon wrote for them.
const (
	testAPIKey  = "tk-Secret-API-Key-7f3a91"
	testARIUser = "invokeari"
	testARIPass = "ari-Secret-Pass-c0ffee"
)

// testEndpoints are fast versions of every far-end behaviour.
func testEndpoints() map[string]sim.Behavior {
	ring := 20 * time.Millisecond
	return map[string]sim.Behavior{
		"PJSIP/answer":         {Result: sim.Answer, RingAfter: ring, AnswerAfter: 150 * time.Millisecond, HangupAfter: 200 * time.Millisecond},
		"PJSIP/answerwait":     {Result: sim.Answer, RingAfter: ring, AnswerAfter: 100 * time.Millisecond},
		"PJSIP/busy":           {Result: sim.Busy},
		"PJSIP/decline":        {Result: sim.Decline, RingAfter: ring, RingFor: 100 * time.Millisecond},
		"PJSIP/notfound":       {Result: sim.NotFound},
		"PJSIP/unavail":        {Result: sim.Unavail, RingAfter: ring, RingFor: 100 * time.Millisecond},
		"PJSIP/congest":        {Result: sim.Congestion},
		"PJSIP/ring":           {Result: sim.RingForever, RingAfter: ring},
		"PJSIP/down":           {Result: sim.Unreachable, RingFor: 100 * time.Millisecond},
		"PJSIP/offline":        {Result: sim.Offline},
		"Local/busy@sim":       {Result: sim.LocalBusy},
		"Local/unavail@sim":    {Result: sim.LocalUnavail},
		"Local/nope@nocontext": {Result: sim.LocalNonexistent},
	}
}

// syncBuffer collects the daemon's log output safely across goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv is a running daemon with its simulated Asterisk and in-process NATS.
type testEnv struct {
	t      *testing.T
	sim    *sim.Server
	nats   *natstest.Server
	base   string // http://127.0.0.1:port
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	d      *daemon
	client *http.Client // nil: http.DefaultClient
}

func (e *testEnv) http() *http.Client {
	if e.client != nil {
		return e.client
	}
	return http.DefaultClient
}

// startEnv starts sim + NATS + the daemon (through runDaemon, the real wiring) and waits
// until /readyz says ready; extraYAML is appended to the config (startEnvWith has more
// options).
func startEnv(t *testing.T, extraYAML string) *testEnv {
	t.Helper()
	return startEnvWith(t, envOptions{extraYAML: extraYAML})
}

// stop shuts the daemon down and waits for it (at most once).
func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("daemon stopped with error: %v", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Errorf("daemon did not stop within 30s")
	}
}

// waitReady polls /readyz until it reports want, with a deadline.
func (e *testEnv) waitReady(want bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		resp, err := e.http().Get(e.base + "/readyz")
		if err == nil {
			last = map[string]any{}
			_ = json.NewDecoder(resp.Body).Decode(&last)
			resp.Body.Close()
			if (resp.StatusCode == http.StatusOK) == want {
				return last
			}
		}
		waitABit()
	}
	e.t.Fatalf("readyz never became ready=%v; last %v", want, last)
	return nil
}

// waitABit paces polling loops that have their own deadline (not a synchronisation sleep).
func waitABit() { <-time.After(20 * time.Millisecond) }

// reply is a decoded envelope with its HTTP status.
type reply struct {
	Status   int
	Header   http.Header
	Envelope struct {
		Status   string `json:"status"`
		Response struct {
			Success   bool            `json:"success"`
			HTTPCode  int             `json:"http_code"`
			Response  json.RawMessage `json:"response"`
			CurlError string          `json:"curl_error"`
		} `json:"response"`
		Call  *events.Call `json:"call"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
		Debug *struct {
			Transcript []map[string]any `json:"transcript"`
		} `json:"debug"`
	}
	Raw string
}

// post sends a form request with the test key (unless key is overridden in hdr).
func (e *testEnv) post(form url.Values, hdr map[string]string) reply {
	e.t.Helper()
	return e.postBody("application/x-www-form-urlencoded", form.Encode(), hdr)
}

func (e *testEnv) postBody(contentType, body string, hdr map[string]string) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+"/v2/invokeARI", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("X-API-Key", testAPIKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.http().Do(req)
	if err != nil {
		e.t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if err := json.Unmarshal(raw, &r.Envelope); err != nil {
		e.t.Fatalf("reply is not the JSON envelope (%d): %v\n%s", resp.StatusCode, err, raw)
	}
	return r
}

// endedEvents reads every `ended` event in the stream (by subject filter) until quiet.
func (e *testEnv) streamEvents(t *testing.T, subject string, want int) []events.Event {
	t.Helper()
	nc, err := nats.Connect(e.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for len(out) < want {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("stream %s: got %d of %d events: %v", subject, len(out), want, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	// Anything beyond want is a duplicate or an extra event.
	if m, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatalf("stream %s: more than %d events; extra: %s", subject, want, m.Data())
	}
	return out
}

// requestsTo counts simulator requests whose path starts with prefix.
func (e *testEnv) requestsTo(method, prefix string) int {
	n := 0
	for _, r := range e.sim.Requests() {
		if r.Method == method && strings.HasPrefix(r.Path, prefix) {
			n++
		}
	}
	return n
}
