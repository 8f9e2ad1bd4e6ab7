package stasisapp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// Call control (SPEC §8): look a call up, list calls, hang one up. Ownership is decided
// here from the owner argument the front door derives from the API key ("" = every
// key's calls); a call of another key is reported exactly like an unknown one, so its
// existence does not leak.

// Errors of the call-control methods.
var (
	// ErrCallNotFound: no call by that id is known (or it belongs to another key).
	ErrCallNotFound = errors.New("no such call")
	// ErrBadCursor: a List cursor that this daemon did not issue.
	ErrBadCursor = errors.New("cursor is not one this daemon issued")
	// ErrLookup: the record of ended calls could not be read (e.g. NATS is away).
	ErrLookup = errors.New("ended-call look-up failed")
)

// List limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// HangupWait bounds how long Hangup waits for Asterisk to confirm the end of the call
// (its ChannelDestroyed); after it Hangup reports the call as it is, unconfirmed.
const HangupWait = 5 * time.Second

// Get returns the record of call id: live, ended and still in memory, or ended and
// found in the event stream (Store). found is false for an unknown id and for a call that
// owner (when not empty) did not place. err is set only when the look-up failed.
func (a *App) Get(ctx context.Context, id, owner string) (rec events.Call, found bool, err error) {
	if t := a.held(id); t != nil {
		if owner != "" && t.req.Key != owner {
			return events.Call{}, false, nil
		}
		return t.record(), true, nil
	}
	return a.getEnded(ctx, id, owner)
}

// held returns the call id from the table of live or recently ended calls, or nil.
func (a *App) held(id string) *tracked {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t := a.active[id]; t != nil {
		return t
	}
	return a.finished[id]
}

// getEnded finds the final record of call id in the event stream when the App no longer
// holds it (it ended before a restart, was evicted, or ended on another daemon); owner ""
// sees every key's calls.
func (a *App) getEnded(ctx context.Context, id, owner string) (events.Call, bool, error) {
	if a.cfg.Store == nil || !isCallID(id) {
		return events.Call{}, false, nil
	}
	t, err := a.lookupEnded(ctx, id)
	if err != nil {
		return events.Call{}, false, fmt.Errorf("%w: call %s: %w", ErrLookup, id, err)
	}
	if t == nil || t.final == nil || (owner != "" && t.req.Key != owner) {
		return events.Call{}, false, nil
	}
	return *t.final, true, nil
}

// isCallID reports whether id can name a call: a single NATS subject token (the door
// checks the stricter API rule; this keeps a look-up in the stream well-formed).
func isCallID(id string) bool {
	return id != "" && len(id) <= 149 && !strings.ContainsAny(id, ".*> \t\r\n")
}

// record is the call's record as of now: the final record a previous run decided, or
// the Call's.
func (t *tracked) record() events.Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recordLocked()
}

func (t *tracked) recordLocked() events.Call {
	if t.final != nil {
		return *t.final
	}
	return t.call.Record()
}

// ListFilter selects calls for List.
type ListFilter struct {
	State  string // "active" (not ended), "ended", or "" for both
	Server string // a server name, or "" for every server
	Owner  string // the API key name whose calls are listed; "" lists every key's calls
	Limit  int    // page size, 1..MaxListLimit; 0 means DefaultListLimit
	Cursor string // Next of the previous page; "" for the first page
}

// List states.
const (
	ListActive = "active"
	ListEnded  = "ended"
)

// CallPage is one page of List: newest call first. Next, when not empty, is the cursor
// of the following page.
type CallPage struct {
	Calls []events.Call
	Next  string
}

// List returns a page of the calls this App holds in memory: those in flight and those
// ended within the retention (ended calls of a previous run are included only when
// they were reloaded on restart). Calls are ordered newest first by registration time,
// and a cursor stays valid while calls come and go.
func (a *App) List(f ListFilter) (CallPage, error) {
	after, err := parseCursor(f.Cursor)
	if err != nil {
		return CallPage{}, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)

	type entry struct {
		pos pagePos
		t   *tracked
	}
	var found []entry
	a.mu.Lock()
	add := func(m map[string]*tracked) {
		for id, t := range m {
			if (f.Owner != "" && t.req.Key != f.Owner) || (f.Server != "" && t.req.Server != f.Server) {
				continue
			}
			p := pagePos{reg: t.registered.UnixNano(), id: id}
			if after != nil && !p.before(*after) {
				continue
			}
			found = append(found, entry{p, t})
		}
	}
	if f.State != ListEnded {
		add(a.active)
	}
	if f.State != ListActive {
		add(a.finished)
	}
	a.mu.Unlock()

	slices.SortFunc(found, func(x, y entry) int {
		switch {
		case x.pos == y.pos:
			return 0
		case y.pos.before(x.pos):
			return -1
		}
		return 1
	})
	page := CallPage{Calls: make([]events.Call, 0, min(len(found), limit))}
	for i, e := range found {
		if i == limit {
			page.Next = found[i-1].pos.cursor()
			break
		}
		page.Calls = append(page.Calls, e.t.record())
	}
	return page, nil
}

// pagePos is a call's place in List's order.
type pagePos struct {
	reg int64 // registration time, unix nanoseconds
	id  string
}

// before reports whether p comes after q in List's newest-first order.
func (p pagePos) before(q pagePos) bool {
	return p.reg < q.reg || (p.reg == q.reg && p.id < q.id)
}

const cursorVersion = "v1"

func (p pagePos) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + "." + strconv.FormatInt(p.reg, 10) + "." + p.id))
}

// parseCursor decodes a cursor; nil for "".
func parseCursor(s string) (*pagePos, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	parts := strings.SplitN(string(b), ".", 3)
	if len(parts) != 3 || parts[0] != cursorVersion || !isCallID(parts[2]) {
		return nil, ErrBadCursor
	}
	reg, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, ErrBadCursor
	}
	return &pagePos{reg: reg, id: parts[2]}, nil
}

// HangupResult is what Hangup reports.
type HangupResult struct {
	Call events.Call
	// Confirmed is true when the call has ended (Asterisk confirmed it, or it had ended
	// before); false when HangupWait or ctx passed first: Call is then as it is now, and
	// its end follows in events.
	Confirmed bool
	// ARIStatus is the status of ARI's DELETE /channels/{id} (0 when none was sent).
	ARIStatus int
}

// Hangup hangs call id up (SPEC §8): a ringing call ends as canceled, an answered one as
// completed, both with hangup_by "api". note is the client's optional reason, kept in
// the record's reason (it is not sent to Asterisk). A call that has already ended is
// returned as it is (a repeated hangup is harmless). It returns once the end is seen or
// HangupWait (or ctx) passed. owner, when not empty, limits it to that key's calls;
// another key's call is ErrCallNotFound.
func (a *App) Hangup(ctx context.Context, id, owner, note string) (HangupResult, error) {
	t := a.held(id)
	if t == nil {
		rec, found, err := a.getEnded(ctx, id, owner)
		if err != nil {
			return HangupResult{}, err
		}
		if !found {
			return HangupResult{}, ErrCallNotFound
		}
		return HangupResult{Call: rec, Confirmed: true}, nil
	}
	if owner != "" && t.req.Key != owner {
		return HangupResult{}, ErrCallNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, HangupWait)
	defer cancel()
	// A call still on its way through POST /channels has no channel to delete yet.
	if !a.waitFor(ctx, t, func() bool { return t.satisfies(WaitAccepted) }) {
		return HangupResult{Call: t.record()}, nil
	}
	t.mu.Lock()
	final := t.call.Final() || t.final != nil
	if !final {
		t.call.HangingUp(note)
		t.stepLocked("hangup requested by api", 0)
	}
	t.mu.Unlock()
	if final {
		return HangupResult{Call: t.record(), Confirmed: true}, nil
	}
	status, err := a.deleteChannel(ctx, t)
	res := HangupResult{ARIStatus: status}
	if err != nil {
		res.Call = t.record()
		return res, err
	}
	res.Confirmed = a.waitFor(ctx, t, func() bool { return t.call.Final() || t.final != nil })
	res.Call = t.record()
	return res, nil
}

// deleteChannel sends DELETE /channels/{id} for t and returns ARI's status (0 when ARI
// was not reached). A channel that is already gone (404) is not an error: its end is on
// its way. When Asterisk refuses or the channel is gone, the hangup is undone in the
// Call: the end that follows is not ours.
func (a *App) deleteChannel(ctx context.Context, t *tracked) (int, error) {
	l := a.link(t.req.Server)
	if l == nil {
		t.mu.Lock()
		t.call.HangupRefused()
		t.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrNotConnected, t.req.Server)
	}
	began := time.Now()
	err := l.ARI.Hangup(ctx, t.req.ID, "")
	a.observeARI("hangup", began, err)
	var ae *ari.Error
	switch {
	case err == nil:
		t.mu.Lock()
		t.stepLocked("ari DELETE /channels/{id}", 204)
		t.mu.Unlock()
		return 204, nil
	case errors.As(err, &ae):
		t.mu.Lock()
		t.stepLocked("ari DELETE /channels/{id}", ae.Status)
		t.call.HangupRefused()
		t.mu.Unlock()
		if ae.Status == 404 {
			return ae.Status, nil
		}
		return ae.Status, err
	default:
		// Not reached, or no answer: the DELETE may still have been carried out, so the
		// call keeps the hangup on record and the caller hears of the failure.
		return 0, err
	}
}

// waitFor waits until cond (checked under t.mu) holds or ctx ends; it reports cond.
func (a *App) waitFor(ctx context.Context, t *tracked, cond func() bool) bool {
	for {
		t.mu.Lock()
		ok := cond()
		ch := t.changed
		t.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
