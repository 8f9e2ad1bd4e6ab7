package ari

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyARI is a fake Asterisk whose connections die as scripted: for request number n
// (1-based, over all requests) fate(n, r) says what happens to it.
type flakyARI struct {
	mu       sync.Mutex
	n        int
	channels map[string]bool // ids created
	seen     []string        // "METHOD path" per request
	fate     func(n int, r *http.Request) fate
}

type fate int

const (
	serve        fate = iota // behave like Asterisk
	dropUnserved             // close the connection without doing anything (session limit, stale keep-alive)
	dropServed               // do the work, then close the connection before replying
)

func newFlakyARI(t *testing.T, f func(n int, r *http.Request) fate) (*flakyARI, *httptest.Server) {
	t.Helper()
	a := &flakyARI{channels: map[string]bool{}, fate: f}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv
}

func (a *flakyARI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.n++
	a.seen = append(a.seen, r.Method+" "+r.URL.Path)
	f := a.fate(a.n, r)
	if f == dropUnserved {
		a.mu.Unlock()
		hangUp(w)
		return
	}
	status, body := a.handle(r)
	a.mu.Unlock()
	if f == dropServed {
		hangUp(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// hangUp closes the request's connection without a reply: the client sees EOF.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// handle is the Asterisk part; a.mu is held.
func (a *flakyARI) handle(r *http.Request) (int, string) {
	id := strings.TrimPrefix(r.URL.Path, "/ari/channels/")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/ari/channels":
		id := r.URL.Query().Get("channelId")
		if a.channels[id] {
			return 409, `{"message":"Channel with given unique ID already exists"}`
		}
		a.channels[id] = true
		return 200, channelJSON(id, r.URL.Query().Get("endpoint"))
	case r.Method == http.MethodGet && a.channels[id]:
		return 200, channelJSON(id, "PJSIP/sipp-answer")
	case r.Method == http.MethodDelete && a.channels[id]:
		delete(a.channels, id)
		return 204, ""
	case r.Method == http.MethodPost && strings.HasSuffix(id, "/continue"):
		if !a.channels[strings.TrimSuffix(id, "/continue")] {
			return 404, `{"message":"Channel not found"}`
		}
		delete(a.channels, strings.TrimSuffix(id, "/continue")) // it left Stasis
		return 204, ""
	}
	return 404, `{"message":"Channel not found"}`
}

func channelJSON(id, endpoint string) string {
	return fmt.Sprintf(`{"id":%q,"name":"%s-00000001","state":"Down"}`, id, endpoint)
}

func (a *flakyARI) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// traced returns a context recording the client's retry evidence.
func traced(ctx context.Context) (context.Context, func() []string) {
	var mu sync.Mutex
	var steps []string
	ctx = WithTrace(ctx, func(step string, status int) {
		mu.Lock()
		steps = append(steps, fmt.Sprintf("%d %s", status, step))
		mu.Unlock()
	})
	return ctx, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), steps...) }
}

func firstPOST(fail fate) func(n int, r *http.Request) fate {
	return func(n int, r *http.Request) fate {
		if n == 1 {
			return fail
		}
		return serve
	}
}

func TestOriginateTransportRetry(t *testing.T) {
	tests := []struct {
		name      string
		fate      func(n int, r *http.Request) fate
		preexist  bool // the channel id exists before the first POST
		timeout   time.Duration
		wantErr   int // 0: success; else the *Error status, or -1 for a transport error
		wantReqs  []string
		wantTrace []string // substrings, in order
	}{
		{"connection closed before Asterisk did anything: the retry places the call", firstPOST(dropUnserved), false, 0, 0,
			[]string{"POST /ari/channels", "POST /ari/channels"},
			[]string{"attempt 1 failed in transport"}},
		{"Asterisk placed the call, then the connection died: the 409 of the retry adopts it", firstPOST(dropServed), false, 0, 0,
			[]string{"POST /ari/channels", "POST /ari/channels", "GET /ari/channels/c-1"},
			[]string{"attempt 1 failed in transport", "409", "adopted"}},
		{"409 on the first attempt is Asterisk's refusal, with the channel as evidence", func(int, *http.Request) fate { return serve }, true, 0, 409,
			[]string{"POST /ari/channels", "GET /ari/channels/c-1"}, nil},
		{"two dead connections in a row, then a reply", func(n int, r *http.Request) fate {
			if n <= 2 {
				return dropUnserved
			}
			return serve
		}, false, 0, 0, []string{"POST /ari/channels", "POST /ari/channels", "POST /ari/channels"},
			[]string{"attempt 1 failed", "attempt 2 failed"}},
		{"Asterisk stays unreachable: a failure with the attempts as evidence", func(int, *http.Request) fate { return dropUnserved },
			false, 300 * time.Millisecond, -1, nil, []string{"attempt 1 failed", "attempt 2 failed", "attempt 3 failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, srv := newFlakyARI(t, tt.fate)
			if tt.preexist {
				a.channels["c-1"] = true
			}
			c := newTestClient(t, srv.URL+"/ari", func(cfg *Config) { cfg.RequestTimeout = tt.timeout })
			ctx, steps := traced(t.Context())
			ch, err := c.Originate(ctx, OriginateParams{Endpoint: "PJSIP/sipp-answer", ChannelID: "c-1"})
			var ae *Error
			switch {
			case tt.wantErr == 0 && err != nil:
				t.Fatalf("err = %v, want the call placed", err)
			case tt.wantErr == 0 && (ch.ID != "c-1" || ch.Name != "PJSIP/sipp-answer-00000001"):
				t.Errorf("channel = %+v, want c-1 PJSIP/sipp-answer-00000001", ch)
			case tt.wantErr > 0 && (!errors.As(err, &ae) || ae.Status != tt.wantErr):
				t.Errorf("err = %v, want *Error %d", err, tt.wantErr)
			case tt.wantErr < 0 && (err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "unreachable")):
				t.Errorf("err = %v, want a transport error saying Asterisk stayed unreachable", err)
			}
			if tt.wantReqs != nil {
				if got := a.requests(); strings.Join(got, "|") != strings.Join(tt.wantReqs, "|") {
					t.Errorf("Asterisk saw %q, want %q", got, tt.wantReqs)
				}
			}
			got := strings.Join(steps(), "\n")
			rest := got
			for _, w := range tt.wantTrace {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("trace lacks %q (in order); trace:\n%s", w, got)
					break
				}
				rest = rest[i+len(w):]
			}
			if len(tt.wantTrace) == 0 && got != "" {
				t.Errorf("trace = %q, want none", got)
			}
			if tt.wantErr == 0 && len(tt.wantTrace) > 0 && c.Retries() == 0 {
				t.Error("Retries() = 0 after a retry")
			}
		})
	}
}

func TestOriginateRetryConflictNotAdopted(t *testing.T) {
	// The retry is refused with 409 but the channel with that id is gone (404) or belongs
	// to another technology: nothing shows the call is ours, so the 409 is the answer.
	for _, tt := range []struct {
		name string
		get  string // reply body for GET, "" = 404
	}{
		{"channel gone", ""},
		{"other technology", `{"id":"c-1","name":"IAX2/peer-00000001","state":"Up"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var posts atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == http.MethodPost && posts.Add(1) == 1:
					hangUp(w)
				case r.Method == http.MethodPost:
					w.WriteHeader(409)
					_, _ = w.Write([]byte(`{"message":"Channel with given unique ID already exists"}`))
				case tt.get != "":
					_, _ = w.Write([]byte(tt.get))
				default:
					w.WriteHeader(404)
					_, _ = w.Write([]byte(`{"message":"Channel not found"}`))
				}
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL+"/ari", nil)
			ctx, steps := traced(t.Context())
			_, err := c.Originate(ctx, OriginateParams{Endpoint: "PJSIP/6001", ChannelID: "c-1"})
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != 409 {
				t.Fatalf("err = %v, want the 409", err)
			}
			if s := strings.Join(steps(), "\n"); !strings.Contains(s, "409") || strings.Contains(s, "adopted") && !strings.Contains(s, "not adopted") {
				t.Errorf("trace = %q, want the 409 explained and no adoption", s)
			}
		})
	}
}

func TestHangupAndContinueRetry(t *testing.T) {
	tests := []struct {
		name string
		fate func(n int, r *http.Request) fate
		call func(ctx context.Context, c *Client) error
		want string // trace substring
	}{
		{"hangup done, reply lost: the retry's 404 means gone", firstPOSTOr(http.MethodDelete, dropServed),
			func(ctx context.Context, c *Client) error { return c.Hangup(ctx, "c-1", "") }, "already gone"},
		{"hangup never arrived: the retry hangs up", firstPOSTOr(http.MethodDelete, dropUnserved),
			func(ctx context.Context, c *Client) error { return c.Hangup(ctx, "c-1", "") }, "attempt 1 failed"},
		{"continue done, reply lost: the retry's 404 means continued", firstPOSTOr(http.MethodPost, dropServed),
			func(ctx context.Context, c *Client) error { return c.Continue(ctx, "c-1", "confirmcode", "s", 1) }, "earlier attempt continued"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, srv := newFlakyARI(t, tt.fate)
			a.channels["c-1"] = true
			c := newTestClient(t, srv.URL+"/ari", nil)
			ctx, steps := traced(t.Context())
			if err := tt.call(ctx, c); err != nil {
				t.Fatalf("err = %v", err)
			}
			if a.channels["c-1"] {
				t.Error("the channel is still there")
			}
			if s := strings.Join(steps(), "\n"); !strings.Contains(s, tt.want) {
				t.Errorf("trace = %q, want %q", s, tt.want)
			}
			if n := len(a.requests()); n != 2 {
				t.Errorf("%d requests, want 2", n)
			}
		})
	}
	t.Run("a 404 on the first attempt is still an error", func(t *testing.T) {
		_, srv := newFlakyARI(t, func(int, *http.Request) fate { return serve })
		c := newTestClient(t, srv.URL+"/ari", nil)
		var ae *Error
		if err := c.Hangup(t.Context(), "nosuch", ""); !errors.As(err, &ae) || ae.Status != 404 {
			t.Errorf("err = %v, want 404", err)
		}
	})
}

func firstPOSTOr(method string, f fate) func(n int, r *http.Request) fate {
	return func(n int, r *http.Request) fate {
		if n == 1 && r.Method == method {
			return f
		}
		return serve
	}
}

// TestMaxConns: a burst far above MaxConns never opens more connections than that.
func TestMaxConns(t *testing.T) {
	var open, peak atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond) // hold the connection so requests overlap
		_, _ = w.Write([]byte(`{"id":"x"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := open.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newTestClient(t, srv.URL+"/ari", func(cfg *Config) { cfg.MaxConns = 4 })
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.GetChannel(t.Context(), "x"); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if p := peak.Load(); p > 4 || p < 1 {
		t.Errorf("peak connections = %d, want 1..4", p)
	}
}

// TestOriginateConflictExplained: a first-attempt 409 "already exists" is Asterisk's
// refusal, with the evidence GET /channels/{id} gives: the live channel, or none (the
// Asterisk 22 prefix refusal, ErrIDPrefixConflict).
func TestOriginateConflictExplained(t *testing.T) {
	for _, tt := range []struct {
		name       string
		exists     bool
		wantPrefix bool
		wantText   string
	}{
		{"the id is in use", true, false, "PJSIP/sipp-answer-00000001"},
		{"no channel has the id", false, true, "prefix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == http.MethodPost:
					w.WriteHeader(409)
					_, _ = w.Write([]byte(`{"message":"Channel with given unique ID already exists"}`))
				case tt.exists:
					_, _ = w.Write([]byte(channelJSON("c-1", "PJSIP/sipp-answer")))
				default:
					w.WriteHeader(404)
					_, _ = w.Write([]byte(`{"message":"Channel not found"}`))
				}
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL+"/ari", nil)
			_, err := c.Originate(t.Context(), OriginateParams{Endpoint: "PJSIP/6001", ChannelID: "c-1"})
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != 409 {
				t.Fatalf("err = %v, want the 409", err)
			}
			if errors.Is(err, ErrIDPrefixConflict) != tt.wantPrefix || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %v, want prefix conflict %v and %q in it", err, tt.wantPrefix, tt.wantText)
			}
		})
	}
}

// TestRetryCheckStopsRetries: a caller that knows the first try reached Asterisk stops
// the repeat; the transport error is returned after one request.
func TestRetryCheckStopsRetries(t *testing.T) {
	a, srv := newFlakyARI(t, firstPOST(dropServed))
	c := newTestClient(t, srv.URL+"/ari", nil)
	asked := 0
	ctx := WithRetryCheck(t.Context(), func() bool { asked++; return false })
	_, err := c.Originate(ctx, OriginateParams{Endpoint: "PJSIP/sipp-answer", ChannelID: "c-1"})
	var ae *Error
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("err = %v, want the transport error", err)
	}
	if got := a.requests(); len(got) != 1 || asked != 1 {
		t.Errorf("requests %q, check asked %d times; want 1 and 1", got, asked)
	}
}
