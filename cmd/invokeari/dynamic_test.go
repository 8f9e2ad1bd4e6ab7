package main

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/sim"
)

const (
	dynARIUser = "dynuser"
	dynARIPass = "dyn-Secret-Pass-9b1d"
)

// startDynamicSim is a second simulated Asterisk, not in the daemon's config, with its
// own ARI credentials: the dynamic server of these tests.
func startDynamicSim(t *testing.T) *sim.Server {
	t.Helper()
	s := sim.New(sim.Config{Username: dynARIUser, Password: dynARIPass, Endpoints: testEndpoints(), Contexts: DemoContexts()})
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start dynamic simulator: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dynForm(s *sim.Server, id string) url.Values {
	return url.Values{"d": {"PJSIP/answerwait"}, "c": {"confirmcode"}, "e": {"s"}, "wait": {"end"}, "id": {id},
		"ari": {s.URL()}, "ariuser": {dynARIUser}, "aripass": {dynARIPass}}
}

// dynamicLinks returns the dynamic links /readyz lists.
func dynamicLinks(e *testEnv) []map[string]any {
	detail, _ := e.waitReady(true)["detail"].(map[string]any)
	links, _ := detail["asterisk"].([]any)
	var out []map[string]any
	for _, l := range links {
		if m, ok := l.(map[string]any); ok && m["dynamic"] == true {
			out = append(out, m)
		}
	}
	return out
}

// TestDynamicServerRefused: with dynamic servers off, or 127.0.0.1 not explicitly
// allowed, a request naming an unconfigured ARI URL is refused (403) and that
// Asterisk is never contacted.
func TestDynamicServerRefused(t *testing.T) {
	dyn := startDynamicSim(t)
	tests := []struct {
		name, yaml string
	}{
		{"off by default", ""},
		{"disabled", "dynamic_servers: {enabled: false, allow: [\"127.0.0.1/32\"]}\n"},
		{"other network only", "dynamic_servers: {enabled: true, allow: [\"10.0.0.0/8\"]}\n"},
		{"broad allow does not unlock loopback", "dynamic_servers: {enabled: true, allow: [\"0.0.0.0/0\"]}\n"},
		{"other loopback address", "dynamic_servers: {enabled: true, allow: [\"127.0.0.2/32\"]}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startEnvWith(t, envOptions{extraYAML: tt.yaml})
			before := len(dyn.Requests())
			r := e.post(dynForm(dyn, "dynrefused1"), nil)
			if r.Status != 403 || r.Envelope.Error == nil || r.Envelope.Error.Code != "server_not_allowed" || r.Envelope.Error.Field != "ari" {
				t.Fatalf("reply %d: %s; want 403 server_not_allowed on ari", r.Status, r.Raw)
			}
			if strings.Contains(r.Raw, dynARIPass) {
				t.Errorf("reply echoes aripass: %s", r.Raw)
			}
			e.stop()
			if got := len(dyn.Requests()); got != before {
				t.Errorf("dynamic simulator got %d requests; want none: %+v", got-before, dyn.Requests()[before:])
			}
			if n := e.requestsTo("POST", "/ari/channels"); n != 0 {
				t.Errorf("configured simulator got %d originates; want 0", n)
			}
			if strings.Contains(e.logs.String(), dynARIPass) {
				t.Error("daemon logs hold aripass")
			}
		})
	}
}

// TestDynamicServerCall: with 127.0.0.1/32 allowed, a call reaches the unconfigured
// simulator through `ari=<its URL>` with its own credentials, ends normally, and the
// link is closed once idle. Credentials never show in logs, replies or events.
func TestDynamicServerCall(t *testing.T) {
	dyn := startDynamicSim(t)
	e := startEnvWith(t, envOptions{extraYAML: "dynamic_servers: {enabled: true, allow: [\"127.0.0.1/32\"], idle_timeout: 2s}\n"})
	name := stasisapp.DynamicServerName(dyn.URL())

	// Both credentials are required; nothing is contacted without them.
	noPass := dynForm(dyn, "dynnopass1")
	noPass.Del("aripass")
	if r := e.post(noPass, nil); r.Status != 400 || r.Envelope.Error == nil || r.Envelope.Error.Field != "aripass" {
		t.Fatalf("without aripass: %d %s; want 400 on aripass", r.Status, r.Raw)
	}
	if n := len(dyn.Requests()); n != 0 {
		t.Fatalf("dynamic simulator contacted before a valid request: %d requests", n)
	}

	const id = "dyncall1"
	r := e.post(dynForm(dyn, id), nil)
	if r.Status != 200 || r.Envelope.Call == nil || r.Envelope.Call.Outcome != events.Completed {
		t.Fatalf("reply %d: %s; want 200 completed", r.Status, r.Raw)
	}
	if r.Envelope.Call.Server != name {
		t.Errorf("call server %q; want %q", r.Envelope.Call.Server, name)
	}
	if got := originatesByID(dyn)[id]; len(got) != 1 {
		t.Errorf("dynamic simulator originates of %s: %v; want one", id, got)
	}
	if got := originatesByID(e.sim)[id]; len(got) != 0 {
		t.Errorf("configured simulator originated %s: %v", id, got)
	}

	// The dynamic link shows in /readyz, connected, without making the daemon unready.
	links := dynamicLinks(e)
	if len(links) != 1 || links[0]["name"] != name || links[0]["connected"] != true {
		t.Fatalf("dynamic links in /readyz: %v; want %s connected", links, name)
	}

	// The open link was made with other credentials: a wrong aripass is refused.
	bad := dynForm(dyn, "dynbadpass1")
	bad.Set("aripass", "not-the-password")
	if r := e.post(bad, nil); r.Status != 403 || r.Envelope.Error == nil || r.Envelope.Error.Code != "bad_ari_credentials" {
		t.Fatalf("wrong aripass on the open link: %d %s; want 403 bad_ari_credentials", r.Status, r.Raw)
	}
	if got := originatesByID(dyn)["dynbadpass1"]; len(got) != 0 {
		t.Errorf("wrong credentials originated: %v", got)
	}

	evs := callEvents(t, e.nats, []string{id}, 20*time.Second)
	checkCallEvents(t, evs, []string{id}, map[string]events.Outcome{id: events.Completed})
	for _, ev := range evs[id] {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), dynARIPass) || strings.Contains(string(b), dynARIUser) {
			t.Errorf("event holds ARI credentials: %s", b)
		}
		if ev.Server != name {
			t.Errorf("event server %q; want %q", ev.Server, name)
		}
	}

	// The dynamic link is closed after idle_timeout without calls.
	deadline := time.Now().Add(15 * time.Second)
	for {
		links := dynamicLinks(e)
		if len(links) == 0 {
			break
		}
		if links[0]["name"] != name {
			t.Fatalf("dynamic link %v; want %s", links[0], name)
		}
		if time.Now().After(deadline) {
			t.Fatalf("dynamic link still open long after idle_timeout: %v", links)
		}
		waitABit()
	}
	e.stop()
	if strings.Contains(e.logs.String(), dynARIPass) {
		t.Error("daemon logs hold aripass")
	}
	if !strings.Contains(e.logs.String(), "closing idle dynamic ARI link") {
		t.Error("no log of the idle link being closed")
	}
}
