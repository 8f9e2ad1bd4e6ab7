package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/invokeari/invokeari/events/webhook"
	"github.com/invokeari/invokeari/stasisapp"
)

// DefaultTimeout is the ring timeout when neither the request nor the config set one.
const DefaultTimeout = 30 * time.Second

// Gate authenticates, validates and admits originate requests under a Config. It is
// built once and is safe for concurrent use; it starts no goroutines.
type Gate struct {
	servers  []server
	byName   map[string]*server
	byURL    map[string]*server
	keys     []*keyPolicy
	byKey    map[string]*keyPolicy // by key name
	techs    map[string]string     // lower-case name → canonical spelling
	defaults Defaults
	dynamic  *DynamicPolicy // never nil after NewGate; disabled unless configured

	now func() time.Time // the clock for rate limits; replaced in tests

	mu          sync.Mutex // guards inFlight and every keyPolicy.active
	inFlight    int
	maxInFlight int
}

type server struct {
	Server
	userSum, passSum [32]byte      // SHA-256 of the configured credentials
	cps              *rate.Limiter // nil: no cap
}

type keyPolicy struct {
	Key
	hash    [32]byte
	limiter *rate.Limiter // nil: no rate limit
	allow   *webhook.AllowList
	active  int // admitted, not yet released; guarded by Gate.mu
}

// Principal is an authenticated API key. It is only made by Gate.Authenticate.
type Principal struct {
	Name string // the key's configured name (not the key)
	key  *keyPolicy
}

// NewGate validates cfg and builds the Gate.
func NewGate(cfg Config) (*Gate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("front-door config: %w", err)
	}
	g := &Gate{
		byName:      make(map[string]*server),
		byURL:       make(map[string]*server),
		byKey:       make(map[string]*keyPolicy),
		techs:       make(map[string]string),
		defaults:    cfg.Defaults,
		now:         time.Now,
		maxInFlight: cfg.MaxInFlight,
	}
	dyn, err := NewDynamicPolicy(cfg.DynamicServers)
	if err != nil {
		return nil, fmt.Errorf("front-door config: %w", err)
	}
	g.dynamic = dyn
	if g.maxInFlight == 0 {
		g.maxInFlight = DefaultMaxInFlight
	}
	if g.defaults.Timeout == 0 {
		g.defaults.Timeout = DefaultTimeout
	}
	if g.defaults.Wait == "" {
		g.defaults.Wait = string(stasisapp.WaitAnswer)
	}
	techs := cfg.Technologies
	if len(techs) == 0 {
		techs = DefaultTechnologies
	}
	for _, t := range techs {
		g.techs[strings.ToLower(t)] = t
	}
	g.servers = make([]server, len(cfg.Servers))
	for i, s := range cfg.Servers {
		g.servers[i] = server{Server: s, userSum: sha256.Sum256([]byte(s.Username)), passSum: sha256.Sum256([]byte(s.Password))}
		if s.CPS > 0 {
			g.servers[i].cps = rate.NewLimiter(rate.Limit(s.CPS), max(1, int(s.CPS)))
		}
		u, _ := normalizeURL(s.URL) // checked by Validate
		g.byName[s.Name] = &g.servers[i]
		g.byURL[u] = &g.servers[i]
	}
	for _, k := range cfg.Keys {
		kp := &keyPolicy{Key: k}
		h, _ := hex.DecodeString(k.SHA256) // checked by Validate
		copy(kp.hash[:], h)
		if lim, burst, _ := parseRate(k.Rate); lim != rate.Inf {
			kp.limiter = rate.NewLimiter(lim, burst)
		}
		kp.allow, _ = webhook.ParseAllowList(k.Webhooks.Allow) // checked by Validate
		g.keys = append(g.keys, kp)
		g.byKey[k.Name] = kp
	}
	return g, nil
}

// Authenticate finds the key whose SHA-256 matches apiKey. Every configured key is
// compared, in constant time, so the timing tells nothing about which key is close.
func (g *Gate) Authenticate(apiKey string) (*Principal, *Error) {
	if apiKey == "" {
		return nil, newError(http.StatusUnauthorized, CodeMissingAPIKey, "", "the X-API-Key header is required")
	}
	sum := sha256.Sum256([]byte(apiKey))
	var found *keyPolicy
	for _, k := range g.keys {
		if subtle.ConstantTimeCompare(sum[:], k.hash[:]) == 1 {
			found = k
		}
	}
	if found == nil {
		return nil, newError(http.StatusUnauthorized, CodeInvalidAPIKey, "", "the API key is not valid")
	}
	return &Principal{Name: found.Name, key: found}, nil
}

// Build validates f (400 naming the field), applies p's key policy (403 naming the
// rule), selects the server (never one that is not configured), checks ariuser/aripass
// against it in constant time, fills in defaults and generates an id when none was
// given. The returned request has Door unset: the door fills it in. The Idempotency-Key
// header must already be merged into f.ID (Fields.MergeIdempotencyKey).
func (g *Gate) Build(p *Principal, f Fields) (stasisapp.Request, *Error) {
	if p == nil || p.key == nil {
		return stasisapp.Request{}, newError(http.StatusUnauthorized, CodeMissingAPIKey, "", "not authenticated")
	}
	k := p.key
	var req stasisapp.Request

	// Syntax first, field by field in wire order, so a client fixes one error at a time
	// in a predictable order.
	d, e := parseDestination(f.D, g.techs)
	if e != nil {
		return req, e
	}
	req.Endpoint = d

	switch {
	case f.C == "":
		return req, newError(http.StatusBadRequest, CodeMissingField, "c", "c (context) is required")
	case len(f.C) > MaxContext || !reContext.MatchString(f.C):
		return req, badField("c", "c must be 1-%d of [A-Za-z0-9_-]", MaxContext)
	}
	req.Context = f.C

	switch {
	case f.E == "":
		return req, newError(http.StatusBadRequest, CodeMissingField, "e", "e (extension) is required")
	case isURL(f.E):
		if e := checkText("e", f.E, webhook.MaxURL); e != nil {
			return req, e
		}
	case len(f.E) > MaxExtension || !reExtension.MatchString(f.E):
		return req, badField("e", "e must be 1-%d of [0-9A-Za-z*#+_.!-]", MaxExtension)
	}
	req.Extension = f.E

	if f.T != "" {
		if !reTimeout.MatchString(f.T) {
			return req, badField("t", "t must be a whole number of seconds, %d-%d", MinTimeoutSec, MaxTimeoutSec)
		}
		sec, _ := strconv.Atoi(f.T) // 1-4 digits, checked above
		if sec < MinTimeoutSec || sec > MaxTimeoutSec {
			return req, badField("t", "t must be a whole number of seconds, %d-%d", MinTimeoutSec, MaxTimeoutSec)
		}
		req.Timeout = time.Duration(sec) * time.Second
	}

	if f.I != "" {
		name, number, err := ParseCallerID(f.I)
		if err != nil {
			return req, badField("i", "i (caller id): %v", err)
		}
		req.CallerID = FormatCallerID(name, number)
	}

	vars, err := ParseVariables(f.V)
	if err != nil {
		return req, badField("v", "v (variables): %v", err)
	}

	wait := stasisapp.Wait(g.defaults.Wait)
	if f.Wait != "" {
		w, ok := parseWait(f.Wait)
		if !ok {
			return req, badField("wait", "wait must be accepted, answer or end")
		}
		wait = w
	}
	req.Wait = wait

	if f.ID != "" && !reID.MatchString(f.ID) {
		return req, badField("id", "id must be 1-64 of [A-Za-z0-9_-]")
	}
	if e := checkText("ari", f.Ari, MaxServerRef); e != nil {
		return req, e
	}
	if len(f.AriUser) > MaxCredential || len(f.AriPass) > MaxCredential {
		return req, badField("aripass", "ariuser/aripass longer than %d bytes", MaxCredential)
	}
	if e := checkText("callback", f.Callback, webhook.MaxURL); e != nil {
		return req, e
	}
	if f.Callback != "" && !isURL(f.Callback) {
		return req, badField("callback", "callback must be an absolute http:// or https:// URL")
	}
	if e := checkText("callback_events", f.CallbackEvents, 64); e != nil {
		return req, e
	}

	// Policy.
	if !allowed(k.Destinations, req.Endpoint) {
		return req, forbidden(CodeDestinationDenied, "d", "destination %s is not allowed for this key", req.Endpoint)
	}
	if len(k.Contexts) > 0 && !slices.Contains(k.Contexts, req.Context) {
		return req, forbidden(CodeContextDenied, "c", "context %s is not allowed for this key", req.Context)
	}
	if lc, ok := localContext(req.Endpoint); ok && len(k.Contexts) > 0 && !slices.Contains(k.Contexts, lc) {
		// A Local channel runs dialplan in its own context: the contexts rule covers it
		// too, or Local/x@anywhere would sidestep it.
		return req, forbidden(CodeContextDenied, "d", "context %s (of the Local destination) is not allowed for this key", lc)
	}
	if len(vars) > 0 {
		req.Variables = make(map[string]string, len(vars))
	}
	for _, v := range vars {
		if v.IsFunction() && !k.Variables.Functions {
			return req, forbidden(CodeVariableDenied, "v", "function-style variable %s is not allowed for this key", v.Name)
		}
		if len(k.Variables.Allow) > 0 && !matchAny(k.Variables.Allow, v.Name) {
			return req, forbidden(CodeVariableDenied, "v", "variable %s is not allowed for this key", v.Name)
		}
		req.Variables[v.Name] = v.Value
	}
	if e := k.callbacks(&req, f); e != nil {
		return req, e
	}
	maxT := k.MaxTimeout
	if maxT == 0 {
		maxT = MaxTimeoutSec * time.Second
	}
	switch {
	case req.Timeout == 0:
		req.Timeout = min(g.defaults.Timeout, maxT)
	case req.Timeout > maxT:
		return req, forbidden(CodeTimeoutDenied, "t", "t is over this key's max_timeout of %ds", int(maxT/time.Second))
	}

	srv, e := g.selectServer(k, f.Ari)
	switch {
	case e != nil && e.Code == CodeServerDenied && srv == nil && g.dynamic.Enabled() && g.isUnknownURL(f.Ari):
		// Not a configured server: the opt-in dynamic servers may take it. The URL is only
		// vetted here; nothing is contacted before the request is admitted.
		ds, de := g.dynamicServer(k, f.Ari, f.AriUser, f.AriPass)
		if de != nil {
			return req, de
		}
		req.Dynamic = ds
		req.Server = stasisapp.DynamicServerName(ds.URL)
	case e != nil:
		return req, e
	default:
		if e := srv.checkCredentials(f.AriUser, f.AriPass); e != nil {
			return req, e
		}
		req.Server = srv.Name
	}

	req.ID = f.ID
	if req.ID == "" {
		req.ID, req.FreshID = NewID(), true
	}
	req.Key = p.Name
	return req, nil
}

// localContext returns the dialplan context a Local destination (`Local/exten@context/n`)
// runs in; "default" when it names none.
func localContext(endpoint string) (string, bool) {
	res, ok := strings.CutPrefix(endpoint, "Local/")
	if !ok {
		return "", false
	}
	res, _, _ = strings.Cut(res, "/")
	if i := strings.LastIndexByte(res, '@'); i >= 0 {
		return res[i+1:], true
	}
	return "default", true
}

func parseWait(s string) (stasisapp.Wait, bool) {
	switch w := stasisapp.Wait(s); w {
	case stasisapp.WaitAccepted, stasisapp.WaitAnswer, stasisapp.WaitEnd:
		return w, true
	}
	return "", false
}

// allowed applies allow/deny globs; deny wins, an empty allow list allows all.
func allowed(p Patterns, s string) bool {
	if matchAny(p.Deny, s) {
		return false
	}
	return len(p.Allow) == 0 || matchAny(p.Allow, s)
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := matchGlob(p, s); ok { // patterns were checked by Validate
			return true
		}
	}
	return false
}

// selectServer resolves the ari field (a server name or ARI URL) to a configured server
// the key may use. Nothing that is not configured is ever returned.
func (g *Gate) selectServer(k *keyPolicy, ref string) (*server, *Error) {
	keyAllows := func(name string) bool { return len(k.Servers) == 0 || slices.Contains(k.Servers, name) }
	if ref == "" {
		switch {
		case g.defaults.Server != "" && keyAllows(g.defaults.Server):
			return g.byName[g.defaults.Server], nil
		case len(k.Servers) > 0:
			return g.byName[k.Servers[0]], nil
		case len(g.servers) == 1:
			return &g.servers[0], nil
		}
		return nil, newError(http.StatusBadRequest, CodeMissingField, "ari", "ari is required: this key has no default server")
	}
	s := g.byName[ref]
	if s == nil && strings.Contains(ref, "://") {
		if u, err := normalizeURL(ref); err == nil {
			s = g.byURL[u]
		}
		if s == nil {
			// An address we do not know: refused as a policy matter, never contacted.
			return nil, forbidden(CodeServerDenied, "ari", "that ARI URL is not a configured server")
		}
	}
	if s == nil {
		return nil, newError(http.StatusBadRequest, CodeUnknownServer, "ari", "no configured server by that name")
	}
	if !keyAllows(s.Name) {
		return nil, forbidden(CodeServerDenied, "ari", "server %s is not allowed for this key", s.Name)
	}
	return s, nil
}

// isUnknownURL reports whether ref is an ARI URL that is not a configured server.
func (g *Gate) isUnknownURL(ref string) bool {
	if g.byName[ref] != nil || !strings.Contains(ref, "://") {
		return false
	}
	u, err := normalizeURL(ref)
	return err != nil || g.byURL[u] == nil
}

// checkCredentials compares the credentials a client sent (either may be absent) with
// the server's, in constant time: both sides are hashed first so lengths leak nothing,
// and both are always compared.
func (s *server) checkCredentials(user, pass string) *Error {
	if user == "" && pass == "" {
		return nil
	}
	ok := 1
	if user != "" {
		sum := sha256.Sum256([]byte(user))
		ok &= subtle.ConstantTimeCompare(sum[:], s.userSum[:])
	}
	if pass != "" {
		sum := sha256.Sum256([]byte(pass))
		ok &= subtle.ConstantTimeCompare(sum[:], s.passSum[:])
	}
	if ok != 1 {
		return forbidden(CodeBadARICredentials, "aripass", "ariuser/aripass do not match the selected server's credentials")
	}
	return nil
}

// NewID returns a fresh call id: 32 hex digits from crypto/rand (well within ARI's
// 149-character channel id limit and the id field's own rule).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}
