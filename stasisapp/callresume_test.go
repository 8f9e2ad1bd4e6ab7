package stasisapp

import (
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
)

// TestCallResumeKeepsTrueTimes: a call taken over after its `ringing` (or `answered`)
// was published keeps the ringing and answer times of that event, not the time it was
// taken over.
func TestCallResumeKeepsTrueTimes(t *testing.T) {
	ring := int64(1500)
	tests := []struct {
		name          string
		last          events.Event
		then          []action
		ringMS, durMS *int64
	}{
		{"ringing then ring timeout", events.Event{Event: events.Ringing, Time: t0.Add(100 * time.Millisecond)},
			[]action{apply(ev(t, "ChannelStateChange", 6000, "Ringing")),
				apply(ev(t, "ChannelDestroyed", 10100, "Ringing", "cause", 19, "cause_txt", "No answer"))},
			i64(10000), nil},
		{"answered then far-end hangup", events.Event{Event: events.KindAnswered, Time: t0.Add(2000 * time.Millisecond), RingMS: &ring},
			[]action{apply(ev(t, "ChannelStateChange", 6000, "Up")),
				apply(ev(t, "ChannelDestroyed", 9000, "Up", "cause", 16, "cause_txt", "Normal Clearing"))},
			i64(1500), i64(7000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCall(testID, "pbx1", 10*time.Second)
			c.Resume(tt.last)
			accept(5900)(c)
			for _, a := range tt.then {
				a(c)
			}
			rec := c.Record()
			if !c.Final() {
				t.Fatalf("call not final: %+v", rec)
			}
			checkMS(t, "ring_ms", rec.RingMS, tt.ringMS)
			checkMS(t, "duration_ms", rec.DurationMS, tt.durMS)
		})
	}
}
