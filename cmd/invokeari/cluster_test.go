package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// The cluster cases: a real 3-node NATS cluster (JetStream, R3) in this process, two
// invokeari daemons as child processes with cluster.enabled, and the simulated Asterisk —
// or, when INVOKEARI_TEST_ARI_URL (and _USER, _PASS) name the real PBX kit (`make itest`),
// that Asterisk, with the kit's endpoints of the same behaviour.

// kitEnv is the real PBX kit's ARI URL, user and password, when the env names one.
func kitEnv() (url, user, pass string, ok bool) {
	url = os.Getenv("INVOKEARI_TEST_ARI_URL")
	return url, os.Getenv("INVOKEARI_TEST_ARI_USER"), os.Getenv("INVOKEARI_TEST_ARI_PASS"), url != ""
}

// onKit maps a simulated far end (and its continue target) to the kit's: the same
// behaviour on a real Asterisk. ok is false for a behaviour the kit has no phone for.
func onKit(c clusterCall) (clusterCall, bool) {
	switch c.d {
	case "PJSIP/c-busy":
		c.d = "PJSIP/sipp-busy"
	case "PJSIP/c-decline":
		c.d = "PJSIP/sipp-decline"
	case "PJSIP/c-answer":
		c.d = "PJSIP/sipp-answerwait" // answers after 1 s, waits for our hangup (sink: 5 s)
	case "PJSIP/c-ring":
		c.d = "PJSIP/sipp-noanswer"
	default:
		return c, false
	}
	return c, true
}

// clusterEndpoints are the far ends of the cluster cases.
func clusterEndpoints() map[string]sim.Behavior {
	return map[string]sim.Behavior{
		"PJSIP/c-busy":    {Result: sim.Busy},
		"PJSIP/c-decline": {Result: sim.Decline, RingAfter: 20 * time.Millisecond, RingFor: 300 * time.Millisecond},
		"PJSIP/c-answer":  {Result: sim.Answer, RingAfter: 20 * time.Millisecond, AnswerAfter: 200 * time.Millisecond},
		"PJSIP/c-ring":    {Result: sim.RingForever, RingAfter: 20 * time.Millisecond},
		"PJSIP/c-late":    {Result: sim.Answer, RingAfter: 20 * time.Millisecond, AnswerAfter: 7 * time.Second},
	}
}

// clusterCall is one call a cluster case places and the outcome it must end with.
type clusterCall struct {
	id, d, c, e string
	t           int
	want        events.Outcome
}

func (c clusterCall) form(wait string) url.Values {
	return url.Values{"d": {c.d}, "c": {c.c}, "e": {c.e}, "t": {fmt.Sprint(c.t)}, "wait": {wait}, "id": {c.id}}
}

// clusterEnv is the world of a cluster case.
type clusterEnv struct {
	t       *testing.T
	dir     string
	nats    *natstest.Cluster
	sim     *sim.Server
	client  *http.Client
	nc      *nats.Conn
	js      jetstream.JetStream
	watch   *eventWatch
	daemons map[string]*clusterDaemon
	kitPass string // set on the real PBX kit (sim is nil then)
}

// calls returns cs as this env places them: unchanged on the simulator, mapped to the
// kit's phones on the real PBX (behaviours it has no phone for are left out).
func (e *clusterEnv) calls(cs []clusterCall) []clusterCall {
	if e.sim != nil {
		return cs
	}
	var out []clusterCall
	for _, c := range cs {
		if k, ok := onKit(c); ok {
			out = append(out, k)
		}
	}
	return out
}

// clusterDaemon is one daemon of the cluster (restartable on the same config).
type clusterDaemon struct {
	name    string
	cfgPath string
	proc    *childProc
	base    string
	starts  int
}

func newClusterEnv(t *testing.T, names ...string) *clusterEnv {
	t.Helper()
	return newClusterEnvMode(t, true, names...)
}

// newClusterEnvMode is newClusterEnv with cluster.enabled set as given (off: the daemons
// only share the NATS cluster and the queue group, for comparison).
func newClusterEnvMode(t *testing.T, enabled bool, names ...string) *clusterEnv {
	t.Helper()
	e := &clusterEnv{t: t, dir: t.TempDir(), client: &http.Client{Timeout: 30 * time.Second},
		daemons: map[string]*clusterDaemon{}}
	e.nats = natstest.StartCluster(t, 3)
	e.nc, e.js = e.nats.Connect(t)
	e.watch = newEventWatch(t, e.nc)
	ctx := map[string][]string{"sink": {"s"}}
	for k, v := range DemoContexts() {
		ctx[k] = v
	}
	ariURL := ""
	if u, user, pass, ok := kitEnv(); ok {
		if user != testARIUser {
			t.Fatalf("kit ARI user %q, the test config writes %q", user, testARIUser)
		}
		ariURL, e.kitPass = u, pass
		t.Logf("cluster case on the real PBX kit at %s", u)
	} else {
		e.sim = sim.New(sim.Config{Username: testARIUser, Password: testARIPass, Endpoints: clusterEndpoints(), Contexts: ctx})
		if err := e.sim.Start(context.Background()); err != nil {
			t.Fatalf("start simulator: %v", err)
		}
		t.Cleanup(func() { _ = e.sim.Close() })
		ariURL = e.sim.URL()
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range names {
			for i := 1; i <= e.daemons[n].starts; i++ {
				b, _ := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("%s-%d.log", n, i)))
				var keep []string
				for l := range strings.SplitSeq(string(b), "\n") {
					if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
						keep = append(keep, l)
					}
				}
				t.Logf("--- %s-%d warnings and errors:\n%s", n, i, tail(strings.Join(keep, "\n"), 4000))
			}
		}
	})
	for _, n := range names {
		dir := filepath.Join(e.dir, n)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		d := &clusterDaemon{name: n, cfgPath: writeTestConfig(t, dir, testConfig{simURL: ariURL, natsURL: e.nats.URL(),
			app: "invokeari-" + n, natsExtra: "replicas: 3", wait: "accepted",
			limits: "drain_timeout: 5s, max_in_flight: 5000", logLevel: "info", extra: fmt.Sprintf("cluster: {enabled: %t}\n", enabled)})}
		e.daemons[n] = d
		e.start(n)
	}
	return e
}

// start (re)starts daemon n and waits until it is ready.
func (e *clusterEnv) start(n string) {
	e.t.Helper()
	d := e.daemons[n]
	d.starts++
	var env []string
	if e.kitPass != "" {
		env = append(env, "TEST_ARI_PASSWORD="+e.kitPass)
	}
	d.proc, d.base = startChild(e.t, e.client, d.cfgPath, filepath.Join(e.dir, fmt.Sprintf("%s-%d", n, d.starts)), env...)
}

// kill SIGKILLs daemon n and waits until it is gone.
func (e *clusterEnv) kill(n string) time.Time {
	e.t.Helper()
	p := e.daemons[n].proc
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill %s: %v", n, err)
	}
	<-p.done
	return time.Now()
}

// post places c through daemon n's HTTP door and returns the status and decoded reply.
func (e *clusterEnv) post(n string, c clusterCall, wait string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.daemons[n].base+"/v2/invokeARI", strings.NewReader(c.form(wait).Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, map[string]any{"error": err.Error()}
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// request places c through the NATS door (queue group: any daemon) and returns the
// status header and decoded reply.
func (e *clusterEnv) request(c clusterCall, wait string) (string, map[string]any) {
	body, _ := json.Marshal(map[string]any{"d": c.d, "c": c.c, "e": c.e, "t": c.t, "wait": wait, "id": c.id})
	m := nats.NewMsg(natsdoor.Subject)
	m.Header.Set("X-API-Key", testAPIKey)
	m.Data = body
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return "", map[string]any{"error": err.Error()}
	}
	var out map[string]any
	_ = json.Unmarshal(res.Data, &out)
	return res.Header.Get(natsdoor.StatusHeader), out
}

// status reads daemon n's /readyz detail.
func (e *clusterEnv) status(n string) map[string]any {
	e.t.Helper()
	resp, err := e.client.Get(e.daemons[n].base + "/readyz")
	if err != nil {
		e.t.Fatalf("readyz of %s: %v", n, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		e.t.Fatalf("readyz of %s: %v: %s", n, err, b)
	}
	d, _ := out["detail"].(map[string]any)
	return d
}

// clusterNumber reads a number from the cluster part of daemon n's /readyz.
func (e *clusterEnv) clusterNumber(n, field string) float64 {
	c, _ := e.status(n)["cluster"].(map[string]any)
	v, _ := c[field].(float64)
	return v
}

// stream reads INVOKEARI_CALLS until every id has its `ended` and then quiet passes
// without a new event (late duplicates would show).
func (e *clusterEnv) stream(ids []string, limit time.Duration) *streamLog {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cons jetstream.Consumer
	err := events.RetryUnavailable(ctx, func(ctx context.Context) error {
		var err error
		cons, err = e.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.SubjectPrefix + ".>"}})
		return err
	})
	if err != nil {
		e.t.Fatalf("stream consumer: %v", err)
	}
	s := &streamLog{cons: cons, byID: map[string][]events.Event{}}
	s.readUntil(e.t, func() bool {
		for _, id := range ids {
			if s.endedCount(id) == 0 {
				return false
			}
		}
		return true
	}, 2*time.Second, limit)
	return s
}

// judge checks every call ended exactly once with its true outcome, in gapless order,
// and was dialled once.
func (e *clusterEnv) judge(calls []clusterCall, s *streamLog) {
	e.t.Helper()
	var dialled map[string][]string
	if e.sim != nil {
		dialled = originatesByID(e.sim) // the kit keeps no request log
	}
	for _, c := range calls {
		evs := s.byID[c.id]
		if n := s.endedCount(c.id); n != 1 {
			e.t.Errorf("call %s: %d ended events, want exactly 1 (events %v)", c.id, n, kindsOf(evs))
			continue
		}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				e.t.Errorf("call %s: event %d has seq %d (events %v)", c.id, i+1, ev.Seq, kindsOf(evs))
				break
			}
		}
		last := evs[len(evs)-1]
		if last.Event != events.Ended || last.Outcome != c.want {
			e.t.Errorf("call %s (%s): ended %s/%s (%q), want outcome %s", c.id, c.d, last.Event, last.Outcome, last.Reason, c.want)
		}
		if n := len(dialled[c.id]); dialled != nil && n != 1 {
			e.t.Errorf("call %s dialled %d times (apps %v), want once", c.id, n, dialled[c.id])
		}
	}
}

func kindsOf(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d:%s", ev.Seq, ev.Event)
	}
	return out
}

// TestClusterSpreadAndOneDialPerID: calls spread over two daemons through both doors end
// once each with their true outcomes; the same id sent to both daemons at once is
// dialled once and both replies describe that one call.
func TestClusterSpreadAndOneDialPerID(t *testing.T) {
	e := newClusterEnv(t, "a", "b")
	kinds := []clusterCall{
		{d: "PJSIP/c-busy", c: "from-internal", e: "100", t: 10, want: events.Busy},
		{d: "PJSIP/c-decline", c: "from-internal", e: "100", t: 10, want: events.Rejected},
		{d: "PJSIP/c-answer", c: "from-internal", e: "100", t: 10, want: events.Completed},
	}
	kinds = e.calls(kinds)
	var calls []clusterCall
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	sem := make(chan struct{}, 10) // calls in flight at once (the kit's SIPp phones are single processes)
	for i := range 30 {
		c := kinds[i%len(kinds)]
		c.id = fmt.Sprintf("spread-%02d", i)
		calls = append(calls, c)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			switch i % 3 {
			case 0, 1:
				n := []string{"a", "b"}[i%3]
				if code, body := e.post(n, c, "end"); code != 200 {
					fail("%s via HTTP %s: %d %v", c.id, n, code, body)
				}
			default:
				if code, body := e.request(c, "end"); code != "200" {
					fail("%s via NATS: %s %v", c.id, code, body)
				}
			}
		}()
	}
	// The same id to both daemons at once.
	type reply struct {
		code int
		body map[string]any
	}
	dup := make([][2]reply, 5)
	for i := range dup {
		c := kinds[2]
		c.id = fmt.Sprintf("twice-%d", i)
		calls = append(calls, c)
		for j, n := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := e.post(n, c, "end")
				dup[i][j] = reply{code, body}
			}()
		}
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	for i, pair := range dup {
		var outs [2]string
		for j, r := range pair {
			call, _ := r.body["call"].(map[string]any)
			if r.code != 200 || call["id"] != fmt.Sprintf("twice-%d", i) {
				t.Errorf("twice-%d reply %d: %d %v", i, j, r.code, r.body)
			}
			outs[j], _ = call["outcome"].(string)
		}
		if outs[0] != string(events.Completed) || outs[1] != outs[0] {
			t.Errorf("twice-%d: outcomes %q and %q, want both completed", i, outs[0], outs[1])
		}
	}
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.id
	}
	e.judge(calls, e.stream(ids, 30*time.Second))
	if e.sim == nil {
		return // the kit keeps no request log to tell which daemon dialled
	}
	apps := map[string]int{}
	for _, id := range ids {
		for _, app := range originatesByID(e.sim)[id] {
			apps[app]++
		}
	}
	if apps["invokeari-a"] == 0 || apps["invokeari-b"] == 0 {
		t.Errorf("dials per app %v, want both daemons to have placed calls", apps)
	}
}

// TestClusterDaemonKilledCallsAdopted: a daemon is SIGKILLed with calls ringing and
// talking; the survivor adopts every one within about a lease TTL and follows each to
// its true outcome, published once. The killed daemon comes back while adopted calls
// are still in flight and leaves them alone.
func TestClusterDaemonKilledCallsAdopted(t *testing.T) {
	e := newClusterEnv(t, "a", "b")
	var calls []clusterCall
	add := func(prefix string, n int, c clusterCall) {
		for i := range n {
			c.id = fmt.Sprintf("%s-%d", prefix, i)
			calls = append(calls, c)
		}
	}
	add("talk", 6, clusterCall{d: "PJSIP/c-answer", c: "sink", e: "s", t: 10, want: events.Completed})
	add("ring", 6, clusterCall{d: "PJSIP/c-ring", c: "sink", e: "s", t: 9, want: events.NoAnswer})
	add("late", 4, clusterCall{d: "PJSIP/c-late", c: "sink", e: "s", t: 15, want: events.Completed})
	calls = e.calls(calls) // on the kit: no phone answers after 7 s, the late calls are left out
	for _, c := range calls {
		if code, body := e.post("a", c, "accepted"); code != 200 {
			t.Fatalf("%s: %d %v", c.id, code, body)
		}
	}
	e.watch.waitCount(t, events.KindAnswered, 6, 15*time.Second) // the talk calls are talking
	killed := e.kill("a")
	adopted := waitUntil(t, 15*time.Second, "b adopted every call", func() bool {
		return e.clusterNumber("b", "adopted_total") >= float64(len(calls))
	})
	t.Logf("SIGKILL → all %d calls adopted by b: %s (lease TTL %s)", len(calls), adopted.Sub(killed).Round(time.Millisecond),
		events.DefaultLeaseTTL)
	lapse, first, last := e.adoptionTimes("b")
	t.Logf("lease lapse seen by b %s after SIGKILL; adoptions from %s to %s after the lapse",
		lapse.Sub(killed).Round(time.Millisecond), first.Sub(lapse).Round(time.Millisecond), last.Sub(lapse).Round(time.Millisecond))
	// The killed daemon returns while the ring and late calls are still in flight.
	e.start("a")
	if owned := e.clusterNumber("a", "owned_calls"); owned != 0 {
		t.Errorf("returned daemon a follows %v calls, want 0 (all adopted by b)", owned)
	}
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.id
	}
	s := e.stream(ids, 40*time.Second)
	e.judge(calls, s)
	var lastEnd time.Time
	for _, id := range ids {
		if evs := s.byID[id]; len(evs) > 0 && evs[len(evs)-1].Time.After(lastEnd) {
			lastEnd = evs[len(evs)-1].Time
		}
	}
	t.Logf("SIGKILL → last adopted call's outcome: %s", lastEnd.Sub(killed).Round(time.Millisecond))
	if n := e.clusterNumber("a", "adopted_total"); n != 0 {
		t.Errorf("returned daemon a adopted %v calls back, want 0", n)
	}
	if e.sim == nil {
		return
	}
	for _, r := range e.sim.Requests() {
		if r.Method == http.MethodDelete && strings.HasPrefix(r.Path, "/ari/channels/") {
			t.Errorf("a call was hung up by a daemon: %s %s", r.Method, r.Path)
		}
	}
}

// TestClusterNATSNodeKilled: one of three NATS nodes is killed and restarted while two
// daemons carry calls; nothing is lost and no `ended` is published twice.
func TestClusterNATSNodeKilled(t *testing.T) {
	e := newClusterEnv(t, "a", "b")
	kinds := []clusterCall{
		{d: "PJSIP/c-busy", c: "from-internal", e: "100", t: 10, want: events.Busy},
		{d: "PJSIP/c-answer", c: "from-internal", e: "100", t: 10, want: events.Completed},
		{d: "PJSIP/c-ring", c: "from-internal", e: "100", t: 2, want: events.NoAnswer},
	}
	kinds = e.calls(kinds)
	var calls []clusterCall
	for i := range 30 {
		c := kinds[i%len(kinds)]
		c.id = fmt.Sprintf("node-%02d", i)
		calls = append(calls, c)
	}
	var wg sync.WaitGroup
	place := func(part []clusterCall) {
		for i, c := range part {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, body := e.post([]string{"a", "b"}[i%2], c, "accepted"); code != 200 {
					t.Errorf("%s: %d %v", c.id, code, body)
				}
			}()
		}
	}
	place(calls[:15])
	wg.Wait()
	node := e.nats.Nodes[1]
	node.Server.Shutdown()
	node.Server.WaitForShutdown()
	place(calls[15:])
	wg.Wait()
	node.Restart(t)
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.id
	}
	e.judge(calls, e.stream(ids, 40*time.Second))
}

// adoptionTimes reads from daemon n's current log when it saw a peer's lease lapse and
// when it adopted its first and last call.
func (e *clusterEnv) adoptionTimes(n string) (lapse, first, last time.Time) {
	e.t.Helper()
	b, err := os.ReadFile(e.daemons[n].proc.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil {
			continue
		}
		switch {
		case strings.HasPrefix(rec.Msg, "peer's lease lapsed") && lapse.IsZero():
			lapse = rec.Time
		case rec.Msg == "adopted call":
			if first.IsZero() {
				first = rec.Time
			}
			last = rec.Time
		}
	}
	if lapse.IsZero() || first.IsZero() {
		e.t.Errorf("daemon %s logged no lease lapse (%v) or no adoption (%v)", n, lapse, first)
	}
	return lapse, first, last
}

// waitUntil polls cond until it holds (returning when) or limit passes.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(25 * time.Millisecond) // polling pace; the loop has its own deadline
	}
	return time.Now()
}

var (
	clusterThroughput    = flag.Int("cluster.throughput", 0, "cluster: measure saturation throughput with this many calls per run (0: skip)")
	clusterThroughputOff = flag.Bool("cluster.throughput.off", false, "cluster: measure with cluster.enabled off (no id claims)")
	clusterInFlight      = flag.Int("cluster.inflight", 32, "cluster: calls in flight during the throughput measurement")
)

// TestClusterThroughput (opt-in, -cluster.throughput=N) measures calls per second at
// saturation (wait=accepted, instant busy far end, 32 in flight over HTTP) into one
// daemon and spread over two, on the same machine: the two daemons share its cores.
func TestClusterThroughput(t *testing.T) {
	n := *clusterThroughput
	if n == 0 {
		t.Skip("opt-in: -cluster.throughput=N")
	}
	e := newClusterEnvMode(t, !*clusterThroughputOff, "a", "b")
	run := func(label string, doors []string) {
		var next atomic.Int64
		var failed atomic.Int64
		took := make([]time.Duration, n)
		began := time.Now()
		var wg sync.WaitGroup
		for range *clusterInFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(n) {
						return
					}
					c := clusterCall{id: fmt.Sprintf("tp-%s-%d", label, i), d: "PJSIP/c-busy", c: "from-internal", e: "100", t: 10}
					if e.sim == nil {
						c.d = "PJSIP/sipp-busy"
					}
					t0 := time.Now()
					if code, _ := e.post(doors[int(i)%len(doors)], c, "accepted"); code != 200 {
						failed.Add(1)
					}
					took[i] = time.Since(t0)
				}
			}()
		}
		wg.Wait()
		all := time.Since(began)
		slices.Sort(took)
		t.Logf("%s: %d calls in %s = %.0f calls/s (reply p50 %s, p99 %s), %d failed", label, n, all.Round(time.Millisecond),
			float64(n)/all.Seconds(), took[n/2].Round(10*time.Microsecond), took[n*99/100].Round(10*time.Microsecond), failed.Load())
		if failed.Load() != 0 {
			t.Errorf("%s: %d calls failed", label, failed.Load())
		}
	}
	run("one-daemon", []string{"a"})
	run("two-daemons", []string{"a", "b"})
	run("one-daemon-again", []string{"b"})
}

// TestClusterAdoptedCallAnsweredLater: calls still ringing when their daemon is SIGKILLed
// (and stays dead) are answered after a survivor adopted them. The survivor holds the
// dead daemon's Stasis app, so the answered calls enter Stasis, are continued into the
// context they asked for and end completed after their talk; without it Asterisk would
// fail Stasis and hang them up at once.
func TestClusterAdoptedCallAnsweredLater(t *testing.T) {
	if _, _, _, onKit := kitEnv(); onKit {
		t.Skip("the kit has no phone that answers after 7 s (simulator only)")
	}
	e := newClusterEnv(t, "a", "b")
	var calls []clusterCall
	for i := range 4 {
		calls = append(calls, clusterCall{id: fmt.Sprintf("later-%d", i), d: "PJSIP/c-late", c: "sink", e: "s", t: 15,
			want: events.Completed})
	}
	for _, c := range calls {
		if code, body := e.post("a", c, "accepted"); code != 200 {
			t.Fatalf("%s: %d %v", c.id, code, body)
		}
	}
	e.watch.waitCount(t, events.Ringing, len(calls), 10*time.Second)
	e.kill("a")
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.id
	}
	s := e.stream(ids, 40*time.Second)
	e.judge(calls, s)
	continued := (&faultEnv{sim: e.sim}).simLog().continues
	for _, id := range ids {
		if continued[id] != 1 {
			t.Errorf("call %s continued %d times, want once (answered into the held app, then continued)", id, continued[id])
		}
		evs := s.byID[id]
		if last := evs[len(evs)-1]; last.DurationMS == nil || *last.DurationMS < 4000 {
			ms := "null"
			if last.DurationMS != nil {
				ms = fmt.Sprint(*last.DurationMS)
			}
			t.Errorf("call %s: duration_ms %s, want the sink's ~5 s of talk", id, ms)
		}
	}
}
