package stasisapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
	"github.com/invokeari/invokeari/stasisapp/script"
)

// Webhooks sends the requests of webhook-driven calls: signed, to allowed targets only,
// with a timeout (the events/webhook Sender implements it). key is the API key name.
type Webhooks interface {
	Post(ctx context.Context, key, url, eventID string, body []byte) (status int, respBody []byte, err error)
}

// mediaARI is what a webhook-driven call needs from ARI beyond Asterisk (*ari.Client).
type mediaARI interface {
	Play(ctx context.Context, channelID, playbackID string, media []string) (ari.Playback, error)
	StopPlayback(ctx context.Context, playbackID string) error
	Record(ctx context.Context, channelID string, p ari.RecordParams) (ari.LiveRecording, error)
	CreateBridge(ctx context.Context, bridgeID, typ string) (ari.Bridge, error)
	AddChannel(ctx context.Context, bridgeID string, channelIDs ...string) error
	DestroyBridge(ctx context.Context, bridgeID string) error
}

var _ mediaARI = (*ari.Client)(nil)

// SetWebhookError records why the call's webhook failed; the call record and its
// `ended` event carry it.
func (c *Call) SetWebhookError(s string) { c.webhookError = s }

// controlTable routes ARI events to webhook-driven calls by the ids of the channels,
// playbacks and recordings they own.
type controlTable struct {
	mu   sync.Mutex
	byID map[string]*webhookCall
}

func (ct *controlTable) add(w *webhookCall, ids ...string) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.byID == nil {
		ct.byID = make(map[string]*webhookCall)
	}
	for _, id := range ids {
		ct.byID[id] = w
		w.ids = append(w.ids, id)
	}
}

func (ct *controlTable) remove(w *webhookCall) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, id := range w.ids {
		if ct.byID[id] == w {
			delete(ct.byID, id)
		}
	}
}

func (ct *controlTable) get(id string) *webhookCall {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.byID[id]
}

// eventOwnerID is the id an event is routed by.
func eventOwnerID(ev ari.Event) string {
	switch e := ev.(type) {
	case ari.ChannelEvent:
		return e.ChannelID()
	case *ari.PlaybackStarted:
		return e.Playback.ID
	case *ari.PlaybackFinished:
		return e.Playback.ID
	case *ari.RecordingStarted:
		return e.Recording.Name
	case *ari.RecordingFinished:
		return e.Recording.Name
	case *ari.RecordingFailed:
		return e.Recording.Name
	}
	return ""
}

// controlEvent hands an event to the webhook-driven call that owns its object; it
// reports whether one did. It runs on the reader goroutine and never blocks.
func (a *App) controlEvent(ev ari.Event) bool {
	id := eventOwnerID(ev)
	if id == "" {
		return false
	}
	w := a.ctl.get(id)
	if w == nil {
		return false
	}
	w.enqueue(input{ev: ev})
	return true
}

// webhookCall runs the script of one answered webhook-driven call. Its run goroutine
// owns sc, legs and timers; the reader, timers and webhook requests only enqueue.
type webhookCall struct {
	app *App
	l   *link
	t   *tracked
	m   mediaARI // nil when the ARI client cannot play, record or bridge
	ids []string // routing ids (under app.ctl.mu)

	sc     *script.Script
	legs   map[string]*Call
	timers map[string]*time.Timer

	mu    sync.Mutex
	inbox []input
	wake  chan struct{}
}

type input struct {
	ev    ari.Event
	seq   int
	reply *script.Reply
	timer string
}

// startWebhookCall takes an answered call whose request named a webhook: instead of a
// continue into the dialplan, its webhook's actions run.
func (a *App) startWebhookCall(l *link, t *tracked) {
	timeout := a.cfg.WebhookTimeout
	if timeout <= 0 {
		timeout = script.DefaultWebhookTimeout
	}
	w := &webhookCall{
		app: a, l: l, t: t,
		sc: script.New(script.Config{
			CallID: t.req.ID, Webhook: t.req.Webhook, Context: t.req.Context,
			FallbackContext: t.req.WebhookFallback.Context, FallbackExtension: t.req.WebhookFallback.Extension,
			WebhookTimeout: timeout,
		}),
		legs:   make(map[string]*Call),
		timers: make(map[string]*time.Timer),
		wake:   make(chan struct{}, 1),
	}
	w.m, _ = l.ARI.(mediaARI)
	a.ctl.add(w, t.req.ID)
	t.mu.Lock()
	t.stepLocked("webhook call: "+script.Host(t.req.Webhook)+" drives the call", 0)
	t.mu.Unlock()
	a.background(w.run)
}

// adoptWebhookCallLocked handles a webhook-driven call found in our Stasis app after a
// reconnect: a running script goes on; a call resumed by a restarted daemon has lost its
// script (its state is not kept), so it is hung up with the reason rather than held.
// t.mu must be held.
func (a *App) adoptWebhookCallLocked(l *link, t *tracked) {
	if a.ctl.get(t.req.ID) != nil || t.continued {
		return
	}
	t.continued = true
	why := "the daemon restarted during the call: its webhook script cannot be resumed"
	t.call.SetWebhookError(why)
	t.stepLocked(why+"; hanging up", 0)
	id := t.req.ID
	a.background(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := ignoreGone(l.ARI.Hangup(ctx, id, "")); err != nil {
			a.log.Warn("hang up webhook call left without its script", "call_id", id, "err", err)
		}
	})
}

func (w *webhookCall) enqueue(in input) {
	w.mu.Lock()
	w.inbox = append(w.inbox, in)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *webhookCall) take() []input {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.inbox
	w.inbox = nil
	return in
}

func (w *webhookCall) run(ctx context.Context) {
	defer w.close()
	w.exec(ctx, w.sc.Start())
	for !w.sc.Done() {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for _, in := range w.take() {
			w.exec(ctx, w.feed(in))
		}
	}
}

// close stops the timers, forgets the routing and hangs up a second leg still alive
// (only when the daemon stops with the script unfinished).
func (w *webhookCall) close() {
	for _, tm := range w.timers {
		tm.Stop()
	}
	w.app.ctl.remove(w)
	for id, leg := range w.legs {
		if leg.Final() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := w.l.ARI.Hangup(ctx, id, ""); err != nil {
			w.app.log.Warn("hang up second leg", "call_id", w.t.req.ID, "leg", id, "err", err)
		}
		cancel()
	}
}

// feed gives one input to the script (the second leg's events go to its own Call first).
func (w *webhookCall) feed(in input) []script.Command {
	switch {
	case in.reply != nil:
		return w.sc.Reply(in.seq, *in.reply)
	case in.timer != "":
		delete(w.timers, in.timer)
		return w.sc.Timer(in.timer)
	}
	if ce, ok := in.ev.(ari.ChannelEvent); ok {
		if leg := w.legs[ce.ChannelID()]; leg != nil {
			return w.legEvent(ce.ChannelID(), leg, leg.Apply(in.ev), in.ev)
		}
	}
	return w.sc.Event(in.ev)
}

func (w *webhookCall) legEvent(id string, leg *Call, changes []Change, ev ari.Event) []script.Command {
	var out []script.Command
	for _, c := range changes {
		if c.Kind == events.KindAnswered { // the transcript is short: only what matters
			out = append(out, script.Note{Text: "second leg answered"})
		}
	}
	if _, ok := ev.(*ari.StasisStart); ok && leg.Answered() && !leg.Final() {
		out = append(out, w.sc.LegAnswered(id)...)
	}
	if leg.Final() {
		delete(w.legs, id)
		rec := leg.Record()
		out = append(out, script.Note{Text: "second leg ended: " + string(rec.Outcome) + " (" + rec.Reason + ")"})
		out = append(out, w.sc.LegEnded(id, rec)...)
	}
	return out
}

// exec carries out the script's commands in order; a refused one is reported back.
func (w *webhookCall) exec(ctx context.Context, cmds []script.Command) {
	if e := w.sc.WebhookError(); e != "" {
		w.t.mu.Lock()
		w.t.call.SetWebhookError(e)
		w.t.mu.Unlock()
	}
	for _, c := range cmds {
		if more := w.do(ctx, c); len(more) > 0 {
			w.exec(ctx, more)
		}
	}
}

// errNoMedia: the ARI client of this server cannot play, record or bridge.
var errNoMedia = errors.New("this ARI client has no playback, recording or bridge operations")

func (w *webhookCall) do(ctx context.Context, c script.Command) []script.Command {
	id := w.t.req.ID
	var op, detail string
	var err error
	began := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch c := c.(type) {
	case script.Note:
		w.step(c.Text, 0)
		return nil
	case script.PostWebhook:
		w.app.background(func(ctx context.Context) { w.post(ctx, c) })
		return nil
	case script.SetTimer:
		if old := w.timers[c.Name]; old != nil {
			old.Stop()
		}
		name := c.Name
		w.timers[name] = time.AfterFunc(c.After, func() { w.enqueue(input{timer: name}) })
		return nil
	case script.CancelTimer:
		if tm := w.timers[c.Name]; tm != nil {
			tm.Stop()
			delete(w.timers, c.Name)
		}
		return nil
	case script.Play:
		op = "play"
		w.app.ctl.add(w, c.PlaybackID)
		if err = errNoMedia; w.m != nil {
			_, err = w.m.Play(rctx, c.Channel, c.PlaybackID, c.Media)
		}
	case script.StopPlayback:
		op = "stop playback"
		if err = errNoMedia; w.m != nil {
			err = w.m.StopPlayback(rctx, c.PlaybackID)
		}
		err = ignoreGone(err) // it ended by itself meanwhile
	case script.StartRecording:
		op = "record"
		w.app.ctl.add(w, c.Name)
		if err = errNoMedia; w.m != nil {
			_, err = w.m.Record(rctx, c.Channel, ari.RecordParams{Name: c.Name, MaxSeconds: c.MaxSeconds,
				Beep: c.Beep, TerminateOn: c.TerminateOn})
		}
	case script.OriginateLeg:
		return w.originateLeg(rctx, c)
	case script.BridgeChannels:
		op = "mixing bridge"
		if err = errNoMedia; w.m != nil {
			if _, err = w.m.CreateBridge(rctx, c.BridgeID, "mixing"); err == nil {
				err = w.m.AddChannel(rctx, c.BridgeID, c.Channels...)
			}
		}
	case script.DestroyBridge:
		op = "destroy bridge"
		if err = errNoMedia; w.m != nil {
			err = ignoreGone(w.m.DestroyBridge(rctx, c.BridgeID))
		}
	case script.ContinueDialplan:
		op, detail = "continue", " "+c.Context+","+c.Extension+",1"
		err = w.l.ARI.Continue(rctx, c.Channel, c.Context, c.Extension, 1)
	case script.HangupChannel:
		op = "hangup"
		if c.Channel != id {
			op = "hangup second leg"
		}
		err = ignoreGone(w.l.ARI.Hangup(rctx, c.Channel, ""))
	default:
		w.step(fmt.Sprintf("unknown script command %T", c), 0)
		return nil
	}
	w.app.observeARI(op, began, err) // op is a fixed name: it is a metric label
	if err != nil {
		w.step("ari "+op+detail+" failed: "+err.Error(), ariStatus(err))
		return w.sc.Failed(c, err)
	}
	w.step("ari "+op+detail, 200)
	return nil
}

func ariStatus(err error) int {
	var ae *ari.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// ignoreGone treats a 404 (the object is already gone) as done.
func ignoreGone(err error) error {
	if ariStatus(err) == 404 {
		return nil
	}
	return err
}

func (w *webhookCall) step(s string, code int) {
	w.t.mu.Lock()
	w.t.stepLocked(s, code)
	w.t.mu.Unlock()
}

// originateLeg dials the second leg into our app; its outcome is decided by its own
// Call, from its own events, like any call's.
func (w *webhookCall) originateLeg(ctx context.Context, c script.OriginateLeg) []script.Command {
	leg := NewCall(c.ChannelID, w.l.Name, time.Duration(c.Timeout)*time.Second)
	w.legs[c.ChannelID] = leg
	p := ari.OriginateParams{
		Endpoint: c.Endpoint, App: w.l.AppName, AppArgs: "invokeari-leg," + w.t.req.ID,
		ChannelID: c.ChannelID, Timeout: c.Timeout, CallerID: c.CallerID,
	}
	ids := []string{c.ChannelID}
	if isLocal(c.Endpoint) {
		p.OtherChannelID = c.ChannelID + ".2"
		ids = append(ids, p.OtherChannelID)
	}
	w.app.ctl.add(w, ids...)
	began := time.Now()
	ch, err := w.l.ARI.Originate(ctx, p)
	w.app.observeARI("originate", began, err)
	if err == nil {
		w.step("ari POST /channels (second leg "+c.Endpoint+")", 200)
		return w.legEvent(c.ChannelID, leg, leg.Accepted(ch, ariTime(ch.CreationTime, began)), nil)
	}
	status := ariStatus(err)
	w.step("ari POST /channels (second leg) failed: "+err.Error(), status)
	return w.legEvent(c.ChannelID, leg, leg.OriginateFailed(status, err.Error(), time.Now()), nil)
}

// post sends one webhook request off the run goroutine and feeds its answer back. Each
// exchange is a transcript step and a `webhook` event (host, status, ms).
func (w *webhookCall) post(ctx context.Context, c script.PostWebhook) {
	t := w.t
	t.mu.Lock()
	rec := t.call.Record()
	t.mu.Unlock()
	payload := map[string]any{"event": c.Event, "call": rec}
	for k, v := range c.Data {
		payload[k] = v
	}
	body, err := json.Marshal(payload)
	status, resp := 0, []byte(nil)
	began := time.Now()
	switch {
	case err != nil:
		err = fmt.Errorf("encode webhook body: %w", err)
	case w.app.cfg.Webhooks == nil:
		err = errors.New("webhook calls are not configured on this daemon")
	default:
		timeout := w.app.cfg.WebhookTimeout
		if timeout <= 0 {
			timeout = script.DefaultWebhookTimeout
		}
		// The script's own timer decides a slow webhook; this bound only frees the request.
		pctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
		status, resp, err = w.app.cfg.Webhooks.Post(pctx, t.req.Key, c.URL, t.req.ID+".w"+strconv.Itoa(c.Seq), body)
		cancel()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL's path and query may carry secrets; the host is reported apart
	}
	ex := &events.WebhookExchange{Event: c.Event, Host: script.Host(c.URL), Status: status,
		MS: time.Since(began).Milliseconds()}
	if err != nil {
		ex.Error = err.Error()
	}
	t.mu.Lock()
	t.stepLocked("webhook POST "+c.Event+" to "+ex.Host+" ("+strconv.FormatInt(ex.MS, 10)+" ms)", status)
	if !t.ended {
		w.app.publishLocked(t, t.call.Record(), events.Webhook, time.Now(), ex)
	}
	t.mu.Unlock()
	w.enqueue(input{seq: c.Seq, reply: &script.Reply{Status: status, Body: resp, Err: err}})
}
