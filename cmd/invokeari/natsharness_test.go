package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/bridge/natsdoor"
	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

// envOptions let NATS tests share a simulator and a NATS server between daemons and
// set options inside the `nats:` block (startEnv's extraYAML cannot, the block is taken).
type envOptions struct {
	sim       *sim.Server      // nil: a new simulator with testEndpoints
	nats      *natstest.Server // nil: a new in-process NATS
	app       string           // Stasis app name; default invokeari-test
	natsExtra string           // extra flow-mapping entries of `nats:`, e.g. "require_key: true"
	httpExtra string           // extra flow-mapping entries of `http:`, e.g. "tls_cert: …"
	client    *http.Client     // HTTP client for the door (e.g. one trusting a test CA)
	extraYAML string           // appended top-level YAML
	keyExtra  string           // extra YAML lines of the test key, indented 4 spaces
	keysExtra string           // extra entries of `keys:` after the test key, e.g. "  - name: other\n    sha256: …\n"
}

// startEnvWith is startEnv with envOptions: the same wiring through runDaemon.
func startEnvWith(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	ns := o.nats
	if ns == nil {
		ns = natstest.Start(t)
	}
	s := o.sim
	if s == nil {
		s = sim.New(sim.Config{Username: testARIUser, Password: testARIPass, Endpoints: testEndpoints(),
			Contexts: DemoContexts()})
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("start simulator: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	if o.app == "" {
		o.app = "invokeari-test"
	}
	path := writeTestConfig(t, t.TempDir(), testConfig{simURL: s.URL(), natsURL: ns.URL, app: o.app,
		httpExtra: o.httpExtra, natsExtra: o.natsExtra, wait: "answer", limits: "drain_timeout: 5s",
		logLevel: "debug", extra: o.extraYAML, keyExtra: o.keyExtra, keys: o.keysExtra})
	env := map[string]string{"TEST_ARI_PASSWORD": testARIPass}
	e := &testEnv{t: t, sim: s, nats: ns, logs: &syncBuffer{}, done: make(chan error, 1), client: o.client}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	started := make(chan string, 1)
	go func() {
		e.done <- runDaemon(ctx, serveOptions{configPath: path, out: e.logs, getenv: func(k string) string { return env[k] },
			started: func(addr string, d *daemon) { e.d = d; started <- addr }})
	}()
	scheme := "http://"
	if o.httpExtra != "" && strings.Contains(o.httpExtra, "tls_cert") {
		scheme = "https://"
	}
	select {
	case addr := <-started:
		e.base = scheme + addr
	case err := <-e.done:
		t.Fatalf("daemon stopped before it started: %v\nlogs:\n%s", err, e.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not start within 20s\nlogs:\n%s", e.logs.String())
	}
	t.Cleanup(e.stop)
	e.waitReady(true)
	return e
}

// testConfig is what differs between the daemon configs the tests write.
type testConfig struct {
	simURL, natsURL, app string
	httpExtra, natsExtra string // extra flow-mapping entries of `http:` / `nats:`
	wait                 string // defaults.wait
	limits               string // flow-mapping entries of `limits:`
	logLevel             string
	extra                string // appended top-level YAML
	keyExtra             string // extra YAML lines of the test key, indented 4 spaces
	keys                 string // extra entries of `keys:` after the test key
}

// writeTestConfig writes a daemon config for one simulated pbx1 (password from
// TEST_ARI_PASSWORD) and the test key into dir and returns its path.
func writeTestConfig(t *testing.T, dir string, c testConfig) string {
	t.Helper()
	if c.httpExtra != "" {
		c.httpExtra = ", " + c.httpExtra
	}
	if c.natsExtra != "" {
		c.natsExtra = ", " + c.natsExtra
	}
	sum := sha256.Sum256([]byte(testAPIKey))
	yaml := fmt.Sprintf(`http: {listen: "127.0.0.1:0"%s}
asterisk:
  - name: pbx1
    url: %s
    username: %s
    password_env: TEST_ARI_PASSWORD
    app: %s
nats: {url: %q, stream_max_age: 1h%s}
keys:
  - name: tester
    sha256: %q
%s
%sdefaults: {timeout: 30s, wait: %s}
limits: {%s}
log: {level: %s}
%s`, c.httpExtra, c.simURL, testARIUser, c.app, c.natsURL, c.natsExtra, hex.EncodeToString(sum[:]),
		c.keyExtra, c.keys, c.wait, c.limits, c.logLevel, c.extra)
	if !strings.Contains(c.extra, "instance_id:") {
		// One instance per app name: daemons sharing a NATS must not share an id, and a
		// derived one would be written under the test's working directory.
		yaml += fmt.Sprintf("instance_id: %s\n", c.app)
	}
	path := filepath.Join(dir, "invokeari.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// natsClient is a test client connection to the env's NATS that survives restarts.
func natsClient(t *testing.T, ns *natstest.Server) *nats.Conn {
	t.Helper()
	nc, _ := ns.Connect(t)
	return nc
}

// natsReq sends body to invokeari.originate as a request with the test key (unless hdr
// overrides X-API-Key; "" removes it) and decodes the reply like an HTTP one: Status is
// the Invokeari-Status header.
func natsReq(t *testing.T, nc *nats.Conn, body string, hdr map[string]string) reply {
	t.Helper()
	m := nats.NewMsg(natsdoor.Subject)
	m.Data = []byte(body)
	m.Header.Set("X-API-Key", testAPIKey)
	for k, v := range hdr {
		if v == "" {
			m.Header.Del(k)
		} else {
			m.Header.Set(k, v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("NATS request: %v", err)
	}
	r := reply{Header: http.Header(res.Header), Raw: string(res.Data)}
	if _, err := fmt.Sscan(res.Header.Get(natsdoor.StatusHeader), &r.Status); err != nil {
		t.Fatalf("reply without a valid %s header (%q): %s", natsdoor.StatusHeader, res.Header.Get(natsdoor.StatusHeader), res.Data)
	}
	if err := json.Unmarshal(res.Data, &r.Envelope); err != nil {
		t.Fatalf("reply is not the JSON envelope (%d): %v\n%s", r.Status, err, res.Data)
	}
	return r
}

// jsonBody encodes fields as the JSON body of an originate.
func jsonBody(t *testing.T, fields map[string]string) string {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// callEvents collects events of the stream INVOKEARI_CALLS (from its start) until every
// id in ids has an `ended` event, then for a quiet moment more so duplicates show. It
// returns the events per call id in stream order.
func callEvents(t *testing.T, ns *natstest.Server, ids []string, within time.Duration) map[string][]events.Event {
	t.Helper()
	nc := natsClient(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPrefix + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	return collectCallEvents(ctx, t, cons, ids)
}

// collectCallEvents reads from cons until every id has ended (or ctx ends), then 500ms more.
func collectCallEvents(ctx context.Context, t *testing.T, cons jetstream.Consumer, ids []string) map[string][]events.Event {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[string][]events.Event{}
	ended := 0
	quietUntil := time.Time{}
	for {
		wait := 2 * time.Second
		if !quietUntil.IsZero() {
			wait = time.Until(quietUntil)
			if wait <= 0 {
				return got
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream: %d of %d calls ended before the deadline", ended, len(ids))
		}
		m, err := cons.Next(jetstream.FetchMaxWait(max(wait, 50*time.Millisecond)))
		if err != nil {
			continue // no message within wait; the loop's deadlines decide
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("event is not JSON: %v: %s", err, m.Data())
		}
		if !want[ev.ID] {
			continue
		}
		got[ev.ID] = append(got[ev.ID], ev)
		if ev.Event == events.Ended {
			ended++
			if ended == len(ids) {
				quietUntil = time.Now().Add(500 * time.Millisecond)
			}
		}
	}
}

// checkCallEvents asserts, per call, seq 1..n in order with no gap or repeat, exactly
// one `ended` (last, with the full call record) and, when want is set, its outcome.
func checkCallEvents(t *testing.T, got map[string][]events.Event, ids []string, want map[string]events.Outcome) {
	t.Helper()
	for _, id := range ids {
		evs := got[id]
		var kinds []string
		nEnded := 0
		for i, ev := range evs {
			kinds = append(kinds, fmt.Sprintf("%d:%s", ev.Seq, ev.Event))
			if ev.Seq != uint64(i+1) {
				t.Errorf("call %s: event %d has seq %d (events %v)", id, i, ev.Seq, kinds)
			}
			if ev.Event == events.Ended {
				nEnded++
				if ev.Call == nil || ev.Call.ID != id || ev.Call.Outcome != ev.Outcome {
					t.Errorf("call %s: ended without the full call record: %+v", id, ev.Call)
				}
			}
		}
		if nEnded != 1 || len(evs) == 0 || evs[len(evs)-1].Event != events.Ended {
			t.Errorf("call %s: %d ended events, events %v; want exactly one, last", id, nEnded, kinds)
			continue
		}
		if w, ok := want[id]; ok && evs[len(evs)-1].Outcome != w {
			t.Errorf("call %s: outcome %q, want %q", id, evs[len(evs)-1].Outcome, w)
		}
	}
}

// originatesByID maps each call id the simulator was asked to create (POST /channels)
// to the Stasis apps that asked, in order.
func originatesByID(s *sim.Server) map[string][]string {
	out := map[string][]string{}
	for _, r := range s.Requests() {
		if r.Method != http.MethodPost || r.Path != "/ari/channels" {
			continue
		}
		q, _ := url.ParseQuery(r.Query)
		out[q.Get("channelId")] = append(out[q.Get("channelId")], q.Get("app"))
	}
	return out
}

// sortedNames returns m's keys in order, for stable messages.
func sortedNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
