package api

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/invokeari/invokeari/stasisapp"
)

// process is what a door does with a body: decode, authenticate, build.
func process(g *Gate, key, ct string, body []byte) (stasisapp.Request, *Error) {
	f, e := DecodeBody(ct, body)
	if e != nil {
		return stasisapp.Request{}, e
	}
	p, e := g.Authenticate(key)
	if e != nil {
		return stasisapp.Request{}, e
	}
	return g.Build(p, f)
}

const (
	ctForm = "application/x-www-form-urlencoded"
	ctJSON = "application/json"
)

// formOf is a valid form body with some fields replaced (raw values, form-encoded here).
func formOf(kv ...string) string {
	v := url.Values{"d": {"PJSIP/6001"}, "c": {"confirmcode"}, "e": {"1234"}}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "\x00DEL" {
			v.Del(kv[i])
			continue
		}
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

func TestHostileRequests(t *testing.T) {
	g := newTestGate(t, testConfig())
	manyVars := make([]string, 10000)
	for i := range manyVars {
		manyVars[i] = "V" + strconv.Itoa(i) + "=1"
	}
	tests := []struct {
		name   string
		key    string // "" = openKey
		ct     string
		body   string
		status int
		code   string
		field  string
	}{
		// transport-level
		{name: "text/plain", ct: "text/plain", body: formOf(), status: 415, code: CodeUnsupportedMediaType},
		{name: "xml", ct: "application/xml", body: "<d>PJSIP/6001</d>", status: 415, code: CodeUnsupportedMediaType},
		{name: "empty ct", ct: "", body: formOf(), status: 415, code: CodeUnsupportedMediaType},
		{name: "utf16 charset", ct: ctJSON + "; charset=utf-16", body: `{}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "ct with newline", ct: "application/json\r\nX-Evil: 1", body: `{}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "missing key", key: "-", ct: ctForm, body: formOf(), status: 401, code: CodeMissingAPIKey},
		{name: "wrong key", key: "nope", ct: ctForm, body: formOf(), status: 401, code: CodeInvalidAPIKey},
		{name: "empty form", ct: ctForm, body: "", status: 400, code: CodeMissingField, field: "d"},
		{name: "binary garbage form", ct: ctForm, body: "\x00\x01\x02\xff", status: 400, code: CodeMissingField, field: "d"},
		{name: "form invalid utf8 d", ct: ctForm, body: "d=PJSIP%2F%C3%28&c=x&e=1", status: 400, code: CodeInvalidEncoding, field: "d"},
		{name: "json invalid utf8", ct: ctJSON, body: "{\"d\":\"PJSIP/\xc3\x28\"}", status: 400, code: CodeInvalidEncoding},
		{name: "form bad percent", ct: ctForm, body: "d=%G1", status: 400, code: CodeInvalidBody, field: "d"},
		{name: "json deep nesting", ct: ctJSON, body: `{"d":` + strings.Repeat("[", 10000), status: 400, code: CodeInvalidType, field: "d"},
		{name: "json unknown nested", ct: ctJSON, body: `{"x":` + strings.Repeat("[", 10000), status: 400, code: CodeUnknownField, field: "x"},
		{name: "json top-level string", ct: ctJSON, body: `"d=PJSIP/6001"`, status: 400, code: CodeInvalidBody},
		{name: "json BOM", ct: ctJSON, body: "\ufeff{}", status: 400, code: CodeInvalidBody},
		// duplicates
		{name: "dup d form", ct: ctForm, body: formOf() + "&d=PJSIP%2F7001", status: 400, code: CodeDuplicateField, field: "d"},
		{name: "dup c json", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"a","c":"b","e":"1"}`, status: 400, code: CodeDuplicateField, field: "c"},
		{name: "dup aripass form", ct: ctForm, body: formOf("aripass", "x") + "&aripass=y", status: 400, code: CodeDuplicateField, field: "aripass"},
		{name: "php array d", ct: ctForm, body: formOf("d", "\x00DEL") + "&d[]=PJSIP%2F1&d[]=PJSIP%2F2", status: 400, code: CodeMissingField, field: "d"},
		// JSON type confusion
		{name: "t float json", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"x","e":"1","t":30.0}`, status: 400, code: CodeInvalidType, field: "t"},
		{name: "t huge json int", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"x","e":"1","t":99999999999999999999}`, status: 400, code: CodeInvalidField, field: "t"},
		{name: "t negative json", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"x","e":"1","t":-1}`, status: 400, code: CodeInvalidField, field: "t"},
		{name: "t bool", ct: ctJSON, body: `{"t":true}`, status: 400, code: CodeInvalidType, field: "t"},
		{name: "e number", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"x","e":1234}`, status: 400, code: CodeInvalidType, field: "e"},
		{name: "v object", ct: ctJSON, body: `{"v":{"A":"1"}}`, status: 400, code: CodeInvalidType, field: "v"},
		{name: "id null", ct: ctJSON, body: `{"id":null}`, status: 400, code: CodeInvalidType, field: "id"},
		{name: "json unknown field", ct: ctJSON, body: `{"d":"PJSIP/6001","c":"x","e":"1","callerid":"1"}`, status: 400, code: CodeUnknownField, field: "callerid"},
		{name: "form unknown field ignored", ct: ctForm, body: formOf("callerid", "1", "X-API-Key", "k"), status: 200},
		// d
		{name: "d parallel dial", ct: ctForm, body: formOf("d", "PJSIP/6001&PJSIP/6002"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d newline", ct: ctForm, body: formOf("d", "PJSIP/6001\nChannel: x"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d CR", ct: ctForm, body: formOf("d", "PJSIP/6001\r"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d NUL", ct: ctForm, body: formOf("d", "PJSIP/6001\x00"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d json escaped NUL", ct: ctJSON, body: `{"d":"PJSIP/6001\u0000","c":"x","e":"1"}`, status: 400, code: CodeInvalidField, field: "d"},
		{name: "d unicode line sep", ct: ctForm, body: formOf("d", "PJSIP/6001\u2028"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d C1 control", ct: ctForm, body: formOf("d", "PJSIP/6001\u0085"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d oversized", ct: ctForm, body: formOf("d", "PJSIP/"+strings.Repeat("1", 60000)), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d comma options", ct: ctForm, body: formOf("d", "PJSIP/6001,30,tT"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d dialplan expr", ct: ctForm, body: formOf("d", "Local/${SHELL(id)}@x"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d no tech", ct: ctForm, body: formOf("d", "/6001"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d unknown tech", ct: ctForm, body: formOf("d", "Console/dsp"), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d quote", ct: ctForm, body: formOf("d", `PJSIP/"6001"`), status: 400, code: CodeInvalidField, field: "d"},
		{name: "d denied by case", key: helpdeskKey, ct: ctForm, body: formOf("d", "pjSIP/6601"), status: 403, code: CodeDestinationDenied, field: "d"},
		{name: "d deny via longer resource", key: helpdeskKey, ct: ctForm, body: formOf("d", "PJSIP/66/sip:1@x"), status: 403, code: CodeDestinationDenied, field: "d"},
		// c, e
		{name: "c injection", ct: ctForm, body: formOf("c", "default,s,1"), status: 400, code: CodeInvalidField, field: "c"},
		{name: "c newline", ct: ctForm, body: formOf("c", "a\nb"), status: 400, code: CodeInvalidField, field: "c"},
		{name: "c oversized", ct: ctForm, body: formOf("c", strings.Repeat("a", 5000)), status: 400, code: CodeInvalidField, field: "c"},
		{name: "e expression", ct: ctForm, body: formOf("e", "${EXTEN}"), status: 400, code: CodeInvalidField, field: "e"},
		{name: "e comma priority", ct: ctForm, body: formOf("e", "s,2"), status: 400, code: CodeInvalidField, field: "e"},
		{name: "e unicode digits", ct: ctForm, body: formOf("e", "١٢٣"), status: 400, code: CodeInvalidField, field: "e"},
		// t
		{name: "t not a number", ct: ctForm, body: formOf("t", "thirty"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t float", ct: ctForm, body: formOf("t", "30.5"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t zero", ct: ctForm, body: formOf("t", "0"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t 601", ct: ctForm, body: formOf("t", "601"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t plus sign", ct: ctForm, body: formOf("t", "+30"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t spaces", ct: ctForm, body: formOf("t", " 30"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t hex", ct: ctForm, body: formOf("t", "0x1e"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t overflow", ct: ctForm, body: formOf("t", "99999999999999999999"), status: 400, code: CodeInvalidField, field: "t"},
		{name: "t duration string", ct: ctForm, body: formOf("t", "30s"), status: 400, code: CodeInvalidField, field: "t"},
		// i
		{name: "i newline", ct: ctForm, body: formOf("i", "\"A\" <1>\nX: y"), status: 400, code: CodeInvalidField, field: "i"},
		{name: "i oversized", ct: ctForm, body: formOf("i", strings.Repeat("1", 200)), status: 400, code: CodeInvalidField, field: "i"},
		{name: "i unbalanced", ct: ctForm, body: formOf("i", `"A <1>`), status: 400, code: CodeInvalidField, field: "i"},
		{name: "i tab", ct: ctForm, body: formOf("i", "A\t<1>"), status: 400, code: CodeInvalidField, field: "i"},
		// v
		{name: "v newline in value", ct: ctForm, body: formOf("v", "A=1\nB=2"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v NUL in value", ct: ctForm, body: formOf("v", "A=\x00"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v 10k variables", ct: ctForm, body: formOf("v", strings.Join(manyVars, ",")), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v 33 variables", ct: ctForm, body: formOf("v", strings.Join(manyVars[:33], ",")), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v 32 variables", ct: ctForm, body: formOf("v", strings.Join(manyVars[:32], ",")), status: 200},
		{name: "v escaped commas", ct: ctForm, body: formOf("v", `A=1\,2\,3,B=x`), status: 200},
		{name: "v dup", ct: ctForm, body: formOf("v", "A=1,A=2"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v function", ct: ctForm, body: formOf("v", "SHELL(id)=1"), status: 403, code: CodeVariableDenied, field: "v"},
		{name: "v function with $", ct: ctForm, body: formOf("v", "CALLERID(${X})=1"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v expression name", ct: ctForm, body: formOf("v", "${A}=1"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v empty pair", ct: ctForm, body: formOf("v", "A=1,,B=2"), status: 400, code: CodeInvalidField, field: "v"},
		{name: "v not allowed", key: helpdeskKey, ct: ctForm, body: formOf("v", "CONFCODE=1,SECRET=2"), status: 403, code: CodeVariableDenied, field: "v"},
		// ari (SSRF)
		{name: "ari metadata url", ct: ctForm, body: formOf("ari", "http://169.254.169.254/"), status: 403, code: CodeServerDenied, field: "ari"},
		{name: "ari file url", ct: ctForm, body: formOf("ari", "file:///etc/passwd"), status: 403, code: CodeServerDenied, field: "ari"},
		{name: "ari localhost other port", ct: ctForm, body: formOf("ari", "http://127.0.0.1:22/ari"), status: 403, code: CodeServerDenied, field: "ari"},
		{name: "ari url with userinfo", ct: ctForm, body: formOf("ari", "http://evil@127.0.0.1:8088/ari"), status: 403, code: CodeServerDenied, field: "ari"},
		{name: "ari url with query", ct: ctForm, body: formOf("ari", "http://127.0.0.1:8088/ari?x=1"), status: 403, code: CodeServerDenied, field: "ari"},
		{name: "ari unknown name", ct: ctForm, body: formOf("ari", "localhost"), status: 400, code: CodeUnknownServer, field: "ari"},
		{name: "ari newline", ct: ctForm, body: formOf("ari", "pbx1\n"), status: 400, code: CodeInvalidField, field: "ari"},
		{name: "ari oversized", ct: ctForm, body: formOf("ari", "http://"+strings.Repeat("a", 1000)), status: 400, code: CodeInvalidField, field: "ari"},
		// credentials
		{name: "wrong aripass", ct: ctForm, body: formOf("ariuser", "invokeari", "aripass", "guess"), status: 403, code: CodeBadARICredentials, field: "aripass"},
		{name: "oversized aripass", ct: ctForm, body: formOf("aripass", strings.Repeat("p", 10000)), status: 400, code: CodeInvalidField, field: "aripass"},
		// wait, id
		{name: "wait unknown", ct: ctForm, body: formOf("wait", "forever"), status: 400, code: CodeInvalidField, field: "wait"},
		{name: "id too long", ct: ctForm, body: formOf("id", strings.Repeat("a", 150)), status: 400, code: CodeInvalidField, field: "id"},
		{name: "id path", ct: ctForm, body: formOf("id", "../../channels"), status: 400, code: CodeInvalidField, field: "id"},
		{name: "id unicode", ct: ctForm, body: formOf("id", "caf\u00e9"), status: 400, code: CodeInvalidField, field: "id"},
		{name: "id space", ct: ctForm, body: formOf("id", "a b"), status: 400, code: CodeInvalidField, field: "id"},
	}
	if len(tests) < 60 {
		t.Fatalf("hostile table has %d cases, want at least 60", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			switch key {
			case "":
				key = openKey
			case "-":
				key = ""
			}
			req, e := process(g, key, tt.ct, []byte(tt.body))
			if tt.status == 200 {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				assertClean(t, req)
				return
			}
			if e == nil {
				t.Fatalf("accepted %+v, want %d %s", req, tt.status, tt.code)
			}
			if e.Status != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Fatalf("got %d %s %q (%s), want %d %s %q", e.Status, e.Code, e.Field, e.Message, tt.status, tt.code, tt.field)
			}
			if len(e.Message) > 300 {
				t.Errorf("message is %d bytes; errors must not echo large input", len(e.Message))
			}
			if hasControl(e.Message) {
				t.Errorf("message holds a control character: %q", e.Message)
			}
		})
	}
}

// assertClean checks the invariants every accepted request keeps.
func assertClean(t *testing.T, r stasisapp.Request) {
	t.Helper()
	texts := []string{r.ID, r.Server, r.Endpoint, r.Context, r.Extension, r.CallerID, string(r.Wait), r.Key}
	for k, v := range r.Variables {
		texts = append(texts, k, v)
	}
	for _, s := range texts {
		if hasControl(s) {
			t.Errorf("control character survived in %q", s)
		}
	}
	if strings.Contains(r.Endpoint, "&") {
		t.Errorf("parallel dial survived: %q", r.Endpoint)
	}
	if r.Timeout < MinTimeoutSec*1e9 || r.Timeout > MaxTimeoutSec*1e9 {
		t.Errorf("timeout %v out of range", r.Timeout)
	}
	if !reID.MatchString(r.ID) {
		t.Errorf("bad id %q", r.ID)
	}
}
