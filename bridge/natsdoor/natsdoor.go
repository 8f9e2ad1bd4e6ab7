// Package natsdoor is the NATS front door: originate commands on invokeari.originate
// (request/reply or fire-and-forget), served in queue group "invokeari" so several
// daemons share the load. Validation, policy and errors are bridge/api's, as for HTTP.
package natsdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/stasisapp"
)

// Subject and QueueGroup of the originate door (SPEC §3).
const (
	Subject    = "invokeari.originate"
	QueueGroup = "invokeari"
	// StatusHeader carries the reply's status code (the HTTP door's status) on NATS replies.
	StatusHeader = "Invokeari-Status"
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
	Gate       *api.Gate
	// RequireKey demands an X-API-Key header; without it, a message with no key runs
	// as the internal principal (no per-key policy, same validation).
	RequireKey bool
	// MaxHandlers bounds requests handled at once (default 1024); further messages wait
	// in the subscription's pending buffer (back-pressure, reported as slow consumer
	// by NATS rather than lost silently).
	MaxHandlers int
	Observe     func(key string, status int)
	Logger      *slog.Logger
}

// Door serves invokeari.originate.
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
		cfg.MaxHandlers = 1024
	}
	return &Door{cfg: cfg, log: cfg.Logger}
}

// Run subscribes and serves until ctx ends, then drains the subscription and waits for
// the requests it took to be answered.
func (d *Door) Run(ctx context.Context) error {
	msgs := make(chan *nats.Msg, d.cfg.MaxHandlers)
	sub, err := d.cfg.Conn.ChanQueueSubscribe(Subject, QueueGroup, msgs)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", Subject, err)
	}
	// Raise the pending limits so bursts wait rather than being dropped by the client.
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	sem := make(chan struct{}, d.cfg.MaxHandlers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			// Take what was already delivered: those senders were told nothing yet.
			for {
				select {
				case m := <-msgs:
					d.handleAsync(&wg, sem, m)
				default:
					return ctx.Err()
				}
			}
		case m := <-msgs:
			d.handleAsync(&wg, sem, m)
		}
	}
}

func (d *Door) handleAsync(wg *sync.WaitGroup, sem chan struct{}, m *nats.Msg) {
	sem <- struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-sem }()
		// A request's wait is bounded by the App; the door's own stop does not cut it short.
		d.handle(context.Background(), m)
	}()
}

// handle serves one message.
func (d *Door) handle(ctx context.Context, m *nats.Msg) {
	key, req, aerr := d.admit(m)
	if aerr != nil {
		d.reply(m, key, aerr, nil)
		return
	}
	if m.Reply == "" {
		// Fire-and-forget: the outcome travels as events only.
		req.Wait = stasisapp.WaitAccepted
	}
	res, err := d.cfg.Originator.Originate(ctx, req)
	if err != nil {
		e := api.FromOriginateError(err)
		var partial *stasisapp.Result
		if res.Call.ID != "" {
			partial = &res
		}
		d.reply(m, key, e, partial)
		return
	}
	env, status := api.Success(res, req.Wait)
	d.send(m, key, status, env)
}

// admit authenticates, validates and admits one message, exactly as the HTTP door does.
func (d *Door) admit(m *nats.Msg) (string, stasisapp.Request, *api.Error) {
	if len(m.Data) > api.MaxBody {
		return "", stasisapp.Request{}, api.BodyTooLarge()
	}
	var p *api.Principal
	apiKey := m.Header.Get("X-API-Key")
	switch {
	case apiKey != "" || d.cfg.RequireKey:
		var aerr *api.Error
		if p, aerr = d.cfg.Gate.Authenticate(apiKey); aerr != nil {
			return "", stasisapp.Request{}, aerr
		}
	default:
		p = d.cfg.Gate.Internal()
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
	d.send(m, key, status, env)
}

func (d *Door) send(m *nats.Msg, key string, status int, env api.Envelope) {
	if d.cfg.Observe != nil {
		d.cfg.Observe(key, status)
	}
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
	if err := d.cfg.Conn.PublishMsg(out); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		d.log.Warn("send reply", "err", err)
	}
}
