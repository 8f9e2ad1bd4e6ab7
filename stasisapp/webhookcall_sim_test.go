package stasisapp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// startSim runs the simulator with the recorded endpoints and dialplan.
func startSim(t *testing.T) *sim.Server {
	t.Helper()
	s := sim.New(sim.Config{Username: "u", Password: "p", Endpoints: sim.RecordedEndpoints(), Contexts: sim.RecordedContexts()})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestWebhookCallSim runs every webhook scenario on the simulator, through the recording
// proxy, checks it as on the real PBX, and holds the simulator's traffic to the
// recordings made on the real PBX (testdata/ari/recordings/webhook): the same REST
// statuses and the same sequence of call, leg, playback, recording and bridge events.
func TestWebhookCallSim(t *testing.T) {
	s := startSim(t)
	for _, sc := range webhookScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			rec := newARIRecorder(t, s.URL(), sc.name, sc.desc, "sim")
			e := startAppOn(t, rec.URL+"/ari", "u", "p")
			sc.run(t, e)
			want := skeleton(t, readRecording(t, filepath.Join("..", "testdata", "ari", "recordings", "webhook", sc.name+".nosuball.jsonl")))
			deadline := time.Now().Add(3 * time.Second)
			for {
				got := skeleton(t, rec.lines())
				if reflect.DeepEqual(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("simulator traffic differs from the recording:\nREST got:\n  %s\nREST want:\n  %s\nevents got:\n  %s\nevents want:\n  %s",
						strings.Join(got.REST, "\n  "), strings.Join(want.REST, "\n  "),
						strings.Join(got.Events, "\n  "), strings.Join(want.Events, "\n  "))
				}
				<-time.After(20 * time.Millisecond) // trailing events, polled under a deadline
			}
		})
	}
	t.Run("the rest of the cases", func(t *testing.T) {
		e := startAppOn(t, s.URL(), "u", "p")
		t.Run("gather until # dtmf", func(t *testing.T) { testGatherFinishOn(t, e, "Local/dtmf@sim") })
		t.Run("dial busy", func(t *testing.T) { testDialBusy(t, e, "Local/talk@sim", "PJSIP/sipp-busy") })
		t.Run("caller hangs up while bridged", func(t *testing.T) {
			testCallerHangsUpWhileBridged(t, e, s.URL(), "u", "p", "PJSIP/sipp-answer", "Local/talk@sim")
		})
		t.Run("webhook 500 to fallback", func(t *testing.T) { testWebhookFailureFallback(t, e, "Local/talk@sim") })
		t.Run("webhook unreachable", func(t *testing.T) { testWebhookUnreachable(t, e, "Local/talk@sim") })
		t.Run("webhook too slow", func(t *testing.T) { testWebhookSlow(t, e, "Local/talk@sim") })
	})
}

func (r *ariRecorder) lines() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Split(bytes.TrimSpace(r.out.Bytes()), []byte("\n"))
}

func readRecording(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	return out
}

// traffic is what of a webhook call's ARI traffic the simulator must reproduce.
type traffic struct {
	REST   []string // method path status [response keys], ids as roles
	Events []string // type role [digit], in order
}

// skeleton reduces a recording to its traffic: ids become roles (call, leg, p, r, b),
// the ;2 halves of Local channels and dialplan/variable chatter are left out.
func skeleton(t *testing.T, lines [][]byte) traffic {
	var tr traffic
	call := callOf(lines)
	role := func(id string) string {
		switch {
		case id == call:
			return "call"
		case !strings.HasPrefix(id, call+"-") || strings.HasSuffix(id, ".2"):
			return ""
		}
		rest := strings.TrimPrefix(id, call+"-")
		return strings.TrimRight(rest, "0123456789")
	}
	for _, l := range lines {
		var m struct {
			Kind         string          `json:"kind"`
			Method       string          `json:"method"`
			Path         string          `json:"path"`
			Query        json.RawMessage `json:"query"`
			Status       int             `json:"status"`
			ResponseBody json.RawMessage `json:"response_body"`
			Event        struct {
				Type      string              `json:"type"`
				Digit     string              `json:"digit"`
				Channel   struct{ ID string } `json:"channel"`
				Playback  struct{ ID, State string }
				Recording struct{ Name, State string }
				Bridge    struct{ ID string }
			} `json:"event"`
		}
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		switch m.Kind {
		case "rest":
			if m.Path == "/ari/asterisk/info" {
				continue // the App's reconcile: once per connect
			}
			var parts []string
			for _, p := range strings.Split(m.Path, "/") {
				if u, err := url.PathUnescape(p); err == nil && role(u) != "" && strings.Contains(u, "-") {
					p = role(u)
				}
				parts = append(parts, p)
			}
			line := m.Method + " " + strings.Join(parts, "/") + " " + strconv.Itoa(m.Status)
			var body map[string]json.RawMessage
			if json.Unmarshal(m.ResponseBody, &body) == nil && !strings.HasSuffix(m.Path, "/ari/channels") {
				keys := make([]string, 0, len(body))
				for k := range body {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				line += " " + strings.Join(keys, ",")
			}
			tr.REST = append(tr.REST, line)
		case "ws":
			e := m.Event
			var r string
			switch e.Type {
			case "StasisStart", "StasisEnd", "ChannelDestroyed", "ChannelEnteredBridge", "ChannelLeftBridge":
				r = role(e.Channel.ID)
			case "ChannelDtmfReceived":
				r = role(e.Channel.ID) + " " + e.Digit
			case "PlaybackStarted", "PlaybackFinished":
				r = role(e.Playback.ID) + " " + e.Playback.State
			case "RecordingStarted", "RecordingFinished", "RecordingFailed":
				r = role(e.Recording.Name) + " " + e.Recording.State
			case "BridgeDestroyed":
				r = role(e.Bridge.ID)
			}
			if r != "" && !strings.HasPrefix(r, " ") {
				tr.Events = append(tr.Events, e.Type+" "+r)
			}
		}
	}
	return tr
}

// callOf is the channel id of a recording's first originate (events may precede its reply).
func callOf(lines [][]byte) string {
	for _, l := range lines {
		var m struct {
			Kind, Method, Path string
			Query              struct{ ChannelID string }
		}
		if json.Unmarshal(l, &m) == nil && m.Kind == "rest" && m.Method == "POST" && m.Path == "/ari/channels" {
			return m.Query.ChannelID
		}
	}
	return ""
}

// A webhook-driven call still in our Stasis app when the daemon restarts cannot have its
// script resumed: the restarted daemon hangs it up and says why, it is not held.
func TestResumedWebhookCallIsHungUp(t *testing.T) {
	s := startSim(t)
	h := newHookServer(t, func(map[string]any) (int, string) { return 200, actions(`{"pause":60}`) })
	store := &memStore{}
	e1, stop1 := runWebhookApp(t, s.URL(), "u", "p", "whresume", store)
	r := webhookReq(callID("wh-resume"), "Local/talk@sim", h.URL)
	r.Wait = stasisapp.WaitAnswer
	if _, err := e1.app.Originate(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the webhook asked", func() bool { return len(h.received()) == 1 })
	stop1() // the daemon stops without draining: the call stays in Stasis, pausing

	e2, stop2 := runWebhookApp(t, s.URL(), "u", "p", "whresume", store)
	defer stop2()
	evs := e2.pub.waitEnded(t, r.ID, 10*time.Second)
	last := evs[len(evs)-1]
	if last.Outcome != events.Completed || !strings.Contains(last.Call.WebhookError, "cannot be resumed") {
		t.Errorf("resumed webhook call ended %s (%s), webhook_error %q", last.Outcome, last.Reason, last.Call.WebhookError)
	}
	if len(h.received()) != 1 {
		t.Errorf("the restarted daemon asked the webhook again: %v", h.events())
	}
}
