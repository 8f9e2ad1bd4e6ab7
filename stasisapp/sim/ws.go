package sim

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const wsBadRequest = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>400 Bad Request</title>\r\n</head><body>\r\n<h1>Bad Request</h1>\r\n<p>Invalid application provided in websocket request</p>\r\n<hr />\r\n</body></html>\r\n"

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 16384,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// wsConn is one app websocket. Its writer goroutine owns the socket's write side; send
// never blocks the simulator: a client whose queue stays full is disconnected, as
// Asterisk does after websocket_write_timeout.
type wsConn struct {
	s        *Server
	ws       *websocket.Conn
	app      string
	all      bool // subscribeAll
	replaced bool // guarded by Server.mu

	queue     chan []byte
	done      chan struct{}
	closeOnce sync.Once
	fullSince time.Time // guarded by Server.mu
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	app := q.Get("app")
	s.mu.Lock()
	booting := time.Now().Before(s.bootUntil)
	s.mu.Unlock()
	if booting {
		writeMsg(w, http.StatusServiceUnavailable, "Asterisk not booted")
		return
	}
	if app == "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(wsBadRequest))
		return
	}
	// Register before the 101 goes out: a client may originate as soon as it has it.
	c := &wsConn{s: s, app: app, all: q.Get("subscribeAll") == "true",
		queue: make(chan []byte, s.cfg.QueueSize), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeMsg(w, http.StatusServiceUnavailable, "Asterisk not booted")
		return
	}
	if old := s.apps[app]; old != nil {
		b := []byte(`{"type":"ApplicationReplaced","timestamp":`)
		b = appendStr(b, nowStamp())
		b = append(b, `,"application":`...)
		b = appendStr(b, app)
		b = append(b, `,"asterisk_id":"`+asteriskID+`"}`...)
		old.send(b)
		old.replaced = true
	}
	s.apps[app] = c
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		c.drop()
		return
	}
	c.ws = ws
	s.log.Debug("websocket connected", "app", app, "subscribe_all", c.all)
	s.mu.Lock()
	c.ws = ws
	s.mu.Unlock()
	go c.writeLoop() // owned by c: ends when c.done closes
	c.readLoop()     // runs on the HTTP handler goroutine until the socket closes
	c.drop()
}

// send queues msg; caller holds Server.mu. A connection whose queue stays full for
// longer than WriteTimeout is dropped.
func (c *wsConn) send(msg []byte) {
	if c.replaced {
		return
	}
	select {
	case c.queue <- msg:
		c.fullSince = time.Time{}
	default:
		now := time.Now()
		if c.fullSince.IsZero() {
			c.fullSince = now
		}
		if now.Sub(c.fullSince) > c.s.cfg.WriteTimeout {
			c.s.log.Warn("websocket client too slow, disconnecting", "app", c.app)
			go c.drop() // drop takes Server.mu; the goroutine ends after closing the socket
		}
	}
}

func (c *wsConn) writeLoop() {
	for {
		select {
		case <-c.done:
			return
		case msg := <-c.queue:
			if msg == nil { // flush marker from closeAfterFlush: all earlier events are written
				c.drop()
				return
			}
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout + time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.drop()
				return
			}
		}
	}
}

func (c *wsConn) readLoop() {
	c.ws.SetPingHandler(func(data string) error {
		// gorilla's WriteControl may run concurrently with the writer goroutine.
		_ = c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return
		}
	}
}

// drop closes the TCP connection without a close frame and unregisters the app.
func (c *wsConn) drop() {
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		if c.s.apps[c.app] == c {
			delete(c.s.apps, c.app)
		}
		ws := c.ws
		c.s.mu.Unlock()
		close(c.done)
		if ws != nil {
			_ = ws.UnderlyingConn().Close()
		}
	})
}

// closeAfterFlush lets queued events reach the client, then drops the TCP connection
// without a close frame, as Asterisk's shutdown does. Caller must not hold Server.mu.
func (c *wsConn) closeAfterFlush(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case c.queue <- nil:
	case <-c.done:
	case <-ctx.Done():
		c.drop()
	case <-t.C:
		c.drop()
	}
}
