package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher defaults.
const (
	DefaultCapacity   = 65536
	DefaultHighWater  = 0.9
	DefaultMaxBackoff = 5 * time.Second
	DefaultWindow     = 256
	DefaultAckTimeout = 10 * time.Second

	minBackoff = 50 * time.Millisecond
)

// ErrRunning is returned by Run when another Run of the same Publisher is active.
var ErrRunning = errors.New("publisher already running")

// AsyncPublisher is the part of jetstream.JetStream the Publisher needs.
type AsyncPublisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// PublisherConfig tunes a Publisher. Zero values take the defaults.
type PublisherConfig struct {
	// Capacity is how many events the outbox holds before Publish blocks (default 65536).
	Capacity int
	// HighWater is the fill fraction from which Accepting reports false (default 0.9).
	HighWater float64
	// Logger receives publish failures and recoveries (default: discard).
	Logger *slog.Logger
	// MaxBackoff caps the jittered exponential wait between retries (default 5s).
	MaxBackoff time.Duration
	// Window is how many events may wait for their JetStream ack at once (default 256).
	Window int
	// AckTimeout is how long an event waits for its ack before it is sent again (default 10s).
	AckTimeout time.Duration
	// Stored, when set, is called on Run's goroutine with each event's call id and kind
	// once JetStream has acknowledged it; it must not block (the call registry removes
	// a call's in-flight record once its `ended` is stored).
	Stored func(id string, kind Kind)
}

// Publisher is the durable outbox in front of JetStream. Publish enqueues events; Run
// sends them and retries each until JetStream acknowledges it, so an event is never
// dropped. Per call, events reach the stream in the order they were published: a call
// has at most one event awaiting its ack. Re-sent events carry the same Nats-Msg-Id,
// so the stream stores each once.
//
// All methods are safe for concurrent use. Only one Run may be active at a time; the
// Publisher starts no goroutine of its own.
type Publisher struct {
	js        AsyncPublisher
	cfg       PublisherConfig
	log       *slog.Logger
	box       *outbox
	highMark  int64
	wake      chan struct{}
	running   atomic.Bool
	published atomic.Uint64
	retries   atomic.Uint64
}

// NewPublisher returns a Publisher that sends to js, typically a jetstream.JetStream.
func NewPublisher(js AsyncPublisher, cfg PublisherConfig) *Publisher {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.HighWater <= 0 || cfg.HighWater > 1 {
		cfg.HighWater = DefaultHighWater
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	high := int64(cfg.HighWater * float64(cfg.Capacity))
	if high < 1 {
		high = 1
	}
	return &Publisher{
		js:       js,
		cfg:      cfg,
		log:      log,
		box:      newOutbox(cfg.Capacity),
		highMark: high,
		wake:     make(chan struct{}, 1),
	}
}

// Publish enqueues ev, which already carries its ID and Seq, for Run to send on
// invokeari.calls.<id>.<event>. It never drops: when the outbox is full it blocks
// until there is room or ctx ends, and then returns ctx's error. The event is encoded
// now, so later changes to what ev points to are not published.
func (p *Publisher) Publish(ctx context.Context, ev Event) error {
	if !validToken(ev.ID) || !validToken(string(ev.Event)) {
		return fmt.Errorf("publish event %q of call %q: %w", ev.Event, ev.ID, ErrInvalidSubject)
	}
	id := MsgID(ev.ID, ev.Seq)
	data, err := encodeEvent(&ev)
	if err != nil {
		return fmt.Errorf("publish %s: encode: %w", id, err)
	}
	callback := "no"
	if WantsCallback(&ev) {
		callback = "yes"
	}
	m := &nats.Msg{
		Subject: Subject(ev.ID, ev.Event),
		Header:  nats.Header{jetstream.MsgIDHeader: []string{id}, CallbackHeader: []string{callback}},
		Data:    data,
	}
	if ev.Fingerprint != "" {
		m.Header.Set(FingerprintHeader, ev.Fingerprint)
	}
	if err := p.box.put(ctx, ev.ID, m); err != nil {
		return fmt.Errorf("publish %s: outbox full: %w", id, err)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// Accepting reports whether the outbox is below its high-water mark. Front doors
// refuse new originates (503) while it is false.
func (p *Publisher) Accepting() bool { return p.box.depth.Load() < p.highMark }

// Depth is the number of events not yet acknowledged by JetStream.
func (p *Publisher) Depth() int { return int(p.box.depth.Load()) }

// Published is the number of events JetStream has acknowledged.
func (p *Publisher) Published() uint64 { return p.published.Load() }

// Retries is the number of sends that failed and were scheduled again.
func (p *Publisher) Retries() uint64 { return p.retries.Load() }

// Flush waits until every event published so far has been acknowledged, or ctx
// ends. It needs a Run in progress to make progress.
func (p *Publisher) Flush(ctx context.Context) error {
	if err := p.box.waitEmpty(ctx); err != nil {
		return fmt.Errorf("flush: %d events not yet published: %w", p.Depth(), err)
	}
	return nil
}

// flight is an event sent and awaiting its ack.
type flight struct {
	call     string
	kind     Kind
	fut      jetstream.PubAckFuture
	deadline time.Time
}

// Run sends the outbox to JetStream until ctx ends, then returns nil. A failed send
// (NATS down, no stream, ack timeout) is retried with jittered exponential backoff,
// never skipped. Events still unacknowledged when Run returns stay in the outbox and
// are sent again by the next Run.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.running.Store(false)

	r := runner{p: p, timer: time.NewTimer(time.Hour)}
	r.timer.Stop()
	defer r.timer.Stop()
	defer func() {
		for _, f := range r.inflight[r.head:] {
			p.box.retry(f.call)
		}
	}()

	for {
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		holding := now.Before(r.holdUntil)
		if !holding {
			r.send(now)
			holding = now.Before(r.holdUntil)
		}

		var (
			okCh   <-chan *jetstream.PubAck
			errCh  <-chan error
			wakeAt time.Time
		)
		if r.head < len(r.inflight) {
			f := r.inflight[r.head]
			okCh, errCh, wakeAt = f.fut.Ok(), f.fut.Err(), f.deadline
		}
		if holding && (wakeAt.IsZero() || r.holdUntil.Before(wakeAt)) {
			wakeAt = r.holdUntil
		}
		var timerC <-chan time.Time
		if !wakeAt.IsZero() {
			r.timer.Reset(time.Until(wakeAt))
			timerC = r.timer.C
		}
		wake := p.wake
		if holding || len(r.inflight)-r.head >= p.cfg.Window {
			wake = nil // nothing could be sent anyway
		}

		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-okCh:
			r.acked()
			r.drainResolved()
		case err := <-errCh:
			r.failed(err)
			r.drainResolved()
		case <-timerC:
			if r.head < len(r.inflight) && !time.Now().Before(r.inflight[r.head].deadline) {
				r.failed(fmt.Errorf("no ack within %s", p.cfg.AckTimeout))
			}
		}
		if timerC != nil {
			r.timer.Stop()
		}
	}
}

// runner is the state of one Run; only Run's goroutine touches it.
type runner struct {
	p         *Publisher
	timer     *time.Timer
	inflight  []flight // awaiting ack, oldest from head
	head      int
	attempt   int       // failures in the current streak, for the backoff
	holdUntil time.Time // no send before this
	streak    int       // failed sends since the last success
}

// send publishes sendable events until the window is full or none is left.
func (r *runner) send(now time.Time) {
	p := r.p
	for len(r.inflight)-r.head < p.cfg.Window {
		call, m, ok := p.box.next()
		if !ok {
			return
		}
		fut, err := p.js.PublishMsgAsync(m)
		if err != nil {
			p.box.retry(call)
			r.backoff(call, err)
			return
		}
		if r.head > 0 && 2*r.head >= len(r.inflight) {
			n := copy(r.inflight, r.inflight[r.head:])
			clear(r.inflight[n:])
			r.inflight, r.head = r.inflight[:n], 0
		}
		r.inflight = append(r.inflight, flight{call: call, kind: subjectKind(m.Subject), fut: fut,
			deadline: now.Add(p.cfg.AckTimeout)})
	}
}

func (r *runner) pop() flight {
	f := r.inflight[r.head]
	r.inflight[r.head] = flight{}
	r.head++
	return f
}

// acked retires the oldest in-flight event.
func (r *runner) acked() {
	f := r.pop()
	r.p.published.Add(1) // before done, which may release Flush
	if r.p.cfg.Stored != nil {
		r.p.cfg.Stored(f.call, f.kind)
	}
	r.p.box.done(f.call)
	if r.streak > 0 {
		r.p.log.Info("event publishing recovered", "failed_sends", r.streak)
	}
	r.streak, r.attempt = 0, 0
}

// failed puts the oldest in-flight event back for a retry after a backoff.
func (r *runner) failed(err error) {
	f := r.pop()
	r.p.box.retry(f.call)
	r.backoff(f.call, err)
}

// backoff holds sending for a jittered, growing delay. Failures of events sent in
// the same burst (NATS went down under a full window) count as one attempt.
func (r *runner) backoff(call string, err error) {
	p := r.p
	p.retries.Add(1)
	r.streak++
	now := time.Now()
	if now.Before(r.holdUntil) {
		return
	}
	d := minBackoff << min(r.attempt, 16)
	if d > p.cfg.MaxBackoff || d <= 0 {
		d = p.cfg.MaxBackoff
	}
	r.attempt++
	d = d/2 + rand.N(d/2+1)
	r.holdUntil = now.Add(d)
	if r.streak == 1 || r.streak%1000 == 0 {
		p.log.Warn("event publish failed; retrying", "call_id", call, "err", err,
			"retry_in", d, "failed_sends", r.streak, "queued", p.Depth())
	}
}

// drainResolved retires in-flight events whose ack already arrived, oldest first,
// without blocking.
func (r *runner) drainResolved() {
	for r.head < len(r.inflight) {
		f := r.inflight[r.head]
		select {
		case <-f.fut.Ok():
			r.acked()
		case err := <-f.fut.Err():
			r.failed(err)
		default:
			return
		}
	}
}

// subjectKind is the kind of an event from its subject invokeari.calls.<id>.<kind>.
func subjectKind(subject string) Kind {
	return Kind(subject[strings.LastIndexByte(subject, '.')+1:])
}

// jetstream.JetStream is what the daemon passes in.
var (
	_ AsyncPublisher = jetstream.JetStream(nil)
	_ StreamManager  = jetstream.JetStream(nil)
)
