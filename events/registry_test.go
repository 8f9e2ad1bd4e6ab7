package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/nats-io/nats.go/jetstream"
)

func openRegistry(t *testing.T, js jetstream.JetStream, owner string) *events.Registry {
	t.Helper()
	r, err := events.OpenRegistry(t.Context(), js, events.RegistryConfig{Owner: owner, MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("OpenRegistry: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry Run: %v", err)
		}
	})
	return r
}

func storedCall(server, id string) events.StoredCall {
	return events.StoredCall{Server: server, App: "app1", ID: id, Fingerprint: "fp-" + id,
		Request: json.RawMessage(`{"ID":"` + id + `"}`), Registered: time.Now().UTC().Truncate(time.Millisecond)}
}

func loadIDs(t *testing.T, r *events.Registry, server string) map[string]events.StoredCall {
	t.Helper()
	got, err := r.Load(t.Context(), server, "app1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	out := make(map[string]events.StoredCall, len(got))
	for _, c := range got {
		out[c.ID] = c
	}
	return out
}

// waitLoad waits until Load of server lists exactly want ids.
func waitLoad(t *testing.T, r *events.Registry, server string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := loadIDs(t, r, server)
		ok := len(got) == len(want)
		for _, id := range want {
			_, has := got[id]
			ok = ok && has
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry of %s lists %v, want %v", server, keys(got), want)
		}
		<-time.After(20 * time.Millisecond) // polling pace; bounded by the deadline
	}
}

func keys(m map[string]events.StoredCall) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The registry holds calls in flight only: a call whose `ended` the publisher stored is
// removed, with no marker left behind, so Load at start lists calls in flight whatever
// the history; the ended call is found by id in the stream with its fingerprint.
func TestRegistryInFlightOnly(t *testing.T) {
	_, js := setup(t)
	r := openRegistry(t, js, "host-a")
	p := events.NewPublisher(js, events.PublisherConfig{Stored: r.EventStored})
	run(t, p)

	for _, id := range []string{"r1", "r2", "r3"} {
		if err := r.Save(t.Context(), storedCall("pbx1", id)); err != nil {
			t.Fatalf("Save %s: %v", id, err)
		}
	}
	if err := r.Save(t.Context(), storedCall("pbx2", "r4")); err != nil {
		t.Fatal(err)
	}
	got := loadIDs(t, r, "pbx1")
	if len(got) != 3 || got["r2"].Owner != "host-a" || got["r2"].Fingerprint != "fp-r2" || got["r2"].Revision == 0 {
		t.Fatalf("Load pbx1 = %+v; want r1..r3 owned by host-a with a revision", got)
	}
	if all := loadIDs(t, r, "*"); len(all) != 4 {
		t.Fatalf("Load * lists %d calls, want 4", len(all))
	}

	// r2 rings (not a removal), then ends: once JetStream stores `ended`, r2 is gone.
	ring := testEvent("r2", 2)
	if err := p.Publish(t.Context(), ring); err != nil {
		t.Fatal(err)
	}
	end := testEvent("r2", 5)
	end.Fingerprint = "fp-r2"
	end.Call = &events.Call{ID: "r2", Outcome: events.Completed}
	if err := p.Publish(t.Context(), end); err != nil {
		t.Fatal(err)
	}
	flush(t, p, 10*time.Second)
	waitLoad(t, r, "pbx1", "r1", "r3")

	info, err := js.Stream(t.Context(), events.RegistryStream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.State.Msgs != 3 {
		t.Errorf("registry stream holds %d messages, want 3 (no marker for the ended call)", st.State.Msgs)
	}

	ev, fp, found, err := r.Ended(t.Context(), "r2")
	if err != nil || !found || fp != "fp-r2" || ev.Call == nil || ev.Call.Outcome != events.Completed {
		t.Fatalf("Ended(r2) = %+v, %q, %v, %v; want the ended event with its fingerprint", ev, fp, found, err)
	}
	if _, _, found, err := r.Ended(t.Context(), "r1"); found || err != nil {
		t.Fatalf("Ended(r1) found=%v err=%v; want not found", found, err)
	}
	last, found, err := r.LastEvent(t.Context(), "r2")
	if err != nil || !found || last.Event != events.Ended || last.Seq != 5 {
		t.Fatalf("LastEvent(r2) = %v/%d found=%v err=%v; want ended seq 5", last.Event, last.Seq, found, err)
	}
	if at, found, err := r.LastEventTime(t.Context()); err != nil || !found || time.Since(at) > time.Minute {
		t.Fatalf("LastEventTime = %v, %v, %v; want about now", at, found, err)
	}
}

// An `ended` stored before the record's save returned (a call refused at once while
// its record was on its way) still removes the record once the save is done.
func TestRegistryEndedBeforeSaved(t *testing.T) {
	_, js := setup(t)
	r := openRegistry(t, js, "host-a")
	r.EventStored("early", events.Ended) // the ack arrives first
	if err := r.Save(t.Context(), storedCall("pbx1", "early")); err != nil {
		t.Fatal(err)
	}
	if err := r.Save(t.Context(), storedCall("pbx1", "kept")); err != nil {
		t.Fatal(err)
	}
	waitLoad(t, r, "pbx1", "kept")
}

// Records are claimed by compare-and-set on their revision: of two claims of one id
// only one wins; an adopter's claim replaces the record, and the old owner's removal (by
// the revision it knows) leaves the adopter's record in place.
func TestRegistryClaimRevision(t *testing.T) {
	_, js := setup(t)
	a := openRegistry(t, js, "host-a")
	b, err := events.OpenRegistry(t.Context(), js, events.RegistryConfig{Owner: "host-b", MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Claim(t.Context(), storedCall("pbx1", "c1"), 0)
	if err != nil || rev == 0 {
		t.Fatalf("first claim: rev %d, %v", rev, err)
	}
	if _, err := b.Claim(t.Context(), storedCall("pbx1", "c1"), 0); !errors.Is(err, events.ErrClaimLost) {
		t.Fatalf("second create-claim of c1: %v; want ErrClaimLost", err)
	}
	// b adopts a's call at the revision it read.
	got := loadIDs(t, b, "pbx1")
	if got["c1"].Revision != rev || got["c1"].Owner != "host-a" {
		t.Fatalf("b sees %+v; want revision %d owned by host-a", got["c1"], rev)
	}
	adopted := got["c1"]
	adopted.Owner = "host-b"
	rev2, err := b.Claim(t.Context(), adopted, rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("adopt claim: rev %d, %v", rev2, err)
	}
	if _, err := a.Claim(t.Context(), storedCall("pbx1", "c1"), rev); !errors.Is(err, events.ErrClaimLost) {
		t.Fatalf("stale claim by the old owner: %v; want ErrClaimLost", err)
	}
	// The old owner thinks the call ended and removes its record: the adopter's stays.
	a.Forget("c1")
	if err := a.Save(t.Context(), storedCall("pbx1", "marker")); err != nil {
		t.Fatal(err)
	}
	a.Forget("marker") // queued after c1's removal: once marker is gone, c1's was tried
	waitLoad(t, a, "pbx1", "c1")
	if c := loadIDs(t, a, "pbx1")["c1"]; c.Owner != "host-b" || c.Revision != rev2 {
		t.Fatalf("after the old owner's removal c1 = %+v; want host-b's record at %d", c, rev2)
	}
}

// Load reads only the records in flight: after many ended calls the registry holds the
// three calls in flight and nothing else (no delete marker), so a start lists three.
func TestRegistryLoadIgnoresEnded(t *testing.T) {
	_, js := setup(t)
	r := openRegistry(t, js, "host-a")
	p := events.NewPublisher(js, events.PublisherConfig{Stored: r.EventStored})
	run(t, p)
	const ended = 2000
	for i := range ended {
		id := fmt.Sprintf("e%d", i)
		if err := r.Save(t.Context(), storedCall("pbx1", id)); err != nil {
			t.Fatal(err)
		}
		ev := testEvent(id, 5)
		ev.Call = &events.Call{ID: id, Outcome: events.Busy}
		if err := p.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"f1", "f2", "f3"} {
		if err := r.Save(t.Context(), storedCall("pbx1", id)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, p, 30*time.Second)
	waitLoad(t, r, "pbx1", "f1", "f2", "f3")
	// What Load reads is what the registry holds: three records, nothing of the ended.
	st, err := js.Stream(t.Context(), events.RegistryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter(events.RegistryPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 || len(info.State.Subjects) != 3 {
		t.Errorf("registry after %d ended calls holds %d messages on %d subjects; want 3 on 3", ended,
			info.State.Msgs, len(info.State.Subjects))
	}
}

// A daemon upgraded from one that kept every call in the KV bucket INVOKEARI_CALL_STATE
// moves the calls still in flight into the registry (those whose `ended` is stored are
// left out) and deletes the bucket; a second run finds nothing to do.
func TestRegistryMigrateLegacy(t *testing.T) {
	_, js := setup(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: events.LegacyCallBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"l1", "l2", "l3"} {
		b, err := json.Marshal(storedCall("pbx1", id))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(t.Context(), "pbx1.app1."+id, b); err != nil {
			t.Fatal(err)
		}
	}
	r := openRegistry(t, js, "host-a")
	p := events.NewPublisher(js, events.PublisherConfig{})
	run(t, p)
	end := testEvent("l2", 5)
	end.Call = &events.Call{ID: "l2", Outcome: events.Busy}
	if err := p.Publish(t.Context(), end); err != nil {
		t.Fatal(err)
	}
	flush(t, p, 10*time.Second)

	moved, err := r.MigrateLegacy(t.Context())
	if err != nil || moved != 2 {
		t.Fatalf("MigrateLegacy = %d, %v; want 2 calls moved", moved, err)
	}
	got := loadIDs(t, r, "pbx1")
	if len(got) != 2 || got["l1"].Fingerprint != "fp-l1" || got["l3"].Owner != "host-a" {
		t.Fatalf("registry after migration: %+v; want l1 and l3 owned by host-a", got)
	}
	if _, err := js.KeyValue(t.Context(), events.LegacyCallBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("legacy bucket after migration: %v; want it deleted", err)
	}
	if moved, err := r.MigrateLegacy(t.Context()); err != nil || moved != 0 {
		t.Errorf("second MigrateLegacy = %d, %v; want nothing to do", moved, err)
	}
}

// EndedIDs lists the ids of the `ended` events stored since a time, and only those:
// not other events, not older ended events, not those stored after it began.
func TestRegistryEndedIDs(t *testing.T) {
	_, js := setup(t)
	r := openRegistry(t, js, "host-a")
	pub := func(id string, k events.Kind) {
		t.Helper()
		if _, err := js.Publish(t.Context(), events.Subject(id, k), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	pub("old", events.Ended)
	last, found, err := r.LastEventTime(t.Context())
	if err != nil || !found {
		t.Fatalf("LastEventTime: %v, %v", found, err)
	}
	since := last.Add(time.Nanosecond) // after "old" was stored
	want := map[string]bool{}
	for i := range 2500 { // more than one fetch batch
		id := fmt.Sprintf("e%04d", i)
		pub(id, events.Initiated)
		pub(id, events.Ended)
		want[id] = true
	}
	got := map[string]bool{}
	n, err := r.EndedIDs(t.Context(), since, func(id string, at time.Time) {
		if got[id] {
			t.Errorf("id %s listed twice", id)
		}
		if at.Before(since) {
			t.Errorf("id %s stored at %s, before %s", id, at, since)
		}
		got[id] = true
	})
	if err != nil || n != len(want) || !maps.Equal(got, want) {
		t.Fatalf("EndedIDs: %d ids (%d distinct), %v; want the %d ended since %s", n, len(got), err, len(want), since)
	}
	// Nothing stored since then: nothing listed, at once.
	n, err = r.EndedIDs(t.Context(), time.Now().Add(time.Second), func(string, time.Time) {})
	if err != nil || n != 0 {
		t.Fatalf("EndedIDs with nothing since: %d, %v", n, err)
	}
}
