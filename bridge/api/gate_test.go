package api

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/invokeari/invokeari/stasisapp"
)

func TestAuthenticate(t *testing.T) {
	g := newTestGate(t, testConfig())
	tests := []struct {
		key, name, code string
	}{
		{key: openKey, name: "open"},
		{key: helpdeskKey, name: "helpdesk"},
		{key: funcsKey, name: "funcs"},
		{key: "", code: CodeMissingAPIKey},
		{key: openKey + "x", code: CodeInvalidAPIKey},
		{key: openKey[:len(openKey)-1], code: CodeInvalidAPIKey},
		{key: strings.ToUpper(openKey), code: CodeInvalidAPIKey},
		{key: hashKey(openKey), code: CodeInvalidAPIKey}, // the hash is not the key
		{key: " " + openKey, code: CodeInvalidAPIKey},
	}
	for _, tt := range tests {
		p, e := g.Authenticate(tt.key)
		if tt.code != "" {
			if e == nil || e.Status != 401 || e.Code != tt.code {
				t.Errorf("Authenticate(%q) = %v, %v; want 401 %s", tt.key, p, e, tt.code)
			}
			if e != nil && tt.key != "" && strings.Contains(e.Message, tt.key) {
				t.Errorf("error message echoes the key: %q", e.Message)
			}
			continue
		}
		if e != nil || p.Name != tt.name {
			t.Errorf("Authenticate(%q) = %v, %v; want %s", tt.key, p, e, tt.name)
		}
	}
}

// TestBuildRules has a good and a bad value for every field rule and every policy rule.
func TestBuildRules(t *testing.T) {
	g := newTestGate(t, testConfig())
	type want struct {
		status      int
		code, field string
	}
	ok := want{}
	bad := func(field string) want { return want{400, CodeInvalidField, field} }
	missing := func(field string) want { return want{400, CodeMissingField, field} }
	deny := func(code, field string) want { return want{403, code, field} }
	tests := []struct {
		name string
		key  string
		f    Fields
		want want
	}{
		{"good", helpdeskKey, good(), ok},
		// d
		{"d missing", openKey, with(good(), func(f *Fields) { f.D = "" }), missing("d")},
		{"d local", openKey, with(good(), func(f *Fields) { f.D = "Local/100@from-internal/n" }), ok},
		{"d sip uri", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/trunk/sip:0115@[::1]:5060;transport=tcp" }), ok},
		{"d no slash", openKey, with(good(), func(f *Fields) { f.D = "6001" }), bad("d")},
		{"d empty resource", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/" }), bad("d")},
		{"d parallel", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/6001&PJSIP/6002" }), bad("d")},
		{"d unknown tech", openKey, with(good(), func(f *Fields) { f.D = "Evil/6001" }), bad("d")},
		{"d too long", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/" + strings.Repeat("6", 251) }), bad("d")},
		{"d 256 ok", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/" + strings.Repeat("6", 250) }), ok},
		{"d space", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/60 01" }), bad("d")},
		{"d expression", openKey, with(good(), func(f *Fields) { f.D = "PJSIP/${EXTEN}" }), bad("d")},
		// c
		{"c missing", openKey, with(good(), func(f *Fields) { f.C = "" }), missing("c")},
		{"c bad char", openKey, with(good(), func(f *Fields) { f.C = "from.internal" }), bad("c")},
		{"c 80 ok", openKey, with(good(), func(f *Fields) { f.C = strings.Repeat("c", 80) }), ok},
		{"c 81", openKey, with(good(), func(f *Fields) { f.C = strings.Repeat("c", 81) }), bad("c")},
		// e
		{"e missing", openKey, with(good(), func(f *Fields) { f.E = "" }), missing("e")},
		{"e specials", openKey, with(good(), func(f *Fields) { f.E = "+*#_.!-1s" }), ok},
		{"e space", openKey, with(good(), func(f *Fields) { f.E = "12 34" }), bad("e")},
		{"e at", openKey, with(good(), func(f *Fields) { f.E = "1@ctx" }), bad("e")},
		{"e 81", openKey, with(good(), func(f *Fields) { f.E = strings.Repeat("1", 81) }), bad("e")},
		// t
		{"t 1", openKey, with(good(), func(f *Fields) { f.T = "1" }), ok},
		{"t 600", openKey, with(good(), func(f *Fields) { f.T = "600" }), ok},
		{"t 0", openKey, with(good(), func(f *Fields) { f.T = "0" }), bad("t")},
		{"t 601", openKey, with(good(), func(f *Fields) { f.T = "601" }), bad("t")},
		{"t float", openKey, with(good(), func(f *Fields) { f.T = "2.5" }), bad("t")},
		{"t word", openKey, with(good(), func(f *Fields) { f.T = "ten" }), bad("t")},
		{"t negative", openKey, with(good(), func(f *Fields) { f.T = "-5" }), bad("t")},
		{"t over key max", helpdeskKey, with(good(), func(f *Fields) { f.T = "61" }), deny(CodeTimeoutDenied, "t")},
		{"t at key max", helpdeskKey, with(good(), func(f *Fields) { f.T = "60" }), ok},
		// i
		{"i good", openKey, with(good(), func(f *Fields) { f.I = `"Desk" <6000>` }), ok},
		{"i bad", openKey, with(good(), func(f *Fields) { f.I = `"Desk" <6000` }), bad("i")},
		{"i newline", openKey, with(good(), func(f *Fields) { f.I = "6000\n" }), bad("i")},
		// v
		{"v allowed", helpdeskKey, with(good(), func(f *Fields) { f.V = "CONFCODE=1234,TICKET_9=x" }), ok},
		{"v not allowed", helpdeskKey, with(good(), func(f *Fields) { f.V = "OTHER=1" }), deny(CodeVariableDenied, "v")},
		{"v inherit prefix not allowed", helpdeskKey, with(good(), func(f *Fields) { f.V = "__CONFCODE=1" }), deny(CodeVariableDenied, "v")},
		{"v syntax", openKey, with(good(), func(f *Fields) { f.V = "1X=1" }), bad("v")},
		{"v function refused", openKey, with(good(), func(f *Fields) { f.V = "CALLERID(name)=x" }), deny(CodeVariableDenied, "v")},
		{"v function allowed", funcsKey, with(good(), func(f *Fields) { f.V = "CALLERID(name)=x" }), ok},
		// wait
		{"wait accepted", openKey, with(good(), func(f *Fields) { f.Wait = "accepted" }), ok},
		{"wait end", openKey, with(good(), func(f *Fields) { f.Wait = "end" }), ok},
		{"wait bad", openKey, with(good(), func(f *Fields) { f.Wait = "ANSWER" }), bad("wait")},
		// id
		{"id good", openKey, with(good(), func(f *Fields) { f.ID = "call_2026-01" }), ok},
		{"id 64", openKey, with(good(), func(f *Fields) { f.ID = strings.Repeat("a", 64) }), ok},
		{"id 65", openKey, with(good(), func(f *Fields) { f.ID = strings.Repeat("a", 65) }), bad("id")},
		{"id dot", openKey, with(good(), func(f *Fields) { f.ID = "a.b" }), bad("id")},
		{"id slash", openKey, with(good(), func(f *Fields) { f.ID = "../x" }), bad("id")},
		// destinations policy
		{"dest allowed", helpdeskKey, with(good(), func(f *Fields) { f.D = "PJSIP/6123" }), ok},
		{"dest not in allow", helpdeskKey, with(good(), func(f *Fields) { f.D = "PJSIP/7001" }), deny(CodeDestinationDenied, "d")},
		{"dest deny wins", helpdeskKey, with(good(), func(f *Fields) { f.D = "PJSIP/6601" }), deny(CodeDestinationDenied, "d")},
		{"dest deny case trick", helpdeskKey, with(good(), func(f *Fields) { f.D = "pjsip/6601" }), deny(CodeDestinationDenied, "d")},
		{"dest local allowed", helpdeskKey, with(good(), func(f *Fields) { f.D = "Local/100@from-internal" }), ok},
		{"dest local other ctx", helpdeskKey, with(good(), func(f *Fields) { f.D = "Local/100@secret" }), deny(CodeDestinationDenied, "d")},
		// contexts policy
		{"context allowed", helpdeskKey, with(good(), func(f *Fields) { f.C = "from-internal" }), ok},
		{"context denied", helpdeskKey, with(good(), func(f *Fields) { f.C = "admin" }), deny(CodeContextDenied, "c")},
		// servers
		{"ari by name", openKey, with(good(), func(f *Fields) { f.Ari = "pbx2" }), ok},
		{"ari by url", openKey, with(good(), func(f *Fields) { f.Ari = "http://127.0.0.1:9088/ari" }), ok},
		{"ari by url case/slash", openKey, with(good(), func(f *Fields) { f.Ari = "HTTP://127.0.0.1:8088/ari/" }), ok},
		{"ari unknown name", openKey, with(good(), func(f *Fields) { f.Ari = "pbx9" }), want{400, CodeUnknownServer, "ari"}},
		{"ari unknown url (ssrf)", openKey, with(good(), func(f *Fields) { f.Ari = "http://169.254.169.254/latest" }), deny(CodeServerDenied, "ari")},
		{"ari url with creds", openKey, with(good(), func(f *Fields) { f.Ari = "http://u:p@127.0.0.1:8088/ari" }), deny(CodeServerDenied, "ari")},
		{"ari not for key", helpdeskKey, with(good(), func(f *Fields) { f.Ari = "pbx2" }), deny(CodeServerDenied, "ari")},
		// ARI credentials
		{"creds match", openKey, with(good(), func(f *Fields) { f.AriUser, f.AriPass = "invokeari", pbx1Pass }), ok},
		{"pass only", openKey, with(good(), func(f *Fields) { f.AriPass = pbx1Pass }), ok},
		{"wrong pass", openKey, with(good(), func(f *Fields) { f.AriUser, f.AriPass = "invokeari", pbx1Pass+"x" }), deny(CodeBadARICredentials, "aripass")},
		{"wrong user", openKey, with(good(), func(f *Fields) { f.AriUser, f.AriPass = "root", pbx1Pass }), deny(CodeBadARICredentials, "aripass")},
		{"other server's pass", openKey, with(good(), func(f *Fields) { f.AriPass = pbx2Pass }), deny(CodeBadARICredentials, "aripass")},
		{"pass for pbx2", openKey, with(good(), func(f *Fields) { f.Ari, f.AriUser, f.AriPass = "pbx2", "other", pbx2Pass }), ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := principal(t, g, tt.key)
			req, e := g.Build(p, tt.f)
			var got want
			if e != nil {
				got = want{e.Status, e.Code, e.Field}
				for _, secret := range []string{pbx1Pass, pbx2Pass, openKey, helpdeskKey, funcsKey} {
					if strings.Contains(e.Message, secret) || strings.Contains(e.Error(), secret) {
						t.Errorf("error leaks a secret: %v", e)
					}
				}
			}
			if got != tt.want {
				t.Fatalf("Build = %+v, %v; want %+v", req, e, tt.want)
			}
		})
	}
}

func TestBuildResult(t *testing.T) {
	g := newTestGate(t, testConfig())
	tests := []struct {
		name string
		key  string
		f    Fields
		want stasisapp.Request
	}{
		{"defaults", openKey, good(), stasisapp.Request{Server: "pbx1", Endpoint: "PJSIP/6001", Context: "confirmcode",
			Extension: "1234", Timeout: 30 * time.Second, Wait: stasisapp.WaitAnswer, Key: "open"}},
		{"everything", helpdeskKey, Fields{D: "pjsip/6001", C: "from-internal", E: "s", T: "45", I: `Desk <6000>`,
			V: `CONFCODE=1\,2`, Ari: "pbx1", Wait: "end", ID: "my-id"},
			stasisapp.Request{ID: "my-id", Server: "pbx1", Endpoint: "PJSIP/6001", Context: "from-internal", Extension: "s",
				Timeout: 45 * time.Second, CallerID: `"Desk" <6000>`, Variables: map[string]string{"CONFCODE": "1,2"},
				Wait: stasisapp.WaitEnd, Key: "helpdesk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := g.Build(principal(t, g, tt.key), tt.f)
			if e != nil {
				t.Fatal(e)
			}
			if tt.want.ID == "" {
				if !reID.MatchString(got.ID) || len(got.ID) != 32 {
					t.Errorf("generated id %q is not 32 hex digits", got.ID)
				}
				tt.want.ID, tt.want.FreshID = got.ID, true
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Build =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestBuildDefaultTimeoutClampedToKeyMax(t *testing.T) {
	cfg := testConfig()
	cfg.Defaults.Timeout = 120 * time.Second
	g := newTestGate(t, cfg)
	got, e := g.Build(principal(t, g, helpdeskKey), good())
	if e != nil {
		t.Fatal(e)
	}
	if want := 60 * time.Second; got.Timeout != want {
		t.Errorf("Timeout = %v, want the key's max %v", got.Timeout, want)
	}
}

func TestBuildServerSelection(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*Config)
		key      string
		want     string
		wantCode string
	}{
		{"defaults.server", func(*Config) {}, openKey, "pbx1", ""},
		{"key first server", func(c *Config) { c.Defaults.Server = ""; c.Keys[1].Servers = []string{"pbx2", "pbx1"} }, helpdeskKey, "pbx2", ""},
		{"default not allowed for key", func(c *Config) { c.Defaults.Server = "pbx2" }, helpdeskKey, "pbx1", ""},
		{"no default, two servers", func(c *Config) { c.Defaults.Server = "" }, openKey, "", CodeMissingField},
		{"single server", func(c *Config) { c.Defaults.Server = ""; c.Servers = c.Servers[:1] }, openKey, "pbx1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mod(&cfg)
			g := newTestGate(t, cfg)
			req, e := g.Build(principal(t, g, tt.key), good())
			if tt.wantCode != "" {
				if e == nil || e.Code != tt.wantCode || e.Field != "ari" {
					t.Fatalf("Build = %v, want %s on ari", e, tt.wantCode)
				}
				return
			}
			if e != nil || req.Server != tt.want {
				t.Fatalf("Build server = %q, %v; want %q", req.Server, e, tt.want)
			}
		})
	}
}

func TestNewIDUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if len(id) != 32 || !reID.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q (dup=%v)", id, seen[id])
		}
		seen[id] = true
	}
}

func TestBuildLocalContextPolicy(t *testing.T) {
	cfg := testConfig()
	cfg.Keys[1].Destinations = Patterns{} // only the contexts rule applies
	g := newTestGate(t, cfg)
	p := principal(t, g, helpdeskKey)
	tests := []struct {
		d    string
		code string
	}{
		{"Local/100@from-internal", ""},
		{"LOCAL/100@from-internal/n", ""},
		{"Local/100@secret", CodeContextDenied},
		{"Local/100@secret/n", CodeContextDenied},
		{"Local/100", CodeContextDenied}, // the "default" context
		{"PJSIP/100@secret", ""},         // not a Local channel: @ is a PJSIP AOR/host
	}
	for _, tt := range tests {
		_, e := g.Build(p, with(good(), func(f *Fields) { f.D = tt.d }))
		var got string
		if e != nil {
			got = e.Code
			if e.Field != "d" {
				t.Errorf("%s: field %q, want d", tt.d, e.Field)
			}
		}
		if got != tt.code {
			t.Errorf("Build(d=%s) = %v, want %q", tt.d, e, tt.code)
		}
	}
}
