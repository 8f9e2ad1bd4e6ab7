package stasisapp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// Asterisk is what the App needs from one Asterisk's ARI (*ari.Client implements it).
type Asterisk interface {
	Originate(ctx context.Context, p ari.OriginateParams) (ari.Channel, error)
	Continue(ctx context.Context, channelID, context, extension string, priority int) error
	Hangup(ctx context.Context, channelID, reason string) error
	GetChannel(ctx context.Context, channelID string) (ari.Channel, error)
	GetEndpoint(ctx context.Context, tech, resource string) (ari.Endpoint, error)
	AsteriskInfo(ctx context.Context) (ari.AsteriskInfo, error)
	// Run reads the app's event stream until ctx ends, reconnecting as needed.
	Run(ctx context.Context, h ari.Handler) error
}

var _ Asterisk = (*ari.Client)(nil)

// Publisher receives every call event, in order per call. Publish may block (back-pressure)
// but never drops; Accepting is false when new calls should be refused.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) error
	Accepting() bool
}

// Store is the call registry: it keeps calls in flight on record across daemon restarts
// and finds ended ones by id (*events.Registry implements it).
type Store interface {
	// Save writes the in-flight record of a call.
	Save(ctx context.Context, c events.StoredCall) error
	// Load returns the in-flight records of one server and app ("*": any server).
	Load(ctx context.Context, server, app string) ([]events.StoredCall, error)
	// LastEvent is the last event of the call stored in the event stream.
	LastEvent(ctx context.Context, id string) (ev events.Event, found bool, err error)
	// Ended is the call's `ended` event in the stream and its request's fingerprint.
	Ended(ctx context.Context, id string) (ev events.Event, fingerprint string, found bool, err error)
	// Forget removes the in-flight record of a call whose `ended` is stored.
	Forget(id string)
	// LastEventTime is when the newest event in the stream was stored (found=false: none).
	LastEventTime(ctx context.Context) (at time.Time, found bool, err error)
}

var _ Store = (*events.Registry)(nil)

// Server is one configured Asterisk.
type Server struct {
	Name    string
	AppName string // our Stasis application name on that Asterisk
	ARI     Asterisk
}

// Config configures an App.
type Config struct {
	Servers   []Server
	Publisher Publisher
	// Store, when set, records every call before it is dialled so a restarted daemon
	// resumes it (and keeps honouring its idempotency key).
	Store  Store
	Logger *slog.Logger
	// WaitMargin is added to the ring timeout for wait=answer (default 5s).
	WaitMargin time.Duration
	// MaxCallDuration bounds wait=end after answer (default 1h).
	MaxCallDuration time.Duration
	// Retention is how long a finished call's id is remembered for idempotency (default 15m).
	Retention time.Duration
	// MaxFinished bounds how many ended calls are kept in memory (default 20000); an
	// older id within Retention is looked up in the Store when it is repeated.
	MaxFinished int
	// ReconcileGrace is how long past its ring timeout an unanswered call may stay without
	// a ChannelDestroyed before the App asks Asterisk about it (default 15s).
	ReconcileGrace time.Duration
	// Hooks observe the App for metrics; all optional.
	Hooks Hooks
	// Dynamic, when set, lets requests carry their own Asterisk (Request.Dynamic): a
	// link to it is made on first use and closed when idle. Nil refuses such requests.
	Dynamic *DynamicConfig
	// Webhooks sends the requests of webhook-driven calls (Request.Webhook); nil
	// refuses such calls' webhook exchanges (they hang up, or go to their fallback).
	Webhooks Webhooks
	// WebhookTimeout bounds one webhook exchange (default 5s).
	WebhookTimeout time.Duration
	// Cluster, when set, shares calls with other daemons: ids are claimed across them
	// and a dead peer's calls are adopted (adopt.go). Nil: this daemon is alone.
	Cluster *ClusterConfig
}

// DynamicConfig configures links to Asterisks named in requests.
type DynamicConfig struct {
	// AppName is our Stasis application name on every dynamic Asterisk.
	AppName string
	// Connect builds the ARI client of a dynamic Asterisk; it must not contact it (the
	// App runs the client's Run). Required.
	Connect func(s DynamicServer) (Asterisk, error)
	// IdleTimeout closes a dynamic link after this long without calls (default 5m).
	IdleTimeout time.Duration
	// ConnectWait is how long an originate waits for a new link's websocket (default 3s).
	ConnectWait time.Duration
}

// Hooks are optional observers (metrics).
type Hooks struct {
	// Ended is called once per call with its final record.
	Ended func(req Request, rec events.Call)
	// ARIRequest is called after each ARI REST call with its name and duration.
	ARIRequest func(op string, d time.Duration, err error)
	// EventLag is called for each ARI event with now − event timestamp.
	EventLag func(d time.Duration)
	// Reconciled counts reconciliation results after a reconnect ("alive", "gone", "restarted").
	Reconciled func(result string)
}

// App is the Stasis application: it originates calls and follows them on every
// configured Asterisk. It owns the table of calls; a call changes only through Call.Apply.
type App struct {
	cfg   Config
	log   *slog.Logger
	names []string // configured servers, sorted

	linksMu    sync.RWMutex
	links      map[string]*link // configured and dynamic links, by server name
	linksDone  bool             // Run has ended: no new dynamic link may start
	dynRunning sync.WaitGroup   // Run goroutines of dynamic links

	mu       sync.Mutex
	active   map[string]*tracked // by call id = channel id
	finished map[string]*tracked // recently ended calls kept for idempotency, at most MaxFinished
	// finishedOrder lists finished ids oldest first (expiry order): entries from
	// finishedHead on are live, unless finished no longer holds that id.
	finishedOrder []finishedEntry
	finishedHead  int
	// historyUntil: until then a new id may be a call that ended before this App
	// started, so every new id is looked up in the Store.
	historyUntil time.Time
	// evicted holds the ids MaxFinished pushed out of finished, until they expire: a
	// new id it may hold is looked up in the Store.
	evicted *idFilter

	resumed chan struct{} // closed once the previous run's calls are in the table

	draining  atomic.Bool
	pubFailed atomic.Uint64   // events Publish refused (only when stopping hard)
	idle      []chan struct{} // closed when active becomes empty (Drain waits on them); under mu
	bg        sync.WaitGroup  // background REST work (continue, reconcile) started by the reader
	runCtx    atomic.Pointer[context.Context]
	ctl       controlTable  // webhook-driven calls, by the ids of what they own
	cluster   *clusterState // set when cfg.Cluster is
}

// link is the App's view of one Asterisk.
type link struct {
	Server
	connected   atomic.Bool
	replaced    atomic.Bool
	reason      atomic.Pointer[string]
	startupTime atomic.Pointer[time.Time]

	// Dynamic links only.
	dynamic  bool
	credSum  [32]byte           // SHA-256 of user and password the link was made with
	up       chan struct{}      // closed on the first websocket connect
	upOnce   sync.Once          //
	stop     context.CancelFunc // ends the link's Run
	lastUsed atomic.Int64       // unix nanoseconds of the last originate or active call
}

// New builds an App; it starts nothing (see Run).
func New(cfg Config) (*App, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("stasisapp: no Asterisk server configured")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("stasisapp: no event publisher")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WaitMargin <= 0 {
		cfg.WaitMargin = 5 * time.Second
	}
	if cfg.MaxCallDuration <= 0 {
		cfg.MaxCallDuration = time.Hour
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 15 * time.Minute
	}
	if cfg.ReconcileGrace <= 0 {
		cfg.ReconcileGrace = 15 * time.Second
	}
	if cfg.MaxFinished <= 0 {
		cfg.MaxFinished = 20000
	}
	if cfg.Dynamic != nil {
		d := *cfg.Dynamic // defaults go into a copy, not the caller's struct
		if d.AppName == "" || d.Connect == nil {
			return nil, errors.New("stasisapp: dynamic servers need an app name and a Connect function")
		}
		if d.IdleTimeout <= 0 {
			d.IdleTimeout = 5 * time.Minute
		}
		if d.ConnectWait <= 0 {
			d.ConnectWait = 3 * time.Second
		}
		cfg.Dynamic = &d
	}
	if cfg.Cluster != nil {
		c := *cfg.Cluster
		if c.Instance == "" || c.IDs == nil || c.Peers == nil || c.Records == nil || c.Events == nil {
			return nil, errors.New("stasisapp: cluster needs an instance id, id claims, peers, records and events")
		}
		c.LeaseTTL = cmp.Or(c.LeaseTTL, events.DefaultLeaseTTL)
		c.ScanEvery = cmp.Or(c.ScanEvery, 500*time.Millisecond)
		c.AdoptRate = cmp.Or(c.AdoptRate, 50)
		c.AdoptWorkers = cmp.Or(c.AdoptWorkers, 8)
		cfg.Cluster = &c
	}
	a := &App{
		cfg:      cfg,
		log:      cfg.Logger,
		links:    make(map[string]*link, len(cfg.Servers)),
		active:   make(map[string]*tracked),
		finished: make(map[string]*tracked),
		evicted:  newIDFilter(),
		resumed:  make(chan struct{}),
	}
	if cfg.Cluster != nil {
		a.cluster = newClusterState()
	}
	for _, s := range cfg.Servers {
		if s.Name == "" || s.AppName == "" || s.ARI == nil {
			return nil, fmt.Errorf("stasisapp: server %q: name, app name and ARI client are required", s.Name)
		}
		if IsDynamicName(s.Name) {
			return nil, fmt.Errorf("stasisapp: server %q: that name form is reserved for dynamic servers", s.Name)
		}
		if _, dup := a.links[s.Name]; dup {
			return nil, fmt.Errorf("stasisapp: server %q configured twice", s.Name)
		}
		l := &link{Server: s}
		why := "not connected yet"
		l.reason.Store(&why)
		a.links[s.Name] = l
		a.names = append(a.names, s.Name)
	}
	sort.Strings(a.names)
	return a, nil
}

// Run follows every Asterisk's event stream and sweeps stale calls until ctx ends.
//
// The calls a previous run left in flight are resumed while the links connect: their
// records are read (O(calls in flight)) as the websockets open, and each link handles
// no event, and is not ready, before they are in the table; then every resumed call is
// checked with GET /channels/{id} (reconcile).
func (a *App) Run(ctx context.Context) error {
	a.runCtx.Store(&ctx)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, len(a.names)+2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(a.resumed)
		if err := a.resume(ctx); err != nil {
			errs <- fmt.Errorf("resume calls: %w", err)
			stop()
		}
	}()
	for _, name := range a.names {
		l := a.link(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.ARI.Run(ctx, &linkHandler{app: a, link: l})
			if err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("asterisk %s: %w", l.Name, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.sweep(ctx)
	}()
	if a.cfg.Cluster != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.adoptLoop(ctx)
		}()
	}
	wg.Wait()
	a.linksMu.Lock()
	a.linksDone = true // ctx is done: dynamic links are stopping and no new one starts
	a.linksMu.Unlock()
	a.dynRunning.Wait()
	a.bg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

// ctx is the App's run context for work that outlives a request (publishing, continue).
func (a *App) ctx() context.Context {
	if p := a.runCtx.Load(); p != nil {
		return *p
	}
	return context.Background()
}

// LinkStatus is one Asterisk's readiness.
type LinkStatus struct {
	Name      string `json:"name"`
	App       string `json:"app"`
	Connected bool   `json:"connected"`
	Reason    string `json:"reason,omitempty"`
	// Dynamic marks a link to an Asterisk named in a request (not configured); it does
	// not count towards the daemon's readiness.
	Dynamic bool `json:"dynamic,omitempty"`
}

// Status reports every Asterisk link, configured and dynamic, sorted by name.
func (a *App) Status() []LinkStatus {
	a.linksMu.RLock()
	out := make([]LinkStatus, 0, len(a.links))
	for name, l := range a.links {
		st := LinkStatus{Name: name, App: l.AppName, Connected: l.ready(), Dynamic: l.dynamic}
		if !st.Connected {
			st.Reason = *l.reason.Load()
		}
		out = append(out, st)
	}
	a.linksMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// link returns the link of a server, configured or dynamic, or nil.
func (a *App) link(name string) *link {
	a.linksMu.RLock()
	defer a.linksMu.RUnlock()
	return a.links[name]
}

// PublishFailures counts events the publisher refused (it only refuses when stopping).
func (a *App) PublishFailures() uint64 { return a.pubFailed.Load() }

// InFlight is the number of calls not yet ended.
func (a *App) InFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.active)
}

func (l *link) ready() bool { return l.connected.Load() && !l.replaced.Load() }

func (l *link) setReason(s string) { l.reason.Store(&s) }

// Originate places the call described by req and waits as req.Wait says. A call once
// registered always ends in exactly one `ended` event, whatever happens to the caller.
func (a *App) Originate(ctx context.Context, req Request) (Result, error) {
	res, dialled, err := a.originate(ctx, req)
	if !dialled && req.Release != nil {
		req.Release() // no new call was made for this request
	}
	return res, err
}

func (a *App) originate(ctx context.Context, req Request) (res Result, dialled bool, err error) {
	if a.draining.Load() {
		return Result{}, false, ErrDraining
	}
	if !a.resumeDone() {
		return Result{}, false, fmt.Errorf("%w: %s (resuming the calls of the previous run)", ErrNotConnected, req.Server)
	}
	l, err := a.linkFor(ctx, req)
	if err != nil {
		return Result{}, false, err
	}
	t, existing, err := a.register(ctx, req)
	if err != nil {
		return Result{}, false, err
	}
	if existing {
		res, err := a.await(ctx, t, req.Wait)
		res.Replayed = true
		res.Transcript = append(res.Transcript, Step{Step: "idempotent repeat: the existing call, not dialled again"})
		return res, false, err
	}
	if !l.ready() {
		a.unregister(t)
		return Result{}, false, fmt.Errorf("%w: %s (%s)", ErrNotConnected, l.Name, *l.reason.Load())
	}
	if !a.cfg.Publisher.Accepting() {
		a.unregister(t)
		return Result{}, false, ErrBackpressure
	}
	if res, remote, err := a.claimID(ctx, t, req.Wait); remote {
		return res, false, err // another daemon places this id (or the claim failed)
	}
	// The in-flight record is written while POST /channels is on its way; the reply
	// waits for both. The record does not depend on the channel: a crash before it is
	// stored leaves a call the caller never got a reply for, and the caller's retry with
	// the same id finds the channel (409) rather than dialling twice.
	saved := make(chan error, 1)
	go func() { saved <- a.save(a.ctx(), l, t, nil) }() // owned here: received below
	dialErr := a.dial(l, t)
	if err := <-saved; err != nil {
		// Events wait in the outbox while NATS is away; the call is dialled and its record
		// is written by the sweep once the store is back. Until then a daemon crash would
		// lose it, which the log says.
		a.log.Warn("call not yet on record for restarts; dialling anyway, the record is retried", "call_id", t.req.ID, "err", err)
		t.mu.Lock()
		t.unsaved = true
		t.mu.Unlock()
	}
	res, err = a.await(ctx, t, req.Wait)
	if dialErr != nil {
		// ARI refused or was not reached: the call has ended failed (and its `ended` event
		// is out); the door replies 502 with that evidence.
		return res, true, dialErr
	}
	return res, true, err
}

// ErrDynamicCredentials: a dynamic Asterisk already has a working link made with other
// ARI credentials; the request's credentials are refused.
var ErrDynamicCredentials = errors.New("ARI credentials differ from those of the open link to that Asterisk")

// linkFor returns the link of req's server: a configured one or, for a dynamic request,
// its link, made and started on first use. A new link is waited for up to ConnectWait;
// a link still not up then is reported by the caller as ErrNotConnected.
func (a *App) linkFor(ctx context.Context, req Request) (*link, error) {
	if req.Dynamic == nil {
		if l := a.link(req.Server); l != nil && !l.dynamic {
			return l, nil
		}
		return nil, fmt.Errorf("%w: %q", ErrUnknownServer, req.Server)
	}
	d := a.cfg.Dynamic
	if d == nil || req.Server != DynamicServerName(req.Dynamic.URL) {
		return nil, fmt.Errorf("%w: %q (no dynamic servers here)", ErrUnknownServer, req.Server)
	}
	l, err := a.dynamicLink(*req.Dynamic, req.Server)
	if err != nil {
		return nil, err
	}
	l.touch()
	timer := time.NewTimer(d.ConnectWait)
	defer timer.Stop()
	select {
	case <-l.up:
	case <-timer.C:
	case <-ctx.Done():
	}
	l.touch()
	return l, nil
}

func credSum(user, pass string) [32]byte {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(pass))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// dynamicLink returns the link to a dynamic Asterisk, making and starting it under the
// App's run context when there is none. A link made with other credentials is replaced
// if it never connected (wrong credentials must not hold the server hostage) and
// refused otherwise.
func (a *App) dynamicLink(ds DynamicServer, name string) (*link, error) {
	sum := credSum(ds.Username, ds.Password)
	a.linksMu.Lock()
	defer a.linksMu.Unlock()
	if l := a.links[name]; l != nil {
		if subtle.ConstantTimeCompare(sum[:], l.credSum[:]) == 1 {
			return l, nil
		}
		if l.hasConnected() {
			return nil, fmt.Errorf("%w: %s", ErrDynamicCredentials, name)
		}
		a.log.Info("replacing dynamic ARI link that never connected", "server", name)
		l.stop()
		delete(a.links, name)
	}
	p := a.runCtx.Load()
	if a.linksDone || p == nil || (*p).Err() != nil {
		return nil, fmt.Errorf("%w: %s (the Stasis app is not running)", ErrNotConnected, name)
	}
	c, err := a.cfg.Dynamic.Connect(ds)
	if err != nil {
		return nil, fmt.Errorf("dynamic server %s: %w", name, err)
	}
	l := &link{Server: Server{Name: name, AppName: a.cfg.Dynamic.AppName, ARI: c}, dynamic: true,
		credSum: sum, up: make(chan struct{})}
	l.setReason("not connected yet")
	lctx, stop := context.WithCancel(*p)
	l.stop = stop
	a.links[name] = l
	a.log.Info("opening dynamic ARI link", "server", name, "ari", ds)
	a.dynRunning.Add(1)
	go func() {
		defer a.dynRunning.Done()
		defer stop()
		err := c.Run(lctx, &linkHandler{app: a, link: l})
		if err != nil && !errors.Is(err, context.Canceled) {
			a.log.Warn("dynamic ARI link ended", "server", name, "err", err)
		}
		l.connected.Store(false)
		l.setReason("dynamic link closed")
	}()
	return l, nil
}

func (l *link) touch() { l.lastUsed.Store(time.Now().UnixNano()) }

// hasConnected reports whether a dynamic link's websocket ever connected.
func (l *link) hasConnected() bool {
	select {
	case <-l.up:
		return true
	default:
		return false
	}
}

// closeIdleLinks closes dynamic links without a call in flight for IdleTimeout.
// active lists every call in flight.
func (a *App) closeIdleLinks(now time.Time, active []*tracked) {
	if a.cfg.Dynamic == nil {
		return
	}
	busy := make(map[string]bool)
	for _, t := range active {
		busy[t.req.Server] = true
	}
	a.linksMu.Lock()
	defer a.linksMu.Unlock()
	for name, l := range a.links {
		if !l.dynamic {
			continue
		}
		if busy[name] {
			l.lastUsed.Store(now.UnixNano())
			continue
		}
		if now.Sub(time.Unix(0, l.lastUsed.Load())) > a.cfg.Dynamic.IdleTimeout {
			a.log.Info("closing idle dynamic ARI link", "server", name)
			l.stop()
			delete(a.links, name)
		}
	}
}

// register claims the call id before anything is sent to Asterisk, so no early event can
// miss its call. An id already in use returns that call (idempotent repeat) or a conflict.
// An id this App does not hold may be a call that ended before this App started (or
// one evicted from memory): while that is possible (mayBeEndedLocked) it is looked up
// in the Store. The look-up is a JetStream request on the way to POST /channels, so it
// is skipped for an id the door generated (req.FreshID) and for one the evicted-id
// filter does not hold.
func (a *App) register(ctx context.Context, req Request) (t *tracked, existing bool, err error) {
	fp := fingerprint(req)
	a.mu.Lock()
	t, existing, err = a.registered(req.ID, fp)
	lookup := !existing && err == nil && !req.FreshID && a.cfg.Store != nil && a.mayBeEndedLocked(req.ID, time.Now())
	a.mu.Unlock()
	if existing || err != nil {
		return t, existing, err
	}
	var old *tracked
	if lookup {
		old, err = a.lookupRepeat(ctx, req.ID)
		if err != nil {
			// Without the look-up a repeated id could be dialled twice: refuse for now.
			return nil, false, fmt.Errorf("%w: idempotency look-up of id %s: %w", ErrBackpressure, req.ID, err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, existing, err = a.registered(req.ID, fp); existing || err != nil {
		return t, existing, err // registered by a concurrent request meanwhile
	}
	if old != nil {
		a.addFinishedLocked(old)
		if old.fingerprint != fp {
			return nil, false, ErrIdempotencyConflict
		}
		return old, true, nil
	}
	t = newTracked(req, fp)
	a.active[req.ID] = t
	return t, false, nil
}

// mayBeEndedLocked reports whether id may be a call that ended within its retention and
// is no longer held in memory; a.mu must be held.
func (a *App) mayBeEndedLocked(id string, now time.Time) bool {
	return now.Before(a.historyUntil) || a.evicted.mayHold(id, now)
}

// registered returns the call id holds (in flight or recently ended); a.mu must be held.
func (a *App) registered(id, fp string) (t *tracked, existing bool, err error) {
	old := a.active[id]
	if old == nil {
		old = a.finished[id]
	}
	if old == nil {
		return nil, false, nil
	}
	if old.fingerprint != fp {
		return nil, false, ErrIdempotencyConflict
	}
	return old, true, nil
}

// unregister forgets a call that was refused before anything reached Asterisk.
func (a *App) unregister(t *tracked) {
	a.mu.Lock()
	delete(a.active, t.req.ID)
	a.wakeIdleLocked()
	a.mu.Unlock()
}

// wakeIdleLocked wakes Drain when no call is in flight; a.mu must be held.
func (a *App) wakeIdleLocked() {
	if len(a.active) > 0 {
		return
	}
	for _, ch := range a.idle {
		close(ch)
	}
	a.idle = nil
}

// waitIdle waits until no call is in flight or ctx ends; it reports whether all ended.
func (a *App) waitIdle(ctx context.Context) bool {
	a.mu.Lock()
	if len(a.active) == 0 {
		a.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	a.idle = append(a.idle, ch)
	a.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial sends POST /channels and records what ARI said.
func (a *App) dial(l *link, t *tracked) error {
	req := t.req
	p := ari.OriginateParams{
		Endpoint:  req.Endpoint,
		App:       l.AppName,
		AppArgs:   "invokeari," + req.ID,
		ChannelID: req.ID,
		Timeout:   int(req.Timeout / time.Second),
		CallerID:  req.CallerID,
		Variables: req.Variables,
	}
	if isLocal(req.Endpoint) {
		// The ;2 half of a Local channel needs an id too; '.' never appears in caller ids.
		p.OtherChannelID = req.ID + ".2"
	}
	ctx, cancel := context.WithTimeout(a.ctx(), 10*time.Second)
	defer cancel()
	ctx = ari.WithTrace(ctx, t.traceStep) // transport retries go into the transcript
	ctx = ari.WithRetryCheck(ctx, t.mayRedial)
	began := time.Now()
	ch, err := l.ARI.Originate(ctx, p)
	a.observeARI("originate", began, err)

	if err == nil {
		t.mu.Lock()
		t.ariStatus, t.ariBody = 200, ch
		t.acceptedAt = time.Now()
		t.stepLocked("ari POST /channels", 200)
		changes := t.call.Accepted(ch, ariTime(ch.CreationTime, began))
		a.applyLocked(t, changes)
		t.mu.Unlock()
		return nil
	}

	var ae *ari.Error
	if errors.As(err, &ae) {
		t.mu.Lock()
		t.ariStatus, t.ariBody = ae.Status, ae.Body
		t.stepLocked("ari POST /channels", ae.Status)
		changes := t.call.OriginateFailed(ae.Status, ae.Message, time.Now())
		t.mu.Unlock()
		if isAllocationFailure(ae) {
			a.refineAllocationFailure(ctx, l, t)
		}
		t.mu.Lock()
		a.applyLocked(t, changes)
		t.mu.Unlock()
		if isAllocationFailure(ae) {
			// A dial outcome (no such endpoint, offline, unknown technology), not a fault.
			return nil
		}
		return err
	}

	// ARI was not reached or did not answer in time. The originate may still have
	// happened: ask for the channel before deciding.
	t.mu.Lock()
	t.transportErr = err.Error()
	t.stepLocked("ari POST /channels failed: "+err.Error(), 0)
	t.mu.Unlock()
	cctx, ccancel := context.WithTimeout(a.ctx(), 5*time.Second)
	defer ccancel()
	ch, gerr := l.ARI.GetChannel(cctx, req.ID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if gerr == nil {
		// The originate was carried out: the reply says so as POST's 200 would have.
		t.stepLocked("ari GET /channels/{id}: channel exists", 200)
		t.ariStatus, t.ariBody = 200, ch
		t.acceptedAt = time.Now()
		a.applyLocked(t, t.call.Accepted(ch, ariTime(ch.CreationTime, began)))
		return nil
	}
	if t.seq > 0 || t.call.Final() {
		// The channel's own events arrived: Asterisk placed the call, whose reply was lost;
		// the call goes on (or ended) by those events, not as a failed originate.
		t.stepLocked("ari GET /channels/{id}: not there, but its events show Asterisk placed the call", 0)
		t.ariStatus = 200
		return nil
	}
	a.applyLocked(t, t.call.OriginateFailed(0, "ARI not reached: "+err.Error(), time.Now()))
	return err
}

// isAllocationFailure: Asterisk could not create the channel for the endpoint (unknown
// technology, unknown endpoint, endpoint without contact) — SPEC §4b.5.
func isAllocationFailure(ae *ari.Error) bool {
	return ae.Status == 500 && ae.Message == "Allocation failed"
}

// refineAllocationFailure asks the endpoint's state to tell a missing endpoint
// (invalid_number) from an offline one (unavailable), per SPEC §4b.5.
func (a *App) refineAllocationFailure(ctx context.Context, l *link, t *tracked) {
	tech, resource, ok := strings.Cut(t.req.Endpoint, "/")
	if !ok || strings.EqualFold(tech, "Local") {
		return
	}
	ep, err := l.ARI.GetEndpoint(ctx, tech, resource)
	t.mu.Lock()
	defer t.mu.Unlock()
	var ae *ari.Error
	switch {
	case err == nil && strings.EqualFold(ep.State, "offline"):
		t.call.RefineFailure(events.Unavailable, "endpoint "+t.req.Endpoint+" is offline (not registered)")
	case errors.As(err, &ae) && ae.Status == 404:
		t.call.RefineFailure(events.InvalidNumber, "no such endpoint "+t.req.Endpoint)
	}
}

// await blocks until the call reaches what wait asks for, ctx ends, or the wait deadline passes.
func (a *App) await(ctx context.Context, t *tracked, wait Wait) (Result, error) {
	timer := time.NewTimer(a.waitLimit(t, wait))
	defer timer.Stop()
	for {
		t.mu.Lock()
		done := t.satisfies(wait)
		ch := t.changed
		if done {
			res := t.resultLocked()
			t.mu.Unlock()
			return res, nil
		}
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return t.result(), fmt.Errorf("%w: %w", ErrWaitTimeout, ctx.Err())
		case <-timer.C:
			return t.result(), ErrWaitTimeout
		}
	}
}

// applyLocked publishes changes and wakes waiters; t.mu must be held. Publishing happens
// under the call's lock so the per-call order of events is the order of changes.
func (a *App) applyLocked(t *tracked, changes []Change) {
	if t.lastKind != "" {
		changes = newKinds(changes, t.lastKind) // a resumed call: the previous run published those
	}
	if len(changes) == 0 {
		return
	}
	rec := t.call.Record()
	for _, c := range changes {
		a.publishLocked(t, rec, c.Kind, c.At)
		t.stepLocked(string(c.Kind), 0)
	}
	close(t.changed)
	t.changed = make(chan struct{})
	if t.call.Final() && !t.ended {
		t.ended = true
		a.finish(t, rec)
	}
}

// publishLocked publishes the next event of t (kind, with the record rec); t.mu must be
// held. Only `ended` carries the outcome and the whole record.
func (a *App) publishLocked(t *tracked, rec events.Call, kind events.Kind, at time.Time, wh ...*events.WebhookExchange) {
	t.seq++
	ev := events.Event{
		ID: rec.ID, Seq: t.seq, Event: kind, Time: at,
		Server: rec.Server, Channel: rec.Channel, State: rec.State,
		Cause: rec.Cause, CauseTxt: rec.CauseTxt, SIPCode: rec.SIPCode, DialStatus: rec.DialStatus,
		RingMS: rec.RingMS, DurationMS: rec.DurationMS,
		Request: t.evReq, Key: t.req.Key,
	}
	if kind == events.Ended {
		ev.Outcome, ev.Reason = rec.Outcome, rec.Reason
		ev.Call = &rec
		ev.Fingerprint = t.fingerprint
	}
	if len(wh) > 0 {
		ev.Webhook = wh[0]
	}
	if err := a.cfg.Publisher.Publish(a.ctx(), ev); err != nil {
		// Only a stopping daemon gets here; the event stays unpublished and says so.
		a.pubFailed.Add(1)
		a.log.Error("publish call event", "call_id", rec.ID, "event", kind, "err", err)
	}
}

// finish moves an ended call to the idempotency table and releases its admission slot.
func (a *App) finish(t *tracked, rec events.Call) {
	t.expires = time.Now().Add(a.cfg.Retention)
	a.mu.Lock()
	delete(a.active, t.req.ID)
	a.addFinishedLocked(t)
	a.wakeIdleLocked()
	a.mu.Unlock()
	if t.req.Release != nil {
		t.req.Release()
	}
	a.adoptedEnded(t)
	if a.cfg.Hooks.Ended != nil {
		a.cfg.Hooks.Ended(t.req, rec)
	}
	// No Store write here: the `ended` event in the stream is the record of the end, and
	// once JetStream has stored it the registry removes the in-flight record.
	a.log.Info("call ended", "call_id", rec.ID, "server", rec.Server, "outcome", rec.Outcome,
		"cause", rec.Cause, "sip_code", rec.SIPCode, "dialstatus", rec.DialStatus, "reason", rec.Reason)
}

func (a *App) observeARI(op string, began time.Time, err error) {
	if a.cfg.Hooks.ARIRequest != nil {
		a.cfg.Hooks.ARIRequest(op, time.Since(began), err)
	}
}

func (a *App) lookup(id string) *tracked {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active[id]
}

// handleEvent routes one ARI event to its call. It runs on the link's reader goroutine.
func (a *App) handleEvent(l *link, ev ari.Event) {
	if a.cfg.Hooks.EventLag != nil && !ev.At().IsZero() {
		a.cfg.Hooks.EventLag(time.Since(ev.At()))
	}
	switch e := ev.(type) {
	case *ari.ApplicationReplaced:
		l.replaced.Store(true)
		l.setReason("ApplicationReplaced: another connection took app " + l.AppName)
		a.log.Error("ARI application replaced by another connection; this daemon is no longer ready on that Asterisk",
			"server", l.Name, "app", l.AppName)
		return
	case ari.ChannelEvent:
		t := a.lookup(e.ChannelID())
		if t == nil {
			if a.controlEvent(ev) {
				return // a second leg of a webhook-driven call
			}
			if ss, ok := e.(*ari.StasisStart); ok {
				a.orphanInStasis(l, ss)
			}
			return
		}
		t.mu.Lock()
		changes := t.call.Apply(ev)
		_, isStart := ev.(*ari.StasisStart)
		startContinue := isStart && !t.continued && !t.call.Final()
		if startContinue {
			t.continued = true
			t.stepLocked("StasisStart", 0)
		}
		a.applyLocked(t, changes)
		t.mu.Unlock()
		switch {
		case startContinue && t.req.Webhook != "":
			a.startWebhookCall(l, t)
		case startContinue:
			a.background(func(ctx context.Context) { a.continueCall(ctx, l, t) })
		default:
			a.controlEvent(ev)
		}
	default:
		a.controlEvent(ev) // playbacks and recordings of webhook-driven calls
	}
}

// orphanInStasis handles a channel in our app that no call claims (e.g. left over from
// before a daemon restart): without its request we cannot continue it truthfully, so it
// is hung up rather than left holding a line.
func (a *App) orphanInStasis(l *link, ss *ari.StasisStart) {
	id := ss.Channel.ID
	if a.cfg.Cluster != nil {
		a.background(func(ctx context.Context) { a.orphanInCluster(ctx, l, id) })
		return
	}
	a.log.Warn("untracked channel entered our Stasis app; hanging it up", "server", l.Name, "channel_id", ss.Channel.ID)
	a.background(func(ctx context.Context) {
		if err := l.ARI.Hangup(ctx, id, ""); err != nil {
			a.log.Warn("hang up untracked channel", "channel_id", id, "err", err)
		}
	})
}

// continueCall hands an answered call to the dialplan the caller asked for.
func (a *App) continueCall(ctx context.Context, l *link, t *tracked) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx = ari.WithTrace(ctx, t.traceStep)
	began := time.Now()
	err := l.ARI.Continue(ctx, t.req.ID, t.req.Context, t.req.Extension, 1)
	a.observeARI("continue", began, err)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		code := 0
		var ae *ari.Error
		if errors.As(err, &ae) {
			code = ae.Status
		}
		t.stepLocked("ari POST continue failed", code)
		a.log.Warn("continue answered call", "call_id", t.req.ID, "err", err)
		return
	}
	t.stepLocked("ari POST continue "+t.req.Context+","+t.req.Extension+",1", 204)
}

// background runs f off the reader goroutine; Run waits for it before returning.
func (a *App) background(f func(ctx context.Context)) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		f(a.ctx())
	}()
}

type linkHandler struct {
	app  *App
	link *link
}

// HandleEvent handles one event once the previous run's calls are in the table (an
// event of a resumed call must find it).
func (h *linkHandler) HandleEvent(ctx context.Context, ev ari.Event) {
	if h.app.waitResumed(ctx) {
		h.app.handleEvent(h.link, ev)
	}
}

// WantsEvent spares the reader the decoding of events that handleEvent would drop or
// learn nothing from:
//   - a call id never contains '.', which marks the ;2 half of our Local channels (its
//     OtherChannelID) and ids Asterisk makes up. StasisStart is always wanted: an
//     untracked channel in our app is hung up.
//   - silentTypes carry no outcome evidence: a channel's state changes arrive as their own
//     ChannelStateChange (every recording in testdata shows each state of a call's
//     channel in an event we keep), and nothing reads variables, dialplan steps or
//     caller ids. They are half of a call's frames.
func (h *linkHandler) WantsEvent(eventType, channelID string) bool {
	if eventType == "StasisStart" {
		return true
	}
	return !strings.Contains(channelID, ".") && !silentTypes[eventType]
}

var silentTypes = map[string]bool{"ChannelDialplan": true, "ChannelVarset": true, "ChannelCallerId": true, "ChannelConnectedLine": true}

var _ ari.EventFilter = (*linkHandler)(nil)

func (h *linkHandler) Connected(ctx context.Context, reconnect bool) {
	l := h.link
	a := h.app
	if !a.waitResumed(ctx) {
		return
	}
	l.replaced.Store(false)
	a.log.Info("ARI websocket connected", "server", l.Name, "app", l.AppName, "reconnect", reconnect)
	l.connected.Store(true)
	if l.dynamic {
		l.upOnce.Do(func() { close(l.up) })
	}
	// Reconcile off the reader: Asterisk drops a websocket that is not read for its
	// websocket_write_timeout (100 ms by default), and the calls' own events must keep flowing.
	linkUp := time.Now()
	a.background(func(ctx context.Context) { a.reconcile(ctx, l, reconnect, linkUp) })
}

func (h *linkHandler) Disconnected(err error) {
	l := h.link
	l.connected.Store(false)
	l.setReason("ARI websocket down: " + err.Error())
	h.app.log.Warn("ARI websocket lost", "server", l.Name, "err", err)
}

// Drain stops new calls, lets calls in flight end until ctx ends, then hangs up the rest
// (outcome canceled, reason shutdown) and waits briefly for their end to be seen; calls
// whose end is still not seen end as unknown. Every call ends in exactly one event.
func (a *App) Drain(ctx context.Context, hangupWait time.Duration) {
	a.draining.Store(true)
	if a.waitIdle(ctx) {
		return
	}
	a.mu.Lock()
	rest := make([]*tracked, 0, len(a.active))
	for _, t := range a.active {
		rest = append(rest, t)
	}
	a.mu.Unlock()
	a.log.Warn("drain deadline reached; hanging up calls still in flight", "calls", len(rest))
	for _, t := range rest {
		l := a.link(t.req.Server)
		t.mu.Lock()
		t.call.Canceling("shutdown")
		t.mu.Unlock()
		if l == nil {
			continue // a resumed call on a dynamic server: no link to hang up with
		}
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := l.ARI.Hangup(hctx, t.req.ID, ""); err != nil {
			a.log.Warn("hang up on drain", "call_id", t.req.ID, "err", err)
		}
		cancel()
	}
	wctx, cancel := context.WithTimeout(context.Background(), hangupWait)
	defer cancel()
	if a.waitIdle(wctx) {
		return
	}
	a.mu.Lock()
	rest = rest[:0]
	for _, t := range a.active {
		rest = append(rest, t)
	}
	a.mu.Unlock()
	for _, t := range rest {
		t.mu.Lock()
		a.applyLocked(t, t.call.Lost("shutdown: daemon stopped before the end of the call was seen", time.Now()))
		t.mu.Unlock()
	}
}

func isLocal(endpoint string) bool {
	tech, _, _ := strings.Cut(endpoint, "/")
	return strings.EqualFold(tech, "Local")
}

func ariTime(t ari.Time, fallback time.Time) time.Time {
	if t.IsZero() {
		return fallback
	}
	return t.Time
}
