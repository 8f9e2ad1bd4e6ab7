package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CallBucket is the JetStream key-value bucket where a daemon keeps the calls it is
// following, so that a restarted daemon (even after SIGKILL) resumes them.
//
// Why KV and not the event stream alone: the call must be on record *before* POST
// /channels (an originate that Asterisk accepted while we crashed must still end in an
// `ended` event), and the stream only has events once something happened. The KV entry
// holds the request (no secrets); the stream remains the truth of what was published.
const CallBucket = "INVOKEARI_CALL_STATE"

// StoredCall is one KV entry: key <server>.<app>.<id>.
type StoredCall struct {
	Server      string          `json:"server"`
	App         string          `json:"app"`
	ID          string          `json:"id"`
	Fingerprint string          `json:"fingerprint"`
	Request     json.RawMessage `json:"request"` // the originate request, no secrets
	Registered  time.Time       `json:"registered"`
	// Ended is a final record, when the writer stored one. The daemon does not: the
	// `ended` event in INVOKEARI_CALLS is the record of the end, and resume reads it back.
	Ended *Call `json:"ended,omitempty"`
}

// CallStore keeps StoredCall entries in a JetStream KV bucket.
type CallStore struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// OpenCallStore creates or updates the bucket; entries expire after ttl (which must
// exceed the longest call plus the idempotency retention).
func OpenCallStore(ctx context.Context, js jetstream.JetStream, ttl time.Duration) (*CallStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      CallBucket,
		Description: "invokeari calls in flight and recently ended, per server and app",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", CallBucket, err)
	}
	return &CallStore{js: js, kv: kv}, nil
}

func storeKey(server, app, id string) string { return server + "." + app + "." + id }

// ErrStoreUnavailable means NATS is not connected: Save fails at once instead of
// waiting for its deadline, so the caller can go on and retry later.
var ErrStoreUnavailable = errors.New("call store unavailable: NATS not connected")

// Save writes c; it returns once JetStream has stored it.
func (s *CallStore) Save(ctx context.Context, c StoredCall) error {
	if nc := s.js.Conn(); nc != nil && !nc.IsConnected() {
		return ErrStoreUnavailable
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if !validToken(c.Server) || !validToken(c.App) || !validToken(c.ID) {
		return fmt.Errorf("save call %q: %w", c.ID, ErrInvalidSubject)
	}
	if _, err := s.kv.Put(ctx, storeKey(c.Server, c.App, c.ID), b); err != nil {
		return fmt.Errorf("save call %s: %w", c.ID, err)
	}
	return nil
}

// Delete forgets a call (one refused before anything reached Asterisk).
func (s *CallStore) Delete(ctx context.Context, server, app, id string) error {
	if err := s.kv.Delete(ctx, storeKey(server, app, id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete call %s: %w", id, err)
	}
	return nil
}

// Load returns every stored call of one server and app.
func (s *CallStore) Load(ctx context.Context, server, app string) ([]StoredCall, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, server+"."+app+".>")
	if err != nil {
		return nil, fmt.Errorf("list calls: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	out := make([]StoredCall, 0, len(keys))
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load call %s: %w", k, err)
		}
		var c StoredCall
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			return nil, fmt.Errorf("load call %s: %w", k, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// LastEvent returns the last event of call id stored in the INVOKEARI_CALLS stream
// (found=false when none was stored).
func (s *CallStore) LastEvent(ctx context.Context, id string) (ev Event, found bool, err error) {
	st, err := s.js.Stream(ctx, StreamName)
	if err != nil {
		return ev, false, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, SubjectPrefix+"."+id+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ev, false, nil
	}
	if err != nil {
		return ev, false, fmt.Errorf("last event of %s: %w", id, err)
	}
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return ev, false, fmt.Errorf("last event of %s: %w", id, err)
	}
	return ev, true, nil
}
