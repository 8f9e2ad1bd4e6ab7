package stasisapp

import (
	"time"

	"github.com/invokeari/invokeari/events"
)

// Resume carries over the times a previous follower of the call published, so that a
// call taken over (after a restart, or adopted from a dead daemon) keeps its true
// ringing and answer times: its last stored event says when it rang or was answered
// (and an answered event carries ring_ms). Like Apply it does no I/O.
func (c *Call) Resume(last events.Event) {
	switch last.Event {
	case events.Ringing, events.Progress:
		if c.ringingAt.IsZero() {
			c.ringingAt = last.Time
		}
	case events.KindAnswered:
		if c.answeredAt.IsZero() {
			c.answeredAt = last.Time
		}
		if c.ringingAt.IsZero() && last.RingMS != nil {
			c.ringingAt = last.Time.Add(-time.Duration(*last.RingMS) * time.Millisecond)
		}
	}
}
