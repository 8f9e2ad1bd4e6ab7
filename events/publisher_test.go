package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
)

func callIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("call-%03d", i)
	}
	return ids
}

// publishAll publishes perCall events for each call, interleaving calls.
func publishAll(ctx context.Context, p *events.Publisher, calls []string, from, to int) error {
	for seq := from; seq <= to; seq++ {
		for _, id := range calls {
			if err := p.Publish(ctx, testEvent(id, uint64(seq))); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestPublishOrderSubjectsMsgID(t *testing.T) {
	tests := []struct {
		name          string
		calls, events int
		window        int
	}{
		{"one call", 1, 20, 0},
		{"many calls", 50, 10, 0},
		{"window 1", 5, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, js := setup(t)
			p := events.NewPublisher(js, events.PublisherConfig{Window: tt.window})
			run(t, p)
			calls := callIDs(tt.calls)
			if err := publishAll(t.Context(), p, calls, 1, tt.events); err != nil {
				t.Fatal(err)
			}
			flush(t, p, 20*time.Second)
			if got, want := p.Published(), uint64(tt.calls*tt.events); got != want {
				t.Errorf("Published() = %d, want %d", got, want)
			}
			if got := p.Depth(); got != 0 {
				t.Errorf("Depth() = %d after Flush, want 0", got)
			}
			checkStream(t, stored(t, js), calls, tt.events)
		})
	}
}

func TestDuplicateMsgIDDeduplicated(t *testing.T) {
	_, js := setup(t)
	p := events.NewPublisher(js, events.PublisherConfig{})
	run(t, p)
	for range 3 {
		if err := p.Publish(t.Context(), testEvent("dup", 1)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, p, 10*time.Second)
	if got, want := p.Published(), uint64(3); got != want {
		t.Errorf("Published() = %d, want %d (duplicates are acked too)", got, want)
	}
	checkStream(t, stored(t, js), []string{"dup"}, 1)
}

func TestNATSRestartLosesNothing(t *testing.T) {
	s, js := setup(t)
	// A small outbox makes the producer wait on back-pressure while NATS is down.
	p := events.NewPublisher(js, events.PublisherConfig{Capacity: 2000, MaxBackoff: 200 * time.Millisecond, AckTimeout: 2 * time.Second})
	run(t, p)
	calls := callIDs(20)

	// The producer publishes rounds (one event per call) without pause until the
	// restarts are over, so events are in flight when the server goes down, then
	// 20 more rounds.
	started, restarted := make(chan struct{}), make(chan struct{})
	type result struct {
		rounds int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		ctx := t.Context()
		round, extra := 0, 20
		for extra > 0 {
			round++
			if err := publishAll(ctx, p, calls, round, round); err != nil {
				done <- result{round, err}
				return
			}
			switch round {
			case 50:
				close(started)
			default:
				select {
				case <-restarted:
					extra--
				default:
				}
			}
		}
		done <- result{round, nil}
	}()
	<-started
	// A restart that finds nothing in flight proves little; try again (rarely needed).
	for i := 0; i < 5 && p.Retries() == 0; i++ {
		before := p.Published()
		s.Restart(t)
		waitFor(t, 10*time.Second, "a failed send or progress after restart", func() bool {
			return p.Retries() > 0 || p.Published() > before+500
		})
	}
	close(restarted)
	res := <-done
	if res.err != nil {
		t.Fatalf("publish round %d: %v", res.rounds, res.err)
	}
	flush(t, p, 30*time.Second)
	t.Logf("%d events, %d failed sends retried", res.rounds*len(calls), p.Retries())
	if p.Retries() == 0 {
		t.Errorf("no send failed: the restarts did not hit events in flight, the test proves nothing")
	}
	checkStream(t, stored(t, js), calls, res.rounds)
}

func TestSendsRetriedUntilStreamExists(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	p := events.NewPublisher(js, events.PublisherConfig{MaxBackoff: 100 * time.Millisecond})
	run(t, p)
	calls := callIDs(3)
	if err := publishAll(t.Context(), p, calls, 1, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a failed send", func() bool { return p.Retries() > 0 })
	if got, want := p.Depth(), 6; got != want {
		t.Fatalf("Depth() = %d with no stream, want %d (nothing skipped)", got, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	flush(t, p, 20*time.Second)
	checkStream(t, stored(t, js), calls, 2)
}

func TestOutboxFullBlocksThenDrains(t *testing.T) {
	_, js := setup(t)
	p := events.NewPublisher(js, events.PublisherConfig{Capacity: 10, HighWater: 0.5})
	calls := callIDs(2)

	tests := []struct {
		publish       int // events published before the check, cumulative
		wantDepth     int
		wantAccepting bool
	}{
		{0, 0, true},
		{4, 4, true},
		{5, 5, false},
		{10, 10, false},
	}
	n := 0
	for _, tt := range tests {
		for ; n < tt.publish; n++ {
			if err := p.Publish(t.Context(), testEvent(calls[n%2], uint64(n/2+1))); err != nil {
				t.Fatal(err)
			}
		}
		if got := p.Depth(); got != tt.wantDepth {
			t.Errorf("after %d: Depth() = %d, want %d", n, got, tt.wantDepth)
		}
		if got := p.Accepting(); got != tt.wantAccepting {
			t.Errorf("after %d: Accepting() = %v, want %v", n, got, tt.wantAccepting)
		}
	}

	// Full: Publish blocks until its ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	err := p.Publish(ctx, testEvent(calls[0], 6))
	cancel()
	if !isDeadline(err) {
		t.Fatalf("Publish into a full outbox = %v, want deadline exceeded", err)
	}

	// A blocked Publish completes once Run drains the outbox.
	blocked := make(chan error, 1)
	go func() { blocked <- p.Publish(t.Context(), testEvent(calls[0], 6)) }()
	run(t, p)
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("blocked Publish: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked Publish did not complete after Run started")
	}
	if err := p.Publish(t.Context(), testEvent(calls[1], 6)); err != nil {
		t.Fatal(err)
	}
	flush(t, p, 10*time.Second)
	if !p.Accepting() {
		t.Error("Accepting() = false after drain, want true")
	}
	checkStream(t, stored(t, js), calls, 6)
}

func TestFlush(t *testing.T) {
	_, js := setup(t)
	p := events.NewPublisher(js, events.PublisherConfig{})
	if err := p.Flush(t.Context()); err != nil {
		t.Fatalf("Flush of an empty outbox = %v, want nil", err)
	}
	if err := p.Publish(t.Context(), testEvent("f", 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	err := p.Flush(ctx)
	cancel()
	if !isDeadline(err) {
		t.Fatalf("Flush without Run = %v, want deadline exceeded", err)
	}
	run(t, p)
	flush(t, p, 10*time.Second)
	if got := p.Published(); got != 1 {
		t.Errorf("Published() = %d after Flush, want 1", got)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	tests := []struct {
		name     string
		natsDown bool
		pending  int
	}{
		{"idle", false, 0},
		{"nats down with events queued", true, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, js := setup(t)
			if tt.natsDown {
				s.Shutdown()
			}
			p := events.NewPublisher(js, events.PublisherConfig{AckTimeout: 200 * time.Millisecond})
			for i := range tt.pending {
				if err := p.Publish(t.Context(), testEvent(fmt.Sprintf("c%d", i), 1)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			if tt.natsDown {
				waitFor(t, 10*time.Second, "a failed send", func() bool { return p.Retries() > 0 })
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(time.Second):
				t.Fatal("Run did not return within 1s of cancel")
			}
			if got := p.Depth(); got != tt.pending {
				t.Errorf("Depth() = %d after stop, want %d (kept for the next Run)", got, tt.pending)
			}
		})
	}
}

func TestRunTwiceRefused(t *testing.T) {
	_, js := setup(t)
	p := events.NewPublisher(js, events.PublisherConfig{})
	run(t, p)
	// An event acknowledged proves the first Run is in progress. (A second Run tried
	// before it started would take the publisher itself and make the first one fail.)
	if err := p.Publish(t.Context(), testEvent("twice", 1)); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Run(ctx); !errors.Is(err, events.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

func TestPublishInvalidSubject(t *testing.T) {
	p := events.NewPublisher(nil, events.PublisherConfig{})
	tests := []struct {
		id   string
		kind events.Kind
	}{
		{"", events.Initiated},
		{"a.b", events.Initiated},
		{"a*", events.Initiated},
		{"a>", events.Initiated},
		{"a b", events.Initiated},
		{"ok", ""},
	}
	for _, tt := range tests {
		ev := testEvent("x", 1)
		ev.ID, ev.Event = tt.id, tt.kind
		if err := p.Publish(t.Context(), ev); !errors.Is(err, events.ErrInvalidSubject) {
			t.Errorf("Publish(id %q, kind %q) = %v, want ErrInvalidSubject", tt.id, tt.kind, err)
		}
	}
	if got := p.Depth(); got != 0 {
		t.Errorf("Depth() = %d, want 0", got)
	}
}

// TestCallbackHeader: every published event says whether it asks for a status callback,
// by the same rule the callbacks deliverer applies to an event without the header.
func TestCallbackHeader(t *testing.T) {
	_, js := setup(t)
	p := events.NewPublisher(js, events.PublisherConfig{})
	run(t, p)
	asks := testEvent("cb-yes", 1) // initiated
	asks.Request = &events.Request{Callback: "http://127.0.0.1:9/cb", CallbackEvents: []string{"initiated", "ended"}}
	other := testEvent("cb-other", 1)
	other.Request = &events.Request{Callback: "http://127.0.0.1:9/cb", CallbackEvents: []string{"ended"}}
	none := testEvent("cb-none", 1)
	none.Request = &events.Request{Destination: "PJSIP/6001"}
	want := map[string]string{"cb-yes": "yes", "cb-other": "no", "cb-none": "no"}
	for _, ev := range []events.Event{asks, other, none} {
		if err := p.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, p, 10*time.Second)
	msgs := stored(t, js)
	if len(msgs) != len(want) {
		t.Fatalf("%d events stored, want %d", len(msgs), len(want))
	}
	for _, m := range msgs {
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		if got := m.Headers().Get(events.CallbackHeader); got != want[ev.ID] {
			t.Errorf("%s: %s = %q, want %q", ev.ID, events.CallbackHeader, got, want[ev.ID])
		}
	}
}
