package events_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// BenchmarkPublish measures events/s from Publish to JetStream ack, for 1000 calls
// published round-robin by one producer.
func BenchmarkPublish(b *testing.B) {
	for _, window := range []int{64, events.DefaultWindow, 1024} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) { benchPublish(b, window) })
	}
}

func benchPublish(b *testing.B, window int) {
	_, js := setup(b)
	p := events.NewPublisher(js, events.PublisherConfig{Window: window})
	run(b, p)
	const nCalls = 1000
	evs := make([]events.Event, nCalls)
	for i := range evs {
		evs[i] = testEvent(fmt.Sprintf("bench-%04d", i), 1)
	}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ev := evs[i%nCalls]
		ev.Seq = uint64(i/nCalls + 1)
		if err := p.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	flush(b, p, time.Minute)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
