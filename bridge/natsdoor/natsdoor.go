// Package natsdoor is the NATS front door: originate commands on invokeari.originate
// (request/reply or fire-and-forget) and call control on invokeari.calls.get and
// invokeari.hangup (request/reply), served in queue group "invokeari" so several
// daemons share the load. Validation, policy and errors are bridge/api's, as for HTTP.
package natsdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/stasisapp"
)

// Subjects and QueueGroup of the door (SPEC §3, §8).
const (
	Subject = "invokeari.originate"
	// GetSubject and HangupSubject take `{id}` and `{id, reason?}`: the NATS twins of
	// GET and DELETE /v2/calls/{id}.
	GetSubject    = "invokeari.calls.get"
	HangupSubject = "invokeari.hangup"
	QueueGroup    = "invokeari"
	// StatusHeader carries the reply's status code (the HTTP door's status) on NATS replies.
	StatusHeader = "Invokeari-Status"
	// RetryAfterHeader carries Retry-After (seconds) on 429 and back-pressure 503 replies,
	// as the HTTP door does.
	RetryAfterHeader = "Retry-After"
)

// Defaults for Config.
const (
	DefaultMaxHandlers = 1024
	DefaultGrace       = 5 * time.Second
	// pending limits of the subscription: a burst waits in the client rather than
	// being dropped (beyond them NATS reports a slow consumer through the error handler).
	pendingMsgs  = 1 << 20
	pendingBytes = 256 << 20
	// drainSlack bounds how long, after Grace, Run waits for the subscription to finish
	// delivering what the server had already sent it.
	drainSlack = 5 * time.Second
)

// Originator places a call and follows it until the request's wait is satisfied;
// *stasisapp.App implements it.
type Originator interface {
	Originate(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error)
}

// Config wires the door.
type Config struct {
	Conn       *nats.Conn
	Originator Originator
	// Calls serves GetSubject and HangupSubject (optional: without it they are not
	// subscribed).
	Calls api.CallControl
	Gate  *api.Gate
	// RequireKey demands an X-API-Key header; without it, a message with no key runs
	// as the internal principal (no per-key policy, same validation).
	RequireKey bool
	// MaxHandlers bounds requests handled at once (default DefaultMaxHandlers); further
	// messages wait in the subscription's pending buffer (back-pressure).
	MaxHandlers int
	// Grace is how long, once Run's ctx ends, requests in flight may go on waiting for
	// their call (default DefaultGrace). After it they are answered with what is known of
	// the call and a 503 `draining` error; the call itself goes on and ends in events.
	Grace time.Duration
	// Observe, when set, is told the key name and status of every reply (also of
	// fire-and-forget messages, which get no reply).
	Observe func(key string, status int)
	Logger  *slog.Logger
}

// Door serves invokeari.originate. Run may be called once; the door's goroutines (one
// per request in flight) all end before Run returns.
type Door struct {
	cfg Config
	log *slog.Logger
}

// New builds the door; Run starts it.
func New(cfg Config) *Door {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxHandlers <= 0 {
		cfg.MaxHandlers = DefaultMaxHandlers
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	return &Door{cfg: cfg, log: cfg.Logger}
}

// server is one Run's state: the handlers it started and whether it still starts them.
type server struct {
	d    *Door
	sem  chan struct{}
	work context.Context // handlers' context: outlives Run's ctx by Grace

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// route is one subject the door serves and its handler.
type route struct {
	subject string
	handle  func(context.Context, *nats.Msg)
}

// Run subscribes and serves until ctx ends. Then it stops taking new messages (the
// subscriptions are drained: what the server already sent this daemon is still served,
// new messages go to the other members of the queue group), lets requests in flight
// finish for up to Grace, answers the rest, and returns when every handler has replied.
func (d *Door) Run(ctx context.Context) error {
	work, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	s := &server{d: d, sem: make(chan struct{}, d.cfg.MaxHandlers), work: work}
	routes := []route{{Subject, d.handle}}
	if d.cfg.Calls != nil {
		routes = append(routes, route{GetSubject, d.handleGet}, route{HangupSubject, d.handleHangup})
	}
	var subs []*nats.Subscription
	var closed []<-chan nats.SubStatus
	for _, rt := range routes {
		sub, err := d.cfg.Conn.QueueSubscribe(rt.subject, QueueGroup, func(m *nats.Msg) { s.deliver(m, rt.handle) })
		if err != nil {
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return fmt.Errorf("subscribe %s: %w", rt.subject, err)
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			d.log.Warn("set pending limits", "subject", rt.subject, "err", err)
		}
		subs = append(subs, sub)
		closed = append(closed, sub.StatusChanged(nats.SubscriptionClosed))
	}
	select {
	case <-ctx.Done():
	case <-closed[0]:
		// The connection was closed under the door: it cannot serve any more.
		s.stop()
		return fmt.Errorf("subscription %s: %w", Subject, nats.ErrConnectionClosed)
	}

	grace := time.AfterFunc(d.cfg.Grace, cut)
	defer grace.Stop()
	for i, sub := range subs {
		if err := sub.Drain(); err != nil {
			d.log.Warn("drain subscription", "subject", routes[i].subject, "err", err)
		}
	}
	limit := time.NewTimer(d.cfg.Grace + drainSlack)
	defer limit.Stop()
	expired := false
	for i, sub := range subs {
		if !expired {
			select {
			case <-closed[i]:
				continue
			case <-limit.C:
				expired = true
			}
		}
		// NATS never confirmed the drain (e.g. disconnected): stop delivery here.
		n, _, _ := sub.Pending()
		d.log.Warn("subscription drain did not finish; unsubscribing", "subject", routes[i].subject, "pending", n)
		_ = sub.Unsubscribe()
	}
	s.stop()
	return ctx.Err()
}

// stop makes deliver refuse from now on and waits for every handler to reply.
func (s *server) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.wg.Wait()
}

// deliver is the subscriptions' callback: it runs handle for m. It blocks while
// MaxHandlers requests are in flight, so further messages wait in the subscription's
// pending buffer.
func (s *server) deliver(m *nats.Msg, handle func(context.Context, *nats.Msg)) {
	s.sem <- struct{}{}
	s.mu.Lock()
	if s.stopped {
		// Run has given up on the subscription: answer without dialling, never drop.
		s.mu.Unlock()
		<-s.sem
		s.d.refuse(m, draining("the NATS door has stopped"))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		handle(s.work, m)
	}()
}

// draining is the 503 for a request the stopping door answers before its call's state.
func draining(msg string) *api.Error {
	return &api.Error{Status: http.StatusServiceUnavailable, Code: api.CodeDraining, Message: msg}
}

// handle serves one message. ctx ends when the door's grace after stop has passed.
func (d *Door) handle(ctx context.Context, m *nats.Msg) {
	key, req, aerr := d.admit(m)
	if aerr != nil {
		d.reply(m, key, aerr, nil)
		return
	}
	if ctx.Err() != nil {
		// Taken from the pending buffer after the grace: do not dial any more.
		if req.Release != nil {
			req.Release()
		}
		d.reply(m, key, draining("draining: not accepting new calls"), nil)
		return
	}
	if m.Reply == "" {
		// Fire-and-forget: the outcome travels as events only.
		req.Wait = stasisapp.WaitAccepted
	}
	res, err := d.cfg.Originator.Originate(ctx, req)
	if err != nil {
		e := api.FromOriginateError(err)
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			e = draining("daemon stopping: replied before the call reached the awaited state; its outcome follows as events")
		}
		var partial *stasisapp.Result
		if res.Call.ID != "" {
			partial = &res
		}
		d.reply(m, key, e, partial)
		return
	}
	env, status := api.Success(res, req.Wait)
	d.send(m, key, status, env, 0)
}

// refuse answers a message that will not be served, without reading it.
func (d *Door) refuse(m *nats.Msg, e *api.Error) { d.reply(m, "", e, nil) }

// admit authenticates, validates and admits one message, exactly as the HTTP door does
// (same order: key, size, body, policy, limits).
func (d *Door) admit(m *nats.Msg) (string, stasisapp.Request, *api.Error) {
	p, aerr := d.principal(m)
	if aerr != nil {
		return "", stasisapp.Request{}, aerr
	}
	if len(m.Data) > api.MaxBody {
		return p.Name, stasisapp.Request{}, api.BodyTooLarge()
	}
	f, aerr := api.DecodeBody("application/json", m.Data)
	if aerr == nil {
		aerr = f.MergeIdempotencyKey(m.Header.Get("Idempotency-Key"))
	}
	if aerr != nil {
		return p.Name, stasisapp.Request{}, aerr
	}
	req, aerr := d.cfg.Gate.Build(p, f)
	if aerr != nil {
		return p.Name, stasisapp.Request{}, aerr
	}
	release, aerr := d.cfg.Gate.Admit(p, req.Server)
	if aerr != nil {
		return p.Name, stasisapp.Request{}, aerr
	}
	req.Release = release
	req.Door = "nats"
	return p.Name, req, nil
}

func (d *Door) reply(m *nats.Msg, key string, e *api.Error, res *stasisapp.Result) {
	env, status := api.Failure(e, res)
	if status >= 500 {
		d.log.Warn("originate failed", "key", key, "status", status, "code", e.Code, "err", e.Message)
	} else {
		d.log.Info("originate refused", "key", key, "status", status, "code", e.Code, "field", e.Field)
	}
	d.send(m, key, status, env, e.RetryAfterSeconds())
}

// principal authenticates a message's X-API-Key; a message without one runs as the
// internal principal unless RequireKey.
func (d *Door) principal(m *nats.Msg) (*api.Principal, *api.Error) {
	apiKey := m.Header.Get("X-API-Key")
	if apiKey != "" || d.cfg.RequireKey {
		return d.cfg.Gate.Authenticate(apiKey)
	}
	return d.cfg.Gate.Internal(), nil
}

func (d *Door) send(m *nats.Msg, key string, status int, env api.Envelope, retryAfter int) {
	if d.cfg.Observe != nil {
		d.cfg.Observe(key, status)
	}
	d.publish(m, status, env, retryAfter)
}

// publish sends env as the reply to m (nothing when m wants none).
func (d *Door) publish(m *nats.Msg, status int, env api.Envelope, retryAfter int) {
	if m.Reply == "" {
		return
	}
	body, err := json.Marshal(env)
	if err != nil {
		d.log.Error("encode reply", "err", err)
		return
	}
	out := nats.NewMsg(m.Reply)
	out.Data = body
	out.Header.Set(StatusHeader, strconv.Itoa(status))
	out.Header.Set("Content-Type", "application/json")
	if retryAfter > 0 {
		out.Header.Set(RetryAfterHeader, strconv.Itoa(retryAfter))
	}
	if err := d.cfg.Conn.PublishMsg(out); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		d.log.Warn("send reply", "err", err)
	}
}
