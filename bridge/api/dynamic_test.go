package api

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/stasisapp"
)

const dynPass = "dyn-secret-pass-42"

func dynConfig(enabled bool, allow ...string) Config {
	cfg := testConfig()
	cfg.DynamicServers = DynamicServers{Enabled: enabled, Allow: allow, IdleTimeout: time.Minute}
	return cfg
}

// TestDynamicServers covers every rule of the opt-in dynamic_servers gate.
func TestDynamicServers(t *testing.T) {
	narrow := dynConfig(true, "127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32", "PBX.example.com")
	broad := dynConfig(true, "0.0.0.0/0", "::/0")
	linkLocal := dynConfig(true, "169.254.0.0/16")
	metadata := dynConfig(true, "169.254.169.254/32", "fd00:ec2::254", "100.100.100.200")
	loop6 := dynConfig(true, "::1")
	off := dynConfig(false, "127.0.0.1/32")
	const denied = CodeServerDenied

	tests := []struct {
		name     string
		cfg      Config
		key      string
		ari      string
		user     string
		pass     string
		status   int
		code     string
		field    string
		wantURL  string // normalised dynamic URL when accepted
		wantConf string // configured server when accepted as one
	}{
		{name: "disabled", cfg: off, ari: "http://127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "zero config is disabled", cfg: testConfig(), ari: "http://127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "allowed loopback listed exactly", cfg: narrow, ari: "http://127.0.0.1:8090/ari", wantURL: "http://127.0.0.1:8090/ari"},
		{name: "trailing slash", cfg: narrow, ari: "http://127.0.0.1:8090/ari/", wantURL: "http://127.0.0.1:8090/ari"},
		{name: "in allowed CIDR", cfg: narrow, ari: "https://10.1.2.3/ari", wantURL: "https://10.1.2.3/ari"},
		{name: "host name case-insensitive", cfg: narrow, ari: "HTTP://Pbx.Example.Com:8088/ari", wantURL: "http://pbx.example.com:8088/ari"},
		{name: "ipv6 in allowed CIDR", cfg: narrow, ari: "http://[2001:db8::1]:8088/ari", wantURL: "http://[2001:db8::1]:8088/ari"},
		{name: "ipv4-mapped ipv6 of allowed", cfg: narrow, ari: "http://[::ffff:127.0.0.1]:8088/ari", wantURL: "http://[::ffff:127.0.0.1]:8088/ari"},
		{name: "configured URL stays configured", cfg: narrow, ari: "http://127.0.0.1:8088/ari", wantConf: "pbx1"},
		{name: "other loopback not listed", cfg: narrow, ari: "http://127.0.0.2:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "ip outside allow", cfg: narrow, ari: "http://11.0.0.1/ari", status: 403, code: denied, field: "ari"},
		{name: "ipv6 loopback not listed", cfg: narrow, ari: "http://[::1]:8088/ari", status: 403, code: denied, field: "ari"},
		{name: "subdomain of allowed host", cfg: narrow, ari: "http://evil.pbx.example.com/ari", status: 403, code: denied, field: "ari"},
		{name: "allowed host as prefix", cfg: narrow, ari: "http://pbx.example.com.evil.net/ari", status: 403, code: denied, field: "ari"},
		{name: "allowed host with trailing dot", cfg: narrow, ari: "http://pbx.example.com./ari", status: 403, code: denied, field: "ari"},
		{name: "localhost by name", cfg: narrow, ari: "http://localhost:8088/ari", status: 403, code: denied, field: "ari"},
		{name: "decimal ip host", cfg: narrow, ari: "http://2130706433/ari", status: 403, code: denied, field: "ari"},
		{name: "hex ip host", cfg: narrow, ari: "http://0x7f000001/ari", status: 403, code: denied, field: "ari"},
		{name: "short ip host", cfg: narrow, ari: "http://127.1/ari", status: 403, code: denied, field: "ari"},
		{name: "octal ip host", cfg: narrow, ari: "http://0177.0.0.1/ari", status: 403, code: denied, field: "ari"},
		{name: "zoned ipv6", cfg: dynConfig(true, "fe80::/10"), ari: "http://[fe80::1%25eth0]/ari", status: 403, code: denied, field: "ari"},
		{name: "scheme ftp", cfg: narrow, ari: "ftp://127.0.0.1/ari", status: 403, code: denied, field: "ari"},
		{name: "scheme ws", cfg: narrow, ari: "ws://127.0.0.1/ari", status: 403, code: denied, field: "ari"},
		{name: "userinfo", cfg: narrow, ari: "http://u:p@127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "empty userinfo", cfg: narrow, ari: "http://@127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "userinfo smuggling host", cfg: narrow, ari: "http://127.0.0.1:8090@evil.com/ari", status: 403, code: denied, field: "ari"},
		{name: "query", cfg: narrow, ari: "http://127.0.0.1:8090/ari?x=1", status: 403, code: denied, field: "ari"},
		{name: "empty query", cfg: narrow, ari: "http://127.0.0.1:8090/ari?", status: 403, code: denied, field: "ari"},
		{name: "fragment", cfg: narrow, ari: "http://127.0.0.1:8090/ari#x", status: 403, code: denied, field: "ari"},
		{name: "other path", cfg: narrow, ari: "http://127.0.0.1:8090/api", status: 403, code: denied, field: "ari"},
		{name: "longer path", cfg: narrow, ari: "http://127.0.0.1:8090/ari/channels", status: 403, code: denied, field: "ari"},
		{name: "no path", cfg: narrow, ari: "http://127.0.0.1:8090", status: 403, code: denied, field: "ari"},
		{name: "escaped path", cfg: narrow, ari: "http://127.0.0.1:8090/%61ri", status: 403, code: denied, field: "ari"},
		{name: "port zero", cfg: narrow, ari: "http://127.0.0.1:0/ari", status: 403, code: denied, field: "ari"},
		{name: "port too big", cfg: narrow, ari: "http://127.0.0.1:70000/ari", status: 403, code: denied, field: "ari"},
		{name: "port leading zero", cfg: narrow, ari: "http://127.0.0.1:08088/ari", status: 403, code: denied, field: "ari"},
		{name: "empty port", cfg: narrow, ari: "http://127.0.0.1:/ari", status: 403, code: denied, field: "ari"},
		{name: "missing ariuser", cfg: narrow, ari: "http://127.0.0.1:8090/ari", user: "-", status: 400, code: CodeMissingField, field: "ariuser"},
		{name: "missing aripass", cfg: narrow, ari: "http://127.0.0.1:8090/ari", pass: "-", status: 400, code: CodeMissingField, field: "aripass"},
		{name: "key limited to servers", cfg: narrow, key: helpdeskKey, ari: "http://127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: public ok", cfg: broad, ari: "http://8.8.8.8:8088/ari", wantURL: "http://8.8.8.8:8088/ari"},
		{name: "broad allow: loopback", cfg: broad, ari: "http://127.0.0.1:8090/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: ipv6 loopback", cfg: broad, ari: "http://[::1]/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: link-local", cfg: broad, ari: "http://169.254.10.10/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: ipv6 link-local", cfg: broad, ari: "http://[fe80::1]/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: metadata", cfg: broad, ari: "http://169.254.169.254/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: aws v6 metadata", cfg: broad, ari: "http://[fd00:ec2::254]/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: alibaba metadata", cfg: broad, ari: "http://100.100.100.200/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: unspecified", cfg: broad, ari: "http://0.0.0.0:8088/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: ipv6 unspecified", cfg: broad, ari: "http://[::]:8088/ari", status: 403, code: denied, field: "ari"},
		{name: "broad allow: mapped loopback", cfg: broad, ari: "http://[::ffff:127.0.0.1]/ari", status: 403, code: denied, field: "ari"},
		{name: "link-local listed", cfg: linkLocal, ari: "http://169.254.1.1/ari", wantURL: "http://169.254.1.1/ari"},
		{name: "link-local listed, metadata not", cfg: linkLocal, ari: "http://169.254.169.254/ari", status: 403, code: denied, field: "ari"},
		{name: "metadata listed exactly", cfg: metadata, ari: "http://169.254.169.254/ari", wantURL: "http://169.254.169.254/ari"},
		{name: "v6 metadata listed exactly", cfg: metadata, ari: "http://[fd00:ec2::254]/ari", wantURL: "http://[fd00:ec2::254]/ari"},
		{name: "alibaba metadata listed exactly", cfg: metadata, ari: "http://100.100.100.200/ari", wantURL: "http://100.100.100.200/ari"},
		{name: "ipv6 loopback listed", cfg: loop6, ari: "http://[::1]:8088/ari", wantURL: "http://[::1]:8088/ari"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGate(t, tt.cfg)
			key := tt.key
			if key == "" {
				key = openKey
			}
			user, pass := "dynuser", dynPass
			if tt.user == "-" {
				user = ""
			}
			if tt.pass == "-" {
				pass = ""
			}
			if tt.wantConf != "" {
				user, pass = "", "" // a configured server needs none
			}
			f := with(good(), func(f *Fields) { f.Ari, f.AriUser, f.AriPass = tt.ari, user, pass })
			req, e := g.Build(principal(t, g, key), f)
			if tt.status != 0 {
				if e == nil || e.Status != tt.status || e.Code != tt.code || e.Field != tt.field {
					t.Fatalf("Build(ari=%q) = %+v, %v; want %d %s field %s", tt.ari, req.Dynamic, e, tt.status, tt.code, tt.field)
				}
				if strings.Contains(e.Message, dynPass) {
					t.Errorf("error echoes aripass: %q", e.Message)
				}
				return
			}
			if e != nil {
				t.Fatalf("Build(ari=%q): %v", tt.ari, e)
			}
			if tt.wantConf != "" {
				if req.Server != tt.wantConf || req.Dynamic != nil {
					t.Fatalf("got server %q dynamic %v; want configured %s", req.Server, req.Dynamic, tt.wantConf)
				}
				return
			}
			got, want := req.Dynamic, stasisapp.DynamicServer{URL: tt.wantURL, Username: user, Password: pass}
			if got == nil || *got != want {
				t.Fatalf("Dynamic = %v; want %v", got, want)
			}
			if req.Server != stasisapp.DynamicServerName(tt.wantURL) || !stasisapp.IsDynamicName(req.Server) {
				t.Errorf("Server = %q; want %q", req.Server, stasisapp.DynamicServerName(tt.wantURL))
			}
			// The persisted and published forms carry no credentials.
			b, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			eb, _ := json.Marshal(req.EventRequest())
			for _, s := range []string{string(b), string(eb), got.String()} {
				if strings.Contains(s, dynPass) || strings.Contains(s, "aripass") {
					t.Errorf("credentials leak: %s", s)
				}
			}
			release, ae := g.Admit(principal(t, g, key), req.Server)
			if ae != nil {
				t.Fatalf("Admit(%s): %v", req.Server, ae)
			}
			release()
		})
	}
}

func TestDynamicAdmitDisabled(t *testing.T) {
	g := newTestGate(t, testConfig())
	name := stasisapp.DynamicServerName("http://127.0.0.1:8090/ari")
	if _, e := g.Admit(principal(t, g, openKey), name); e == nil || e.Code != CodeUnknownServer {
		t.Fatalf("Admit(%s) with dynamic servers off = %v; want %s", name, e, CodeUnknownServer)
	}
}

func TestDynamicDialAllowed(t *testing.T) {
	tests := []struct {
		allow []string
		ip    string
		want  bool
	}{
		{[]string{"pbx.example.com"}, "203.0.113.5", true},
		{[]string{"pbx.example.com"}, "127.0.0.1", false},
		{[]string{"pbx.example.com"}, "169.254.169.254", false},
		{[]string{"pbx.example.com"}, "::1", false},
		{[]string{"pbx.example.com"}, "::ffff:127.0.0.1", false},
		{[]string{"0.0.0.0/0"}, "127.0.0.1", false},
		{[]string{"127.0.0.1/32"}, "127.0.0.1", true},
		{[]string{"127.0.0.1/32"}, "127.0.0.2", false},
		{[]string{"169.254.0.0/16"}, "169.254.169.254", false},
		{[]string{"169.254.169.254"}, "169.254.169.254", true},
	}
	for _, tt := range tests {
		p, err := NewDynamicPolicy(DynamicServers{Enabled: true, Allow: tt.allow})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.DialAllowed(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("allow %v: DialAllowed(%s) = %v; want %v", tt.allow, tt.ip, got, tt.want)
		}
	}
	var disabled DynamicPolicy
	if disabled.DialAllowed(netip.MustParseAddr("8.8.8.8")) {
		t.Error("a disabled policy allows dialling")
	}
}

func TestDynamicConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*Config)
		field string // "" = valid
	}{
		{"off by default", func(*Config) {}, ""},
		{"valid", func(c *Config) {
			c.DynamicServers = DynamicServers{Enabled: true, Allow: []string{"10.0.0.0/8", "::1", "pbx-1.example.com"}, IdleTimeout: time.Minute}
		}, ""},
		{"host bits set", func(c *Config) { c.DynamicServers.Allow = []string{"10.0.0.1/8"} }, "dynamic_servers.allow[0]"},
		{"not a host", func(c *Config) { c.DynamicServers.Allow = []string{"ok.example", "bad host"} }, "dynamic_servers.allow[1]"},
		{"numeric host", func(c *Config) { c.DynamicServers.Allow = []string{"127.1"} }, "dynamic_servers.allow[0]"},
		{"wildcard host", func(c *Config) { c.DynamicServers.Allow = []string{"*.example.com"} }, "dynamic_servers.allow[0]"},
		{"zoned ip", func(c *Config) { c.DynamicServers.Allow = []string{"fe80::1%eth0"} }, "dynamic_servers.allow[0]"},
		{"enabled without allow", func(c *Config) { c.DynamicServers.Enabled = true }, "dynamic_servers.allow"},
		{"negative idle", func(c *Config) { c.DynamicServers.IdleTimeout = -time.Second }, "dynamic_servers.idle_timeout"},
		{"reserved server name", func(c *Config) { c.Servers[1].Name = stasisapp.DynamicServerName("x") }, "servers[1].name"},
	}
	for _, tt := range tests {
		cfg := testConfig()
		tt.mod(&cfg)
		err := cfg.Validate()
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: Validate() = %v; want nil", tt.name, err)
		case tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field+":")):
			t.Errorf("%s: Validate() = %v; want an error on %s", tt.name, err, tt.field)
		}
	}
}

func TestDynamicCredentialsErrorMaps(t *testing.T) {
	e := FromOriginateError(stasisapp.ErrDynamicCredentials)
	if e == nil || e.Status != 403 || e.Code != CodeBadARICredentials || e.Field != "aripass" {
		t.Fatalf("FromOriginateError(ErrDynamicCredentials) = %v; want 403 %s aripass", e, CodeBadARICredentials)
	}
}
