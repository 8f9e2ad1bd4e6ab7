package callbacks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/events/webhook"
)

var testSecret = []byte("test-webhook-secret")

// receiver is a real HTTP receiver that verifies signatures and answers as told.
type receiver struct {
	t   testing.TB
	srv *httptest.Server
	// mode picks the answer for a request: "ok", "500", "410", "close", "slow".
	mode atomic.Pointer[func(ev events.Event) string]

	mu        sync.Mutex
	got       map[string][]uint64 // call id → seqs answered 2xx, in arrival order
	tries     map[string]int      // event id → requests
	badSig    int
	badID     int
	changed   chan struct{}
	delivered int
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{t: t, got: map[string][]uint64{}, tries: map[string]int{}, changed: make(chan struct{})}
	r.setMode(func(events.Event) string { return "ok" })
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setMode(f func(ev events.Event) string) { r.mode.Store(&f) }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var ev events.Event
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	if err := webhook.Verify(testSecret, req.Header.Get(webhook.SignatureHeader), body, time.Now(), webhook.DefaultMaxAge); err != nil {
		r.badSig++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if req.Header.Get(webhook.EventIDHeader) != events.MsgID(ev.ID, ev.Seq) {
		r.badID++
	}
	r.tries[req.Header.Get(webhook.EventIDHeader)]++
	r.mu.Unlock()
	switch (*r.mode.Load())(ev) {
	case "500":
		http.Error(w, "down", http.StatusInternalServerError)
		return
	case "410":
		w.WriteHeader(http.StatusGone)
		return
	case "close":
		hj, _ := w.(http.Hijacker)
		c, _, err := hj.Hijack()
		if err == nil {
			c.Close()
		}
		return
	case "slow":
		select {
		case <-req.Context().Done():
		case <-time.After(10 * time.Second): // longer than the sender's timeout in these tests
		}
		return
	}
	r.mu.Lock()
	r.got[ev.ID] = append(r.got[ev.ID], ev.Seq)
	r.delivered++
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// waitDelivered waits until every call in want got at least all its seqs.
func (r *receiver) waitDelivered(want map[string][]uint64, limit time.Duration) {
	r.t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		r.mu.Lock()
		missing := 0
		for id, seqs := range want {
			for _, s := range seqs {
				if !slices.Contains(r.got[id], s) {
					missing++
				}
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			r.mu.Lock()
			var which []string
			for id, seqs := range want {
				for _, s := range seqs {
					if !slices.Contains(r.got[id], s) {
						which = append(which, fmt.Sprintf("%s.%d (tries %d)", id, s, r.tries[events.MsgID(id, s)]))
					}
				}
			}
			r.mu.Unlock()
			r.t.Fatalf("%d events not delivered within %s: %v", missing, limit, which)
		}
	}
}

// checkOrder: per call, the seqs answered 2xx never go backwards. A repeat of the one
// before is at-least-once (the receiver got it, the answer did not come back: a timeout
// under load, a stop mid-request) and is counted, not refused.
func (r *receiver) checkOrder() (dups int) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.badSig > 0 || r.badID > 0 {
		r.t.Errorf("%d requests with a bad signature, %d with a wrong Invokeari-Event-Id", r.badSig, r.badID)
	}
	for id, seqs := range r.got {
		for i := 1; i < len(seqs); i++ {
			switch {
			case seqs[i] > seqs[i-1]:
			case seqs[i] == seqs[i-1]:
				dups++
			default:
				r.t.Errorf("call %s: delivered out of order: %v", id, seqs)
			}
		}
	}
	return dups
}

// world is NATS with the stream, a publisher of events, and a way to run Deliverers.
type world struct {
	t    testing.TB
	ns   *natstest.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	recv *receiver
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{t: t, ns: natstest.Start(t), recv: newReceiver(t)}
	w.nc, w.js = w.ns.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.EnsureStream(ctx, w.js, time.Hour); err != nil {
		t.Fatal(err)
	}
	return w
}

// publish stores one event of call id with a callback to the receiver.
func (w *world) publish(id string, seq uint64, kind events.Kind, callback string, kinds ...string) {
	w.t.Helper()
	w.publishHeader(id, seq, kind, "", callback, kinds...)
}

// publishHeader stores one event with events.CallbackHeader set to header ("": none).
func (w *world) publishHeader(id string, seq uint64, kind events.Kind, header, callback string, kinds ...string) {
	w.t.Helper()
	ev := events.Event{ID: id, Seq: seq, Event: kind, Time: time.Now(), Key: "k",
		Request: &events.Request{Destination: "PJSIP/6001", Callback: callback, CallbackEvents: kinds}}
	data, _ := json.Marshal(ev)
	m := &nats.Msg{Subject: events.Subject(id, kind), Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, events.MsgID(id, seq))
	if header != "" {
		m.Header.Set(events.CallbackHeader, header)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, err := w.js.PublishMsg(ctx, m)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			w.t.Fatalf("publish %s.%d: %v", id, seq, err)
		}
		time.Sleep(50 * time.Millisecond) // NATS restarting: retry pace, bounded by ctx
	}
}

var allKinds = []string{"initiated", "ringing", "answered", "ended"}
var callKinds = []events.Kind{events.Initiated, events.Ringing, events.KindAnswered, events.Ended}

// publishCalls stores n calls × 4 events, interleaved, and returns what must be delivered.
func (w *world) publishCalls(prefix string, n int) map[string][]uint64 {
	want := map[string][]uint64{}
	for s, k := range callKinds {
		for i := range n {
			id := fmt.Sprintf("%s%03d", prefix, i)
			w.publish(id, uint64(s+1), k, w.recv.srv.URL+"/cb", allKinds...)
			want[id] = append(want[id], uint64(s+1))
		}
	}
	return want
}

type running struct {
	once   sync.Once
	d      *Deliverer
	cancel context.CancelFunc
	done   chan error
	failed chan FailedDelivery
}

func (w *world) start(tune func(*Config)) *running {
	w.t.Helper()
	allow, _ := webhook.ParseAllowList([]string{"127.0.0.1"})
	sender := webhook.NewSender(webhook.SenderConfig{Secret: func(string) []byte { return testSecret },
		Allow: func(string) *webhook.AllowList { return allow }, Timeout: time.Second})
	cfg := Config{JS: w.js, Sender: sender, Workers: 8, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		AckWait: 2 * time.Second}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if tune != nil {
		tune(&cfg)
	}
	r := &running{d: New(cfg), done: make(chan error, 1), failed: make(chan FailedDelivery, 100)}
	sub, err := w.nc.Subscribe(FailedSubject, func(m *nats.Msg) {
		var f FailedDelivery
		if json.Unmarshal(m.Data, &f) == nil {
			r.failed <- f
		}
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = sub.Unsubscribe() })
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.d.Run(ctx) }()
	w.t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			panic("Deliverer.Run did not return within 10s of cancel")
		}
	})
}

func TestDeliverAllInOrder(t *testing.T) {
	w := newWorld(t)
	r := w.start(nil)
	want := w.publishCalls("ok", 30)
	// Not asked for: another kind, and no callback at all.
	w.publish("quiet", 1, events.Initiated, w.recv.srv.URL, "ended")
	w.publish("none", 1, events.Ended, "")
	// The header decides when present: "no" is acked unread even if the body asks.
	w.publishHeader("said-no", 1, events.Ended, "no", w.recv.srv.URL+"/cb", allKinds...)
	yes := w.publishCalls("said-yes", 1) // publishCalls' events carry no header (stored before it existed)...
	w.publishHeader("said-yes000", 5, events.Ended, "yes", w.recv.srv.URL+"/cb", allKinds...)
	yes["said-yes000"] = append(yes["said-yes000"], 5) // ...and this one says yes
	maps.Copy(want, yes)
	w.recv.waitDelivered(want, 20*time.Second)
	w.recv.checkOrder()
	w.recv.mu.Lock()
	if len(w.recv.got["quiet"])+len(w.recv.got["none"])+len(w.recv.got["said-no"]) > 0 {
		t.Errorf("delivered events nobody asked for: %v %v %v", w.recv.got["quiet"], w.recv.got["none"], w.recv.got["said-no"])
	}
	w.recv.mu.Unlock()
	st, ok := r.d.State("ok007")
	if !ok || st.Delivered != 4 || st.Pending != 0 || st.Attempts != 4 || st.LastError != "" {
		t.Errorf("State(ok007) = %+v, %v; want 4 delivered in 4 attempts", st, ok)
	}
}

// TestReceiverOutage: the receiver fails in every way for a while, then recovers; every
// event arrives, in order per call, each delivered once.
func TestReceiverOutage(t *testing.T) {
	w := newWorld(t)
	var failures atomic.Int64
	modes := []string{"500", "close", "slow"}
	w.recv.setMode(func(events.Event) string {
		n := failures.Add(1)
		return modes[n%3]
	})
	r := w.start(nil)
	want := w.publishCalls("out", 20)
	deadline := time.Now().Add(20 * time.Second)
	for failures.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for the outage to be felt; bounded
	}
	st, _ := r.d.State("out003")
	if st.LastError == "" || st.Attempts == 0 {
		t.Errorf("during the outage State = %+v; want attempts and a last error", st)
	}
	w.recv.setMode(func(events.Event) string { return "ok" })
	w.recv.waitDelivered(want, 30*time.Second)
	w.recv.checkOrder()
	waitCond(t, 5*time.Second, "nothing pending", func() bool { return r.d.Pending() == 0 })
	// The retry records are gone from KV once delivered.
	waitCond(t, 5*time.Second, "KV records purged", func() bool {
		kv, err := w.js.KeyValue(context.Background(), DefaultBucket)
		if err != nil {
			return false
		}
		keys, err := kv.Keys(context.Background())
		return err == nil && slices.Equal(keys, []string{leaseKey})
	})
}

// TestGoneAndGiveUp: 410 stops a call's callbacks; a receiver that never recovers has
// the delivery given up and published on invokeari.callbacks.failed.
func TestGoneAndGiveUp(t *testing.T) {
	w := newWorld(t)
	w.recv.setMode(func(ev events.Event) string {
		switch {
		case ev.ID == "gone" && ev.Seq == 2:
			return "410"
		case ev.ID == "never":
			return "500"
		}
		return "ok"
	})
	r := w.start(func(c *Config) { c.GiveUpAfter = 500 * time.Millisecond })
	for s, k := range callKinds {
		w.publish("gone", uint64(s+1), k, w.recv.srv.URL, allKinds...)
	}
	w.publish("never", 1, events.Ended, w.recv.srv.URL, "ended")
	w.publish("fine", 1, events.Ended, w.recv.srv.URL, "ended")
	w.recv.waitDelivered(map[string][]uint64{"fine": {1}, "gone": {1}}, 10*time.Second)
	select {
	case f := <-r.failed:
		if f.ID != "never" || f.EventID != "never.1" || f.Attempts < 2 || f.LastError != "HTTP 500" || len(f.Event) == 0 {
			t.Errorf("failed delivery = %+v", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message on invokeari.callbacks.failed")
	}
	waitCond(t, 5*time.Second, "gone stopped", func() bool { s, _ := r.d.State("gone"); return s.Stopped })
	st, _ := r.d.State("never")
	if st.GaveUp != 1 || st.Pending != 0 {
		t.Errorf("State(never) = %+v; want 1 given up, none pending", st)
	}
	w.recv.mu.Lock()
	defer w.recv.mu.Unlock()
	if got := w.recv.got["gone"]; !slices.Equal(got, []uint64{1}) || w.recv.tries["gone.3"] > 0 || w.recv.tries["gone.4"] > 0 {
		t.Errorf("after 410: delivered %v, tries of later events %d %d; want nothing after seq 2",
			got, w.recv.tries["gone.3"], w.recv.tries["gone.4"])
	}
}

// TestRestartAndNATSRestart: a Deliverer stopped mid-outage and started again, then a
// NATS restart, lose nothing and keep order.
func TestRestartAndNATSRestart(t *testing.T) {
	w := newWorld(t)
	var fails atomic.Int64
	w.recv.setMode(func(events.Event) string { fails.Add(1); return "500" })
	r := w.start(nil)
	want := w.publishCalls("rs", 15)
	waitCond(t, 20*time.Second, "outage felt", func() bool { return fails.Load() > 15 })
	r.stop()
	r2 := w.start(nil)
	n := fails.Load()
	waitCond(t, 20*time.Second, "restored queues retried", func() bool { return fails.Load() > n+5 })
	w.recv.setMode(func(events.Event) string { return "ok" })
	w.recv.waitDelivered(want, 30*time.Second)

	// NATS restarts while new calls are published and delivered.
	more := w.publishCalls("nr", 10)
	w.ns.Restart(t)
	more2 := w.publishCalls("na", 10)
	w.recv.waitDelivered(more, 30*time.Second)
	w.recv.waitDelivered(more2, 30*time.Second)
	dups := w.recv.checkOrder()
	t.Logf("repeats after restarts (at-least-once): %d", dups)
	waitCond(t, 5*time.Second, "nothing pending", func() bool { return r2.d.Pending() == 0 })
}

// TestOneDelivererAtATime: two Deliverers (two daemons) on one NATS: one delivers,
// nothing twice; when it stops the other takes over.
func TestOneDelivererAtATime(t *testing.T) {
	w := newWorld(t)
	r1 := w.start(nil)
	want := w.publishCalls("a", 10)
	w.recv.waitDelivered(want, 20*time.Second)
	r2 := w.start(nil)
	want2 := w.publishCalls("b", 10)
	w.recv.waitDelivered(want2, 20*time.Second)
	_, by1 := r1.d.State("b003")
	_, by2 := r2.d.State("b003")
	if !by1 || by2 {
		t.Errorf("b003 known by first %v, second %v; want the first (the lease holder) only", by1, by2)
	}
	r1.stop()
	want3 := w.publishCalls("c", 10)
	w.recv.waitDelivered(want3, 20*time.Second)
	if _, ok := r2.d.State("c003"); !ok {
		t.Error("the second deliverer did not take over")
	}
	w.recv.checkOrder()
}

func waitCond(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond) // polling pace; bounded by the deadline
	}
}

// TestFailingReceiverIsolated: a receiver that hangs until the sender's timeout opens
// its circuit: its calls wait in KV instead of each holding a worker, other receivers'
// calls are delivered meanwhile, and once it recovers everything arrives in order.
func TestFailingReceiverIsolated(t *testing.T) {
	w := newWorld(t)
	var deadDown atomic.Bool
	deadDown.Store(true)
	w.recv.setMode(func(ev events.Event) string {
		if deadDown.Load() && strings.HasPrefix(ev.ID, "dead") {
			return "slow"
		}
		return "ok"
	})
	// The dead receiver is another origin: a second listener in front of the same handler.
	dead := httptest.NewServer(w.recv.srv.Config.Handler)
	t.Cleanup(dead.Close)
	r := w.start(func(c *Config) { c.Workers = 4; c.MinBackoff = 200 * time.Millisecond })
	wantDead := map[string][]uint64{}
	for i := range 30 {
		id := fmt.Sprintf("dead%02d", i)
		w.publish(id, 1, events.Ended, dead.URL+"/cb", "ended")
		wantDead[id] = []uint64{1}
	}
	wantLive := map[string][]uint64{}
	began := time.Now()
	for i := range 30 {
		id := fmt.Sprintf("live%02d", i)
		w.publish(id, 1, events.Ended, w.recv.srv.URL+"/cb", "ended")
		wantLive[id] = []uint64{1}
	}
	w.recv.waitDelivered(wantLive, 10*time.Second)
	took := time.Since(began)
	w.recv.mu.Lock()
	deadTries := 0
	for id := range wantDead {
		deadTries += w.recv.tries[id+".1"]
	}
	w.recv.mu.Unlock()
	// Without the circuit, 30 calls × a 1 s timeout on 4 workers would hold the live
	// calls back for about 7 s; with it, a handful of tries open the circuit.
	if deadTries > 10 {
		t.Errorf("%d tries to the failing receiver before the healthy one's calls were delivered (in %s); want at most 10",
			deadTries, took)
	}
	st, _ := r.d.State("dead29")
	if st.Pending != 1 || st.LastError == "" {
		t.Errorf("State(dead29) while its receiver fails = %+v; want 1 pending with the receiver's error", st)
	}
	deadDown.Store(false)
	w.recv.waitDelivered(wantDead, 30*time.Second)
	w.recv.checkOrder()
	t.Logf("healthy receiver's 30 calls delivered in %s, with %d tries to the failing one meanwhile", took.Round(time.Millisecond), deadTries)
}
