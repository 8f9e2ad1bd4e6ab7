package sim

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func startSim(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Username, cfg.Password = "invokeari", "secret"
	if cfg.Endpoints == nil {
		cfg.Endpoints = RecordedEndpoints()
	}
	s := New(cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dialWS(t *testing.T, s *Server, app string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := strings.Replace(s.URL(), "http://", "ws://", 1) + "/events?app=" + app + "&api_key=invokeari:secret"
	return websocket.DefaultDialer.Dial(u, nil)
}

func TestPingPongSamePayload(t *testing.T) {
	s := startSim(t, Config{})
	c, _, err := dialWS(t, s, "invokeari")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 1)
	c.SetPongHandler(func(p string) error { got <- p; return nil })
	go func() { // reader: ends when c is closed
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	if err := c.WriteControl(websocket.PingMessage, []byte("hello-42"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "hello-42" {
			t.Errorf("pong payload %q, want %q", p, "hello-42")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no pong")
	}
}

func TestRestartClosesWithoutFrameAndBoots(t *testing.T) {
	s := startSim(t, Config{BootDelay: 300 * time.Millisecond, TimeScale: 0.01})
	c, _, err := dialWS(t, s, "invokeari")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := infoStartup(t, s)
	s.Restart(context.Background())
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
			t.Errorf("read after restart: %v, want abnormal closure (no close frame)", err)
		}
		break
	}
	_, resp, err := dialWS(t, s, "invokeari")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade during boot: resp %v err %v, want 503", resp, err)
	}
	if after := infoStartup(t, s); after == before {
		t.Errorf("startup_time unchanged after restart: %s", after)
	}
}

func infoStartup(t *testing.T, s *Server) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/asterisk/info?only=status", nil)
	req.SetBasicAuth("invokeari", "secret")
	// startup_time has millisecond resolution.
	<-time.After(2 * time.Millisecond)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return b.String()
}

func TestManyRingingCallsAreCheap(t *testing.T) {
	s := startSim(t, Config{Endpoints: map[string]Behavior{"PJSIP/ring": {Result: RingForever}}})
	const n = 2000
	client := &http.Client{}
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/channels?endpoint=PJSIP/ring&app=invokeari&timeout=600", nil)
		req.SetBasicAuth("invokeari", "secret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("originate %d: status %d", i, resp.StatusCode)
		}
	}
	if got := s.Channels(); got != n {
		t.Errorf("Channels() = %d, want %d", got, n)
	}
	if got := s.Originates(); got != n {
		t.Errorf("Originates() = %d, want %d", got, n)
	}
}

func TestStopRefusesUntilBoot(t *testing.T) {
	s := startSim(t, Config{})
	ping := func() (int, error) {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/asterisk/ping", nil)
		req.SetBasicAuth("invokeari", "secret")
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	tests := []struct {
		name    string
		act     func()
		wantErr bool
	}{
		{"running", func() {}, false},
		{"stopped", func() { s.Stop(context.Background()) }, true},
		{"booted", s.Boot, false},
	}
	for _, tt := range tests {
		tt.act()
		code, err := ping()
		if gotErr := err != nil; gotErr != tt.wantErr || (!tt.wantErr && code != http.StatusOK) {
			t.Errorf("%s: ping status %d err %v, want error %v", tt.name, code, err, tt.wantErr)
		}
	}
}

// TestBodyNeedsJSONContentType holds the simulator to what the PBX kit does with a
// request body (differential test, 2026-12-01): Asterisk reads it only when it is
// declared application/json; otherwise the variables are dropped and an invalid body
// is not an error.
func TestBodyNeedsJSONContentType(t *testing.T) {
	s := startSim(t, Config{Contexts: RecordedContexts()})
	post := func(contentType, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/channels?endpoint=Local/answerlong@sim&context=sink&extension=s&priority=1", strings.NewReader(body))
		req.SetBasicAuth("invokeari", "secret")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ch struct{ ID string }
		_ = json.NewDecoder(resp.Body).Decode(&ch)
		return resp.StatusCode, ch.ID
	}
	confcode := func(id string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/channels/"+id+"/variable?variable=CONFCODE", nil)
		req.SetBasicAuth("invokeari", "secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const vars = `{"variables":{"CONFCODE":"4711"}}`
	for _, tc := range []struct {
		contentType, body string
		status, varStatus int // originate status; GET variable status (0: no channel)
	}{
		{"application/json", vars, 200, 200},
		{"application/json; charset=utf-8", vars, 200, 200},
		{"", vars, 200, 404},
		{"text/plain", vars, 200, 404},
		{"application/json", `{bad json`, 400, 0},
		{"", `{bad json`, 200, 404},
	} {
		status, id := post(tc.contentType, tc.body)
		if status != tc.status {
			t.Errorf("Content-Type %q body %s: status %d, want %d", tc.contentType, tc.body, status, tc.status)
			continue
		}
		if tc.varStatus != 0 {
			if got := confcode(id); got != tc.varStatus {
				t.Errorf("Content-Type %q body %s: GET variable CONFCODE %d, want %d", tc.contentType, tc.body, got, tc.varStatus)
			}
		}
	}
}
