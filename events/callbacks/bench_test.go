package callbacks

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
)

// BenchmarkDeliverBacklog: b.N events (4 per call) stored at once, delivered to a
// signature-checking receiver on 127.0.0.1; reports deliveries/s.
func BenchmarkDeliverBacklog(b *testing.B) {
	w := newWorld(b)
	w.start(func(c *Config) { c.Workers = DefaultWorkers })
	url := w.recv.srv.URL + "/cb"
	calls := max(1, b.N/4)
	b.ResetTimer()
	began := time.Now()
	for s, k := range callKinds {
		for i := range calls {
			id := fmt.Sprintf("bn%06d", i)
			ev := events.Event{ID: id, Seq: uint64(s + 1), Event: k, Key: "k",
				Request: &events.Request{Callback: url, CallbackEvents: allKinds}}
			data, _ := json.Marshal(ev)
			m := &nats.Msg{Subject: events.Subject(id, k), Data: data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, events.MsgID(id, ev.Seq))
			if _, err := w.js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
			if i%1000 == 999 { // stay under the async publisher's outstanding limit
				<-w.js.PublishAsyncComplete()
			}
		}
	}
	<-w.js.PublishAsyncComplete()
	count := func() int { w.recv.mu.Lock(); defer w.recv.mu.Unlock(); return w.recv.delivered }
	if err := waitFor(60*time.Second, func() bool { return count() >= 4*calls }); err != nil {
		b.Fatalf("%d of %d delivered", count(), 4*calls)
	}
	b.ReportMetric(float64(4*calls)/time.Since(began).Seconds(), "deliveries/s")
}

func waitFor(limit time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond): // polling pace; bounded by ctx
		}
	}
	return nil
}
