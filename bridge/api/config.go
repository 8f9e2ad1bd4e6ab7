package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/invokeari/invokeari/stasisapp"
)

// Config is the front-door policy: which Asterisk servers may be dialled, which API keys
// exist and what each may do, defaults and global limits. The daemon config embeds it;
// main fills Server.Password from the environment or a file.
type Config struct {
	Servers  []Server `yaml:"servers"`
	Keys     []Key    `yaml:"keys"`
	Defaults Defaults `yaml:"defaults"`
	// MaxInFlight caps calls admitted and not yet ended, over all keys; 0 means
	// DefaultMaxInFlight.
	MaxInFlight int `yaml:"max_in_flight"`
	// Technologies are the channel technologies destinations may use (matched
	// case-insensitively); empty means DefaultTechnologies.
	Technologies []string `yaml:"technologies"`
	// DynamicServers, when enabled, lets a request name an allowed ARI URL that is not
	// a configured server (with its own ariuser/aripass). Off by default.
	DynamicServers DynamicServers `yaml:"dynamic_servers"`
}

// DefaultMaxInFlight is the global in-flight cap when Config.MaxInFlight is 0.
const DefaultMaxInFlight = 1000

// Server is one Asterisk the daemon may originate on. Requests select it by Name or URL;
// nothing else is ever contacted.
type Server struct {
	Name     string `yaml:"name"`
	URL      string `yaml:"url"` // ARI base URL, e.g. http://127.0.0.1:8088/ari
	Username string `yaml:"username"`
	Password string `yaml:"-"` // resolved by main from env/file; never logged
	// CPS caps originates per second on this server; 0 means no cap.
	CPS float64 `yaml:"cps"`
}

// Key is one API key (stored as the SHA-256 of the key) and its policy. Empty lists mean
// "no restriction" for Servers, Destinations.Allow, Contexts and Variables.Allow.
type Key struct {
	Name         string         `yaml:"name"`
	SHA256       string         `yaml:"sha256"` // hex SHA-256 of the key, not the key
	Servers      []string       `yaml:"servers"`
	Destinations Patterns       `yaml:"destinations"`
	Contexts     []string       `yaml:"contexts"`
	Variables    VariablePolicy `yaml:"variables"`
	// MaxTimeout caps t; 0 means the field maximum (600s).
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// Rate is "N/s", "N/m" or "N/h" (N may be fractional); empty means no rate limit.
	Rate string `yaml:"rate"`
	// MaxConcurrent caps this key's calls admitted and not yet ended; 0 means no cap.
	MaxConcurrent int `yaml:"max_concurrent"`
	// Webhooks is the key's policy for status callbacks and webhook URLs in e.
	Webhooks Webhooks `yaml:"webhooks"`
	// Admin lets the key see and hang up every key's calls (GET/DELETE /v2/calls);
	// other keys see only their own.
	Admin bool `yaml:"admin"`
}

// Patterns are allow and deny globs over a whole destination (`PJSIP/6*`,
// `PJSIP/*@trunk-premium`). `*` matches any run of characters including '/', `?` one
// character, `[a-z]`/`[!0-9]` a class, `\` escapes. Deny wins over allow; an empty
// allow list allows everything not denied.
type Patterns struct {
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// VariablePolicy says which channel variables a key may set. Allow globs match the full
// name including any `_`/`__` inheritance prefix; empty allows every name. Function
// style names (`CALLERID(name)`) are refused unless Functions is true.
type VariablePolicy struct {
	Allow     []string `yaml:"allow"`
	Functions bool     `yaml:"functions"`
}

// Defaults apply when a request leaves a field out.
type Defaults struct {
	Timeout time.Duration `yaml:"timeout"` // 0 means 30s
	Wait    string        `yaml:"wait"`    // "" means answer
	Server  string        `yaml:"server"`  // a configured server name, or ""
}

var reName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks the whole config and reports every problem, each naming its field,
// e.g. `keys[1].sha256: not 64 hex digits`.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Servers) == 0 {
		bad("servers", "at least one Asterisk server is required")
	}
	names := make(map[string]bool)
	urls := make(map[string]string)
	for i, s := range c.Servers {
		f := fmt.Sprintf("servers[%d]", i)
		if !reName.MatchString(s.Name) {
			bad(f+".name", "must be 1-64 of [A-Za-z0-9_.-]")
		} else if stasisapp.IsDynamicName(s.Name) {
			bad(f+".name", "names of the form %s<16 hex digits> are reserved for dynamic servers", stasisapp.DynamicPrefix)
		} else if names[s.Name] {
			bad(f+".name", "duplicate server name %q", s.Name)
		}
		names[s.Name] = true
		if u, err := normalizeURL(s.URL); err != nil {
			bad(f+".url", "%v", err)
		} else if prev, dup := urls[u]; dup {
			bad(f+".url", "same URL as server %q", prev)
		} else {
			urls[u] = s.Name
		}
		if s.CPS < 0 || math.IsNaN(s.CPS) || math.IsInf(s.CPS, 0) {
			bad(f+".cps", "must be a number >= 0")
		}
	}
	for i, t := range c.Technologies {
		if !reTech.MatchString(t) {
			bad(fmt.Sprintf("technologies[%d]", i), "not a channel technology name")
		}
	}
	keyNames := make(map[string]bool)
	hashes := make(map[string]string)
	for i, k := range c.Keys {
		f := fmt.Sprintf("keys[%d]", i)
		if !reName.MatchString(k.Name) {
			bad(f+".name", "must be 1-64 of [A-Za-z0-9_.-]")
		} else if keyNames[k.Name] {
			bad(f+".name", "duplicate key name %q", k.Name)
		}
		keyNames[k.Name] = true
		if h, err := hex.DecodeString(k.SHA256); err != nil || len(h) != 32 {
			bad(f+".sha256", "not 64 hex digits")
		} else if prev, dup := hashes[string(h)]; dup {
			bad(f+".sha256", "same key as %q", prev)
		} else {
			hashes[string(h)] = k.Name
		}
		for j, s := range k.Servers {
			if !names[s] {
				bad(fmt.Sprintf("%s.servers[%d]", f, j), "no configured server %q", s)
			}
		}
		for j, p := range k.Destinations.Allow {
			if err := checkGlob(p); err != nil {
				bad(fmt.Sprintf("%s.destinations.allow[%d]", f, j), "%v", err)
			}
		}
		for j, p := range k.Destinations.Deny {
			if err := checkGlob(p); err != nil {
				bad(fmt.Sprintf("%s.destinations.deny[%d]", f, j), "%v", err)
			}
		}
		for j, cx := range k.Contexts {
			if !reContext.MatchString(cx) || len(cx) > MaxContext {
				bad(fmt.Sprintf("%s.contexts[%d]", f, j), "not a context name")
			}
		}
		for j, p := range k.Variables.Allow {
			if err := checkGlob(p); err != nil {
				bad(fmt.Sprintf("%s.variables.allow[%d]", f, j), "%v", err)
			}
		}
		if k.MaxTimeout != 0 && !validTimeout(k.MaxTimeout) {
			bad(f+".max_timeout", "must be whole seconds from %ds to %ds", MinTimeoutSec, MaxTimeoutSec)
		}
		if _, _, err := parseRate(k.Rate); err != nil {
			bad(f+".rate", "%v", err)
		}
		if k.MaxConcurrent < 0 {
			bad(f+".max_concurrent", "must be >= 0")
		}
		k.Webhooks.validate(f, k.Contexts, bad)
	}
	if c.Defaults.Timeout != 0 && !validTimeout(c.Defaults.Timeout) {
		bad("defaults.timeout", "must be whole seconds from %ds to %ds", MinTimeoutSec, MaxTimeoutSec)
	}
	if _, ok := parseWait(c.Defaults.Wait); !ok && c.Defaults.Wait != "" {
		bad("defaults.wait", "must be accepted, answer or end")
	}
	if c.Defaults.Server != "" && !names[c.Defaults.Server] {
		bad("defaults.server", "no configured server %q", c.Defaults.Server)
	}
	if c.MaxInFlight < 0 {
		bad("max_in_flight", "must be >= 0")
	}
	c.DynamicServers.validate(bad)
	return errors.Join(errs...)
}

func validTimeout(d time.Duration) bool {
	return d%time.Second == 0 && d >= MinTimeoutSec*time.Second && d <= MaxTimeoutSec*time.Second
}

// normalizeURL gives the comparable form of an ARI base URL: lower-case scheme and host,
// no trailing slash, no query, fragment or credentials.
func normalizeURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", errors.New("must be an http:// or https:// URL with a host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("must not hold credentials, a query or a fragment")
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/"), nil
}

var reRate = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)/(s|m|h)$`)

// parseRate turns "5/s", "300/m" or "10/h" into a token-bucket rate and burst. The burst
// is one second's worth of calls, at least 1. The empty string is no limit.
func parseRate(s string) (rate.Limit, int, error) {
	if s == "" {
		return rate.Inf, 0, nil
	}
	m := reRate.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, 0, errors.New(`must look like "5/s", "300/m" or "10/h"`)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n <= 0 {
		return 0, 0, errors.New("rate must be > 0")
	}
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[m[2]]
	r := n / per
	return rate.Limit(r), max(1, int(math.Ceil(r))), nil
}

// checkGlob reports whether p is a well-formed pattern for matchGlob.
func checkGlob(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	if _, err := matchGlob(p, ""); err != nil {
		return err
	}
	return nil
}

var errBadPattern = errors.New("malformed pattern")

// matchGlob matches s against p in full. Unlike path.Match, `*` also crosses '/': with
// path.Match a deny of `PJSIP/9*` would not cover `PJSIP/9/sip:x@host`, and a deny list
// must not be sidestepped by a longer resource. The pattern's syntax is always checked
// in full, whatever the match.
func matchGlob(p, s string) (bool, error) {
	// Iterative wildcard matching, backtracking to the last '*'.
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch p[pi] {
			case '*':
				starP, starS = pi, si
				pi++
				continue
			case '?':
				_, w := utf8DecodeRune(s[si:])
				pi++
				si += w
				continue
			case '[':
				ok, w, np, err := matchClass(p[pi:], s[si:])
				if err != nil {
					return false, err
				}
				if ok {
					pi += np
					si += w
					continue
				}
			case '\\':
				if pi+1 >= len(p) {
					return false, errBadPattern
				}
				if p[pi+1] == s[si] {
					pi += 2
					si++
					continue
				}
			default:
				if p[pi] == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if starP < 0 {
			return false, checkRest(p)
		}
		starS++
		pi, si = starP+1, starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p), checkRest(p)
}

// checkRest validates the whole pattern's syntax (classes closed, escapes complete).
func checkRest(p string) error {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i+1 >= len(p) {
				return errBadPattern
			}
			i++
		case '[':
			_, _, n, err := matchClass(p[i:], "x")
			if err != nil {
				return err
			}
			i += n - 1
		}
	}
	return nil
}

// matchClass matches the first rune of s against the class at the start of p
// ("[...]"). It returns whether it matched, the width of that rune, the class length.
func matchClass(p, s string) (ok bool, width, plen int, err error) {
	r, width := utf8DecodeRune(s)
	i := 1
	negate := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		negate = true
		i++
	}
	matched := false
	first := true
	for {
		if i >= len(p) {
			return false, 0, 0, errBadPattern
		}
		if p[i] == ']' && !first {
			i++
			break
		}
		first = false
		lo, n, err := classRune(p[i:])
		if err != nil {
			return false, 0, 0, err
		}
		i += n
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi, n, err = classRune(p[i+1:])
			if err != nil {
				return false, 0, 0, err
			}
			i += 1 + n
			if hi < lo {
				return false, 0, 0, errBadPattern
			}
		}
		if lo <= r && r <= hi {
			matched = true
		}
	}
	return matched != negate, width, i, nil
}

// utf8DecodeRune is utf8.DecodeRuneInString, with width 1 for the empty string so the
// matcher always advances.
func utf8DecodeRune(s string) (rune, int) {
	if s == "" {
		return utf8.RuneError, 1
	}
	return utf8.DecodeRuneInString(s)
}

func classRune(p string) (rune, int, error) {
	if p[0] == '\\' {
		if len(p) < 2 {
			return 0, 0, errBadPattern
		}
		r, n := utf8DecodeRune(p[1:])
		return r, n + 1, nil
	}
	r, n := utf8DecodeRune(p)
	return r, n, nil
}
