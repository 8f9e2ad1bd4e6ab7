package stasisapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// save records t (and its final record, once ended) in the Store.
func (a *App) save(ctx context.Context, l *link, t *tracked, ended *events.Call) error {
	if a.cfg.Store == nil {
		return nil
	}
	req, err := json.Marshal(t.req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return a.cfg.Store.Save(ctx, events.StoredCall{Server: l.Name, App: l.AppName, ID: t.req.ID,
		Fingerprint: t.fingerprint, Request: req, Registered: t.registered, Ended: ended})
}

// kindRank orders event kinds; a resumed call never publishes a kind twice.
func kindRank(k events.Kind) int {
	switch k {
	case events.Initiated:
		return 1
	case events.Ringing:
		return 2
	case events.Progress:
		return 3
	case events.KindAnswered, events.Webhook: // webhook events come after answered
		return 4
	case events.Ended:
		return 5
	}
	return 0
}

// newKinds keeps the changes of kinds after last (those a previous run had not published).
func newKinds(changes []Change, last events.Kind) []Change {
	kept := changes[:0]
	for _, c := range changes {
		if kindRank(c.Kind) > kindRank(last) {
			kept = append(kept, c)
		}
	}
	return kept
}

// endedLister is a Store that lists the ids of ended calls (events.Registry).
type endedLister interface {
	EndedIDs(ctx context.Context, since time.Time, fn func(id string, at time.Time)) (int, error)
}

// learnSkew is how far the NATS server's clock may be from the daemon's for
// learnHistory (NTP keeps them well within it; the embedded server shares ours).
const learnSkew = time.Minute

// learnHistory spares new caller ids the look-up after a restart: it reads the ids of
// the calls that ended within the retention before this start into the evicted-id
// filter (2 bytes each), then ends the look-up of every new id (historyUntil). Until
// it is done, and if it fails, every new caller id is looked up as before. In cluster
// mode it does not run: other daemons' calls end while it reads, and only the look-up
// sees those.
func (a *App) learnHistory(ctx context.Context, l endedLister, until time.Time) {
	began := time.Now()
	type held struct {
		id    string
		until time.Time
	}
	var batch []held
	flush := func() {
		a.mu.Lock()
		for _, h := range batch {
			a.evicted.add(h.id, h.until, began)
		}
		a.mu.Unlock()
		batch = batch[:0]
	}
	// An `ended` stored at t belongs to a call that ended by t: held until t + Retention
	// it is held at least as long as its idempotency lasts. Storage times are the NATS
	// server's clock: learnSkew on both ends covers a server clock that differs from ours.
	n, err := l.EndedIDs(ctx, began.Add(-a.cfg.Retention-learnSkew), func(id string, at time.Time) {
		batch = append(batch, held{id, at.Add(a.cfg.Retention + learnSkew)})
		if len(batch) == 1000 {
			flush()
		}
	})
	flush()
	if err != nil {
		a.log.Warn("ended calls of the previous run not learnt; every new caller id is looked up until their retention ends",
			"until", until, "err", err)
		return
	}
	a.mu.Lock()
	if a.historyUntil.Equal(until) {
		a.historyUntil = time.Time{}
	}
	a.mu.Unlock()
	a.log.Info("ended calls of the previous run learnt; a new caller id is looked up only when it may repeat one",
		"calls", n, "took", time.Since(began).Round(time.Millisecond))
}

// resumeDone reports whether the previous run's calls are in the table.
func (a *App) resumeDone() bool {
	select {
	case <-a.resumed:
		return true
	default:
		return false
	}
}

// waitResumed waits until the previous run's calls are in the table; false if ctx ended first.
func (a *App) waitResumed(ctx context.Context) bool {
	select {
	case <-a.resumed:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// resumeWorkers bounds the concurrent look-ups of resumed calls' last events.
const resumeWorkers = 16

// resume puts the calls a previous run left in flight back in the table: only the
// registry's in-flight records are read, so this costs O(calls in flight) whatever the
// history. A record whose call's `ended` is already stored is removed (the previous run
// died before it could); a record with a final record the previous run decided has its
// `ended` published; the others are checked with Asterisk once the link connects.
// Ended calls are not loaded: a repeated id is looked up when it comes (register).
func (a *App) resume(ctx context.Context) error {
	if a.cfg.Store == nil {
		return nil
	}
	last, found, err := a.cfg.Store.LastEventTime(ctx)
	if err != nil {
		return err
	}
	if found {
		until := last.Add(a.cfg.Retention) // ended calls of earlier runs are at most this old
		a.mu.Lock()
		if until.After(a.historyUntil) {
			a.historyUntil = until
		}
		a.mu.Unlock()
		if l, ok := a.cfg.Store.(endedLister); ok && a.cfg.Cluster == nil {
			a.background(func(ctx context.Context) { a.learnHistory(ctx, l, until) })
		}
	}
	var stored []events.StoredCall
	for _, name := range a.names {
		l := a.link(name)
		sc, err := a.cfg.Store.Load(ctx, l.Name, l.AppName)
		if err != nil {
			return err
		}
		stored = append(stored, sc...)
	}
	if a.cfg.Dynamic != nil {
		// Calls on dynamic servers: their names are not known in advance, so every server's
		// calls of the dynamic app are listed ("*" is a wildcard for the store) and those of
		// dynamic servers kept.
		sc, err := a.cfg.Store.Load(ctx, "*", a.cfg.Dynamic.AppName)
		if err != nil {
			return err
		}
		for _, c := range sc {
			if IsDynamicName(c.Server) {
				stored = append(stored, c)
			}
		}
	}
	stored = slices.DeleteFunc(stored, a.ownedElsewhere) // adopted by another daemon since
	if len(stored) > 0 {
		a.log.Info("resuming calls recorded by a previous run", "calls", len(stored))
	}
	errs := make([]error, len(stored))
	sem := make(chan struct{}, resumeWorkers)
	var wg sync.WaitGroup
	for i, sc := range stored {
		sem <- struct{}{}
		wg.Add(1)
		go func() { // bounded by sem; waited for below
			defer wg.Done()
			defer func() { <-sem }()
			if err := a.resumeOne(ctx, sc.Server, sc); err != nil {
				errs[i] = fmt.Errorf("call %s: %w", sc.ID, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// resumeOne restores one stored call of server.
func (a *App) resumeOne(ctx context.Context, server string, sc events.StoredCall) error {
	var req Request
	if err := json.Unmarshal(sc.Request, &req); err != nil {
		return err
	}
	t := newTracked(req, sc.Fingerprint)
	t.registered = sc.Registered
	last, found, err := a.cfg.Store.LastEvent(ctx, sc.ID)
	if err != nil {
		return err
	}
	if found {
		t.seq, t.lastKind = last.Seq, last.Event
		t.call.Resume(last)
	}
	ended := sc.Ended
	if ended == nil && found && last.Event == events.Ended && last.Call != nil {
		ended = last.Call
	}
	if ended != nil {
		t.final, t.ended = ended, true
		if ended.EndedAt != nil {
			t.expires = ended.EndedAt.Add(a.cfg.Retention)
		}
		if found && last.Event == events.Ended {
			a.cfg.Store.Forget(sc.ID) // the previous run died before it removed the record
		} else {
			// The previous run decided the outcome but died before the event was stored;
			// once it is, the record is removed.
			a.publishFinal(t, *ended)
		}
		if time.Now().After(t.expires) {
			return nil
		}
		a.mu.Lock()
		a.addFinishedLocked(t)
		a.mu.Unlock()
		return nil
	}
	t.ariStatus = 200
	a.mu.Lock()
	a.active[sc.ID] = t
	a.mu.Unlock()
	if IsDynamicName(server) {
		// A call on a dynamic server: its ARI credentials were never stored (they are
		// secrets), so this daemon cannot reach that Asterisk to follow the call. It ends
		// unknown, with the reason, rather than staying open forever.
		t.mu.Lock()
		a.applyLocked(t, t.call.Lost("daemon restarted: the call was on a dynamic ARI server whose credentials are never stored, so it cannot be followed", time.Now()))
		t.mu.Unlock()
		return nil
	}
	t.resumed = true
	a.log.Info("resuming call recorded by a previous run", "call_id", sc.ID, "server", server, "last_event", t.lastKind)
	return nil
}

// lookupEnded asks the Store for an ended call id this App does not hold; nil when the
// event stream keeps no `ended` for it (GET /v2/calls finds calls as long as the stream
// keeps them; lookupRepeat applies the shorter idempotency Retention).
func (a *App) lookupEnded(ctx context.Context, id string) (*tracked, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev, fp, found, err := a.cfg.Store.Ended(ctx, id)
	if err != nil || !found || ev.Call == nil {
		return nil, err
	}
	req := Request{ID: id, Key: ev.Key}
	if r := ev.Request; r != nil {
		req.Server, req.Endpoint, req.Context, req.Extension = r.Server, r.Destination, r.Context, r.Extension
		req.Timeout, req.CallerID, req.Variables = time.Duration(r.TimeoutSec)*time.Second, r.CallerID, r.Variables
		req.Wait, req.Door = Wait(r.Wait), r.Door
	}
	if fp == "" { // an event written before the fingerprint header existed
		fp = fingerprint(req)
	}
	t := newTracked(req, fp)
	rec := *ev.Call
	t.final, t.ended, t.seq, t.lastKind = &rec, true, ev.Seq, events.Ended
	t.expires = ev.Time.Add(a.cfg.Retention)
	if rec.EndedAt != nil {
		t.expires = rec.EndedAt.Add(a.cfg.Retention)
	}
	t.stepLocked("ended before this daemon started: found in the event stream", 0)
	return t, nil
}

// lookupRepeat is lookupEnded for idempotency: a call ended longer than Retention ago
// is forgotten (nil), so its id may be used again.
func (a *App) lookupRepeat(ctx context.Context, id string) (*tracked, error) {
	t, err := a.lookupEnded(ctx, id)
	if t == nil || err != nil || time.Now().After(t.expires) {
		return nil, err
	}
	return t, nil
}

// finishedEntry is one id in the App's expiry queue of finished calls.
type finishedEntry struct {
	id string
	t  *tracked
}

// addFinishedLocked records an ended call for idempotency, evicting the oldest beyond
// MaxFinished (an evicted id is then looked up in the Store); a.mu must be held.
func (a *App) addFinishedLocked(t *tracked) {
	a.finished[t.req.ID] = t
	a.finishedOrder = append(a.finishedOrder, finishedEntry{id: t.req.ID, t: t})
	for len(a.finished) > a.cfg.MaxFinished && a.finishedHead < len(a.finishedOrder) {
		e := a.popFinishedLocked()
		if a.cfg.Store != nil {
			a.evicted.add(e.id, e.t.expires, time.Now())
		}
	}
}

// expireFinishedLocked forgets finished calls past their retention; a.mu must be held.
func (a *App) expireFinishedLocked(now time.Time) {
	for a.finishedHead < len(a.finishedOrder) {
		e := a.finishedOrder[a.finishedHead]
		if a.finished[e.id] == e.t && !now.After(e.t.expires) {
			return
		}
		a.popFinishedLocked()
	}
}

// popFinishedLocked removes the oldest entry of the queue (and its call, if still held).
func (a *App) popFinishedLocked() finishedEntry {
	e := a.finishedOrder[a.finishedHead]
	a.finishedOrder[a.finishedHead] = finishedEntry{}
	a.finishedHead++
	if a.finished[e.id] == e.t {
		delete(a.finished, e.id)
	}
	if a.finishedHead > 1024 && 2*a.finishedHead >= len(a.finishedOrder) {
		n := copy(a.finishedOrder, a.finishedOrder[a.finishedHead:])
		clear(a.finishedOrder[n:])
		a.finishedOrder, a.finishedHead = a.finishedOrder[:n], 0
	}
	return e
}

// publishFinal publishes the `ended` event of a call whose outcome a previous run decided
// (t is not yet visible to anything else, so its lock is not needed).
func (a *App) publishFinal(t *tracked, rec events.Call) {
	at := time.Now()
	if rec.EndedAt != nil {
		at = *rec.EndedAt
	}
	a.publishLocked(t, rec, events.Ended, at)
}

// adoptSnapshot brings a resumed call up to date from GET /channels/{id}; kinds the
// previous run already published are not published again. t.mu must be held.
func (a *App) adoptSnapshot(t *tracked, ch ari.Channel) {
	changes := t.call.Accepted(ch, ariTime(ch.CreationTime, time.Now()))
	snap := &ari.ChannelStateChange{}
	snap.Type, snap.Channel = "ChannelStateChange", ch
	snap.Timestamp = ari.Time{Time: time.Now()}
	changes = append(changes, t.call.Apply(snap)...)
	t.resumed = false
	a.applyLocked(t, changes) // kinds the previous run published are left out there
}
