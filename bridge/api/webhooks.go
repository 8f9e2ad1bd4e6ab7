package api

import (
	"fmt"
	"slices"
	"strings"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/events/webhook"
	"github.com/invokeari/invokeari/stasisapp"
)

// Webhooks is a key's policy for outgoing HTTP callbacks: status callbacks (SPEC §8) and
// webhook-driven calls (`e` as a URL, SPEC §9).
type Webhooks struct {
	// Allow lists exact host names and IP/CIDRs a callback or webhook URL may name; the
	// loopback, link-local, unspecified and metadata ranges need an entry inside them.
	Allow []string `yaml:"allow"`
	// SecretEnv or SecretFile names where the signing secret is; main resolves it into
	// Secret. Required when Allow is set: nothing is sent unsigned.
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
	Secret     []byte `yaml:"-"` // never logged
	// Callback is the key's default status callback URL; CallbackEvents its default
	// event kinds (default: ended).
	Callback       string   `yaml:"callback"`
	CallbackEvents []string `yaml:"callback_events"`
	// Fallback is where a webhook-driven call goes when its webhook fails (empty: it is
	// hung up).
	Fallback WebhookFallback `yaml:"fallback"`
}

// WebhookFallback is a dialplan place: context and extension.
type WebhookFallback struct {
	Context   string `yaml:"context"`
	Extension string `yaml:"extension"`
}

// CallbackKinds are the event kinds a status callback may ask for, in call order.
var CallbackKinds = []events.Kind{events.Initiated, events.Ringing, events.KindAnswered, events.Ended}

// DefaultCallbackEvents is callback_events when neither the request nor the key sets it.
var DefaultCallbackEvents = []string{string(events.Ended)}

// parseCallbackEvents parses a list of kinds (from a comma-separated field or a config
// list) into call order without duplicates.
func parseCallbackEvents(list []string) ([]string, error) {
	seen := map[events.Kind]bool{}
	for _, s := range list {
		k := events.Kind(strings.TrimSpace(s))
		if !slices.Contains(CallbackKinds, k) {
			return nil, fmt.Errorf("%q is not one of initiated, ringing, answered, ended", shorten(string(k)))
		}
		seen[k] = true
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("names no event")
	}
	var out []string
	for _, k := range CallbackKinds {
		if seen[k] {
			out = append(out, string(k))
		}
	}
	return out, nil
}

// validate checks a key's webhooks block; f is the key's field prefix.
func (w Webhooks) validate(f string, contexts []string, bad func(field, format string, args ...any)) {
	allow, err := webhook.ParseAllowList(w.Allow)
	if err != nil {
		bad(f+".webhooks.allow", "%v", err)
		allow = nil
	}
	switch {
	case w.SecretEnv != "" && w.SecretFile != "":
		bad(f+".webhooks.secret_env/secret_file", "set only one")
	case len(w.Allow) > 0 && w.SecretEnv == "" && w.SecretFile == "" && len(w.Secret) == 0:
		bad(f+".webhooks.secret_env", "secret_env or secret_file is required with webhooks.allow (callbacks are always signed)")
	}
	if w.Callback != "" && allow != nil {
		if err := allow.AllowURL(w.Callback); err != nil {
			bad(f+".webhooks.callback", "%v", err)
		}
	}
	if len(w.CallbackEvents) > 0 {
		if _, err := parseCallbackEvents(w.CallbackEvents); err != nil {
			bad(f+".webhooks.callback_events", "%v", err)
		}
	}
	fb := w.Fallback
	switch {
	case fb == WebhookFallback{}:
	case fb.Context == "" || fb.Extension == "":
		bad(f+".webhooks.fallback", "set both context and extension, or neither")
	case len(fb.Context) > MaxContext || !reContext.MatchString(fb.Context):
		bad(f+".webhooks.fallback.context", "not a context name")
	case len(contexts) > 0 && !slices.Contains(contexts, fb.Context):
		bad(f+".webhooks.fallback.context", "context %s is not in this key's contexts", fb.Context)
	case len(fb.Extension) > MaxExtension || !reExtension.MatchString(fb.Extension):
		bad(f+".webhooks.fallback.extension", "not an extension")
	}
}

// isURL reports whether an e value is meant as a webhook URL rather than an extension.
func isURL(e string) bool {
	l := strings.ToLower(e)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}

// webhookDenied is the 403 for a callback or webhook URL the key may not use.
func webhookDenied(field string, err error) *Error {
	return forbidden(CodeWebhookDenied, field, "%s: %v", field, err)
}

// callbacks applies the callback fields and an `e` URL to req under key k's policy.
// Syntax was checked already; this is policy (403 webhook_not_allowed).
func (k *keyPolicy) callbacks(req *stasisapp.Request, f Fields) *Error {
	if isURL(f.E) {
		if err := k.allow.AllowURL(f.E); err != nil {
			return webhookDenied("e", err)
		}
		req.Webhook = f.E
		req.Extension = ""
		req.WebhookFallback = struct{ Context, Extension string }(k.Webhooks.Fallback)
	}
	cb := f.Callback
	if cb != "" {
		if err := k.allow.AllowURL(cb); err != nil {
			return webhookDenied("callback", err)
		}
	}
	cb = firstNonEmpty(cb, req.Webhook, k.Webhooks.Callback)
	evs := k.Webhooks.CallbackEvents
	if f.CallbackEvents != "" {
		evs = strings.Split(f.CallbackEvents, ",")
	}
	if cb == "" {
		if f.CallbackEvents != "" {
			return badField("callback_events", "callback_events needs a callback URL (callback, a URL in e, or the key's webhooks.callback)")
		}
		return nil
	}
	if len(evs) == 0 {
		evs = DefaultCallbackEvents
	}
	kinds, err := parseCallbackEvents(evs)
	if err != nil {
		return badField("callback_events", "callback_events: %v", err)
	}
	req.Callback, req.CallbackEvents = cb, kinds
	return nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// WebhookSecret is the named key's webhook signing secret (nil if none); for the
// webhook.Sender.
func (g *Gate) WebhookSecret(key string) []byte {
	if k := g.byKey[key]; k != nil {
		return k.Webhooks.Secret
	}
	return nil
}

// WebhookAllow is the named key's webhooks.allow policy (nil allows nothing); for the
// webhook.Sender.
func (g *Gate) WebhookAllow(key string) *webhook.AllowList {
	if k := g.byKey[key]; k != nil {
		return k.allow
	}
	return nil
}
