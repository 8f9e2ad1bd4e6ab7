package ari

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// backoffResetAfter: a connection that lived this long counts as healthy, so the
	// next reconnect starts again from MinBackoff.
	backoffResetAfter = 5 * time.Second
	// closeGrace is how long Run waits for Asterisk to answer our close frame.
	closeGrace = time.Second
	// maxMessage bounds one websocket message (a channel with many variables is a few KiB).
	maxMessage = 16 << 20
	// readBuffer is the websocket's read buffer.
	readBuffer = 64 << 10
)

// ErrAlreadyRunning is returned by Run when another Run of the same Client is active.
var ErrAlreadyRunning = errors.New("ari: event stream already running")

// Handler receives the event stream. All methods are called from Run's goroutine, one
// at a time and in order. A separate reader goroutine keeps reading and decoding while HandleEvent
// works, into a bounded queue; a HandleEvent slower than the events fills it and then
// slows reading (back-pressure). Nothing is dropped.
type Handler interface {
	// HandleEvent is called for every decoded event.
	HandleEvent(ctx context.Context, ev Event)
	// Connected is called after each successful websocket handshake (first and every
	// reconnect), before that connection's events.
	Connected(ctx context.Context, reconnect bool)
	// Disconnected is called once for each Connected when that connection ends (err says
	// why; on stop it wraps ctx.Err()), before any reconnect attempt. Failed handshakes
	// are not connections and are only logged.
	Disconnected(err error)
}

// EventFilter may be implemented by a Handler to spare the reader the decoding of events
// it would ignore: an event whose type and channel id WantsEvent refuses is not decoded
// nor handed over (Client.Skipped counts them). Events without a top-level channel are
// always decoded. WantsEvent is called on the reader goroutine, concurrently with
// HandleEvent.
type EventFilter interface {
	WantsEvent(eventType, channelID string) bool
}

// unwanted reports whether f refuses msg of type typ, peeking at its channel id only.
func unwanted(f EventFilter, typ string, msg []byte) bool {
	id := peekChannelID(msg)
	return id != "" && !f.WantsEvent(typ, id)
}

var (
	channelKey = []byte(`"channel":`)
	idKey      = []byte(`"id":"`)
)

// peekChannelID returns the id of the event's "channel" object when Asterisk wrote it
// the usual way ("channel":{"id":"...), else "" (the event is then decoded).
func peekChannelID(msg []byte) string {
	i := bytes.Index(msg, channelKey)
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(msg[i+len(channelKey):], " \t\r\n")
	if len(rest) == 0 || rest[0] != '{' {
		return ""
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if !bytes.HasPrefix(rest, idKey) {
		return ""
	}
	rest = rest[len(idKey):]
	j := bytes.IndexAny(rest, `"\`)
	if j <= 0 || rest[j] != '"' {
		return "" // empty, or escaped: let the decoder read it
	}
	return string(rest[:j])
}

// Skipped is the number of events an EventFilter refused before decoding.
func (c *Client) Skipped() uint64 { return c.skipped.Load() }

// Connected reports whether the websocket is currently up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Reconnects returns how many times the websocket connected again after a loss (for metrics).
func (c *Client) Reconnects() uint64 { return c.reconnects.Load() }

// Undecodable returns how many websocket messages could not be decoded and were skipped.
func (c *Client) Undecodable() uint64 { return c.undecodable.Load() }

// Run connects the event websocket (ws(s)://host/ari/events?app=<App>, without
// subscribeAll), delivers events to h, and reconnects with jittered exponential backoff
// until ctx ends. It returns ctx.Err() after closing the socket with a close frame.
// Only one Run per Client may be active.
func (c *Client) Run(ctx context.Context, h Handler) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer c.running.Store(false)

	dialer := c.dialer()
	header := http.Header{}
	header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.username+":"+c.password)))

	backoff := c.minBackoff
	everConnected := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		conn, err := c.connect(ctx, dialer, header)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.logDialError(err)
		} else {
			reconnect := everConnected
			everConnected = true
			if reconnect {
				c.reconnects.Add(1)
			}
			c.connected.Store(true)
			c.log.Info("ari websocket connected", "url", c.wsURL, "reconnect", reconnect)
			start := time.Now()
			h.Connected(ctx, reconnect)
			err = c.serve(ctx, conn, h)
			c.connected.Store(false)
			h.Disconnected(err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("ari websocket lost", "url", c.wsURL, "err", err, "lived", time.Since(start).Round(time.Millisecond))
			if time.Since(start) >= backoffResetAfter {
				backoff = c.minBackoff
			}
		}
		wait := jitter(backoff)
		backoff = min(2*backoff, c.maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// jitter returns a duration in [d/2, d): spreads the reconnects of many daemons.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half)
}

func (c *Client) dialer() *websocket.Dialer {
	d := &websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.requestTimeout,
		// Asterisk writes one frame per event (~600 B); a larger buffer takes a backlog of
		// them in one read instead of one read per ~4 KiB.
		ReadBufferSize: readBuffer,
	}
	if t, ok := c.http.Transport.(*http.Transport); ok {
		d.Proxy = t.Proxy
		d.NetDialContext = t.DialContext
		if t.TLSClientConfig != nil {
			d.TLSClientConfig = t.TLSClientConfig.Clone()
		}
	}
	return d
}

// connect performs the websocket handshake. A refused upgrade is *Error.
func (c *Client) connect(ctx context.Context, d *websocket.Dialer, header http.Header) (*websocket.Conn, error) {
	conn, resp, err := d.DialContext(ctx, c.wsURL, header)
	if err == nil {
		return conn, nil
	}
	if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
		// gorilla keeps (up to 1 KiB of) the body readable and closes it itself.
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("ari websocket connect: %w", newError(http.MethodGet, "/events", resp.StatusCode, data))
	}
	return nil, fmt.Errorf("ari websocket connect: %w", err)
}

func (c *Client) logDialError(err error) {
	var ae *Error
	if errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
		c.log.Error("ari websocket: authentication refused, check username/password",
			"url", c.wsURL, "user", c.username, "status", ae.Status, "err", err)
		return
	}
	c.log.Warn("ari websocket connect failed", "url", c.wsURL, "err", err)
}

// serve reads one connection until it fails or ctx ends. A keepalive goroutine pings
// and, on stop, sends the close frame; serve waits for it before returning.
func (c *Client) serve(ctx context.Context, conn *websocket.Conn, h Handler) error {
	deadline := 2 * c.pingInterval
	conn.SetReadLimit(maxMessage)
	extend := func() error { return conn.SetReadDeadline(time.Now().Add(deadline)) }
	if err := extend(); err != nil {
		conn.Close()
		return fmt.Errorf("ari websocket: %w", err)
	}
	conn.SetPongHandler(func(string) error { return extend() })

	readDone := make(chan struct{})
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		c.keepalive(ctx, conn, readDone)
	}()

	err := c.read(ctx, conn, h, extend)
	close(readDone)
	<-keepDone
	conn.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("ari websocket: stopped: %w", ctx.Err())
	}
	return err
}

// frameQueue bounds the frames read but not yet handled. The reader never waits for the
// handler while there is room, so a brief stall in handling (GC, a slow lock) does not
// stop reading: Asterisk drops a websocket it cannot write to for its
// websocket_write_timeout (100 ms by default). When the queue is full the reader waits
// (back-pressure); nothing is dropped.
const frameQueue = 4096

// read runs the connection's only reader: it reads and decodes frames on its own
// goroutine and hands the events to h in order on the calling goroutine, so decoding
// the next frames overlaps with handling this one. It returns the reader's error once
// every frame read is handled.
func (c *Client) read(ctx context.Context, conn *websocket.Conn, h Handler, extend func() error) error {
	evs := make(chan Event, frameQueue)
	var readErr error
	filter, _ := h.(EventFilter)
	go func() { // owned by read: ends when the connection fails or is closed
		defer close(evs)
		// The read deadline (two ping intervals) is pushed on at most every half
		// interval: a timer update per frame costs more than it is worth at volume.
		var extended time.Time
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				var ne interface{ Timeout() bool }
				if errors.As(err, &ne) && ne.Timeout() {
					readErr = fmt.Errorf("ari websocket: no message or pong for %s: %w", 2*c.pingInterval, err)
				} else {
					readErr = fmt.Errorf("ari websocket read: %w", err)
				}
				return
			}
			if now := time.Now(); now.Sub(extended) > c.pingInterval/2 {
				if err := extend(); err != nil {
					readErr = fmt.Errorf("ari websocket: %w", err)
					return
				}
				extended = now
			}
			typ, err := peekType(msg)
			if err == nil && filter != nil && unwanted(filter, typ, msg) {
				c.skipped.Add(1)
				continue
			}
			var ev Event
			if err == nil {
				ev, err = decodePeeked(typ, msg) // the type is peeked once per frame
			}
			if err != nil {
				n := c.undecodable.Add(1)
				c.log.Warn("ari websocket: undecodable message skipped", "err", err, "bytes", len(msg), "undecodable_total", n)
				continue
			}
			if _, ok := ev.(*ApplicationReplaced); ok {
				c.log.Error("ari websocket: another connection took over the application; this one gets no more events",
					"app", c.app, "url", c.wsURL)
			}
			evs <- ev
		}
	}()
	for ev := range evs {
		h.HandleEvent(ctx, ev)
	}
	return readErr // written before evs was closed
}

// keepalive is the connection's only writer: it pings every PingInterval and, when
// ctx ends, sends a close frame and gives the reader closeGrace to see Asterisk's
// answer before the socket is closed. It returns when the reader is done.
func (c *Client) keepalive(ctx context.Context, conn *websocket.Conn, readDone <-chan struct{}) {
	tick := time.NewTicker(c.pingInterval)
	defer tick.Stop()
	for {
		select {
		case <-readDone:
			return
		case <-tick.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.pingInterval)); err != nil {
				c.log.Debug("ari websocket ping failed", "err", err)
				conn.Close() // unblocks the reader
				return
			}
		case <-ctx.Done():
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace)); err != nil {
				conn.Close()
				return
			}
			t := time.NewTimer(closeGrace)
			defer t.Stop()
			select {
			case <-readDone:
			case <-t.C:
			}
			conn.Close()
			return
		}
	}
}
