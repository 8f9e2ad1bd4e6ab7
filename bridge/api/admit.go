package api

import (
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/invokeari/invokeari/stasisapp"
)

// concurrencyRetry is the Retry-After suggested when a concurrency cap is full: we
// cannot know when a call will end, so it is a polite guess.
const concurrencyRetry = time.Second

// Admit applies, in this order, the global in-flight cap, the key's max_concurrent, the
// key's rate and the server's calls per second. Over any of them it answers 429 with
// RetryAfter set and consumes nothing. On success the call holds one in-flight slot and
// one of the key's concurrency slots until release is called; call release when the call
// has ended (its final outcome is known), not when the reply is sent. release may be
// called more than once.
func (g *Gate) Admit(p *Principal, serverName string) (release func(), e *Error) {
	if p == nil || p.key == nil {
		return nil, newError(http.StatusUnauthorized, CodeMissingAPIKey, "", "not authenticated")
	}
	k := p.key
	srv := g.byName[serverName]
	if srv == nil && g.dynamic.Enabled() && stasisapp.IsDynamicName(serverName) {
		srv = &server{} // a dynamic server: no calls-per-second cap of its own
	}
	if srv == nil {
		return nil, newError(http.StatusBadRequest, CodeUnknownServer, "ari", "no configured server by that name")
	}
	now := g.now()

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight >= g.maxInFlight {
		return nil, tooMany(CodeTooManyInFlight, concurrencyRetry, "the daemon has %d calls in flight, its limit", g.maxInFlight)
	}
	if k.MaxConcurrent > 0 && k.active >= k.MaxConcurrent {
		return nil, tooMany(CodeTooManyConcurrent, concurrencyRetry, "this key has %d calls in flight, its max_concurrent", k.MaxConcurrent)
	}
	var keyRes *rate.Reservation
	if k.limiter != nil {
		keyRes = k.limiter.ReserveN(now, 1)
		if d := keyRes.DelayFrom(now); !keyRes.OK() || d > 0 {
			keyRes.CancelAt(now)
			return nil, tooMany(CodeRateLimited, max(d, time.Second/10), "over this key's rate of %s", k.Rate)
		}
	}
	if srv.cps != nil {
		r := srv.cps.ReserveN(now, 1)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			if keyRes != nil {
				keyRes.CancelAt(now) // give the key its token back: nothing was admitted
			}
			return nil, tooMany(CodeServerCPS, max(d, time.Second/10), "over server %s's calls-per-second cap", srv.Name)
		}
	}
	g.inFlight++
	k.active++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.inFlight--
			k.active--
			g.mu.Unlock()
		})
	}, nil
}

func tooMany(code string, retry time.Duration, format string, args ...any) *Error {
	e := newError(http.StatusTooManyRequests, code, "", format, args...)
	e.RetryAfter = retry
	return e
}

// InFlight is the number of admitted calls not yet released, over all keys.
func (g *Gate) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight
}
