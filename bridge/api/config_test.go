package api

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // substring naming the field; "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no servers", func(c *Config) { c.Servers = nil; c.Keys = nil; c.Defaults.Server = "" }, "servers: at least one"},
		{"bad server name", func(c *Config) { c.Servers[0].Name = "pbx 1" }, "servers[0].name"},
		{"dup server name", func(c *Config) { c.Servers[1].Name = "pbx1" }, "servers[1].name: duplicate"},
		{"bad url", func(c *Config) { c.Servers[0].URL = "ftp://x/ari" }, "servers[0].url"},
		{"url with creds", func(c *Config) { c.Servers[0].URL = "http://u:p@x/ari" }, "servers[0].url"},
		{"dup url", func(c *Config) { c.Servers[1].URL = "HTTP://127.0.0.1:8088/ari/" }, "servers[1].url: same URL"},
		{"neg cps", func(c *Config) { c.Servers[0].CPS = -1 }, "servers[0].cps"},
		{"bad sha", func(c *Config) { c.Keys[1].SHA256 = "abc" }, "keys[1].sha256: not 64 hex digits"},
		{"non-hex sha", func(c *Config) { c.Keys[1].SHA256 = strings.Repeat("z", 64) }, "keys[1].sha256"},
		{"dup sha", func(c *Config) { c.Keys[1].SHA256 = c.Keys[0].SHA256 }, "keys[1].sha256: same key"},
		{"dup key name", func(c *Config) { c.Keys[1].Name = "open" }, "keys[1].name"},
		{"unknown key server", func(c *Config) { c.Keys[1].Servers = []string{"pbx9"} }, "keys[1].servers[0]"},
		{"bad allow glob", func(c *Config) { c.Keys[1].Destinations.Allow = []string{"PJSIP/[6"} }, "keys[1].destinations.allow[0]"},
		{"bad deny glob", func(c *Config) { c.Keys[1].Destinations.Deny = []string{""} }, "keys[1].destinations.deny[0]"},
		{"bad context", func(c *Config) { c.Keys[1].Contexts = []string{"a b"} }, "keys[1].contexts[0]"},
		{"bad var glob", func(c *Config) { c.Keys[1].Variables.Allow = []string{`X\`} }, "keys[1].variables.allow[0]"},
		{"max_timeout big", func(c *Config) { c.Keys[1].MaxTimeout = 601 * time.Second }, "keys[1].max_timeout"},
		{"max_timeout frac", func(c *Config) { c.Keys[1].MaxTimeout = 1500 * time.Millisecond }, "keys[1].max_timeout"},
		{"bad rate", func(c *Config) { c.Keys[1].Rate = "5 per second" }, "keys[1].rate"},
		{"zero rate", func(c *Config) { c.Keys[1].Rate = "0/s" }, "keys[1].rate"},
		{"neg concurrent", func(c *Config) { c.Keys[1].MaxConcurrent = -1 }, "keys[1].max_concurrent"},
		{"default timeout", func(c *Config) { c.Defaults.Timeout = time.Hour }, "defaults.timeout"},
		{"default wait", func(c *Config) { c.Defaults.Wait = "ring" }, "defaults.wait"},
		{"default server", func(c *Config) { c.Defaults.Server = "pbx9" }, "defaults.server"},
		{"max in flight", func(c *Config) { c.MaxInFlight = -1 }, "max_in_flight"},
		{"technology", func(c *Config) { c.Technologies = []string{"PJ SIP"} }, "technologies[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it to contain %q", err, tt.want)
			}
			if _, gerr := NewGate(c); gerr == nil {
				t.Fatal("NewGate accepted an invalid config")
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
servers:
  - {name: pbx1, url: "http://127.0.0.1:8088/ari", username: invokeari, cps: 10}
keys:
  - name: helpdesk
    sha256: "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"
    servers: [pbx1]
    destinations: {allow: ["PJSIP/6*"], deny: ["PJSIP/66*"]}
    contexts: [confirmcode, from-internal]
    variables: {allow: ["CONFCODE", "TICKET_*"], functions: false}
    max_timeout: 60s
    rate: "5/s"
    max_concurrent: 10
defaults: {timeout: 30s, wait: answer, server: pbx1}
max_in_flight: 200
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	k := c.Keys[0]
	got := []any{c.Servers[0].CPS, k.Destinations.Deny[0], k.Variables.Allow[1], k.MaxTimeout, k.Rate, k.MaxConcurrent, c.Defaults.Timeout, c.MaxInFlight}
	want := []any{10.0, "PJSIP/66*", "TICKET_*", 60 * time.Second, "5/s", 10, 30 * time.Second, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in    string
		lim   float64
		burst int
		fail  bool
	}{
		{in: "5/s", lim: 5, burst: 5},
		{in: "300/m", lim: 5, burst: 5},
		{in: "1/m", lim: 1.0 / 60, burst: 1},
		{in: "0.5/s", lim: 0.5, burst: 1},
		{in: "10/h", lim: 10.0 / 3600, burst: 1},
		{in: "5", fail: true},
		{in: "5/d", fail: true},
		{in: "-5/s", fail: true},
		{in: "0/s", fail: true},
	}
	for _, tt := range tests {
		lim, burst, err := parseRate(tt.in)
		if tt.fail {
			if err == nil {
				t.Errorf("parseRate(%q): want error", tt.in)
			}
			continue
		}
		if err != nil || float64(lim) != tt.lim || burst != tt.burst {
			t.Errorf("parseRate(%q) = %v, %d, %v; want %v, %d", tt.in, lim, burst, err, tt.lim, tt.burst)
		}
	}
}
