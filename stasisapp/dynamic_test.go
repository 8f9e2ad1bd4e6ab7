package stasisapp_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// runDynamicApp runs an App with one configured simulator ("pbx", from startApp's
// setup) and dynamic servers enabled; connects counts Connect calls.
func runDynamicApp(t *testing.T, store stasisapp.Store, idle, connectWait time.Duration) (*stasisapp.App, *memPublisher, *sync.Map) {
	t.Helper()
	base := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: map[string]sim.Behavior{}})
	if err := base.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = base.Close() })
	c, err := ari.NewClient(ari.Config{URL: base.URL(), Username: "u", Password: "p", App: "apptest"})
	if err != nil {
		t.Fatal(err)
	}
	connects := &sync.Map{}
	pub := newMemPublisher()
	app, err := stasisapp.New(stasisapp.Config{Servers: []stasisapp.Server{{Name: "pbx", AppName: "apptest", ARI: c}},
		Publisher: pub, Store: store,
		Dynamic: &stasisapp.DynamicConfig{AppName: "apptest", IdleTimeout: idle, ConnectWait: connectWait,
			Connect: func(ds stasisapp.DynamicServer) (stasisapp.Asterisk, error) {
				n, _ := connects.LoadOrStore(ds.URL, new(int))
				*n.(*int)++ // Connect runs under the App's link lock
				return ari.NewClient(ari.Config{URL: ds.URL, Username: ds.Username, Password: ds.Password, App: "apptest",
					MinBackoff: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
			}}})
	if err != nil {
		t.Fatal(err)
	}
	runApp(t, app)
	waitFor(t, "configured link connected", func() bool {
		for _, s := range app.Status() {
			if s.Name == "pbx" {
				return s.Connected
			}
		}
		return false
	})
	return app, pub, connects
}

func dynStatus(app *stasisapp.App) []stasisapp.LinkStatus {
	var out []stasisapp.LinkStatus
	for _, s := range app.Status() {
		if s.Dynamic {
			out = append(out, s)
		}
	}
	return out
}

func dynReq(id, url, user, pass string) stasisapp.Request {
	r := req(id, "PJSIP/answer", 5*time.Second, stasisapp.WaitAnswer)
	r.Dynamic = &stasisapp.DynamicServer{URL: url, Username: user, Password: pass}
	r.Server = stasisapp.DynamicServerName(url)
	return r
}

func TestDynamicLinkLifecycle(t *testing.T) {
	dyn := sim.New(sim.Config{Username: "du", Password: "dp", Contexts: map[string][]string{"confirmcode": {"s"}},
		Endpoints: map[string]sim.Behavior{"PJSIP/answer": {Result: sim.Answer, AnswerAfter: 50 * time.Millisecond, HangupAfter: 50 * time.Millisecond}}})
	if err := dyn.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dyn.Close() })
	app, pub, _ := runDynamicApp(t, nil, time.Second, time.Second)
	ctx := context.Background()

	// Wrong credentials: the link never connects; the originate gives up after ConnectWait.
	_, err := app.Originate(ctx, dynReq("dyn1", dyn.URL(), "du", "wrong"))
	if !errors.Is(err, stasisapp.ErrNotConnected) || strings.Contains(err.Error(), "not running") {
		t.Fatalf("originate with wrong credentials: %v; want ErrNotConnected from the link", err)
	}
	// Right credentials replace the link that never connected.
	res, err := app.Originate(ctx, dynReq("dyn2", dyn.URL(), "du", "dp"))
	if err != nil || res.Call.State != events.StateAnswered && res.Call.Outcome != events.Answered {
		t.Fatalf("originate on dynamic server: %+v, %v; want answered", res.Call, err)
	}
	if got := dyn.Originates(); got != 1 {
		t.Errorf("dynamic simulator originates = %d; want 1", got)
	}
	st := dynStatus(app)
	if len(st) != 1 || st[0].Name != stasisapp.DynamicServerName(dyn.URL()) || !st[0].Connected {
		t.Fatalf("dynamic status %+v; want one connected link", st)
	}
	// Other credentials on the working link are refused.
	if _, err := app.Originate(ctx, dynReq("dyn3", dyn.URL(), "du", "other")); !errors.Is(err, stasisapp.ErrDynamicCredentials) {
		t.Fatalf("originate with other credentials on an open link: %v; want ErrDynamicCredentials", err)
	}
	evs := pub.waitEnded(t, "dyn2", 10*time.Second)
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), `"dp"`) {
			t.Errorf("event holds the password: %s", b)
		}
	}
	waitFor(t, "idle dynamic link closed", func() bool { return len(dynStatus(app)) == 0 })
}

func TestDynamicRefusedWithoutConfig(t *testing.T) {
	e := startApp(t, 100*time.Millisecond, nil)
	_, err := e.app.Originate(context.Background(), dynReq("dynx", "http://127.0.0.1:1/ari", "u", "p"))
	if !errors.Is(err, stasisapp.ErrUnknownServer) {
		t.Fatalf("dynamic request to an App without dynamic servers: %v; want ErrUnknownServer", err)
	}
	plain := req("dyny", "PJSIP/x", time.Second, stasisapp.WaitAnswer)
	plain.Server = stasisapp.DynamicServerName("http://127.0.0.1:1/ari")
	if _, err := e.app.Originate(context.Background(), plain); !errors.Is(err, stasisapp.ErrUnknownServer) {
		t.Fatalf("dynamic server name without credentials: %v; want ErrUnknownServer", err)
	}
}

// memStore is a Store holding calls in memory; Load treats "*" as any server.
type memStore struct {
	mu    sync.Mutex
	calls []events.StoredCall
}

func (s *memStore) Save(_ context.Context, c events.StoredCall) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	return nil
}

func (s *memStore) Load(_ context.Context, server, app string) ([]events.StoredCall, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []events.StoredCall
	for _, c := range s.calls {
		if (server == "*" || c.Server == server) && c.App == app {
			out = append(out, c)
		}
	}
	return out, nil
}

func (s *memStore) LastEvent(context.Context, string) (events.Event, bool, error) {
	return events.Event{}, false, nil
}

func (s *memStore) Ended(context.Context, string) (events.Event, string, bool, error) {
	return events.Event{}, "", false, nil
}

func (s *memStore) Forget(string) {}

func (s *memStore) LastEventTime(context.Context) (time.Time, bool, error) {
	return time.Time{}, false, nil
}

// A call on a dynamic server still in flight when the daemon restarted cannot be
// followed (its credentials were never stored): it ends unknown with the reason.
func TestResumedDynamicCallEndsUnknown(t *testing.T) {
	r := dynReq("dynresumed", "http://127.0.0.1:1/ari", "du", "pw-Secret-77")
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "pw-Secret-77") || strings.Contains(string(b), "127.0.0.1:1") {
		t.Fatalf("stored request holds dynamic server details: %s", b)
	}
	store := &memStore{calls: []events.StoredCall{{Server: r.Server, App: "apptest", ID: r.ID, Request: b,
		Registered: time.Now()}}}
	_, pub, connects := runDynamicApp(t, store, time.Minute, time.Second)
	evs := pub.waitEnded(t, r.ID, 10*time.Second)
	last := evs[len(evs)-1]
	if last.Outcome != events.Unknown || !strings.Contains(last.Reason, "dynamic ARI server") {
		t.Fatalf("resumed dynamic call ended %q (%q); want unknown with the reason", last.Outcome, last.Reason)
	}
	n := 0
	connects.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("a resumed dynamic call made %d connections; want none", n)
	}
}
