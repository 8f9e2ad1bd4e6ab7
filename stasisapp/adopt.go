package stasisapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// Scale-out: several daemons share the calls through NATS. A call id is claimed before
// it is dialled (one dial per id, whichever daemon gets it), each daemon keeps a lease,
// and when an owner's lease lapses a survivor adopts its calls in flight: it rewrites
// each call's registry record at the revision it read (so exactly one survivor wins),
// subscribes its own Stasis app to the channel, brings the call up to date from
// GET /channels/{id}, continues a channel left waiting in the dead app's Stasis, and
// follows the call to its end. The `ended` event keeps the call's sequence (the next
// after the last one stored), so the stream's de-duplication and the record's revision
// keep the end published once.

// ClusterConfig lets the App share calls with other daemons (Config.Cluster).
type ClusterConfig struct {
	// Instance is this daemon's instance id, the owner in registry records it writes.
	Instance string
	IDs      IDClaimer
	Peers    Peers
	Records  Records
	Events   EventFollower
	// LeaseTTL is how long a peer's lease outlives its last beat (default 3s).
	LeaseTTL time.Duration
	// ScanEvery is how often peers' leases are checked (default 500ms).
	ScanEvery time.Duration
	// AdoptRate bounds adoptions started per second (default 50) and AdoptWorkers those
	// under way (default 8), so a survivor is not flattened by a large failover.
	AdoptRate    float64
	AdoptWorkers int
	// Attach, when set, builds an ARI client for a configured server under another app
	// name (it must not contact Asterisk): the adopter holds a dead owner's app with it
	// so that an adopted call answered later can enter Stasis (adopt_proxy.go).
	Attach func(server, app string) (Asterisk, error)
}

// IDClaimer claims call ids across daemons (*events.IDClaims implements it).
type IDClaimer interface {
	// ClaimID returns the claim that holds for id: c when this call won.
	ClaimID(ctx context.Context, id string, c events.IDClaim) (events.IDClaim, error)
}

// Peers lists the daemons whose lease is held (*events.Lease implements it).
type Peers interface {
	Alive(ctx context.Context) (map[string]events.LeaseInfo, error)
}

// Records lists and takes over in-flight records (*events.Registry implements it).
type Records interface {
	InFlight(ctx context.Context) ([]events.StoredCall, error)
	// Claim rewrites c's record if its revision is still rev (events.ErrClaimLost if not).
	Claim(ctx context.Context, c events.StoredCall, rev uint64) (uint64, error)
}

// EventFollower delivers a call's stored events, then new ones, until each says stop
// (*events.Registry implements it).
type EventFollower interface {
	Follow(ctx context.Context, id string, each func(events.Event) bool) error
}

var (
	_ IDClaimer     = (*events.IDClaims)(nil)
	_ Peers         = (*events.Lease)(nil)
	_ Records       = (*events.Registry)(nil)
	_ EventFollower = (*events.Registry)(nil)
)

// clusterState is the App's adoption bookkeeping.
type clusterState struct {
	started time.Time // this process's start: own records older than this are a previous run's

	adoptedTotal atomic.Uint64 // calls this daemon adopted
	adoptedLive  atomic.Int64  // adopted calls not yet ended
	claimsLost   atomic.Uint64 // adoptions another survivor won

	mu        sync.Mutex
	seenAlive map[string]bool      // instances seen with a held lease
	lapsedAt  map[string]time.Time // when a seen instance was first missed
	inFlight  map[string]bool      // ids being adopted now

	proxies proxies // dead owners' apps held for their adopted calls
}

func newClusterState() *clusterState {
	return &clusterState{started: time.Now(), seenAlive: map[string]bool{}, lapsedAt: map[string]time.Time{},
		inFlight: map[string]bool{}}
}

// ClusterStatus is the operator's view of this daemon in a cluster.
type ClusterStatus struct {
	Instance     string   `json:"instance_id"`
	Owned        int      `json:"owned_calls"`   // calls in flight followed here
	AdoptedLive  int64    `json:"adopted_calls"` // of which adopted from a dead peer
	AdoptedTotal uint64   `json:"adopted_total"`
	ClaimsLost   uint64   `json:"adoptions_lost"` // adoptions another survivor won
	Peers        []string `json:"peers_alive"`
}

// ClusterStatus reports ownership and adoption; ok is false when not in a cluster.
func (a *App) ClusterStatus() (st ClusterStatus, ok bool) {
	c := a.cfg.Cluster
	if c == nil {
		return st, false
	}
	cs := a.cluster
	st = ClusterStatus{Instance: c.Instance, Owned: a.InFlight(), AdoptedLive: cs.adoptedLive.Load(),
		AdoptedTotal: cs.adoptedTotal.Load(), ClaimsLost: cs.claimsLost.Load()}
	cs.mu.Lock()
	for id := range cs.seenAlive {
		if _, lapsed := cs.lapsedAt[id]; !lapsed {
			st.Peers = append(st.Peers, id)
		}
	}
	cs.mu.Unlock()
	return st, true
}

// claimID claims t's id for this daemon before it is dialled. When another daemon holds
// it, t is dropped here and the reply follows that daemon's call (remote=true).
func (a *App) claimID(ctx context.Context, t *tracked, wait Wait) (res Result, remote bool, err error) {
	c := a.cfg.Cluster
	if c == nil {
		return Result{}, false, nil
	}
	var held events.IDClaim
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = events.RetryUnavailable(cctx, func(ctx context.Context) error { // a cluster node may be electing a leader
		var err error
		held, err = c.IDs.ClaimID(ctx, t.req.ID, events.IDClaim{Owner: c.Instance, Fingerprint: t.fingerprint})
		return err
	})
	cancel()
	if err != nil {
		// Without the claim the same id could be dialled by two daemons: refuse for now.
		a.log.Warn("call id not claimed; refusing the call", "call_id", t.req.ID, "err", err)
		a.unregister(t)
		return Result{}, true, fmt.Errorf("%w: claim of id %s: %w", ErrBackpressure, t.req.ID, err)
	}
	if held.Owner == c.Instance {
		return Result{}, false, nil // ours (a retry after a restart holds its own claim)
	}
	a.unregister(t)
	if held.Fingerprint != t.fingerprint {
		return Result{}, true, ErrIdempotencyConflict
	}
	res, err = a.followRemote(ctx, t.req, wait, held.Owner)
	return res, true, err
}

// followRemote builds the reply to a request whose id another daemon is placing, from
// that call's events in the stream.
func (a *App) followRemote(ctx context.Context, req Request, wait Wait, owner string) (Result, error) {
	t := newTracked(req, "")
	t.stepLocked("id claimed by instance "+owner+": following its call, not dialled again", 0)
	limit := a.waitLimit(t, wait)
	fctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last events.Event
	err := a.cfg.Cluster.Events.Follow(fctx, req.ID, func(ev events.Event) bool {
		last = ev
		t.seq = ev.Seq
		t.stepLocked(string(ev.Event), 0)
		switch {
		case ev.Event == events.Ended:
			return false
		case wait == WaitAccepted:
			return false
		case wait == WaitAnswer && ev.Event == events.KindAnswered:
			return false
		}
		return true
	})
	res := Result{Call: remoteRecord(req, last), Replayed: true, Transcript: t.transcript}
	if last.Seq > 0 {
		res.ARIStatus = 200
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return res, fmt.Errorf("%w: %w", ErrWaitTimeout, err)
		}
		return res, err
	}
	return res, nil
}

// remoteRecord is the call record as another daemon's last event tells it.
func remoteRecord(req Request, ev events.Event) events.Call {
	if ev.Call != nil {
		return *ev.Call
	}
	rec := events.Call{ID: req.ID, Server: req.Server, Channel: ev.Channel, State: ev.State, Cause: ev.Cause,
		CauseTxt: ev.CauseTxt, SIPCode: ev.SIPCode, DialStatus: ev.DialStatus, RingMS: ev.RingMS, DurationMS: ev.DurationMS}
	if rec.State == "" {
		rec.State = events.StateDialing
	}
	return rec
}

// waitLimit is how long a reply may wait for what wait asks for.
func (a *App) waitLimit(t *tracked, wait Wait) time.Duration {
	switch wait {
	case WaitAccepted:
		return 15 * time.Second
	case WaitEnd:
		return t.req.Timeout + a.cfg.WaitMargin + a.cfg.MaxCallDuration
	default:
		return t.req.Timeout + a.cfg.WaitMargin
	}
}

// ownedElsewhere reports whether a record this daemon's previous run wrote has been
// adopted by another daemon since (resume leaves it to that one).
func (a *App) ownedElsewhere(sc events.StoredCall) bool {
	c := a.cfg.Cluster
	return c != nil && sc.Owner != "" && sc.Owner != c.Instance
}

// adoptLoop watches the peers' leases until ctx ends and adopts the calls of those
// whose lease lapsed.
func (a *App) adoptLoop(ctx context.Context) {
	c := a.cfg.Cluster
	if !a.waitResumed(ctx) {
		return
	}
	work := make(chan events.StoredCall)
	var wg sync.WaitGroup
	for range c.AdoptWorkers {
		wg.Add(1)
		go func() { // ends when work is closed
			defer wg.Done()
			for sc := range work {
				a.adopt(ctx, sc)
			}
		}()
	}
	defer a.stopProxies()
	defer wg.Wait()
	defer close(work)
	tick := time.NewTicker(c.ScanEvery)
	defer tick.Stop()
	pace := time.Duration(float64(time.Second) / c.AdoptRate)
	fullScan := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.releaseIdleApps()
		alive, err := c.Peers.Alive(ctx)
		if err != nil {
			continue // NATS away: nobody can be judged dead now
		}
		lapsed := a.noteLeases(alive)
		// Besides lapses, look at every record now and then: a call of a daemon that died
		// before this one started was never seen alive.
		if !lapsed && time.Since(fullScan) < 10*c.ScanEvery {
			continue
		}
		fullScan = time.Now()
		for _, sc := range a.orphans(ctx, alive) {
			select {
			case work <- sc:
			case <-ctx.Done():
				return
			}
			select { // pacing of adoptions, not synchronisation
			case <-time.After(pace):
			case <-ctx.Done():
				return
			}
		}
	}
}

// noteLeases records which peers are alive and reports whether one lapsed since.
func (a *App) noteLeases(alive map[string]events.LeaseInfo) (lapsed bool) {
	cs := a.cluster
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for id := range alive {
		cs.seenAlive[id] = true
		delete(cs.lapsedAt, id)
	}
	for id := range cs.seenAlive {
		if _, ok := alive[id]; ok {
			continue
		}
		if _, known := cs.lapsedAt[id]; !known {
			cs.lapsedAt[id] = time.Now()
			lapsed = true
			a.log.Warn("peer's lease lapsed; adopting its calls in flight", "peer", id)
		}
	}
	return lapsed
}

// orphans lists the in-flight records this daemon should adopt: owned by a daemon whose
// lease is not held (one seen alive before, or a record older than a lease), or left by
// this daemon's previous run under another app name, on a server configured here.
func (a *App) orphans(ctx context.Context, alive map[string]events.LeaseInfo) []events.StoredCall {
	c := a.cfg.Cluster
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	records, err := c.Records.InFlight(lctx)
	cancel()
	if err != nil {
		a.log.Warn("list calls in flight for adoption", "err", err)
		return nil
	}
	cs := a.cluster
	var out []events.StoredCall
	for _, sc := range records {
		if l := a.link(sc.Server); l == nil || l.dynamic || sc.Ended != nil {
			continue
		}
		if a.lookup(sc.ID) != nil {
			continue
		}
		mine := sc.Owner == c.Instance
		if mine && !sc.Registered.Before(cs.started) {
			continue // placed by this run, on its way (a record is saved alongside the dial)
		}
		if _, ok := alive[sc.Owner]; ok && !mine {
			continue
		}
		cs.mu.Lock()
		seen := cs.seenAlive[sc.Owner]
		cs.mu.Unlock()
		if !mine && !seen && time.Since(sc.Registered) < c.LeaseTTL {
			continue // its owner may not have beaten yet
		}
		out = append(out, sc)
	}
	// Survivors shuffle their lists so that they mostly claim different calls.
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// adopt takes one orphaned call over and starts following it.
func (a *App) adopt(ctx context.Context, sc events.StoredCall) {
	c := a.cfg.Cluster
	cs := a.cluster
	cs.mu.Lock()
	if cs.inFlight[sc.ID] {
		cs.mu.Unlock()
		return
	}
	cs.inFlight[sc.ID] = true
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		delete(cs.inFlight, sc.ID)
		cs.mu.Unlock()
	}()
	if a.lookup(sc.ID) != nil {
		return
	}
	began := time.Now()
	prev := sc.Owner
	mine := sc
	mine.Owner = c.Instance
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.Records.Claim(cctx, mine, sc.Revision)
	cancel()
	if errors.Is(err, events.ErrClaimLost) {
		cs.claimsLost.Add(1)
		return // another survivor took it, or it ended meanwhile
	}
	if err != nil {
		a.log.Warn("adopt call: claim its record", "call_id", sc.ID, "err", err)
		return
	}
	if err := a.resumeOne(ctx, sc.Server, mine); err != nil {
		a.log.Error("adopt call", "call_id", sc.ID, "err", err)
		return
	}
	t := a.lookup(sc.ID)
	if t == nil {
		a.log.Info("adopted call had already ended; its end is on record", "call_id", sc.ID, "owner", prev)
		return
	}
	cs.adoptedTotal.Add(1)
	cs.adoptedLive.Add(1)
	t.mu.Lock()
	t.adoptedFrom, t.adoptedApp = prev, sc.App
	t.stepLocked("adopted from instance "+prev+" (lease lapsed)", 0)
	t.mu.Unlock()
	a.holdApp(ctx, sc.Server, sc.App)
	l := a.link(sc.Server)
	gone, why := a.attach(ctx, l, t, sc.App)
	a.log.Info("adopted call", "call_id", sc.ID, "owner", prev, "app", sc.App, "took", time.Since(began), "gone", gone)
	if gone {
		t.mu.Lock()
		t.resumed = false
		a.applyLocked(t, t.call.Lost(why, time.Now()))
		t.mu.Unlock()
	}
}

// attach makes this daemon's app receive the channel's events, brings the call up to
// date and continues a channel left in the dead owner's Stasis app. gone reports a
// channel that no longer exists (its end was not seen by anyone).
func (a *App) attach(ctx context.Context, l *link, t *tracked, deadApp string) (gone bool, why string) {
	const goneWhy = "owner's lease lapsed; the adopting daemon found the channel gone (it ended while no daemon followed it)"
	id := t.req.ID
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := a.subscriber(l).Subscribe(sctx, l.AppName, "channel:"+id)
	cancel()
	var ae *ari.Error
	switch {
	case errors.As(err, &ae) && (ae.Status == 404 || ae.Status == 422):
		return true, goneWhy
	case err != nil:
		a.log.Warn("adopt call: subscribe to its channel", "call_id", id, "err", err)
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ch, err := l.ARI.GetChannel(gctx, id)
	cancel()
	switch {
	case errors.As(err, &ae) && ae.Status == 404:
		return true, goneWhy
	case err != nil:
		// ARI unreachable now: the call stays resumed and the link's reconcile checks it.
		a.log.Warn("adopt call: look at its channel", "call_id", id, "err", err)
		return false, ""
	}
	t.mu.Lock()
	if !t.call.Final() {
		a.adoptSnapshot(t, ch)
	}
	needContinue := ch.State == "Up" && ch.Dialplan.AppName == "Stasis" &&
		strings.HasPrefix(ch.Dialplan.AppData, deadApp+",") && !t.call.Final() && !t.continued
	if needContinue {
		t.continued = true
	}
	t.mu.Unlock()
	if needContinue {
		a.continueCall(ctx, l, t)
	}
	return false, ""
}

// subscriber is what attach needs beyond Asterisk (*ari.Client has it).
type subscriber interface {
	Subscribe(ctx context.Context, app, eventSource string) (ari.Application, error)
}

func (a *App) subscriber(l *link) subscriber {
	if s, ok := l.ARI.(subscriber); ok {
		return s
	}
	return noSubscribe{}
}

// noSubscribe stands in for an Asterisk that cannot subscribe (test doubles): the call
// is followed only by its snapshot and the sweep.
type noSubscribe struct{}

func (noSubscribe) Subscribe(context.Context, string, string) (ari.Application, error) {
	return ari.Application{}, errors.New("ARI client cannot subscribe")
}

// adoptedEnded is told when a call ends; it keeps the adopted-call gauge.
func (a *App) adoptedEnded(t *tracked) {
	if a.cluster != nil && t.adoptedFrom != "" {
		a.cluster.adoptedLive.Add(-1)
	}
}

// orphanInCluster handles a channel entering our Stasis app that no call here claims:
// after a restart it may be a call another daemon adopted from us (its originate named
// our app), which is continued as its request asks, not hung up; anything else is hung
// up as before.
func (a *App) orphanInCluster(ctx context.Context, l *link, id string) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	records, err := a.cfg.Cluster.Records.InFlight(lctx)
	cancel()
	for _, sc := range records {
		if sc.ID != id || sc.Owner == a.cfg.Cluster.Instance {
			continue
		}
		var req Request
		if json.Unmarshal(sc.Request, &req) != nil {
			break
		}
		a.log.Info("channel of a call another daemon adopted entered our app; continuing it as asked",
			"call_id", id, "owner", sc.Owner)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := l.ARI.Continue(cctx, id, req.Context, req.Extension, 1)
		cancel()
		if err != nil {
			a.log.Warn("continue adopted call's channel", "call_id", id, "err", err)
		}
		return
	}
	if err != nil {
		a.log.Warn("look up untracked channel's owner", "channel_id", id, "err", err)
	}
	a.log.Warn("untracked channel entered our Stasis app; hanging it up", "server", l.Name, "channel_id", id)
	if err := l.ARI.Hangup(ctx, id, ""); err != nil {
		a.log.Warn("hang up untracked channel", "channel_id", id, "err", err)
	}
}
