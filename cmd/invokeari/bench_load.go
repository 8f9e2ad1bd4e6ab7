package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/invokeari/invokeari/bridge/natsdoor"
)

// originateFunc places originate number seq and returns an error unless it succeeded.
type originateFunc func(ctx context.Context, seq int64) error

// loadResult is what one load run measured.
type loadResult struct {
	ok, errs int
	elapsed  time.Duration
	lat      []time.Duration // one per successful originate
	firstErr error
}

// add sums o into r (rounds of the same load).
func (r *loadResult) add(o loadResult) {
	r.ok += o.ok
	r.errs += o.errs
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

// rate is successful originates per second.
func (r loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// runLoad is a closed-loop load generator: `workers` goroutines each send one originate
// at a time until total originates were started (total > 0) or dur has passed (dur > 0),
// or ctx ends. Every worker is joined before it returns.
func runLoad(ctx context.Context, workers int, total int64, dur time.Duration, f originateFunc) loadResult {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		res   loadResult
		wg    sync.WaitGroup
		start = time.Now()
	)
	deadline := start.Add(dur)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var errs int
			var firstErr error
			for ctx.Err() == nil {
				if dur > 0 && time.Now().After(deadline) {
					break
				}
				seq := next.Add(1)
				if total > 0 && seq > total {
					break
				}
				t0 := time.Now()
				if err := f(ctx, seq); err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.ok += len(lat)
			res.errs += errs
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// newBenchHTTPClient is a keep-alive client with enough idle connections for every worker.
func newBenchHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// directARI originates straight on the simulator's ARI, as a client without invokeari would.
type directARI struct {
	hc         *http.Client
	base       string // http://127.0.0.1:port/ari
	user, pass string
	app        string // an app nobody serves: the simulator dials anyway
}

func (c *directARI) originate(endpoint, idPrefix string) originateFunc {
	return func(ctx context.Context, seq int64) error {
		id := idPrefix + strconv.FormatInt(seq, 10)
		return c.post(ctx, url.Values{"endpoint": {endpoint}, "app": {c.app}, "appArgs": {"bench," + id}, "channelId": {id}, "timeout": {"30"}})
	}
}

// post sends POST /channels with query q.
func (c *directARI) post(ctx context.Context, q url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/channels?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.pass)
	return doBench(c.hc, req, nil)
}

// hangup hangs up channel idPrefix+seq (DELETE /channels/{id}).
func (c *directARI) hangup(idPrefix string) originateFunc {
	return func(ctx context.Context, seq int64) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"/channels/"+idPrefix+strconv.FormatInt(seq, 10), nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth(c.user, c.pass)
		return doBench(c.hc, req, nil)
	}
}

// daemonHTTP originates through invokeari's HTTP door.
type daemonHTTP struct {
	hc  *http.Client
	url string // http://127.0.0.1:port/v2/invokeARI
	key string
}

// originate posts one call; with idPrefix set the call id is idPrefix+seq, else the
// daemon picks one.
func (c *daemonHTTP) originate(endpoint, wait string, timeoutSec int, idPrefix string) originateFunc {
	return func(ctx context.Context, seq int64) error {
		form := url.Values{"d": {endpoint}, "c": {benchContext}, "e": {"s"}, "t": {strconv.Itoa(timeoutSec)}, "wait": {wait}}
		if idPrefix != "" {
			form.Set("id", idPrefix+strconv.FormatInt(seq, 10))
		}
		return c.post(ctx, form)
	}
}

// post sends one form-encoded invokeARI request and checks it succeeded.
func (c *daemonHTTP) post(ctx context.Context, form url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewBufferString(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-API-Key", c.key)
	return doBench(c.hc, req, successMark)
}

// successMark is how a successful invokeari envelope starts its status.
var successMark = []byte(`"status":"success"`)

// doBench sends req, reads the whole body (so the connection is reused) and checks
// for a 2xx status and, when mark is set, that the body contains mark.
func doBench(hc *http.Client, req *http.Request, mark []byte) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 || (mark != nil && !bytes.Contains(body, mark)) {
		return fmt.Errorf("%s %s: HTTP %d: %.200s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	return nil
}

// daemonNATS originates through invokeari's NATS door with request/reply.
type daemonNATS struct {
	nc      *nats.Conn
	key     string
	subject string // "" = natsdoor.Subject
}

func (c *daemonNATS) originate(endpoint, wait string, timeoutSec int) (originateFunc, error) {
	body, err := json.Marshal(map[string]string{"d": endpoint, "c": benchContext, "e": "s",
		"t": strconv.Itoa(timeoutSec), "wait": wait})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, _ int64) error { return c.request(ctx, body) }, nil
}

// request sends one originate request body and checks it succeeded.
func (c *daemonNATS) request(ctx context.Context, body []byte) error {
	m := nats.NewMsg(cmp.Or(c.subject, natsdoor.Subject))
	m.Data = body
	m.Header.Set("X-API-Key", c.key)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := c.nc.RequestMsgWithContext(rctx, m)
	if err != nil {
		return err
	}
	if st := r.Header.Get(natsdoor.StatusHeader); (st != "" && st != "200") || !bytes.Contains(r.Data, successMark) {
		return fmt.Errorf("nats originate: status %q: %.200s", st, r.Data)
	}
	return nil
}

// ariOriginateTime reads the daemon's own histogram of ARI originate round trips from
// GET /metrics: the sum of seconds and the count so far (op="originate", ok="true").
func (c *daemonHTTP) ariOriginateTime(ctx context.Context) (sum float64, count int64, err error) {
	u := strings.Replace(c.url, "/v2/invokeARI", "/metrics", 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for line := range strings.Lines(string(body)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !strings.Contains(name, `op="originate"`) || !strings.Contains(name, `ok="true"`) {
			continue
		}
		switch {
		case strings.HasPrefix(name, "invokeari_ari_request_seconds_sum{"):
			sum, err = strconv.ParseFloat(val, 64)
			found++
		case strings.HasPrefix(name, "invokeari_ari_request_seconds_count{"):
			count, err = strconv.ParseInt(val, 10, 64)
			found++
		}
		if err != nil {
			return 0, 0, fmt.Errorf("metrics %s: %w", name, err)
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("metrics: no invokeari_ari_request_seconds for op=originate at %s", u)
	}
	return sum, count, nil
}
