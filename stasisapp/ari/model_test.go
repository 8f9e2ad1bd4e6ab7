package ari

import "testing"

// A channel variable named "type" placed before the top-level type must not fool the
// type peek.
func TestDecodeEventNestedTypeKey(t *testing.T) {
	msg := []byte(`{"channel":{"id":"c1","state":"Up","channelvars":{"type":"Dial"}},"type":"StasisEnd","timestamp":"2026-11-26T07:59:01.079+0000","application":"invokeari"}`)
	ev, err := DecodeEvent(msg)
	if err != nil {
		t.Fatal(err)
	}
	se, ok := ev.(*StasisEnd)
	if !ok {
		t.Fatalf("decoded %T, want *StasisEnd", ev)
	}
	if se.Channel.ID != "c1" || se.Channel.ChannelVars["type"] != "Dial" {
		t.Errorf("channel = %+v", se.Channel)
	}
}
