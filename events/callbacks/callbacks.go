// Package callbacks delivers status callbacks (SPEC §8): a JetStream durable consumer
// on INVOKEARI_CALLS POSTs each call event whose request names a callback URL and asks
// for that event kind, signed, at least once and in order per call, retrying with
// exponential backoff. It knows nothing of ARI: the events' `request` says where to send.
//
// Design. Events arrive from the consumer in stream order, which is per-call order (the
// publisher keeps it). Each call with something to deliver has a queue; a bounded pool of
// workers takes calls whose head is due and POSTs the head, so calls progress in parallel
// while each call's events go out one at a time, in order. The fast path touches no
// storage: the first try of an event is made while its message is still unacknowledged,
// and the message is acknowledged once the receiver answered 2xx (or 410, which stops the
// call's callbacks). When a try fails, the call's whole queue (event bodies, attempts,
// next try) is written to the KV bucket INVOKEARI_CALLBACKS under the call id and only
// then are its messages acknowledged: retries for up to 24 h never hold JetStream
// messages, so a receiver that is down blocks nobody else, and a restart reloads them.
// Later events of a call with a queue in KV join that record. A receiver (key and URL
// origin) that failed 5 tries in a row has its circuit opened: its calls wait in KV and
// one probe at a time goes through after a backoff, so a dead or hanging receiver holds
// no workers and delays no other receiver. At start the consumer is
// re-created at its ack floor, so whatever the previous run had in flight is redelivered
// at once and ahead of newer events; what the previous run already delivered is
// recognised by the record's delivered-through sequence, or else sent again
// (at-least-once, same Invokeari-Event-Id).
//
// One Deliverer delivers at a time (per-call order needs a single deliverer, and it
// re-creates the consumer): it holds a lease in the bucket, renewed every few seconds;
// other daemons' Deliverers stand by and take over when it runs out (a crashed deliverer
// is replaced within LeaseTTL).
package callbacks

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/webhook"
)

// Defaults of Config.
const (
	DefaultConsumer    = "invokeari-callbacks"
	DefaultBucket      = "INVOKEARI_CALLBACKS"
	DefaultWorkers     = 128
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Hour
	DefaultGiveUpAfter = 24 * time.Hour
	DefaultRetention   = time.Hour
	DefaultAckWait     = 30 * time.Second
	DefaultMaxPending  = 10_000
	DefaultLeaseTTL    = 10 * time.Second
)

// FailedSubject receives one message per given-up delivery (a FailedDelivery).
const FailedSubject = "invokeari.callbacks.failed"

// Poster sends one signed callback; *webhook.Sender implements it.
type Poster interface {
	Post(ctx context.Context, key, url, eventID string, body []byte) (status int, respBody []byte, err error)
}

var _ Poster = (*webhook.Sender)(nil)

// Hooks are told about deliveries, for metrics. Any may be nil. They are called from
// worker goroutines and must not block.
type Hooks struct {
	// Attempt: one POST; result is "delivered", "gone" (410), "retry" or "error".
	Attempt func(result string, took time.Duration)
	// Delivered: an event reached its receiver, latency since it was stored in the stream.
	Delivered func(latency time.Duration)
	// GaveUp: a delivery was given up (published on FailedSubject).
	GaveUp func()
}

// Config configures a Deliverer. JS and Sender are required.
type Config struct {
	JS          jetstream.JetStream
	Sender      Poster
	Consumer    string        // durable consumer name (DefaultConsumer)
	Bucket      string        // KV bucket of retry queues (DefaultBucket)
	Workers     int           // POSTs in flight at most, over all calls (DefaultWorkers)
	MinBackoff  time.Duration // first retry delay (1s); doubles per try
	MaxBackoff  time.Duration // longest delay between tries (1h)
	GiveUpAfter time.Duration // an event is given up this long after it was stored (24h)
	Retention   time.Duration // how long a finished call's State is kept (1h)
	AckWait     time.Duration // consumer ack wait (30s); must exceed the sender's timeout
	MaxPending  int           // consumer max ack pending (10000): back-pressure on first tries
	LeaseTTL    time.Duration // how long a silent deliverer keeps the lease (10s)
	Hooks       Hooks
	Logger      *slog.Logger
}

// State is a call's callback delivery state, the `callbacks` object of GET /v2/calls/{id}.
type State struct {
	Delivered int    `json:"delivered"`
	Pending   int    `json:"pending"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
	Stopped   bool   `json:"stopped,omitempty"` // the receiver answered 410
	GaveUp    int    `json:"gave_up,omitempty"` // events given up
}

// FailedDelivery is published on FailedSubject when an event is given up.
type FailedDelivery struct {
	ID        string          `json:"id"`
	Seq       uint64          `json:"seq"`
	EventID   string          `json:"event_id"`
	Key       string          `json:"key"`
	URL       string          `json:"url"`
	Attempts  int             `json:"attempts"`
	LastError string          `json:"last_error"`
	Event     json.RawMessage `json:"event"`
}

// Deliverer is the callback delivery service. Run it under the daemon's errgroup; State
// is safe to call at any time from any goroutine.
type Deliverer struct {
	cfg Config
	log *slog.Logger
	kv  jetstream.KeyValue

	mu    sync.Mutex
	calls map[string]*callQ
	ready []*callQ // calls whose head is due, waiting for a worker
	due   dueHeap  // calls waiting for a retry, earliest first
	// circuits by key and receiver origin
	circuits map[string]*circuit
	wake     chan struct{}
	timer    chan struct{} // a retry was scheduled; the scheduler recomputes
}

// callQ is one call's delivery queue and state; guarded by Deliverer.mu except kvMu.
type callQ struct {
	id, key, url string
	items        []*item // pending, in seq order
	through      uint64  // highest seq delivered or given up
	state        State
	busy         bool // a worker holds the head, or it is in ready
	persisted    bool // a KV record exists
	nextAt       time.Time
	touched      time.Time
	kvMu         sync.Mutex // serialises KV writes of this call
}

// item is one event to deliver.
type item struct {
	Seq      uint64          `json:"seq"`
	EventID  string          `json:"event_id"`
	Body     json.RawMessage `json:"body"`
	Stored   time.Time       `json:"stored"` // when the stream stored the event
	Attempts int             `json:"attempts"`
	NextAt   time.Time       `json:"next_at"`
	LastErr  string          `json:"last_error,omitempty"`
	msg      jetstream.Msg   // nil once the record in KV holds the event
}

// record is a call's queue as stored in KV.
type record struct {
	ID      string  `json:"id"`
	Key     string  `json:"key"`
	URL     string  `json:"url"`
	Through uint64  `json:"through"`
	State   State   `json:"state"`
	Items   []*item `json:"items"`
}

// New returns a Deliverer; it starts nothing until Run.
func New(cfg Config) *Deliverer {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.GiveUpAfter, DefaultGiveUpAfter)
	def(&cfg.Retention, DefaultRetention)
	def(&cfg.AckWait, DefaultAckWait)
	def(&cfg.LeaseTTL, DefaultLeaseTTL)
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Deliverer{cfg: cfg, log: log, calls: make(map[string]*callQ),
		wake: make(chan struct{}, 1), timer: make(chan struct{}, 1)}
}

// State returns the delivery state of call id, if this daemon knows of callbacks for it.
func (d *Deliverer) State(id string) (State, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, ok := d.calls[id]
	if !ok {
		return State{}, false
	}
	s := q.state
	s.Pending = len(q.items)
	return s, true
}

// Pending is the number of events waiting for delivery over all calls.
func (d *Deliverer) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, q := range d.calls {
		n += len(q.items)
	}
	return n
}

// Run delivers until ctx ends, then returns nil once its workers stopped. Events not yet
// delivered stay in the stream or in KV for the next Run. Of several Deliverers on one
// NATS (several daemons), one delivers at a time: it holds a lease in the bucket; the
// others stand by and take over when the lease runs out.
func (d *Deliverer) Run(ctx context.Context) error {
	kv, err := d.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: d.cfg.Bucket,
		Description: "invokeari status callbacks waiting for a retry", Storage: jetstream.FileStorage,
		TTL: d.cfg.GiveUpAfter + time.Hour})
	if err != nil {
		return fmt.Errorf("callbacks: bucket %s: %w", d.cfg.Bucket, err)
	}
	d.kv = kv
	l := &lease{kv: kv, owner: newOwner(), ttl: d.cfg.LeaseTTL}
	for {
		if err := l.acquire(ctx); err != nil {
			return nil // ctx ended
		}
		err := d.lead(ctx, l)
		if ctx.Err() != nil {
			l.release()
			return nil
		}
		d.log.Warn("callbacks: stopped delivering; standing by", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second): // before competing for the lease again
		}
	}
}

// lead delivers while this Deliverer holds the lease.
func (d *Deliverer) lead(ctx context.Context, l *lease) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel below: every goroutine of this lead has stopped
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wg.Go(func() { cancel(l.keep(lctx)) })

	d.mu.Lock()
	d.calls, d.ready, d.due, d.circuits = make(map[string]*callQ), nil, nil, make(map[string]*circuit)
	d.mu.Unlock()
	if err := d.load(lctx); err != nil {
		return err
	}
	cons, err := d.consumer(lctx)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(d.cfg.MaxPending, 1024)))
	if err != nil {
		return fmt.Errorf("callbacks: consume: %w", err)
	}
	stop := context.AfterFunc(lctx, it.Stop)
	defer stop()

	for range d.cfg.Workers {
		wg.Go(func() { d.worker(lctx) })
	}
	wg.Go(func() { d.scheduler(lctx) })
	d.log.Info("callbacks: delivering", "workers", d.cfg.Workers)
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || lctx.Err() != nil {
				break
			}
			d.log.Warn("callbacks: consumer", "err", err) // e.g. missed heartbeats while NATS restarts
			continue
		}
		d.accept(lctx, m)
	}
	it.Stop()
	if err := context.Cause(lctx); err != nil {
		cancel(nil)
		return err
	}
	cancel(nil)
	return errors.New("the consumer stopped (deleted by another daemon?)")
}

// leaseKey is the bucket key of the delivery lease (not a call id: it has a dot).
const leaseKey = "lease.deliverer"

// lease is the right to deliver, held in KV by one Deliverer and renewed every ttl/3.
type lease struct {
	kv    jetstream.KeyValue
	owner string
	ttl   time.Duration
	rev   uint64
}

type leaseRecord struct {
	Owner string    `json:"owner"`
	Until time.Time `json:"until"`
}

func newOwner() string {
	return fmt.Sprintf("%x", rand.Uint64())
}

// acquire waits until this owner holds the lease (free, expired or already its own).
func (l *lease) acquire(ctx context.Context) error {
	for {
		if err := l.try(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.ttl / 3):
		}
	}
}

var errLeaseHeld = errors.New("lease held by another deliverer")

// try takes or renews the lease once, with compare-and-set on the record's revision.
func (l *lease) try(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	data, _ := json.Marshal(leaseRecord{Owner: l.owner, Until: time.Now().Add(l.ttl)})
	e, err := l.kv.Get(ctx, leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.rev, err = l.kv.Create(ctx, leaseKey, data)
		return err
	case err != nil:
		return err
	}
	var cur leaseRecord
	_ = json.Unmarshal(e.Value(), &cur)
	if cur.Owner != l.owner && time.Now().Before(cur.Until) {
		return errLeaseHeld
	}
	l.rev, err = l.kv.Update(ctx, leaseKey, data, e.Revision())
	return err
}

// release gives the lease up at a clean stop, so a successor need not wait it out.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev))
}

// keep renews the lease until ctx ends (nil) or it is lost: taken by another, or not
// renewed within its ttl (NATS away); then it returns why.
func (l *lease) keep(ctx context.Context) error {
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.ttl / 3):
		}
		err := l.try(ctx)
		switch {
		case err == nil:
			renewed = time.Now()
		case errors.Is(err, errLeaseHeld):
			return err
		case time.Since(renewed) > l.ttl*2/3:
			return fmt.Errorf("lease not renewed for %s: %w", time.Since(renewed).Round(time.Millisecond), err)
		}
	}
}

// consumer re-creates the durable consumer at its ack floor, so the previous run's
// unacknowledged events come again now, in stream order, ahead of new ones.
func (d *Deliverer) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable: d.cfg.Consumer, Description: "invokeari status callbacks",
		FilterSubject: events.SubjectPrefix + ".>", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: d.cfg.AckWait, MaxAckPending: d.cfg.MaxPending, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	old, err := d.cfg.JS.Consumer(ctx, events.StreamName, d.cfg.Consumer)
	switch {
	case err == nil:
		info, err := old.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("callbacks: consumer info: %w", err)
		}
		if err := d.cfg.JS.DeleteConsumer(ctx, events.StreamName, d.cfg.Consumer); err != nil {
			return nil, fmt.Errorf("callbacks: reset consumer: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1
		if info.NumAckPending > 0 {
			d.log.Info("callbacks: redelivering what the previous run had not finished",
				"from_stream_seq", cfg.OptStartSeq, "unacked", info.NumAckPending)
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("callbacks: consumer: %w", err)
	}
	c, err := d.cfg.JS.CreateOrUpdateConsumer(ctx, events.StreamName, cfg)
	if err != nil {
		return nil, fmt.Errorf("callbacks: create consumer: %w", err)
	}
	return c, nil
}

// load restores the retry queues of the previous run from KV.
func (d *Deliverer) load(ctx context.Context) error {
	keys, err := d.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("callbacks: list %s: %w", d.cfg.Bucket, err)
	}
	n := 0
	for k := range keys.Keys() {
		if k == leaseKey {
			continue
		}
		e, err := d.kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("callbacks: load %s: %w", k, err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			d.log.Error("callbacks: unreadable record dropped", "call_id", k, "err", err)
			continue
		}
		q := &callQ{id: r.ID, key: r.Key, url: r.URL, items: r.Items, through: r.Through, state: r.State,
			persisted: true, touched: time.Now()}
		d.mu.Lock()
		d.calls[q.id] = q
		if len(q.items) > 0 {
			q.nextAt = q.items[0].NextAt
			d.scheduleLocked(q)
		}
		d.mu.Unlock()
		n++
	}
	if n > 0 {
		d.log.Info("callbacks: retry queues restored", "calls", n)
	}
	return nil
}

// envelope is what accept reads of an event.
type envelope struct {
	ID      string      `json:"id"`
	Seq     uint64      `json:"seq"`
	Event   events.Kind `json:"event"`
	Key     string      `json:"key"`
	Request *struct {
		Callback       string   `json:"callback"`
		CallbackEvents []string `json:"callback_events"`
	} `json:"request"`
}

// accept takes one event from the consumer: queues it for its call, or acks it at once
// when there is nothing to send.
func (d *Deliverer) accept(ctx context.Context, m jetstream.Msg) {
	if m.Headers().Get(events.CallbackHeader) == "no" {
		_ = m.Ack() // most events: nothing to deliver, nothing to decode
		return
	}
	var ev envelope
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.ID == "" {
		d.log.Error("callbacks: undecodable event skipped", "subject", m.Subject(), "err", err)
		_ = m.Ack()
		return
	}
	if ev.Request == nil || !events.CallbackAsked(ev.Request.Callback, ev.Request.CallbackEvents, ev.Event) {
		_ = m.Ack()
		return
	}
	d.log.Debug("callbacks: event", "event_id", events.MsgID(ev.ID, ev.Seq))
	stored := time.Now()
	if md, err := m.Metadata(); err == nil {
		stored = md.Timestamp
	}
	d.mu.Lock()
	q := d.calls[ev.ID]
	if q == nil {
		q = &callQ{id: ev.ID, key: ev.Key, url: ev.Request.Callback}
		d.calls[ev.ID] = q
	}
	q.touched = time.Now()
	if ev.Seq <= q.through || q.state.Stopped {
		d.mu.Unlock()
		_ = m.Ack() // delivered (or stopped) before: a redelivery
		return
	}
	i, found := slices.BinarySearchFunc(q.items, ev.Seq, func(it *item, s uint64) int { return cmpU(it.Seq, s) })
	if found {
		if q.items[i].msg != nil {
			q.items[i].msg = m // a redelivery of a message we hold: keep the newest to ack
			d.mu.Unlock()
		} else {
			d.mu.Unlock()
			_ = m.Ack() // already safe in KV
		}
		return
	}
	it := &item{Seq: ev.Seq, EventID: events.MsgID(ev.ID, ev.Seq), Body: m.Data(), Stored: stored, msg: m}
	q.items = slices.Insert(q.items, i, it)
	persisted := q.persisted
	if !q.busy {
		// Idle: try the head now if it is due, else make sure its retry is scheduled.
		if head := q.items[0]; !head.NextAt.After(time.Now()) {
			d.enqueueLocked(q)
		} else if !q.nextAt.Equal(head.NextAt) {
			q.nextAt = head.NextAt
			d.scheduleLocked(q)
		}
	}
	d.mu.Unlock()
	if persisted {
		// The call is retrying: the new event waits behind, stored with the rest.
		d.persist(ctx, q)
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// enqueueLocked hands q to the workers; d.mu must be held.
func (d *Deliverer) enqueueLocked(q *callQ) {
	q.busy = true
	d.ready = append(d.ready, q)
	d.signal(d.wake)
}

func (d *Deliverer) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// worker POSTs the head event of ready calls until ctx ends.
func (d *Deliverer) worker(ctx context.Context) {
	for {
		d.mu.Lock()
		var q *callQ
		if len(d.ready) > 0 {
			q = d.ready[0]
			d.ready[0] = nil
			d.ready = d.ready[1:]
			if len(d.ready) > 0 {
				d.signal(d.wake) // pass the wake-up on to another worker
			}
		}
		d.mu.Unlock()
		if q == nil {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		d.deliverHead(ctx, q)
	}
}

// deliverHead tries q's first event once and acts on the answer.
func (d *Deliverer) deliverHead(ctx context.Context, q *callQ) {
	d.mu.Lock()
	if len(q.items) == 0 {
		q.busy = false
		d.mu.Unlock()
		return
	}
	head := q.items[0]
	key, url := q.key, q.url
	c := d.circuitLocked(key, url)
	if now := time.Now(); c.open(now) && now.Before(head.Stored.Add(d.cfg.GiveUpAfter)) {
		// The receiver is failing: no try until its circuit lets one probe through; the
		// event waits in KV, using no worker and holding no stream message.
		wait := now.Add(d.cfg.MinBackoff) // a probe in flight: look again later
		if c.openUntil.After(wait) {
			wait = c.openUntil
		}
		head.NextAt = wait.Add(rand.N(d.cfg.MinBackoff/2 + 1))
		q.nextAt, q.busy = head.NextAt, false
		q.state.LastError = c.lastErr
		d.scheduleLocked(q)
		unstored := slices.ContainsFunc(q.items, func(it *item) bool { return it.msg != nil })
		d.mu.Unlock()
		if unstored {
			d.persist(ctx, q) // then its messages are acknowledged
		}
		return
	}
	c.probing = c.fails >= circuitAfter
	d.mu.Unlock()

	began := time.Now()
	status, _, err := d.cfg.Sender.Post(ctx, key, url, head.EventID, head.Body)
	took := time.Since(began)
	if err != nil && ctx.Err() != nil {
		d.mu.Lock()
		q.busy = false // stopping: the next Run tries again
		d.mu.Unlock()
		return
	}
	now := time.Now()
	result := "retry"
	switch {
	case err == nil && status >= 200 && status < 300:
		result = "delivered"
	case err == nil && status == 410:
		result = "gone"
	case errors.Is(err, webhook.ErrNoSecret) || errors.Is(err, webhook.ErrNotAllowed):
		result = "error" // never succeeds without a config change: give up now
	}
	if h := d.cfg.Hooks.Attempt; h != nil {
		h(result, took)
	}
	d.log.Debug("callbacks: attempt", "event_id", head.EventID, "result", result, "status", status, "err", err)

	var acks []jetstream.Msg
	var failed []FailedDelivery
	d.mu.Lock()
	c.probing = false
	if result == "retry" {
		c.fails++
		c.lastErr = fmt.Sprintf("HTTP %d", status)
		if err != nil {
			c.lastErr = err.Error()
		}
		if c.fails >= circuitAfter {
			c.openUntil = now.Add(d.backoff(c.fails - circuitAfter + 1))
		}
	} else {
		c.fails, c.openUntil = 0, time.Time{}
	}
	q.state.Attempts++
	q.touched = now
	head.Attempts++
	switch result {
	case "delivered":
		if h := d.cfg.Hooks.Delivered; h != nil {
			h(now.Sub(head.Stored))
		}
		q.state.Delivered++
		q.state.LastError = ""
		acks = append(acks, d.popLocked(q))
	case "gone":
		q.state.Stopped = true
		q.state.LastError = "receiver answered 410 Gone: no more callbacks for this call"
		for len(q.items) > 0 {
			acks = append(acks, d.popLocked(q))
		}
	default:
		msg := fmt.Sprintf("HTTP %d", status)
		if err != nil {
			msg = err.Error()
		}
		head.LastErr, q.state.LastError = msg, msg
		// Give up on every event at the head whose time is up (a follower stored a moment
		// after a given-up head gets no 24 h of its own behind it).
		for len(q.items) > 0 && (result == "error" || now.Sub(q.items[0].Stored) >= d.cfg.GiveUpAfter) {
			it := q.items[0]
			failed = append(failed, FailedDelivery{ID: q.id, Seq: it.Seq, EventID: it.EventID, Key: q.key, URL: q.url,
				Attempts: it.Attempts, LastError: msg, Event: it.Body})
			q.state.GaveUp++
			acks = append(acks, d.popLocked(q))
			result = "gaveup"
		}
		if len(q.items) > 0 && result != "gaveup" {
			head.NextAt = now.Add(d.backoff(head.Attempts))
			if limit := head.Stored.Add(d.cfg.GiveUpAfter); head.NextAt.After(limit) {
				head.NextAt = limit
			}
		}
	}
	more := len(q.items) > 0
	wasPersisted := q.persisted
	retry := more && (result == "retry" || (q.items[0].NextAt.After(now)))
	if more && !retry {
		d.ready = append(d.ready, q) // next event right away; q stays busy
		d.signal(d.wake)
	} else {
		q.busy = false
		if retry {
			q.nextAt = q.items[0].NextAt
			d.scheduleLocked(q)
		}
	}
	d.mu.Unlock()

	for _, f := range failed {
		d.publishFailed(f)
	}
	if retry || wasPersisted {
		// The queue changes what KV holds (a failure, or progress of a stored queue):
		// store it before acknowledging, so a crash loses nothing.
		d.persist(ctx, q)
	}
	for _, m := range acks {
		if m != nil {
			_ = m.Ack()
		}
	}
}

// circuitAfter consecutive failed tries to one receiver open its circuit.
const circuitAfter = 5

// circuit is the health of one receiver (a key's URL origin): after circuitAfter failed
// tries in a row, its calls wait instead of each trying (and holding a worker for up to
// the timeout), and one probe at a time goes through when the circuit's backoff ends.
// Guarded by Deliverer.mu.
type circuit struct {
	fails     int
	openUntil time.Time
	probing   bool
	lastErr   string
}

// open reports whether tries to this receiver must wait now.
func (c *circuit) open(now time.Time) bool {
	return c.fails >= circuitAfter && (now.Before(c.openUntil) || c.probing)
}

// circuitLocked is the circuit of key's receiver at rawURL (by origin); d.mu held.
func (d *Deliverer) circuitLocked(key, rawURL string) *circuit {
	origin := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		origin = u.Scheme + "://" + u.Host
	}
	k := key + " " + origin
	c := d.circuits[k]
	if c == nil {
		c = &circuit{}
		d.circuits[k] = c
	}
	return c
}

// popLocked removes q's head, advances through, and returns its unacked message (nil if
// KV held it).
func (d *Deliverer) popLocked(q *callQ) jetstream.Msg {
	it := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	q.through = max(q.through, it.Seq)
	m := it.msg
	it.msg = nil
	return m
}

// backoff is the delay before try n+1: MinBackoff doubled per try up to MaxBackoff,
// with up to 10% jitter so calls that failed together do not retry together.
func (d *Deliverer) backoff(attempts int) time.Duration {
	b := d.cfg.MinBackoff << min(attempts-1, 30)
	if b > d.cfg.MaxBackoff || b <= 0 {
		b = d.cfg.MaxBackoff
	}
	return b + rand.N(b/10+1)
}

// persist writes q's queue to KV (or deletes its record once empty) and then acks the
// messages the record now holds. A failed write leaves them unacked: the stream keeps
// them and redelivers them.
func (d *Deliverer) persist(ctx context.Context, q *callQ) {
	q.kvMu.Lock()
	defer q.kvMu.Unlock()
	d.mu.Lock()
	var held []*item
	for _, it := range q.items {
		if it.msg != nil {
			held = append(held, it)
		}
	}
	empty := len(q.items) == 0
	var data []byte
	var err error
	if !empty {
		data, err = json.Marshal(record{ID: q.id, Key: q.key, URL: q.url, Through: q.through, State: q.state, Items: q.items})
	}
	d.mu.Unlock()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	switch {
	case err != nil:
	case empty:
		err = d.kv.Purge(wctx, q.id)
	default:
		_, err = d.kv.Put(wctx, q.id, data)
	}
	if err != nil {
		d.log.Warn("callbacks: store retry queue", "call_id", q.id, "err", err)
		return
	}
	var acks []jetstream.Msg
	d.mu.Lock()
	q.persisted = !empty
	for _, it := range held {
		if it.msg != nil {
			acks = append(acks, it.msg)
			it.msg = nil
		}
	}
	d.mu.Unlock()
	for _, m := range acks {
		_ = m.Ack()
	}
}

func (d *Deliverer) publishFailed(f FailedDelivery) {
	d.log.Warn("callbacks: delivery given up", "call_id", f.ID, "event_id", f.EventID, "attempts", f.Attempts, "err", f.LastError)
	if h := d.cfg.Hooks.GaveUp; h != nil {
		h()
	}
	data, err := json.Marshal(f)
	if err == nil {
		err = d.cfg.JS.Conn().Publish(FailedSubject, data)
	}
	if err != nil {
		d.log.Error("callbacks: publish given-up delivery", "event_id", f.EventID, "err", err)
	}
}

// due is a scheduled retry; an entry whose call moved on since is skipped.
type due struct {
	at time.Time
	q  *callQ
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// scheduleLocked arranges for q's head to be tried at q.nextAt; d.mu must be held.
func (d *Deliverer) scheduleLocked(q *callQ) {
	heap.Push(&d.due, due{at: q.nextAt, q: q})
	d.signal(d.timer)
}

// scheduler moves calls whose retry is due to the workers, and forgets finished calls
// after Retention.
func (d *Deliverer) scheduler(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		now := time.Now()
		next := now.Add(time.Minute)
		d.mu.Lock()
		for d.due.Len() > 0 {
			e := d.due[0]
			if e.at.After(now) {
				next = e.at
				break
			}
			heap.Pop(&d.due)
			q := e.q
			if !q.busy && len(q.items) > 0 && q.nextAt.Equal(e.at) && d.calls[q.id] == q {
				d.enqueueLocked(q)
			}
		}
		if now.Sub(lastSweep) >= time.Minute {
			lastSweep = now
			for id, q := range d.calls {
				if !q.busy && len(q.items) == 0 && now.Sub(q.touched) > d.cfg.Retention {
					delete(d.calls, id)
				}
			}
		}
		d.mu.Unlock()
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.timer:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
	}
}
