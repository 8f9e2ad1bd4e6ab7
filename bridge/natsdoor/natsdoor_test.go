package natsdoor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp"
)

const testKey = "door-test-key-0123456789"

// fakeOriginator records requests and answers with fn (default: an accepted call).
type fakeOriginator struct {
	mu    sync.Mutex
	reqs  []stasisapp.Request
	calls chan stasisapp.Request // told of every Originate, if not nil
	fn    func(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error)
}

var _ Originator = (*fakeOriginator)(nil)

func (f *fakeOriginator) Originate(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.calls != nil {
		f.calls <- req
	}
	if req.Release != nil {
		defer req.Release()
	}
	if f.fn != nil {
		return f.fn(ctx, req)
	}
	return acceptedResult(req), nil
}

func (f *fakeOriginator) requests() []stasisapp.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stasisapp.Request(nil), f.reqs...)
}

func acceptedResult(req stasisapp.Request) stasisapp.Result {
	return stasisapp.Result{
		Call:      events.Call{ID: req.ID, Server: req.Server, State: events.StateDialing},
		ARIStatus: 200,
		ARIBody:   map[string]any{"id": req.ID},
	}
}

type fixture struct {
	nc   *nats.Conn // the requester's connection
	orig *fakeOriginator
	stop func() error // cancels Run and returns its error
}

// startDoor runs a door on a fresh in-process NATS with gate policy: one server pbx1,
// one key "tester" allowed only context confirmcode.
func startDoor(t *testing.T, cfg Config, orig *fakeOriginator) *fixture {
	t.Helper()
	ns := natstest.Start(t)
	doorConn, _ := ns.Connect(t)
	reqConn, _ := ns.Connect(t)
	sum := sha256.Sum256([]byte(testKey))
	gate, err := api.NewGate(api.Config{
		Servers:  []api.Server{{Name: "pbx1", URL: "http://127.0.0.1:1/ari", Username: "u", Password: "p"}},
		Keys:     []api.Key{{Name: "tester", SHA256: hex.EncodeToString(sum[:]), Contexts: []string{"confirmcode"}}},
		Defaults: api.Defaults{Server: "pbx1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Conn, cfg.Gate, cfg.Originator = doorConn, gate, orig
	d := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("Run did not return within 20s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	// The subscription is live once a request with no responders no longer fails fast.
	waitSubscribed(t, reqConn)
	return &fixture{nc: reqConn, orig: orig, stop: stop}
}

// waitSubscribed waits until the door's subscription has reached the server (probe
// messages are invalid JSON, so they never reach the originator).
func waitSubscribed(t *testing.T, nc *nats.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, err := nc.Request(Subject, []byte("probe"), 2*time.Second)
		if err == nil {
			return
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("probe: %v", err)
		}
		<-time.After(10 * time.Millisecond) // pacing a polling loop with its own deadline
	}
	t.Fatal("door never subscribed")
}

type reply struct {
	status     string
	retryAfter string
	env        api.Envelope
	errCode    string
	errField   string
	raw        string
}

func request(t *testing.T, nc *nats.Conn, body string, hdr map[string]string) reply {
	t.Helper()
	m := nats.NewMsg(Subject)
	m.Data = []byte(body)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	return decodeReply(t, r)
}

func decodeReply(t *testing.T, r *nats.Msg) reply {
	t.Helper()
	out := reply{status: r.Header.Get(StatusHeader), retryAfter: r.Header.Get(RetryAfterHeader), raw: string(r.Data)}
	var raw struct {
		Error *struct{ Code, Field string } `json:"error"`
	}
	if err := json.Unmarshal(r.Data, &out.env); err != nil {
		t.Fatalf("reply is not the envelope: %v: %s", err, r.Data)
	}
	if err := json.Unmarshal(r.Data, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Error != nil {
		out.errCode, out.errField = raw.Error.Code, raw.Error.Field
	}
	return out
}

func keyHdr() map[string]string { return map[string]string{"X-API-Key": testKey} }

// TestRequests covers admission over NATS: what reaches the originator and what is
// refused, with the status header and error of the HTTP door.
func TestRequests(t *testing.T) {
	orig := &fakeOriginator{fn: func(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error) {
		switch req.Endpoint {
		case "PJSIP/full":
			return stasisapp.Result{}, stasisapp.ErrBackpressure
		case "PJSIP/down":
			return stasisapp.Result{}, stasisapp.ErrNotConnected
		}
		return acceptedResult(req), nil
	}}
	f := startDoor(t, Config{RequireKey: true}, orig)
	good := `{"d":"PJSIP/6001","c":"confirmcode","e":"s","wait":"accepted","id":"%s"}`
	cases := []struct {
		name       string
		body       string
		hdr        map[string]string
		status     string
		code       string
		field      string
		retryAfter string
		dialled    bool
	}{
		{name: "accepted", body: strings.Replace(good, "%s", "ok-1", 1), hdr: keyHdr(), status: "200", dialled: true},
		{name: "missing key", body: strings.Replace(good, "%s", "nokey", 1), status: "401", code: api.CodeMissingAPIKey},
		{name: "unknown key", body: strings.Replace(good, "%s", "badkey", 1), hdr: map[string]string{"X-API-Key": "nope"}, status: "401", code: api.CodeInvalidAPIKey},
		{name: "missing key beats big body", body: strings.Repeat("x", api.MaxBody+1), status: "401", code: api.CodeMissingAPIKey},
		{name: "body too large", body: strings.Repeat("x", api.MaxBody+1), hdr: keyHdr(), status: "413", code: api.CodeBodyTooLarge},
		{name: "bad json", body: `{"d":`, hdr: keyHdr(), status: "400", code: api.CodeInvalidBody},
		{name: "form body is not JSON", body: "d=PJSIP/1&c=confirmcode&e=s", hdr: keyHdr(), status: "400", code: api.CodeInvalidBody},
		{name: "context not allowed", body: `{"d":"PJSIP/6001","c":"other","e":"s"}`, hdr: keyHdr(), status: "403", field: "c"},
		{name: "id vs header", body: strings.Replace(good, "%s", "abc", 1), hdr: map[string]string{"X-API-Key": testKey, "Idempotency-Key": "xyz"}, status: "400", field: "id"},
		{name: "backpressure", body: `{"d":"PJSIP/full","c":"confirmcode","e":"s"}`, hdr: keyHdr(), status: "503", code: api.CodeBackpressure, retryAfter: "1", dialled: true},
		{name: "not connected", body: `{"d":"PJSIP/down","c":"confirmcode","e":"s"}`, hdr: keyHdr(), status: "503", code: api.CodeNotConnected, field: "ari", dialled: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(orig.requests())
			r := request(t, f.nc, tc.body, tc.hdr)
			if r.status != tc.status {
				t.Fatalf("%s = %q, want %q: %s", StatusHeader, r.status, tc.status, r.raw)
			}
			wantEnv := api.StatusFail
			if tc.status == "200" {
				wantEnv = api.StatusSuccess
			}
			if r.env.Status != wantEnv {
				t.Errorf("envelope status %q, want %q", r.env.Status, wantEnv)
			}
			if tc.code != "" && r.errCode != tc.code {
				t.Errorf("error.code = %q, want %q", r.errCode, tc.code)
			}
			if tc.field != "" && r.errField != tc.field {
				t.Errorf("error.field = %q, want %q", r.errField, tc.field)
			}
			if r.retryAfter != tc.retryAfter {
				t.Errorf("%s = %q, want %q", RetryAfterHeader, r.retryAfter, tc.retryAfter)
			}
			if got := len(orig.requests()) - before; got != map[bool]int{true: 1}[tc.dialled] {
				t.Errorf("originator called %d times, want dialled=%v", got, tc.dialled)
			}
		})
	}
	reqs := orig.requests()
	if len(reqs) == 0 || reqs[0].Door != "nats" || reqs[0].Key != "tester" || reqs[0].ID != "ok-1" {
		t.Errorf("first request %+v: want door nats, key tester, id ok-1", reqs)
	}
}

// TestNoKeyRunsAsInternal: without RequireKey a message with no key is served under
// the internal principal; a key that is sent is still checked.
func TestNoKeyRunsAsInternal(t *testing.T) {
	orig := &fakeOriginator{}
	f := startDoor(t, Config{}, orig)
	// "other" is not among tester's contexts, but internal has no per-key policy.
	r := request(t, f.nc, `{"d":"PJSIP/6001","c":"other","e":"s"}`, nil)
	if r.status != "200" {
		t.Fatalf("no key: %s %s", r.status, r.raw)
	}
	if got := orig.requests()[0].Key; got != api.InternalName {
		t.Errorf("key = %q, want %q", got, api.InternalName)
	}
	if r := request(t, f.nc, `{"d":"PJSIP/6001","c":"confirmcode","e":"s"}`, map[string]string{"X-API-Key": "wrong"}); r.status != "401" {
		t.Errorf("wrong key: %s %s", r.status, r.raw)
	}
}

// TestFireAndForget: a plain publish is originated with wait=accepted and nothing replies.
func TestFireAndForget(t *testing.T) {
	orig := &fakeOriginator{calls: make(chan stasisapp.Request, 1)}
	observed := make(chan int, 1)
	f := startDoor(t, Config{Observe: func(key string, status int) {
		if key == "tester" {
			observed <- status
		}
	}}, orig)
	m := nats.NewMsg(Subject)
	m.Data = []byte(`{"d":"PJSIP/6001","c":"confirmcode","e":"s","wait":"end","id":"ff-1"}`)
	m.Header.Set("X-API-Key", testKey)
	if err := f.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-orig.calls:
		if req.Wait != stasisapp.WaitAccepted || req.ID != "ff-1" {
			t.Errorf("fire-and-forget request wait=%q id=%q, want accepted/ff-1", req.Wait, req.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fire-and-forget never reached the originator")
	}
	select {
	case st := <-observed:
		if st != 200 {
			t.Errorf("observed status %d, want 200", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no observation")
	}
}

// TestStopAnswersInFlight: on ctx cancel, a request in flight and those already
// delivered to the door (waiting for a handler slot) are all answered; Run returns
// only after that.
func TestStopAnswersInFlight(t *testing.T) {
	release := make(chan struct{})
	orig := &fakeOriginator{calls: make(chan stasisapp.Request, 8), fn: func(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error) {
		<-release
		return acceptedResult(req), nil
	}}
	f := startDoor(t, Config{MaxHandlers: 1, Grace: 10 * time.Second}, orig)
	const n = 3
	replies := make(chan *nats.Msg, n)
	inbox := nats.NewInbox()
	sub, err := f.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range n {
		m := nats.NewMsg(Subject)
		m.Reply = inbox
		m.Data = []byte(`{"d":"PJSIP/6001","c":"confirmcode","e":"s","id":"stop-` + string(rune('a'+i)) + `"}`)
		if err := f.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	<-orig.calls // the first is in flight; the others wait for its slot
	stopped := make(chan error, 1)
	go func() { stopped <- f.stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a request was in flight", err)
	case r := <-replies:
		t.Fatalf("reply before release: %s", r.Data)
	case <-time.After(200 * time.Millisecond): // proving a negative needs some window
	}
	close(release)
	for i := range n {
		select {
		case m := <-replies:
			if r := decodeReply(t, m); r.status != "200" {
				t.Errorf("reply %d: %s %s", i, r.status, r.raw)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d replies after stop", i, n)
		}
	}
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	// The subscription is gone: a new request finds no responder.
	if _, err := f.nc.Request(Subject, []byte("{}"), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request after stop: %v, want no responders", err)
	}
}

// TestStopGraceCutsWaits: after Grace a waiting request is answered 503 draining with
// the call as known, and a request still pending is refused without dialling.
func TestStopGraceCutsWaits(t *testing.T) {
	orig := &fakeOriginator{calls: make(chan stasisapp.Request, 8), fn: func(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error) {
		<-ctx.Done()
		res := acceptedResult(req)
		res.Call.State = events.StateRinging
		return res, errors.Join(stasisapp.ErrWaitTimeout, ctx.Err())
	}}
	f := startDoor(t, Config{MaxHandlers: 1, Grace: 100 * time.Millisecond}, orig)
	replies := make(chan *nats.Msg, 2)
	inbox := nats.NewInbox()
	sub, err := f.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for _, id := range []string{"grace-1", "grace-2"} {
		m := nats.NewMsg(Subject)
		m.Reply = inbox
		m.Data = []byte(`{"d":"PJSIP/6001","c":"confirmcode","e":"s","wait":"end","id":"` + id + `"}`)
		if err := f.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	<-orig.calls
	if err := f.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	got := map[string]reply{}
	for range 2 {
		select {
		case m := <-replies:
			r := decodeReply(t, m)
			id := ""
			if r.env.Call != nil {
				id = r.env.Call.ID
			}
			got[id] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of 2 replies", len(got))
		}
	}
	if r, ok := got["grace-1"]; !ok || r.status != "503" || r.errCode != api.CodeDraining || r.env.Call.State != events.StateRinging {
		t.Errorf("in-flight request: %+v", r)
	}
	if r, ok := got[""]; !ok || r.status != "503" || r.errCode != api.CodeDraining {
		t.Errorf("pending request: %+v", got)
	}
	if n := len(orig.requests()); n != 1 {
		t.Errorf("originator called %d times, want 1 (the pending request must not dial)", n)
	}
}
