package stasisapp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// BenchmarkOriginateAccepted times one wait=accepted originate at a time through an App
// with the daemon's real call registry and publisher on an in-process nats-server,
// against the simulator (a busy endpoint: the call ends at once). It is the critical
// path of issue 11 part 3: the registry record is written while POST /channels is on
// its way, and the reply waits for both.
func BenchmarkOriginateAccepted(b *testing.B) {
	s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}},
		Contexts: map[string][]string{"confirmcode": {"s"}}})
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ns := natstest.Start(b)
	_, js := ns.Connect(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		b.Fatal(err)
	}
	reg, err := events.OpenRegistry(ctx, js, events.RegistryConfig{Owner: "bench", MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	pub := events.NewPublisher(js, events.PublisherConfig{Stored: reg.EventStored})
	c, err := ari.NewClient(ari.Config{URL: s.URL(), Username: "u", Password: "p", App: "benchapp"})
	if err != nil {
		b.Fatal(err)
	}
	app, err := stasisapp.New(stasisapp.Config{Servers: []stasisapp.Server{{Name: "pbx", AppName: "benchapp", ARI: c}},
		Publisher: pub, Store: reg})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 3)
	go func() { done <- pub.Run(ctx) }()
	go func() { done <- reg.Run(ctx) }()
	go func() { done <- app.Run(ctx) }()
	defer func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("Run: %v", err)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !app.Status()[0].Connected {
		if time.Now().After(deadline) {
			b.Fatal("link not connected within 10s")
		}
		<-time.After(10 * time.Millisecond) // polling pace under a deadline
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		began := time.Now()
		res, err := app.Originate(ctx, req(fmt.Sprintf("bench-%d", i), "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
		lat = append(lat, time.Since(began))
		if err != nil || res.ARIStatus != 200 {
			b.Fatalf("originate %d: %v (ARI %d)", i, err, res.ARIStatus)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		b.Fatal(err)
	}
}
