package ari

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testUser = "invokeari"
	testPass = "s3cr3t-Pa55"
)

// gotRequest is what the fake ARI server saw.
type gotRequest struct {
	Method      string
	EscapedPath string
	RawQuery    string
	Query       url.Values
	Body        string
	ContentType string
	User, Pass  string
	AuthOK      bool
}

// reply is what the fake ARI server answers.
type reply struct {
	status      int
	contentType string
	body        []byte
	header      map[string]string
}

// replayed builds a reply from a recorded REST exchange.
func replayed(tb testing.TB, file, method, pathPrefix string, status int) reply {
	tb.Helper()
	l := findREST(tb, file, method, pathPrefix, status)
	r := reply{status: l.Status, header: l.ResponseHeaders}
	if len(l.ResponseBody) > 0 && string(l.ResponseBody) != "null" {
		r.body = compact(tb, l.ResponseBody)
		r.contentType = "application/json"
	}
	return r
}

// fakeARI serves rep for every request and reports each request on the returned channel.
func fakeARI(t *testing.T, rep reply) (*httptest.Server, <-chan gotRequest) {
	t.Helper()
	got := make(chan gotRequest, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u, p, ok := r.BasicAuth()
		got <- gotRequest{
			Method: r.Method, EscapedPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Query: r.URL.Query(),
			Body: string(body), ContentType: r.Header.Get("Content-Type"), User: u, Pass: p, AuthOK: ok,
		}
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		if rep.contentType != "" {
			w.Header().Set("Content-Type", rep.contentType)
		}
		w.WriteHeader(rep.status)
		_, _ = w.Write(rep.body)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func newTestClient(t *testing.T, rawURL string, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: rawURL, Username: testUser, Password: testPass, App: "invokeari"}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestNewClient(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		wantWS  string
	}{
		{"ok", Config{URL: "http://127.0.0.1:8088/ari", Username: "u", App: "invokeari"}, "", "ws://127.0.0.1:8088/ari/events?app=invokeari"},
		{"trailing slash https", Config{URL: "https://pbx.example:8089/ari/", Username: "u", App: "my app"}, "", "wss://pbx.example:8089/ari/events?app=my%20app"},
		{"empty", Config{Username: "u", App: "a"}, "scheme", ""},
		{"ftp", Config{URL: "ftp://127.0.0.1/ari", Username: "u", App: "a"}, "scheme", ""},
		{"ws scheme", Config{URL: "ws://127.0.0.1/ari", Username: "u", App: "a"}, "scheme", ""},
		{"no host", Config{URL: "http:///ari", Username: "u", App: "a"}, "no host", ""},
		{"credentials in url", Config{URL: "http://u:hunter2@127.0.0.1/ari", Username: "u", App: "a"}, "credentials", ""},
		{"query", Config{URL: "http://127.0.0.1/ari?x=1", Username: "u", App: "a"}, "query", ""},
		{"no user", Config{URL: "http://127.0.0.1/ari", App: "a"}, "username", ""},
		{"no app", Config{URL: "http://127.0.0.1/ari", Username: "u"}, "app", ""},
		{"negative", Config{URL: "http://127.0.0.1/ari", Username: "u", App: "a", PingInterval: -1}, "negative", ""},
		{"backoff order", Config{URL: "http://127.0.0.1/ari", Username: "u", App: "a", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "max backoff", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			if c.wsURL != tt.wantWS {
				t.Errorf("ws url %q, want %q", c.wsURL, tt.wantWS)
			}
			if c.requestTimeout != DefaultRequestTimeout || c.pingInterval != DefaultPingInterval ||
				c.minBackoff != DefaultMinBackoff || c.maxBackoff != DefaultMaxBackoff {
				t.Errorf("defaults not applied: %+v", c)
			}
		})
	}
}

// TestREST checks every call's method, path, query, body and auth, and the decode of a
// recorded Asterisk reply.
func TestREST(t *testing.T) {
	vars := map[string]string{"CONFCODE": "4711", "INVOKE_REQ": "req-0001"}
	tests := []struct {
		name      string
		rep       reply
		call      func(context.Context, *Client) (any, error)
		wantReq   gotRequest // Method, EscapedPath, Query, Body (JSON, "" = none)
		wantValue func(t *testing.T, v any)
	}{
		{
			name: "originate stasis with variables",
			rep:  replayed(t, "s2_stasis_pjsip_answer_sub.nosuball.jsonl", "POST", "/ari/channels", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Originate(ctx, OriginateParams{
					Endpoint: "PJSIP/sipp-answer", App: "invokeari", AppArgs: "outbound,req-0001",
					ChannelID: "call-0001", Timeout: 30, CallerID: "InvokeARI <+15550001111>", Variables: vars,
				})
			},
			wantReq: gotRequest{Method: "POST", EscapedPath: "/ari/channels", Query: url.Values{
				"endpoint": {"PJSIP/sipp-answer"}, "app": {"invokeari"}, "appArgs": {"outbound,req-0001"},
				"channelId": {"call-0001"}, "timeout": {"30"}, "callerId": {"InvokeARI <+15550001111>"},
			}, Body: `{"variables":{"CONFCODE":"4711","INVOKE_REQ":"req-0001"}}`},
			wantValue: func(t *testing.T, v any) {
				ch := v.(Channel)
				if ch.ID != "1795680114.205" || ch.Name != "PJSIP/sipp-answer-00000021" || ch.State != "Down" || ch.CreationTime.IsZero() {
					t.Errorf("channel %+v", ch)
				}
			},
		},
		{
			name: "originate dialplan without variables",
			rep:  replayed(t, "s1_dialplan_local_answer.jsonl", "POST", "/ari/channels", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Originate(ctx, OriginateParams{
					Endpoint: "Local/answer@sim", Context: "confirmcode", Extension: "s", Priority: 1,
					ChannelID: "a", OtherChannelID: "b",
				})
			},
			wantReq: gotRequest{Method: "POST", EscapedPath: "/ari/channels", Query: url.Values{
				"endpoint": {"Local/answer@sim"}, "context": {"confirmcode"}, "extension": {"s"}, "priority": {"1"},
				"channelId": {"a"}, "otherChannelId": {"b"},
			}},
			wantValue: func(t *testing.T, v any) {
				if ch := v.(Channel); ch.ID != "1795679862.110" {
					t.Errorf("channel id %q", ch.ID)
				}
			},
		},
		{
			name: "originate defaults app to Config.App",
			rep:  replayed(t, "s2_stasis_pjsip_answer_sub.nosuball.jsonl", "POST", "/ari/channels", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Originate(ctx, OriginateParams{Endpoint: "PJSIP/6001"})
			},
			wantReq: gotRequest{Method: "POST", EscapedPath: "/ari/channels", Query: url.Values{
				"endpoint": {"PJSIP/6001"}, "app": {"invokeari"},
			}},
		},
		{
			name: "continue",
			rep:  reply{status: 204},
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.Continue(ctx, "1795680114.205", "confirmcode", "s", 1)
			},
			wantReq: gotRequest{Method: "POST", EscapedPath: "/ari/channels/1795680114.205/continue", Query: url.Values{
				"context": {"confirmcode"}, "extension": {"s"}, "priority": {"1"},
			}},
		},
		{
			name: "hangup with reason",
			rep:  reply{status: 204},
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.Hangup(ctx, "call-0001", "busy")
			},
			wantReq: gotRequest{Method: "DELETE", EscapedPath: "/ari/channels/call-0001", Query: url.Values{"reason": {"busy"}}},
		},
		{
			name: "hangup without reason",
			rep:  reply{status: 204},
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.Hangup(ctx, "call-0001", "")
			},
			wantReq: gotRequest{Method: "DELETE", EscapedPath: "/ari/channels/call-0001", Query: url.Values{}},
		},
		{
			name: "get channel escapes the id",
			rep:  replayed(t, "s3_createdial_local_busy.jsonl", "GET", "/ari/channels/", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.GetChannel(ctx, "a/b c?d+e%f")
			},
			wantReq: gotRequest{Method: "GET", EscapedPath: "/ari/channels/a%2Fb%20c%3Fd%2Be%25f", Query: url.Values{}},
			wantValue: func(t *testing.T, v any) {
				if ch := v.(Channel); ch.ID != "1795680207.234" || ch.Dialplan.AppName != "Stasis" {
					t.Errorf("channel %+v", ch)
				}
			},
		},
		{
			name: "list channels",
			rep:  replayed(t, "s4_ids_dialplan.jsonl", "GET", "/ari/channels", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ListChannels(ctx)
			},
			wantReq: gotRequest{Method: "GET", EscapedPath: "/ari/channels", Query: url.Values{}},
			wantValue: func(t *testing.T, v any) {
				chs := v.([]Channel)
				if len(chs) == 0 || chs[0].ID != "invokeari-call-0002-b" {
					t.Errorf("channels %+v", chs)
				}
			},
		},
		{
			name: "get endpoint",
			rep:  replayed(t, "s6_ws_connect_ping_info.jsonl", "GET", "/ari/endpoints/PJSIP/sipp-answer", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.GetEndpoint(ctx, "PJSIP", "sipp-answer")
			},
			wantReq: gotRequest{Method: "GET", EscapedPath: "/ari/endpoints/PJSIP/sipp-answer", Query: url.Values{}},
			wantValue: func(t *testing.T, v any) {
				want := Endpoint{Technology: "PJSIP", Resource: "sipp-answer", State: "online", ChannelIDs: []string{}}
				if got := v.(Endpoint); !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "get application",
			rep:  replayed(t, "s6_ws_asterisk_restart_now.jsonl", "GET", "/ari/applications/invokeari", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.GetApplication(ctx, "invokeari")
			},
			wantReq: gotRequest{Method: "GET", EscapedPath: "/ari/applications/invokeari", Query: url.Values{}},
			wantValue: func(t *testing.T, v any) {
				if a := v.(Application); a.Name != "invokeari" || len(a.ChannelIDs) != 1 {
					t.Errorf("application %+v", a)
				}
			},
		},
		{
			name: "subscribe",
			rep:  replayed(t, "s2_stasis_local_answer_sub.jsonl", "POST", "/ari/applications/invokeari/subscription", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.Subscribe(ctx, "invokeari", "channel:1795680045.164")
			},
			wantReq: gotRequest{Method: "POST", EscapedPath: "/ari/applications/invokeari/subscription",
				Query: url.Values{"eventSource": {"channel:1795680045.164"}}},
			wantValue: func(t *testing.T, v any) {
				if a := v.(Application); a.Name != "invokeari" {
					t.Errorf("application %+v", a)
				}
			},
		},
		{
			name: "asterisk info",
			rep:  replayed(t, "s6_ws_connect_ping_info.jsonl", "GET", "/ari/asterisk/info", 200),
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.AsteriskInfo(ctx)
			},
			wantReq: gotRequest{Method: "GET", EscapedPath: "/ari/asterisk/info", Query: url.Values{}},
			wantValue: func(t *testing.T, v any) {
				info := v.(AsteriskInfo)
				start, _ := time.Parse(TimeLayout, "2026-11-26T07:50:28.833+0000")
				if !info.Status.StartupTime.Equal(start) || !info.Status.LastReloadTime.Equal(start) {
					t.Errorf("status %+v", info.Status)
				}
				if info.System.Version != "22.10.1" || info.System.EntityID != "02:fc:00:00:00:01" ||
					info.Build.OS != "Linux" || info.Build.Machine != "x86_64" || info.Config.MaxOpenFiles != 65536 ||
					info.Config.DefaultLanguage != "en" {
					t.Errorf("info %+v", info)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := fakeARI(t, tt.rep)
			c := newTestClient(t, srv.URL+"/ari/", nil)
			v, err := tt.call(t.Context(), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			got := <-reqs
			if got.Method != tt.wantReq.Method || got.EscapedPath != tt.wantReq.EscapedPath {
				t.Errorf("request %s %s, want %s %s", got.Method, got.EscapedPath, tt.wantReq.Method, tt.wantReq.EscapedPath)
			}
			if !reflect.DeepEqual(got.Query, tt.wantReq.Query) {
				t.Errorf("query %v, want %v", got.Query, tt.wantReq.Query)
			}
			if strings.Contains(got.RawQuery, "+") {
				t.Errorf("raw query %q has '+': Asterisk reads it as a space", got.RawQuery)
			}
			if !got.AuthOK || got.User != testUser || got.Pass != testPass {
				t.Errorf("basic auth %v %q %q", got.AuthOK, got.User, got.Pass)
			}
			if tt.wantReq.Body == "" {
				if got.Body != "" {
					t.Errorf("body %q, want none", got.Body)
				}
			} else {
				if got.ContentType != "application/json" {
					t.Errorf("content type %q", got.ContentType)
				}
				var gb, wb any
				_ = json.Unmarshal([]byte(got.Body), &gb)
				_ = json.Unmarshal([]byte(tt.wantReq.Body), &wb)
				if !reflect.DeepEqual(gb, wb) {
					t.Errorf("body %s, want %s", got.Body, tt.wantReq.Body)
				}
			}
			if tt.wantValue != nil {
				tt.wantValue(t, v)
			}
		})
	}
}

// TestRESTErrors checks that every non-2xx reply becomes *Error with ARI's message.
func TestRESTErrors(t *testing.T) {
	getChannel := func(ctx context.Context, c *Client) error { _, err := c.GetChannel(ctx, "gone-1"); return err }
	originate := func(ctx context.Context, c *Client) error {
		_, err := c.Originate(ctx, OriginateParams{Endpoint: "PJSIP/offline"})
		return err
	}
	tests := []struct {
		name        string
		rep         reply
		call        func(context.Context, *Client) error
		wantMethod  string
		wantPath    string
		wantStatus  int
		wantMessage string
		wantBody    bool
	}{
		{"401", replayed(t, "s5_err_auth.jsonl", "GET", "/ari/asterisk/info", 401),
			func(ctx context.Context, c *Client) error { _, err := c.AsteriskInfo(ctx); return err },
			"GET", "/asterisk/info", 401, "Authentication required", true},
		{"404 channel not found", replayed(t, "s5_err_gone_channel.jsonl", "GET", "/ari/channels/", 404),
			getChannel, "GET", "/channels/gone-1", 404, "Channel not found", true},
		{"404 hangup", replayed(t, "s5_err_gone_channel.jsonl", "DELETE", "/ari/channels/", 404),
			func(ctx context.Context, c *Client) error { return c.Hangup(ctx, "gone-1", "") },
			"DELETE", "/channels/gone-1", 404, "Channel not found", true},
		{"409 id in use", replayed(t, "s4_ids_dialplan.jsonl", "POST", "/ari/channels", 409),
			originate, "POST", "/channels", 409, "Channel with given unique ID already exists", true},
		{"409 not in stasis", replayed(t, "s5_err_gone_channel.jsonl", "POST", "/ari/channels/", 409),
			func(ctx context.Context, c *Client) error { return c.Continue(ctx, "x", "confirmcode", "s", 1) },
			"POST", "/channels/x/continue", 409, "Channel not in Stasis application", true},
		{"500 allocation failed uses error key", replayed(t, "s1_dialplan_pjsip_offline_nocontact.jsonl", "POST", "/ari/channels", 500),
			originate, "POST", "/channels", 500, "Allocation failed", true},
		{"422 subscribe", replayed(t, "s5_err_unknown_app.jsonl", "POST", "/ari/applications/invokeari/subscription", 422),
			func(ctx context.Context, c *Client) error {
				_, err := c.Subscribe(ctx, "invokeari", "channel:nosuch")
				return err
			},
			"POST", "/applications/invokeari/subscription", 422, "Event source does not exist", true},
		{"503 not json", reply{status: 503, contentType: "text/html", body: []byte("<html>busy</html>")},
			getChannel, "GET", "/channels/gone-1", 503, "Service Unavailable", false},
		{"502 empty body", reply{status: 502}, getChannel, "GET", "/channels/gone-1", 502, "Bad Gateway", false},
		{"redirect is not followed", reply{status: 302, header: map[string]string{"Location": "http://127.0.0.1:1/elsewhere"}},
			getChannel, "GET", "/channels/gone-1", 302, "Found", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := fakeARI(t, tt.rep)
			c := newTestClient(t, srv.URL+"/ari", nil)
			err := tt.call(t.Context(), c)
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if ae.Method != tt.wantMethod || ae.Path != tt.wantPath || ae.Status != tt.wantStatus || ae.Message != tt.wantMessage {
				t.Errorf("got %s %s %d %q, want %s %s %d %q", ae.Method, ae.Path, ae.Status, ae.Message,
					tt.wantMethod, tt.wantPath, tt.wantStatus, tt.wantMessage)
			}
			if (ae.Body != nil) != tt.wantBody {
				t.Errorf("Body = %v, want present %v", ae.Body, tt.wantBody)
			}
			if strings.Contains(err.Error(), testPass) {
				t.Errorf("error text leaks the password: %v", err)
			}
			if len(reqs) != 1 {
				t.Errorf("server saw %d requests, want 1", len(reqs))
			}
		})
	}
}

// blockingARI answers nothing until the client gives up; after waitLimit it replies 200
// so that a client ignoring its deadlines fails the test instead of hanging it.
func blockingARI(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(waitLimit):
			_, _ = w.Write([]byte(`{"id":"late"}`))
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv
}

func TestRESTTransportErrors(t *testing.T) {
	closedURL := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/ari"
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":`))
	}))
	defer bad.Close()

	tests := []struct {
		name     string
		url      func(t *testing.T) string
		timeout  time.Duration // Config.RequestTimeout
		ctxLimit time.Duration // 0 = no ctx deadline
		wantIs   error
	}{
		{"ctx deadline honoured", func(t *testing.T) string { return blockingARI(t).URL + "/ari" }, 0, 50 * time.Millisecond, context.DeadlineExceeded},
		{"request timeout when ctx has none", func(t *testing.T) string { return blockingARI(t).URL + "/ari" }, 50 * time.Millisecond, 0, context.DeadlineExceeded},
		{"connection refused, retried until the request timeout", closedURL, 300 * time.Millisecond, 0, nil},
		{"undecodable 200", func(*testing.T) string { return bad.URL + "/ari" }, 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, tt.url(t), func(cfg *Config) { cfg.RequestTimeout = tt.timeout })
			ctx := t.Context()
			if tt.ctxLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
				defer cancel()
			}
			start := time.Now()
			_, err := c.GetChannel(ctx, "x")
			if err == nil {
				t.Fatal("no error")
			}
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("took %v", elapsed)
			}
			var ae *Error
			if errors.As(err, &ae) {
				t.Errorf("err = %v is *Error; transport failures must not be", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), "GET /channels/x") {
				t.Errorf("err %q does not name the call", err)
			}
			if strings.Contains(err.Error(), testPass) {
				t.Errorf("error text leaks the password: %v", err)
			}
		})
	}
}
