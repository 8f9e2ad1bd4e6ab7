package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// TestFaultJudge feeds the fault suite's verdict synthetic histories, so that each column
// of the table is shown to count what it claims (a check that cannot fail proves nothing).
func TestFaultJudge(t *testing.T) {
	busy := faultKinds[1]
	answer := faultKinds[0]
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	ev := func(seq uint64, k events.Kind) events.Event {
		return events.Event{ID: "c1", Seq: seq, Event: k}
	}
	ended := func(seq uint64, o events.Outcome, reason string, answered bool) events.Event {
		e := ev(seq, events.Ended)
		e.Outcome, e.Reason = o, reason
		rec := events.Call{ID: "c1", Outcome: o, Reason: reason}
		if answered {
			rec.AnsweredAt = &at
		}
		e.Call = &rec
		return e
	}
	strict := fault{name: "strict"}
	lossy := fault{name: "lossy", unknownOK: true}
	type counts struct{ calls, refused, ended, lost, dup, twice, seqs, wrong, unknown int }
	cases := []struct {
		name   string
		f      fault
		kind   callKind
		status int
		dials  int
		evs    []events.Event
		want   counts
	}{
		{"truthful", strict, busy, 200, 1,
			[]events.Event{ev(1, events.Initiated), ended(2, events.Busy, "cause 17", false)},
			counts{calls: 1, ended: 1}},
		{"lost", strict, busy, 200, 1, []events.Event{ev(1, events.Initiated)},
			counts{calls: 1, lost: 1}},
		{"duplicated ended", strict, busy, 200, 1,
			[]events.Event{ev(1, events.Initiated), ended(2, events.Busy, "x", false), ended(3, events.Busy, "x", false)},
			counts{calls: 1, ended: 2, dup: 1}},
		{"dialled twice", strict, busy, 200, 2,
			[]events.Event{ended(1, events.Busy, "x", false)},
			counts{calls: 1, ended: 1, twice: 1}},
		{"seq gap", strict, busy, 200, 1,
			[]events.Event{ev(1, events.Initiated), ended(3, events.Busy, "x", false)},
			counts{calls: 1, ended: 1, seqs: 1}},
		{"event after ended", strict, busy, 200, 1,
			[]events.Event{ended(1, events.Busy, "x", false), ev(2, events.Ringing)},
			counts{calls: 1, ended: 1, seqs: 1}},
		{"wrong outcome", strict, busy, 200, 1,
			[]events.Event{ended(1, events.NoAnswer, "x", false)},
			counts{calls: 1, ended: 1, wrong: 1}},
		{"answered but not completed", strict, answer, 200, 1,
			[]events.Event{ended(1, events.Failed, "x", true)},
			counts{calls: 1, ended: 1, wrong: 1}},
		{"unknown where evidence cannot be lost", strict, busy, 200, 1,
			[]events.Event{ended(1, events.Unknown, "tracking lost: x", false)},
			counts{calls: 1, ended: 1, wrong: 1}},
		{"unknown without reason", lossy, busy, 200, 1,
			[]events.Event{ended(1, events.Unknown, "", false)},
			counts{calls: 1, ended: 1, wrong: 1}},
		{"unknown with reason under a lossy fault", lossy, busy, 200, 1,
			[]events.Event{ended(1, events.Unknown, "tracking lost: x", false)},
			counts{calls: 1, ended: 1, unknown: 1}},
		{"refused", strict, busy, http.StatusServiceUnavailable, 0, nil,
			counts{refused: 1}},
		{"refused but has events", strict, busy, http.StatusServiceUnavailable, 0,
			[]events.Event{ended(1, events.Busy, "x", false)},
			counts{refused: 1, wrong: 1}},
		{"refused but dialled", strict, busy, http.StatusServiceUnavailable, 1,
			[]events.Event{ended(1, events.Busy, "x", false)},
			counts{calls: 1, ended: 1, wrong: 1}},
		{"reply lost, recorded, never dialled: unknown is the truth", lossy, busy, 0, 0,
			[]events.Event{ended(1, events.Unknown, "daemon restarted", false)},
			counts{calls: 1, ended: 1, unknown: 1}},
		{"reply lost, never dialled, claims an outcome", lossy, busy, 0, 0,
			[]events.Event{ended(1, events.Busy, "x", false)},
			counts{calls: 1, ended: 1, wrong: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := []*callPlan{{id: "c1", kind: tc.kind, status: tc.status}}
			log := &streamLog{byID: map[string][]events.Event{"c1": tc.evs}}
			r := judge(tc.f, calls, simLog{dials: map[string]int{"c1": tc.dials}}, log)
			got := counts{r.calls, r.refused, r.ended, r.lost, r.duplicated, r.dialledTwice, r.seqs, r.wrong, r.unknown}
			if got != tc.want {
				t.Errorf("got %+v, want %+v (problems %q)", got, tc.want, r.problems)
			}
		})
	}

	// Checks that need a reply time or the continue log.
	t.Run("refused slowly", func(t *testing.T) {
		calls := []*callPlan{{id: "c1", kind: busy, status: http.StatusServiceUnavailable, took: 3 * time.Second}}
		r := judge(strict, calls, simLog{dials: map[string]int{}}, &streamLog{byID: map[string][]events.Event{}})
		if r.refused != 1 || r.wrong != 1 {
			t.Errorf("refused %d wrong %d, want 1 and 1 (problems %q)", r.refused, r.wrong, r.problems)
		}
	})
	t.Run("continued twice", func(t *testing.T) {
		calls := []*callPlan{{id: "c1", kind: answer, status: http.StatusOK}}
		log := &streamLog{byID: map[string][]events.Event{"c1": {ended(1, events.Completed, "x", true)}}}
		r := judge(strict, calls, simLog{dials: map[string]int{"c1": 1}, continues: map[string]int{"c1": 2}}, log)
		if r.duplicated != 1 || r.wrong != 0 {
			t.Errorf("duplicated %d wrong %d, want 1 and 0 (problems %q)", r.duplicated, r.wrong, r.problems)
		}
	})
}
