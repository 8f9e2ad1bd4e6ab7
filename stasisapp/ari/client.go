package ari

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults applied by NewClient to zero Config fields.
const (
	DefaultRequestTimeout = 5 * time.Second
	DefaultPingInterval   = 10 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	// DefaultMaxConns keeps the REST pool well below Asterisk's http.conf sessionlimit
	// (default 100), which the event websocket and every other ARI client share: a
	// connection over the limit is accepted and closed at once, an EOF to the client.
	DefaultMaxConns = 32
	// DefaultIdleConnTimeout closes a kept-alive REST connection before Asterisk does
	// (http.conf session_keep_alive, default 15 s): a request written on a connection
	// the server is closing at that moment dies in transport.
	DefaultIdleConnTimeout = 10 * time.Second
)

// maxBody bounds how much of a REST reply is read; ARI replies are small
// (a GET /channels with thousands of channels stays well below this).
const maxBody = 32 << 20

// Config configures a Client. URL, Username, Password and App are required.
type Config struct {
	// URL is the ARI base URL, e.g. http://127.0.0.1:8088/ari (a trailing slash is ignored).
	URL string
	// Username and Password are ARI credentials, sent as HTTP basic auth. The password
	// never appears in logs or error texts.
	Username, Password string
	// App is the Stasis application name the websocket registers.
	App string
	// HTTPClient is used for REST calls. Default: a keep-alive pool of at most MaxConns
	// connections, idle ones closed after DefaultIdleConnTimeout, that does not follow
	// redirects. When its Transport is an *http.Transport, the
	// websocket dialer reuses its TLS config, proxy and dialer.
	HTTPClient *http.Client
	// MaxConns caps the REST connections to this Asterisk of the default HTTPClient
	// (ignored when HTTPClient is set); requests beyond it wait for a free connection.
	// Default DefaultMaxConns.
	MaxConns int
	// Dial, when set, opens the default HTTPClient's connections, REST and websocket
	// alike (e.g. to observe them); ignored when HTTPClient is set. Default: net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// RequestTimeout bounds every REST call, its retries included, when ctx has no
	// shorter deadline. Default 5s.
	RequestTimeout time.Duration
	// Logger receives connection-level logs. Default: discard.
	Logger *slog.Logger
	// PingInterval is how often the websocket is pinged. The link is declared dead
	// when nothing (message or pong) arrived for 2*PingInterval. Default 10s.
	PingInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential reconnect backoff.
	// Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
}

// Client talks to one Asterisk over ARI: REST calls (safe for concurrent use) and one
// websocket event stream driven by Run. NewClient starts nothing; the only goroutines
// are those of Run, and they end when Run returns.
type Client struct {
	base           string // scheme://host[:port]/path without trailing slash
	wsURL          string
	username       string
	password       string
	app            string
	http           *http.Client
	requestTimeout time.Duration
	log            *slog.Logger
	pingInterval   time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration

	running     atomic.Bool
	connected   atomic.Bool
	reconnects  atomic.Uint64
	undecodable atomic.Uint64
	retries     atomic.Uint64
	skipped     atomic.Uint64
}

// NewClient validates cfg and returns a Client. It never dials.
func NewClient(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ari config: url: %w", err)
	}
	var wsScheme string
	switch u.Scheme {
	case "http":
		wsScheme = "ws"
	case "https":
		wsScheme = "wss"
	default:
		return nil, fmt.Errorf("ari config: url %q: scheme must be http or https", u.Redacted())
	}
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("ari config: url %q: no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("ari config: url %q: credentials belong in Username/Password, not the URL", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("ari config: url %q: must not have a query or fragment", u.Redacted())
	case cfg.Username == "":
		return nil, errors.New("ari config: username is required")
	case cfg.App == "":
		return nil, errors.New("ari config: app is required")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"request timeout", cfg.RequestTimeout},
		{"ping interval", cfg.PingInterval},
		{"min backoff", cfg.MinBackoff},
		{"max backoff", cfg.MaxBackoff},
	} {
		if d.v < 0 {
			return nil, fmt.Errorf("ari config: %s is negative", d.name)
		}
	}

	c := &Client{
		username:       cfg.Username,
		password:       cfg.Password,
		app:            cfg.App,
		http:           cfg.HTTPClient,
		requestTimeout: orDefault(cfg.RequestTimeout, DefaultRequestTimeout),
		log:            cfg.Logger,
		pingInterval:   orDefault(cfg.PingInterval, DefaultPingInterval),
		minBackoff:     orDefault(cfg.MinBackoff, DefaultMinBackoff),
		maxBackoff:     orDefault(cfg.MaxBackoff, DefaultMaxBackoff),
	}
	if c.maxBackoff < c.minBackoff {
		return nil, fmt.Errorf("ari config: max backoff %s is below min backoff %s", c.maxBackoff, c.minBackoff)
	}
	if cfg.MaxConns < 0 {
		return nil, errors.New("ari config: max conns is negative")
	}
	if c.http == nil {
		c.http = defaultHTTPClient(cmp.Or(cfg.MaxConns, DefaultMaxConns))
		if cfg.Dial != nil {
			c.http.Transport.(*http.Transport).DialContext = cfg.Dial
		}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	c.base = u.String()
	ws := *u
	ws.Scheme = wsScheme
	ws.Path += "/events"
	ws.RawQuery = "app=" + queryEscape(cfg.App)
	c.wsURL = ws.String()
	return c, nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func defaultHTTPClient(maxConns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxConnsPerHost = maxConns
	t.MaxIdleConns = maxConns
	t.MaxIdleConnsPerHost = maxConns
	t.IdleConnTimeout = DefaultIdleConnTimeout
	return &http.Client{
		Transport: t,
		// A redirect from ARI is unexpected; report it instead of re-sending credentials elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Endpoint is ARI's Endpoint model.
type Endpoint struct {
	Technology string   `json:"technology"`
	Resource   string   `json:"resource"`
	State      string   `json:"state"` // unknown, offline, online
	ChannelIDs []string `json:"channel_ids"`
}

// Application is ARI's Application model.
type Application struct {
	Name             string            `json:"name"`
	ChannelIDs       []string          `json:"channel_ids"`
	BridgeIDs        []string          `json:"bridge_ids"`
	EndpointIDs      []string          `json:"endpoint_ids"`
	DeviceNames      []string          `json:"device_names"`
	EventsAllowed    []json.RawMessage `json:"events_allowed"`
	EventsDisallowed []json.RawMessage `json:"events_disallowed"`
}

// AsteriskInfo is ARI's AsteriskInfo model (GET /asterisk/info).
type AsteriskInfo struct {
	Build  BuildInfo  `json:"build"`
	System SystemInfo `json:"system"`
	Config ConfigInfo `json:"config"`
	Status StatusInfo `json:"status"`
}

// BuildInfo says how Asterisk was built.
type BuildInfo struct {
	OS      string `json:"os"`
	Kernel  string `json:"kernel"`
	Options string `json:"options"`
	Machine string `json:"machine"`
	Date    string `json:"date"`
	User    string `json:"user"`
}

// SystemInfo identifies the Asterisk instance.
type SystemInfo struct {
	Version  string `json:"version"`
	EntityID string `json:"entity_id"`
}

// ConfigInfo is Asterisk's core configuration.
type ConfigInfo struct {
	Name            string  `json:"name"`
	DefaultLanguage string  `json:"default_language"`
	MaxChannels     int     `json:"max_channels,omitempty"`
	MaxOpenFiles    int     `json:"max_open_files,omitempty"`
	MaxLoad         float64 `json:"max_load,omitempty"`
	SetID           struct {
		User  string `json:"user"`
		Group string `json:"group"`
	} `json:"setid"`
}

// StatusInfo holds Asterisk's start and reload times; a changed StartupTime means
// Asterisk restarted and every channel it had is gone.
type StatusInfo struct {
	StartupTime    Time `json:"startup_time"`
	LastReloadTime Time `json:"last_reload_time"`
}

// OriginateParams are the parameters of POST /channels. Empty strings and zero
// numbers are omitted from the request.
type OriginateParams struct {
	Endpoint       string
	App            string // Stasis app; defaults to Config.App when App, Context and Extension are all empty
	AppArgs        string
	ChannelID      string
	OtherChannelID string
	// Context, Extension and Priority are for a dialplan originate.
	Context   string
	Extension string
	Priority  int
	Timeout   int // seconds to wait for answer; 0 = Asterisk's default (30)
	CallerID  string
	// Variables are channel variables, sent in the JSON body {"variables":{...}}.
	Variables map[string]string
}

// Originate creates a channel and dials it (POST /channels).
func (c *Client) Originate(ctx context.Context, p OriginateParams) (Channel, error) {
	if p.App == "" && p.Context == "" && p.Extension == "" {
		p.App = c.app
	}
	q := query(
		"endpoint", p.Endpoint,
		"app", p.App,
		"appArgs", p.AppArgs,
		"channelId", p.ChannelID,
		"otherChannelId", p.OtherChannelID,
		"context", p.Context,
		"extension", p.Extension,
		"priority", itoa(p.Priority),
		"timeout", itoa(p.Timeout),
		"callerId", p.CallerID,
	)
	var body any
	if len(p.Variables) > 0 {
		body = struct {
			Variables map[string]string `json:"variables"`
		}{p.Variables}
	}
	var ch Channel
	attempts, err := c.doAttempts(ctx, http.MethodPost, "/channels", q, body, &ch)
	var ae *Error
	if p.ChannelID == "" || !errors.As(err, &ae) || ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "already exists") {
		return ch, err
	}
	if attempts > 1 {
		// An earlier attempt may have reached Asterisk and created the channel before
		// its connection failed.
		return c.adopt(ctx, p, ae)
	}
	return ch, c.explainConflict(ctx, p.ChannelID, ae)
}

// Continue sends a channel in Stasis back to the dialplan (POST /channels/{id}/continue).
// Priority 0 is omitted (Asterisk then uses 1 for a new extension).
func (c *Client) Continue(ctx context.Context, channelID, context, extension string, priority int) error {
	q := query("context", context, "extension", extension, "priority", itoa(priority))
	attempts, err := c.doAttempts(ctx, http.MethodPost, path("channels", channelID, "continue"), q, nil, nil)
	var ae *Error
	if attempts > 1 && errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusConflict) {
		// The channel left Stasis (409) or hung up (404) since an attempt whose reply was
		// lost, most likely because that attempt continued it: nothing is left to do.
		traceStep(ctx, fmt.Sprintf("ari POST continue: retry answered %d %s: the channel already left Stasis or hung up (an earlier attempt continued it)", ae.Status, ae.Message), ae.Status)
		return nil
	}
	return err
}

// Hangup hangs a channel up (DELETE /channels/{id}); reason (normal, busy, congestion,
// no_answer, ...) is omitted when empty.
func (c *Client) Hangup(ctx context.Context, channelID, reason string) error {
	attempts, err := c.doAttempts(ctx, http.MethodDelete, path("channels", channelID), query("reason", reason), nil, nil)
	var ae *Error
	if attempts > 1 && errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		traceStep(ctx, "ari DELETE /channels/{id}: retry answered 404: the channel is already gone", ae.Status)
		return nil
	}
	return err
}

// GetChannel returns one channel (GET /channels/{id}); a gone channel is *Error 404.
func (c *Client) GetChannel(ctx context.Context, channelID string) (Channel, error) {
	var ch Channel
	err := c.do(ctx, http.MethodGet, path("channels", channelID), "", nil, &ch)
	return ch, err
}

// ListChannels returns every channel Asterisk has (GET /channels).
func (c *Client) ListChannels(ctx context.Context) ([]Channel, error) {
	var chs []Channel
	err := c.do(ctx, http.MethodGet, "/channels", "", nil, &chs)
	return chs, err
}

// GetEndpoint returns one endpoint (GET /endpoints/{tech}/{resource}).
func (c *Client) GetEndpoint(ctx context.Context, tech, resource string) (Endpoint, error) {
	var ep Endpoint
	err := c.do(ctx, http.MethodGet, path("endpoints", tech, resource), "", nil, &ep)
	return ep, err
}

// GetApplication returns a Stasis application (GET /applications/{name}); 404 when no
// websocket has registered it.
func (c *Client) GetApplication(ctx context.Context, name string) (Application, error) {
	var app Application
	err := c.do(ctx, http.MethodGet, path("applications", name), "", nil, &app)
	return app, err
}

// Subscribe subscribes an application to an event source such as "channel:{id}"
// (POST /applications/{name}/subscription).
func (c *Client) Subscribe(ctx context.Context, app, eventSource string) (Application, error) {
	var a Application
	err := c.do(ctx, http.MethodPost, path("applications", app, "subscription"), query("eventSource", eventSource), nil, &a)
	return a, err
}

// AsteriskInfo returns Asterisk's build, system, config and status information
// (GET /asterisk/info).
func (c *Client) AsteriskInfo(ctx context.Context) (AsteriskInfo, error) {
	var info AsteriskInfo
	err := c.do(ctx, http.MethodGet, "/asterisk/info", "", nil, &info)
	return info, err
}

// do performs one REST call, retried on transport errors (see retry.go). p is an
// escaped path relative to the base URL, q an encoded query. A non-2xx reply is *Error;
// anything else failing is wrapped.
func (c *Client) do(ctx context.Context, method, p, q string, body, out any) error {
	_, err := c.doAttempts(ctx, method, p, q, body, out)
	return err
}

// once sends one request and reads its whole reply. An error is a transport error:
// the request may or may not have reached Asterisk. sends is how many connections the
// request was written on: net/http itself re-sends a request whose connection failed
// before it counted a byte written, and Asterisk may have read that first copy.
func (c *Client) once(ctx context.Context, method, u string, payload []byte) (status, sends int, data []byte, err error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { sends++ }})
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, 0, nil, err
	}
	req.SetBasicAuth(c.username, c.password)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, sends, nil, err
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, sends, nil, fmt.Errorf("read %d reply: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, sends, data, nil
}

// newError builds *Error from a non-2xx reply. ARI puts its text under "message",
// except allocation failures which use "error"; a non-JSON body gets the status text.
func newError(method, p string, status int, data []byte) *Error {
	e := &Error{Method: method, Path: p, Status: status}
	var body any
	if len(bytes.TrimSpace(data)) > 0 && json.Unmarshal(data, &body) == nil {
		e.Body = body
		if m, ok := body.(map[string]any); ok {
			if s, ok := m["message"].(string); ok && s != "" {
				e.Message = s
			} else if s, ok := m["error"].(string); ok && s != "" {
				e.Message = s
			}
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// path joins escaped segments into "/a/b/c". '+' is escaped too: Asterisk's URI
// decoding turns a literal '+' into a space.
func path(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(url.PathEscape(s), "+", "%2B"))
	}
	return b.String()
}

// query encodes key/value pairs in the order given, skipping empty values.
// Spaces become %20, not '+': Asterisk decodes '+' in a query as a space.
func query(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(queryEscape(kv[i]))
		b.WriteByte('=')
		b.WriteString(queryEscape(kv[i+1]))
	}
	return b.String()
}

func queryEscape(s string) string {
	// QueryEscape turns '+' into %2B first, so every '+' left stands for a space.
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}
