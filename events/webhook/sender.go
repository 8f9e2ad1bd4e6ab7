package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds one POST (connect, send, reply headers and body).
const DefaultTimeout = 5 * time.Second

// MaxReply is how much of a receiver's reply body Post reads and returns.
const MaxReply = 64 << 10

// ErrNoSecret is returned by Post for a key with no webhook secret: invokeari never
// sends an unsigned callback.
var ErrNoSecret = errors.New("the key has no webhook secret; refusing to send unsigned")

// SenderConfig configures a Sender.
type SenderConfig struct {
	// Secret is the key's webhook secret; nil or empty makes Post refuse (ErrNoSecret).
	Secret func(key string) []byte
	// Allow is the key's policy; nil allows nothing.
	Allow func(key string) *AllowList
	// Timeout bounds one POST; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger is for transport trouble (default: discard).
	Logger *slog.Logger
	// Now is the clock for signatures (default time.Now); tests replace it.
	Now func() time.Time
}

// Sender POSTs JSON with Invokeari-Signature and Invokeari-Event-Id. Each key has its own
// HTTP client whose dialer re-checks every resolved address against the key's AllowList
// (no DNS rebinding to loopback or metadata addresses); no proxy, no redirects. Safe for
// concurrent use; it starts no goroutines of its own (idle connections close by timeout).
type Sender struct {
	cfg     SenderConfig
	log     *slog.Logger
	mu      sync.Mutex
	clients map[string]keyClient
}

type keyClient struct {
	allow *AllowList
	hc    *http.Client
}

// NewSender returns a Sender.
func NewSender(cfg SenderConfig) *Sender {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{cfg: cfg, log: log, clients: make(map[string]keyClient)}
}

// client is key's HTTP client, made again when the key's AllowList changed.
func (s *Sender) client(key string, allow *AllowList) *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[key]; ok && c.allow == allow {
		return c.hc
	}
	dialer := &net.Dialer{Timeout: s.cfg.Timeout, Control: func(network, address string, rc syscall.RawConn) error {
		if err := allow.p.Control(network, address, rc); err != nil {
			return fmt.Errorf("%w: %v", ErrNotAllowed, err)
		}
		return nil
	}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   s.cfg.Timeout,
		ResponseHeaderTimeout: s.cfg.Timeout,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	hc := &http.Client{Transport: tr, Timeout: s.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if old, ok := s.clients[key]; ok {
		old.hc.CloseIdleConnections()
	}
	s.clients[key] = keyClient{allow: allow, hc: hc}
	return hc
}

// Post sends body to url for key and returns the HTTP status and up to 64 KiB of the
// reply body. The URL is checked against the key's AllowList again (so a policy change
// applies to queued deliveries too). A transport failure returns status 0 and the error.
func (s *Sender) Post(ctx context.Context, key, url, eventID string, body []byte) (status int, respBody []byte, err error) {
	var secret []byte
	if s.cfg.Secret != nil {
		secret = s.cfg.Secret(key)
	}
	if len(secret) == 0 {
		return 0, nil, fmt.Errorf("post %s: key %s: %w", eventID, key, ErrNoSecret)
	}
	var allow *AllowList
	if s.cfg.Allow != nil {
		allow = s.cfg.Allow(key)
	}
	if err := allow.AllowURL(url); err != nil {
		return 0, nil, fmt.Errorf("post %s: %w", eventID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("post %s: %w", eventID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "invokeari-webhook/1")
	req.Header.Set(SignatureHeader, Sign(secret, s.cfg.Now(), body))
	if eventID != "" {
		req.Header.Set(EventIDHeader, eventID)
	}
	resp, err := s.client(key, allow).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("post %s: %w", eventID, err)
	}
	defer resp.Body.Close()
	respBody, err = io.ReadAll(io.LimitReader(resp.Body, MaxReply))
	// Drain a little more so the connection can be reused; a huge reply is cut off.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	if err != nil {
		return resp.StatusCode, respBody, fmt.Errorf("post %s: read reply: %w", eventID, err)
	}
	return resp.StatusCode, respBody, nil
}
