package stasisapp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ariRecorder is a recording proxy in front of a real ARI: REST calls and the websocket
// events the App receives are written as JSON lines in the format of
// testdata/ari/recordings (README there), kind rest / ws / meta.
type ariRecorder struct {
	*httptest.Server
	upstream *url.URL // e.g. http://127.0.0.1:18088
	t0       time.Time
	mu       sync.Mutex
	out      *bytes.Buffer
}

func newARIRecorder(t *testing.T, ariURL, name, description, wsMode string) *ariRecorder {
	t.Helper()
	u, err := url.Parse(ariURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = ""
	r := &ariRecorder{upstream: u, t0: time.Now(), out: &bytes.Buffer{}}
	r.line(map[string]any{"t_ms": 0, "kind": "meta", "what": "scenario", "name": name, "description": description,
		"ws_mode": wsMode, "started": r.t0.UTC().Format(time.RFC3339Nano)})
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *ariRecorder) ms() float64 {
	return float64(time.Since(r.t0).Microseconds()/100) / 10
}

// line writes one JSON line; fields keep the order of the ordered slice when given.
func (r *ariRecorder) line(fields any) {
	b, _ := json.Marshal(fields)
	r.mu.Lock()
	r.out.Write(b)
	r.out.WriteByte('\n')
	r.mu.Unlock()
}

// obj is a JSON object with keys in the order given.
type obj []kv

type kv struct {
	k string
	v any
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// save writes the recording to path, ending it with scenario_end.
func (r *ariRecorder) save(t *testing.T, path string) {
	r.line(obj{{"t_ms", r.ms()}, {"kind", "meta"}, {"what", "scenario_end"}})
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.WriteFile(path, r.out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rawOrNull(b []byte) any {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	return string(b)
}

// orderedQuery keeps the query's keys in the order sent, values unescaped.
func orderedQuery(raw string) obj {
	o := obj{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, _ = url.QueryUnescape(k)
		v, _ = url.QueryUnescape(v)
		o = append(o, kv{k, v})
	}
	return o
}

func (r *ariRecorder) serve(w http.ResponseWriter, req *http.Request) {
	if websocket.IsWebSocketUpgrade(req) {
		r.serveWS(w, req)
		return
	}
	sent := r.ms()
	began := time.Now()
	body, _ := io.ReadAll(req.Body)
	up := *r.upstream
	up.Path, up.RawQuery = req.URL.Path, req.URL.RawQuery
	out, err := http.NewRequestWithContext(req.Context(), req.Method, up.String(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	out.Header = req.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	headers := obj{}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		headers = append(headers, kv{"Content-Type", ct})
	}
	r.line(obj{{"t_ms", r.ms()}, {"kind", "rest"}, {"sent_t_ms", sent},
		{"duration_ms", float64(time.Since(began).Microseconds()/100) / 10},
		{"method", req.Method}, {"path", req.URL.Path}, {"query", orderedQuery(req.URL.RawQuery)},
		{"request_body", rawOrNull(body)}, {"status", resp.StatusCode}, {"status_text", http.StatusText(resp.StatusCode)},
		{"response_body", rawOrNull(rb)}, {"response_headers", headers}})
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(rb)
}

func (r *ariRecorder) serveWS(w http.ResponseWriter, req *http.Request) {
	up := *r.upstream
	up.Scheme = "ws"
	up.Path, up.RawQuery = req.URL.Path, req.URL.RawQuery
	h := http.Header{}
	if a := req.Header.Get("Authorization"); a != "" {
		h.Set("Authorization", a)
	}
	sent := r.ms()
	upConn, resp, err := websocket.DefaultDialer.Dial(up.String(), h)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	r.line(obj{{"t_ms", r.ms()}, {"kind", "meta"}, {"conn", "app"}, {"what", "ws_connect"}, {"sent_t_ms", sent},
		{"path", req.URL.Path}, {"query", req.URL.RawQuery}, {"status", status}})
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	defer upConn.Close()
	conn, err := (&websocket.Upgrader{}).Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	go func() { // client → Asterisk: only control frames and closes matter
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				_ = upConn.Close()
				return
			}
		}
	}()
	for {
		_, msg, err := upConn.ReadMessage()
		if err != nil {
			r.line(obj{{"t_ms", r.ms()}, {"kind", "meta"}, {"conn", "app"}, {"what", "ws_read_end"}, {"error", err.Error()}})
			return
		}
		r.line(obj{{"t_ms", r.ms()}, {"kind", "ws"}, {"conn", "app"}, {"event", json.RawMessage(msg)}})
		if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			return
		}
	}
}
