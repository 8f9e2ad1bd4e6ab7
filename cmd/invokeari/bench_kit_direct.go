package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// directStasis is the real-PBX section's direct-ARI baseline: the smallest Stasis
// application a user would write instead of invokeari. It holds the app's websocket and
// continues each call that enters Stasis to the dialplan, as the daemon does, so that
// Asterisk does the same work per call on every path (StasisStart, the continue, the
// call's second in the dialplan). Its originates go through directARI's keep-alive
// client; the websocket and the continues are its own.
type directStasis struct {
	ari      *directARI
	context  string
	conn     *websocket.Conn
	work     chan string // channel ids to continue
	wg       sync.WaitGroup
	started  atomic.Int64 // StasisStart events seen
	failures atomic.Int64 // continues Asterisk refused or that failed in transport
	firstErr atomic.Value // string
}

// startDirectStasis connects app c.app's websocket and starts the reader and
// continue workers; stop ends them.
func startDirectStasis(ctx context.Context, c *directARI, dialplanContext string, workers int) (*directStasis, error) {
	u, err := url.Parse(c.base)
	if err != nil {
		return nil, err
	}
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path += "/events"
	u.RawQuery = url.Values{"app": {c.app}, "subscribeAll": {"false"}}.Encode()
	h := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+c.pass))}}
	conn, resp, err := websocket.DefaultDialer.DialContext(ctx, u.String(), h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("direct Stasis app %s: websocket: %w", c.app, err)
	}
	d := &directStasis{ari: c, context: dialplanContext, conn: conn, work: make(chan string, 4096)}
	d.wg.Add(1 + workers)
	go d.read() // owned by d: ends when stop closes the websocket
	for range workers {
		go d.continues(ctx) // owned by d: end when read closes work
	}
	return d, nil
}

// read hands every StasisStart's channel id to the continue workers.
func (d *directStasis) read() {
	defer d.wg.Done()
	defer close(d.work)
	for {
		_, msg, err := d.conn.ReadMessage()
		if err != nil {
			return
		}
		if !bytes.Contains(msg, stasisStartType) {
			continue // a real app would switch on the type too; most events here are not for it
		}
		var ev struct {
			Type    string `json:"type"`
			Channel struct {
				ID string `json:"id"`
			} `json:"channel"`
		}
		if json.Unmarshal(msg, &ev) != nil || ev.Type != "StasisStart" {
			continue
		}
		d.started.Add(1)
		d.work <- ev.Channel.ID
	}
}

var stasisStartType = []byte(`"type":"StasisStart"`)

// continues sends POST /channels/{id}/continue for each id until work is closed.
func (d *directStasis) continues(ctx context.Context) {
	defer d.wg.Done()
	for id := range d.work {
		q := url.Values{"context": {d.context}, "extension": {"s"}, "priority": {"1"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.ari.base+"/channels/"+url.PathEscape(id)+"/continue?"+q.Encode(), nil)
		if err == nil {
			req.SetBasicAuth(d.ari.user, d.ari.pass)
			err = doBench(d.ari.hc, req, nil)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			d.failures.Add(1)
			d.firstErr.CompareAndSwap(nil, err.Error())
		}
	}
}

// stop closes the websocket and waits for the reader and workers.
func (d *directStasis) stop() {
	_ = d.conn.Close()
	d.wg.Wait()
}
