package events

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func sampleEvent() *Event {
	ring, dur := int64(1180), int64(42000)
	at := time.Date(2026, 11, 26, 7, 59, 1, 79e6, time.UTC)
	return &Event{
		ID: "abc", Seq: 5, Event: Ended, Time: at, Server: "pbx1", Channel: "PJSIP/6001-00000001",
		State: StateEnded, Outcome: Completed, Cause: 16, CauseTxt: "Normal Clearing", SIPCode: 200,
		DialStatus: "ANSWER", RingMS: &ring, DurationMS: &dur, Key: "helpdesk",
		Request: &Request{Destination: "PJSIP/6001", Context: "confirmcode", Extension: "100", TimeoutSec: 30,
			CallerID: `"Desk" <100>`, Variables: map[string]string{"CONFCODE": "1234"}, Wait: "end", Door: "http"},
		Call: &Call{ID: "abc", Server: "pbx1", Channel: "PJSIP/6001-00000001", State: StateEnded, Outcome: Completed,
			Cause: 16, CauseTxt: "Normal Clearing", SIPCode: 200, DialStatus: "ANSWER", CreatedAt: at,
			RingingAt: &at, AnsweredAt: &at, EndedAt: &at, RingMS: &ring, DurationMS: &dur},
	}
}

func TestEncodeEventMatchesMarshal(t *testing.T) {
	ev := sampleEvent()
	got, err := encodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	// encodeEvent leaves < and > unescaped for readability; both decode the same.
	want = bytes.ReplaceAll(want, []byte(`\u003c`), []byte("<"))
	want = bytes.ReplaceAll(want, []byte(`\u003e`), []byte(">"))
	if !bytes.Equal(got, want) {
		t.Errorf("encodeEvent =\n%s\nwant\n%s", got, want)
	}
	// The result must not alias the pooled buffer.
	again, _ := encodeEvent(&Event{ID: "other"})
	if bytes.Equal(got, again) || !bytes.HasPrefix(got, []byte(`{"id":"abc"`)) {
		t.Errorf("encodeEvent result changed after reuse: %s", got)
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	ev := sampleEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeEvent(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONMarshal(b *testing.B) {
	ev := sampleEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
