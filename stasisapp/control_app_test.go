package stasisapp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// TestHangupUnconfirmed: when Asterisk's ChannelDestroyed does not arrive (the
// websocket is down), Hangup returns after HangupWait with the call as it is, not
// confirmed; the call still ends exactly once later (reconciled after the reconnect).
func TestHangupUnconfirmed(t *testing.T) {
	e := startApp(t, 8*time.Second, map[string]sim.Behavior{
		"PJSIP/ring": {Result: sim.RingForever, RingAfter: 10 * time.Millisecond}})
	ctx := context.Background()
	r := req("unconf-1", "PJSIP/ring", 30*time.Second, stasisapp.WaitAccepted)
	r.Key = "alice"
	if _, err := e.app.Originate(ctx, r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ringing", func() bool {
		rec, ok, _ := e.app.Get(ctx, "unconf-1", "")
		return ok && rec.State == events.StateRinging
	})
	if _, err := e.app.Hangup(ctx, "unconf-1", "bob", ""); !errors.Is(err, stasisapp.ErrCallNotFound) {
		t.Errorf("Hangup by another key: %v, want ErrCallNotFound", err)
	}
	if _, err := e.app.Hangup(ctx, "nosuch", "", ""); !errors.Is(err, stasisapp.ErrCallNotFound) {
		t.Errorf("Hangup of an unknown call: %v, want ErrCallNotFound", err)
	}
	e.sim.DropWebsockets()
	waitFor(t, "link down", func() bool { return !e.app.Status()[0].Connected })

	began := time.Now()
	res, err := e.app.Hangup(ctx, "unconf-1", "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); res.Confirmed || res.ARIStatus != 204 || res.Call.State == events.StateEnded ||
		took < stasisapp.HangupWait-100*time.Millisecond {
		t.Errorf("Hangup with the link down: %+v after %s; want unconfirmed after ~%s, ARI 204", res, took, stasisapp.HangupWait)
	}
	// After the reconnect the call is found gone and ends once, unknown (its end was not seen).
	e.pub.waitEnded(t, "unconf-1", 20*time.Second)
	rec, ok, err := e.app.Get(ctx, "unconf-1", "alice")
	if err != nil || !ok || rec.Outcome != events.Unknown || rec.HangupBy != "" {
		t.Errorf("after reconcile: %+v %v %v; want outcome unknown, no hangup_by", rec, ok, err)
	}
}
