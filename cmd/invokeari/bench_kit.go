package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
)

// The real-PBX section (issue 11): direct ARI vs the HTTP door vs the NATS door on the
// Asterisk 22 kit (../shared/asterisk), in one run, interleaved.

// Targets of issue 11.
const (
	targetKitP50Extra   = 400 * time.Microsecond  // door p50 − direct p50 at 20 calls/s
	targetKitP99Extra   = 1500 * time.Microsecond // door p99 − direct p99
	targetKitThroughput = 0.9                     // door ÷ direct at saturation
	targetKitFrameToAck = 20 * time.Millisecond   // websocket frame read → ended event in JetStream, p99 at saturation
)

const (
	kitEndpoint  = "Local/answerfast@sim" // answers at once, hangs up after 1 s
	kitContext   = "sink"                 // where the daemon continues answered calls (Wait(5), Hangup)
	kitDirectApp = "bench-direct"         // the direct baseline's own Stasis app (directStasis)
)

// kitPlan sizes the real-PBX section.
type kitPlan struct {
	rate       float64       // calls/s per path in the latency part
	rateFor    time.Duration // how long the latency part lasts
	satWorkers int           // calls in flight per path at saturation (the issue saw Asterisk saturate at 32)
	satSlice   time.Duration // one saturation slice
	satRounds  int           // slices per path, interleaved
	ownRounds  int           // rounds of the own-cores part (K7); 0 skips it
}

var (
	fullKitPlan  = kitPlan{rate: 20, rateFor: 20 * time.Second, satWorkers: 32, satSlice: 4 * time.Second, satRounds: 5, ownRounds: 3}
	quickKitPlan = kitPlan{rate: 20, rateFor: 2 * time.Second, satWorkers: 8, satSlice: time.Second, satRounds: 1, ownRounds: 1}
)

// kitPath is one way to originate: direct ARI, the HTTP door or the NATS door.
type kitPath struct {
	name   string
	prefix string // call ids are prefix + 7 digits: one length, see ari.ErrIDPrefixConflict
	daemon bool
	floor  bool // a K0 floor: no call behind it
	send   func(ctx context.Context, id string) error
	seq    atomic.Int64
}

func (p *kitPath) nextID() string { return fmt.Sprintf("%s%07d", p.prefix, p.seq.Add(1)) }

// kitSample is one originate as the bench client saw it.
type kitSample struct {
	id         string
	sent, done time.Time
	err        error
}

// kitRun is one real-PBX section run.
type kitRun struct {
	b        *bench
	plan     kitPlan
	wire     *wireTimer
	ari      *directARI
	stasis   *directStasis
	nc       *nats.Conn
	js       jetstream.JetStream
	paths    []*kitPath
	mu       sync.Mutex
	failures []kitFailure         // every failed originate, all paths
	ended    map[string]time.Time // call id → its `ended` event delivered from JetStream
	sent     map[string]time.Time // call id → its `ended` event seen published (core NATS)
	outcome  map[string]string    // call id → its outcome
	astPID   int                  // Asterisk's process, for K6 (0: unknown)
	floors   []*kitPath           // K0: the hop of each door with nothing behind it
	changed  chan struct{}
}

// kitSat is one saturation part: per path, every slice's result together, the calls/s
// of each slice by round, and the CPU used.
type kitSat struct {
	res   []loadResult
	rates [][]float64
	cpu   []kitCPU
}

// kitWindow is when the K5 slices ran: frames read inside it are counted.
type kitWindow struct{ from, to time.Time }

// kitSection runs the real-PBX section with the kit's control script ctl (the script and
// options such as --dir) on base port base: it starts the kit (and stops it again unless
// it was already running), starts a daemon on it, and measures.
func (b *bench) kitSection(ctx context.Context, ctl []string, base int, dir string, logs io.Writer) (err error) {
	if len(ctl) == 0 {
		ctl = []string{"(none)"}
	}
	if _, err := os.Stat(ctl[0]); err != nil {
		b.progress("REAL-PBX SECTION SKIPPED: no kit at %s", ctl[0])
		b.notes = append(b.notes, fmt.Sprintf("**K real PBX**: not run, no kit at `%s`.", ctl[0]))
		return nil
	}
	b.kitLoadStart = loadAvg()
	env, stop, err := startKit(ctx, ctl, base, logs)
	if err != nil {
		return err
	}
	defer func() {
		if serr := stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	e := &benchEnv{dir: filepath.Join(dir, "kit"), apiKey: "bench-" + randomHex(16), webhookSecret: randomHex(16), done: make(chan error, 1)}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return err
	}
	w := newWireTimer()
	b.progress("K: daemon on the real Asterisk at %s", env["INVOKEARI_TEST_ARI_URL"])
	if err := e.startDaemon(ctx, logs, env["INVOKEARI_TEST_ARI_URL"], env["INVOKEARI_TEST_ARI_USER"], env["INVOKEARI_TEST_ARI_PASS"], w.dial); err != nil {
		e.stop()
		return err
	}
	defer func() {
		if serr := e.stop(); serr != nil && err == nil {
			err = fmt.Errorf("daemon stop: %w", serr)
		}
	}()
	k, closeAll, err := newKitRun(ctx, b, b.plan.kit, w, e, env)
	if err != nil {
		return err
	}
	defer closeAll()
	err = k.measure(ctx)
	b.kitLoadEnd = loadAvg()
	return err
}

// startKit starts the kit on base and returns its env lines and how to stop it; a kit
// already running there is used and left running.
func startKit(ctx context.Context, ctl []string, base int, logs io.Writer) (map[string]string, func() error, error) {
	b := strconv.Itoa(base)
	pbx := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, ctl[0], append(slices.Clone(ctl[1:]), append(args, "--base", b)...)...)
	}
	wasUp := pbx(ctx, "status").Run() == nil
	cmd := pbx(ctx, "start")
	cmd.Stderr = logs
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("pbx start --base %s: %w (progress in the bench log)", b, err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = strings.Trim(v, `"`)
		}
	}
	stop := func() error {
		if wasUp {
			return nil
		}
		cmd := pbx(context.WithoutCancel(ctx), "stop")
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("pbx stop --base %s: %w", b, err)
		}
		return nil
	}
	if env["INVOKEARI_TEST_ARI_URL"] == "" {
		_ = stop()
		return nil, nil, fmt.Errorf("pbx start --base %s printed no INVOKEARI_TEST_ARI_URL", b)
	}
	return env, stop, nil
}

func newKitRun(ctx context.Context, b *bench, plan kitPlan, w *wireTimer, e *benchEnv, env map[string]string) (*kitRun, func(), error) {
	hc := newBenchHTTPClient()
	nc, err := nats.Connect(e.natsURL, nats.Name("invokeari-bench-kit"))
	if err != nil {
		return nil, nil, fmt.Errorf("connect NATS: %w", err)
	}
	k := &kitRun{b: b, plan: plan, wire: w, ended: map[string]time.Time{}, sent: map[string]time.Time{}, outcome: map[string]string{}, changed: make(chan struct{}),
		ari: &directARI{hc: hc, base: env["INVOKEARI_TEST_ARI_URL"], user: env["INVOKEARI_TEST_ARI_USER"],
			pass: env["INVOKEARI_TEST_ARI_PASS"], app: kitDirectApp}}
	k.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if b, err := os.ReadFile(filepath.Join(env["INVOKEARI_TEST_PBX_DIR"], "run", "asterisk.pid")); err == nil {
		k.astPID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	k.stasis, err = startDirectStasis(ctx, k.ari, kitContext, 8)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	door := &daemonHTTP{hc: hc, url: e.httpURL, key: e.apiKey}
	k.paths = []*kitPath{
		{name: "direct ARI", prefix: "kd", send: k.ari.originateID},
		{name: "HTTP door", prefix: "kh", daemon: true, send: door.originateID},
		{name: "NATS door", prefix: "kn", daemon: true, send: (&daemonNATS{nc: nc, key: e.apiKey}).originateID},
	}
	k.nc = nc
	floors, stopFloors, err := startFloors(hc, nc, e.natsURL, e.apiKey)
	if err != nil {
		k.stasis.stop()
		nc.Close()
		return nil, nil, err
	}
	k.floors = floors
	return k, func() { stopFloors(); k.stasis.stop(); nc.Close(); hc.CloseIdleConnections() }, nil
}

// watchEnded records every `ended` event the stream stores from now on (deliver =
// DeliverNewPolicy) or from its start (DeliverAllPolicy), and, with published, when
// each reaches NATS; stop ends it. It runs only where it is needed: during the
// throughput slices it would take CPU from the daemon and Asterisk it is measuring.
func (k *kitRun) watchEnded(ctx context.Context, deliver jetstream.DeliverPolicy, published bool) (stop func(), err error) {
	cons, err := k.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"invokeari.calls.*.ended"}, DeliverPolicy: deliver})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(k.onEnded)
	if err != nil {
		return nil, err
	}
	if !published {
		return cc.Stop, nil
	}
	sub, err := k.nc.Subscribe(events.SubjectPrefix+".*.ended", k.onPublished)
	if err != nil {
		cc.Stop()
		return nil, err
	}
	return func() { _ = sub.Unsubscribe(); cc.Stop() }, nil
}

// onEnded records each `ended` event as the stream delivers it.
func (k *kitRun) onEnded(m jetstream.Msg) {
	now := time.Now()
	var ev struct {
		ID      string `json:"id"`
		Outcome string `json:"outcome"`
	}
	_ = json.Unmarshal(m.Data(), &ev)
	k.mu.Lock()
	if _, dup := k.ended[ev.ID]; !dup {
		k.ended[ev.ID] = now
		k.outcome[ev.ID] = ev.Outcome
	}
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

// onPublished records when each `ended` event reaches NATS: a core subscriber sees it
// as the server receives it, before JetStream stores and acknowledges it.
func (k *kitRun) onPublished(m *nats.Msg) {
	now := time.Now()
	parts := strings.Split(m.Subject, ".") // invokeari.calls.<id>.ended
	if len(parts) != 4 {
		return
	}
	k.mu.Lock()
	if _, dup := k.sent[parts[2]]; !dup {
		k.sent[parts[2]] = now
	}
	k.mu.Unlock()
}

func (c *directARI) originateID(ctx context.Context, id string) error {
	return c.post(ctx, url.Values{"endpoint": {kitEndpoint}, "app": {c.app}, "appArgs": {"bench," + id}, "channelId": {id},
		"otherChannelId": {id + ".2"}, "timeout": {"30"}})
}

func (c *daemonHTTP) originateID(ctx context.Context, id string) error {
	return c.post(ctx, url.Values{"d": {kitEndpoint}, "c": {kitContext}, "e": {"s"}, "t": {"30"}, "wait": {"accepted"}, "id": {id}})
}

func (c *daemonNATS) originateID(ctx context.Context, id string) error {
	body, err := json.Marshal(map[string]string{"d": kitEndpoint, "c": kitContext, "e": "s", "t": "30", "wait": "accepted", "id": id})
	if err != nil {
		return err
	}
	return c.request(ctx, body)
}

// kitFailure is a failed originate.
type kitFailure struct {
	path *kitPath
	id   string
	err  error
}

// explained reports whether a failed reply carries Asterisk's refusal (an ARI 4xx/5xx)
// or its silence until the deadline as evidence; any other failure (EOF, reset, 502
// without ARI's status) is false: the PBX did not refuse the call.
func (f kitFailure) explained() bool {
	s := f.err.Error()
	if strings.Contains(s, "deadline exceeded") || strings.Contains(s, "unreachable") {
		return true
	}
	if f.path.daemon {
		return ariRefusal.MatchString(s)
	}
	return strings.Contains(s, ": HTTP ") // Asterisk answered the bench's POST with an error
}

var ariRefusal = regexp.MustCompile(`"http_code":[45][0-9][0-9]`)

// send times one originate on path p.
func (k *kitRun) send(ctx context.Context, p *kitPath) kitSample {
	s := kitSample{id: p.nextID(), sent: time.Now()}
	s.err = p.send(ctx, s.id)
	s.done = time.Now()
	if s.err != nil && !p.floor {
		k.mu.Lock()
		k.failures = append(k.failures, kitFailure{path: p, id: s.id, err: s.err})
		k.mu.Unlock()
	}
	return s
}

// measure runs the latency part, then the saturation part, then waits for every
// daemon call's `ended` event and writes the rows.
func (k *kitRun) measure(ctx context.Context) error {
	var lat [][]kitSample
	if err := k.b.phase("kit-latency", func() error { lat = k.latency(ctx); return nil }); err != nil {
		return err
	}
	if err := k.settle(ctx); err != nil {
		return err
	}
	k.b.progress("K2: saturation, %d in flight, %d × %s per path, interleaved", k.plan.satWorkers, k.plan.satRounds, k.plan.satSlice)
	sat, err := k.saturation(ctx, k.plan.satRounds, "kit-saturation")
	if err != nil {
		return err
	}
	k.b.progress("K5: websocket frame → ended stored, one saturation slice per door")
	win, err := k.frameToStored(ctx)
	if err != nil {
		return err
	}
	own, err := k.ownCores(ctx)
	if err != nil {
		return err
	}
	k.report(ctx, lat, sat, win, own)
	return nil
}

// latency: every path at plan.rate calls/s, open loop, interleaved (direct, HTTP, NATS,
// direct, ...), so machine drift hits all alike.
func (k *kitRun) latency(ctx context.Context) [][]kitSample {
	// The floors (K0) take their turns among the paths, at the same rate.
	paths := append(slices.Clone(k.paths), k.floors...)
	n := len(paths)
	total := int(k.plan.rate*k.plan.rateFor.Seconds()) * n
	tick := time.Duration(float64(time.Second) / (k.plan.rate * float64(n)))
	k.b.progress("K1: latency, %d requests at %.0f/s per path (%d call paths, %d floors), %s each way interleaved",
		total, k.plan.rate, len(k.paths), len(k.floors), kitEndpoint)
	out := make([][]kitSample, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < total && ctx.Err() == nil; i++ {
		timer.Reset(time.Until(start.Add(time.Duration(i) * tick)))
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
		p := i % n
		wg.Add(1)
		go func() { // one per originate, all joined below
			defer wg.Done()
			s := k.send(ctx, paths[p])
			mu.Lock()
			out[p] = append(out[p], s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// saturation: plan.satWorkers in flight on one path at a time, rounds of one slice per
// path; each slice is profiled as phase "<phase>-<path>-<round>" when profiles are asked for.
func (k *kitRun) saturation(ctx context.Context, rounds int, phase string) (kitSat, error) {
	// The bench's instruments take CPU from what they measure: the wire timer rests.
	k.wire.paused.Store(true)
	defer k.wire.paused.Store(false)
	sat := kitSat{res: make([]loadResult, len(k.paths)), cpu: make([]kitCPU, len(k.paths)), rates: make([][]float64, len(k.paths))}
	// A warm-up slice per path, not counted: the first slices after the latency part
	// ran slower on every path (connections, JetStream's blocks, Asterisk's caches).
	for _, p := range k.paths {
		k.slice(ctx, p)
		if err := k.settle(ctx); err != nil {
			return sat, err
		}
	}
	for round := range rounds {
		for i, p := range k.paths {
			cpu0 := k.cpuNow()
			var r loadResult
			load := func() error { r = k.slice(ctx, p); return nil }
			// Each slice under its own profile, when profiles are asked for (pprof merges them).
			if err := k.b.phase(fmt.Sprintf("%s-%s-%d", phase, strings.ReplaceAll(p.name, " ", "-"), round+1), load); err != nil {
				return sat, err
			}
			sat.res[i].add(r)
			sat.rates[i] = append(sat.rates[i], r.rate())
			if err := k.settle(ctx); err != nil {
				return sat, err
			}
			sat.cpu[i].add(cpu0, k.cpuNow(), r.ok) // after settle: the calls' whole lives
		}
	}
	return sat, nil
}

// slice runs path p at saturation for one slice.
func (k *kitRun) slice(ctx context.Context, p *kitPath) loadResult {
	return runLoad(ctx, k.plan.satWorkers, 0, k.plan.satSlice, func(ctx context.Context, _ int64) error {
		s := k.send(ctx, p)
		if s.err != nil {
			return fmt.Errorf("%s: %w", s.id, s.err)
		}
		return nil
	})
}

// frameToStored is the K5d/K5e part: one more saturation slice per door, with the
// wire timer on and the stream watched live, timing each ChannelDestroyed frame to
// its `ended` event published and stored.
func (k *kitRun) frameToStored(ctx context.Context) (kitWindow, error) {
	stop, err := k.watchEnded(ctx, jetstream.DeliverNewPolicy, true)
	if err != nil {
		return kitWindow{}, fmt.Errorf("watch ended events: %w", err)
	}
	defer stop()
	win := kitWindow{from: time.Now()}
	for _, p := range k.paths {
		if !p.daemon {
			continue
		}
		k.slice(ctx, p)
		if err := k.settle(ctx); err != nil {
			return win, err
		}
	}
	win.to = time.Now()
	// The slices' last ended events: wait for them while the watch is still on.
	var ids []string
	k.wire.mu.Lock()
	for id, at := range k.wire.destroyed {
		if !at.Before(win.from) && !at.After(win.to) && !strings.Contains(id, ".") { // not a Local ;2 half
			ids = append(ids, id)
		}
	}
	k.wire.mu.Unlock()
	k.waitEnded(ctx, ids, 30*time.Second)
	return win, nil
}

// settle waits until Asterisk has no channel left, so the next slice starts alike. It
// asks every 100 ms (the list is long at saturation; the bench shares the CPUs). A kit
// shared with other work may never get there: after 30 s the run goes on, saying so.
func (k *kitRun) settle(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !k.asteriskIdle(ctx) {
		if time.Now().After(deadline) {
			k.b.progress("K: Asterisk still has channels after 30 s (a shared kit?); going on")
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// asteriskIdle reports whether GET /channels lists no channel.
func (k *kitRun) asteriskIdle(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.ari.base+"/channels", nil)
	if err != nil {
		return false
	}
	req.SetBasicAuth(k.ari.user, k.ari.pass)
	resp, err := k.ari.hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var chs []json.RawMessage
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&chs) == nil && len(chs) == 0
}

// waitEnded waits until every id has its `ended` event or limit passes; it returns the
// ids still missing.
func (k *kitRun) waitEnded(ctx context.Context, ids []string, limit time.Duration) []string {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		var missing []string
		for _, id := range ids {
			if _, ok := k.ended[id]; !ok {
				missing = append(missing, id)
			}
		}
		ch := k.changed
		k.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return missing
		case <-ctx.Done():
			return missing
		}
	}
}

// report writes the K rows.
func (k *kitRun) report(ctx context.Context, lat [][]kitSample, sat kitSat, win kitWindow, own kitOwnCores) {
	b := k.b
	okLat := func(ss []kitSample) (ds []time.Duration) {
		for _, s := range ss {
			if s.err == nil {
				ds = append(ds, s.done.Sub(s.sent))
			}
		}
		return ds
	}
	direct := okLat(lat[0])
	d50, d99 := percentile(direct, 50), percentile(direct, 99)
	for i, p := range k.paths[1:] {
		ds := okLat(lat[i+1])
		p50, p99 := percentile(ds, 50), percentile(ds, 99)
		b.row(benchRow{ID: fmt.Sprintf("K1%c", 'a'+i), What: fmt.Sprintf("latency at %.0f calls/s, wait=accepted: %s p50 − direct ARI p50", k.plan.rate, p.name),
			Target:   "≤ +" + fmtDur(targetKitP50Extra),
			Measured: fmt.Sprintf("%+.2f ms (%s vs %s)", ms(p50-d50), fmtDur(p50), fmtDur(d50)), Verdict: check(float64(p50-d50), float64(targetKitP50Extra), true)})
		b.row(benchRow{ID: fmt.Sprintf("K1%c", 'c'+i), What: fmt.Sprintf("same run: %s p99 − direct ARI p99", p.name),
			Target:   "≤ +" + fmtDur(targetKitP99Extra),
			Measured: fmt.Sprintf("%+.2f ms (%s vs %s)", ms(p99-d99), fmtDur(p99), fmtDur(d99)), Verdict: check(float64(p99-d99), float64(targetKitP99Extra), true)})
	}
	for i, f := range k.floors {
		ds := okLat(lat[len(k.paths)+i])
		b.row(benchRow{ID: fmt.Sprintf("K0%c", 'a'+i), What: fmt.Sprintf("same run, the floor under K1: %s, p50 / p99", f.name),
			Target: "reported", Measured: fmt.Sprintf("%s / %s (%d of %d answered)", fmtDur(percentile(ds, 50)), fmtDur(percentile(ds, 99)), len(ds), len(lat[len(k.paths)+i])),
			Verdict: verdictInfo})
	}
	for i, p := range k.paths[1:] {
		r, ratios := sat.ratio(i + 1)
		b.row(benchRow{ID: fmt.Sprintf("K2%c", 'a'+i), What: fmt.Sprintf("saturation throughput, %d in flight: %s ÷ direct ARI, median of %d interleaved rounds", k.plan.satWorkers, p.name, len(ratios)),
			Target:   fmt.Sprintf("≥ %.1f", targetKitThroughput),
			Measured: sat.describe(i+1, r, ratios),
			Verdict:  check(r, targetKitThroughput, false)})
	}
	for i, p := range k.paths {
		c := sat.cpu[i]
		b.row(benchRow{ID: fmt.Sprintf("K6%c", 'a'+i), What: fmt.Sprintf("CPU per call at saturation, %s: Asterisk / this process (bench client%s)", p.name,
			map[bool]string{true: ", daemon, embedded NATS", false: ", its Stasis app"}[p.daemon]),
			Target: "reported", Measured: c.String(), Verdict: verdictInfo})
	}

	// Every call a door accepted must end with its true outcome in the stream.
	var accepted []string
	var samples []kitSample
	for i, p := range k.paths {
		if !p.daemon {
			continue
		}
		samples = append(samples, lat[i]...)
		for n := int64(1); n <= p.seq.Load(); n++ {
			accepted = append(accepted, fmt.Sprintf("%s%07d", p.prefix, n))
		}
	}
	var missing []string
	if stop, err := k.watchEnded(ctx, jetstream.DeliverAllPolicy, false); err != nil {
		missing = accepted // reported below as lost: the stream could not be read
		k.b.progress("K3: read the stream: %v", err)
	} else {
		missing = k.waitEnded(ctx, accepted, 30*time.Second)
		stop()
	}
	k.mu.Lock()
	failed := map[string]bool{}
	falseFail, explained := 0, 0
	var firstFalse, firstExplained string
	for _, f := range k.failures {
		failed[f.id] = true
		if f.explained() {
			explained++
			if firstExplained == "" {
				firstExplained = fmt.Sprintf("%s %s: %.200s", f.path.name, f.id, f.err)
			}
			continue
		}
		falseFail++
		if firstFalse == "" {
			firstFalse = fmt.Sprintf("%s %s: %.200s", f.path.name, f.id, f.err)
		}
	}
	wrong := 0
	for _, id := range accepted {
		if o, ok := k.outcome[id]; ok && o != "completed" && !failed[id] {
			wrong++
			if firstFalse == "" {
				firstFalse = id + " ended " + o
			}
		}
	}
	k.mu.Unlock()
	b.row(benchRow{ID: "K3", What: "lost outcomes: daemon calls with no `ended` event in JetStream 30 s after the run", Target: "0",
		Measured: fmt.Sprintf("%d of %d", len(missing), len(accepted)), Verdict: check(float64(len(missing)), 0, true)})
	meas := fmt.Sprintf("%d false failed replies, %d calls accepted but ended other than completed", falseFail, wrong)
	if firstFalse != "" {
		meas += " (first: " + firstFalse + ")"
	}
	b.row(benchRow{ID: "K4a", What: "false failures, every path: a failed reply without Asterisk's refusal or silence as evidence; an accepted call not `completed` (every call answers)",
		Target: "0", Measured: meas, Verdict: check(float64(falseFail+wrong), 0, true)})
	meas = fmt.Sprintf("%d", explained)
	if firstExplained != "" {
		meas += " (first: " + firstExplained + ")"
	}
	b.row(benchRow{ID: "K4b", What: "failed replies with Asterisk's evidence (an ARI 4xx/5xx, or no answer within the request's deadline)",
		Target: "reported", Measured: meas, Verdict: verdictInfo})

	in, back, ast := k.wire.split(samples)
	b.row(benchRow{ID: "K5a", What: fmt.Sprintf("daemon's own time at %.0f/s: request sent → its POST /channels on the wire, p50 / p99", k.plan.rate),
		Target: "reported", Measured: fmt.Sprintf("%s / %s (%d calls)", fmtDur(percentile(in, 50)), fmtDur(percentile(in, 99)), len(in)), Verdict: verdictInfo})
	b.row(benchRow{ID: "K5b", What: "same calls: ARI reply read off the wire → reply received by the client, p50 / p99",
		Target: "reported", Measured: fmt.Sprintf("%s / %s", fmtDur(percentile(back, 50)), fmtDur(percentile(back, 99))), Verdict: verdictInfo})
	b.row(benchRow{ID: "K5c", What: "same calls: Asterisk's own time, POST /channels on the wire → its reply read, p50 / p99",
		Target: "reported", Measured: fmt.Sprintf("%s / %s", fmtDur(percentile(ast, 50)), fmtDur(percentile(ast, 99))), Verdict: verdictInfo})
	k.mu.Lock()
	stored := k.wire.frameTo(k.ended, win.from, win.to)
	sent := k.wire.frameTo(k.sent, win.from, win.to)
	k.mu.Unlock()
	p99 := percentile(stored, 99)
	b.row(benchRow{ID: "K5d", What: "at saturation: websocket frame ChannelDestroyed read → the call's `ended` event stored in JetStream (delivered to a consumer), p99",
		Target: "≤ " + fmtDur(targetKitFrameToAck), Measured: fmtTail(stored),
		Verdict: check(float64(p99), float64(targetKitFrameToAck), true)})
	b.row(benchRow{ID: "K5e", What: "same calls: frame read → the `ended` event received by NATS (before its ack), p50 / p99",
		Target: "reported", Measured: fmt.Sprintf("%s / %s (%d calls)", fmtDur(percentile(sent, 50)), fmtDur(percentile(sent, 99)), len(sent)),
		Verdict: verdictInfo})
	k.reportOwnCores(own)
	b.notes = append(b.notes, fmt.Sprintf("**K real PBX**: Asterisk 22.10.1 of the kit (`../shared/asterisk`), endpoint `%s` (answers at once, "+
		"ends after 1 s), `wait=accepted`, call ids of one length (Asterisk refuses an id that prefixes a live one). Direct ARI = "+
		"`POST /ari/channels` from the bench's keep-alive client to app `%s`, a minimal Stasis app in the bench process (its own "+
		"websocket; each StasisStart is continued to `%s,s`, %d calls continued, %d continues failed), so Asterisk does the same work "+
		"per call on every path; the doors' calls enter the daemon's app and are continued there alike. K1: each path at %.0f calls/s open loop, "+
		"interleaved, for %s. K2: %d in flight on one path at a time, %d rounds of one %s slice per path after one warm-up "+
		"slice per path, Asterisk idle between slices; nothing of the bench's instruments runs then (wire timer paused, no stream "+
		"watcher), so they take no CPU from what they measure. K5: the daemon's ARI connections are timed where they meet the "+
		"socket (a wrapping dialer): K5a/K5b include one loopback hop to and from the bench client. K5d/K5e come from one "+
		"more saturation slice per door with the stream watched live: the publish ack of an `ended` event lies between "+
		"K5e (a core NATS subscriber sees the publish as the server receives it) and K5d (the bench's JetStream consumer "+
		"receives the stored event). K3 reads every `ended` from the stream after the run.",
		kitEndpoint, kitDirectApp, kitContext, k.stasis.started.Load(), k.stasis.failures.Load(), k.plan.rate, k.plan.rateFor, k.plan.satWorkers, k.plan.satRounds, k.plan.satSlice))
	if e, ok := k.stasis.firstErr.Load().(string); ok {
		b.notes = append(b.notes, fmt.Sprintf("K direct baseline: first failed continue: %.200s", e))
	}
}

// ratio is path i's saturation rate ÷ direct ARI's (path 0): the ratio of each round's
// slices (run back to back), then their median, since the kit's own pace drifts
// between rounds by more than the difference measured.
func (s kitSat) ratio(i int) (float64, []float64) {
	var ratios []float64
	for j, d := range s.rates[0] {
		if j < len(s.rates[i]) {
			ratios = append(ratios, ratioF(s.rates[i][j], d))
		}
	}
	return median(ratios), ratios
}

// describe is the measured text of a saturation row of path i.
func (s kitSat) describe(i int, r float64, ratios []float64) string {
	return fmt.Sprintf("%.2f (rounds %s; all slices %.0f/s vs %.0f/s; p99 %s vs %s)", r, fmtRatios(ratios), s.res[i].rate(), s.res[0].rate(),
		fmtDur(percentile(s.res[i].lat, 99)), fmtDur(percentile(s.res[0].lat, 99)))
}

// kitCPU is CPU time used while one path ran at saturation, until Asterisk was idle again.
type kitCPU struct {
	asterisk, self time.Duration
	calls          int
	unreadable     bool // some reading failed: the sums are not the whole
}

// kitCPUSample is a reading of both processes' CPU time.
type kitCPUSample struct {
	asterisk, self time.Duration
	ok             bool
}

func (c *kitCPU) add(from, to kitCPUSample, calls int) {
	c.asterisk += to.asterisk - from.asterisk
	c.self += to.self - from.self
	c.calls += calls
	c.unreadable = c.unreadable || !from.ok || !to.ok
}

// String is a CPU row's text: Asterisk's and this process's CPU per call.
func (c kitCPU) String() string {
	return fmt.Sprintf("%s / %s (%d calls)", c.perCall(c.asterisk), c.perCall(c.self), c.calls)
}

// fmtTail is a K5d-style row's text: p99, then p50 and the count.
func fmtTail(ds []time.Duration) string {
	return fmt.Sprintf("%s (p50 %s; %d calls)", fmtDur(percentile(ds, 99)), fmtDur(percentile(ds, 50)), len(ds))
}

// perCall formats CPU per call.
func (c kitCPU) perCall(d time.Duration) string {
	if c.unreadable || c.calls == 0 {
		return "unknown"
	}
	return fmtDur(d / time.Duration(c.calls))
}

// cpuNow reads Asterisk's and this process's CPU time.
func (k *kitRun) cpuNow() kitCPUSample {
	self, ok1 := processCPU()
	ast, ok2 := pidCPU(k.astPID)
	return kitCPUSample{asterisk: ast, self: self, ok: ok1 && ok2}
}

// median is the middle of xs (the mean of the two middle ones for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ratioF(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
