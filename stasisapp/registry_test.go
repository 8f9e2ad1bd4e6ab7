package stasisapp_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// Only the most recent ended calls stay in memory (MaxFinished); an older id is looked
// up in the event stream when it is repeated, and returns the same call without a new
// dial. Every record leaves the registry once its `ended` is stored.
func TestEvictedEndedCallLookedUp(t *testing.T) {
	e := startRegistryApp(t, map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}}, stasisapp.Config{MaxFinished: 2})
	ctx := context.Background()
	e.endBusyCalls(t, "ev", 5)
	res, err := e.app.Originate(ctx, req("ev-0", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
	if err != nil || !res.Replayed || res.Call.ID != "ev-0" || res.Call.Outcome != events.Busy {
		t.Fatalf("repeat of an evicted id: %+v, %v; want the ended busy call, replayed", res.Call, err)
	}
	if !strings.Contains(fmt.Sprint(res.Transcript), "found in the event stream") {
		t.Errorf("transcript %v does not say the call came from the stream", res.Transcript)
	}
	if _, err := e.app.Originate(ctx, req("ev-1", "PJSIP/other", 10*time.Second, stasisapp.WaitAccepted)); !errors.Is(err, stasisapp.ErrIdempotencyConflict) {
		t.Errorf("evicted id with other parameters: %v; want ErrIdempotencyConflict", err)
	}
	if n := e.sim.Originates(); n != 5 {
		t.Errorf("simulator saw %d originates; want 5 (no repeat dialled)", n)
	}
	waitFor(t, "registry empty", func() bool {
		calls, err := e.reg.Load(ctx, "pbx", "regapp")
		return err == nil && len(calls) == 0
	})
}

// lookupCounter is a Store that counts idempotency look-ups (Ended).
type lookupCounter struct {
	stasisapp.Store
	n atomic.Int32
}

func (s *lookupCounter) Ended(ctx context.Context, id string) (events.Event, string, bool, error) {
	s.n.Add(1)
	return s.Store.Ended(ctx, id)
}

// EndedIDs passes the wrapped Store's list through, so the App learns with the counter in place.
func (s *lookupCounter) EndedIDs(ctx context.Context, since time.Time, fn func(id string, at time.Time)) (int, error) {
	l, ok := s.Store.(interface {
		EndedIDs(ctx context.Context, since time.Time, fn func(id string, at time.Time)) (int, error)
	})
	if !ok {
		return 0, errors.New("the wrapped Store lists no ended ids")
	}
	return l.EndedIDs(ctx, since, fn)
}

// logSignal is a slog handler that closes ch when a record whose message starts with
// prefix is logged.
type logSignal struct {
	prefix string
	once   *sync.Once
	ch     chan struct{}
}

func (h logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h logSignal) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
func (h logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logSignal) WithGroup(string) slog.Handler      { return h }

// After a restart the App reads the ids of the calls that ended within the retention
// (headers only, in the background). Until then every new caller id is looked up; from
// then on a new caller id is not, and a repeat of an earlier call still is, and found.
func TestRestartLearnsEndedIDs(t *testing.T) {
	s := startRegistrySim(t, map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}})
	ns := natstest.Start(t)
	ctx := context.Background()
	first, stop := runRegistryApp(t, s, ns, stasisapp.Config{})
	first.endBusyCalls(t, "before", 3)
	stop()

	counter := &lookupCounter{}
	learnt := make(chan struct{})
	logger := slog.New(logSignal{prefix: "ended calls of the previous run learnt", once: &sync.Once{}, ch: learnt})
	e, stop := runRegistryApp(t, s, ns, stasisapp.Config{Logger: logger},
		func(st stasisapp.Store) stasisapp.Store { counter.Store = st; return counter })
	defer stop()
	select {
	case <-learnt:
	case <-time.After(30 * time.Second):
		t.Fatal("the restarted App did not learn the ended calls within 30s")
	}
	before := counter.n.Load()
	if _, err := e.app.Originate(ctx, req("after-restart", "PJSIP/busy", 10*time.Second, stasisapp.WaitEnd)); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("a new caller id after learning was looked up %d times; want 0", n)
	}
	res, err := e.app.Originate(ctx, req("before-1", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
	if err != nil || !res.Replayed || res.Call.Outcome != events.Busy {
		t.Errorf("repeat of a call ended before the restart: %+v, %v; want it replayed, busy", res.Call, err)
	}
	if n := counter.n.Load() - before; n != 1 {
		t.Errorf("look-ups after the repeat: %d; want 1", n)
	}
	if n := s.Originates(); n != 4 {
		t.Errorf("simulator saw %d originates; want 4 (no repeat dialled)", n)
	}
}

// Once ended calls left memory (MaxFinished), only an id that may be one of them is
// looked up in the stream: a generated id never is, a caller's new id is not (the
// evicted-id filter does not hold it), a repeat of an evicted id is.
func TestOnlyEvictedIDsLookedUp(t *testing.T) {
	counter := &lookupCounter{}
	e := startRegistryApp(t, map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}}, stasisapp.Config{MaxFinished: 1},
		func(s stasisapp.Store) stasisapp.Store { counter.Store = s; return counter })
	ctx := context.Background()
	e.endBusyCalls(t, "gl", 3) // the first two leave memory: look-ups are on from here
	before := counter.n.Load()
	fresh := req("0123456789abcdef0123456789abcdef", "PJSIP/busy", 10*time.Second, stasisapp.WaitEnd)
	fresh.FreshID = true
	if res, err := e.app.Originate(ctx, fresh); err != nil || res.Call.Outcome != events.Busy {
		t.Fatalf("generated id: %+v, %v", res.Call, err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("a generated id was looked up %d times; want 0", n)
	}
	if _, err := e.app.Originate(ctx, req("gl-new", "PJSIP/busy", 10*time.Second, stasisapp.WaitEnd)); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("a caller's new id was looked up %d times; want 0", n)
	}
	res, err := e.app.Originate(ctx, req("gl-0", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
	if err != nil || !res.Replayed {
		t.Errorf("repeat of an evicted caller's id: %+v, %v; want the ended call, replayed", res.Call, err)
	}
	if n := counter.n.Load() - before; n != 1 {
		t.Errorf("look-ups after the repeat of an evicted id: %d; want 1", n)
	}
	if n := e.sim.Originates(); n != 5 {
		t.Errorf("simulator saw %d originates; want 5", n)
	}
}

// gatedStore is a Store whose Load waits for release: the previous run's calls are
// being read.
type gatedStore struct {
	release chan struct{}
	calls   []events.StoredCall
}

func (s *gatedStore) Save(context.Context, events.StoredCall) error { return nil }
func (s *gatedStore) Load(ctx context.Context, _, _ string) ([]events.StoredCall, error) {
	select {
	case <-s.release:
		return s.calls, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (s *gatedStore) LastEvent(context.Context, string) (events.Event, bool, error) {
	return events.Event{}, false, nil
}
func (s *gatedStore) Ended(context.Context, string) (events.Event, string, bool, error) {
	return events.Event{}, "", false, nil
}
func (s *gatedStore) Forget(string) {}
func (s *gatedStore) LastEventTime(context.Context) (time.Time, bool, error) {
	return time.Time{}, false, nil
}

// spyARI reports when its websocket connected, before the App's handler runs.
type spyARI struct {
	stasisapp.Asterisk
	once sync.Once
	up   chan struct{}
}

func (s *spyARI) Run(ctx context.Context, h ari.Handler) error {
	return s.Asterisk.Run(ctx, &spyHandler{h, s})
}

type spyHandler struct {
	ari.Handler
	s *spyARI
}

func (h *spyHandler) Connected(ctx context.Context, reconnect bool) {
	h.s.once.Do(func() { close(h.s.up) })
	h.Handler.Connected(ctx, reconnect)
}

// The ARI link connects while the previous run's calls are still being read (not after),
// and the App is ready, and takes calls, only once they are in its table.
func TestResumeConcurrentWithLinkConnect(t *testing.T) {
	s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}}})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := ari.NewClient(ari.Config{URL: s.URL(), Username: "u", Password: "p", App: "gated"})
	if err != nil {
		t.Fatal(err)
	}
	spy := &spyARI{Asterisk: c, up: make(chan struct{})}
	store := &gatedStore{release: make(chan struct{})}
	app, err := stasisapp.New(stasisapp.Config{Servers: []stasisapp.Server{{Name: "pbx", AppName: "gated", ARI: spy}},
		Publisher: newMemPublisher(), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	runApp(t, app)
	select {
	case <-spy.up:
	case <-time.After(10 * time.Second):
		t.Fatal("the websocket did not connect while the previous run's calls were being read")
	}
	if app.Status()[0].Connected {
		t.Error("ready before the previous run's calls are in the table")
	}
	if _, err := app.Originate(t.Context(), req("gated-1", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted)); !errors.Is(err, stasisapp.ErrNotConnected) {
		t.Errorf("originate while resuming: %v; want ErrNotConnected", err)
	}
	close(store.release)
	waitFor(t, "ready after resume", func() bool { return app.Status()[0].Connected })
	if _, err := app.Originate(t.Context(), req("gated-2", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted)); err != nil {
		t.Errorf("originate once resumed: %v", err)
	}
}
