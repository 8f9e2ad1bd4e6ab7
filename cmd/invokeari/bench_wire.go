package main

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// wireTimer times the daemon's ARI connections where they meet the socket: when each
// POST /channels is handed to the kernel, when its reply's first bytes are read, and
// when the websocket delivers each ChannelDestroyed. It is the bench's tcpdump.
type wireTimer struct {
	mu        sync.Mutex
	postOut   map[string]time.Time // channel id → its POST /channels written
	replyIn   map[string]time.Time // channel id → the first read of its reply
	destroyed map[string]time.Time // channel id → the read holding its ChannelDestroyed frame
	paused    atomic.Bool          // records nothing (the throughput part: the timer costs CPU too)
}

func newWireTimer() *wireTimer {
	return &wireTimer{postOut: map[string]time.Time{}, replyIn: map[string]time.Time{}, destroyed: map[string]time.Time{}}
}

// dial is an ari.Config.Dial that times the connection it opens.
func (w *wireTimer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &timedConn{Conn: c, w: w}, nil
}

// timedConn is one timed connection. net/http writes a request and reads its reply on
// two goroutines and sends the next request only after the reply: pending holds the
// channel ids of requests written and not yet answered ("" for other requests).
type timedConn struct {
	net.Conn
	w       *wireTimer
	mu      sync.Mutex
	pending []string
}

var (
	postChannels = []byte("POST /ari/channels?")
	httpReply    = []byte("HTTP/1.")
	destroyedTyp = []byte(`"ChannelDestroyed"`)
)

func (c *timedConn) Write(b []byte) (int, error) {
	id, start := "", isRequestStart(b)
	if start {
		if bytes.HasPrefix(b, postChannels) && !c.w.paused.Load() {
			id = queryParam(b[len(postChannels)-1:], "channelId")
		}
		c.mu.Lock() // before the write: the reply may be read before Write returns
		c.pending = append(c.pending, id)
		c.mu.Unlock()
	}
	n, err := c.Conn.Write(b)
	if id != "" {
		now := time.Now()
		c.w.mu.Lock()
		c.w.postOut[id] = now
		c.w.mu.Unlock()
	}
	return n, err
}

func (c *timedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 {
		return n, err
	}
	now := time.Now()
	data := b[:n]
	if bytes.HasPrefix(data, httpReply) {
		c.mu.Lock()
		id := ""
		if len(c.pending) > 0 {
			id, c.pending = c.pending[0], c.pending[1:]
		}
		c.mu.Unlock()
		if id != "" && !c.w.paused.Load() {
			c.w.mu.Lock()
			c.w.replyIn[id] = now
			c.w.mu.Unlock()
		}
		return n, err
	}
	for !c.w.paused.Load() {
		i := bytes.Index(data, destroyedTyp)
		if i < 0 {
			break
		}
		data = data[i+len(destroyedTyp):]
		if id := channelIDAfter(data); id != "" {
			c.w.mu.Lock()
			c.w.destroyed[id] = now
			c.w.mu.Unlock()
		}
	}
	return n, err
}

func isRequestStart(b []byte) bool {
	for _, m := range []string{"GET /", "POST /", "DELETE /", "PUT /"} {
		if bytes.HasPrefix(b, []byte(m)) {
			return true
		}
	}
	return false
}

// queryParam reads key from the query that starts b ("?a=1&b=2 HTTP/1.1...").
func queryParam(b []byte, key string) string {
	end := bytes.IndexAny(b, " \r\n")
	if end < 0 || len(b) == 0 || b[0] != '?' {
		return ""
	}
	q, err := url.ParseQuery(string(b[1:end]))
	if err != nil {
		return ""
	}
	return q.Get(key)
}

// channelIDAfter finds the "channel" object's "id" in the event text that follows.
func channelIDAfter(b []byte) string {
	i := bytes.Index(b, []byte(`"channel"`))
	if i < 0 {
		return ""
	}
	b = b[i+len(`"channel"`):]
	j := bytes.Index(b, []byte(`"id"`))
	if j < 0 {
		return ""
	}
	b = b[j+len(`"id"`):]
	open := bytes.IndexByte(b, '"')
	if open < 0 {
		return ""
	}
	b = b[open+1:]
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return ""
	}
	return string(b[:end])
}

// split returns, for the calls of samples that succeeded: sent → POST written, reply
// read → reply received by the client, and POST written → reply read (Asterisk).
func (w *wireTimer) split(samples []kitSample) (in, back, asterisk []time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range samples {
		out, ok1 := w.postOut[s.id]
		rep, ok2 := w.replyIn[s.id]
		if s.err != nil || !ok1 || !ok2 {
			continue
		}
		in = append(in, out.Sub(s.sent))
		back = append(back, s.done.Sub(rep))
		asterisk = append(asterisk, rep.Sub(out))
	}
	return in, back, asterisk
}

// frameTo returns, per call in at whose ChannelDestroyed frame was read between from and
// to, at's time − the frame's read time.
func (w *wireTimer) frameTo(at map[string]time.Time, from, to time.Time) []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ds []time.Duration
	for id, t := range at {
		if f, ok := w.destroyed[id]; ok && !f.Before(from) && !f.After(to) {
			ds = append(ds, t.Sub(f))
		}
	}
	return ds
}
