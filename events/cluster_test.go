package events_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
)

// TestClusterStreamR3SurvivesNodeLoss: on a real 3-node cluster the call stream is
// created with three replicas, and with one node down events are still stored, and
// nothing is lost or duplicated when it comes back.
func TestClusterStreamR3SurvivesNodeLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := events.EnsureReplicatedStream(ctx, js, time.Hour, 3); err != nil {
		t.Fatalf("EnsureReplicatedStream: %v", err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream replicas = %d, cluster %+v; want 3 (a leader and two replicas)", info.Config.Replicas, info.Cluster)
	}
	p := events.NewPublisher(js, events.PublisherConfig{})
	run(t, p)
	publish := func(id string, seq uint64) {
		t.Helper()
		if err := p.Publish(ctx, testEvent(id, seq)); err != nil {
			t.Fatal(err)
		}
	}
	publish("c1", 1)
	publish("c1", 2)
	// Stop the stream's leader: the others elect a new one and go on storing.
	var leader *natstest.Server
	for _, n := range c.Nodes {
		if n.Name() == info.Cluster.Leader {
			leader = n
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is none of the nodes", info.Cluster.Leader)
	}
	leader.Server.Shutdown()
	leader.Server.WaitForShutdown()
	publish("c1", 3)
	publish("c1", 2) // a re-send: deduplicated by Nats-Msg-Id
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush with a node down: %v", err)
	}
	leader.Restart(t)
	publish("c1", 4)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var got int
	waitFor(t, 10*time.Second, "4 messages in the stream", func() bool {
		info, err := st.Info(ctx)
		if err != nil {
			return false
		}
		got = int(info.State.Msgs)
		return got == 4
	})
}

// TestClusterLeases: a running lease is alive; a stopped one is released at once; one
// that stops beating lapses after its TTL.
func TestClusterLeases(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	_, js := c.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func(id string) *events.Lease {
		t.Helper()
		l, err := events.OpenLease(ctx, js, events.LeaseConfig{Instance: id, Apps: map[string]string{"pbx1": "invokeari-" + id},
			Beat: 200 * time.Millisecond, TTL: time.Second, Replicas: 3})
		if err != nil {
			t.Fatalf("OpenLease(%s): %v", id, err)
		}
		return l
	}
	a, b, dead := open("a"), open("b"), open("dead")
	runCtx, stopA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	go func() { doneA <- a.Run(runCtx) }()
	bCtx, stopB := context.WithCancel(ctx)
	doneB := make(chan error, 1)
	go func() { doneB <- b.Run(bCtx) }()
	defer func() { stopB(); <-doneB }()
	if err := dead.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	alive := func() map[string]events.LeaseInfo {
		m, err := b.Alive(ctx)
		if err != nil {
			t.Fatalf("Alive: %v", err)
		}
		return m
	}
	waitFor(t, 5*time.Second, "a, b and dead alive", func() bool {
		m := alive()
		return len(m) == 3 && m["a"].Apps["pbx1"] == "invokeari-a"
	})
	began := time.Now()
	waitFor(t, 5*time.Second, "dead lapsed", func() bool { _, ok := alive()["dead"]; return !ok })
	if lapse := time.Since(began); lapse > 2*time.Second {
		t.Errorf("lapse seen after %s, want about the 1s TTL", lapse)
	}
	if m := alive(); len(m) != 2 {
		t.Fatalf("alive = %v, want a and b", m)
	}
	if st := a.State(); !st.Held || st.Instance != "a" {
		t.Errorf("a.State() = %+v, want held", st)
	}
	stopA()
	if err := <-doneA; err != context.Canceled {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if _, ok := alive()["a"]; ok {
		t.Error("a still alive right after a clean stop; want its lease released")
	}
	if _, ok := alive()["b"]; !ok {
		t.Error("b not alive")
	}
	// A lease with the default beat and TTL survives the loss of one NATS node (the
	// bucket's leader may be that node: a new one is elected within the TTL).
	prod, err := events.OpenLease(ctx, js, events.LeaseConfig{Instance: "prod", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	pCtx, stopP := context.WithCancel(ctx)
	doneP := make(chan error, 1)
	go func() { doneP <- prod.Run(pCtx) }()
	defer func() { stopP(); <-doneP }()
	waitFor(t, 5*time.Second, "prod's first beat", func() bool { return prod.State().Held })
	c.Nodes[0].Server.Shutdown()
	c.Nodes[0].Server.WaitForShutdown()
	down := time.Now()
	waitFor(t, 15*time.Second, "prod beating for two TTLs after a node loss", func() bool {
		return prod.State().LastBeat.After(down.Add(2 * events.DefaultLeaseTTL))
	})
	if _, ok := alive()["prod"]; !ok {
		t.Error("prod's lease not alive with one of three nodes down")
	}
	if st := prod.State(); st.Lapses != 0 || !st.Held {
		t.Errorf("prod.State() = %+v, want held and never lapsed", st)
	}
}

// TestClusterIDClaims: of daemons claiming the same ids at once on an R3 bucket, exactly
// one wins each id and every claimant reads that same holder back.
func TestClusterIDClaims(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	owners := []string{"a", "b", "c"}
	claims := make([]*events.IDClaims, len(owners))
	for i := range owners {
		_, js := c.Connect(t)
		ids, err := events.OpenIDClaims(ctx, js, time.Hour, 3)
		if err != nil {
			t.Fatal(err)
		}
		claims[i] = ids
	}
	const n = 40
	got := make([][]events.IDClaim, n)
	var wg sync.WaitGroup
	for id := range n {
		got[id] = make([]events.IDClaim, len(owners))
		for i, o := range owners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				held, err := claims[i].ClaimID(ctx, fmt.Sprintf("call-%d", id), events.IDClaim{Owner: o, Fingerprint: "fp"})
				if err != nil {
					t.Errorf("ClaimID(call-%d) by %s: %v", id, o, err)
				}
				got[id][i] = held
			}()
		}
	}
	wg.Wait()
	for id, holders := range got {
		for _, h := range holders[1:] {
			if h != holders[0] || h.Owner == "" {
				t.Errorf("call-%d: claimants read holders %v, want one and the same", id, holders)
				break
			}
		}
	}
}
