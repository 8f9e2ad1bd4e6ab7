package stasisapp

import (
	"context"
	"encoding/json"
	"fmt"
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

// resume loads the calls a previous run of this daemon recorded: ended ones keep their
// idempotency keys until retention passes (and their `ended` event is published if the
// previous run died before it was stored); calls still in flight are checked with
// Asterisk once the link connects.
func (a *App) resume(ctx context.Context) error {
	if a.cfg.Store == nil {
		return nil
	}
	for _, name := range a.names {
		l := a.link(name)
		stored, err := a.cfg.Store.Load(ctx, l.Name, l.AppName)
		if err != nil {
			return err
		}
		for _, sc := range stored {
			if err := a.resumeOne(ctx, l.Name, sc); err != nil {
				return fmt.Errorf("call %s: %w", sc.ID, err)
			}
		}
	}
	if a.cfg.Dynamic == nil {
		return nil
	}
	// Calls on dynamic servers: their names are not known in advance, so every server's
	// calls of the dynamic app are listed ("*" is a wildcard for the store) and those of
	// dynamic servers kept.
	stored, err := a.cfg.Store.Load(ctx, "*", a.cfg.Dynamic.AppName)
	if err != nil {
		return err
	}
	for _, sc := range stored {
		if !IsDynamicName(sc.Server) {
			continue
		}
		if err := a.resumeOne(ctx, sc.Server, sc); err != nil {
			return fmt.Errorf("call %s: %w", sc.ID, err)
		}
	}
	return nil
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
		if time.Now().After(t.expires) {
			return nil
		}
		if !found || last.Event != events.Ended {
			// The previous run decided the outcome but died before the event was stored.
			a.publishFinal(t, *ended)
		}
		a.mu.Lock()
		a.finished[sc.ID] = t
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
	kept := changes[:0]
	for _, c := range changes {
		if kindRank(c.Kind) > kindRank(t.lastKind) {
			kept = append(kept, c)
		}
	}
	t.resumed = false
	a.applyLocked(t, kept)
}
