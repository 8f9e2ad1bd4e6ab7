package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
)

// Targets of issue 7.
const (
	targetOverheadRatio = 2.2     // p50 via invokeari ÷ p50 direct, 1 in flight
	targetThroughput    = 0.5     // originates/s via a door ÷ the direct floor, 16 in flight
	targetEventsPerSec  = 100_000 // ARI events/s on one core
	targetEventP99      = time.Millisecond
	targetBytesPerCall  = 4096
	benchBudget         = 10 * time.Minute
)

// benchPlan sizes a run; quickPlan is for smoke tests of the bench itself.
type benchPlan struct {
	overheadRounds, overheadPerRound int
	throughputFor, outcomeFor        time.Duration
	memCounts                        []int
	pipeCalls                        int
	pipePaceFor                      time.Duration
	kit                              kitPlan
}

var (
	fullPlan  = benchPlan{10, 200, 3 * time.Second, 3 * time.Second, []int{10_000, 100_000}, 20_000, 2 * time.Second, fullKitPlan}
	quickPlan = benchPlan{2, 50, 300 * time.Millisecond, 500 * time.Millisecond, []int{500, 2000}, 1000, 300 * time.Millisecond, quickKitPlan}
)

const benchWorkers = 16 // in flight for throughput and time-to-outcome

// runBench runs the published benchmark (issue 7): the simulator in its own process, the
// daemon in this one, a Markdown table of target/measured/pass-fail on out and in -out.
// It is bounded (5 minutes) and talks to 127.0.0.1 only.
func runBench(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(out)
	outPath := fs.String("out", "", "also write the report (Markdown) to this file, e.g. BENCHMARKS.md")
	recordings := fs.String("recordings", "testdata/ari/recordings", "ARI recordings (frames for the event pipeline)")
	quick := fs.Bool("quick", false, "tiny run that checks the bench works (numbers mean nothing)")
	profiles := fs.String("profiles", "", "write CPU profiles of each phase and heap profiles to this directory")
	only := fs.String("only", "", "run only these phases (comma-separated: overhead,throughput,outcome,memory,pipeline,callbacks)")
	exe := fs.String("sim-exe", "", "invokeari binary that runs the simulator (default: this executable)")
	simChild := fs.Bool("sim-child", false, "internal: be the simulator process of a bench run")
	simUser := fs.String("sim-user", "bench", "internal: simulator ARI user")
	simPass := fs.String("sim-pass", "", "internal: simulator ARI password")
	kit := fs.String("kit", "../shared/asterisk/pbx", "control script of the real Asterisk kit for the kit phase, with its options (skipped, loudly, when absent)")
	kitBase := fs.Int("kit-base", 18088, "base port of the kit instance the kit phase starts (pbx start --base)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *simChild {
		return runSimChild(ctx, *simUser, *simPass, os.Stdin, out)
	}
	plan := fullPlan
	if *quick {
		plan = quickPlan
	}
	if *exe == "" {
		p, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find own executable for the simulator process: %w", err)
		}
		*exe = p
	}
	if *profiles != "" {
		if err := os.MkdirAll(*profiles, 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, benchBudget)
	defer cancel()
	began := time.Now()
	b := &bench{out: out, plan: plan, profiles: *profiles, recordings: *recordings, only: map[string]bool{}, kitCtl: *kit, kitBase: *kitBase,
		machine: currentMachine(began)}
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if !slices.Contains(benchPhases, p) {
				return fmt.Errorf("bench: unknown phase %q (phases: %s)", p, strings.Join(benchPhases, ","))
			}
			b.only[p] = true
		}
	}
	err := b.run(ctx, *exe)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var doc bytes.Buffer
	b.machine.LoadEnd = loadAvg()
	b.machine.KitLoadStart, b.machine.KitLoadEnd = b.kitLoadStart, b.kitLoadEnd
	writeReport(&doc, b.machine, b.rows, b.notes, time.Since(began))
	fmt.Fprintf(out, "\n%s", doc.Bytes())
	if *outPath != "" {
		if err := os.WriteFile(*outPath, doc.Bytes(), 0o644); err != nil {
			return fmt.Errorf("bench: write %s: %w", *outPath, err)
		}
		fmt.Fprintf(out, "\nwritten to %s\n", *outPath)
	}
	return nil
}

// bench is one run: its plan and what it measured so far.
type bench struct {
	out        io.Writer
	plan       benchPlan
	profiles   string
	recordings string
	only       map[string]bool // empty: every phase
	machine    machineInfo
	rows       []benchRow
	notes      []string
	kitCtl     string // the kit's pbx script and its options
	kitBase    int
	// load average at the start and end of the kit phase
	kitLoadStart, kitLoadEnd string
}

// benchPhases are the phases in the order they run.
var benchPhases = []string{"pipeline", "overhead", "throughput", "outcome", "memory", "callbacks", "kit"}

func (b *bench) wants(phase string) bool { return len(b.only) == 0 || b.only[phase] }

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.out, "bench: "+format+"\n", args...)
}

func (b *bench) row(r benchRow) {
	b.rows = append(b.rows, r)
	b.progress("%s %s: %s (target %s) %s", r.ID, r.What, r.Measured, r.Target, r.Verdict)
}

func (b *bench) run(ctx context.Context, exe string) (err error) {
	dir, err := os.MkdirTemp("", "invokeari-bench-")
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "bench.log")
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (daemon and simulator logs kept in %s)", err, logPath)
			return
		}
		_ = os.RemoveAll(dir)
	}()
	logs, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logs.Close()

	// The in-process pipeline goes first, while this process holds nothing else.
	if b.wants("pipeline") {
		if err := b.phase("pipeline", func() error { return b.pipeline(ctx, dir) }); err != nil {
			return err
		}
	}
	if b.wants("overhead") || b.wants("throughput") || b.wants("outcome") || b.wants("memory") || b.wants("callbacks") {
		if err := b.daemonPhases(ctx, exe, dir, logs); err != nil {
			return err
		}
	}
	if b.wants("kit") {
		// Not under one profile: the section profiles its parts (kitRun.profile).
		return b.kitSection(ctx, strings.Fields(b.kitCtl), b.kitBase, dir, logs)
	}
	return nil
}

// daemonPhases runs the phases that need the simulator process and the daemon.
func (b *bench) daemonPhases(ctx context.Context, exe, dir string, logs io.Writer) (err error) {
	b.progress("starting the simulator process and the daemon (logs: %s)", filepath.Join(dir, "bench.log"))
	e, err := startBenchEnv(ctx, exe, dir, logs)
	if err != nil {
		return err
	}
	defer func() {
		if serr := e.stop(); serr != nil && err == nil {
			err = fmt.Errorf("daemon stop: %w", serr)
		}
	}()
	hc := newBenchHTTPClient()
	defer hc.CloseIdleConnections()
	direct := &directARI{hc: hc, base: e.sim.url, user: e.simUser, pass: e.simPass, app: "bench-direct"}
	door := &daemonHTTP{hc: hc, url: e.httpURL, key: e.apiKey}
	nc, err := nats.Connect(e.natsURL, nats.Name("invokeari-bench"))
	if err != nil {
		return fmt.Errorf("connect NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	natsDoor := &daemonNATS{nc: nc, key: e.apiKey}
	steps := []struct {
		name string
		f    func() error
	}{
		{"overhead", func() error { return b.overhead(ctx, direct, door, js) }},
		{"throughput", func() error { return b.throughput(ctx, e, direct, door, natsDoor) }},
		{"outcome", func() error { return b.timeToOutcome(ctx, e, door) }},
		{"memory", func() error { return b.memory(ctx, e, direct, door, js) }},
		{"callbacks", func() error { return b.callbacks(ctx, e, door, nc, js) }},
	}
	for _, st := range steps {
		if !b.wants(st.name) {
			continue
		}
		if err := b.phase(st.name, st.f); err != nil {
			return err
		}
	}
	return nil
}

// phase runs f, under a CPU profile when profiles are asked for.
func (b *bench) phase(name string, f func() error) error {
	if b.profiles == "" {
		return f()
	}
	pf, err := os.Create(filepath.Join(b.profiles, "cpu-"+name+".pprof"))
	if err != nil {
		return err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return f()
}

// overhead: 1 in flight, direct and through the daemon in alternating rounds so drift
// on a noisy machine hits both alike.
func (b *bench) overhead(ctx context.Context, direct *directARI, door *daemonHTTP, js jetstream.JetStream) error {
	b.progress("1: overhead, 1 in flight, %d×%d originates each way", b.plan.overheadRounds, b.plan.overheadPerRound)
	viaDirect := direct.originate(benchBusy, "ovd-")
	viaDoor := door.originate(benchBusy, "accepted", 30, "")
	n := int64(b.plan.overheadPerRound)
	// Warm-up: connections, caches.
	for _, f := range []originateFunc{viaDirect, viaDoor} {
		if r := runLoad(ctx, 1, n, 0, f); r.errs > 0 {
			return fmt.Errorf("overhead warm-up: %d errors, first: %w", r.errs, r.firstErr)
		}
	}
	var dl, il []time.Duration
	seq := int64(0)
	sum0, n0, metricsErr := door.ariOriginateTime(ctx)
	for range b.plan.overheadRounds {
		off := seq
		d := runLoad(ctx, 1, n, 0, func(ctx context.Context, s int64) error { return viaDirect(ctx, off+s+n) })
		i := runLoad(ctx, 1, n, 0, viaDoor)
		seq += n
		if d.errs+i.errs > 0 {
			return fmt.Errorf("overhead: %d direct and %d daemon errors; first: %v %v", d.errs, i.errs, d.firstErr, i.firstErr)
		}
		dl, il = append(dl, d.lat...), append(il, i.lat...)
	}
	sum1, n1, err := door.ariOriginateTime(ctx)
	if metricsErr == nil {
		metricsErr = err
	}
	d50, d99, i50, i99 := percentile(dl, 50), percentile(dl, 99), percentile(il, 50), percentile(il, 99)
	r50, r99 := ratio(i50, d50), ratio(i99, d99)
	b.row(benchRow{ID: "1a", What: "overhead p50, wait=accepted, 1 in flight: via invokeari ÷ direct to ARI",
		Target:   fmt.Sprintf("≤ %.1f×", targetOverheadRatio),
		Measured: fmt.Sprintf("%.2f× (%s vs %s)", r50, fmtDur(i50), fmtDur(d50)), Verdict: check(r50, targetOverheadRatio, true)})
	b.row(benchRow{ID: "1b", What: "overhead p99, same run", Target: "reported",
		Measured: fmt.Sprintf("%.2f× (%s vs %s)", r99, fmtDur(i99), fmtDur(d99)), Verdict: verdictInfo})
	if err := b.storeDiag(ctx, js, int(n)*b.plan.overheadRounds/2, i50-d50); err != nil {
		return err
	}
	if metricsErr == nil && n1 > n0 {
		mean := time.Duration((sum1 - sum0) / float64(n1-n0) * float64(time.Second))
		b.row(benchRow{ID: "1d", What: "of which: the daemon's own ARI POST /channels round trip (its metrics), mean",
			Target: "reported", Measured: fmt.Sprintf("%s, vs %s mean for the same POST from the bench client",
				fmtDur(mean), fmtDur(mean0(dl))), Verdict: verdictInfo})
	}
	b.notes = append(b.notes, fmt.Sprintf("**1 overhead**: one client, one request at a time, keep-alive HTTP. Direct = `POST /ari/channels` "+
		"on the simulator (app originate to an app nobody serves, own channel ids); via invokeari = `POST /v2/invokeARI` "+
		"form body, `wait=accepted`, which validates, registers the call, does the same `POST /channels` and replies. "+
		"Endpoint %s (486 at once, so calls end within milliseconds and their events flow while the next request runs). "+
		"%d rounds of %d requests, alternating direct/via so machine drift hits both; %d samples each.",
		"`"+benchBusy+"`", b.plan.overheadRounds, n, len(dl)))
	return nil
}

// storeDiag times, alone and 1 in flight, the in-flight record the App writes while each
// POST /channels is on its way (events.Registry.Save, a JetStream publish on the
// daemon's embedded NATS), to put its size next to the overhead.
func (b *bench) storeDiag(ctx context.Context, js jetstream.JetStream, n int, gap time.Duration) error {
	store, err := events.OpenRegistry(ctx, js, events.RegistryConfig{Owner: "benchdiag", MaxAge: callStoreTTL})
	if err != nil {
		return err
	}
	req := json.RawMessage(`{"destination":"` + benchBusy + `","context":"bench","extension":"s","timeout_sec":30}`)
	r := runLoad(ctx, 1, int64(n), 0, func(ctx context.Context, seq int64) error {
		return store.Save(ctx, events.StoredCall{Server: "benchdiag", App: "diag", ID: "diag" + strconv.FormatInt(seq, 10),
			Fingerprint: "x", Request: req, Registered: time.Now()})
	})
	if r.errs > 0 {
		return fmt.Errorf("call store diagnostic: %w", r.firstErr)
	}
	p50 := percentile(r.lat, 50)
	b.row(benchRow{ID: "1c", What: "for scale: the in-flight record's save (a JetStream publish to the call registry, timed alone), p50; the daemon writes it while its POST /channels is on the way, so it adds only what outlasts the POST",
		Target: "reported", Measured: fmt.Sprintf("%s = %.0f%% of the %s p50 gap", fmtDur(p50), 100*ratio(p50, gap), fmtDur(gap)),
		Verdict: verdictInfo})
	return nil
}

func mean0(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t / time.Duration(len(ds))
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// throughput: 16 in flight for a fixed time each: the floor (direct), the HTTP door, the NATS door.
func (b *bench) throughput(ctx context.Context, e *benchEnv, direct *directARI, door *daemonHTTP, nd *daemonNATS) error {
	d := b.plan.throughputFor
	b.progress("2: throughput, %d in flight, %s per door", benchWorkers, d)
	viaNATS, err := nd.originate(benchBusy, "accepted", 30)
	if err != nil {
		return err
	}
	settle := func() error {
		return waitFor(ctx, 60*time.Second, func() bool { return e.d.app.InFlight() == 0 })
	}
	// Rounds of short slices, direct/HTTP/NATS in turn, so machine drift hits all three.
	const rounds = 5
	slice := d / rounds
	var floor, viaHTTP, viaNats loadResult
	for r := range rounds {
		for _, x := range []struct {
			acc *loadResult
			f   originateFunc
		}{
			{&floor, direct.originate(benchBusy, fmt.Sprintf("tp%d-", r))},
			{&viaHTTP, door.originate(benchBusy, "accepted", 30, "")},
			{&viaNats, viaNATS},
		} {
			res := runLoad(ctx, benchWorkers, 0, slice, x.f)
			x.acc.add(res)
			if err := settle(); err != nil {
				return err
			}
		}
	}
	for _, r := range []struct {
		name string
		res  loadResult
	}{{"direct", floor}, {"HTTP", viaHTTP}, {"NATS", viaNats}} {
		if r.res.errs > 0 {
			return fmt.Errorf("throughput %s: %d errors, first: %w", r.name, r.res.errs, r.res.firstErr)
		}
	}
	f := floor.rate()
	for _, r := range []struct {
		id, door string
		res      loadResult
	}{{"2a", "HTTP", viaHTTP}, {"2b", "NATS request/reply", viaNats}} {
		q := r.res.rate() / f
		b.row(benchRow{ID: r.id, What: fmt.Sprintf("throughput via %s, %d in flight ÷ direct floor", r.door, benchWorkers),
			Target:   fmt.Sprintf("≥ %.1f", targetThroughput),
			Measured: fmt.Sprintf("%.2f (%.0f/s vs %.0f/s; p99 %s)", q, r.res.rate(), f, fmtDur(percentile(r.res.lat, 99))),
			Verdict:  check(q, targetThroughput, false)})
	}
	b.notes = append(b.notes, fmt.Sprintf("**2 throughput**: the same closed-loop generator (%d workers, %s each) against the simulator's "+
		"ARI directly (the single-hop floor), then through the HTTP door and the NATS door (`invokeari.originate` request/reply), "+
		"`wait=accepted`, endpoint `%s`. The daemon runs with `max_in_flight: 250000` and no key rate, so policy does not "+
		"limit it. All processes share this machine's %d CPUs: the simulator process, the daemon with its embedded NATS, and the generator.",
		benchWorkers, d, benchBusy, currentMachine(time.Now()).CPUs))
	b.notes[len(b.notes)-1] += " Each door ran in 5 slices interleaved with the others, the daemon idle between slices."
	return nil
}

// timeToOutcome: wait=answer on an endpoint that answers after benchRingTime.
func (b *bench) timeToOutcome(ctx context.Context, e *benchEnv, door *daemonHTTP) error {
	b.progress("5: time to outcome, %d in flight, %s", benchWorkers, b.plan.outcomeFor)
	r := runLoad(ctx, benchWorkers, 0, b.plan.outcomeFor, door.originate(benchAnswer, "answer", 30, ""))
	if r.errs > 0 {
		return fmt.Errorf("time to outcome: %d errors, first: %w", r.errs, r.firstErr)
	}
	extra := make([]time.Duration, len(r.lat))
	for i, l := range r.lat {
		extra[i] = l - benchRingTime
	}
	p50, p99 := percentile(extra, 50), percentile(extra, 99)
	b.row(benchRow{ID: "5", What: fmt.Sprintf("time to outcome, wait=answer: reply time − %s ring, p50 / p99", benchRingTime),
		Target: "reported", Measured: fmt.Sprintf("%s / %s (%d calls)", fmtDur(p50), fmtDur(p99), len(extra)), Verdict: verdictInfo})
	b.notes = append(b.notes, fmt.Sprintf("**5 time to outcome**: `wait=answer` on `%s`, which the simulator answers %s after the "+
		"originate (plus its 1 ms dial step); %d in flight for %s. The figure is the request's reply time minus %s: originate, "+
		"the simulator's events over the websocket, Call.Apply, the reply. The calls then continue into context `%s` and end a second later.",
		benchAnswer, benchRingTime, benchWorkers, b.plan.outcomeFor, benchRingTime, benchContext))
	return waitFor(ctx, 60*time.Second, func() bool { return e.d.app.InFlight() == 0 })
}

// memory: heap per tracked ringing call at each plan size.
func (b *bench) memory(ctx context.Context, e *benchEnv, direct *directARI, door *daemonHTTP, js jetstream.JetStream) error {
	b.progress("4: memory, ringing calls %v through the HTTP door", b.plan.memCounts)
	pts, err := benchMemory(ctx, e, direct, door, js, b.plan.memCounts, 4*benchWorkers, b.profiles)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	for i, p := range pts {
		lin := ""
		if i > 0 && pts[0].perCall > 0 {
			lin = fmt.Sprintf("; %.2f× the %d-call figure", p.perCall/pts[0].perCall, pts[0].calls)
		}
		v := check(p.perCall, targetBytesPerCall, true)
		if p.errs > 0 {
			v = verdictFail
		}
		b.row(benchRow{ID: fmt.Sprintf("4%c", 'a'+i), What: fmt.Sprintf("daemon heap per tracked ringing call at %d calls", p.calls),
			Target:   "≤ 4 KiB, linear",
			Measured: fmt.Sprintf("%.0f B (%.2f KiB%s; %d refused; %s to place)", p.perCall, p.perCall/1024, lin, p.errs, p.took.Round(100*time.Millisecond)),
			Verdict:  v})
	}
	b.notes = append(b.notes, fmt.Sprintf("**4 memory**: calls to `%s` (rings until its 600 s timeout) placed through the HTTP door, "+
		"`wait=accepted`, %d in flight, with caller-chosen ids. After each step the bench waits until the stream stops growing, "+
		"runs GC twice and reads `runtime.MemStats.HeapAlloc` in the daemon's process; the figure is (heap − idle heap before "+
		"the first call) ÷ calls tracked. The daemon's process includes its embedded nats-server, so the stream's per-message "+
		"state (its `Nats-Msg-Id` de-duplication window, block cache) is counted too. The calls are then hung up on the simulator.",
		benchRing, 4*benchWorkers))
	return nil
}

// pipeline: the event path on one core.
func (b *bench) pipeline(ctx context.Context, dir string) error {
	b.progress("3: event pipeline, GOMAXPROCS=1, %d calls of recorded frames", b.plan.pipeCalls)
	r, err := benchPipeline(ctx, dir, b.recordings, b.plan.pipeCalls, b.plan.pipePaceFor, targetEventsPerSec)
	if err != nil {
		return fmt.Errorf("event pipeline: %w", err)
	}
	if r.wanted != r.streamMsgs {
		r.dropped += max(0, r.wanted-r.streamMsgs)
	}
	rate := r.perCore()
	v := check(rate, targetEventsPerSec, false)
	if r.dropped > 0 || r.decodeErrs > 0 {
		v = verdictFail
	}
	b.row(benchRow{ID: "3a", What: "event pipeline, 1 core: ARI frames/s, frame → decode → Call.Apply → JetStream ack",
		Target: "≥ 100k/s, 0 dropped",
		Measured: fmt.Sprintf("%.0f/s per CPU-second, %d dropped (%d frames → %d events; wall: %.0f/s, frames handled in %s, last ack at %s)",
			rate, r.dropped, r.frames, r.publishCalls, r.rate(), r.fed.Round(time.Millisecond), r.elapsed.Round(time.Millisecond)), Verdict: v})
	if r.decodeOnly > 0 {
		b.row(benchRow{ID: "3c", What: "of which: ari.DecodeEvent alone on the same frames, 1 core",
			Target: "reported", Measured: fmt.Sprintf("%.0f frames/s = %.0f%% of the pipeline's CPU", r.decodeOnly, 100*rate/r.decodeOnly),
			Verdict: verdictInfo})
	}
	p99 := percentile(r.lat, 99)
	b.row(benchRow{ID: "3b", What: "event pipeline p99 latency, frame received → event acked by JetStream",
		Target: "≤ 1 ms", Measured: fmt.Sprintf("%s (p50 %s; %d events at %.0f frames/s)", fmtDur(p99), fmtDur(percentile(r.lat, 50)),
			len(r.lat), r.paceRate), Verdict: check(float64(p99), float64(targetEventP99), true)})
	b.row(benchRow{ID: "3d", What: fmt.Sprintf("same latency at a light load (%d frames/s)", pipeLightRate),
		Target: "reported", Measured: fmt.Sprintf("p99 %s (p50 %s, p99.9 %s; %d events)", fmtDur(percentile(r.latLight, 99)),
			fmtDur(percentile(r.latLight, 50)), fmtDur(percentile(r.latLight, 99.9)), len(r.latLight)), Verdict: verdictInfo})
	if r.notEnded > 0 {
		return fmt.Errorf("event pipeline: %d calls did not end after their recorded frames", r.notEnded)
	}
	b.notes = append(b.notes, fmt.Sprintf("**3 event pipeline**: in this process with `GOMAXPROCS(1)` (the per-core figure; the embedded "+
		"nats-server runs on that same core). The websocket frames of the %d app-originate recordings `s2_stasis_*.nosuball.jsonl` "+
		"(what our app sees), with the channel id rewritten per call, %d calls interleaved at a time, are passed as bytes to "+
		"`ari.DecodeEvent` and to the App's event handler (dispatch by channel id, `Call.Apply`, waiter wake-up, `events.Publisher`) "+
		"and on to JetStream (file storage) on an embedded nats-server; websocket framing is the one step left out. "+
		"3a: %d calls as fast as they go, timed until the last event is acked. 3b: paced at %.0f frames/s (70%% of 3a, at most the "+
		"100k target), fed each millisecond as a websocket reader would, latency from the frame's arrival to the JetStream ack of each event it caused; "+
		"3d: the same at a light %d frames/s. 3c: `ari.DecodeEvent` alone over the same frames, for its share. "+
		"Dropped = events handed to the publisher minus events acked (%d in the stream, %d handed over).",
		len(mustScenarios(b.recordings)), pipeGroup, r.calls, r.paceRate, pipeLightRate, r.streamMsgs, r.wanted))
	return nil
}

func mustScenarios(dir string) []pipeScenario {
	s, _ := loadPipeScenarios(dir)
	return s
}
