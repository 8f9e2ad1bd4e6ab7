package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSubjectAndMsgID(t *testing.T) {
	tests := []struct {
		id          string
		kind        events.Kind
		seq         uint64
		wantSubject string
		wantMsgID   string
	}{
		{"abc", events.Initiated, 1, "invokeari.calls.abc.initiated", "abc.1"},
		{"A_b-9", events.Ended, 12, "invokeari.calls.A_b-9.ended", "A_b-9.12"},
		{"x", events.KindAnswered, 0, "invokeari.calls.x.answered", "x.0"},
	}
	for _, tt := range tests {
		if got := events.Subject(tt.id, tt.kind); got != tt.wantSubject {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.id, tt.kind, got, tt.wantSubject)
		}
		if got := events.MsgID(tt.id, tt.seq); got != tt.wantMsgID {
			t.Errorf("MsgID(%q, %d) = %q, want %q", tt.id, tt.seq, got, tt.wantMsgID)
		}
	}
}

func TestEnsureStreamCreatesThenUpdates(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name    string
		maxAge  time.Duration
		wantDup time.Duration
	}{
		{"create", 168 * time.Hour, events.DuplicateWindow},
		{"update max age", 24 * time.Hour, events.DuplicateWindow},
		{"unlimited age", 0, events.DuplicateWindow},
		{"age below dup window", time.Minute, time.Minute},
		{"back to a week", 168 * time.Hour, events.DuplicateWindow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := events.EnsureStream(ctx, js, tt.maxAge); err != nil {
				t.Fatalf("EnsureStream(%s): %v", tt.maxAge, err)
			}
			st, err := js.Stream(ctx, events.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			got := st.CachedInfo().Config
			if got.MaxAge != tt.maxAge || got.Duplicates != tt.wantDup || got.Storage != jetstream.FileStorage ||
				len(got.Subjects) != 1 || got.Subjects[0] != "invokeari.calls.*.*" {
				t.Errorf("config: MaxAge %s Duplicates %s Storage %s Subjects %v; want %s %s file [invokeari.calls.*.*]",
					got.MaxAge, got.Duplicates, got.Storage, got.Subjects, tt.maxAge, tt.wantDup)
			}
		})
	}
	if err := events.EnsureStream(ctx, js, -time.Second); err == nil {
		t.Error("EnsureStream(-1s) = nil, want error")
	}
}

func TestEnsureStreamNoJetStream(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	s.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := events.EnsureStream(ctx, js, time.Hour)
	if err == nil {
		t.Fatal("EnsureStream with NATS down = nil, want error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("error (not a deadline): %v", err)
	}
}
