// Package sim is a fake Asterisk 22.10 ARI server for tests, demo mode and benchmarks.
//
// It reproduces the traffic recorded from a real Asterisk (testdata/ari/recordings):
// the same REST status codes and bodies, the same websocket event types, order, fields
// and key order, for app originates (POST /channels?app=), dialplan originates,
// /channels/create + dial, cancels, subscriptions and websocket loss. Every call is
// driven by timers (time.AfterFunc), never by a goroutine per call, so 100k ringing
// calls are cheap. conformance_test.go replays the recordings against it.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Result is what the far end of a dialled endpoint does; one constant per recorded behaviour.
type Result int

// Far-end behaviours. PJSIP flavours follow the SIPp UAS of the recordings; Local
// flavours follow the `sim` dialplan context, whose events differ (see the README).
const (
	Answer           Result = iota // 180, 200 after AnswerAfter; far end hangs up after HangupAfter (0: waits for us)
	Busy                           // 486 at once: cause 17, Dial BUSY
	Decline                        // 180, 603 after RingFor: cause 21, Dial NOANSWER
	NotFound                       // 404 at once: cause 1, Dial NOANSWER
	Unavail                        // 180, 480 after RingFor: cause 19, Dial NOANSWER
	Congestion                     // 503 at once: cause 34, Dial CONGESTION
	RingForever                    // 180 until the originate timeout (cause 19, no final Dial) or DELETE
	Unreachable                    // no response: Dial NOANSWER, cause 18 after RingFor (timer B), state Down
	Offline                        // AOR without contact: POST /channels answers 500 Allocation failed
	LocalBusy                      // Local Busy(): Dial BUSY, ChannelDestroyed cause 0
	LocalCongestion                // Local Congestion(): Dial CONGESTION, cause 0
	LocalReject                    // Local Hangup(21) at once: Dial NOANSWER, cause 21, state Down
	LocalRingReject                // Local Ringing, Wait, Hangup(21): cause 21, state Ringing
	LocalUnavail                   // Local Hangup(20): Dial CHANUNAVAIL, cause 20
	LocalNonexistent               // Local/x@nocontext: destroyed at once with cause 0, no Dial
)

var resultNames = [...]string{"answer", "busy", "decline", "notfound", "unavail", "congestion",
	"ringforever", "unreachable", "offline", "localbusy", "localcongestion", "localreject",
	"localringreject", "localunavail", "localnonexistent"}

// String names the result (e.g. "busy").
func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Behavior is what an endpoint does when dialled. Durations are real (unscaled) times;
// Config.TimeScale scales them.
type Behavior struct {
	Result      Result
	RingAfter   time.Duration // until 180 Ringing (PJSIP) or the first far-end step
	AnswerAfter time.Duration // Answer: ringing time before 200 OK
	RingFor     time.Duration // Decline/Unavail/LocalRingReject/Unreachable: time until the failure
	HangupAfter time.Duration // Answer: far end hangs up this long after answering; 0 = never
	// DTMF, when set, are keys the far end presses after answering (ChannelDtmfReceived
	// on our channel), the first DTMFAfter after the answer, then one every DTMFGap
	// (default 250ms).
	DTMF               string
	DTMFAfter, DTMFGap time.Duration
}

// Config configures a Server.
type Config struct {
	// Addr to listen on; empty means 127.0.0.1:0.
	Addr string
	// Username and Password are the ARI credentials (basic auth or ?api_key=user:pass).
	Username, Password string
	// Endpoints maps "PJSIP/6001" or "Local/busy@sim" to its behaviour. An unknown PJSIP
	// endpoint or technology answers 500 Allocation failed; an unknown Local endpoint
	// behaves like LocalNonexistent.
	Endpoints map[string]Behavior
	// Contexts lists the dialplan contexts and their extensions, used by continue and
	// dialplan originates ("confirmcode": {"s"} runs the recorded confirmcode program).
	Contexts map[string][]string
	// BootDelay is how long the websocket upgrade answers 503 after Restart.
	BootDelay time.Duration
	// TimeScale multiplies every simulated duration (ring, answer, originate timeout,
	// dialplan waits); 0 means 1. Tests use e.g. 0.02 to replay recordings quickly.
	TimeScale float64
	// WriteTimeout is how long a websocket client may leave its queue full before it is
	// disconnected (Asterisk's websocket_write_timeout); 0 means 100ms.
	WriteTimeout time.Duration
	// QueueSize bounds each websocket's outgoing queue (messages); 0 means 65536.
	QueueSize int
	// Logger receives the simulator's logs; nil discards them.
	Logger *slog.Logger
}

// Request is one REST request the simulator received, for assertions in tests.
type Request struct {
	Method string
	Path   string // without query, starting with /ari
	Query  string // raw query string
	Body   string
	Status int
}

// Server is a fake Asterisk. It is safe for concurrent use. Start begins serving; Close
// stops the listener, every websocket and every pending timer.
type Server struct {
	cfg   Config
	log   *slog.Logger
	scale float64

	mu         sync.Mutex
	endpoints  map[string]Behavior
	contexts   map[string]map[string]bool
	channels   map[string]*channel
	apps       map[string]*wsConn // current connection per app
	conns      map[*wsConn]struct{}
	requests   []Request
	originates int
	epoch      int64 // uniqueid prefix
	uniq       uint64
	nameSeq    uint32
	startup    time.Time
	bootUntil  time.Time
	stopped    bool // between Stop and Start: every connection is closed unanswered
	closed     bool

	media media // playbacks, recordings, bridges (media.go)

	ln   net.Listener
	http *http.Server
	url  string
	done chan struct{}
}

// New returns a Server for cfg; call Start to serve.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	scale := cfg.TimeScale
	if scale <= 0 {
		scale = 1
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 100 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 65536
	}
	s := &Server{
		cfg: cfg, log: log, scale: scale,
		endpoints: make(map[string]Behavior, len(cfg.Endpoints)),
		contexts:  map[string]map[string]bool{},
		channels:  map[string]*channel{},
		apps:      map[string]*wsConn{},
		conns:     map[*wsConn]struct{}{},
		media:     newMedia(),
		done:      make(chan struct{}),
	}
	for k, v := range cfg.Endpoints {
		s.endpoints[k] = v
	}
	for c, exts := range cfg.Contexts {
		m := map[string]bool{}
		for _, e := range exts {
			m[e] = true
		}
		s.contexts[c] = m
	}
	now := time.Now()
	s.startup = now
	s.epoch = now.Unix()
	return s
}

// Start listens on Config.Addr (default 127.0.0.1:0) and serves until Close or ctx ends.
func (s *Server) Start(ctx context.Context) error {
	addr := s.cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("sim listen %s: %w", addr, err)
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String() + "/ari"
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { // owned by Server: ends when Close shuts the http.Server down
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("sim serve", "err", err)
		}
	}()
	go func() { // owned by Server: ends on ctx or Close
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	s.log.Info("asterisk simulator listening", "url", s.url)
	return nil
}

// URL is the ARI base URL, e.g. http://127.0.0.1:8088/ari.
func (s *Server) URL() string { return s.url }

// Close stops serving, closes every websocket and cancels every pending call timer.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, ch := range s.channels {
		ch.stopTimers()
	}
	s.channels = map[string]*channel{}
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drop()
	}
	if s.http == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("sim close: %w", err)
	}
	return nil
}

// SetEndpoint adds or changes an endpoint's behaviour (affects later originates).
func (s *Server) SetEndpoint(name string, b Behavior) {
	s.mu.Lock()
	s.endpoints[name] = b
	s.mu.Unlock()
}

// Requests returns a copy of the log of REST requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Originates counts POST /channels and /channels/create requests that created a channel.
func (s *Server) Originates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.originates
}

// Channels counts live channels (both halves of a Local channel count).
func (s *Server) Channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.channels)
}

// DropWebsockets closes every websocket's TCP connection without a close frame, as a
// network loss would. Channels live on; a channel in Stasis stays there.
func (s *Server) DropWebsockets() {
	s.mu.Lock()
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drop()
	}
}

// Restart behaves like `core restart now`: Stop, then Start at once. Every channel gets
// ChannelHangupRequest cause 4 (soft), StasisEnd if in Stasis and ChannelDestroyed
// cause 0; then every websocket is closed without a close frame, upgrades answer 503
// "Asterisk not booted" for BootDelay, and /asterisk/info shows a new startup_time.
// Nothing is replayed.
func (s *Server) Restart(ctx context.Context) {
	s.Stop(ctx)
	s.Boot()
}

// Stop behaves like `core stop now`: every call is shut down as by Restart and every
// websocket is closed without a close frame once its queued events are written. Until
// Boot, every HTTP request and websocket upgrade has its TCP connection closed without
// an answer, which a client sees as a failed connection like Asterisk's refused one. The
// listener stays open so the URL stays valid.
func (s *Server) Stop(ctx context.Context) {
	s.mu.Lock()
	seen := map[*call]bool{}
	for _, ch := range s.sortedChannels() {
		if seen[ch.call] {
			continue
		}
		seen[ch.call] = true
		s.shutdownCall(ch.call)
	}
	s.stopped = true
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeAfterFlush(ctx)
	}
}

// Boot starts a stopped Asterisk again (the `asterisk` command after `core stop now`):
// new startup_time, uniqueids and channel names count from 0 again, and websocket
// upgrades answer 503 "Asterisk not booted" for BootDelay. On a running server it only
// resets those counters and the startup_time.
func (s *Server) Boot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.stopped = false
	s.startup = now
	s.epoch = now.Unix()
	s.uniq = 0
	s.nameSeq = 0
	s.bootUntil = now.Add(s.cfg.BootDelay)
}

// dur scales a simulated duration.
func (s *Server) dur(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.scale)
}

func (s *Server) contextHas(ctx, exten string) bool {
	if ctx == "confirmcode" && exten == "s" {
		return true
	}
	return s.contexts[ctx][exten]
}

func splitEndpoint(ep string) (tech, resource string) {
	tech, resource, _ = strings.Cut(ep, "/")
	return tech, resource
}
