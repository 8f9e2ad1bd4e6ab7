package ari

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// wantTypes maps every ARI event type seen in the recordings to the Go type DecodeEvent
// must produce.
var wantTypes = map[string]reflect.Type{
	"ChannelCreated":       reflect.TypeFor[*ChannelCreated](),
	"ChannelStateChange":   reflect.TypeFor[*ChannelStateChange](),
	"ChannelDialplan":      reflect.TypeFor[*ChannelDialplan](),
	"ChannelCallerId":      reflect.TypeFor[*ChannelCallerID](),
	"ChannelConnectedLine": reflect.TypeFor[*ChannelConnectedLine](),
	"ChannelVarset":        reflect.TypeFor[*ChannelVarset](),
	"ChannelHangupRequest": reflect.TypeFor[*ChannelHangupRequest](),
	"ChannelDestroyed":     reflect.TypeFor[*ChannelDestroyed](),
	"Dial":                 reflect.TypeFor[*Dial](),
	"StasisStart":          reflect.TypeFor[*StasisStart](),
	"StasisEnd":            reflect.TypeFor[*StasisEnd](),
	"ApplicationReplaced":  reflect.TypeFor[*ApplicationReplaced](),
	"DeviceStateChanged":   reflect.TypeFor[*RawEvent](), // not modelled
}

// channelOf returns the channel object an event carries ("channel", or "peer" for Dial).
func channelOf(ev Event) (Channel, bool) {
	switch e := ev.(type) {
	case *ChannelCreated:
		return e.Channel, true
	case *ChannelStateChange:
		return e.Channel, true
	case *ChannelDialplan:
		return e.Channel, true
	case *ChannelCallerID:
		return e.Channel, true
	case *ChannelConnectedLine:
		return e.Channel, true
	case *ChannelVarset:
		return e.Channel, true
	case *ChannelHangupRequest:
		return e.Channel, true
	case *ChannelDestroyed:
		return e.Channel, true
	case *StasisStart:
		return e.Channel, true
	case *StasisEnd:
		return e.Channel, true
	case *Dial:
		return e.Peer, true
	}
	return Channel{}, false
}

// generic is the independent view of a frame: encoding/json into maps.
type generic map[string]any

func (g generic) str(k string) string { s, _ := g[k].(string); return s }

func (g generic) num(k string) (int, bool) {
	f, ok := g[k].(float64)
	return int(f), ok
}

func (g generic) obj(k string) generic { m, _ := g[k].(map[string]any); return m }

// TestDecodeEventAllRecorded decodes every websocket event of every recording and
// checks the typed result against an independent generic decode of the same bytes.
func TestDecodeEventAllRecorded(t *testing.T) {
	frames := allFrames(t)
	seen := map[string]int{}
	for i, f := range frames {
		var g generic
		if err := json.Unmarshal(f.data, &g); err != nil {
			t.Fatalf("%s #%d: generic decode: %v", f.file, i, err)
		}
		typ := g.str("type")
		seen[typ]++
		ev, err := DecodeEvent(f.data)
		if err != nil {
			t.Errorf("%s #%d %s: DecodeEvent: %v", f.file, i, typ, err)
			continue
		}
		if want, ok := wantTypes[typ]; !ok {
			t.Errorf("%s #%d: type %q missing from wantTypes", f.file, i, typ)
		} else if got := reflect.TypeOf(ev); got != want {
			t.Errorf("%s #%d %s: got %v, want %v", f.file, i, typ, got, want)
		}
		if err := checkEvent(ev, g, f.data); err != nil {
			t.Errorf("%s #%d %s: %v", f.file, i, typ, err)
		}
	}
	for typ := range wantTypes {
		if seen[typ] == 0 {
			t.Errorf("no recorded %s event: the test covers less than it claims", typ)
		}
	}
	t.Logf("decoded %d recorded events: %v", len(frames), seen)
}

// checkEvent compares a decoded event with the generic view; it returns the first mismatch.
func checkEvent(ev Event, g generic, raw []byte) error {
	if got, want := ev.EventType(), g.str("type"); got != want {
		return fmt.Errorf("EventType %q, want %q", got, want)
	}
	wantAt, err := time.Parse(TimeLayout, g.str("timestamp"))
	if err != nil {
		return fmt.Errorf("timestamp %q: %v", g.str("timestamp"), err)
	}
	if !ev.At().Equal(wantAt) || ev.At().IsZero() {
		return fmt.Errorf("At %v, want %v", ev.At(), wantAt)
	}
	if ch, ok := channelOf(ev); ok {
		key := "channel"
		if g.str("type") == "Dial" {
			key = "peer"
		}
		gc := g.obj(key)
		if err := checkChannel(ch, gc); err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		ce, isCE := ev.(ChannelEvent)
		if !isCE {
			return fmt.Errorf("%T is not a ChannelEvent", ev)
		}
		if ce.ChannelID() != gc.str("id") || ce.ChannelID() == "" {
			return fmt.Errorf("ChannelID %q, want %q", ce.ChannelID(), gc.str("id"))
		}
	}
	switch e := ev.(type) {
	case *ChannelHangupRequest:
		cause, has := g.num("cause")
		if (e.Cause != nil) != has || (has && *e.Cause != cause) {
			return fmt.Errorf("Cause %v, want %d (present %v)", e.Cause, cause, has)
		}
		soft, _ := g["soft"].(bool)
		tech, _ := g.num("tech_cause")
		if e.Soft != soft || e.TechCause != tech {
			return fmt.Errorf("Soft %v TechCause %d, want %v %d", e.Soft, e.TechCause, soft, tech)
		}
	case *ChannelDestroyed:
		cause, _ := g.num("cause")
		tech, _ := g.num("tech_cause")
		if e.Cause != cause || e.CauseTxt != g.str("cause_txt") || e.TechCause != tech {
			return fmt.Errorf("got %d %q %d, want %d %q %d", e.Cause, e.CauseTxt, e.TechCause, cause, g.str("cause_txt"), tech)
		}
	case *Dial:
		if e.DialStatus != g.str("dialstatus") || e.DialString != g.str("dialstring") || e.Forward != g.str("forward") {
			return fmt.Errorf("dial fields %q %q %q", e.DialStatus, e.DialString, e.Forward)
		}
		if (e.Caller != nil) != (g["caller"] != nil) {
			return fmt.Errorf("Caller %v, generic %v", e.Caller, g["caller"])
		}
	case *StasisStart:
		want := []string{}
		for _, a := range g["args"].([]any) {
			want = append(want, a.(string))
		}
		if e.Args == nil || !reflect.DeepEqual(e.Args, want) {
			return fmt.Errorf("Args %q, want %q", e.Args, want)
		}
	case *ChannelVarset:
		if e.Variable != g.str("variable") || e.Value != g.str("value") {
			return fmt.Errorf("varset %q=%q", e.Variable, e.Value)
		}
	case *ChannelDialplan:
		if e.DialplanApp != g.str("dialplan_app") || e.DialplanAppData != g.str("dialplan_app_data") {
			return fmt.Errorf("dialplan %q(%q)", e.DialplanApp, e.DialplanAppData)
		}
	case *ChannelCallerID:
		p, _ := g.num("caller_presentation")
		if e.CallerPresentation != p || e.CallerPresentationTxt != g.str("caller_presentation_txt") {
			return fmt.Errorf("presentation %d %q", e.CallerPresentation, e.CallerPresentationTxt)
		}
	case *RawEvent:
		if !bytes.Equal(e.Data, raw) {
			return fmt.Errorf("RawEvent.Data differs from the message")
		}
	}
	if b := baseOf(ev); b.Application != g.str("application") || b.AsteriskID != g.str("asterisk_id") {
		return fmt.Errorf("base %q %q", b.Application, b.AsteriskID)
	}
	return nil
}

// baseOf re-decodes the Base through the event's own JSON form so that every type is covered.
func baseOf(ev Event) Base {
	if r, ok := ev.(*RawEvent); ok {
		return r.Base
	}
	b, _ := json.Marshal(ev)
	var base Base
	_ = json.Unmarshal(b, &base)
	return base
}

func checkChannel(ch Channel, g generic) error {
	if ch.ID != g.str("id") || ch.Name != g.str("name") || ch.State != g.str("state") {
		return fmt.Errorf("id/name/state %q %q %q", ch.ID, ch.Name, ch.State)
	}
	if ch.Caller.Number != g.obj("caller").str("number") || ch.Connected.Name != g.obj("connected").str("name") {
		return fmt.Errorf("caller/connected %+v %+v", ch.Caller, ch.Connected)
	}
	dp := g.obj("dialplan")
	prio, _ := dp.num("priority")
	if ch.Dialplan.Context != dp.str("context") || ch.Dialplan.Exten != dp.str("exten") || int(ch.Dialplan.Priority) != prio {
		return fmt.Errorf("dialplan %+v", ch.Dialplan)
	}
	created, err := time.Parse(TimeLayout, g.str("creationtime"))
	if err != nil || !ch.CreationTime.Equal(created) {
		return fmt.Errorf("creationtime %v, want %v (%v)", ch.CreationTime, created, err)
	}
	return nil
}

func intp(n int) *int { return &n }

// Real frames from the recordings (s2_stasis_*, s5_cancel_*), shortened to the fields that matter.
const (
	chanJSON         = `{"id":"1795680142.211","name":"PJSIP/sipp-busy-00000027","state":"Down","protocol_id":"acd5","caller":{"name":"InvokeARI","number":"+15550001111"},"connected":{"name":"","number":""},"accountcode":"","dialplan":{"context":"from-sipp","exten":"s","priority":1,"app_name":"AppDial2","app_data":"(Outgoing Line)"},"creationtime":"2026-11-26T08:02:22.080+0000","language":"en"}`
	hangupNoCause    = `{"type":"ChannelHangupRequest","timestamp":"2026-11-26T08:01:57.338+0000","channel":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	hangupSoft       = `{"cause":32,"soft":true,"type":"ChannelHangupRequest","timestamp":"2026-11-26T08:08:04.471+0000","channel":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	hangupBusy       = `{"cause":17,"tech_cause":486,"type":"ChannelHangupRequest","timestamp":"2026-11-26T08:02:22.083+0000","channel":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	destroyedBusy    = `{"type":"ChannelDestroyed","timestamp":"2026-11-26T08:02:22.083+0000","cause":17,"cause_txt":"User busy","tech_cause":486,"channel":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	destroyedUnknown = `{"type":"ChannelDestroyed","timestamp":"2026-11-26T08:02:22.083+0000","cause":0,"cause_txt":"Unknown","channel":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	dialBusy         = `{"type":"Dial","timestamp":"2026-11-26T08:02:22.083+0000","dialstatus":"BUSY","forward":"","dialstring":"sipp-busy","peer":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
	dialFirst        = `{"type":"Dial","timestamp":"2026-11-26T08:02:22.081+0000","dialstatus":"","forward":"","dialstring":"sipp-busy","peer":` + chanJSON + `,"asterisk_id":"02:fc:00:00:00:01","application":"invokeari"}`
)

func TestDecodeEventFields(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(TimeLayout, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name string
		msg  string
		want Event
	}{
		{"hangup request without cause (PJSIP BYE)", hangupNoCause, &ChannelHangupRequest{}},
		{"hangup request soft flag 32 (ARI DELETE)", hangupSoft, &ChannelHangupRequest{Cause: intp(32), Soft: true}},
		{"hangup request Q.850 17 with SIP 486", hangupBusy, &ChannelHangupRequest{Cause: intp(17), TechCause: 486}},
		{"destroyed busy", destroyedBusy, &ChannelDestroyed{Cause: 17, CauseTxt: "User busy", TechCause: 486}},
		{"destroyed cause 0 without tech_cause", destroyedUnknown, &ChannelDestroyed{Cause: 0, CauseTxt: "Unknown"}},
		{"dial final status", dialBusy, &Dial{DialStatus: "BUSY", DialString: "sipp-busy"}},
		{"first dial has empty status", dialFirst, &Dial{DialString: "sipp-busy"}},
	}
	var ch Channel
	if err := json.Unmarshal([]byte(chanJSON), &ch); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEvent([]byte(tt.msg))
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			var g generic
			if err := json.Unmarshal([]byte(tt.msg), &g); err != nil {
				t.Fatal(err)
			}
			base := Base{Type: g.str("type"), Timestamp: Time{at(g.str("timestamp"))}, Application: "invokeari", AsteriskID: "02:fc:00:00:00:01"}
			switch w := tt.want.(type) {
			case *ChannelHangupRequest:
				w.channelBase = channelBase{Base: base, Channel: ch}
			case *ChannelDestroyed:
				w.channelBase = channelBase{Base: base, Channel: ch}
			case *Dial:
				w.Base = base
				w.Peer = ch
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if id := got.(ChannelEvent).ChannelID(); id != "1795680142.211" {
				t.Errorf("ChannelID %q", id)
			}
		})
	}
}

func TestDecodeEventErrors(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		wantErr bool
		want    reflect.Type
	}{
		{"no type", `{"timestamp":"2026-11-26T08:02:22.083+0000"}`, true, nil},
		{"not json", `hello`, true, nil},
		{"broken typed", `{"type":"Dial","peer":`, true, nil},
		{"bad timestamp", `{"type":"StasisEnd","timestamp":"yesterday"}`, true, nil},
		{"unknown type is raw", `{"type":"BridgeCreated","timestamp":"2026-11-26T08:02:22.083+0000","bridge":{}}`, false, reflect.TypeFor[*RawEvent]()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEvent([]byte(tt.msg))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.want != nil && reflect.TypeOf(got) != tt.want {
				t.Errorf("got %T, want %v", got, tt.want)
			}
		})
	}
}
