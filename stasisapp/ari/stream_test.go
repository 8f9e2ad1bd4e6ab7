package ari

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const waitLimit = 5 * time.Second

// call is one Handler invocation, in the order Run made it.
type call struct {
	kind       string // "connected", "event", "disconnected"
	reconnect  bool
	ev         Event
	err        error
	wasUp      bool // Client.Connected() at the time of the call
	reconnects uint64
}

// recorder is a Handler that reports every call on a channel.
type recorder struct {
	c     *Client
	calls chan call
}

func newRecorder(c *Client) *recorder { return &recorder{c: c, calls: make(chan call, 4096)} }

func (r *recorder) HandleEvent(_ context.Context, ev Event) {
	r.calls <- call{kind: "event", ev: ev, wasUp: r.c.Connected()}
}

func (r *recorder) Connected(_ context.Context, reconnect bool) {
	r.calls <- call{kind: "connected", reconnect: reconnect, wasUp: r.c.Connected(), reconnects: r.c.Reconnects()}
}

func (r *recorder) Disconnected(err error) {
	r.calls <- call{kind: "disconnected", err: err, wasUp: r.c.Connected()}
}

func (r *recorder) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(waitLimit):
		t.Fatal("timed out waiting for a Handler call")
		return call{}
	}
}

func (r *recorder) expect(t *testing.T, kind string) call {
	t.Helper()
	c := r.next(t)
	if c.kind != kind {
		t.Fatalf("got %s call (%+v), want %s", c.kind, c, kind)
	}
	return c
}

// serverConn is one websocket connection accepted by the fake Asterisk.
type serverConn struct {
	ws      *websocket.Conn
	req     *http.Request
	pings   chan struct{}
	readErr chan error // the reader's final error (a *websocket.CloseError after a close frame)
}

// wsServer is a fake ARI websocket endpoint.
type wsServer struct {
	srv   *httptest.Server
	conns chan *serverConn
	// refuse, when set, answers the handshake with this status and JSON body instead of upgrading.
	refuse     func(attempt int) (int, string)
	noPong     bool
	handshakes chan int
}

func newWSServer(t *testing.T, configure func(*wsServer)) *wsServer {
	t.Helper()
	s := &wsServer{conns: make(chan *serverConn, 16), handshakes: make(chan int, 1024)}
	if configure != nil {
		configure(s)
	}
	up := websocket.Upgrader{}
	var attempts atomic.Int32
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempt := int(attempts.Add(1))
		select {
		case s.handshakes <- attempt:
		default:
		}
		if s.refuse != nil {
			status, body := s.refuse(attempt)
			if status != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("WWW-Authenticate", `Basic realm="Asterisk REST Interface"`)
				w.WriteHeader(status)
				_, _ = w.Write([]byte(body))
				return
			}
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		sc := &serverConn{ws: ws, req: r, pings: make(chan struct{}, 1024), readErr: make(chan error, 1)}
		ws.SetPingHandler(func(data string) error {
			select {
			case sc.pings <- struct{}{}:
			default:
			}
			if s.noPong {
				return nil
			}
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		s.conns <- sc
		// Read until the client goes: control frames are processed only while reading.
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				sc.readErr <- err
				ws.Close()
				return
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *wsServer) accept(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(waitLimit):
		t.Fatal("timed out waiting for a websocket connection")
		return nil
	}
}

func (sc *serverConn) send(t *testing.T, msg []byte) {
	t.Helper()
	if err := sc.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatalf("server write: %v", err)
	}
}

// startRun runs c.Run in a goroutine; the returned stop cancels it and returns Run's
// error and how long it took to return. Cleanup stops it too.
func startRun(t *testing.T, c *Client, h Handler) (stop func() (error, time.Duration)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	var (
		stopped bool
		result  error
		took    time.Duration
	)
	stop = func() (error, time.Duration) {
		if stopped {
			return result, took
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case result = <-done:
		case <-time.After(waitLimit):
			t.Fatal("Run did not return after cancel")
		}
		took = time.Since(start)
		return result, took
	}
	t.Cleanup(func() { stop() })
	return stop
}

func newStreamClient(t *testing.T, s *wsServer, mod func(*Config)) *Client {
	t.Helper()
	return newTestClient(t, s.srv.URL+"/ari", func(cfg *Config) {
		cfg.MinBackoff = time.Millisecond
		cfg.MaxBackoff = 20 * time.Millisecond
		if mod != nil {
			mod(cfg)
		}
	})
}

func TestRunDeliversEventsInOrder(t *testing.T) {
	frames := wsFrames(t, "s2_stasis_pjsip_answer_sub.nosuball.jsonl")
	if len(frames) < 10 {
		t.Fatalf("only %d frames", len(frames))
	}
	s := newWSServer(t, nil)
	c := newStreamClient(t, s, nil)
	rec := newRecorder(c)
	stop := startRun(t, c, rec)

	sc := s.accept(t)
	if got := sc.req.URL.Query(); got.Get("app") != "invokeari" || got.Has("subscribeAll") || len(got) != 1 {
		t.Errorf("handshake query %v, want only app=invokeari", got)
	}
	if u, p, ok := sc.req.BasicAuth(); !ok || u != testUser || p != testPass {
		t.Errorf("handshake auth %v %q %q", ok, u, p)
	}
	if sc.req.URL.Path != "/ari/events" {
		t.Errorf("handshake path %q", sc.req.URL.Path)
	}
	if got := rec.expect(t, "connected"); got.reconnect || !got.wasUp {
		t.Errorf("first Connected: %+v", got)
	}
	for _, f := range frames {
		sc.send(t, f.data)
	}
	for i, f := range frames {
		want, err := DecodeEvent(f.data)
		if err != nil {
			t.Fatal(err)
		}
		got := rec.expect(t, "event")
		if got.ev.EventType() != want.EventType() || !got.ev.At().Equal(want.At()) {
			t.Fatalf("event %d: got %s@%v, want %s@%v", i, got.ev.EventType(), got.ev.At(), want.EventType(), want.At())
		}
		if ce, ok := want.(ChannelEvent); ok && got.ev.(ChannelEvent).ChannelID() != ce.ChannelID() {
			t.Fatalf("event %d: channel %s, want %s", i, got.ev.(ChannelEvent).ChannelID(), ce.ChannelID())
		}
	}

	err, took := stop()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if took > 2*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
	if d := rec.expect(t, "disconnected"); !errors.Is(d.err, context.Canceled) || d.wasUp {
		t.Errorf("Disconnected on stop: %+v", d)
	}
	select {
	case err := <-sc.readErr:
		if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Errorf("server saw %v, want a 1000 close frame", err)
		}
	case <-time.After(waitLimit):
		t.Error("server connection still open after Run returned")
	}
	if c.Connected() {
		t.Error("Connected() true after Run returned")
	}
}

func TestRunReconnectsAfterDrop(t *testing.T) {
	frames := wsFrames(t, "s6_ws_drop_during_stasis.jsonl")
	if len(frames) < 3 {
		t.Fatalf("only %d frames", len(frames))
	}
	s := newWSServer(t, nil)
	c := newStreamClient(t, s, nil)
	rec := newRecorder(c)
	startRun(t, c, rec)

	sc1 := s.accept(t)
	rec.expect(t, "connected")
	sc1.send(t, frames[0].data)
	sc1.send(t, frames[1].data)
	rec.expect(t, "event")
	rec.expect(t, "event")
	// Asterisk restarting: the TCP connection goes without a close frame (1006).
	if err := sc1.ws.NetConn().Close(); err != nil {
		t.Fatal(err)
	}
	d := rec.expect(t, "disconnected")
	if d.err == nil || d.wasUp {
		t.Errorf("Disconnected: err %v, Connected() %v", d.err, d.wasUp)
	}
	if !websocket.IsUnexpectedCloseError(d.err) && !strings.Contains(d.err.Error(), "EOF") {
		t.Logf("drop reported as: %v", d.err)
	}

	sc2 := s.accept(t)
	got := rec.expect(t, "connected")
	if !got.reconnect || !got.wasUp || got.reconnects != 1 {
		t.Errorf("second Connected: %+v", got)
	}
	sc2.send(t, frames[2].data)
	ev := rec.expect(t, "event")
	want, _ := DecodeEvent(frames[2].data)
	if ev.ev.EventType() != want.EventType() || !ev.ev.At().Equal(want.At()) {
		t.Errorf("after reconnect got %s, want %s", ev.ev.EventType(), want.EventType())
	}
	if c.Reconnects() != 1 || !c.Connected() {
		t.Errorf("Reconnects %d Connected %v", c.Reconnects(), c.Connected())
	}
}

func TestRunPingKeepsLinkAlive(t *testing.T) {
	s := newWSServer(t, nil)
	const ping = 50 * time.Millisecond // dead after 100ms of silence
	c := newStreamClient(t, s, func(cfg *Config) { cfg.PingInterval = ping })
	rec := newRecorder(c)
	startRun(t, c, rec)

	sc := s.accept(t)
	rec.expect(t, "connected")
	// 6 pings answered = 300ms without a message, three times the read deadline.
	for i := 0; i < 6; i++ {
		select {
		case <-sc.pings:
		case <-time.After(waitLimit):
			t.Fatalf("only %d pings", i)
		}
	}
	sc.send(t, []byte(hangupBusy))
	if got := rec.next(t); got.kind != "event" {
		t.Fatalf("got %s call (%v), want the event on the same connection", got.kind, got.err)
	}
	if len(s.conns) != 0 || c.Reconnects() != 0 {
		t.Errorf("link was re-established: %d new conns, %d reconnects", len(s.conns), c.Reconnects())
	}
}

func TestRunDetectsDeadLink(t *testing.T) {
	s := newWSServer(t, func(s *wsServer) { s.noPong = true })
	c := newStreamClient(t, s, func(cfg *Config) { cfg.PingInterval = 20 * time.Millisecond })
	rec := newRecorder(c)
	startRun(t, c, rec)

	s.accept(t)
	rec.expect(t, "connected")
	start := time.Now()
	d := rec.expect(t, "disconnected")
	if d.err == nil || !strings.Contains(d.err.Error(), "no message or pong") {
		t.Errorf("Disconnected err = %v, want a dead-link timeout", d.err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("dead link detected after %v", took)
	}
	s.accept(t)
	if got := rec.expect(t, "connected"); !got.reconnect {
		t.Errorf("reconnect Connected: %+v", got)
	}
}

func TestRunStopsPromptlyDuringBackoff(t *testing.T) {
	s := newWSServer(t, func(s *wsServer) {
		s.refuse = func(int) (int, string) { return 503, `{"message":"Asterisk not booted"}` }
	})
	c := newStreamClient(t, s, func(cfg *Config) { cfg.MinBackoff, cfg.MaxBackoff = time.Minute, time.Minute })
	rec := newRecorder(c)
	stop := startRun(t, c, rec)
	select {
	case <-s.handshakes:
	case <-time.After(waitLimit):
		t.Fatal("no handshake")
	}
	err, took := stop()
	if !errors.Is(err, context.Canceled) || took > time.Second {
		t.Errorf("Run returned %v after %v, want context.Canceled at once", err, took)
	}
	if len(rec.calls) != 0 {
		t.Errorf("Handler was called %d times without a connection", len(rec.calls))
	}
}

// logLines is an io.Writer collecting slog text lines.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default:
	}
	return len(p), nil
}

func TestRunLogsEachRefusedHandshake(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantLevel string
		wantText  string
	}{
		{"401 bad credentials", 401, `{"message":"Authentication required"}`, "level=ERROR", "authentication refused"},
		{"503 not booted", 503, `{"message":"Asterisk not booted"}`, "level=WARN", "Asterisk not booted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newWSServer(t, func(s *wsServer) {
				s.refuse = func(int) (int, string) { return tt.status, tt.body }
			})
			logs := make(logLines, 1024)
			c := newStreamClient(t, s, func(cfg *Config) {
				cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			})
			rec := newRecorder(c)
			stop := startRun(t, c, rec)
			for i := 0; i < 3; i++ {
				select {
				case line := <-logs:
					if !strings.Contains(line, tt.wantLevel) || !strings.Contains(line, tt.wantText) ||
						!strings.Contains(line, fmt.Sprint(tt.status)) {
						t.Errorf("log line %q, want %s %q %d", line, tt.wantLevel, tt.wantText, tt.status)
					}
					if strings.Contains(line, testPass) {
						t.Errorf("log leaks the password: %q", line)
					}
				case <-time.After(waitLimit):
					t.Fatalf("only %d log lines", i)
				}
			}
			stop()
			if len(rec.calls) != 0 {
				t.Errorf("Handler was called %d times for refused handshakes", len(rec.calls))
			}
		})
	}
}

func TestRunSkipsUndecodableMessages(t *testing.T) {
	s := newWSServer(t, nil)
	c := newStreamClient(t, s, nil)
	rec := newRecorder(c)
	startRun(t, c, rec)
	sc := s.accept(t)
	rec.expect(t, "connected")
	sc.send(t, []byte("not json"))
	sc.send(t, []byte(`{"no":"type"}`))
	sc.send(t, []byte(dialBusy))
	ev := rec.expect(t, "event")
	if d, ok := ev.ev.(*Dial); !ok || d.DialStatus != "BUSY" {
		t.Errorf("got %T %+v, want the Dial BUSY", ev.ev, ev.ev)
	}
	if got := c.Undecodable(); got != 2 {
		t.Errorf("Undecodable() = %d, want 2", got)
	}
}

func TestRunOnlyOnce(t *testing.T) {
	s := newWSServer(t, nil)
	c := newStreamClient(t, s, nil)
	rec := newRecorder(c)
	startRun(t, c, rec)
	s.accept(t)
	rec.expect(t, "connected")
	if err := c.Run(t.Context(), rec); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
}

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, time.Millisecond, 10 * time.Second} {
		for i := 0; i < 100; i++ {
			got := jitter(d)
			if d > 1 && (got < d/2 || got >= d) {
				t.Fatalf("jitter(%v) = %v, want in [%v, %v)", d, got, d/2, d)
			}
			if d <= 1 && got != d {
				t.Fatalf("jitter(%v) = %v", d, got)
			}
		}
	}
}

func TestPeekChannelID(t *testing.T) {
	for _, tt := range []struct{ msg, want string }{
		{`{"type":"ChannelVarset","variable":"X","value":"1","channel":{"id":"c-1.2","name":"Local/x@sim-00000001;2"}}`, "c-1.2"},
		{`{"type":"ChannelDestroyed","cause":16,"channel": { "id":"c-1","name":"x"}}`, "c-1"},
		{`{"type":"Dial","peer":{"id":"c-1"},"dialstatus":"BUSY"}`, ""},                                   // no top-level channel: decode
		{`{"type":"ChannelVarset","channel":{"name":"x","id":"c-1.2"}}`, ""},                              // id not first: decode
		{`{"type":"ChannelVarset","channel":{"id":"c\"1.2"}}`, ""},                                        // escaped: decode
		{`{"type":"ChannelVarset","value":"\"channel\":{\"id\":\"x.2\"}","channel":{"id":"c-1"}}`, "c-1"}, // quoted text is not the key
	} {
		if got := peekChannelID([]byte(tt.msg)); got != tt.want {
			t.Errorf("peekChannelID(%s) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

// filteringRecorder refuses events of channels whose id has a '.' except StasisStart.
type filteringRecorder struct{ *recorder }

func (f filteringRecorder) WantsEvent(typ, id string) bool {
	return typ == "StasisStart" || !strings.Contains(id, ".")
}

// TestRunSkipsUnwantedEvents: an EventFilter's refused events are neither decoded nor
// handed over, and are counted; the others arrive in order.
func TestRunSkipsUnwantedEvents(t *testing.T) {
	s := newWSServer(t, nil)
	c := newStreamClient(t, s, nil)
	rec := filteringRecorder{newRecorder(c)}
	startRun(t, c, rec)
	sc := s.accept(t)
	rec.expect(t, "connected")
	sc.send(t, []byte(`{"type":"ChannelStateChange","timestamp":"2026-11-26T07:57:45.974+0000","channel":{"id":"c-1.2","name":"Local/x@sim-00000001;2","state":"Up"}}`))
	sc.send(t, []byte(`{"type":"StasisStart","timestamp":"2026-11-26T07:57:45.974+0000","args":[],"channel":{"id":"1795679862.111","name":"PJSIP/x-00000001","state":"Up"}}`))
	sc.send(t, []byte(`{"type":"ChannelStateChange","timestamp":"2026-11-26T07:57:45.975+0000","channel":{"id":"c-1","name":"Local/x@sim-00000001;1","state":"Up"}}`))
	if ev := rec.expect(t, "event"); ev.ev.EventType() != "StasisStart" {
		t.Errorf("first event %s, want the StasisStart (always wanted)", ev.ev.EventType())
	}
	ev := rec.expect(t, "event")
	if ce, ok := ev.ev.(ChannelEvent); !ok || ce.ChannelID() != "c-1" {
		t.Errorf("second event %+v, want the state change of c-1", ev.ev)
	}
	if got := c.Skipped(); got != 1 {
		t.Errorf("Skipped() = %d, want 1", got)
	}
}
