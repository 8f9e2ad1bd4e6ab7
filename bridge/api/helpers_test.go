package api

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"
)

// Test secrets. They must never appear in an Error message.
const (
	openKey     = "open-key-0123456789"
	helpdeskKey = "helpdesk-key-0123456789"
	funcsKey    = "funcs-key-0123456789"
	pbx1Pass    = "pbx1-secret-pass"
	pbx2Pass    = "pbx2-secret-pass"
)

func hashKey(k string) string {
	s := sha256.Sum256([]byte(k))
	return hex.EncodeToString(s[:])
}

// testConfig: two servers (never contacted: no test dials anything), an unrestricted
// key, a restricted helpdesk key and a key allowed to set dialplan functions.
func testConfig() Config {
	return Config{
		Servers: []Server{
			{Name: "pbx1", URL: "http://127.0.0.1:8088/ari", Username: "invokeari", Password: pbx1Pass},
			{Name: "pbx2", URL: "http://127.0.0.1:9088/ari/", Username: "other", Password: pbx2Pass, CPS: 1},
		},
		Keys: []Key{
			{Name: "open", SHA256: hashKey(openKey)},
			{
				Name: "helpdesk", SHA256: hashKey(helpdeskKey), Servers: []string{"pbx1"},
				Destinations: Patterns{Allow: []string{"PJSIP/6*", "Local/*@from-internal"}, Deny: []string{"PJSIP/66*"}},
				Contexts:     []string{"confirmcode", "from-internal"},
				Variables:    VariablePolicy{Allow: []string{"CONFCODE", "TICKET_*"}},
				MaxTimeout:   60 * time.Second, Rate: "5/s", MaxConcurrent: 2,
			},
			{Name: "funcs", SHA256: hashKey(funcsKey), Variables: VariablePolicy{Functions: true}},
		},
		Defaults: Defaults{Timeout: 30 * time.Second, Wait: "answer", Server: "pbx1"},
	}
}

func newTestGate(t testing.TB, cfg Config) *Gate {
	t.Helper()
	g, err := NewGate(cfg)
	if err != nil {
		t.Fatalf("NewGate: %v", err)
	}
	return g
}

func principal(t testing.TB, g *Gate, key string) *Principal {
	t.Helper()
	p, e := g.Authenticate(key)
	if e != nil {
		t.Fatalf("Authenticate: %v", e)
	}
	return p
}

// good is a valid request for every test key.
func good() Fields {
	return Fields{D: "PJSIP/6001", C: "confirmcode", E: "1234"}
}

func with(f Fields, mod func(*Fields)) Fields {
	mod(&f)
	return f
}
