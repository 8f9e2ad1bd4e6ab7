package itest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// faultCall is a call that is ringing or talking when the fault strikes.
type faultCall struct {
	kind string // ringing | talking
	call call
}

// faultLoad: per door, calls that ring for t=12 s (Local and SIPp) and calls that talk
// (answered after 1 s, then held by our dialplan's `sink` for 5 s).
func faultLoad(prefix string, n int) []*faultCall {
	var out []*faultCall
	for _, door := range []string{"http", "nats"} {
		for i := range n {
			id := fmt.Sprintf("%s-%s-%d", prefix, door, i)
			out = append(out,
				&faultCall{"ringing", call{ID: id + "-ringL", D: "Local/ring@sim", C: "sink", E: "s", T: "12", Wait: "accepted", Door: door}},
				&faultCall{"ringing", call{ID: id + "-ringS", D: "PJSIP/sipp-noanswer", C: "sink", E: "s", T: "12", Wait: "accepted", Door: door}},
				&faultCall{"talking", call{ID: id + "-talkL", D: "Local/answerlong@sim", C: "sink", E: "s", T: "12", Wait: "accepted", Door: door}},
				&faultCall{"talking", call{ID: id + "-talkS", D: "PJSIP/sipp-answerwait", C: "sink", E: "s", T: "12", Wait: "accepted", Door: door}},
			)
		}
	}
	return out
}

// placeFaultLoad originates the load (wait=accepted) and waits until every ringing call
// has its `ringing` event and every talking call its `answered` event on the stream.
func placeFaultLoad(t *testing.T, d *daemon, st *stream, load []*faultCall) {
	t.Helper()
	var ps []*placed
	for _, f := range load {
		ps = append(ps, &placed{call: f.call})
	}
	placeAll(d, ps, 30*time.Second)
	for _, p := range ps {
		if p.r.Err != nil || p.r.Status != 200 || p.r.Env.Status != "success" {
			t.Fatalf("%s [%s] not accepted: %d %v %s", p.call.ID, p.call.Door, p.r.Status, p.r.Err, p.r.Raw)
		}
	}
	reached := func(f *faultCall) bool {
		k := events.Ringing
		if f.kind == "talking" {
			k = events.KindAnswered
		}
		for _, ev := range st.byID[f.call.ID] {
			if ev.Event == k {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		all := true
		for _, f := range load {
			all = all && reached(f)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls not ringing/talking within 20s")
		}
		st.readSome(t, 200*time.Millisecond)
	}
}

// judgeFaults reads every call's end and checks it: exactly one ended, seq gapless, and
// the true outcome where the channel outlived the fault (want[kind]); where it did not,
// any outcome consistent with what happened (never answered for ringing, answered for
// talking), and `unknown` only with a reason.
func judgeFaults(t *testing.T, name string, st *stream, load []*faultCall, want map[string][]string) {
	t.Helper()
	var ids []string
	for _, f := range load {
		ids = append(ids, f.call.ID)
	}
	st.readUntil(t, ids, 2*time.Second, 90*time.Second)
	for _, f := range load {
		ev := st.ended(f.call.ID)
		g := "no ended event"
		ok := false
		if ev != nil {
			g = string(ev.Outcome)
			if ev.Outcome != events.Completed && ev.Outcome != events.NoAnswer {
				g += " (" + ev.Reason + ")"
			}
			for _, w := range want[f.kind] {
				ok = ok || w == string(ev.Outcome)
			}
		}
		label := fmt.Sprintf("%s: %s %s", name, f.kind, strings.TrimPrefix(f.call.D, "Local/"))
		checkOK(t, label, f.call.Door, strings.Join(want[f.kind], "|"), g, ok)
		check(t, label+" stream", f.call.Door, sound, st.integrity(f.call.ID))
	}
}

// readSome reads stream events for up to wait.
func (s *stream) readSome(t *testing.T, wait time.Duration) {
	t.Helper()
	s.readUntil(t, nil, wait, wait)
}

// TestFaultCoreRestart: `core restart now` while calls ring and talk. Asterisk hangs up
// every channel (cause 4, soft) and the websocket drops: no channel outlives the outage,
// so a ringing call's truth is "not answered" and a talking call's "answered, then
// ended". Afterwards a new call is placed and decided as usual.
func TestFaultCoreRestart(t *testing.T) {
	d := startDaemon(t, "itest-restart")
	st := d.openStream()
	load := faultLoad("rst", 2)
	placeFaultLoad(t, d, st, load)
	out := pbx(t, "rx", "core restart now")
	t.Logf("core restart now: %s", strings.TrimSpace(out))
	waitARI(t, 30*time.Second)
	judgeFaults(t, "core restart", st, load, map[string][]string{
		"ringing": {"canceled", "failed", "no_answer", "unknown"},
		"talking": {"completed"},
	})
	afterRestart(t, d, st, "after core restart")
}

// afterRestart places one busy call per door once the daemon is ready again.
func afterRestart(t *testing.T, d *daemon, st *stream, name string) {
	t.Helper()
	waitFor(t, "daemon ready again", 30*time.Second, func() bool {
		resp, err := d.client.Get(d.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	var ps []*placed
	for _, door := range []string{"http", "nats"} {
		ps = append(ps, &placed{name: name + ": sipp-busy", want: kitCases[2].want,
			call: call{ID: strings.ReplaceAll(name, " ", "-") + "-" + door, D: "PJSIP/sipp-busy", C: "confirmcode", E: "s", Wait: "end", Door: door}})
	}
	placeAll(d, ps, 30*time.Second)
	for _, p := range ps {
		checkReply(t, p)
	}
}

// TestFaultARICut severs the daemon's ARI TCP connections (websocket and REST, through
// the test's proxy) for 1.5 s while calls ring and talk. Every channel outlives the cut:
// each call must end with its true outcome.
func TestFaultARICut(t *testing.T) {
	d := startDaemon(t, "itest-aricut")
	st := d.openStream()
	load := faultLoad("cut", 2)
	placeFaultLoad(t, d, st, load)
	d.proxy.refuse.Store(true)
	n := d.proxy.cut()
	time.Sleep(1500 * time.Millisecond) // the outage itself: its length is the fault, not a wait for a condition
	d.proxy.refuse.Store(false)
	t.Logf("cut %d ARI connections for 1.5s", n)
	judgeFaults(t, "ARI cut", st, load, map[string][]string{
		"ringing": {"no_answer"},
		"talking": {"completed"},
	})
	afterRestart(t, d, st, "after ARI cut")
}

// TestFaultSIGKILL kills the daemon while calls ring and talk and starts it again on
// the same NATS (its call store survives). Every channel outlives the daemon: each call
// must end with its true outcome.
func TestFaultSIGKILL(t *testing.T) {
	d := startDaemon(t, "itest-kill")
	st := d.openStream()
	load := faultLoad("kill", 2)
	placeFaultLoad(t, d, st, load)
	d.kill()
	start := time.Now()
	d.start()
	t.Logf("daemon restarted and ready in %v", time.Since(start).Round(time.Millisecond))
	judgeFaults(t, "SIGKILL+restart", st, load, map[string][]string{
		"ringing": {"no_answer"},
		"talking": {"completed"},
	})
	afterRestart(t, d, st, "after SIGKILL")
}
