package ari

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
)

// TestDecodeWebhookRecordings decodes every event of the webhook-call recordings (real
// Asterisk 22.10.1: playbacks, DTMF, recordings, bridges) and checks the fields the
// script uses against a generic decode.
func TestDecodeWebhookRecordings(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(recordingsDir, "webhook", "*.jsonl"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no webhook recordings (err %v)", err)
	}
	want := map[string]reflect.Type{
		"PlaybackStarted":     reflect.TypeFor[*PlaybackStarted](),
		"PlaybackFinished":    reflect.TypeFor[*PlaybackFinished](),
		"ChannelDtmfReceived": reflect.TypeFor[*ChannelDtmfReceived](),
		"RecordingStarted":    reflect.TypeFor[*RecordingStarted](),
		"RecordingFinished":   reflect.TypeFor[*RecordingFinished](),
	}
	seen := map[string]int{}
	for _, path := range names {
		name := filepath.Join("webhook", filepath.Base(path))
		for i, f := range wsFrames(t, name) {
			var g generic
			if err := json.Unmarshal(f.data, &g); err != nil {
				t.Fatal(err)
			}
			typ := g.str("type")
			ev, err := DecodeEvent(f.data)
			if err != nil {
				t.Errorf("%s #%d %s: %v", name, i, typ, err)
				continue
			}
			wt, ok := want[typ]
			if !ok {
				continue
			}
			seen[typ]++
			if reflect.TypeOf(ev) != wt {
				t.Errorf("%s #%d: %s decoded as %T", name, i, typ, ev)
				continue
			}
			var got, wantObj string
			switch e := ev.(type) {
			case *PlaybackStarted:
				got, wantObj = e.Playback.ID+" "+e.Playback.State+" "+e.Playback.MediaURI, pb(g)
			case *PlaybackFinished:
				got, wantObj = e.Playback.ID+" "+e.Playback.State+" "+e.Playback.MediaURI, pb(g)
			case *ChannelDtmfReceived:
				got, wantObj = e.ChannelID()+" "+e.Digit, g.obj("channel").str("id")+" "+g.str("digit")
				if d, _ := g.num("duration_ms"); e.DurationMS != d {
					t.Errorf("%s #%d: duration_ms %d, want %d", name, i, e.DurationMS, d)
				}
			case *RecordingStarted:
				got, wantObj = e.Recording.Name+" "+e.Recording.State+" "+e.Recording.TargetURI, rec(g)
			case *RecordingFinished:
				got, wantObj = e.Recording.Name+" "+e.Recording.State+" "+e.Recording.TargetURI, rec(g)
			}
			if got != wantObj {
				t.Errorf("%s #%d %s: %q, want %q", name, i, typ, got, wantObj)
			}
			if ev.At().IsZero() {
				t.Errorf("%s #%d %s: no timestamp", name, i, typ)
			}
		}
	}
	for typ := range want {
		if seen[typ] == 0 {
			t.Errorf("no recorded %s", typ)
		}
	}
}

func pb(g generic) string {
	p := g.obj("playback")
	return p.str("id") + " " + p.str("state") + " " + p.str("media_uri")
}

func rec(g generic) string {
	r := g.obj("recording")
	return r.str("name") + " " + r.str("state") + " " + r.str("target_uri")
}
