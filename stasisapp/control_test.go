package stasisapp

import (
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// TestCallHangupBy: the record says who hung up only when our own hangup ended the
// call, and the API client's reason is kept in the record's reason.
func TestCallHangupBy(t *testing.T) {
	hangup := func(note string) action { return func(c *Call) []Change { c.HangingUp(note); return nil } }
	refused := func(c *Call) []Change { c.HangupRefused(); return nil }
	ringing := func(tb testing.TB) []action {
		return []action{accept(0), apply(ev(tb, "Dial", 1, "Ringing", "dialstatus", "RINGING"))}
	}
	tests := []struct {
		name       string
		steps      func(testing.TB) []action
		want       events.Outcome
		wantBy     string
		wantReason string
	}{
		{"ringing, hung up by the API", func(tb testing.TB) []action {
			return append(ringing(tb), hangup("changed my mind"),
				apply(ev(tb, "ChannelDestroyed", 900, "Ringing", "cause", 16, "cause_txt", "Normal Clearing")))
		}, events.Canceled, events.HangupByAPI, "canceled by api: changed my mind"},
		{"answered, hung up by the API", func(tb testing.TB) []action {
			return append(ringing(tb), apply(ev(tb, "ChannelStateChange", 500, "Up")), hangup(""),
				apply(ev(tb, "ChannelDestroyed", 900, "Up", "cause", 16, "cause_txt", "Normal Clearing")))
		}, events.Completed, events.HangupByAPI, "; hung up by api"},
		{"the callee was busy first", func(tb testing.TB) []action {
			return append(ringing(tb), apply(ev(tb, "Dial", 400, "Ringing", "dialstatus", "BUSY")), hangup(""),
				apply(ev(tb, "ChannelDestroyed", 900, "Ringing", "cause", 17, "cause_txt", "User busy")))
		}, events.Busy, "", ""},
		{"Asterisk refused the hangup", func(tb testing.TB) []action {
			return append(ringing(tb), hangup("x"), refused,
				apply(ev(tb, "ChannelDestroyed", 900, "Ringing", "cause", 19, "cause_txt", "No user responding")))
		}, events.NoAnswer, "", ""},
		{"drain at shutdown", func(tb testing.TB) []action {
			return append(ringing(tb), cancelCall("shutdown"),
				apply(ev(tb, "ChannelDestroyed", 900, "Ringing", "cause", 16, "cause_txt", "Normal Clearing")))
		}, events.Canceled, events.HangupByDaemon, "canceled by shutdown"},
		{"end not seen", func(tb testing.TB) []action {
			return append(ringing(tb), hangup(""), lose("link down", 900))
		}, events.Unknown, "", "tracking lost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCall(testID, "pbx1", 30*time.Second)
			for _, step := range tt.steps(t) {
				step(c)
			}
			rec := c.Record()
			if !c.Final() || rec.Outcome != tt.want || rec.HangupBy != tt.wantBy || !strings.Contains(rec.Reason, tt.wantReason) {
				t.Errorf("outcome %q hangup_by %q reason %q; want %q %q ~%q", rec.Outcome, rec.HangupBy, rec.Reason,
					tt.want, tt.wantBy, tt.wantReason)
			}
		})
	}
	c := NewCall(testID, "pbx1", 30*time.Second)
	if !c.HangingUp("") || c.HangingUp("again") {
		t.Errorf("HangingUp: the first call must start the hangup, a second must not")
	}
}

func TestParseCursor(t *testing.T) {
	p := pagePos{reg: 1764600000123456789, id: "call-1"}
	got, err := parseCursor(p.cursor())
	if err != nil || got == nil || *got != p {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, p)
	}
	for _, bad := range []string{"zzz", "djE", "djEuMS5h.Yg", "djIuMS5h", "djEueC5h", "djEuMS5hLmI"} {
		if _, err := parseCursor(bad); err != ErrBadCursor {
			t.Errorf("parseCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
}
