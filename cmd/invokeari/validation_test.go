package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestBadRequestsNeverReachAsterisk sends one bad value per rule of SPEC §2 (and hostile
// variations) over real HTTP; each gets its status and error field in the envelope, and
// the simulator receives no request at all.
func TestBadRequestsNeverReachAsterisk(t *testing.T) {
	e := startEnv(t, "")
	before := len(e.sim.Requests())
	good := func() url.Values {
		return url.Values{"d": {"PJSIP/answer"}, "c": {"confirmcode"}, "e": {"s"}}
	}
	with := func(k, v string) url.Values {
		f := good()
		f.Set(k, v)
		return f
	}
	without := func(k string) url.Values {
		f := good()
		f.Del(k)
		return f
	}
	cases := []struct {
		name   string
		form   url.Values
		ctype  string // default form
		body   string // raw body instead of form
		hdr    map[string]string
		status int
		field  string
	}{
		{name: "missing key", form: good(), hdr: map[string]string{"X-API-Key": ""}, status: 401},
		{name: "unknown key", form: good(), hdr: map[string]string{"X-API-Key": "nope"}, status: 401},
		{name: "d missing", form: without("d"), status: 400, field: "d"},
		{name: "d no tech", form: with("d", "6001"), status: 400, field: "d"},
		{name: "d parallel dial", form: with("d", "PJSIP/6001&PJSIP/6002"), status: 400, field: "d"},
		{name: "d newline", form: with("d", "PJSIP/6001\nX"), status: 400, field: "d"},
		{name: "d too long", form: with("d", "PJSIP/"+strings.Repeat("1", 300)), status: 400, field: "d"},
		{name: "c missing", form: without("c"), status: 400, field: "c"},
		{name: "c bad chars", form: with("c", "from internal"), status: 400, field: "c"},
		{name: "c too long", form: with("c", strings.Repeat("a", 81)), status: 400, field: "c"},
		{name: "e missing", form: without("e"), status: 400, field: "e"},
		{name: "e bad chars", form: with("e", "s,1"), status: 400, field: "e"},
		{name: "e too long", form: with("e", strings.Repeat("1", 81)), status: 400, field: "e"},
		{name: "t zero", form: with("t", "0"), status: 400, field: "t"},
		{name: "t too big", form: with("t", "601"), status: 400, field: "t"},
		{name: "t not a number", form: with("t", "abc"), status: 400, field: "t"},
		{name: "t float", form: with("t", "1.5"), status: 400, field: "t"},
		{name: "i control char", form: with("i", "Bob\r\n<100>"), status: 400, field: "i"},
		{name: "i too long", form: with("i", strings.Repeat("x", 129)), status: 400, field: "i"},
		{name: "v bad name", form: with("v", "1BAD=x"), status: 400, field: "v"},
		{name: "v function", form: with("v", "SHELL(rm)=x"), status: 403, field: "v"},
		{name: "v too many", form: with("v", strings.Repeat("A=1,", 32)+"B=2"), status: 400, field: "v"},
		{name: "v newline", form: with("v", "A=1\nB=2"), status: 400, field: "v"},
		{name: "wait bad", form: with("wait", "forever"), status: 400, field: "wait"},
		{name: "id bad", form: with("id", "a b"), status: 400, field: "id"},
		{name: "id too long", form: with("id", strings.Repeat("a", 65)), status: 400, field: "id"},
		{name: "ari unknown name", form: with("ari", "pbx9"), status: 400, field: "ari"},
		{name: "ari foreign URL (SSRF)", form: with("ari", "http://10.1.1.1:8088/ari"), status: 403, field: "ari"},
		{name: "aripass wrong", form: func() url.Values { f := good(); f.Set("ariuser", testARIUser); f.Set("aripass", "wrong"); return f }(), status: 403},
		{name: "wrong content type", ctype: "text/plain", body: "d=PJSIP/6001", status: 415},
		{name: "bad json", ctype: "application/json", body: `{"d":`, status: 400},
		{name: "json type confusion", ctype: "application/json", body: `{"d":["PJSIP/1"],"c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "duplicate field", body: "d=PJSIP/1&d=PJSIP/2&c=x&e=s", status: 400, field: "d"},
		{name: "body too large", body: "d=PJSIP/1&c=x&e=s&pad=" + strings.Repeat("x", 70<<10), status: 413},
		{name: "id vs header differ", form: with("id", "abc"), hdr: map[string]string{"Idempotency-Key": "xyz"}, status: 400, field: "id"},
		// Hostile and malformed variations.
		{name: "invalid UTF-8 in d", body: "d=PJSIP/%FF%FE&c=x&e=s", status: 400},
		{name: "NUL in i", form: with("i", "Bob\x00<1>"), status: 400, field: "i"},
		{name: "d space", form: with("d", "PJSIP/60 01"), status: 400, field: "d"},
		{name: "d comma", form: with("d", "PJSIP/6001,PJSIP/6002"), status: 400, field: "d"},
		{name: "d dollar expansion", form: with("d", "PJSIP/${EXTEN}"), status: 400, field: "d"},
		{name: "d quote", form: with("d", `PJSIP/"6001"`), status: 400, field: "d"},
		{name: "d empty tech", form: with("d", "/6001"), status: 400, field: "d"},
		{name: "d empty resource", form: with("d", "PJSIP/"), status: 400, field: "d"},
		{name: "d unknown technology", form: with("d", "FOO/123"), status: 400, field: "d"},
		{name: "c semicolon", form: with("c", "ctx;x"), status: 400, field: "c"},
		{name: "c newline", form: with("c", "ctx\nx"), status: 400, field: "c"},
		{name: "e space", form: with("e", "1 2"), status: 400, field: "e"},
		{name: "e control", form: with("e", "1\t2"), status: 400, field: "e"},
		{name: "t negative", form: with("t", "-5"), status: 400, field: "t"},
		{name: "t exponent", form: with("t", "1e2"), status: 400, field: "t"},
		{name: "t overflow", form: with("t", "99999999999999999999999"), status: 400, field: "t"},
		{name: "t padded", form: with("t", " 30"), status: 400, field: "t"},
		{name: "v empty name", form: with("v", "=x"), status: 400, field: "v"},
		{name: "v duplicate name", form: with("v", "A=1,A=2"), status: 400, field: "v"},
		{name: "v 10k variables", ctype: "application/json", body: `{"d":"PJSIP/6001","c":"x","e":"s","v":"` + strings.Repeat("A=1,", 10000) + `"}`, status: 400, field: "v"},
		{name: "v 10k variables form (over 64 KiB)", form: with("v", strings.Repeat("A=1,", 10000)), status: 413},
		{name: "v dialplan function with escaped comma", form: with("v", `CURL(http://x\,y)=1`), status: 400, field: "v"},
		{name: "id dot", form: with("id", "a.b"), status: 400, field: "id"},
		{name: "id slash", form: with("id", "a/b"), status: 400, field: "id"},
		{name: "ari URL with credentials", form: with("ari", "http://u:p@127.0.0.1:8088/ari"), status: 403, field: "ari"},
		{name: "ari metadata address", form: with("ari", "http://169.254.169.254/latest/meta-data"), status: 403, field: "ari"},
		{name: "ari file URL", form: with("ari", "file:///etc/passwd"), status: 403, field: "ari"},
		{name: "ariuser wrong", form: with("ariuser", "root"), status: 403},
		{name: "no content type", ctype: "-", body: "d=PJSIP/6001&c=x&e=s", status: 415},
		{name: "multipart", ctype: "multipart/form-data; boundary=x", body: "--x--", status: 415},
		{name: "latin1 charset", ctype: "application/x-www-form-urlencoded; charset=latin1", body: "d=PJSIP/6001&c=x&e=s", status: 415},
		{name: "bad percent escape", body: "d=PJSIP/%zz&c=x&e=s", status: 400},
		{name: "json unknown field", ctype: "application/json", body: `{"d":"PJSIP/6001","c":"x","e":"s","timeout":"5"}`, status: 400, field: "timeout"},
		{name: "json null", ctype: "application/json", body: `{"d":null,"c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "json t float", ctype: "application/json", body: `{"d":"PJSIP/6001","c":"x","e":"s","t":30.5}`, status: 400, field: "t"},
		{name: "json array body", ctype: "application/json", body: `[{"d":"PJSIP/6001"}]`, status: 400},
		{name: "json nested object", ctype: "application/json", body: `{"d":{"x":1},"c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "json duplicate key", ctype: "application/json", body: `{"d":"PJSIP/6001","d":"PJSIP/6002","c":"x","e":"s"}`, status: 400, field: "d"},
		{name: "json trailing garbage", ctype: "application/json", body: `{"d":"PJSIP/6001","c":"x","e":"s"} x`, status: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctype := tc.ctype
			switch ctype {
			case "":
				ctype = "application/x-www-form-urlencoded"
			case "-":
				ctype = "" // no Content-Type header at all
			}
			body := tc.body
			if body == "" && tc.form != nil {
				body = tc.form.Encode()
			}
			r := e.postBody(ctype, body, tc.hdr)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Raw)
			}
			env := r.Envelope
			if env.Status != "fail" || env.Response.Success || env.Error == nil || env.Error.Code == "" || env.Error.Message == "" {
				t.Fatalf("not a failure envelope with an error: %s", r.Raw)
			}
			if tc.field != "" && env.Error.Field != tc.field {
				t.Errorf("error.field = %q, want %q (%s)", env.Error.Field, tc.field, env.Error.Message)
			}
			if env.Response.HTTPCode != 0 {
				t.Errorf("response.http_code = %d: ARI must not have been reached", env.Response.HTTPCode)
			}
		})
	}
	if after := e.sim.Requests(); len(after) != before {
		t.Errorf("bad requests reached the simulator: %+v", after[before:])
	}
	// GET is not the door's method.
	resp, err := http.Get(e.base + "/v2/invokeARI")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v2/invokeARI = %d, want 405", resp.StatusCode)
	}
}
