package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/callbacks"
	"github.com/invokeari/invokeari/events/webhook"
)

// Targets of issue 12 for status callbacks.
const (
	targetCallbackRate = 5000 // deliveries/s to a local receiver
	targetCallbackP99  = 50 * time.Millisecond
	callbackCallRate   = 1000 // calls/s for the latency measurement
)

// benchWebhookSecretEnv names the bench key's (private, in-memory) webhook secret.
const benchWebhookSecretEnv = "INVOKEARI_BENCH_WEBHOOK_SECRET"

// cbReceiver is the bench's status callback receiver on 127.0.0.1: it verifies each
// signature and notes when each event id first arrived.
type cbReceiver struct {
	secret []byte
	srv    *http.Server
	url    string

	mu      sync.Mutex
	got     map[string]time.Time
	bad     int
	arrived chan struct{} // signalled (non-blocking) on each new event
}

func startCBReceiver(secret []byte) (*cbReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &cbReceiver{secret: secret, got: map[string]time.Time{}, arrived: make(chan struct{}, 1),
		url: "http://" + ln.Addr().String() + "/cb"}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }() // ends when close shuts the server down
	return r, nil
}

func (r *cbReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	now := time.Now()
	ok := webhook.Verify(r.secret, req.Header.Get(webhook.SignatureHeader), body, now, webhook.DefaultMaxAge) == nil
	id := req.Header.Get(webhook.EventIDHeader)
	r.mu.Lock()
	if !ok {
		r.bad++
	} else if _, seen := r.got[id]; !seen {
		r.got[id] = now
	}
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *cbReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *cbReceiver) close() { _ = r.srv.Close() }

// waitCount waits until n distinct events arrived or limit passes.
func (r *cbReceiver) waitCount(ctx context.Context, n int, limit time.Duration) error {
	return waitFor(ctx, limit, func() bool { return r.count() >= n })
}

// callbacks: status callback delivery capacity and latency (issue 12).
func (b *bench) callbacks(ctx context.Context, e *benchEnv, door *daemonHTTP, nc *nats.Conn, js jetstream.JetStream) error {
	rcv, err := startCBReceiver([]byte(e.webhookSecret))
	if err != nil {
		return err
	}
	defer rcv.close()
	backlog, latFor := 20_000, 5*time.Second
	if b.plan.pipeCalls < fullPlan.pipeCalls { // quick
		backlog, latFor = 2000, time.Second
	}

	// 6a: capacity. A backlog of events asking for callbacks is stored straight into the
	// stream (5,000 calls × 4 events); the figure is events delivered ÷ time from the first
	// publish to the last arrival.
	b.progress("6: callbacks, %d events stored at once, then %d calls/s for %s", backlog, callbackCallRate, latFor)
	calls := backlog / 4
	kinds := []events.Kind{events.Initiated, events.Ringing, events.KindAnswered, events.Ended}
	began := time.Now()
	for s, k := range kinds {
		for i := range calls {
			id := fmt.Sprintf("cbcap%05d", i)
			ev := events.Event{ID: id, Seq: uint64(s + 1), Event: k, Time: time.Now(), Server: "bench", Key: "bench",
				Request: &events.Request{Destination: benchBusy, Context: benchContext, Extension: "s", Callback: rcv.url,
					CallbackEvents: []string{"initiated", "ringing", "answered", "ended"}}}
			data, _ := json.Marshal(ev)
			m := &nats.Msg{Subject: events.Subject(id, k), Data: data, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, events.MsgID(id, ev.Seq))
			if _, err := js.PublishMsgAsync(m); err != nil {
				return fmt.Errorf("callbacks backlog: %w", err)
			}
			if i%1000 == 999 { // stay under the async publisher's outstanding limit
				<-js.PublishAsyncComplete()
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return errors.New("callbacks backlog: publishes not acknowledged within 60s")
	}
	stored := time.Since(began)
	if err := rcv.waitCount(ctx, backlog, 120*time.Second); err != nil {
		return fmt.Errorf("callbacks backlog: %d of %d delivered: %w", rcv.count(), backlog, err)
	}
	rcv.mu.Lock()
	var last time.Time
	for _, at := range rcv.got {
		if at.After(last) {
			last = at
		}
	}
	bad := rcv.bad
	rcv.mu.Unlock()
	rate := float64(backlog) / last.Sub(began).Seconds()
	v := check(rate, targetCallbackRate, false)
	if bad > 0 {
		v = verdictFail
	}
	b.row(benchRow{ID: "6a", What: "status callbacks delivered/s to a local receiver (signed, verified), backlog of events",
		Target: fmt.Sprintf("≥ %d/s", targetCallbackRate),
		Measured: fmt.Sprintf("%.0f/s (%d events of %d calls in %s; stored in %s; %d bad signatures)", rate, backlog, calls,
			last.Sub(began).Round(time.Millisecond), stored.Round(time.Millisecond), bad), Verdict: v})

	// 6b: latency at 1,000 calls/s through the HTTP door: busy calls (initiated and ended
	// each), from the event on NATS (core subscription in this process) to its arrival.
	seen := map[string]time.Time{}
	var seenMu sync.Mutex
	sub, err := nc.Subscribe(events.SubjectPrefix+".>", func(m *nats.Msg) {
		now := time.Now()
		if !strings.HasPrefix(m.Subject, events.SubjectPrefix+".cblat-") ||
			!strings.HasSuffix(m.Subject, ".initiated") && !strings.HasSuffix(m.Subject, ".ended") {
			return // not this load's, or not asked for
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		seenMu.Lock()
		if _, ok := seen[id]; !ok {
			seen[id] = now
		}
		seenMu.Unlock()
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	before := rcv.count()
	n, errs, firstErr := b.paced(ctx, door, rcv.url, callbackCallRate, latFor)
	if errs > 0 {
		return fmt.Errorf("callbacks latency: %d of %d originates failed, first: %w", errs, n, firstErr)
	}
	if err := waitFor(ctx, 60*time.Second, func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		return len(seen) >= 2*n && rcv.count()-before >= len(seen)
	}); err != nil {
		return fmt.Errorf("callbacks latency: %d events on NATS, %d delivered: %w", len(seen), rcv.count()-before, err)
	}
	var lat []time.Duration
	seenMu.Lock()
	rcv.mu.Lock()
	for id, at := range seen {
		if got, ok := rcv.got[id]; ok {
			lat = append(lat, got.Sub(at))
		}
	}
	rcv.mu.Unlock()
	seenMu.Unlock()
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	b.row(benchRow{ID: "6b", What: fmt.Sprintf("status callback latency at %d calls/s: event on NATS → receiver got it, p50 / p99", callbackCallRate),
		Target: "p99 ≤ " + fmtDur(targetCallbackP99), Measured: fmt.Sprintf("%s / %s (%d events of %d calls)", fmtDur(p50), fmtDur(p99), len(lat), n),
		Verdict: check(float64(p99), float64(targetCallbackP99), true)})
	b.notes = append(b.notes, fmt.Sprintf("**6 status callbacks**: the daemon's deliverer (JetStream durable consumer, %d workers by default, "+
		"webhook.Sender with HMAC signing) POSTs to a receiver in the bench process on 127.0.0.1 that verifies every signature "+
		"and answers 204. 6a: %d events (%d calls × initiated/ringing/answered/ended, each asking for all four) are published "+
		"straight into `INVOKEARI_CALLS`; the rate is events delivered ÷ time from the first publish to the last arrival. "+
		"6b: calls to `%s` through the HTTP door paced at %d/s for %s (`wait=accepted`, `callback_events=initiated,ended`); "+
		"latency is from the event reaching a core NATS subscriber in the bench process to the receiver getting it. "+
		"The deliverer also runs (and acks events that ask for nothing) during the other phases, as it does in production.",
		callbacks.DefaultWorkers, backlog, calls, benchBusy, callbackCallRate, latFor))
	return waitFor(ctx, 60*time.Second, func() bool { return e.d.app.InFlight() == 0 })
}

// paced originates at rate calls/s for dur (open loop, at most 512 in flight) with a
// callback, and returns how many were sent and failed.
func (b *bench) paced(ctx context.Context, door *daemonHTTP, callback string, rate int, dur time.Duration) (n, errs int, firstErr error) {
	total := int(float64(rate) * dur.Seconds())
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return i, errs, ctx.Err()
			case <-time.After(d): // the load's pace
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			form := url.Values{"d": {benchBusy}, "c": {benchContext}, "e": {"s"}, "t": {"30"}, "wait": {"accepted"},
				"id": {"cblat-" + strconv.Itoa(i)}, "callback": {callback}, "callback_events": {"initiated,ended"}}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, door.url, bytes.NewBufferString(form.Encode()))
			if err == nil {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-API-Key", door.key)
				err = doBench(door.hc, req, successMark)
			}
			if err != nil {
				mu.Lock()
				errs++
				if firstErr == nil || strings.Contains(firstErr.Error(), "context") {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return total, errs, firstErr
}
