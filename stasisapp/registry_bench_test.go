package stasisapp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// registryEnv is an App wired as the daemon wires it: the real call registry and
// publisher on an in-process nats-server, against the simulator.
type registryEnv struct {
	sim *sim.Server
	app *stasisapp.App
	pub *events.Publisher
	reg *events.Registry
}

// startRegistryApp runs that App until the test ends; cfg gives App options (Servers,
// Publisher and Store are set here), wrap wraps the Store.
func startRegistryApp(tb testing.TB, eps map[string]sim.Behavior, cfg stasisapp.Config, wrap ...func(stasisapp.Store) stasisapp.Store) *registryEnv {
	tb.Helper()
	e, stop := runRegistryApp(tb, startRegistrySim(tb, eps), natstest.Start(tb), cfg, wrap...)
	tb.Cleanup(stop)
	return e
}

// endBusyCalls places calls prefix-0 … prefix-(n-1) to PJSIP/busy, each to its end, and
// waits until their events are stored.
func (e *registryEnv) endBusyCalls(tb testing.TB, prefix string, n int) {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := e.app.Originate(ctx, req(fmt.Sprintf("%s-%d", prefix, i), "PJSIP/busy", 10*time.Second, stasisapp.WaitEnd)); err != nil {
			tb.Fatal(err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.pub.Flush(fctx); err != nil {
		tb.Fatal(err)
	}
}

// startRegistrySim starts the simulator of a registryEnv until the test ends.
func startRegistrySim(tb testing.TB, eps map[string]sim.Behavior) *sim.Server {
	tb.Helper()
	s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: eps, Contexts: map[string][]string{"confirmcode": {"s"}}})
	if err := s.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// runRegistryApp runs an App on simulator s and nats-server ns until stop (safe to call
// twice); another App run later on the same pair is a restarted daemon.
func runRegistryApp(tb testing.TB, s *sim.Server, ns *natstest.Server, cfg stasisapp.Config, wrap ...func(stasisapp.Store) stasisapp.Store) (*registryEnv, func()) {
	tb.Helper()
	_, js := ns.Connect(tb)
	ctx, cancel := context.WithCancel(context.Background())
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		tb.Fatal(err)
	}
	reg, err := events.OpenRegistry(ctx, js, events.RegistryConfig{Owner: "test", MaxAge: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	pub := events.NewPublisher(js, events.PublisherConfig{Stored: reg.EventStored})
	c, err := ari.NewClient(ari.Config{URL: s.URL(), Username: "u", Password: "p", App: "regapp"})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Servers = []stasisapp.Server{{Name: "pbx", AppName: "regapp", ARI: c}}
	cfg.Publisher, cfg.Store = pub, reg
	for _, w := range wrap {
		cfg.Store = w(cfg.Store)
	}
	app, err := stasisapp.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 3)
	go func() { done <- pub.Run(ctx) }()
	go func() { done <- reg.Run(ctx) }()
	go func() { done <- app.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for range 3 {
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					tb.Errorf("Run: %v", err)
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for !app.Status()[0].Connected {
		if time.Now().After(deadline) {
			stop()
			tb.Fatal("link not connected within 10s")
		}
		<-time.After(10 * time.Millisecond) // polling pace under a deadline
	}
	return &registryEnv{sim: s, app: app, pub: pub, reg: reg}, stop
}

// BenchmarkOriginateAccepted times one wait=accepted originate at a time through an App
// wired as the daemon is (startRegistryApp), to a busy endpoint (the call ends at once).
// It is the critical path of issue 11 part 3: the registry record is written while
// POST /channels is on its way, and the reply waits for both.
func BenchmarkOriginateAccepted(b *testing.B) {
	e := startRegistryApp(b, map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}}, stasisapp.Config{})
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		began := time.Now()
		res, err := e.app.Originate(ctx, req(fmt.Sprintf("bench-%d", i), "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
		lat = append(lat, time.Since(began))
		if err != nil || res.ARIStatus != 200 {
			b.Fatalf("originate %d: %v (ARI %d)", i, err, res.ARIStatus)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds()), "p90-µs")
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.pub.Flush(fctx); err != nil {
		b.Fatal(err)
	}
}
