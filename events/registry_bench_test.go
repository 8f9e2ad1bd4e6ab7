package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// BenchmarkRegistrySave times the in-flight record write of one call (a JetStream
// publish awaiting its ack), the part of the critical path issue 11 moved beside
// POST /channels; each record is then removed as an ended call's would be.
func BenchmarkRegistrySave(b *testing.B) {
	_, js := setup(b)
	r, err := events.OpenRegistry(b.Context(), js, events.RegistryConfig{Owner: "bench", MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("registry Run: %v", err)
		}
	})
	c := storedCall("pbx1", "")
	b.ResetTimer()
	for i := range b.N {
		c.ID = fmt.Sprintf("b%d", i)
		if err := r.Save(ctx, c); err != nil {
			b.Fatal(err)
		}
		r.Forget(c.ID)
	}
}

// BenchmarkRegistryEndedLookup times the idempotency look-up of a new id (a JetStream
// request for the last message on invokeari.calls.<id>.ended, finding none), which a
// caller's own id pays on the way to POST /channels once ended calls left memory.
func BenchmarkRegistryEndedLookup(b *testing.B) {
	_, js := setup(b)
	r, err := events.OpenRegistry(b.Context(), js, events.RegistryConfig{Owner: "bench", MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		if _, _, found, err := r.Ended(b.Context(), fmt.Sprintf("new%d", i)); err != nil || found {
			b.Fatalf("look-up of a new id: found=%v, %v", found, err)
		}
	}
}
