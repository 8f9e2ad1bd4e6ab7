package api

import (
	"slices"
	"strings"
	"testing"
)

const hooksKey = "hooks-key-0123456789"

// hooksConfig adds a key whose callbacks may go to hooks.example.com and 127.0.0.1.
func hooksConfig() Config {
	c := testConfig()
	c.Keys = append(c.Keys, Key{Name: "hooks", SHA256: hashKey(hooksKey), Contexts: []string{"confirmcode", "fb"},
		Webhooks: Webhooks{Allow: []string{"hooks.example.com", "127.0.0.1"}, Secret: []byte("s"),
			Callback: "https://hooks.example.com/default", CallbackEvents: []string{"ended", "answered"},
			Fallback: WebhookFallback{Context: "fb", Extension: "s"}}})
	return c
}

func TestBuildCallbacks(t *testing.T) {
	g := newTestGate(t, hooksConfig())
	tests := []struct {
		name       string
		key        string
		f          Fields
		status     int
		code       string
		field      string
		callback   string
		events     []string
		webhook    string
		extension  string
		noFallback bool
	}{
		{name: "key default", key: hooksKey, f: good(),
			callback: "https://hooks.example.com/default", events: []string{"answered", "ended"}, extension: "1234"},
		{name: "request callback and events", key: hooksKey,
			f:        with(good(), func(f *Fields) { f.Callback = "http://127.0.0.1:9/cb"; f.CallbackEvents = "ended, ringing,initiated" }),
			callback: "http://127.0.0.1:9/cb", events: []string{"initiated", "ringing", "ended"}, extension: "1234"},
		{name: "e as URL is the webhook and the callback", key: hooksKey,
			f:        with(good(), func(f *Fields) { f.E = "https://hooks.example.com/call" }),
			callback: "https://hooks.example.com/call", events: []string{"answered", "ended"}, webhook: "https://hooks.example.com/call"},
		{name: "e as URL, callback elsewhere", key: hooksKey,
			f:        with(good(), func(f *Fields) { f.E = "https://hooks.example.com/call"; f.Callback = "http://127.0.0.1/s" }),
			callback: "http://127.0.0.1/s", events: []string{"answered", "ended"}, webhook: "https://hooks.example.com/call"},
		{name: "no webhooks: no callback", key: openKey, f: good(), extension: "1234", noFallback: true},
		{name: "open key may not call back", key: openKey,
			f:      with(good(), func(f *Fields) { f.Callback = "https://hooks.example.com/x" }),
			status: 403, code: CodeWebhookDenied, field: "callback"},
		{name: "open key may not use e URL", key: openKey,
			f:      with(good(), func(f *Fields) { f.E = "https://hooks.example.com/x" }),
			status: 403, code: CodeWebhookDenied, field: "e"},
		{name: "host not listed", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.Callback = "https://evil.example.com/x" }),
			status: 403, code: CodeWebhookDenied, field: "callback"},
		{name: "metadata", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.E = "http://169.254.169.254/latest/meta-data" }),
			status: 403, code: CodeWebhookDenied, field: "e"},
		{name: "other loopback", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.Callback = "http://127.0.0.2/x" }),
			status: 403, code: CodeWebhookDenied, field: "callback"},
		{name: "callback not a URL", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.Callback = "hooks.example.com/x" }),
			status: 400, code: CodeInvalidField, field: "callback"},
		{name: "callback too long", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.Callback = "https://hooks.example.com/" + strings.Repeat("a", 2048) }),
			status: 400, code: CodeInvalidField, field: "callback"},
		{name: "e URL too long", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.E = "https://hooks.example.com/" + strings.Repeat("a", 2048) }),
			status: 400, code: CodeInvalidField, field: "e"},
		{name: "unknown event", key: hooksKey,
			f:      with(good(), func(f *Fields) { f.CallbackEvents = "ended,progress" }),
			status: 400, code: CodeInvalidField, field: "callback_events"},
		{name: "events without a callback", key: openKey,
			f:      with(good(), func(f *Fields) { f.CallbackEvents = "ended" }),
			status: 400, code: CodeInvalidField, field: "callback_events"},
	}
	for _, tt := range tests {
		req, e := g.Build(principal(t, g, tt.key), tt.f)
		if tt.status != 0 {
			if e == nil || e.Status != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Errorf("%s: Build error = %v; want %d %s (%s)", tt.name, e, tt.status, tt.code, tt.field)
			}
			continue
		}
		if e != nil {
			t.Errorf("%s: Build error = %v", tt.name, e)
			continue
		}
		if req.Callback != tt.callback || !slices.Equal(req.CallbackEvents, tt.events) || req.Webhook != tt.webhook || req.Extension != tt.extension {
			t.Errorf("%s: callback %q %v, webhook %q, extension %q; want %q %v, %q, %q", tt.name,
				req.Callback, req.CallbackEvents, req.Webhook, req.Extension, tt.callback, tt.events, tt.webhook, tt.extension)
		}
		var wantFB struct{ Context, Extension string }
		if tt.webhook != "" {
			wantFB.Context, wantFB.Extension = "fb", "s"
		}
		if req.WebhookFallback != wantFB {
			t.Errorf("%s: fallback %+v; want %+v", tt.name, req.WebhookFallback, wantFB)
		}
		if er := req.EventRequest(); er.Callback != tt.callback || !slices.Equal(er.CallbackEvents, tt.events) {
			t.Errorf("%s: event request callback %q %v", tt.name, er.Callback, er.CallbackEvents)
		}
	}
	if got := g.WebhookSecret("hooks"); string(got) != "s" {
		t.Errorf("WebhookSecret = %q", got)
	}
	if g.WebhookAllow("open").AllowURL("https://hooks.example.com/") == nil || g.WebhookAllow("hooks").AllowURL("https://hooks.example.com/") != nil {
		t.Error("WebhookAllow does not give each key its own list")
	}
}

func TestWebhooksValidate(t *testing.T) {
	tests := []struct {
		name  string
		w     Webhooks
		field string
	}{
		{"bad entry", Webhooks{Allow: []string{"10.0.0.1/8"}, SecretEnv: "X"}, "keys[3].webhooks.allow"},
		{"no secret", Webhooks{Allow: []string{"hooks.example.com"}}, "keys[3].webhooks.secret_env"},
		{"both secrets", Webhooks{SecretEnv: "X", SecretFile: "/f"}, "keys[3].webhooks.secret_env/secret_file"},
		{"callback not allowed", Webhooks{Allow: []string{"a.example.com"}, SecretEnv: "X", Callback: "https://b.example.com/"}, "keys[3].webhooks.callback"},
		{"bad event", Webhooks{CallbackEvents: []string{"hangup"}}, "keys[3].webhooks.callback_events"},
		{"half fallback", Webhooks{Fallback: WebhookFallback{Context: "fb"}}, "keys[3].webhooks.fallback"},
		{"fallback context not the key's", Webhooks{Fallback: WebhookFallback{Context: "elsewhere", Extension: "s"}}, "keys[3].webhooks.fallback.context"},
		{"fallback extension", Webhooks{Fallback: WebhookFallback{Context: "fb", Extension: "${x}"}}, "keys[3].webhooks.fallback.extension"},
	}
	for _, tt := range tests {
		c := hooksConfig()
		c.Keys[3].Webhooks = tt.w
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field+":") {
			t.Errorf("%s: Validate = %v; want an error on %s", tt.name, err, tt.field)
		}
	}
	if err := hooksConfig().Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
}
