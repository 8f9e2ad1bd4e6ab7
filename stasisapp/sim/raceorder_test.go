package sim

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// ringSig is an event signature in sig's format for the Local ;1 of a ringing call:
// "CSC" (ChannelStateChange) or "D<status>" (a Dial), and the channel's state.
func ringSig(ev, state string) string {
	ch := fmt.Sprintf(`{"name":"Local/ring@sim;1","state":%q} keys=id,name,state`, state)
	if status, ok := strings.CutPrefix(ev, "D"); ok {
		return fmt.Sprintf(`Dial keys=type,timestamp,dialstatus,forward,dialstring,peer dialstatus=%q forward="" dialstring="ring@sim" channel=%s`, status, ch)
	}
	return "ChannelStateChange keys=type,timestamp,channel channel=" + ch
}

func ringSeq(evs ...string) []string {
	var out []string
	for _, e := range evs {
		ev, state, _ := strings.Cut(e, "/")
		out = append(out, ringSig(ev, state))
	}
	return out
}

// TestRaceOrderRinging holds allowance A2 to the orders seen on the kit, and to nothing
// more: every order of the first Dial "" and the Ringing state change becomes one, while
// a Down state the race does not explain is kept.
func TestRaceOrderRinging(t *testing.T) {
	canonical := ringSeq("CSC/Ringing", "D/Ringing", "DRINGING/Ringing", "DANSWER/Up")
	for _, seq := range [][]string{
		{"D/Down", "CSC/Ringing", "DRINGING/Ringing", "DANSWER/Up"},    // the common order
		{"CSC/Ringing", "D/Ringing", "DRINGING/Ringing", "DANSWER/Up"}, // snapshot after the change
		{"CSC/Ringing", "D/Down", "DRINGING/Ringing", "DANSWER/Up"},    // snapshot before, published after
		{"D/Ringing", "CSC/Ringing", "DRINGING/Ringing", "DANSWER/Up"}, // snapshot after, published before
		{"D/Down", "DRINGING/Down", "CSC/Ringing", "DANSWER/Up"},       // PJSIP: 180 before the state
		{"CSC/Ringing", "DRINGING/Ringing", "D/Ringing", "DANSWER/Up"}, // A8
	} {
		if got := raceOrder("Local/ring@sim;1", ringSeq(seq...)); !slices.Equal(got, canonical) {
			t.Errorf("%v: got\n%s\nwant\n%s", seq, strings.Join(got, "\n"), strings.Join(canonical, "\n"))
		}
	}
	for _, seq := range [][]string{
		{"D/Down", "DBUSY/Down"},                                         // no Ringing state change: Down stays
		{"CSC/Ringing", "D/Ringing", "DRINGING/Down"},                    // RINGING after the change is a fresh snapshot
		{"CSC/Ringing", "D/Ringing", "DRINGING/Ringing", "DANSWER/Down"}, // a final status is not re-stated
		{"D/Ringing", "CSC/Up"},                                          // only the Ringing change
	} {
		in := ringSeq(seq...)
		if got := raceOrder("Local/ring@sim;1", slices.Clone(in)); !slices.Equal(got, in) {
			t.Errorf("%v: changed to\n%s", seq, strings.Join(got, "\n"))
		}
	}
}
