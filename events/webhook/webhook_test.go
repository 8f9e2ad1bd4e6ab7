package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"c1","seq":1}`)
	now := time.Unix(1_800_000_000, 0)
	good := Sign(secret, now, body)
	if want := "t=1800000000,v1="; !strings.HasPrefix(good, want) || len(good) != len(want)+64 {
		t.Fatalf("Sign = %q; want %s<64 hex>", good, want)
	}
	tests := []struct {
		name   string
		header string
		body   string
		now    time.Time
		want   error
	}{
		{"valid", good, string(body), now, nil},
		{"valid 4m later", good, string(body), now.Add(4 * time.Minute), nil},
		{"stale", good, string(body), now.Add(6 * time.Minute), ErrStale},
		{"future", good, string(body), now.Add(-6 * time.Minute), ErrStale},
		{"body changed", good, `{"id":"c1","seq":2}`, now, ErrMismatch},
		{"other secret", Sign([]byte("other"), now, body), string(body), now, ErrMismatch},
		{"t changed", strings.Replace(good, "t=1800000000", "t=1800000001", 1), string(body), now, ErrMismatch},
		{"second v1 matches (rotation)", "t=1800000000,v1=" + strings.Repeat("00", 32) + "," + good[strings.Index(good, "v1="):], string(body), now, nil},
		{"no v1", "t=1800000000", string(body), now, ErrMalformed},
		{"no t", good[strings.Index(good, "v1="):], string(body), now, ErrMalformed},
		{"short hex", "t=1800000000,v1=abcd", string(body), now, ErrMalformed},
		{"empty", "", string(body), now, ErrMalformed},
	}
	for _, tt := range tests {
		err := Verify(secret, tt.header, []byte(tt.body), tt.now, DefaultMaxAge)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: Verify = %v; want %v", tt.name, err, tt.want)
		}
	}
}

func TestAllowURL(t *testing.T) {
	tests := []struct {
		allow []string
		url   string
		ok    bool
	}{
		{[]string{"hooks.example.com"}, "https://hooks.example.com/cb?x=1", true},
		{[]string{"hooks.example.com"}, "https://HOOKS.example.com:8443/cb", true},
		{[]string{"hooks.example.com"}, "https://evil.example.com/cb", false},
		{[]string{"hooks.example.com"}, "ftp://hooks.example.com/cb", false},
		{[]string{"hooks.example.com"}, "hooks.example.com/cb", false},
		{[]string{"hooks.example.com"}, "https://user:pw@hooks.example.com/cb", false},
		{[]string{"hooks.example.com"}, "https://hooks.example.com/cb#frag", false},
		{[]string{"hooks.example.com"}, "https://hooks.example.com/" + strings.Repeat("a", MaxURL), false},
		{[]string{"0.0.0.0/0"}, "http://203.0.113.7/cb", true},
		{[]string{"0.0.0.0/0"}, "http://127.0.0.1/cb", false},
		{[]string{"0.0.0.0/0"}, "http://169.254.169.254/latest", false},
		{[]string{"0.0.0.0/0", "::/0"}, "http://[::1]/cb", false},
		{[]string{"127.0.0.1"}, "http://127.0.0.1:9000/cb", true},
		{[]string{"127.0.0.1"}, "http://127.0.0.2:9000/cb", false},
		{[]string{"169.254.0.0/16"}, "http://169.254.169.254/latest", false}, // metadata needs its own entry
		{[]string{"169.254.169.254"}, "http://169.254.169.254/latest", true},
		{nil, "http://203.0.113.7/cb", false},
		{[]string{"10.0.0.0/8"}, "http://10.1.2.3:0/cb", false},
	}
	for _, tt := range tests {
		a, err := ParseAllowList(tt.allow)
		if err != nil {
			t.Fatalf("ParseAllowList(%v): %v", tt.allow, err)
		}
		err = a.AllowURL(tt.url)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrNotAllowed)) {
			t.Errorf("allow %v: AllowURL(%.60q) = %v; want ok=%v", tt.allow, tt.url, err, tt.ok)
		}
	}
	if _, err := ParseAllowList([]string{"10.0.0.1/8", "not a host"}); err == nil ||
		!strings.Contains(err.Error(), "allow[0]") || !strings.Contains(err.Error(), "allow[1]") {
		t.Errorf("bad entries: err = %v; want both named", err)
	}
}

// receiver is a test HTTP server that verifies what it gets.
func newReceiver(t *testing.T, secret []byte, status int) (*httptest.Server, chan http.Header) {
	t.Helper()
	got := make(chan http.Header, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), body, time.Now(), DefaultMaxAge); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		got <- r.Header.Clone()
		w.WriteHeader(status)
		fmt.Fprint(w, strings.Repeat("x", MaxReply+10))
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestSenderPost(t *testing.T) {
	secret := []byte("k-secret")
	srv, got := newReceiver(t, secret, http.StatusAccepted)
	local, _ := ParseAllowList([]string{"127.0.0.1"})
	byName, _ := ParseAllowList([]string{"localhost"}) // localhost resolves to loopback: refused at dial
	none, _ := ParseAllowList(nil)
	policies := map[string]*AllowList{"k": local, "name": byName, "none": none}
	s := NewSender(SenderConfig{
		Secret: func(key string) []byte {
			if key == "nosecret" {
				return nil
			}
			return secret
		},
		Allow:   func(key string) *AllowList { return policies[key] },
		Timeout: 2 * time.Second,
	})
	ctx := context.Background()
	status, reply, err := s.Post(ctx, "k", srv.URL+"/cb", "c1.1", []byte(`{"id":"c1"}`))
	if err != nil || status != http.StatusAccepted || len(reply) != MaxReply {
		t.Fatalf("Post = %d, %d bytes, %v; want 202, %d bytes", status, len(reply), err, MaxReply)
	}
	h := <-got
	if h.Get(EventIDHeader) != "c1.1" || h.Get("Content-Type") != "application/json" {
		t.Errorf("headers: event id %q, content type %q", h.Get(EventIDHeader), h.Get("Content-Type"))
	}

	_, _, err = s.Post(ctx, "nosecret", srv.URL, "c1.2", []byte(`{}`))
	if !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: err = %v; want ErrNoSecret", err)
	}
	_, _, err = s.Post(ctx, "none", srv.URL, "c1.3", []byte(`{}`))
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("empty allow list: err = %v; want ErrNotAllowed", err)
	}
	nameURL := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	_, _, err = s.Post(ctx, "name", nameURL, "c1.4", []byte(`{}`))
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("host name resolving to loopback: err = %v; want the dialer's ErrNotAllowed", err)
	}
	select {
	case h := <-got:
		t.Errorf("a refused post reached the receiver: %v", h)
	default:
	}
}

func TestSenderNoRedirect(t *testing.T) {
	secret := []byte("k")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	local, _ := ParseAllowList([]string{"127.0.0.1"})
	s := NewSender(SenderConfig{Secret: func(string) []byte { return secret }, Allow: func(string) *AllowList { return local }})
	status, _, err := s.Post(context.Background(), "k", srv.URL, "c.1", []byte(`{}`))
	if err != nil || status != http.StatusFound {
		t.Errorf("redirect: status %d, err %v; want 302 returned, not followed", status, err)
	}
}

func TestSenderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	local, _ := ParseAllowList([]string{"127.0.0.1"})
	s := NewSender(SenderConfig{Secret: func(string) []byte { return []byte("k") }, Allow: func(string) *AllowList { return local },
		Timeout: 200 * time.Millisecond})
	began := time.Now()
	status, _, err := s.Post(context.Background(), "k", srv.URL, "c.1", []byte(`{}`))
	if err == nil || status != 0 || time.Since(began) > 3*time.Second {
		t.Errorf("slow receiver: status %d, err %v after %s; want a timeout error within the bound", status, err, time.Since(began))
	}
}
