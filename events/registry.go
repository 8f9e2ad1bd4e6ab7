package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RegistryStream is the JetStream stream that holds the call registry: one record per
// call in flight, and nothing else.
const RegistryStream = "INVOKEARI_REGISTRY"

// RegistryPrefix is the subject prefix of in-flight records:
// invokeari.registry.inflight.<server>.<app>.<id>.
const RegistryPrefix = "invokeari.registry.inflight"

// FingerprintHeader carries, on an `ended` event, the fingerprint of the request that
// made the call, so a repeated id can be told from a conflicting one after a restart
// without any state but the stream.
const FingerprintHeader = "Invokeari-Fingerprint"

// Registry is the call registry: it lets a restarted daemon find its calls in flight in
// O(calls in flight), whatever the history, and answers repeated ids of ended calls
// from the event stream on demand.
//
// Layout. The registry is the stream INVOKEARI_REGISTRY (file storage, at most one
// message per subject, direct get allowed, message delete allowed). A call in flight is
// one message on subject invokeari.registry.inflight.<server>.<app>.<id>, holding a
// StoredCall: the request without secrets, its fingerprint, when it was registered and
// the owner (the instance id of the daemon following it). The message's stream sequence
// is the record's revision.
//
// Lifecycle. Save writes the record while POST /channels is on its way (the reply
// waits for both). The call's `ended` event, once JetStream has acknowledged it in
// INVOKEARI_CALLS (see EventStored), removes the record by deleting that message by its
// sequence: a deleted message leaves no marker behind (unlike a KV delete), so the
// registry's size is the number of calls in flight and listing it at start (Load) costs
// nothing for ended calls. A crash between the ack and the delete leaves a record whose
// last event is `ended`; the next start sees that and deletes it then. Records expire
// after MaxAge in any case.
//
// Ended calls live only in INVOKEARI_CALLS: `invokeari.calls.<id>.ended` is the
// idempotency index. Ended looks one id up there (one direct get), so a repeated id of
// a call ended before a restart returns that call without loading anything at start.
// Exactly-once `ended` stays with the stream's de-duplication (Nats-Msg-Id <id>.<seq>).
//
// Scale-out (designed for, not built yet): the owner field names the daemon following
// a call, and the revision makes a compare-and-set claim possible. Claim writes a
// record only if the subject's last sequence is still the one given (0: no record), so
// of two daemons racing for one id, or two survivors adopting one dead owner's call,
// exactly one wins; the loser gets ErrClaimLost. A record is removed only by the
// sequence its writer knows: after a survivor has claimed a call (a new sequence), the
// late-returning old owner's delete finds nothing to remove, and its `ended` is
// deduplicated by the stream. A lease per owner (heartbeat with a TTL, e.g. a KV key
// per instance) is what issue 14 adds to tell a dead owner from a live one.
type Registry struct {
	js     jetstream.JetStream
	reg    jetstream.Stream
	calls  jetstream.Stream
	owner  string
	log    *slog.Logger
	maxAge time.Duration

	mu      sync.Mutex
	revs    map[string]recordRef // id → this process's record of it
	early   map[string]time.Time // `ended` stored before the record's save returned
	pending []recordRef          // records to delete
	wake    chan struct{}
}

type recordRef struct {
	subject string
	rev     uint64
}

// RegistryConfig configures OpenRegistry.
type RegistryConfig struct {
	// Owner is the instance id written in each record (default "invokeari").
	Owner string
	// MaxAge bounds how long a record may stay (a call longer than this is forgotten);
	// it must exceed the longest call.
	MaxAge time.Duration
	// Logger receives deletion failures (default: discard).
	Logger *slog.Logger
	// Replicas is how many servers of a NATS cluster keep the registry (default 1).
	Replicas int
}

// ErrClaimLost is returned by Claim when the record's revision is not the expected one.
var ErrClaimLost = errors.New("registry claim lost: the record changed")

// ErrStoreUnavailable means NATS is not connected: Save fails at once instead of
// waiting for its deadline, so the caller can go on and retry later.
var ErrStoreUnavailable = errors.New("call registry unavailable: NATS not connected")

// OpenRegistry creates or updates the registry stream and binds to INVOKEARI_CALLS,
// which must exist (EnsureStream).
func OpenRegistry(ctx context.Context, js jetstream.JetStream, cfg RegistryConfig) (*Registry, error) {
	if cfg.Owner == "" {
		cfg.Owner = "invokeari"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !validToken(cfg.Owner) {
		return nil, fmt.Errorf("registry owner %q: %w", cfg.Owner, ErrInvalidSubject)
	}
	reg, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              RegistryStream,
		Description:       "invokeari calls in flight, one record per call; deleted once its ended event is stored",
		Subjects:          []string{RegistryPrefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		MaxAge:            cfg.MaxAge,
		AllowDirect:       true,
		Replicas:          max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", RegistryStream, err)
	}
	calls, err := js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("open registry: stream %s: %w", StreamName, err)
	}
	return &Registry{js: js, reg: reg, calls: calls, owner: cfg.Owner, log: cfg.Logger, maxAge: cfg.MaxAge,
		revs: make(map[string]recordRef), early: make(map[string]time.Time), wake: make(chan struct{}, 1)}, nil
}

// StoredCall is one in-flight record.
type StoredCall struct {
	Server      string          `json:"server"`
	App         string          `json:"app"`
	ID          string          `json:"id"`
	Fingerprint string          `json:"fingerprint"`
	Request     json.RawMessage `json:"request"` // the originate request, no secrets
	Registered  time.Time       `json:"registered"`
	// Owner is the instance id of the daemon following the call (set by Save).
	Owner string `json:"owner,omitempty"`
	// Ended is a final record, when the writer stored one (the daemon does not: the
	// `ended` event in INVOKEARI_CALLS is the record of the end).
	Ended *Call `json:"ended,omitempty"`
	// Revision is the record's stream sequence (set by Load, Save and Claim).
	Revision uint64 `json:"-"`
}

// recordSubject is the subject of a call's in-flight record; server may be "*" in a filter.
func recordSubject(server, app, id string) string {
	return RegistryPrefix + "." + server + "." + app + "." + id
}

// Save writes c's in-flight record (whatever is there) and returns once JetStream has
// stored it.
func (r *Registry) Save(ctx context.Context, c StoredCall) error {
	_, err := r.write(ctx, c, nil)
	return err
}

// Claim writes c's record only if the record's current revision is rev (0: there is
// none), and returns the new revision; another revision gives ErrClaimLost. It is the
// compare-and-set a daemon uses to take one call id, or to adopt a dead owner's call.
func (r *Registry) Claim(ctx context.Context, c StoredCall, rev uint64) (uint64, error) {
	return r.write(ctx, c, &rev)
}

func (r *Registry) write(ctx context.Context, c StoredCall, expect *uint64) (uint64, error) {
	if nc := r.js.Conn(); nc != nil && !nc.IsConnected() {
		return 0, ErrStoreUnavailable
	}
	if !validToken(c.Server) || !validToken(c.App) || !validToken(c.ID) {
		return 0, fmt.Errorf("save call %q: %w", c.ID, ErrInvalidSubject)
	}
	if c.Owner == "" {
		c.Owner = r.owner
	}
	b, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	subj := recordSubject(c.Server, c.App, c.ID)
	var opts []jetstream.PublishOpt
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	ack, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: b}, opts...)
	var apiErr *jetstream.APIError
	if expect != nil && errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return 0, fmt.Errorf("claim call %s: %w", c.ID, ErrClaimLost)
	}
	if err != nil {
		return 0, fmt.Errorf("save call %s: %w", c.ID, err)
	}
	ref := recordRef{subject: subj, rev: ack.Sequence}
	r.mu.Lock()
	_, endedFirst := r.early[c.ID]
	if endedFirst {
		delete(r.early, c.ID)
		r.pending = append(r.pending, ref)
	} else {
		r.revs[c.ID] = ref
	}
	r.mu.Unlock()
	if endedFirst {
		r.poke()
	}
	return ack.Sequence, nil
}

// Load returns the in-flight records of one server and app ("*" for any server), and
// remembers their revisions so that their `ended` removes them.
func (r *Registry) Load(ctx context.Context, server, app string) ([]StoredCall, error) {
	info, err := r.reg.Info(ctx, jetstream.WithSubjectFilter(recordSubject(server, app, "*")))
	if err != nil {
		return nil, fmt.Errorf("list calls in flight: %w", err)
	}
	out := make([]StoredCall, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		m, err := r.reg.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // ended (and removed) meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("load call %s: %w", subj, err)
		}
		var c StoredCall
		if err := json.Unmarshal(m.Data, &c); err != nil {
			return nil, fmt.Errorf("load call %s: %w", subj, err)
		}
		c.Revision = m.Sequence
		r.mu.Lock()
		r.revs[c.ID] = recordRef{subject: subj, rev: m.Sequence}
		r.mu.Unlock()
		out = append(out, c)
	}
	return out, nil
}

// LastEvent returns the last event of call id stored in INVOKEARI_CALLS (found=false
// when none was stored).
func (r *Registry) LastEvent(ctx context.Context, id string) (ev Event, found bool, err error) {
	if !validToken(id) {
		return ev, false, fmt.Errorf("last event of %q: %w", id, ErrInvalidSubject)
	}
	ev, _, found, err = r.getEvent(ctx, SubjectPrefix+"."+id+".>")
	return ev, found, err
}

// Ended returns the `ended` event of call id from INVOKEARI_CALLS and the fingerprint
// of its request ("" when the event predates FingerprintHeader); found=false when the
// stream has none (never ended here, or older than the stream's max age).
func (r *Registry) Ended(ctx context.Context, id string) (ev Event, fingerprint string, found bool, err error) {
	if !validToken(id) {
		return ev, "", false, nil // no such call can exist
	}
	return r.getEvent(ctx, Subject(id, Ended))
}

func (r *Registry) getEvent(ctx context.Context, subject string) (ev Event, fp string, found bool, err error) {
	m, err := r.calls.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ev, "", false, nil
	}
	if err != nil {
		return ev, "", false, fmt.Errorf("event %s: %w", subject, err)
	}
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return ev, "", false, fmt.Errorf("event %s: %w", subject, err)
	}
	return ev, m.Header.Get(FingerprintHeader), true, nil
}

// EventStored is the Publisher's Stored hook: once a call's `ended` event is in the
// stream, its in-flight record is removed (by Run). It never blocks.
func (r *Registry) EventStored(id string, kind Kind) {
	if kind == Ended {
		r.Forget(id)
	}
}

// Forget removes the in-flight record of call id, whose `ended` event is stored; the
// delete happens in Run. A record whose save has not returned yet is removed when it does.
func (r *Registry) Forget(id string) {
	r.mu.Lock()
	ref, ok := r.revs[id]
	if ok {
		delete(r.revs, id)
		r.pending = append(r.pending, ref)
	} else {
		r.early[id] = time.Now()
	}
	r.mu.Unlock()
	if ok {
		r.poke()
	}
}

func (r *Registry) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// earlyLimit is how long an `ended` stored before its record's save returned is kept
// waiting for that save (whose own deadline is shorter).
const earlyLimit = time.Minute

// Run deletes forgotten records until ctx ends, then those still pending within
// stopBudget. A delete that fails is not retried: the record's last event is `ended`,
// so the next start removes it (and MaxAge bounds it).
func (r *Registry) Run(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), stopBudget)
			defer cancel()
			r.deletePending(sctx)
			return nil
		case <-r.wake:
		case now := <-tick.C:
			r.mu.Lock()
			for id, at := range r.early {
				if now.Sub(at) > earlyLimit {
					delete(r.early, id)
				}
			}
			r.mu.Unlock()
		}
		// Removals go in batches: a delete is a JetStream API request, and interleaved
		// with each call's own requests on a busy machine it added ~40-150 µs to the p50
		// of wait=accepted (BenchmarkOriginateAccepted); batched it added nothing
		// measurable. A record may stay deleteBatch longer; the next start removes it if
		// the daemon dies meanwhile.
		select {
		case <-ctx.Done():
			continue // the final removals are done above, within stopBudget
		case <-time.After(deleteBatch):
		}
		r.deletePending(ctx)
	}
}

// deleteBatch is how long removals are gathered before they are sent.
const deleteBatch = 250 * time.Millisecond

// stopBudget bounds the deletes Run still does once its context has ended.
const stopBudget = 2 * time.Second

// deletePending deletes the records queued so far.
func (r *Registry) deletePending(ctx context.Context) {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, ref := range batch {
		if ctx.Err() != nil {
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.reg.DeleteMsg(dctx, ref.rev)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !isNoMessageFound(err) && ctx.Err() == nil {
			r.log.Warn("remove ended call from the registry; the next start removes it", "subject", ref.subject, "err", err)
		}
	}
}

// isNoMessageFound: the server says the sequence is already gone (replaced by a newer
// record of the same call, or expired).
func isNoMessageFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound ||
		strings.Contains(strings.ToLower(apiErr.Description), "no message found"))
}

// InFlightCount is the number of in-flight records this process knows of (for tests
// and metrics).
func (r *Registry) InFlightCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.revs)
}

// LastEventTime is when the newest event in INVOKEARI_CALLS was stored (found=false when
// the stream is empty): no call ended before it.
func (r *Registry) LastEventTime(ctx context.Context) (at time.Time, found bool, err error) {
	info, err := r.calls.Info(ctx)
	if err != nil {
		return at, false, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	if info.State.Msgs == 0 {
		return at, false, nil
	}
	return info.State.LastTime, true, nil
}

// EndedIDs calls fn, oldest first, with the call id and storage time (the server's
// clock) of every `ended` event stored since since, up to the last message the stream
// held when it began. It reads headers only (the id is in the subject): about 40 bytes
// per call on the wire, so a restart learns the ended calls of the retention without
// holding their events.
func (r *Registry) EndedIDs(ctx context.Context, since time.Time, fn func(id string, at time.Time)) (n int, err error) {
	sinfo, err := r.calls.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: ended ids: %w", StreamName, err)
	}
	last := sinfo.State.LastSeq
	cons, err := r.calls.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectPrefix + ".*." + string(Ended)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		HeadersOnly: true,
	})
	if err != nil {
		return 0, fmt.Errorf("stream %s: ended ids: %w", StreamName, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: ended ids: %w", StreamName, err)
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	// Messages pulls ahead of the loop (up to 4096 held), so reading is not paced by one
	// round trip per batch.
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return 0, fmt.Errorf("stream %s: ended ids: %w", StreamName, err)
	}
	defer it.Stop()
	for {
		// Each message within 10 s (they are there: the stream held them when it began).
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			return n, fmt.Errorf("stream %s: ended ids: %d read: %w", StreamName, n, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return n, fmt.Errorf("stream %s: ended ids: %w", StreamName, err)
		}
		if md.Sequence.Stream > last {
			return n, nil // stored after it began: the caller knows those calls
		}
		fn(strings.TrimSuffix(strings.TrimPrefix(m.Subject(), SubjectPrefix+"."), "."+string(Ended)), md.Timestamp)
		n++
		if md.NumPending == 0 || md.Sequence.Stream == last {
			return n, nil
		}
	}
}

// LegacyCallBucket is the KV bucket where daemons before the registry kept every call
// (in flight and ended) for restarts.
const LegacyCallBucket = "INVOKEARI_CALL_STATE"

// MigrateLegacy moves the calls still in flight from LegacyCallBucket into the registry,
// then deletes the bucket; without the bucket it does nothing. It reads the whole
// bucket (and looks each call's `ended` up), so the first start after an upgrade from a
// daemon that kept that bucket costs what every start cost then; the next ones do not.
func (r *Registry) MigrateLegacy(ctx context.Context) (moved int, err error) {
	kv, err := r.js.KeyValue(ctx, LegacyCallBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("legacy bucket %s: %w", LegacyCallBucket, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, fmt.Errorf("legacy bucket %s: %w", LegacyCallBucket, err)
	}
	var keys []string
	if lister != nil {
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return moved, fmt.Errorf("legacy call %s: %w", k, err)
		}
		var c StoredCall
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return moved, fmt.Errorf("legacy call %s: %w", k, err)
		}
		if _, _, ended, err := r.Ended(ctx, c.ID); err != nil || ended {
			if err != nil {
				return moved, err
			}
			continue // its end is on record: nothing to resume
		}
		c.Owner = ""
		if err := r.Save(ctx, c); err != nil {
			return moved, err
		}
		moved++
	}
	if err := r.js.DeleteKeyValue(ctx, LegacyCallBucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return moved, fmt.Errorf("delete legacy bucket %s: %w", LegacyCallBucket, err)
	}
	return moved, nil
}
