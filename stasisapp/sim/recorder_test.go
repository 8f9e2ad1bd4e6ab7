package sim

// The kit recorder drives a recorded scenario, used as a script, against a live Asterisk
// (the PBX kit, ../shared/asterisk) and writes what that Asterisk answered as a new
// recording in the format of testdata/ari/recordings (README there). From the script it
// takes the REST requests (method, path, query, body, credentials), the websocket
// connects, closes and drops, their timing, and the events they reacted to: a request the
// script sent after a StasisStart or Dial event (reactionType) is sent once the live
// Asterisk delivered that event, and everything after it is shifted by as much as the
// live event came later than the recorded one. Recorded channel ids in paths and queries
// are mapped onto the live ids as the conformance replay maps them onto the simulator's.
//
// TestDifferential records every scenario it covers this way and replays the fresh
// recording against the simulator with the conformance test's rules; TestRecord writes
// fresh recordings into testdata/ari/recordings (see its doc comment).

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/invokeari/invokeari/stasisapp/ari"
)

// liveARI is the ARI of a running PBX kit, from the env `pbx start` prints.
type liveARI struct{ url, user, pass string }

// liveHTTP is the REST client for the kit. Asterisk serves at most 100 HTTP sessions
// (http.conf sessionlimit; websockets count) and leaves a connection beyond that
// unanswered, so REST connections are capped, and a reply is not awaited forever.
var liveHTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
	MaxConnsPerHost: 24, MaxIdleConnsPerHost: 24, IdleConnTimeout: 30 * time.Second}}

// needKit returns the kit's ARI from INVOKEARI_TEST_ARI_URL/_USER/_PASS or skips loudly.
func needKit(t *testing.T) liveARI {
	t.Helper()
	k := liveARI{os.Getenv("INVOKEARI_TEST_ARI_URL"), os.Getenv("INVOKEARI_TEST_ARI_USER"), os.Getenv("INVOKEARI_TEST_ARI_PASS")}
	if k.url == "" {
		msg := "*** NO REAL PBX: INVOKEARI_TEST_ARI_URL is not set, so " + t.Name() + " did NOT run. " +
			"Run it with `make itest`, or start the kit (../shared/asterisk/pbx start) and export its env lines. ***"
		fmt.Fprintln(os.Stderr, msg)
		t.Skip(msg)
	}
	if k.user != "invokeari" || k.pass != "secret" {
		// The scripts carry the recordings' credentials (invokeari:secret, and wrong ones
		// on purpose in s5_err_auth); the kit's ari.conf has the same.
		t.Fatalf("kit credentials %q/%q: the recordings' scripts need invokeari/secret", k.user, k.pass)
	}
	return k
}

// kitRestart returns a function that runs `core restart now` on the kit (its control
// command is INVOKEARI_TEST_PBX_CTL), or nil when that is not set.
func kitRestart() func() error {
	ctl := strings.Fields(os.Getenv("INVOKEARI_TEST_PBX_CTL"))
	if len(ctl) == 0 {
		return nil
	}
	return func() error {
		out, err := exec.Command(ctl[0], append(ctl[1:], "rx", "core restart now")...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
}

// outLine is one line of a recording as the recorder writes it (README's line format).
type outLine struct {
	TMs             float64           `json:"t_ms"`
	Kind            string            `json:"kind"`
	Conn            string            `json:"conn,omitempty"`
	What            string            `json:"what,omitempty"`
	Name            string            `json:"name,omitempty"`
	Description     string            `json:"description,omitempty"`
	WSMode          string            `json:"ws_mode,omitempty"`
	Started         string            `json:"started,omitempty"`
	Text            string            `json:"text,omitempty"`
	SentTMs         *float64          `json:"sent_t_ms,omitempty"`
	DurationMs      *float64          `json:"duration_ms,omitempty"`
	Method          string            `json:"method,omitempty"`
	Path            string            `json:"path,omitempty"`
	Query           json.RawMessage   `json:"query,omitempty"`
	RequestBody     json.RawMessage   `json:"request_body,omitempty"`
	Auth            string            `json:"auth,omitempty"`
	Status          int               `json:"status,omitempty"`
	StatusText      string            `json:"status_text,omitempty"`
	ResponseBody    json.RawMessage   `json:"response_body,omitempty"`
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	Error           string            `json:"error,omitempty"`
	Event           json.RawMessage   `json:"event,omitempty"`
}

// scriptInfo is the first line of a recording used as a script.
type scriptInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	WSMode      string `json:"ws_mode"`
}

// liveOpts says how a scenario shares the live PBX.
type liveOpts struct {
	// app replaces the app name "invokeari" on the live side (mapped back in the recording).
	app string
	// filter keeps only the events of this scenario's channels: on a PBX shared with
	// concurrent scenarios a subscribeAll websocket sees every channel in the system.
	filter bool
	// held, when set, takes the scenario's websockets instead of them being closed (a
	// scripted close only ends the recording of the connection's events): closing a
	// subscribeAll websocket while a device state event for its app is being dispatched
	// can deadlock Asterisk's ARI for good (asterisk/asterisk#2170, hit here with ~80
	// concurrent scenarios: 100 HTTP threads stuck, ARI unanswered until restart), so
	// concurrent runs close them together once no call is left on the PBX.
	held *heldConns
	// restart runs `core restart now` on the PBX for scripts that do; nil: such scripts
	// fail with errNeedsRestart.
	restart func() error
}

// heldConns collects websockets to close later.
type heldConns struct {
	mu    sync.Mutex
	conns []*websocket.Conn
}

func (h *heldConns) add(c *websocket.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
}

// closeAll closes every held websocket with a close frame.
func (h *heldConns) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		c.Close()
	}
	h.conns = nil
}

// recorder records one scenario from a live ARI.
type recorder struct {
	r      *replay
	script []recLine
	info   scriptInfo
	liveOpts
	start time.Time
	shift time.Duration // how much later than scripted the run is (waits for late events)
	out   []outLine
	conns []string // websocket labels in connect order

	mu     sync.Mutex
	ours   map[string]bool // channel ids of this scenario
	pairs  map[string]bool // Local pair names (without ;1/;2) of this scenario
	parsed map[*wsClient][]evInfo
	// restarted: Asterisk was restarted; connects are retried until they succeed.
	restarted bool
}

// errNeedsRestart marks scripts that restart or stop Asterisk.
var errNeedsRestart = errors.New("the script restarts or stops Asterisk")

// liveResult is a scenario recorded from a live ARI.
type liveResult struct {
	data []byte // the recording (JSONL)
	// lag is the most an event arrived after its timestamp: how far the PBX's event
	// delivery fell behind (the scripts' timing assumes an unloaded PBX, ~1 ms).
	lag time.Duration
	// slowest is the longest a REST request took: a PBX that slow runs the script's
	// timers late, and a scripted request may then see a state it was meant to miss.
	slowest time.Duration
}

// recordLive runs script against the live ARI k and returns the new recording.
func recordLive(t *testing.T, k liveARI, script []recLine, o liveOpts) (liveResult, error) {
	if len(script) == 0 || script[0].What != "scenario" {
		return liveResult{}, errors.New("script has no scenario line")
	}
	info := scriptInfo{Name: script[0].Name, Description: script[0].Description, WSMode: script[0].WSMode}
	rec := &recorder{
		r: &replay{t: t, url: k.url, app: o.app, want: "real", hc: liveHTTP, clients: map[string]*wsClient{},
			canon: map[string]string{}, simByCn: map[string]string{}},
		script: script, info: info, liveOpts: o,
		ours: map[string]bool{}, pairs: map[string]bool{}, parsed: map[*wsClient][]evInfo{},
	}
	for _, l := range script { // learn the script's ids, as the replay does
		var v any
		_ = json.Unmarshal(l.ResponseBody, &v)
		rec.r.learn(v, false)
		_ = json.Unmarshal(l.Event, &v)
		rec.r.learn(v, false)
	}
	rec.start = time.Now()
	rec.out = append(rec.out, outLine{Kind: "meta", What: "scenario", Name: info.Name, WSMode: info.WSMode,
		Description: info.Description, Started: rec.start.UTC().Format(time.RFC3339Nano)})
	defer func() {
		for _, c := range rec.r.clients {
			if o.held != nil {
				o.held.add(c.conn)
			} else {
				c.conn.Close()
			}
		}
	}()
	for _, l := range script {
		if err := rec.step(l); err != nil {
			return liveResult{}, fmt.Errorf("%s at t=%.1f ms: %w", info.Name, l.TMs, err)
		}
	}
	rec.out = append(rec.out, outLine{TMs: rec.ms(time.Now()), Kind: "meta", What: "scenario_end"})
	return rec.encode(o.app)
}

// ms is t as milliseconds since the scenario started, at 0.1 ms resolution.
func (rec *recorder) ms(t time.Time) float64 {
	return float64(t.Sub(rec.start).Round(100*time.Microsecond)) / float64(time.Millisecond)
}

// pace waits until scripted time at (plus the shift) has come. A step that is due
// already (the previous one took longer than scripted) shifts the rest of the script, so
// that the scripted gaps between requests hold: Asterisk's timers run from them.
func (rec *recorder) pace(at float64) {
	due := rec.start.Add(rec.shift + time.Duration(at*float64(time.Millisecond)))
	if d := time.Until(due); d > 0 {
		<-time.After(d) // scripted pacing, not synchronisation
		return
	}
	rec.shift += time.Since(due)
}

// react waits for the events the script had seen by scripted time at and reacted to
// (reactionType): the last one, as often as it had occurred by then; before a close or
// the end (final), for the last event about a channel, so that a scenario's last events
// are not cut off when the live PBX is a little slower than the recorded one.
func (rec *recorder) react(at float64, final bool) {
	for _, label := range rec.conns {
		var tags []string
		for _, l := range rec.script {
			if l.Kind == "ws" && l.Conn == label && l.TMs <= at {
				ei := parseEvInfo(l.Event)
				if reactionType(ei.typ) || final && ei.chans[0].id+ei.chans[1].id != "" && ei.typ != "ChannelCreated" {
					tags = append(tags, ei.tag)
				}
			}
		}
		if len(tags) == 0 {
			continue
		}
		last := tags[len(tags)-1]
		n := 0
		for _, tg := range tags {
			if tg == last {
				n++
			}
		}
		due := rec.start.Add(rec.shift + time.Duration(at*float64(time.Millisecond)))
		limit := 10 * time.Second
		if final {
			limit = 3 * time.Second
		}
		if rec.waitTag(rec.r.clients[label], last, n, time.Until(due)+limit) {
			if late := time.Since(due); late > 0 {
				rec.shift += late
			}
		}
	}
}

// evInfo is what the recorder needs of an event, parsed once.
type evInfo struct {
	typ, tag string
	chans    [2]struct{ id, name string } // channel, peer
	ts       time.Time
}

func parseEvInfo(raw json.RawMessage) evInfo {
	var e struct {
		Type, Timestamp string
		Channel, Peer   *struct{ ID, Name string }
	}
	_ = json.Unmarshal(raw, &e)
	ei := evInfo{typ: e.Type, tag: eventTag(raw)}
	for i, ch := range []*struct{ ID, Name string }{e.Channel, e.Peer} {
		if ch != nil {
			ei.chans[i].id, ei.chans[i].name = ch.ID, ch.Name
		}
	}
	ei.ts, _ = time.Parse(ari.TimeLayout, e.Timestamp)
	return ei
}

// infos returns c's events so far, each parsed once, and whether c is closed.
func (rec *recorder) infos(c *wsClient) ([]evInfo, bool, chan struct{}) {
	c.mu.Lock()
	fresh := c.events[len(rec.parsed[c]):]
	fresh, closed, ch := slices.Clone(fresh), c.closed, c.cond
	c.mu.Unlock()
	for _, e := range fresh {
		rec.parsed[c] = append(rec.parsed[c], parseEvInfo(e))
	}
	return rec.parsed[c], closed, ch
}

// waitTag waits until n of this scenario's events on c have tag, c closed, or d passed.
func (rec *recorder) waitTag(c *wsClient, tag string, n int, d time.Duration) bool {
	if c == nil {
		return false
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		evs, closed, ch := rec.infos(c)
		got := 0
		for _, ei := range evs {
			if ei.tag == tag && rec.keep(ei) {
				got++
			}
		}
		if got >= n {
			return true
		}
		if closed {
			return false
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

// step performs one script line on the live ARI.
func (rec *recorder) step(l recLine) error {
	r := rec.r
	switch {
	case l.Kind == "meta" && l.What == "note" && strings.Contains(l.Text, "core restart now"):
		if rec.restart == nil {
			return errNeedsRestart
		}
		rec.pace(l.TMs)
		rec.react(l.TMs, false)
		rec.out = append(rec.out, outLine{TMs: rec.ms(time.Now()), Kind: "meta", What: "note", Text: l.Text})
		if err := rec.restart(); err != nil {
			return fmt.Errorf("core restart now: %w", err)
		}
		rec.restarted = true
	case l.Kind == "meta" && l.What == "note" && strings.HasPrefix(l.Text, "running: asterisk-ctl.sh stop"):
		return errNeedsRestart
	case l.Kind == "meta" && l.What == "ws_connect":
		if l.Status == 0 || l.Status == 503 {
			// Attempts while Asterisk restarts: how many there were depends on how long
			// it took; the connect that succeeded is retried below until it does.
			return nil
		}
		rec.pace(l.SentTMs)
		rec.react(l.SentTMs, false)
		sent := time.Now()
		status, err := r.dialWS(l.Conn, l.QueryStr, l.Auth, false)
		for deadline := time.Now().Add(10 * time.Second); rec.restarted && status != l.Status && time.Now().Before(deadline); {
			<-time.After(50 * time.Millisecond) // reconnect pacing while Asterisk boots
			sent = time.Now()
			status, err = r.dialWS(l.Conn, l.QueryStr, l.Auth, false)
		}
		o := outLine{TMs: rec.ms(time.Now()), Kind: "meta", Conn: l.Conn, What: "ws_connect", SentTMs: ptr(rec.ms(sent)),
			Path: "/ari/events", Query: mustRaw(l.QueryStr), Auth: l.Auth, Status: status}
		if err != nil {
			o.Error = err.Error()
		} else {
			rec.conns = append(rec.conns, l.Conn)
		}
		rec.out = append(rec.out, o)
	case l.Kind == "meta" && l.What == "ws_close_sent":
		rec.pace(l.TMs)
		rec.react(l.TMs, true)
		if c := r.clients[l.Conn]; c != nil {
			rec.out = append(rec.out, outLine{TMs: rec.ms(time.Now()), Kind: "meta", Conn: l.Conn, What: "ws_close_sent"})
			if rec.held != nil {
				c.mu.Lock()
				c.cut = len(c.events)
				c.mu.Unlock()
				return nil
			}
			_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			c.waitClosed(2 * time.Second)
		}
	case l.Kind == "meta" && l.What == "ws_tcp_dropped_by_client":
		rec.pace(l.TMs)
		rec.react(l.TMs, false)
		if c := r.clients[l.Conn]; c != nil {
			rec.out = append(rec.out, outLine{TMs: rec.ms(time.Now()), Kind: "meta", Conn: l.Conn, What: "ws_tcp_dropped_by_client"})
			c.conn.UnderlyingConn().Close()
			c.mu.Lock()
			c.cut = len(c.events)
			c.mu.Unlock()
		}
	case l.Kind == "meta" && l.What == "scenario_end":
		rec.pace(l.TMs) // events still in flight when the script ended
		rec.react(l.TMs, true)
	case l.Kind == "rest":
		rec.pace(l.SentTMs)
		rec.react(l.SentTMs, false)
		for _, k := range []string{"channelId", "otherChannelId"} { // client-chosen ids
			if id := queryValue(l.Query, k); id != "" {
				rec.own(id, "")
			}
		}
		rec.learnEvents()
		sent := time.Now()
		resp, body, err := r.send(l)
		if err != nil {
			return err
		}
		got := time.Now()
		path, q := r.target(l)
		rb := responseBody(body)
		var v any
		_ = json.Unmarshal(rb, &v)
		r.learn(v, true)
		rec.learnOurs(v)
		o := outLine{TMs: rec.ms(got), Kind: "rest", SentTMs: ptr(rec.ms(sent)), DurationMs: ptr(float64(got.Sub(sent).Round(100*time.Microsecond)) / float64(time.Millisecond)),
			Method: l.Method, Path: path, Query: queryObject(q), RequestBody: l.RequestBody, Auth: l.Auth,
			Status: resp.StatusCode, StatusText: strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)+" "),
			ResponseBody: rb, ResponseHeaders: pickHeaders(resp.Header)}
		if len(o.RequestBody) == 0 {
			o.RequestBody = json.RawMessage("null")
		}
		rec.out = append(rec.out, o)
		rec.learnEvents()
	}
	return nil
}

// learnEvents learns the live ids of this scenario's channels from the events so far,
// for the ids the script's later requests name.
func (rec *recorder) learnEvents() {
	for _, c := range rec.r.clients {
		evs, _, _ := rec.infos(c)
		for _, ei := range evs {
			for _, ch := range ei.chans {
				if ch.id != "" && rec.keep(ei) { // not another scenario's channel of the same name
					rec.r.learn(map[string]any{"id": ch.id, "name": ch.name}, true)
				}
			}
		}
	}
}

func ptr(f float64) *float64 { return &f }

// queryValue reads one parameter of a recorded (object) query.
func queryValue(q json.RawMessage, key string) string {
	var m map[string]string
	_ = json.Unmarshal(q, &m)
	return m[key]
}

// queryObject turns a raw query string back into the recordings' ordered query object.
func queryObject(q string) json.RawMessage {
	if q == "" {
		return json.RawMessage("null")
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(p, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(mustRaw(k))
		b.WriteByte(':')
		b.Write(mustRaw(v))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// responseBody is a reply body as the recordings hold it: JSON, a string, or null.
func responseBody(body []byte) json.RawMessage {
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return json.RawMessage("null")
	case json.Valid(body):
		var b bytes.Buffer
		if json.Compact(&b, body) == nil {
			return b.Bytes()
		}
	}
	return mustRaw(string(body))
}

// pickHeaders keeps the reply headers the recordings keep.
func pickHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	for _, k := range []string{"Content-Type", "WWW-Authenticate"} {
		if v := h.Get(k); v != "" {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

var localPair = regexp.MustCompile(`^(Local/.*-[0-9a-f]{8});[12]$`)

// own marks a channel (id, name) as this scenario's.
func (rec *recorder) own(id, name string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if id != "" {
		rec.ours[id] = true
	}
	if m := localPair.FindStringSubmatch(name); m != nil {
		rec.pairs[m[1]] = true
	}
}

// learnOurs marks every channel object in a REST reply as this scenario's.
func (rec *recorder) learnOurs(v any) {
	switch x := v.(type) {
	case map[string]any:
		id, _ := x["id"].(string)
		name, _ := x["name"].(string)
		if id != "" && name != "" {
			rec.own(id, name)
		}
		for _, y := range x {
			rec.learnOurs(y)
		}
	case []any:
		for _, y := range x {
			rec.learnOurs(y)
		}
	}
}

// keep says whether an event belongs to this scenario (always, unless filtering): it is
// about one of this scenario's channels or the other half of one of its Local channels.
// Events about no channel (DeviceStateChanged, ...) are kept only without filtering.
func (rec *recorder) keep(ei evInfo) bool {
	if !rec.filter {
		return true
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ch := range ei.chans {
		if ch.id == "" {
			continue
		}
		if rec.ours[ch.id] {
			return true
		}
		if m := localPair.FindStringSubmatch(ch.name); m != nil && rec.pairs[m[1]] {
			return true
		}
	}
	return false
}

// encode merges the REST/meta lines and the kept events by time into JSONL, with the
// live app name mapped back to the script's "invokeari".
func (rec *recorder) encode(app string) (liveResult, error) {
	var res liveResult
	lines := slices.Clone(rec.out)
	for _, l := range lines {
		if l.DurationMs != nil {
			res.slowest = max(res.slowest, time.Duration(*l.DurationMs*float64(time.Millisecond)))
		}
	}
	for _, label := range rec.conns {
		c := rec.r.clients[label]
		infos, _, _ := rec.infos(c)
		c.mu.Lock()
		evs, at := slices.Clone(c.events[:len(infos)]), slices.Clone(c.at[:len(infos)])
		if c.cut > 0 {
			evs, at = evs[:c.cut], at[:c.cut]
		}
		c.mu.Unlock()
		for i, e := range evs {
			if rec.keep(infos[i]) {
				lines = append(lines, outLine{TMs: rec.ms(at[i]), Kind: "ws", Conn: label, Event: e})
				if !infos[i].ts.IsZero() { // the timestamp is cut to the ms: allow for that
					res.lag = max(res.lag, at[i].Sub(infos[i].ts)-time.Millisecond)
				}
			}
		}
	}
	slices.SortStableFunc(lines[1:], func(a, b outLine) int {
		switch {
		case a.TMs < b.TMs:
			return -1
		case a.TMs > b.TMs:
			return 1
		}
		return 0
	})
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // one line each, "<" left as is, as in the recordings
	enc.SetEscapeHTML(false)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return res, err
		}
	}
	res.data = b.Bytes()
	if app != "" {
		res.data = bytes.ReplaceAll(res.data, []byte(app), []byte("invokeari"))
	}
	return res, nil
}

var (
	recordScript = flag.String("record", "", "TestRecord: recording(s) in testdata/ari/recordings used as script (glob, e.g. 's2_*.nosuball.jsonl'), or a script file path")
	recordOut    = flag.String("record-out", recordings, "TestRecord: directory the fresh recordings are written to")
)

// TestRecord records scenarios from the kit into the recordings' format:
//
//	go test -count=1 -run '^TestRecord$' ./stasisapp/sim -record 'NAME.jsonl' [-record-out DIR]
//
// with the kit's env set. -record names recordings in testdata/ari/recordings (a glob)
// used as scripts, or the path of a script file: a recording whose REST lines need only
// method, path, query, request_body and auth (their replies are ignored), whose first
// line is the scenario meta line. Each result is written as DIR/NAME.jsonl (NAME from
// the script's file name), overwriting. Scenarios run one after another, alone on the
// PBX, so a subscribeAll recording holds every event as a recording should.
func TestRecord(t *testing.T) {
	if *recordScript == "" {
		t.Skip("no -record given")
	}
	k := needKit(t)
	paths, _ := filepath.Glob(filepath.Join(recordings, *recordScript))
	if len(paths) == 0 {
		paths = []string{*recordScript}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		script, err := parseRecording(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		res, err := recordLive(t, k, script, liveOpts{restart: kitRestart()})
		if err != nil {
			t.Fatal(err)
		}
		out := res.data
		dst := filepath.Join(*recordOut, filepath.Base(p))
		if err := os.WriteFile(dst, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("recorded %s (%d lines, event delivery lag up to %v, REST replies up to %v)", dst, bytes.Count(out, []byte("\n")), res.lag, res.slowest)
	}
}
