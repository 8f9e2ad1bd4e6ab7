package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
)

// memPoint is the daemon's heap with `calls` ringing calls tracked.
type memPoint struct {
	calls   int
	heap    uint64  // HeapAlloc after GC
	perCall float64 // bytes per call above the idle baseline
	errs    int
	took    time.Duration
}

// benchMemory grows the number of ringing calls (wait=accepted, through the HTTP door)
// to each of counts in turn and reads the daemon's heap after GC at each step. The calls
// are hung up at the end (DELETE on the simulator), and it waits until the daemon has
// seen every one end.
func benchMemory(ctx context.Context, e *benchEnv, direct *directARI, door *daemonHTTP, js jetstream.JetStream,
	counts []int, workers int, profileDir string) ([]memPoint, error) {
	app := e.d.app
	if err := waitFor(ctx, 60*time.Second, func() bool { return app.InFlight() == 0 }); err != nil {
		return nil, fmt.Errorf("calls of earlier phases still in flight: %w", err)
	}
	if err := settleStream(ctx, js); err != nil {
		return nil, err
	}
	base := heapAfterGC()
	type batch struct {
		prefix string
		n      int64
	}
	var batches []batch
	defer func() { // hang up everything this phase rang, whatever happened
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		for _, b := range batches {
			runLoad(cctx, workers, b.n, 0, direct.hangup(b.prefix))
		}
		_ = waitFor(cctx, 2*time.Minute, func() bool { return app.InFlight() == 0 })
	}()
	var out []memPoint
	have := 0
	for i, n := range counts {
		add := int64(n - have)
		b := batch{prefix: fmt.Sprintf("mem%d-", i), n: add}
		batches = append(batches, b)
		began := time.Now()
		r := runLoad(ctx, workers, add, 0, door.originate(benchRing, "accepted", 600, b.prefix))
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		have += r.ok
		if err := settleStream(ctx, js); err != nil {
			return out, err
		}
		tracked := app.InFlight()
		h := heapAfterGC()
		p := memPoint{calls: tracked, heap: h, errs: r.errs, took: time.Since(began)}
		if tracked > 0 && h > base {
			p.perCall = float64(h-base) / float64(tracked)
		}
		out = append(out, p)
		if profileDir != "" {
			if err := writeHeapProfile(filepath.Join(profileDir, fmt.Sprintf("heap-%dcalls.pprof", tracked))); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// heapAfterGC is HeapAlloc after two full collections (the second frees what the
// first's finalizers released).
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settleStream waits until the stream's message count stops moving (the daemon has
// published every event so far), polling every 100 ms, at most 60 s.
func settleStream(ctx context.Context, js jetstream.JetStream) error {
	var last uint64
	same := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for same < 3 {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return fmt.Errorf("stream %s: %w", events.StreamName, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", events.StreamName, err)
		}
		if info.State.Msgs == last {
			same++
		} else {
			last, same = info.State.Msgs, 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("stream %s still growing after 60s", events.StreamName)
		case <-tick.C:
		}
	}
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}
