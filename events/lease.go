package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the JetStream key-value bucket of daemon leases: one key per running
// instance, rewritten every beat and expiring after the lease TTL. A call's owner is
// alive while its key is there; once it is gone a survivor may adopt its calls.
const LeaseBucket = "INVOKEARI_LEASES"

// Lease defaults.
const (
	DefaultLeaseBeat = time.Second
	DefaultLeaseTTL  = 3 * time.Second
)

// LeaseInfo is one instance's lease record.
type LeaseInfo struct {
	Instance string            `json:"instance"`
	Apps     map[string]string `json:"apps,omitempty"` // server name → our Stasis app name there
	Started  time.Time         `json:"started"`        // when this instance started
	Beat     time.Time         `json:"beat"`           // when this record was written
}

// LeaseConfig configures OpenLease.
type LeaseConfig struct {
	Instance string            // this daemon's instance id (required, a subject token)
	Apps     map[string]string // server name → Stasis app name, shown to peers
	Beat     time.Duration     // rewrite interval (default 1s)
	TTL      time.Duration     // a key not rewritten for this long expires (default 3s)
	Replicas int               // bucket replicas (default 1)
	Logger   *slog.Logger
}

// Lease keeps this instance's key in LeaseBucket alive and tells live peers from dead
// ones. Run owns the heartbeat; the other methods are safe for concurrent use.
type Lease struct {
	cfg     LeaseConfig
	kv      jetstream.KeyValue
	started time.Time

	mu       sync.Mutex
	lastBeat time.Time // last successful write (zero: none yet)
	lastErr  error
	lapses   uint64 // times our own lease lapsed (no successful write for TTL)
	lapsed   bool
}

// OpenLease creates or updates the lease bucket (keys expire after TTL).
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*Lease, error) {
	if !validToken(cfg.Instance) {
		return nil, fmt.Errorf("lease: instance id %q: %w", cfg.Instance, ErrInvalidSubject)
	}
	if cfg.Beat <= 0 {
		cfg.Beat = DefaultLeaseBeat
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.TTL < 2*cfg.Beat {
		return nil, fmt.Errorf("lease: TTL %s must be at least two beats (%s)", cfg.TTL, cfg.Beat)
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var kv jetstream.KeyValue
	err := RetryUnavailable(ctx, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      LeaseBucket,
			Description: "invokeari daemon leases: one key per live instance",
			TTL:         cfg.TTL,
			History:     1,
			Storage:     jetstream.MemoryStorage,
			Replicas:    cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", LeaseBucket, err)
	}
	return &Lease{cfg: cfg, kv: kv, started: time.Now()}, nil
}

// Instance is this daemon's instance id.
func (l *Lease) Instance() string { return l.cfg.Instance }

// TTL is how long a lease outlives its last beat.
func (l *Lease) TTL() time.Duration { return l.cfg.TTL }

// Beat writes the lease once.
func (l *Lease) Beat(ctx context.Context) error {
	now := time.Now()
	b, err := json.Marshal(LeaseInfo{Instance: l.cfg.Instance, Apps: l.cfg.Apps, Started: l.started, Beat: now})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Beat)
	defer cancel()
	_, err = l.kv.Put(ctx, l.cfg.Instance, b)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.lastErr = err
		if !l.lastBeat.IsZero() && time.Since(l.lastBeat) > l.cfg.TTL && !l.lapsed {
			l.lapsed = true
			l.lapses++
			l.cfg.Logger.Error("our lease lapsed: peers may adopt this daemon's calls", "instance", l.cfg.Instance,
				"last_beat", l.lastBeat, "err", err)
		}
		return fmt.Errorf("lease beat: %w", err)
	}
	if l.lapsed {
		l.cfg.Logger.Warn("lease held again", "instance", l.cfg.Instance)
	}
	l.lastBeat, l.lastErr, l.lapsed = now, nil, false
	return nil
}

// Run beats every Beat until ctx ends, then deletes the key so peers see at once that
// this instance stopped.
func (l *Lease) Run(ctx context.Context) error {
	tick := time.NewTicker(l.cfg.Beat)
	defer tick.Stop()
	for {
		if err := l.Beat(ctx); err != nil && ctx.Err() == nil {
			l.cfg.Logger.Warn("lease beat failed", "instance", l.cfg.Instance, "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := l.kv.Delete(dctx, l.cfg.Instance)
			cancel()
			if err != nil {
				l.cfg.Logger.Warn("lease not released", "instance", l.cfg.Instance, "err", err)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// LeaseState is this instance's lease as an operator sees it.
type LeaseState struct {
	Instance string    `json:"instance"`
	Held     bool      `json:"held"` // written within TTL
	LastBeat time.Time `json:"last_beat,omitzero"`
	Error    string    `json:"error,omitempty"`
	Lapses   uint64    `json:"lapses"` // times it lapsed since start
	TTLMS    int64     `json:"ttl_ms"`
}

// State reports this instance's lease.
func (l *Lease) State() LeaseState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := LeaseState{Instance: l.cfg.Instance, LastBeat: l.lastBeat, Lapses: l.lapses, TTLMS: l.cfg.TTL.Milliseconds()}
	st.Held = !l.lastBeat.IsZero() && time.Since(l.lastBeat) < l.cfg.TTL
	if l.lastErr != nil {
		st.Error = l.lastErr.Error()
	}
	return st
}

// Alive lists the instances whose lease is held now (this one included once it beat).
// A key JetStream has not yet expired but whose last beat is older than TTL counts as
// lapsed too.
func (l *Lease) Alive(ctx context.Context) (map[string]LeaseInfo, error) {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	out := make(map[string]LeaseInfo, len(keys))
	for _, k := range keys {
		e, err := l.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lease %s: %w", k, err)
		}
		if time.Since(e.Created()) >= l.cfg.TTL {
			continue
		}
		var li LeaseInfo
		if err := json.Unmarshal(e.Value(), &li); err != nil {
			continue // not a lease record this version understands: not a live peer
		}
		out[k] = li
	}
	return out, nil
}
