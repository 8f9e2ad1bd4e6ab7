package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// The fault suite runs the daemon as a child process (the test binary re-executed), so
// that SIGTERM and SIGKILL reach a real process. These variables carry its inputs.
const (
	faultsChildEnv  = "INVOKEARI_FAULTS_CHILD"
	faultsConfigEnv = "INVOKEARI_FAULTS_CONFIG"
	faultsLogEnv    = "INVOKEARI_FAULTS_LOG"
	faultsReadyLine = "faults-child-listening "
)

// TestMain runs the daemon instead of the tests when re-executed as a fault-suite child.
func TestMain(m *testing.M) {
	if os.Getenv(faultsChildEnv) == "1" {
		os.Exit(faultsChildMain())
	}
	os.Exit(m.Run())
}

// faultsChildMain is main() for the child daemon: first SIGTERM drains, a second one
// stops it hard (the default action, restored once the first arrived).
func faultsChildMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // ends when the first signal arrives or the daemon returns (deferred stop)
		<-ctx.Done()
		stop()
	}()
	logf, err := os.OpenFile(os.Getenv(faultsLogEnv), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults child:", err)
		return 2
	}
	defer logf.Close()
	err = runDaemon(ctx, serveOptions{configPath: os.Getenv(faultsConfigEnv), out: logf, getenv: os.Getenv,
		started: func(addr string, _ *daemon) { fmt.Fprintln(os.Stdout, faultsReadyLine+addr) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults child:", err)
		return 1
	}
	return 0
}

// callKind is one far-end behaviour of the load with the outcome it must produce.
type callKind struct {
	name     string
	endpoint string
	t        int // ring timeout, seconds
	want     events.Outcome
}

// faultKinds is the load mix; calls cycle through it.
var faultKinds = []callKind{
	{"answer", "PJSIP/f-answer", 10, events.Completed},
	{"busy", "PJSIP/f-busy", 10, events.Busy},
	{"decline", "PJSIP/f-decline", 10, events.Rejected},
	{"ring-short", "PJSIP/f-ring", 1, events.NoAnswer},
	{"ring-long", "PJSIP/f-ring", 3, events.NoAnswer},
}

// faultEndpoints: an answered call is continued into from-internal/100, whose dialplan
// hangs up after 1s (so it is "mid-call" for about a second).
func faultEndpoints() map[string]sim.Behavior {
	return map[string]sim.Behavior{
		"PJSIP/f-answer":  {Result: sim.Answer, RingAfter: 20 * time.Millisecond, AnswerAfter: 400 * time.Millisecond},
		"PJSIP/f-busy":    {Result: sim.Busy},
		"PJSIP/f-decline": {Result: sim.Decline, RingAfter: 20 * time.Millisecond, RingFor: 800 * time.Millisecond},
		"PJSIP/f-ring":    {Result: sim.RingForever, RingAfter: 20 * time.Millisecond},
	}
}

// faultEnv is one fault's world: a simulated Asterisk and a nats-server in this process,
// the daemon in a child process (restartable), and a live count of call events.
type faultEnv struct {
	t       *testing.T
	name    string
	dir     string
	sim     *sim.Server
	nats    *natstest.Server
	cfgPath string
	client  *http.Client
	ariPass string // ARI password of the daemon's Asterisk; default testARIPass

	base    atomic.Pointer[string] // current daemon's http://addr
	mu      sync.Mutex
	proc    *childProc // current daemon
	started int        // daemons started so far

	watch *eventWatch
}

func newFaultEnv(t *testing.T, name string, drain time.Duration) *faultEnv {
	t.Helper()
	return newFaultEnvWith(t, name, drain, nil)
}

// newFaultEnvWith is newFaultEnv with a change to the daemon's config.
func newFaultEnvWith(t *testing.T, name string, drain time.Duration, tune func(*testConfig)) *faultEnv {
	t.Helper()
	e := &faultEnv{t: t, name: name, dir: t.TempDir(), client: &http.Client{Timeout: 30 * time.Second}}
	if *faultsLogDir != "" {
		e.dir = filepath.Join(*faultsLogDir, name)
		if err := os.MkdirAll(e.dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	e.nats = natstest.Start(t)
	e.sim = sim.New(sim.Config{Username: testARIUser, Password: testARIPass, Endpoints: faultEndpoints(),
		Contexts: DemoContexts(), BootDelay: time.Second})
	if err := e.sim.Start(context.Background()); err != nil {
		t.Fatalf("start simulator: %v", err)
	}
	t.Cleanup(func() { _ = e.sim.Close() })
	tc := testConfig{simURL: e.sim.URL(), natsURL: e.nats.URL, app: "invokeari-faults",
		wait: "accepted", limits: fmt.Sprintf("drain_timeout: %s, max_in_flight: 5000", drain), logLevel: "info"}
	if tune != nil {
		tune(&tc)
	}
	e.cfgPath = writeTestConfig(t, e.dir, tc)
	nc, _ := e.nats.Connect(t)
	e.watch = newEventWatch(t, nc)
	e.startDaemon()
	return e
}

// childProc is one daemon process.
type childProc struct {
	cmd     *exec.Cmd
	logPath string
	errPath string
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // set before done is closed
}

// startDaemon starts a daemon process and waits until it answers /readyz with 200.
func (e *faultEnv) startDaemon() {
	t := e.t
	t.Helper()
	e.mu.Lock()
	e.started++
	n := e.started
	e.mu.Unlock()
	p, base := startChild(t, e.client, e.cfgPath, filepath.Join(e.dir, fmt.Sprintf("daemon-%d", n)),
		"TEST_ARI_PASSWORD="+cmp.Or(e.ariPass, testARIPass))
	e.base.Store(&base)
	e.mu.Lock()
	e.proc = p
	e.mu.Unlock()
}

// startChild starts a daemon process on cfgPath, logging to prefix.log and
// prefix.stderr, and waits until it answers /readyz with 200; it returns the process
// and its http://addr. The process is killed by t.Cleanup if still running. env adds
// (or overrides) KEY=VALUE entries of the child's environment.
func startChild(t *testing.T, client *http.Client, cfgPath, prefix string, env ...string) (*childProc, string) {
	t.Helper()
	p := &childProc{logPath: prefix + ".log", errPath: prefix + ".stderr", done: make(chan struct{})}
	errf, err := os.Create(p.errPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(childEnviron(), faultsChildEnv+"=1", faultsConfigEnv+"="+cfgPath,
		faultsLogEnv+"="+p.logPath, "TEST_ARI_PASSWORD="+testARIPass)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stderr = errf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start daemon process: %v", err)
	}
	addrc := make(chan string, 1)
	go func() { // ends at the child's stdout EOF (its exit)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), faultsReadyLine); ok {
				addrc <- a
			}
		}
	}()
	go func() { // reaps the child; ends when it exits
		p.waitErr = p.cmd.Wait()
		errf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case <-p.done:
		t.Fatalf("daemon %s exited before listening: %v\n%s", filepath.Base(prefix), p.waitErr, p.tail())
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon %s did not listen within 30s\n%s", filepath.Base(prefix), p.tail())
	}
	waitChildReady(t, client, base, p)
	return p, base
}

// childEnviron is this process's environment without INVOKEARI_* overrides.
func childEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INVOKEARI_") {
			out = append(out, kv)
		}
	}
	return out
}

// waitChildReady polls base/readyz until it answers 200.
func waitChildReady(t *testing.T, client *http.Client, base string, p *childProc) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("daemon exited before it was ready: %v\n%s", p.waitErr, p.tail())
		case <-time.After(20 * time.Millisecond): // polling pace; the loop has its own deadline
		}
	}
	t.Fatalf("daemon not ready within 20s\n%s", p.tail())
}

func (e *faultEnv) current() *childProc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc
}

// signal sends sig to the current daemon.
func (e *faultEnv) signal(sig os.Signal) {
	if err := e.current().cmd.Process.Signal(sig); err != nil {
		e.t.Fatalf("signal daemon: %v", err)
	}
}

// waitExit waits for the current daemon to exit and returns its exit code.
func (e *faultEnv) waitExit(limit time.Duration) int {
	e.t.Helper()
	p := e.current()
	select {
	case <-p.done:
	case <-time.After(limit):
		e.t.Fatalf("daemon did not exit within %s\n%s", limit, p.tail())
	}
	return p.cmd.ProcessState.ExitCode()
}

// stopDaemon SIGTERMs the current daemon (if it still runs) and checks it exits cleanly.
func (e *faultEnv) stopDaemon() {
	e.t.Helper()
	p := e.current()
	select {
	case <-p.done:
		return
	default:
	}
	e.signal(syscall.SIGTERM)
	if code := e.waitExit(60 * time.Second); code != 0 {
		e.t.Errorf("daemon exit code %d after SIGTERM\n%s", code, p.tail())
	}
}

func (p *childProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the process's logs, for failure messages.
func (p *childProc) tail() string {
	var b strings.Builder
	for _, f := range []string{p.errPath, p.logPath} {
		data, _ := os.ReadFile(f)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", filepath.Base(f), data)
	}
	return b.String()
}

// raced reports whether any daemon process of this env printed a race report.
func (e *faultEnv) raced() string {
	for i := 1; i <= e.started; i++ {
		p := filepath.Join(e.dir, fmt.Sprintf("daemon-%d.stderr", i))
		if data, _ := os.ReadFile(p); strings.Contains(string(data), "DATA RACE") {
			return string(data)
		}
	}
	return ""
}

// callPlan is one call the load places; status is its HTTP reply (0: not reached).
type callPlan struct {
	id      string
	kind    callKind
	status  int
	errText string
	took    time.Duration // how long the reply took
	context string        // where an answered call continues; default from-internal
	exten   string        // default 100
}

// planCalls makes n calls cycling through faultKinds.
func planCalls(prefix string, n int) []*callPlan {
	out := make([]*callPlan, n)
	for i := range out {
		out[i] = &callPlan{id: fmt.Sprintf("%s-%04d", prefix, i), kind: faultKinds[i%len(faultKinds)]}
	}
	return out
}

// place sends every call (wait=accepted) spread evenly over spread and returns when all
// replies are in. It runs in the caller's goroutine; start it with go and a WaitGroup.
func (e *faultEnv) place(calls []*callPlan, spread time.Duration) {
	var wg sync.WaitGroup
	tick := time.NewTicker(max(spread/time.Duration(len(calls)), time.Millisecond))
	defer tick.Stop()
	for i, c := range calls {
		if i > 0 {
			<-tick.C // pacing of the load, not synchronisation
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			c.status, c.errText = e.originate(c)
			c.took = time.Since(began)
		}()
	}
	wg.Wait()
}

// originate posts one call to the current daemon.
func (e *faultEnv) originate(c *callPlan) (int, string) {
	form := url.Values{"d": {c.kind.endpoint}, "c": {cmp.Or(c.context, "from-internal")}, "e": {cmp.Or(c.exten, "100")},
		"t": {fmt.Sprint(c.kind.t)}, "wait": {"accepted"}, "id": {c.id}}
	req, err := http.NewRequest(http.MethodPost, *e.base.Load()+"/v2/invokeARI", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", testAPIKey)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(body)
	}
	return resp.StatusCode, ""
}

// eventWatch counts live call events by kind (core NATS, for fault triggers only; the
// verdict is taken from the JetStream stream).
type eventWatch struct {
	mu      sync.Mutex
	counts  map[events.Kind]int
	changed chan struct{}
}

func newEventWatch(t *testing.T, nc *nats.Conn) *eventWatch {
	t.Helper()
	w := &eventWatch{counts: map[events.Kind]int{}, changed: make(chan struct{})}
	sub, err := nc.Subscribe(events.SubjectPrefix+".>", func(m *nats.Msg) {
		k := events.Kind(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		w.mu.Lock()
		w.counts[k]++
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// waitCount waits until at least n events of kind k were seen.
func (w *eventWatch) waitCount(t *testing.T, k events.Kind, n int, limit time.Duration) {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		w.mu.Lock()
		got, ch := w.counts[k], w.changed
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("fault trigger: saw %d %s events within %s, want %d", got, k, limit, n)
		}
	}
}

// streamLog reads the INVOKEARI_CALLS stream from its start.
type streamLog struct {
	cons jetstream.Consumer
	byID map[string][]events.Event
}

func (e *faultEnv) openStream() *streamLog {
	e.t.Helper()
	_, js := e.nats.Connect(e.t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPrefix + ".>"}})
	if err != nil {
		e.t.Fatalf("stream consumer: %v", err)
	}
	return &streamLog{cons: cons, byID: map[string][]events.Event{}}
}

// readUntil reads events until done() holds, then on for quiet without a new event
// (to catch late duplicates); limit bounds the whole wait.
func (s *streamLog) readUntil(t *testing.T, done func() bool, quiet, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		wait := 500 * time.Millisecond
		finished := done()
		if finished {
			wait = quiet
		}
		m, err := s.cons.Next(jetstream.FetchMaxWait(wait))
		if errors.Is(err, nats.ErrNoResponders) {
			// On a NATS cluster: the consumer is being recreated on another node.
			time.Sleep(50 * time.Millisecond) // polling pace; the loop has its own deadline
			continue
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || (err != nil && !errors.Is(err, nats.ErrTimeout)) {
			t.Fatalf("read stream: %v", err)
		}
		if err != nil { // a quiet spell
			if finished {
				return
			}
			continue
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("stream event %s: %v", m.Subject(), err)
		}
		s.byID[ev.ID] = append(s.byID[ev.ID], ev)
	}
}

func (s *streamLog) endedCount(id string) int {
	n := 0
	for _, ev := range s.byID[id] {
		if ev.Event == events.Ended {
			n++
		}
	}
	return n
}

// simLog is what the simulator's request log says per channel id.
type simLog struct {
	dials     map[string]int // POST /channels
	continues map[string]int // successful POST /channels/{id}/continue
}

func (e *faultEnv) simLog() simLog {
	out := simLog{dials: map[string]int{}, continues: map[string]int{}}
	for _, r := range e.sim.Requests() {
		if r.Method != http.MethodPost {
			continue
		}
		if r.Path == "/ari/channels" {
			q, _ := url.ParseQuery(r.Query)
			out.dials[q.Get("channelId")]++
		}
		if id, ok := strings.CutSuffix(strings.TrimPrefix(r.Path, "/ari/channels/"), "/continue"); ok && r.Status < 300 {
			out.continues[id]++
		}
	}
	return out
}
