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
	"github.com/nats-io/nats.go/jetstream"
)

var kinds = []events.Kind{events.Initiated, events.Ringing, events.Progress, events.KindAnswered, events.Ended}

// testEvent is event seq (from 1) of call id.
func testEvent(id string, seq uint64) events.Event {
	ring := int64(1180)
	return events.Event{
		ID:         id,
		Seq:        seq,
		Event:      kinds[int(seq-1)%len(kinds)],
		Time:       time.Date(2026, 11, 26, 7, 59, 1, int(seq)*1e6, time.UTC),
		Server:     "pbx1",
		Channel:    "PJSIP/6001-00000001",
		State:      events.StateRinging,
		Cause:      16,
		CauseTxt:   "Normal Clearing",
		DialStatus: "ANSWER",
		RingMS:     &ring,
		Request:    &events.Request{Destination: "PJSIP/6001", Context: "confirmcode", Extension: "100", TimeoutSec: 30, CallerID: `"Desk" <100>`, Wait: "answer"},
		Key:        "helpdesk",
	}
}

// setup starts a server, connects, and creates the stream.
func setup(t testing.TB) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return s, js
}

// run runs p until the test ends, and checks that Run returns nil then.
func run(t testing.TB, p *events.Publisher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
	})
}

func flush(t testing.TB, p *events.Publisher, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (retries %d)", err, p.Retries())
	}
}

// stored reads every message of the stream in stream order.
func stored(t *testing.T, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	n := int(info.State.Msgs)
	if n == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	defer it.Stop()
	msgs := make([]jetstream.Msg, 0, n)
	for len(msgs) < n {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatalf("next after %d of %d: %v", len(msgs), n, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// checkStream verifies the stream holds exactly perCall events for each call,
// each once, in per-call order, with the right subject, Nats-Msg-Id and body.
func checkStream(t *testing.T, msgs []jetstream.Msg, calls []string, perCall int) {
	t.Helper()
	if got, want := len(msgs), len(calls)*perCall; got != want {
		t.Errorf("stream holds %d events, want %d", got, want)
	}
	last := make(map[string]uint64)
	for i, m := range msgs {
		if err := checkMsg(m, last); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	for _, id := range calls {
		if got := last[id]; got != uint64(perCall) {
			t.Errorf("call %s: last seq %d, want %d", id, got, perCall)
		}
	}
}

func checkMsg(m jetstream.Msg, last map[string]uint64) error {
	var ev events.Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if want := last[ev.ID] + 1; ev.Seq != want {
		return fmt.Errorf("call %s: seq %d, want %d (order or duplicate)", ev.ID, ev.Seq, want)
	}
	last[ev.ID] = ev.Seq
	want := testEvent(ev.ID, ev.Seq)
	if got, wantSubj := m.Subject(), events.Subject(ev.ID, want.Event); got != wantSubj {
		return fmt.Errorf("subject %q, want %q", got, wantSubj)
	}
	if got, wantID := m.Headers().Get(jetstream.MsgIDHeader), events.MsgID(ev.ID, ev.Seq); got != wantID {
		return fmt.Errorf("Nats-Msg-Id %q, want %q", got, wantID)
	}
	if ev.Event != want.Event || !ev.Time.Equal(want.Time) || ev.Request == nil || ev.Request.CallerID != want.Request.CallerID || *ev.RingMS != *want.RingMS {
		return fmt.Errorf("body %+v, want %+v", ev, want)
	}
	return nil
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-tick.C
	}
}

func isDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }
