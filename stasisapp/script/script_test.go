package script

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

const hook = "https://hooks.example.com/call"

// render writes commands in a compact form; transcript notes are left out.
func render(cmds []Command) []string {
	var out []string
	for _, c := range cmds {
		switch c := c.(type) {
		case PostWebhook:
			keys := make([]string, 0, len(c.Data))
			for k := range c.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var data []string
			for _, k := range keys {
				data = append(data, fmt.Sprintf("%s=%v", k, c.Data[k]))
			}
			out = append(out, strings.TrimSpace(fmt.Sprintf("post %d %s %s %s", c.Seq, c.Event, c.URL, strings.Join(data, " "))))
		case Play:
			out = append(out, fmt.Sprintf("play %s %s %s", c.Channel, c.PlaybackID, strings.Join(c.Media, ",")))
		case StopPlayback:
			out = append(out, "stop "+c.PlaybackID)
		case StartRecording:
			out = append(out, fmt.Sprintf("record %s %s max=%d beep=%v on=%s", c.Channel, c.Name, c.MaxSeconds, c.Beep, c.TerminateOn))
		case OriginateLeg:
			out = append(out, fmt.Sprintf("originate %s %s t=%d i=%s", c.ChannelID, c.Endpoint, c.Timeout, c.CallerID))
		case BridgeChannels:
			out = append(out, fmt.Sprintf("bridge %s %s", c.BridgeID, strings.Join(c.Channels, ",")))
		case DestroyBridge:
			out = append(out, "destroy "+c.BridgeID)
		case ContinueDialplan:
			out = append(out, fmt.Sprintf("continue %s %s,%s", c.Channel, c.Context, c.Extension))
		case HangupChannel:
			out = append(out, "hangup "+c.Channel)
		case SetTimer:
			out = append(out, fmt.Sprintf("timer %s %s", c.Name, c.After))
		case CancelTimer:
			out = append(out, "cancel "+c.Name)
		case Note:
		default:
			out = append(out, fmt.Sprintf("?%T", c))
		}
	}
	return out
}

type step struct {
	in   func(s *Script) []Command
	want []string
}

func start() func(*Script) []Command { return (*Script).Start }

func reply(seq int, body string) func(*Script) []Command {
	return func(s *Script) []Command { return s.Reply(seq, Reply{Status: 200, Body: []byte(body)}) }
}

func replyStatus(seq, status int, body string) func(*Script) []Command {
	return func(s *Script) []Command { return s.Reply(seq, Reply{Status: status, Body: []byte(body)}) }
}

func replyErr(seq int, err error) func(*Script) []Command {
	return func(s *Script) []Command { return s.Reply(seq, Reply{Err: err}) }
}

func timer(name string) func(*Script) []Command {
	return func(s *Script) []Command { return s.Timer(name) }
}

func event(ev ari.Event) func(*Script) []Command {
	return func(s *Script) []Command { return s.Event(ev) }
}

func dtmf(d string) func(*Script) []Command {
	e := &ari.ChannelDtmfReceived{Digit: d}
	e.Channel.ID = "c1"
	return event(e)
}

func pbDone(id string) func(*Script) []Command {
	return event(&ari.PlaybackFinished{Playback: ari.Playback{ID: id, State: "done"}})
}

func recDone(name string, secs int) func(*Script) []Command {
	return event(&ari.RecordingFinished{Recording: ari.LiveRecording{Name: name, Format: "wav", State: "done", Duration: secs}})
}

func destroyed(id string) func(*Script) []Command {
	e := &ari.ChannelDestroyed{Cause: 16}
	e.Channel.ID = id
	return event(e)
}

func hangupReq(id string) func(*Script) []Command {
	e := &ari.ChannelHangupRequest{}
	e.Channel.ID = id
	return event(e)
}

func legUp(id string) func(*Script) []Command {
	return func(s *Script) []Command { return s.LegAnswered(id) }
}

func legEnded(id string, o events.Outcome) func(*Script) []Command {
	return func(s *Script) []Command { return s.LegEnded(id, events.Call{ID: id, Outcome: o}) }
}

func failed(c Command) func(*Script) []Command {
	return func(s *Script) []Command { return s.Failed(c, errors.New("ari 404")) }
}

func hookPost(seq int, event string, timerName string, data ...string) []string {
	p := fmt.Sprintf("post %d %s %s", seq, event, hook)
	if len(data) > 0 {
		p += " " + strings.Join(data, " ")
	}
	return []string{p, "timer " + timerName + " 5s"}
}

func cat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestScript(t *testing.T) {
	answered := hookPost(1, "answered", "c1-t1")
	cases := []struct {
		name    string
		cfg     Config
		steps   []step
		done    bool
		whError string
	}{
		{
			name: "say then actions run out: hang up",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"say":"4711"}]}`), []string{"cancel c1-t1", "play c1 c1-p2 digits:4711"}},
				{pbDone("c1-p2"), []string{"hangup c1"}},
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "play a list, then an unrelated playback's end is ignored",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"play":["sound:hello-world","tone:ring"]},{"hangup":{}}]}`),
					[]string{"cancel c1-t1", "play c1 c1-p2 sound:hello-world,tone:ring"}},
				{pbDone("other-p2"), nil},
				{pbDone("c1-p2"), []string{"hangup c1"}},
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "gather: prompt, digits count reached, gathered to action, its reply runs",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"gather":{"digits":2,"prompt":"sound:enter","action":"https://h.example/g"}},{"say":"9"}]}`),
					[]string{"cancel c1-t1", "play c1 c1-p2 sound:enter"}},
				{pbDone("c1-p2"), []string{"timer c1-t3 5s"}},
				{dtmf("4"), []string{"timer c1-t4 5s"}},
				{timer("c1-t3"), nil}, // replaced by the key: stale
				{dtmf("2"), []string{"cancel c1-t4", "post 2 gathered https://h.example/g digits=42 finished_by=digits", "timer c1-t5 5s"}},
				{reply(2, `{"actions":[{"continue":{}}]}`), []string{"cancel c1-t5", "continue c1 confirm,s"}},
			},
			cfg:  Config{Context: "confirm"},
			done: true,
		},
		{
			name: "gather: DTMF before the prompt ends stops the prompt",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"gather":{"digits":1,"prompt":["sound:press-1"]}}]}`),
					[]string{"cancel c1-t1", "play c1 c1-p2 sound:press-1"}},
				{dtmf("1"), cat([]string{"stop c1-p2"}, hookPost(2, "gathered", "c1-t3", "digits=1", "finished_by=digits"))},
				{pbDone("c1-p2"), nil}, // the stopped prompt's end
				{reply(2, `{"actions":[]}`), []string{"cancel c1-t3", "hangup c1"}},
			},
		},
		{
			name: "gather: # with no digits",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"gather":{"timeout":3}}]}`), []string{"cancel c1-t1", "timer c1-t2 3s"}},
				{dtmf("#"), cat([]string{"cancel c1-t2"}, hookPost(2, "gathered", "c1-t3", "digits=", "finished_by=finish_on"))},
			},
		},
		{
			name: "gather: timeout after some digits",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"gather":{"digits":4,"timeout":2}}]}`), []string{"cancel c1-t1", "timer c1-t2 2s"}},
				{dtmf("7"), []string{"timer c1-t3 2s"}},
				{timer("c1-t3"), hookPost(2, "gathered", "c1-t4", "digits=7", "finished_by=timeout")},
			},
		},
		{
			name: "DTMF outside a gather is ignored",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"play":"sound:x"}]}`), []string{"cancel c1-t1", "play c1 c1-p2 sound:x"}},
				{dtmf("5"), nil},
			},
		},
		{
			name: "record: finished, recorded posted to the webhook",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"record":{"max_seconds":30,"beep":true}}]}`),
					[]string{"cancel c1-t1", "record c1 c1-r2 max=30 beep=true on=#"}},
				{recDone("c1-r2", 4), hookPost(2, "recorded", "c1-t3",
					"recording=map[cause: duration_s:4 failed:false format:wav name:c1-r2]")},
				{reply(2, `{"actions":[{"hangup":{}}]}`), []string{"cancel c1-t3", "hangup c1"}},
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "record: caller hangs up mid-record; the recording is still reported",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"record":{"finish_on":"any"}},{"say":"1"}]}`),
					[]string{"cancel c1-t1", "record c1 c1-r2 max=60 beep=false on=any"}},
				{destroyed("c1"), []string{"timer c1-t3 5s"}},
				{recDone("c1-r2", 2), cat([]string{"cancel c1-t3"}, hookPost(2, "recorded", "c1-t4",
					"hangup=true", "recording=map[cause: duration_s:2 failed:false format:wav name:c1-r2]"))},
				{reply(2, `{"actions":[{"say":"1"}]}`), []string{"cancel c1-t4"}},
			},
			done: true,
		},
		{
			name: "record: caller hangs up mid-record as Asterisk 22 orders it: hangup request, RecordingFinished, destroyed",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"record":{}}]}`), []string{"cancel c1-t1", "record c1 c1-r2 max=60 beep=false on=#"}},
				{hangupReq("c1"), nil},
				{recDone("c1-r2", 0), hookPost(2, "recorded", "c1-t3",
					"hangup=true", "recording=map[cause: duration_s:0 failed:false format:wav name:c1-r2]")},
				{reply(2, `{"actions":[{"say":"1"}]}`), []string{"cancel c1-t3"}}, // not run: the call is going
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "record: caller hangs up and the recording never ends: done after the grace",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"record":{}}]}`), []string{"cancel c1-t1", "record c1 c1-r2 max=60 beep=false on=#"}},
				{destroyed("c1"), []string{"timer c1-t3 5s"}},
				{timer("c1-t3"), nil},
			},
			done: true,
		},
		{
			name: "dial: answered leg bridged; leg hangs up; bridge destroyed; dialed to action",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"dial":{"d":"PJSIP/6002","t":20,"i":"+1555","action":"https://h.example/d"}}]}`),
					[]string{"cancel c1-t1", "originate c1-leg2 PJSIP/6002 t=20 i=+1555"}},
				{legUp("c1-leg2"), []string{"bridge c1-b3 c1,c1-leg2"}},
				{legEnded("c1-leg2", events.Completed), []string{"destroy c1-b3",
					"post 2 dialed https://h.example/d dial=map[cause:0 cause_txt: d:PJSIP/6002 dialstatus: duration_ms:<nil> outcome:completed reason: ring_ms:<nil> sip_code:0]",
					"timer c1-t4 5s"}},
			},
		},
		{
			name: "dial: second leg busy, no action: next action",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"dial":{"d":"PJSIP/sipp-busy"}},{"say":"0"}]}`),
					[]string{"cancel c1-t1", "originate c1-leg2 PJSIP/sipp-busy t=30 i="}},
				{legEnded("c1-leg2", events.Busy), []string{"play c1 c1-p3 digits:0"}},
			},
		},
		{
			name: "dial: caller hangs up while bridged: leg hung up, bridge destroyed",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"dial":{"d":"Local/talk@sim"}}]}`),
					[]string{"cancel c1-t1", "originate c1-leg2 Local/talk@sim t=30 i="}},
				{legUp("c1-leg2"), []string{"bridge c1-b3 c1,c1-leg2"}},
				{destroyed("c1"), []string{"hangup c1-leg2", "destroy c1-b3"}},
				{legEnded("c1-leg2", events.Completed), nil},
			},
			done: true,
		},
		{
			name: "dial: caller hangs up while the leg rings",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"dial":{"d":"Local/ring@sim"}}]}`),
					[]string{"cancel c1-t1", "originate c1-leg2 Local/ring@sim t=30 i="}},
				{destroyed("c1"), []string{"hangup c1-leg2"}},
				{legUp("c1-leg2"), nil},
				{legEnded("c1-leg2", events.Canceled), nil},
			},
			done: true,
		},
		{
			name: "continue with its own context and extension",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"continue":{"c":"sales","e":"100"}},{"say":"1"}]}`),
					[]string{"cancel c1-t1", "continue c1 sales,100"}},
			},
			done: true,
		},
		{
			name: "continue refused by Asterisk: hang up",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"continue":{"c":"nocontext"}}]}`), []string{"cancel c1-t1", "continue c1 nocontext,s"}},
				{failed(ContinueDialplan{Channel: "c1", Context: "nocontext", Extension: "s"}), []string{"hangup c1"}},
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "pause, then redirect fetches new actions",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"pause":1.5},{"redirect":"https://other.example/next"}]}`),
					[]string{"cancel c1-t1", "timer c1-t2 1.5s"}},
				{timer("c1-t2"), []string{"post 2 redirected https://other.example/next", "timer c1-t3 5s"}},
				{reply(2, `{"actions":[{"hangup":{}}]}`), []string{"cancel c1-t3", "hangup c1"}},
			},
		},
		{
			name: "empty reply body: no actions, hang up",
			steps: []step{
				{start(), answered},
				{replyStatus(1, 204, ""), []string{"cancel c1-t1", "hangup c1"}},
			},
		},
		{
			name:    "webhook answers 500: hang up",
			steps:   []step{{start(), answered}, {replyStatus(1, 500, `oops`), []string{"cancel c1-t1", "hangup c1"}}, {destroyed("c1"), nil}},
			done:    true,
			whError: "webhook answered 500",
		},
		{
			name:    "webhook unreachable with a fallback: continue there",
			cfg:     Config{FallbackContext: "fallback", FallbackExtension: "operator"},
			steps:   []step{{start(), answered}, {replyErr(1, errors.New("connection refused")), []string{"cancel c1-t1", "continue c1 fallback,operator"}}},
			done:    true,
			whError: "webhook unreachable: connection refused",
		},
		{
			name: "invalid document: hang up",
			steps: []step{{start(), answered},
				{reply(1, `{"actions":[{"shout":"hi"}]}`), []string{"cancel c1-t1", "hangup c1"}}},
			whError: "invalid webhook document: action 0: shout: unknown action",
		},
		{
			name: "webhook answers late: the timeout decides, the late reply is ignored",
			steps: []step{
				{start(), answered},
				{timer("c1-t1"), []string{"hangup c1"}},
				{reply(1, `{"actions":[{"say":"1"}]}`), nil},
				{destroyed("c1"), nil},
			},
			done:    true,
			whError: "webhook did not answer within 5s",
		},
		{
			name: "caller hangs up while the webhook is asked: its reply is not run",
			steps: []step{
				{start(), answered},
				{destroyed("c1"), nil},
				{reply(1, `{"actions":[{"say":"1"}]}`), []string{"cancel c1-t1"}},
			},
			done: true,
		},
		{
			name: "a refused hangup is tried again",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"hangup":{}}]}`), []string{"cancel c1-t1", "hangup c1"}},
				{failed(HangupChannel{Channel: "c1"}), []string{"timer c1-t2 1s"}},
				{timer("c1-t2"), []string{"hangup c1"}},
				{destroyed("c1"), nil},
			},
			done: true,
		},
		{
			name: "playback refused: next action",
			steps: []step{
				{start(), answered},
				{reply(1, `{"actions":[{"play":"sound:nope"},{"hangup":{}}]}`), []string{"cancel c1-t1", "play c1 c1-p2 sound:nope"}},
				{failed(Play{Channel: "c1", PlaybackID: "c1-p2"}), []string{"hangup c1"}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.CallID, cfg.Webhook = "c1", hook
			s := New(cfg)
			for i, st := range tc.steps {
				got := render(st.in(s))
				if !reflect.DeepEqual(got, st.want) {
					t.Fatalf("step %d:\n got  %q\n want %q", i, got, st.want)
				}
			}
			if s.Done() != tc.done {
				t.Errorf("Done() = %v, want %v", s.Done(), tc.done)
			}
			if s.WebhookError() != tc.whError {
				t.Errorf("WebhookError() = %q, want %q", s.WebhookError(), tc.whError)
			}
		})
	}
}

// A webhook that answers every redirect with another redirect is cut off.
func TestScriptStepLimit(t *testing.T) {
	s := New(Config{CallID: "c1", Webhook: hook})
	s.Start()
	var out []Command
	for seq := 1; seq <= MaxSteps+1; seq++ {
		out = s.Reply(seq, Reply{Status: 200, Body: []byte(`{"actions":[{"redirect":"https://h.example/again"}]}`)})
	}
	if got := render(out); !reflect.DeepEqual(got, []string{"cancel c1-t1001", "hangup c1"}) {
		t.Errorf("after %d redirects: %q", MaxSteps, got)
	}
	if !strings.Contains(s.WebhookError(), "more than 1000 actions") {
		t.Errorf("webhook error %q", s.WebhookError())
	}
}

func TestParseRefuses(t *testing.T) {
	for _, doc := range []string{
		`{"actions":[{"say":"12a"}]}`,
		`{"actions":[{"say":"1","play":"sound:x"}]}`,
		`{"actions":[{"play":"hello-world"}]}`,
		`{"actions":[{"play":"file:/etc/passwd"}]}`,
		`{"actions":[{"gather":{"digits":-1}}]}`,
		`{"actions":[{"gather":{"finish_on":"##"}}]}`,
		`{"actions":[{"gather":{"timeout":0}}]}`,
		`{"actions":[{"gather":{"action":"ftp://x"}}]}`,
		`{"actions":[{"record":{"finish_on":"1"}}]}`,
		`{"actions":[{"record":{"max_seconds":0}}]}`,
		`{"actions":[{"dial":{"d":"6002"}}]}`,
		`{"actions":[{"dial":{"d":"PJSIP/a,PJSIP/b"}}]}`,
		`{"actions":[{"continue":{"c":"a b"}}]}`,
		`{"actions":[{"pause":0}]}`,
		`{"actions":[{"redirect":"/relative"}]}`,
		`{"actions":[{"hangup":{"now":true}}]}`,
		`{"actions":{}}`,
		`{"actions":[],"extra":1}`,
		`not json`,
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%s) accepted", doc)
		}
	}
	acts, err := Parse([]byte(`{"actions":[{"gather":{"prompt":["sound:a","digits:12"]}},{"pause":2},{"hangup":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	g := acts[0].Gather
	if g == nil || g.FinishOn != "#" || g.Timeout != 5 || len(g.Prompt) != 2 || acts[1].Pause != 2 || !acts[2].Hangup {
		t.Errorf("parsed %+v %+v", acts, g)
	}
	if acts[0].Kind() != "gather" {
		t.Errorf("kind %q", acts[0].Kind())
	}
}

// The actions as SPEC §9 writes them parse.
func TestParseSpecExamples(t *testing.T) {
	doc := `{"actions":[{"say":"1234"},{"play":"sound:hello-world"},
		{"gather":{"digits":4,"finish_on":"#","timeout":5,"prompt":["sound:hello-world"],"action":"https://h.example/g"}},
		{"record":{"max_seconds":60,"beep":true,"finish_on":"#","action":"https://h.example/r"}},
		{"dial":{"d":"PJSIP/6002","t":20,"i":"\"Sales\" <+15550001111>","action":"https://h.example/d"}},
		{"continue":{"c":"sales","e":"100"}},{"pause":2},{"redirect":"https://h.example/next"},{"hangup":{}}]}`
	acts, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, a := range acts {
		kinds = append(kinds, a.Kind())
	}
	want := []string{"say", "play", "gather", "record", "dial", "continue", "pause", "redirect", "hangup"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
	if d := acts[4].Dial; d == nil || d.D != "PJSIP/6002" || d.T != 20 || d.I != `"Sales" <+15550001111>` {
		t.Errorf("dial %+v", d)
	}
}
