package stasisapp_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// memPublisher keeps published events in memory and lets tests wait for them. The App
// only needs the Publisher interface; NATS itself is tested in events and cmd/invokeari.
type memPublisher struct {
	mu      sync.Mutex
	evs     []events.Event
	changed chan struct{}
}

func newMemPublisher() *memPublisher { return &memPublisher{changed: make(chan struct{})} }

func (p *memPublisher) Publish(_ context.Context, ev events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, ev)
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

func (p *memPublisher) Accepting() bool { return true }

// waitEnded waits for the `ended` event of id and returns every event of that call.
func (p *memPublisher) waitEnded(t *testing.T, id string, within time.Duration) []events.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		p.mu.Lock()
		var mine []events.Event
		ended := false
		for _, ev := range p.evs {
			if ev.ID == id {
				mine = append(mine, ev)
				ended = ended || ev.Event == events.Ended
			}
		}
		ch := p.changed
		p.mu.Unlock()
		if ended {
			return mine
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("call %s: no ended event within %s; got %+v", id, within, mine)
		}
	}
}

type appEnv struct {
	sim *sim.Server
	app *stasisapp.App
	pub *memPublisher
}

// startApp runs an App against a simulator; minBackoff sets how long the ARI client waits
// before reconnecting, so a test can make things happen while the link is down.
func startApp(t *testing.T, minBackoff time.Duration, eps map[string]sim.Behavior) *appEnv {
	t.Helper()
	return startAppDial(t, minBackoff, eps, nil)
}

// startAppDial is startApp with the ARI client's connections opened by dial (nil: plain).
func startAppDial(t *testing.T, minBackoff time.Duration, eps map[string]sim.Behavior,
	dial func(ctx context.Context, network, address string) (net.Conn, error)) *appEnv {
	t.Helper()
	return startAppWith(t, minBackoff, eps, dial, nil)
}

// startAppWith is startAppDial publishing to pub (nil: a memPublisher, in appEnv.pub).
func startAppWith(t *testing.T, minBackoff time.Duration, eps map[string]sim.Behavior,
	dial func(ctx context.Context, network, address string) (net.Conn, error), pub stasisapp.Publisher) *appEnv {
	t.Helper()
	s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: eps,
		Contexts: map[string][]string{"confirmcode": {"s"}}, BootDelay: 200 * time.Millisecond})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := ari.NewClient(ari.Config{URL: s.URL(), Username: "u", Password: "p", App: "apptest",
		MinBackoff: minBackoff, MaxBackoff: minBackoff, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	mem := newMemPublisher()
	if pub == nil {
		pub = mem
	}
	app, err := stasisapp.New(stasisapp.Config{Servers: []stasisapp.Server{{Name: "pbx", AppName: "apptest", ARI: c}},
		Publisher: pub, ReconcileGrace: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runApp(t, app)
	waitFor(t, "link connected", func() bool { return app.Status()[0].Connected })
	return &appEnv{sim: s, app: app, pub: mem}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(10 * time.Millisecond) // polling pace under a deadline
	}
}

func req(id, endpoint string, timeout time.Duration, wait stasisapp.Wait) stasisapp.Request {
	return stasisapp.Request{ID: id, Server: "pbx", Endpoint: endpoint, Context: "confirmcode", Extension: "s",
		Timeout: timeout, Wait: wait, Door: "test"}
}

// A call whose channel ends while the ARI link is down ends `unknown` with the reason,
// never silently and never guessed.
func TestCallEndedWhileLinkDownIsUnknown(t *testing.T) {
	// Reconnect waits 1.25–2.5 s (jittered): the 1 s ring timeout fires while we are away.
	e := startApp(t, 2500*time.Millisecond, map[string]sim.Behavior{
		"PJSIP/ring": {Result: sim.RingForever, RingAfter: 10 * time.Millisecond}})
	if _, err := e.app.Originate(context.Background(), req("down-1", "PJSIP/ring", time.Second, stasisapp.WaitAccepted)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ringing", func() bool {
		e.pub.mu.Lock()
		defer e.pub.mu.Unlock()
		for _, ev := range e.pub.evs {
			if ev.Event == events.Ringing {
				return true
			}
		}
		return false
	})
	e.sim.DropWebsockets()
	evs := e.pub.waitEnded(t, "down-1", 10*time.Second)
	last := evs[len(evs)-1]
	if last.Outcome != events.Unknown || !strings.Contains(last.Reason, "ARI link was down") {
		t.Errorf("outcome %q reason %q, want unknown because the link was down", last.Outcome, last.Reason)
	}
	if n := countEnded(evs); n != 1 {
		t.Errorf("%d ended events", n)
	}
}

// A call answered while the link is down cannot enter our Stasis app: Asterisk hangs it
// up (STASISSTATUS=FAILED, recording s5_originate_without_ws) and nobody sees it. At
// reconnect the channel is gone: the outcome is `unknown` with the reason, and the call
// is not continued.
func TestAnsweredWhileLinkDownIsUnknown(t *testing.T) {
	e := startApp(t, 2500*time.Millisecond, map[string]sim.Behavior{
		"PJSIP/answer": {Result: sim.Answer, RingAfter: 10 * time.Millisecond, AnswerAfter: 200 * time.Millisecond}})
	if _, err := e.app.Originate(context.Background(), req("up-1", "PJSIP/answer", 10*time.Second, stasisapp.WaitAccepted)); err != nil {
		t.Fatal(err)
	}
	e.sim.DropWebsockets()
	evs := e.pub.waitEnded(t, "up-1", 15*time.Second)
	last := evs[len(evs)-1]
	if last.Outcome != events.Unknown || !strings.Contains(last.Reason, "ARI link was down") {
		t.Errorf("outcome %q reason %q, want unknown because the link was down", last.Outcome, last.Reason)
	}
	for _, r := range e.sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/continue") {
			t.Errorf("a gone call was continued: %+v", r)
		}
	}
}

// ApplicationReplaced takes the link out of readiness, with the reason.
func TestApplicationReplacedIsNotReady(t *testing.T) {
	e := startApp(t, 100*time.Millisecond, nil)
	c, err := ari.NewClient(ari.Config{URL: e.sim.URL(), Username: "u", Password: "p", App: "apptest"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, nopHandler{}) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "replaced", func() bool { return !e.app.Status()[0].Connected })
	if st := e.app.Status()[0]; !strings.Contains(st.Reason, "ApplicationReplaced") {
		t.Errorf("status %+v, want the ApplicationReplaced reason", st)
	}
	_, err = e.app.Originate(context.Background(), req("rep-1", "PJSIP/x", time.Second, stasisapp.WaitAccepted))
	if !errors.Is(err, stasisapp.ErrNotConnected) {
		t.Errorf("originate while replaced: %v, want ErrNotConnected", err)
	}
}

// Drain hangs up calls still ringing at its deadline: canceled, reason shutdown.
func TestDrainCancelsRingingCalls(t *testing.T) {
	e := startApp(t, 100*time.Millisecond, map[string]sim.Behavior{
		"PJSIP/ring": {Result: sim.RingForever, RingAfter: 10 * time.Millisecond}})
	if _, err := e.app.Originate(context.Background(), req("drain-1", "PJSIP/ring", 30*time.Second, stasisapp.WaitAccepted)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	e.app.Drain(ctx, 5*time.Second)
	evs := e.pub.waitEnded(t, "drain-1", 5*time.Second)
	last := evs[len(evs)-1]
	if last.Outcome != events.Canceled || !strings.Contains(last.Reason, "shutdown") {
		t.Errorf("outcome %q reason %q, want canceled (shutdown)", last.Outcome, last.Reason)
	}
	if _, err := e.app.Originate(context.Background(), req("drain-2", "PJSIP/ring", time.Second, stasisapp.WaitAccepted)); !errors.Is(err, stasisapp.ErrDraining) {
		t.Errorf("originate while draining: %v", err)
	}
}

func countEnded(evs []events.Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Event == events.Ended {
			n++
		}
	}
	return n
}

type nopHandler struct{}

func (nopHandler) HandleEvent(context.Context, ari.Event) {}
func (nopHandler) Connected(context.Context, bool)        {}
func (nopHandler) Disconnected(error)                     {}

// runApp runs app until the test ends; an error other than cancellation fails the test.
func runApp(t *testing.T, app *stasisapp.App) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }() // owned by the test: ends at cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("App.Run: %v", err)
		}
	})
}
