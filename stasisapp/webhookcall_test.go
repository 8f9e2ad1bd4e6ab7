package stasisapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// plainWebhooks posts over net/http without signing: the tests' stand-in for the
// events/webhook Sender (which signs and enforces the target policy).
type plainWebhooks struct{ c *http.Client }

func (p plainWebhooks) Post(ctx context.Context, _, url, eventID string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Invokeari-Event-Id", eventID)
	resp, err := p.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// hookServer is a call's webhook: it records what it is sent and answers with answer.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	got    []map[string]any
	answer func(ev map[string]any) (status int, body string)
}

func newHookServer(t *testing.T, answer func(ev map[string]any) (int, string)) *hookServer {
	h := &hookServer{answer: answer}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		ev["_path"], ev["_at"] = r.URL.Path, time.Now()
		h.mu.Lock()
		h.got = append(h.got, ev)
		h.mu.Unlock()
		status, body := h.answer(ev)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) received() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.got...)
}

func (h *hookServer) events() []string {
	var out []string
	for _, ev := range h.received() {
		out = append(out, fmt.Sprint(ev["event"]))
	}
	return out
}

type pbxEnv struct {
	app *stasisapp.App
	pub *memPublisher
}

// startAppOn runs an App with webhook support against the ARI at url.
func startAppOn(t *testing.T, url, user, pass string) *pbxEnv {
	t.Helper()
	e, stop := runWebhookApp(t, url, user, pass, fmt.Sprintf("whtest-%d", time.Now().UnixNano()), nil)
	t.Cleanup(stop)
	return e
}

// runWebhookApp runs an App with webhook support (and store, when not nil) until stop.
func runWebhookApp(t *testing.T, url, user, pass, appName string, store stasisapp.Store) (*pbxEnv, func()) {
	t.Helper()
	c, err := ari.NewClient(ari.Config{URL: url, Username: user, Password: pass, App: appName})
	if err != nil {
		t.Fatal(err)
	}
	pub := newMemPublisher()
	app, err := stasisapp.New(stasisapp.Config{Servers: []stasisapp.Server{{Name: "pbx", AppName: appName, ARI: c}},
		Publisher: pub, Store: store, Webhooks: plainWebhooks{c: &http.Client{}}, WebhookTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("App.Run: %v", err)
			}
		})
	}
	waitFor(t, "link connected", func() bool { return app.Status()[0].Connected })
	return &pbxEnv{app: app, pub: pub}, stop
}

// needPBX returns the real PBX kit's ARI (from `make itest` or `pbx env`), or skips loudly.
func needPBX(t *testing.T) (url, user, pass string) {
	t.Helper()
	url = os.Getenv("INVOKEARI_TEST_ARI_URL")
	if url == "" {
		t.Skip("REAL-PBX TEST SKIPPED: INVOKEARI_TEST_ARI_URL is not set (run under `make itest` or " +
			"`eval \"$(../shared/asterisk/pbx env --export)\"`)")
	}
	return url, os.Getenv("INVOKEARI_TEST_ARI_USER"), os.Getenv("INVOKEARI_TEST_ARI_PASS")
}

func webhookReq(id, endpoint, hook string) stasisapp.Request {
	r := req(id, endpoint, 15*time.Second, stasisapp.WaitEnd)
	r.Context, r.Extension = "sink", hook
	r.Webhook = hook
	return r
}

// runWebhookCall originates r, waits for its end and returns the reply, its events and
// its transcript as one string.
func runWebhookCall(t *testing.T, e *pbxEnv, r stasisapp.Request) (events.Event, []events.Event, string) {
	t.Helper()
	res, err := e.app.Originate(context.Background(), r)
	if err != nil {
		t.Fatalf("originate: %v (%+v)", err, res)
	}
	evs := e.pub.waitEnded(t, r.ID, 5*time.Second)
	if n := countEnded(evs); n != 1 {
		t.Errorf("%d ended events", n)
	}
	var b strings.Builder
	for _, s := range res.Transcript {
		fmt.Fprintf(&b, "%s [%d]\n", s.Step, s.HTTPCode)
	}
	return evs[len(evs)-1], evs, b.String()
}

func webhookExchanges(evs []events.Event) []events.WebhookExchange {
	var out []events.WebhookExchange
	for _, ev := range evs {
		if ev.Event == events.Webhook && ev.Webhook != nil {
			out = append(out, *ev.Webhook)
		}
	}
	return out
}

func actions(a ...string) string { return `{"actions":[` + strings.Join(a, ",") + `]}` }

func callID(prefix string) string { return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()) }

// testSayGather: say, then gather with a prompt; the callee presses 1 (dtmf1: three
// seconds after answering; dtmf: 1234#); `gathered` goes to the gather's action and its
// reply runs; then the actions run out and the call is hung up.
func testSayGather(t *testing.T, e *pbxEnv, endpoint string) {
	var h *hookServer
	h = newHookServer(t, func(ev map[string]any) (int, string) {
		switch ev["event"] {
		case "answered":
			return 200, actions(`{"say":"42"}`,
				`{"gather":{"digits":1,"timeout":8,"prompt":["sound:hello-world","sound:hello-world"],"action":"`+h.URL+`/gathered"}}`)
		case "gathered":
			return 200, actions(`{"play":"sound:digits/1"}`)
		}
		return 500, ""
	})
	last, evs, tr := runWebhookCall(t, e, webhookReq(callID("wh-gather"), endpoint, h.URL+"/call"))
	got := h.received()
	if len(got) != 2 || got[0]["event"] != "answered" || got[1]["event"] != "gathered" {
		t.Fatalf("webhook got %v, want answered then gathered\n%s", h.events(), tr)
	}
	if got[1]["digits"] != "1" || got[1]["finished_by"] != "digits" || got[1]["_path"] != "/gathered" {
		t.Errorf("gathered = %v, want digits 1 by count at /gathered", got[1])
	}
	if last.Outcome != events.Completed || last.Call.WebhookError != "" {
		t.Errorf("ended %s (%s), webhook_error %q", last.Outcome, last.Reason, last.Call.WebhookError)
	}
	if ex := webhookExchanges(evs); len(ex) != 2 || ex[0].Status != 200 || ex[0].Host != strings.TrimPrefix(h.URL, "http://") {
		t.Errorf("webhook events %+v", ex)
	}
	for _, want := range []string{"action say", "ari play [200]", "action gather", "no more actions: hanging up"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
}

// testGatherFinishOn: Local/dtmf@sim presses 1234# two seconds after answering, during
// the prompt: the prompt stops, the keys are collected until #, which ends the input.
func testGatherFinishOn(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(ev map[string]any) (int, string) {
		if ev["event"] == "answered" {
			return 200, actions(`{"gather":{"timeout":8,"prompt":["sound:hello-world","sound:hello-world"]}}`)
		}
		return 200, actions(`{"hangup":{}}`)
	})
	last, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-gather4"), endpoint, h.URL))
	got := h.received()
	if len(got) != 2 || got[1]["digits"] != "1234" || got[1]["finished_by"] != "finish_on" {
		t.Fatalf("webhook got %v, want gathered 1234 by #\n%s", got, tr)
	}
	if !strings.Contains(tr, "ari stop playback") {
		t.Errorf("the prompt was not stopped by the first key:\n%s", tr)
	}
	if last.Outcome != events.Completed {
		t.Errorf("ended %s (%s)", last.Outcome, last.Reason)
	}
}

// testRecord: a live recording of max 2 s, reported with `recorded`.
func testRecord(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(ev map[string]any) (int, string) {
		switch ev["event"] {
		case "answered":
			return 200, actions(`{"record":{"max_seconds":2,"beep":true}}`)
		case "recorded":
			return 200, actions(`{"hangup":{}}`)
		}
		return 500, ""
	})
	last, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-rec"), endpoint, h.URL))
	got := h.received()
	if len(got) != 2 || got[1]["event"] != "recorded" {
		t.Fatalf("webhook got %v, want answered then recorded\n%s", h.events(), tr)
	}
	rec, _ := got[1]["recording"].(map[string]any)
	if _, ok := rec["duration_s"].(float64); rec == nil || rec["failed"] != false || rec["format"] != "wav" || !ok {
		t.Errorf("recorded = %v", got[1])
	}
	// The kit's callees send no audio, so Asterisk reports duration 0; max_seconds ends it.
	if took := got[1]["_at"].(time.Time).Sub(got[0]["_at"].(time.Time)); took < 1500*time.Millisecond || took > 8*time.Second {
		t.Errorf("recorded %s after answered, want about max_seconds (2 s)", took)
	}
	if last.Outcome != events.Completed {
		t.Errorf("ended %s (%s)", last.Outcome, last.Reason)
	}
}

// testRecordHangup: the caller hangs up mid-record (Local/answer@sim: 2 s after answer);
// the recording is still reported, marked hangup, and the call ends completed.
func testRecordHangup(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(ev map[string]any) (int, string) {
		if ev["event"] == "answered" {
			return 200, actions(`{"record":{"max_seconds":10}}`, `{"say":"1"}`)
		}
		return 200, actions(`{"say":"2"}`)
	})
	last, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-rechup"), endpoint, h.URL))
	if last.Outcome != events.Completed {
		t.Errorf("ended %s (%s)", last.Outcome, last.Reason)
	}
	waitFor(t, "recorded", func() bool { return len(h.received()) == 2 })
	got := h.received()
	if got[1]["event"] != "recorded" || got[1]["hangup"] != true {
		t.Errorf("webhook got %v, want recorded with hangup\n%s", got[1], tr)
	}
}

// testDialBridge: a second leg that answers and later hangs up by itself; both legs were
// in a mixing bridge; `dialed` reports the leg's own outcome.
func testDialBridge(t *testing.T, e *pbxEnv, endpoint, leg string) {
	var h *hookServer
	h = newHookServer(t, func(ev map[string]any) (int, string) {
		switch ev["event"] {
		case "answered":
			return 200, actions(`{"dial":{"d":"` + leg + `","t":10,"action":"` + h.URL + `/dialed"}}`)
		case "dialed":
			return 200, actions(`{"say":"0"}`)
		}
		return 500, ""
	})
	last, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-dial"), endpoint, h.URL))
	got := h.received()
	if len(got) != 2 || got[1]["event"] != "dialed" {
		t.Fatalf("webhook got %v, want answered then dialed\n%s", h.events(), tr)
	}
	d, _ := got[1]["dial"].(map[string]any)
	if d == nil || d["outcome"] != "completed" || d["d"] != leg {
		t.Errorf("dialed = %v, want the second leg completed", got[1])
	}
	if last.Outcome != events.Completed {
		t.Errorf("ended %s (%s)", last.Outcome, last.Reason)
	}
	for _, want := range []string{"second leg", "ari mixing bridge [200]", "ari destroy bridge [200]"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
}

// testDialBusy: a busy second leg is reported busy and the call goes on.
func testDialBusy(t *testing.T, e *pbxEnv, endpoint, leg string) {
	h := newHookServer(t, func(ev map[string]any) (int, string) {
		switch ev["event"] {
		case "answered":
			return 200, actions(`{"dial":{"d":"` + leg + `","t":10,"action":"` + "http://" + "HOST" + `/dialed"}}`)
		case "dialed":
			return 200, actions(`{"hangup":{}}`)
		}
		return 500, ""
	})
	orig := h.answer
	h.answer = func(ev map[string]any) (int, string) {
		s, b := orig(ev)
		return s, strings.ReplaceAll(b, "http://HOST", h.URL)
	}
	_, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-busy"), endpoint, h.URL))
	got := h.received()
	if len(got) != 2 {
		t.Fatalf("webhook got %v\n%s", h.events(), tr)
	}
	if d, _ := got[1]["dial"].(map[string]any); d == nil || d["outcome"] != "busy" {
		t.Errorf("dialed = %v, want busy", got[1])
	}
}

// testCallerHangsUpWhileBridged: the caller (sipp-answer: BYE 2 s after answering) hangs
// up while bridged with the second leg: the leg is hung up and the bridge destroyed; no
// channel of the call is left on Asterisk.
func testCallerHangsUpWhileBridged(t *testing.T, e *pbxEnv, ariURL, user, pass, endpoint, leg string) {
	h := newHookServer(t, func(ev map[string]any) (int, string) {
		return 200, actions(`{"dial":{"d":"`+leg+`","t":10}}`, `{"say":"1"}`)
	})
	r := webhookReq(callID("wh-bhup"), endpoint, h.URL)
	last, _, _ := runWebhookCall(t, e, r)
	if last.Outcome != events.Completed {
		t.Errorf("ended %s (%s)", last.Outcome, last.Reason)
	}
	c, err := ari.NewClient(ari.Config{URL: ariURL, Username: user, Password: pass, App: "whcheck"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no channel of the call left", func() bool {
		chs, err := c.ListChannels(context.Background())
		if err != nil {
			return false
		}
		for _, ch := range chs {
			if strings.HasPrefix(ch.ID, last.ID) {
				return false
			}
		}
		return true
	})
	// The clean-up follows the call's end; an idempotent repeat shows the whole transcript.
	var tr string
	waitFor(t, "the second leg's end", func() bool {
		res, err := e.app.Originate(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, s := range res.Transcript {
			fmt.Fprintf(&b, "%s [%d]\n", s.Step, s.HTTPCode)
		}
		tr = b.String()
		return strings.Contains(tr, "second leg ended")
	})
	for _, want := range []string{"ari mixing bridge [200]", "ari hangup second leg [200]", "ari destroy bridge [200]",
		"second leg ended: completed"} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
	if got := h.events(); len(got) != 1 {
		t.Errorf("webhook got %v; a call that hung up runs no more actions", got)
	}
}

// testContinue: {"continue":{}} hands the call to the request's c (sink: Wait(5), Hangup).
func testContinue(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(map[string]any) (int, string) { return 200, actions(`{"continue":{}}`) })
	last, _, tr := runWebhookCall(t, e, webhookReq(callID("wh-cont"), endpoint, h.URL))
	if !strings.Contains(tr, "ari continue sink,s,1 [200]") {
		t.Errorf("transcript lacks the continue:\n%s", tr)
	}
	if last.Outcome != events.Completed || last.Call.DurationMS == nil || *last.Call.DurationMS < 4000 {
		t.Errorf("ended %s (%s) after %v ms, want completed after the sink's 5 s", last.Outcome, last.Reason, last.Call.DurationMS)
	}
}

// testWebhookFailureFallback: the webhook answers 500: the call goes to the fallback
// context; the record says why.
func testWebhookFailureFallback(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(map[string]any) (int, string) { return 500, `{"error":"down"}` })
	r := webhookReq(callID("wh-fail"), endpoint, h.URL)
	r.WebhookFallback.Context, r.WebhookFallback.Extension = "sink", "s"
	last, evs, tr := runWebhookCall(t, e, r)
	if last.Call.WebhookError != "webhook answered 500" {
		t.Errorf("webhook_error %q", last.Call.WebhookError)
	}
	if !strings.Contains(tr, "ari continue sink,s,1 [200]") {
		t.Errorf("transcript lacks the fallback:\n%s", tr)
	}
	if ex := webhookExchanges(evs); len(ex) != 1 || ex[0].Status != 500 {
		t.Errorf("webhook events %+v", ex)
	}
}

// testWebhookUnreachable: nothing listens: the call is hung up, never held.
func testWebhookUnreachable(t *testing.T, e *pbxEnv, endpoint string) {
	h := newHookServer(t, func(map[string]any) (int, string) { return 200, "" })
	url := h.URL
	h.Close()
	last, _, _ := runWebhookCall(t, e, webhookReq(callID("wh-down"), endpoint, url))
	if !strings.HasPrefix(last.Call.WebhookError, "webhook unreachable") || last.Outcome != events.Completed {
		t.Errorf("ended %s, webhook_error %q", last.Outcome, last.Call.WebhookError)
	}
}

// testWebhookSlow: the webhook never answers within the timeout (2 s here): the call is
// hung up, not held; the late answer is not run.
func testWebhookSlow(t *testing.T, e *pbxEnv, endpoint string) {
	release := make(chan struct{})
	h := newHookServer(t, func(map[string]any) (int, string) {
		<-release
		return 200, actions(`{"say":"1"}`)
	})
	t.Cleanup(func() { close(release) }) // before the server's Close (cleanups run in reverse)
	began := time.Now()
	last, _, _ := runWebhookCall(t, e, webhookReq(callID("wh-slow"), endpoint, h.URL))
	if last.Call.WebhookError != "webhook did not answer within 2s" || last.Outcome != events.Completed {
		t.Errorf("ended %s, webhook_error %q", last.Outcome, last.Call.WebhookError)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the call was held %s", took)
	}
}

// TestWebhookCallPBX runs every action on the real PBX kit (Asterisk 22.10.1).
func TestWebhookCallPBX(t *testing.T) {
	url, user, pass := needPBX(t)
	e := startAppOn(t, url, user, pass)
	t.Run("say+gather dtmf1", func(t *testing.T) { testSayGather(t, e, "Local/dtmf1@sim") })
	t.Run("gather until # dtmf", func(t *testing.T) { testGatherFinishOn(t, e, "Local/dtmf@sim") })
	t.Run("record", func(t *testing.T) {
		// Asterisk answers POST /record with 500 ("Unrecognized recording error: No such
		// file or directory") while its spool has no recording directory; the kit makes none.
		if dir := os.Getenv("INVOKEARI_TEST_PBX_DIR"); dir != "" {
			if err := os.MkdirAll(filepath.Join(dir, "var/spool/asterisk/recording"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		testRecord(t, e, "Local/talk@sim")
	})
	t.Run("record, caller hangs up", func(t *testing.T) { testRecordHangup(t, e, "Local/answer@sim") })
	t.Run("dial+bridge", func(t *testing.T) { testDialBridge(t, e, "PJSIP/sipp-answerwait", "Local/answer@sim") })
	t.Run("dial busy", func(t *testing.T) { testDialBusy(t, e, "Local/talk@sim", "PJSIP/sipp-busy") })
	t.Run("caller hangs up while bridged", func(t *testing.T) {
		testCallerHangsUpWhileBridged(t, e, url, user, pass, "PJSIP/sipp-answer", "Local/talk@sim")
	})
	t.Run("continue", func(t *testing.T) { testContinue(t, e, "Local/talk@sim") })
	t.Run("webhook 500 to fallback", func(t *testing.T) { testWebhookFailureFallback(t, e, "Local/talk@sim") })
	t.Run("webhook unreachable", func(t *testing.T) { testWebhookUnreachable(t, e, "Local/talk@sim") })
	t.Run("webhook too slow", func(t *testing.T) { testWebhookSlow(t, e, "Local/talk@sim") })
}

// webhookScenarios are the webhook-driven calls recorded on the real PBX into
// testdata/ari/recordings/webhook/wh_*.nosuball.jsonl; the simulator is held to them.
var webhookScenarios = []struct {
	name, desc string
	run        func(*testing.T, *pbxEnv)
}{
	{"wh_say_gather_dtmf1", "Local/dtmf1@sim app=X; on StasisStart: play digits:42, play sound:hello-world twice (gather prompt; 1 is pressed during it), DTMF 1, play sound:digits/1, DELETE channel",
		func(t *testing.T, e *pbxEnv) { testSayGather(t, e, "Local/dtmf1@sim") }},
	{"wh_record_talk", "Local/talk@sim app=X; on StasisStart: POST record max 2 s beep, RecordingFinished, DELETE channel",
		func(t *testing.T, e *pbxEnv) { testRecord(t, e, "Local/talk@sim") }},
	{"wh_record_hangup", "Local/answer@sim app=X; on StasisStart: POST record max 10 s; the far end hangs up after 2 s",
		func(t *testing.T, e *pbxEnv) { testRecordHangup(t, e, "Local/answer@sim") }},
	{"wh_dial_bridge", "PJSIP/sipp-answerwait app=X; on StasisStart: originate Local/answer@sim app=X, on its StasisStart: POST /bridges type=mixing, addChannel both; the leg hangs up; DELETE bridge; play digits:0; DELETE channel",
		func(t *testing.T, e *pbxEnv) { testDialBridge(t, e, "PJSIP/sipp-answerwait", "Local/answer@sim") }},
	{"wh_continue", "Local/talk@sim app=X; on StasisStart: continue sink,s,1",
		func(t *testing.T, e *pbxEnv) { testContinue(t, e, "Local/talk@sim") }},
}

// TestRecordWebhookScenarios re-records the webhook scenarios through a recording proxy
// (INVOKEARI_RECORD_ARI=1 with the kit's env); it checks them as TestWebhookCallPBX does.
func TestRecordWebhookScenarios(t *testing.T) {
	url, user, pass := needPBX(t)
	if os.Getenv("INVOKEARI_RECORD_ARI") == "" {
		t.Skip("set INVOKEARI_RECORD_ARI=1 to re-record testdata/ari/recordings/webhook/wh_*.nosuball.jsonl on the real PBX")
	}
	if dir := os.Getenv("INVOKEARI_TEST_PBX_DIR"); dir != "" {
		if err := os.MkdirAll(filepath.Join(dir, "var/spool/asterisk/recording"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, sc := range webhookScenarios {
		t.Run(sc.name, func(t *testing.T) {
			rec := newARIRecorder(t, url, sc.name, sc.desc, "app=X (the App's own websocket, through a recording proxy)")
			e := startAppOn(t, rec.URL+"/ari", user, pass)
			sc.run(t, e)
			// The ;2 halves of Local channels end just after ours.
			time.Sleep(300 * time.Millisecond) //nolint: a recording tail, not synchronisation
			rec.save(t, filepath.Join("..", "testdata", "ari", "recordings", "webhook", sc.name+".nosuball.jsonl"))
		})
	}
}
