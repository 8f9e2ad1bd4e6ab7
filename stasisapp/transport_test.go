package stasisapp_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// replyDropper loses the reply of the next `armed` POST /channels: Asterisk has placed
// the call, then the connection dies before its reply is read (what issue 11 saw).
type replyDropper struct {
	armed, dropped atomic.Int32
	release        chan struct{} // when set, the lost reply's EOF waits for it
}

func (d *replyDropper) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &droppingConn{Conn: c, d: d}, nil
}

type droppingConn struct {
	net.Conn
	d      *replyDropper
	doomed atomic.Bool
}

func (c *droppingConn) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, []byte("POST /ari/channels?")) && c.d.armed.Add(-1) >= 0 {
		c.doomed.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *droppingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b) // net/http's reader may be waiting here since before the POST
	if n > 0 && c.doomed.Load() {
		c.d.dropped.Add(1) // the reply is here, so the call was placed: lose it
		c.Conn.Close()
		if c.d.release != nil {
			<-c.d.release
		}
		return 0, io.EOF
	}
	return n, err
}

// TestOriginateReplyLostIsAdopted: the POST /channels reached Asterisk but its reply was
// lost. The call is not reported failed and not dialled twice: the retry's 409 adopts the
// channel, the transcript says so, and the call ends with its true outcome.
func TestOriginateReplyLostIsAdopted(t *testing.T) {
	d := &replyDropper{}
	e := startAppDial(t, 100*time.Millisecond, map[string]sim.Behavior{
		"PJSIP/busy": {Result: sim.Busy, RingAfter: 50 * time.Millisecond}}, d.dial)
	d.armed.Store(1)
	res, err := e.app.Originate(context.Background(), req("lost-reply-1", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
	if err != nil {
		t.Fatalf("Originate: %v (transcript %+v)", err, res.Transcript)
	}
	var steps []string
	for _, s := range res.Transcript {
		steps = append(steps, s.Step)
	}
	if tr := strings.Join(steps, "\n"); !strings.Contains(tr, "failed in transport") || !strings.Contains(tr, "adopted") {
		t.Errorf("transcript lacks the retry and the adoption:\n%s", tr)
	}
	evs := e.pub.waitEnded(t, "lost-reply-1", 10*time.Second)
	if last := evs[len(evs)-1]; last.Outcome != events.Busy {
		t.Errorf("outcome %q (%s), want busy", last.Outcome, last.Reason)
	}
	if posts := originates(e); posts != 2 {
		t.Errorf("%d POST /channels, want the lost one and its retry", posts)
	}
	if n := d.dropped.Load(); n != 1 {
		t.Errorf("%d POST replies dropped, want 1", n)
	}
}

// TestOriginateReplyLostAfterTheCallEnded: the reply of a placed call is lost and the call
// ends (busy) before the client notices. The POST is not sent again (that would dial the
// callee a second time); the call's own events give its true outcome and the originate is
// not reported failed.
func TestOriginateReplyLostAfterTheCallEnded(t *testing.T) {
	d := &replyDropper{release: make(chan struct{})}
	e := startAppDial(t, 100*time.Millisecond, map[string]sim.Behavior{
		"PJSIP/busy": {Result: sim.Busy}}, d.dial)
	d.armed.Store(1)
	type result struct {
		res stasisapp.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := e.app.Originate(context.Background(), req("lost-ended-1", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
		done <- result{res, err}
	}()
	evs := e.pub.waitEnded(t, "lost-ended-1", 10*time.Second)
	close(d.release)
	r := <-done
	if r.err != nil || r.res.ARIStatus != 200 {
		t.Errorf("Originate: %v, ARI status %d; want no failure: Asterisk placed the call", r.err, r.res.ARIStatus)
	}
	if last := evs[len(evs)-1]; last.Outcome != events.Busy {
		t.Errorf("outcome %q (%s), want busy", last.Outcome, last.Reason)
	}
	if posts := originates(e); posts != 1 || d.dropped.Load() != 1 {
		t.Errorf("%d POST /channels (%d replies lost), want 1: no second dial", posts, d.dropped.Load())
	}
	var steps []string
	for _, s := range r.res.Transcript {
		steps = append(steps, s.Step)
	}
	if tr := strings.Join(steps, "\n"); !strings.Contains(tr, "not sent again") {
		t.Errorf("transcript lacks why the POST was not repeated:\n%s", tr)
	}
}

// originates counts the POST /channels the simulator received.
func originates(e *appEnv) int {
	n := 0
	for _, r := range e.sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/channels") {
			n++
		}
	}
	return n
}

// TestReplyDoesNotWaitForPublishing: an originate's reply waits for nothing of the event
// pipeline. With the real Publisher on a real JetStream but its sender not running (no
// event is sent, none acknowledged), wait=accepted replies; the events reach the stream
// once the sender runs.
func TestReplyDoesNotWaitForPublishing(t *testing.T) {
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	ctx := t.Context()
	if err := events.EnsureStream(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	pub := events.NewPublisher(js, events.PublisherConfig{})
	e := startAppWith(t, 100*time.Millisecond, map[string]sim.Behavior{"PJSIP/busy": {Result: sim.Busy}}, nil, pub)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := e.app.Originate(rctx, req("nopub-1", "PJSIP/busy", 10*time.Second, stasisapp.WaitAccepted))
	if err != nil || res.ARIStatus != 200 {
		t.Fatalf("Originate with the publisher stalled: %v (ARI %d)", err, res.ARIStatus)
	}
	if pub.Published() != 0 || pub.Depth() == 0 {
		t.Fatalf("published %d, waiting %d: want 0 sent and the call's events queued", pub.Published(), pub.Depth())
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pub.Run(runCtx) }()
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	err = pub.Flush(fctx)
	stop()
	if rerr := <-done; rerr != nil {
		t.Errorf("Publisher.Run: %v", rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectPrefix+".nopub-1.>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Errorf("no event of the call in the stream after the sender ran")
	}
}
