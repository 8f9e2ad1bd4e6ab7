package events

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// callQueue holds the unacknowledged events of one call, oldest first.
type callQueue struct {
	msgs     []*nats.Msg
	inFlight bool // msgs[0] has been sent and waits for its ack
	ready    bool // the call id is in outbox.ready
}

// outbox is the bounded store of events not yet acknowledged by JetStream.
// An event leaves it only when acknowledged, so nothing is dropped. Each call has
// at most one event in flight: a retried event can never be overtaken by a later
// event of the same call, which keeps per-call order without stopping other calls.
// All methods are safe for concurrent use.
type outbox struct {
	mu        sync.Mutex
	capacity  int
	depth     atomic.Int64 // written under mu, read without it
	calls     map[string]*callQueue
	ready     []string // call ids whose head can be sent, oldest first, from readyHead
	readyHead int
	space     chan struct{} // closed when an event leaves; nil while nobody waits
	empty     chan struct{} // closed when depth reaches 0; nil while nobody waits
}

func newOutbox(capacity int) *outbox {
	return &outbox{capacity: capacity, calls: make(map[string]*callQueue)}
}

// put appends m to call id's queue, blocking while the outbox is full until there is
// room or ctx ends.
func (o *outbox) put(ctx context.Context, id string, m *nats.Msg) error {
	o.mu.Lock()
	for o.depth.Load() >= int64(o.capacity) {
		if o.space == nil {
			o.space = make(chan struct{})
		}
		ch := o.space
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		o.mu.Lock()
	}
	q := o.calls[id]
	if q == nil {
		q = &callQueue{}
		o.calls[id] = q
	}
	q.msgs = append(q.msgs, m)
	o.depth.Add(1)
	if !q.inFlight && !q.ready {
		o.pushReady(id, q)
	}
	o.mu.Unlock()
	return nil
}

// next takes the oldest sendable event and marks its call in flight.
func (o *outbox) next() (string, *nats.Msg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.readyHead == len(o.ready) {
		return "", nil, false
	}
	id := o.ready[o.readyHead]
	o.ready[o.readyHead] = ""
	o.readyHead++
	switch {
	case o.readyHead == len(o.ready):
		o.ready, o.readyHead = o.ready[:0], 0
	case o.readyHead >= 1024 && 2*o.readyHead >= len(o.ready):
		n := copy(o.ready, o.ready[o.readyHead:])
		clear(o.ready[n:])
		o.ready, o.readyHead = o.ready[:n], 0
	}
	q := o.calls[id]
	q.ready, q.inFlight = false, true
	return id, q.msgs[0], true
}

// done removes call id's in-flight event: JetStream acknowledged it.
func (o *outbox) done(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.calls[id]
	q.msgs[0] = nil
	q.msgs = q.msgs[1:]
	q.inFlight = false
	if len(q.msgs) == 0 {
		delete(o.calls, id)
	} else {
		o.pushReady(id, q)
	}
	d := o.depth.Add(-1)
	if o.space != nil {
		close(o.space)
		o.space = nil
	}
	if d == 0 && o.empty != nil {
		close(o.empty)
		o.empty = nil
	}
}

// retry puts call id's in-flight event back in front of the sendable ones.
func (o *outbox) retry(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.calls[id]
	q.inFlight = false
	q.ready = true
	if o.readyHead > 0 {
		o.readyHead--
		o.ready[o.readyHead] = id
		return
	}
	o.ready = append(o.ready, "")
	copy(o.ready[1:], o.ready)
	o.ready[0] = id
}

func (o *outbox) pushReady(id string, q *callQueue) {
	q.ready = true
	o.ready = append(o.ready, id)
}

// waitEmpty blocks until the outbox is empty or ctx ends.
func (o *outbox) waitEmpty(ctx context.Context) error {
	o.mu.Lock()
	if o.depth.Load() == 0 {
		o.mu.Unlock()
		return nil
	}
	if o.empty == nil {
		o.empty = make(chan struct{})
	}
	ch := o.empty
	o.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
