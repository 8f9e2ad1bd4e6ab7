package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// faultsFull selects the big run of `make faults` (many calls per fault); the default is
// the short form run by `make test`.
var faultsFull = flag.Bool("faults.full", false, "fault suite: run the full load (200 calls per fault)")

// faultsLogDir keeps each fault's daemon logs and config there instead of a temp dir.
var faultsLogDir = flag.String("faults.logdir", "", "fault suite: keep daemon logs in this directory")

// refuseWithin is how fast a refused originate (no ARI link, draining) must be answered.
const refuseWithin = 2 * time.Second

// fault is one injected failure and what it may truthfully do to an outcome.
type fault struct {
	name  string
	drain time.Duration // the daemon's drain_timeout
	// inject runs on the test goroutine while the load is being placed; n is the number
	// of calls in the load.
	inject func(t *testing.T, e *faultEnv, n int)
	// unknownOK: the fault can truly destroy evidence, so `unknown` with a reason is a
	// truthful outcome (counted apart). Elsewhere `unknown` is a wrong outcome.
	unknownOK bool
	// also reports whether outcome o of an unanswered call of kind k is truthful under
	// this fault besides k.want (nil: only k.want).
	also func(k callKind, ended events.Event) bool
}

// faultRow is one line of the table.
type faultRow struct {
	fault                          string
	calls, refused, ended, lost    int
	duplicated, dialledTwice, seqs int
	wrong, unknown                 int
	elapsed                        time.Duration
	problems                       []string
	unknownReasons                 map[string]int
	outcomes                       map[events.Outcome]int
}

func faultList() []fault {
	return []fault{
		{name: "ari-ws-drop-mid-ring", drain: 15 * time.Second, unknownOK: true,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.Ringing, max(1, n/4), 20*time.Second)
				e.sim.DropWebsockets()
			}},
		{name: "ari-ws-drop-mid-call", drain: 15 * time.Second, unknownOK: true,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.KindAnswered, max(1, n/10), 20*time.Second)
				e.sim.DropWebsockets()
			}},
		{name: "asterisk-restart", drain: 15 * time.Second, unknownOK: true,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.KindAnswered, max(1, n/10), 20*time.Second)
				e.sim.Restart(t.Context())
			},
			// `core restart now` cuts a ringing call: cause 0 with soft flag 4 says failed.
			also: func(_ callKind, ev events.Event) bool { return ev.Outcome == events.Failed }},
		{name: "nats-restart", drain: 15 * time.Second,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.Ringing, max(1, n/4), 20*time.Second)
				e.nats.Restart(t)
			}},
		{name: "sigterm-drain", drain: 20 * time.Second,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.Ringing, max(1, n/3), 20*time.Second)
				e.signal(syscall.SIGTERM)
				if code := e.waitExit(60 * time.Second); code != 0 {
					t.Errorf("daemon exit code %d after SIGTERM, want 0\n%s", code, e.current().tail())
				}
			}},
		{name: "sigterm-short-drain", drain: 500 * time.Millisecond,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.Ringing, max(1, n/3), 20*time.Second)
				e.signal(syscall.SIGTERM)
				if code := e.waitExit(60 * time.Second); code != 0 {
					t.Errorf("daemon exit code %d after SIGTERM, want 0\n%s", code, e.current().tail())
				}
			},
			// Ringing at the drain deadline: hung up, canceled with reason shutdown.
			also: func(_ callKind, ev events.Event) bool {
				return ev.Outcome == events.Canceled && strings.Contains(ev.Reason, "shutdown")
			}},
		{name: "sigkill-restart", drain: 15 * time.Second, unknownOK: true,
			inject: func(t *testing.T, e *faultEnv, n int) {
				e.watch.waitCount(t, events.Ringing, max(1, n/4), 20*time.Second)
				e.current().kill()
				e.startDaemon()
			}},
	}
}

// TestFaults runs a load of calls with known outcomes while it injects each fault of
// issue 5 and checks, from the JetStream stream and the simulator's request log, that
// every accepted originate ended exactly once, truthfully, and was dialled once.
func TestFaults(t *testing.T) {
	n, spread := 20, 1500*time.Millisecond
	if *faultsFull {
		n, spread = 200, 4*time.Second
	}
	faults := faultList()
	rows := make([]*faultRow, len(faults))
	t.Run("fault", func(t *testing.T) {
		for i, f := range faults {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				rows[i] = runFault(t, f, n, spread)
			})
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-22s | %5s | %7s | %5s | %4s | %10s | %13s | %10s | %5s | %7s | %s\n", "fault", "calls", "refused",
		"ended", "lost", "duplicated", "dialled twice", "seq errors", "wrong", "unknown", "time")
	for _, r := range rows {
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "%-22s | %5d | %7d | %5d | %4d | %10d | %13d | %10d | %5d | %7d | %s\n", r.fault, r.calls, r.refused,
			r.ended, r.lost, r.duplicated, r.dialledTwice, r.seqs, r.wrong, r.unknown, r.elapsed.Round(100*time.Millisecond))
	}
	for _, r := range rows {
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "  %s: outcomes %s\n", r.fault, outcomeList(r.outcomes))
		for reason, c := range r.unknownReasons {
			fmt.Fprintf(&b, "  %s: unknown ×%d: %s\n", r.fault, c, reason)
		}
	}
	t.Log(b.String())
}

// runFault runs one fault in a fresh world and returns its table row; it fails t when
// lost, duplicated, dialled twice, seq errors or wrong are not zero.
func runFault(t *testing.T, f fault, n int, spread time.Duration) *faultRow {
	began := time.Now()
	e := newFaultEnv(t, f.name, f.drain)
	calls := planCalls(f.name, n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.place(calls, spread)
	}()
	f.inject(t, e, n)
	wg.Wait()

	if f.name == "sigkill-restart" {
		// Idempotency keys survive the restart: repeating an accepted call never dials again.
		for _, c := range calls {
			if c.status != http.StatusOK {
				continue
			}
			if st, body := e.originate(c); st != http.StatusOK {
				t.Errorf("repeat of %s after restart: HTTP %d %s", c.id, st, body)
			}
		}
	}

	// Which calls must end: every accepted one, and every one Asterisk was asked to dial.
	sl := e.simLog()
	dials := sl.dials
	mustEnd := map[string]bool{}
	for _, c := range calls {
		if c.status == http.StatusOK || dials[c.id] > 0 {
			mustEnd[c.id] = true
		}
	}
	log := e.openStream()
	log.readUntil(t, func() bool {
		for id := range mustEnd {
			if log.endedCount(id) == 0 {
				return false
			}
		}
		return true
	}, 300*time.Millisecond, 60*time.Second)
	// Stop the daemon (it has nothing in flight now) and look for anything it adds.
	e.stopDaemon()
	log.readUntil(t, func() bool { return true }, 500*time.Millisecond, 5*time.Second)
	if r := e.raced(); r != "" {
		t.Errorf("daemon process reported a data race:\n%s", r)
	}

	row := judge(f, calls, sl, log)
	if *faultsLogDir != "" {
		e.writeDetails(calls, log)
	}
	row.elapsed = time.Since(began)
	for _, p := range row.problems {
		t.Error(p)
	}
	if len(row.problems) > 0 {
		t.Logf("daemon log tail:\n%s", e.current().tail())
	}
	return row
}

// judge checks every call of the load against the stream and the dial log.
func judge(f fault, calls []*callPlan, sl simLog, log *streamLog) *faultRow {
	dials := sl.dials
	r := &faultRow{fault: f.name, unknownReasons: map[string]int{}, outcomes: map[events.Outcome]int{}}
	bad := func(col *int, format string, args ...any) {
		*col++
		r.problems = append(r.problems, fmt.Sprintf(f.name+": "+format, args...))
	}
	for _, c := range calls {
		evs := log.byID[c.id]
		dialled := dials[c.id]
		accepted := c.status == http.StatusOK
		if !accepted && dialled == 0 && (c.status != 0 || len(evs) == 0) {
			r.refused++
			if len(evs) > 0 {
				bad(&r.wrong, "%s was never dialled (HTTP %d %q) but has %d events", c.id, c.status, c.errText, len(evs))
			}
			if c.status != 0 && c.status != http.StatusServiceUnavailable && c.status != http.StatusTooManyRequests {
				bad(&r.wrong, "%s refused with HTTP %d, want 503 or 429: %s", c.id, c.status, c.errText)
			}
			if c.status != 0 && c.took > refuseWithin {
				bad(&r.wrong, "%s refused after %s, want at once (< %s)", c.id, c.took, refuseWithin)
			}
			continue
		}
		if !accepted && c.status != 0 {
			bad(&r.wrong, "%s was dialled but the reply was HTTP %d: %s", c.id, c.status, c.errText)
		}
		r.calls++
		if dialled > 1 {
			bad(&r.dialledTwice, "%s: %d POST /channels", c.id, dialled)
		}
		if n := sl.continues[c.id]; n > 1 {
			bad(&r.duplicated, "%s: sent to the dialplan %d times (continue)", c.id, n)
		}
		// A request cut by the daemon's death may have been recorded but not dialled: the
		// restarted daemon cannot tell it from a call that ended unseen, so only
		// `unknown` is truthful for it.
		undialled := dialled == 0
		if undialled && accepted {
			bad(&r.wrong, "%s accepted (HTTP 200) but never dialled", c.id)
		}
		var ended []events.Event
		seqOK := true
		for i, ev := range evs {
			if seqOK && ev.Seq != uint64(i+1) {
				bad(&r.seqs, "%s: event %d (%s) has seq %d, want %d", c.id, i+1, ev.Event, ev.Seq, i+1)
				seqOK = false
			}
			if ev.Event == events.Ended {
				ended = append(ended, ev)
			}
		}
		r.ended += len(ended)
		switch {
		case len(ended) == 0:
			bad(&r.lost, "%s (%s): no ended event; events %v", c.id, c.kind.name, kinds(evs))
			continue
		case len(ended) > 1:
			bad(&r.duplicated, "%s: %d ended events", c.id, len(ended))
		}
		if last := evs[len(evs)-1]; last.Event != events.Ended {
			bad(&r.seqs, "%s: %s after ended", c.id, last.Event)
		}
		ev := ended[0]
		r.outcomes[ev.Outcome]++
		why := untrue(f, c.kind, ev)
		if undialled && ev.Outcome != events.Unknown {
			why = "never dialled, so only unknown is truthful"
		}
		if why != "" {
			if ev.Outcome == events.Unknown && f.unknownOK && ev.Reason != "" {
				r.unknown++
				r.unknownReasons[ev.Reason]++
				continue
			}
			bad(&r.wrong, "%s (%s): outcome %q reason %q: %s", c.id, c.kind.name, ev.Outcome, ev.Reason, why)
		}
	}
	return r
}

// untrue says why the ended event ev is not a truthful outcome for a call of kind k under
// fault f ("" when it is).
func untrue(f fault, k callKind, ev events.Event) string {
	if ev.Call == nil || ev.Call.Outcome != ev.Outcome {
		return "ended event without a matching call record"
	}
	answered := ev.Call.AnsweredAt != nil
	switch {
	case ev.Outcome == events.Unknown:
		return "tracking lost"
	case ev.Outcome == events.Completed && !answered:
		return "completed without answered_at"
	case answered && ev.Outcome != events.Completed:
		return "answered, so it must end completed"
	case ev.Outcome == k.want:
		return ""
	case !answered && f.also != nil && f.also(k, ev):
		return ""
	}
	return "want " + string(k.want)
}

func kinds(evs []events.Event) []events.Kind {
	out := make([]events.Kind, len(evs))
	for i, ev := range evs {
		out[i] = ev.Event
	}
	return out
}

// writeDetails writes, for a kept log dir, every call that did not end as its kind
// wants: its reply, the simulator requests about it and its events.
func (e *faultEnv) writeDetails(calls []*callPlan, log *streamLog) {
	var b strings.Builder
	reqs := e.sim.Requests()
	for _, c := range calls {
		evs := log.byID[c.id]
		if len(evs) > 0 && evs[len(evs)-1].Outcome == c.kind.want {
			continue
		}
		fmt.Fprintf(&b, "== %s kind=%s http=%d %s\n", c.id, c.kind.name, c.status, c.errText)
		for _, r := range reqs {
			if strings.Contains(r.Path, c.id) || strings.Contains(r.Query, c.id) {
				fmt.Fprintf(&b, "   sim %s %s -> %d\n", r.Method, r.Path, r.Status)
			}
		}
		for _, ev := range evs {
			fmt.Fprintf(&b, "   ev %d %s %s state=%s outcome=%s reason=%q\n", ev.Seq, ev.Time.Format("15:04:05.000"),
				ev.Event, ev.State, ev.Outcome, ev.Reason)
		}
	}
	_ = os.WriteFile(filepath.Join(e.dir, "calls.txt"), []byte(b.String()), 0o600)
}

// outcomeList prints counts by outcome in a stable order.
func outcomeList(m map[events.Outcome]int) string {
	order := []events.Outcome{events.Completed, events.Busy, events.Rejected, events.NoAnswer, events.Canceled,
		events.Failed, events.Unknown}
	var parts []string
	for _, o := range order {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", o, m[o]))
		}
	}
	for o, n := range m {
		if !slices.Contains(order, o) {
			parts = append(parts, fmt.Sprintf("%s=%d", o, n))
		}
	}
	return strings.Join(parts, " ")
}
