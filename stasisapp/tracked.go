package stasisapp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// maxTranscript bounds a reply's debug transcript.
const maxTranscript = 24

// tracked is one call in the App's table: the pure Call plus what the App needs around
// it (request, waiters, transcript). Everything in it is guarded by mu.
type tracked struct {
	mu          sync.Mutex
	req         Request
	evReq       *events.Request
	fingerprint string
	call        *Call
	seq         uint64
	began       time.Time // monotonic start for transcript offsets
	transcript  []Step
	changed     chan struct{} // closed and replaced on every change
	continued   bool          // continue was sent after StasisStart
	ended       bool          // final outcome published
	expires     time.Time     // when a finished call is forgotten
	registered  time.Time     // wall clock at registration
	unsaved     bool          // dialled without a Store record (store was down); the sweep retries
	acceptedAt  time.Time     // when POST /channels answered (zero before)

	// Set for calls restored from the Store by a restarted daemon.
	resumed  bool         // not yet brought up to date from Asterisk
	lastKind events.Kind  // last event kind the previous run published
	final    *events.Call // final record decided by the previous run

	adoptedFrom string // instance id of the dead owner this call was adopted from
	adoptedApp  string // that owner's Stasis app, which the call was originated into

	ariStatus    int
	ariBody      any
	transportErr string
}

func newTracked(req Request, fp string) *tracked {
	t := &tracked{
		req:         req,
		evReq:       req.EventRequest(),
		fingerprint: fp,
		call:        NewCall(req.ID, req.Server, req.Timeout),
		began:       time.Now(),
		registered:  time.Now(),
		changed:     make(chan struct{}),
	}
	t.transcript = append(t.transcript, Step{TMS: 0, Step: "validated"})
	return t
}

// fingerprint identifies what a request asks for, so a repeated id with other
// parameters can be told from a retry (the wait mode may differ between retries).
func fingerprint(r Request) string {
	h := sha256.New()
	w := func(s string) { h.Write([]byte(strconv.Itoa(len(s)))); h.Write([]byte{':'}); h.Write([]byte(s)) }
	w(r.Server)
	w(r.Endpoint)
	w(r.Context)
	w(r.Extension)
	w(r.Timeout.String())
	w(r.CallerID)
	w(r.Key)
	names := make([]string, 0, len(r.Variables))
	for k := range r.Variables {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		w(k)
		w(r.Variables[k])
	}
	// Added after the fields above, and only when set, so fingerprints recorded by an
	// older daemon still match requests without them.
	for _, extra := range [][2]string{{"webhook", r.Webhook}, {"callback", r.Callback},
		{"callback_events", strings.Join(r.CallbackEvents, ",")}} {
		if extra[1] != "" {
			w(extra[0] + "=" + extra[1])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (t *tracked) stepLocked(s string, code int) {
	if len(t.transcript) >= maxTranscript {
		return
	}
	t.transcript = append(t.transcript, Step{TMS: time.Since(t.began).Milliseconds(), Step: s, HTTPCode: code})
}

// traceStep adds a step to the transcript; it takes t.mu (an ari.TraceFunc).
func (t *tracked) traceStep(s string, code int) {
	t.mu.Lock()
	t.stepLocked(s, code)
	t.mu.Unlock()
}

// mayRedial reports whether a POST /channels that failed in transport may be sent again:
// not once the channel's own events show that Asterisk has (or had) it, since a repeat
// after the channel ended would dial a second time. The App then asks GET /channels/{id}.
func (t *tracked) mayRedial() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seq > 0 || t.call.Final() {
		t.stepLocked("ari POST /channels not sent again: the channel's events already arrived", 0)
		return false
	}
	return true
}

// satisfies reports whether the call has reached what wait asks for; t.mu must be held.
func (t *tracked) satisfies(w Wait) bool {
	if t.call.Final() || t.final != nil {
		return true
	}
	switch w {
	case WaitAccepted:
		return t.ariStatus != 0 || t.seq > 0
	case WaitEnd:
		return false
	default:
		return t.call.Answered()
	}
}

func (t *tracked) result() Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resultLocked()
}

func (t *tracked) resultLocked() Result {
	rec := t.call.Record()
	if t.final != nil {
		rec = *t.final
	}
	return Result{
		Call:           rec,
		ARIStatus:      t.ariStatus,
		ARIBody:        t.ariBody,
		TransportError: t.transportErr,
		Transcript:     append([]Step(nil), t.transcript...),
	}
}

// sweep forgets expired finished calls and asks Asterisk about calls that should have
// ended by now (a lost ChannelDestroyed must not leave a call open forever).
func (a *App) sweep(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var stale []*tracked
			a.mu.Lock()
			a.expireFinishedLocked(now)
			for _, t := range a.active {
				stale = append(stale, t)
			}
			a.mu.Unlock()
			a.closeIdleLinks(now, stale)
			for _, t := range stale {
				a.retrySave(ctx, t)
				t.mu.Lock()
				overdue := !t.call.Final() && !t.call.Answered() && t.seq > 0 &&
					now.Sub(t.began) > t.req.Timeout+a.cfg.ReconcileGrace
				t.mu.Unlock()
				if overdue {
					if l := a.link(t.req.Server); l != nil && l.ready() {
						if a.checkChannel(ctx, l, t) == channelGone {
							a.endGone(t, "no ChannelDestroyed seen after the ring timeout")
						}
					}
				}
			}
		}
	}
}

// retrySave writes the Store record of a call dialled while the store was down.
func (a *App) retrySave(ctx context.Context, t *tracked) {
	t.mu.Lock()
	unsaved := t.unsaved && !t.ended
	t.mu.Unlock()
	if !unsaved {
		return
	}
	l := a.link(t.req.Server)
	if l == nil {
		return
	}
	if err := a.save(ctx, l, t, nil); err != nil {
		return
	}
	t.mu.Lock()
	t.unsaved = false
	t.mu.Unlock()
}

// lostGrace is how long a call whose channel was gone at reconcile still waits for its
// ChannelDestroyed: reconcile runs while the new websocket's first events wait unread,
// so a channel that ended just after the reconnect has its end in that queue.
const lostGrace = time.Second

// reconcile runs after each (re)connect, before the link is marked ready: every call
// tracked on that Asterisk is checked, since nothing is replayed (SPEC §4b.6). Even after
// an Asterisk restart each call is asked for: an originate that raced the restart may
// have created its channel on the new Asterisk, and that call is still alive.
//
// Only calls that may have missed events are checked: every call resumed from the
// Store, and on a reconnect every call Asterisk had accepted before the link came back.
// A call registered since is still on its way through POST /channels (a GET would
// find no channel yet) and sees all its events on the new connection.
func (a *App) reconcile(ctx context.Context, l *link, reconnect bool, linkUp time.Time) {
	info, err := l.ARI.AsteriskInfo(ctx)
	restarted := false
	if err == nil {
		st := info.Status.StartupTime.Time
		if prev := l.startupTime.Swap(&st); prev != nil && !prev.Equal(st) {
			restarted = true
			a.log.Warn("Asterisk restarted while the link was down; its channels are gone", "server", l.Name)
		}
	}
	var calls []*tracked
	a.mu.Lock()
	for _, t := range a.active {
		if t.req.Server == l.Name && t.mayHaveMissedEvents(reconnect, linkUp) {
			calls = append(calls, t)
		}
	}
	a.mu.Unlock()
	reason := "channel gone while the ARI link was down"
	if restarted {
		reason = "Asterisk restarted while the ARI link was down"
	}
	var gone []*tracked
	for _, t := range calls {
		switch a.checkChannel(ctx, l, t) {
		case channelGone:
			if restarted {
				a.reconciled("restarted")
			} else {
				a.reconciled("gone")
			}
			gone = append(gone, t)
		case channelAlive:
			a.reconciled("alive")
		}
	}
	if len(gone) == 0 {
		return
	}
	a.background(func(ctx context.Context) {
		select {
		case <-time.After(lostGrace):
		case <-ctx.Done():
		}
		for _, t := range gone {
			a.endGone(t, reason)
		}
	})
}

// mayHaveMissedEvents reports whether a call needs checking with Asterisk after the
// link came up at linkUp.
func (t *tracked) mayHaveMissedEvents(reconnect bool, linkUp time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resumed {
		return true
	}
	return reconnect && !t.acceptedAt.IsZero() && t.acceptedAt.Before(linkUp)
}

// channelCheck is what GET /channels/{id} said about a call.
type channelCheck int

const (
	channelUnknown channelCheck = iota // ARI did not answer
	channelAlive
	channelGone
)

// checkChannel asks Asterisk whether a tracked call's channel still exists. An existing
// channel's snapshot brings the call up to date (an answer missed while the link was
// down), and a channel waiting in our Stasis app after answer is continued. A gone
// channel is only reported: the caller decides when to end the call as lost.
func (a *App) checkChannel(ctx context.Context, l *link, t *tracked) channelCheck {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ch, err := l.ARI.GetChannel(cctx, t.req.ID)
	var ae *ari.Error
	switch {
	case err == nil:
		t.mu.Lock()
		if !t.call.Final() {
			a.adoptSnapshot(t, ch)
		}
		needContinue := ch.State == "Up" && ch.Dialplan.AppName == "Stasis" &&
			strings.HasPrefix(ch.Dialplan.AppData, l.AppName+",") && !t.call.Final()
		if needContinue && t.req.Webhook != "" {
			needContinue = false // its webhook drives it, or it must not stay held
			a.adoptWebhookCallLocked(l, t)
		}
		if needContinue {
			t.continued = true
		}
		t.mu.Unlock()
		if needContinue {
			a.background(func(ctx context.Context) { a.continueCall(ctx, l, t) })
		}
		return channelAlive
	case errors.As(err, &ae) && ae.Status == 404:
		return channelGone
	default:
		a.log.Warn("reconcile call", "call_id", t.req.ID, "err", err)
		return channelUnknown
	}
}

// endGone ends a call whose channel is gone and whose end was not seen as tracking
// lost (a no-op if its end was seen meanwhile).
func (a *App) endGone(t *tracked, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.resumed {
		reason = "daemon restarted: the channel was gone when it looked again (it ended, or was never created, while no daemon followed it)"
		t.resumed = false
	}
	a.applyLocked(t, t.call.Lost(reason, time.Now()))
}

func (a *App) reconciled(result string) {
	if a.cfg.Hooks.Reconciled != nil {
		a.cfg.Hooks.Reconciled(result)
	}
}
