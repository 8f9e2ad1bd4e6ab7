package ari

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// A REST call that fails in transport (connection refused or reset, EOF on a kept-alive
// connection Asterisk closed, a connection over its session limit closed unanswered) is
// sent again until it gets an HTTP reply or the call's deadline passes. net/http does
// not do this for POST and DELETE: it cannot know that they are safe to repeat. Here
// they are: an originate carries the channel id we chose, so a repeat of one that did
// reach Asterisk is refused with 409 and the channel is adopted (Originate); a repeated
// continue or hangup of a channel already handled gets 404/409 (Continue, Hangup).

const (
	retryFirstBackoff = 10 * time.Millisecond
	retryMaxBackoff   = 500 * time.Millisecond
)

// TraceFunc receives the evidence of a REST call that needed more than one attempt: each
// transport failure and how the retry's reply was read. status is the HTTP status the
// step is about, 0 for a transport error.
type TraceFunc func(step string, status int)

type traceKey struct{}

// WithTrace returns a context whose REST calls report their retries to f, the way
// net/http/httptrace reports connection events. f must not block.
func WithTrace(ctx context.Context, f TraceFunc) context.Context {
	return context.WithValue(ctx, traceKey{}, f)
}

func traceStep(ctx context.Context, step string, status int) {
	if f, ok := ctx.Value(traceKey{}).(TraceFunc); ok && f != nil {
		f(step, status)
	}
}

type retryCheckKey struct{}

// WithRetryCheck returns a context whose REST calls ask mayRetry before sending a request
// again after a transport error; false ends the call with that error instead. A caller
// that learns by other means that the first try reached Asterisk (its channel's events
// arrived on the websocket) stops a repeat that could dial a second time.
func WithRetryCheck(ctx context.Context, mayRetry func() bool) context.Context {
	return context.WithValue(ctx, retryCheckKey{}, mayRetry)
}

func mayRetry(ctx context.Context) bool {
	f, ok := ctx.Value(retryCheckKey{}).(func() bool)
	return !ok || f == nil || f()
}

// Retries is the number of REST attempts sent again after a transport error.
func (c *Client) Retries() uint64 { return c.retries.Load() }

// doAttempts is do that also says how many times the request was sent (by this loop or
// by net/http): a reply to a second copy may be explained by the first having reached
// Asterisk.
func (c *Client) doAttempts(ctx context.Context, method, p, q string, body, out any) (attempts int, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()

	var payload []byte
	if body != nil {
		if payload, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("ari %s %s: encode body: %w", method, p, err)
		}
	}
	u := c.base + p
	if q != "" {
		u += "?" + q
	}
	began := time.Now()
	for n := 1; ; n++ {
		status, sends, data, err := c.once(ctx, method, u, payload)
		if sends > 1 {
			traceStep(ctx, fmt.Sprintf("ari %s %s: net/http re-sent attempt %d on a new connection after the first one failed", method, p, n), 0)
			c.retries.Add(uint64(sends - 1))
		}
		attempts += max(sends, 1)
		if err == nil {
			if status < 200 || status > 299 {
				return attempts, newError(method, p, status, data)
			}
			if out == nil {
				return attempts, nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return attempts, fmt.Errorf("ari %s %s: decode %d reply: %w", method, p, status, err)
			}
			return attempts, nil
		}
		if ctx.Err() != nil || !mayRetry(ctx) {
			if n == 1 {
				return attempts, fmt.Errorf("ari %s %s: %w", method, p, err)
			}
			return attempts, fmt.Errorf("ari %s %s: unreachable: %d attempts in %s, last: %w",
				method, p, n, time.Since(began).Round(time.Millisecond), err)
		}
		wait := retryBackoff(n)
		traceStep(ctx, fmt.Sprintf("ari %s %s: attempt %d failed in transport (%v); retrying", method, p, n, err), 0)
		c.log.Debug("ARI request failed in transport; retrying", "method", method, "path", p, "attempt", n, "err", err)
		c.retries.Add(1)
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return attempts, fmt.Errorf("ari %s %s: unreachable: %d attempts in %s, last: %w",
					method, p, n, time.Since(began).Round(time.Millisecond), err)
			}
		}
	}
}

// retryBackoff is the pause before attempt n+1: none after the first failure (most are
// a kept-alive connection the server had just closed; a new one works), then jittered
// doubling from retryFirstBackoff up to retryMaxBackoff.
func retryBackoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := retryFirstBackoff << min(n-2, 10)
	d = min(d, retryMaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// adopt resolves an originate whose retry was refused with 409 "already exists": an
// earlier attempt created the channel. It is adopted once GET /channels/{id} shows a
// channel of the endpoint's technology; otherwise the 409 stands, with what was found.
func (c *Client) adopt(ctx context.Context, p OriginateParams, conflict *Error) (Channel, error) {
	ch, err := c.GetChannel(ctx, p.ChannelID)
	if err != nil {
		traceStep(ctx, "ari POST /channels: retry answered 409 but GET /channels/{id} failed: "+err.Error(), conflict.Status)
		return Channel{}, fmt.Errorf("%w (after a retry; GET of the channel: %w)", conflict, err)
	}
	tech, _, _ := strings.Cut(p.Endpoint, "/")
	if ch.ID != p.ChannelID || !strings.HasPrefix(strings.ToLower(ch.Name), strings.ToLower(tech)+"/") {
		traceStep(ctx, fmt.Sprintf("ari POST /channels: retry answered 409 and channel %s is not of endpoint %s: not adopted", ch.Name, p.Endpoint), conflict.Status)
		return Channel{}, conflict
	}
	traceStep(ctx, fmt.Sprintf("ari POST /channels: retry answered 409; GET /channels/{id} shows %s (%s): an earlier attempt created it, adopted", ch.Name, ch.State), http.StatusOK)
	return ch, nil
}

// ErrIDPrefixConflict: Asterisk refused a channel id with 409 "already exists" although no
// channel has that id. Asterisk 22 (seen on 22.10.1) refuses an originate whose channel
// id is a prefix of a live channel's id: "call-1" while "call-10" is up. Call ids of one
// length (the daemon's own are) never collide so.
var ErrIDPrefixConflict = errors.New("no channel has this id; Asterisk refuses an id that is the prefix of a live channel's id (use call ids of one length)")

// explainConflict turns a first-attempt 409 "already exists" into evidence: the channel
// with that id, or ErrIDPrefixConflict when GET /channels/{id} finds none.
func (c *Client) explainConflict(ctx context.Context, id string, conflict *Error) error {
	ch, err := c.GetChannel(ctx, id)
	var ae *Error
	switch {
	case err == nil:
		return fmt.Errorf("%w (channel %s, %s, created %s)", conflict, ch.Name, ch.State, ch.CreationTime.Format(time.RFC3339))
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		return fmt.Errorf("%w: %w", conflict, ErrIDPrefixConflict)
	default:
		return conflict
	}
}
