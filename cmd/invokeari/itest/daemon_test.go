package itest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/natstest"
)

const apiKey = "itest-key"

// daemon is one invokeari process (restartable on the same ports and NATS) configured
// for the kit, with ARI reached through a severable TCP proxy.
type daemon struct {
	t       *testing.T
	dir     string
	cfgPath string
	base    string // http://127.0.0.1:port
	nats    *natstest.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	proxy   *proxy
	client  *http.Client
	env     []string // extra NAME=value for the daemon's environment
	started int

	mu   sync.Mutex
	proc *proc
}

type proc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startDaemon writes a config for the kit (the ARI password from an env var), starts a
// NATS server of its own and the daemon, and waits until /readyz says 200.
func startDaemon(t *testing.T, app string) *daemon {
	t.Helper()
	return startDaemonWith(t, app, "")
}

// startDaemonWith is startDaemon with keyExtra (indented YAML lines) appended to the
// test key's entry and env (NAME=value) added to the daemon's environment.
func startDaemonWith(t *testing.T, app, keyExtra string, env ...string) *daemon {
	t.Helper()
	needPBX(t)
	u, err := url.Parse(ariURL)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: t.TempDir(), nats: natstest.Start(t), proxy: startProxy(t, u.Host),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}}, env: env}
	d.nc, d.js = d.nats.Connect(t)
	d.base = "http://" + freeAddr(t)
	sum := sha256.Sum256([]byte(apiKey))
	yaml := fmt.Sprintf(`http: {listen: %q}
asterisk:
  - name: pbx1
    url: http://%s%s
    username: %s
    password_env: ITEST_ARI_PASSWORD
    app: %s
nats: {url: %q, stream_max_age: 1h}
keys:
  - name: itest
    sha256: %q
%sdefaults: {timeout: 30s, wait: answer}
limits: {max_in_flight: 5000, drain_timeout: 5s}
log: {level: info}
instance_id: %s
`, strings.TrimPrefix(d.base, "http://"), d.proxy.addr, u.Path, ariUser, app, d.nats.URL, hex.EncodeToString(sum[:]), keyExtra, app)
	d.cfgPath = filepath.Join(d.dir, "invokeari.yaml")
	if err := os.WriteFile(d.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	return d
}

func (d *daemon) start() {
	t := d.t
	t.Helper()
	d.started++
	p := &proc{logPath: filepath.Join(d.dir, fmt.Sprintf("daemon-%d.log", d.started)), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(daemonBin, "serve", "-config", d.cfgPath)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INVOKEARI_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, "ITEST_ARI_PASSWORD="+ariPass)
	p.cmd.Env = append(p.cmd.Env, d.env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	go func() { // reaps the child; ends when it exits
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	d.mu.Lock()
	d.proc = p
	d.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := d.client.Get(d.base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 60s:\n%s", tail(p.logPath))
		}
		select {
		case <-p.done:
			t.Fatalf("daemon exited before ready: %v\n%s", p.err, tail(p.logPath))
		case <-time.After(50 * time.Millisecond): // polling pace; the deadline decides
		}
	}
}

// kill SIGKILLs the daemon and waits for its exit.
func (d *daemon) kill() {
	d.mu.Lock()
	p := d.proc
	d.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (d *daemon) logTail() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return tail(d.proc.logPath)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// call is one originate: its fields and what came back.
type call struct {
	ID, D, C, E, T, Wait string
	Door                 string            // http | nats
	Extra                map[string]string // further fields (callback, callback_events)
}

// reply is a door's answer: the status (HTTP's, or NATS's Invokeari-Status header).
type reply struct {
	Status int
	Env    struct {
		Status   string `json:"status"`
		Response struct {
			HTTPCode int `json:"http_code"`
		} `json:"response"`
		Call  *record `json:"call"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	Raw string
	Err error
}

// record is the call object of a reply (the fields the suite checks).
type record struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Outcome    string `json:"outcome"`
	Reason     string `json:"reason"`
	Cause      int    `json:"cause"`
	SIPCode    int    `json:"sip_code"`
	DialStatus string `json:"dialstatus"`
	RingMS     *int64 `json:"ring_ms"`
	DurationMS *int64 `json:"duration_ms"`
}

func (c call) fields() map[string]string {
	f := map[string]string{"d": c.D, "c": c.C, "e": c.E, "id": c.ID, "v": "CONFCODE=4711", "i": `"InvokeARI" <+15550001111>`}
	if c.T != "" {
		f["t"] = c.T
	}
	if c.Wait != "" {
		f["wait"] = c.Wait
	}
	for k, v := range c.Extra {
		f[k] = v
	}
	return f
}

// originate sends c through its door and decodes the reply.
func (d *daemon) originate(ctx context.Context, c call) reply {
	var r reply
	var body []byte
	switch c.Door {
	case "http":
		form := url.Values{}
		for k, v := range c.fields() {
			form.Set(k, v)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/v2/invokeARI", strings.NewReader(form.Encode()))
		if err != nil {
			return reply{Err: err}
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Status, body, r.Err = d.doHTTP(req)
	case "nats":
		r.Status, body, r.Err = d.doNATS(ctx, "invokeari.originate", c.fields())
	default:
		return reply{Err: fmt.Errorf("door %q", c.Door)}
	}
	if r.Err != nil {
		return reply{Err: r.Err}
	}
	r.Raw = string(body)
	if err := json.Unmarshal(body, &r.Env); err != nil {
		r.Err = fmt.Errorf("decode reply: %w: %s", err, body)
	}
	return r
}

// doHTTP sends req with the test key and returns the reply's status and body.
func (d *daemon) doHTTP(req *http.Request) (int, []byte, error) {
	req.Header.Set("X-API-Key", apiKey)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// doNATS sends payload as JSON on subject with the test key and returns the reply's
// status (its Invokeari-Status header) and body.
func (d *daemon) doNATS(ctx context.Context, subject string, payload any) (int, []byte, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return 0, nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header.Set("X-API-Key", apiKey)
	resp, err := d.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, nil, err
	}
	status, _ := strconv.Atoi(resp.Header.Get("Invokeari-Status"))
	return status, resp.Data, nil
}

// stream is what INVOKEARI_CALLS holds, per call id.
type stream struct {
	cons jetstream.Consumer
	byID map[string][]events.Event
}

func (d *daemon) openStream() *stream {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := d.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectPrefix + ".>"}})
	if err != nil {
		d.t.Fatalf("stream consumer: %v", err)
	}
	return &stream{cons: cons, byID: map[string][]events.Event{}}
}

// readUntil reads until every id has an `ended` event, then on for quiet without a new
// event (to catch late duplicates); limit bounds the whole wait.
func (s *stream) readUntil(t *testing.T, ids []string, quiet, limit time.Duration) {
	t.Helper()
	done := func() bool {
		for _, id := range ids {
			if s.ended(id) == nil {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		wait := 500 * time.Millisecond
		finished := done()
		if finished {
			wait = quiet
		}
		m, err := s.cons.Next(jetstream.FetchMaxWait(wait))
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || (err != nil && !errors.Is(err, nats.ErrTimeout)) {
			t.Fatalf("read stream: %v", err)
		}
		if err != nil {
			if finished {
				return
			}
			continue
		}
		var ev events.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("stream event %s: %v", m.Subject(), err)
		}
		s.byID[ev.ID] = append(s.byID[ev.ID], ev)
	}
}

// ended is the call's (first) `ended` event, or nil.
func (s *stream) ended(id string) *events.Event {
	for i, ev := range s.byID[id] {
		if ev.Event == events.Ended {
			return &s.byID[id][i]
		}
	}
	return nil
}

// integrity describes the call's events: "1 ended, seq 1..n" when sound, else what is wrong.
func (s *stream) integrity(id string) string {
	evs := s.byID[id]
	ended := 0
	seen := map[uint64]bool{}
	var max uint64
	for _, ev := range evs {
		if ev.Event == events.Ended {
			ended++
		}
		if seen[ev.Seq] {
			return fmt.Sprintf("seq %d twice", ev.Seq)
		}
		seen[ev.Seq] = true
		max = maxU(max, ev.Seq)
	}
	if uint64(len(evs)) != max {
		return fmt.Sprintf("%d events, max seq %d (gap)", len(evs), max)
	}
	return fmt.Sprintf("%d ended, seq gapless", ended)
}

const sound = "1 ended, seq gapless"

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// proxy forwards TCP to the kit's ARI port; cut closes every connection it carries.
type proxy struct {
	addr    string
	target  string
	ln      net.Listener
	mu      sync.Mutex
	conns   map[net.Conn]bool
	refuse  atomic.Bool
	carried atomic.Int64
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // accept loop; ends when the listener closes (cleanup)
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.refuse.Load() {
				c.Close()
				continue
			}
			wg.Add(1)
			go func() { // one connection; ends when either side closes
				defer wg.Done()
				p.pipe(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.carried.Add(1)
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(up, c) // ends when either side closes (both are closed then)
	cp(c, up)
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut closes every connection the proxy carries (the daemon's websocket and REST).
func (p *proxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	return n / 2
}

// pbx runs the kit's control script with args (e.g. "rx", "core restart now").
func pbx(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pbxCtl[0], append(pbxCtl[1:], args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("pbx %q: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// ariGet GETs path on the kit's ARI directly (not through the daemon's proxy).
func ariGet(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ariURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(ariUser, ariPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitARI polls /asterisk/info until 200 (after a restart of Asterisk).
func waitARI(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, _, err := ariGet(ctx, "/asterisk/info")
		cancel()
		if err == nil && st == http.StatusOK {
			return
		}
		time.Sleep(100 * time.Millisecond) // polling pace; the deadline decides
	}
	t.Fatalf("ARI not back within %v", limit)
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond) // polling pace; the deadline decides
	}
}
