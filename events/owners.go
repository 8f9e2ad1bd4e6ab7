package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Scale-out: several daemons share one NATS (cluster). Three things keep a call with
// exactly one of them:
//   - IDBucket: a call id is claimed with a KV create before anything is dialled, so the
//     same id sent to two daemons at once is dialled once; the loser follows the
//     owner's events (Follow) to reply.
//   - LeaseBucket (lease.go): each daemon's heartbeat; a lapsed lease marks a dead owner.
//   - the registry's in-flight records (registry.go) name each call's owner; a survivor
//     adopts a dead owner's call by rewriting its record at the revision it read
//     (Registry.Claim), so of several survivors exactly one wins.

// IDBucket is the KV bucket of claimed call ids: key <id>, value the claimant.
const IDBucket = "INVOKEARI_CALL_IDS"

// IDClaim is the value of a claimed id.
type IDClaim struct {
	Owner       string `json:"owner"`       // instance id of the daemon that placed the call
	Fingerprint string `json:"fingerprint"` // of the request, to tell a retry from a conflict
}

// IDClaims claims call ids across daemons.
type IDClaims struct {
	kv jetstream.KeyValue
}

// OpenIDClaims creates or updates IDBucket; a claim is kept for ttl, which must exceed
// the longest call plus the idempotency retention.
func OpenIDClaims(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int) (*IDClaims, error) {
	var kv jetstream.KeyValue
	err := RetryUnavailable(ctx, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      IDBucket,
			Description: "invokeari call ids claimed by a daemon: one dial per id across daemons",
			TTL:         ttl,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", IDBucket, err)
	}
	return &IDClaims{kv: kv}, nil
}

// ClaimID claims id for c.Owner. It returns the claim that holds: c itself when this
// call won, or the earlier claim of another (or the same) daemon.
func (s *IDClaims) ClaimID(ctx context.Context, id string, c IDClaim) (IDClaim, error) {
	if !validToken(id) {
		return IDClaim{}, fmt.Errorf("claim id %q: %w", id, ErrInvalidSubject)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return IDClaim{}, err
	}
	// A replica may serve the read of a key just created through the leader before it
	// has that key: then the read is tried again (and the create, in case the key went).
	for {
		_, err = s.kv.Create(ctx, id, b)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return IDClaim{}, fmt.Errorf("claim id %s: %w", id, err)
		}
		e, err := s.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			select {
			case <-ctx.Done():
				return IDClaim{}, fmt.Errorf("claim id %s: the holder could not be read: %w", id, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return IDClaim{}, fmt.Errorf("claim id %s: read the holder: %w", id, err)
		}
		var held IDClaim
		if err := json.Unmarshal(e.Value(), &held); err != nil {
			return IDClaim{}, fmt.Errorf("claim id %s: %w", id, err)
		}
		return held, nil
	}
}

// InFlight lists every in-flight record, whoever owns it. Unlike Load it does not take
// the records as this process's own.
func (r *Registry) InFlight(ctx context.Context) ([]StoredCall, error) {
	info, err := r.reg.Info(ctx, jetstream.WithSubjectFilter(RegistryPrefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("list calls in flight: %w", err)
	}
	out := make([]StoredCall, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		m, err := r.reg.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load call %s: %w", subj, err)
		}
		var c StoredCall
		if err := json.Unmarshal(m.Data, &c); err != nil {
			continue // not a record this version understands: left to its owner
		}
		c.Revision = m.Sequence
		out = append(out, c)
	}
	return out, nil
}

// Follow delivers the events of call id stored in INVOKEARI_CALLS, from its first, and
// then as they are stored, until each returns false or ctx ends.
func (r *Registry) Follow(ctx context.Context, id string, each func(Event) bool) error {
	if !validToken(id) {
		return fmt.Errorf("follow %q: %w", id, ErrInvalidSubject)
	}
	var cons jetstream.Consumer
	err := RetryUnavailable(ctx, func(ctx context.Context) error {
		var err error
		cons, err = r.calls.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{SubjectPrefix + "." + id + ".>"}})
		return err
	})
	if err != nil {
		return fmt.Errorf("follow %s: %w", id, err)
	}
	for {
		wait := time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = max(min(wait, time.Until(dl)), 10*time.Millisecond)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err := ctx.Err(); err != nil {
			return err
		}
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if errors.Is(err, nats.ErrNoResponders) {
			// The consumer is being (re)created on a cluster node: ask again shortly.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(retryPace):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("follow %s: %w", id, err)
		}
		var ev Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			return fmt.Errorf("follow %s: %w", id, err)
		}
		if !each(ev) {
			return nil
		}
	}
}
