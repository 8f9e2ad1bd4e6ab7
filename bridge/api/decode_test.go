package api

import (
	"testing"
)

func TestDecodeBody(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	const js = "application/json"
	tests := []struct {
		name   string
		ct     string
		body   string
		want   Fields
		status int
		code   string
		field  string
	}{
		{name: "form all fields", ct: form,
			body: "d=PJSIP%2F6001&c=confirmcode&e=1234&t=20&i=%22Bob%22+%3C6000%3E&v=A%3D1%2CB%3D2&ari=pbx1&ariuser=u&aripass=p&wait=end&id=abc",
			want: Fields{D: "PJSIP/6001", C: "confirmcode", E: "1234", T: "20", I: `"Bob" <6000>`, V: "A=1,B=2", Ari: "pbx1", AriUser: "u", AriPass: "p", Wait: "end", ID: "abc"}},
		{name: "form charset param", ct: form + "; charset=UTF-8", body: "d=x", want: Fields{D: "x"}},
		{name: "form unknown ignored", ct: form, body: "d=x&foo=bar&D=y", want: Fields{D: "x"}},
		{name: "form empty body", ct: form, body: "", want: Fields{}},
		{name: "form empty pairs", ct: form, body: "&&d=x&", want: Fields{D: "x"}},
		{name: "form duplicate", ct: form, body: "d=x&d=y", status: 400, code: CodeDuplicateField, field: "d"},
		{name: "form duplicate empty", ct: form, body: "d=&d=y", status: 400, code: CodeDuplicateField, field: "d"},
		{name: "form bad escape", ct: form, body: "d=%zz", status: 400, code: CodeInvalidBody, field: "d"},
		{name: "form invalid utf8", ct: form, body: "d=%ff%fe", status: 400, code: CodeInvalidEncoding, field: "d"},
		{name: "form semicolon not separator", ct: form, body: "d=a;c=b", want: Fields{D: "a;c=b"}},
		{name: "json all", ct: js, body: `{"d":"PJSIP/6001","c":"x","e":"1","t":"20","wait":"end","id":"k"}`,
			want: Fields{D: "PJSIP/6001", C: "x", E: "1", T: "20", Wait: "end", ID: "k"}},
		{name: "json t integer", ct: js, body: `{"t":45}`, want: Fields{T: "45"}},
		{name: "json t float", ct: js, body: `{"t":4.5}`, status: 400, code: CodeInvalidType, field: "t"},
		{name: "json t exponent", ct: js, body: `{"t":3e1}`, status: 400, code: CodeInvalidType, field: "t"},
		{name: "json d number", ct: js, body: `{"d":6001}`, status: 400, code: CodeInvalidType, field: "d"},
		{name: "json null", ct: js, body: `{"i":null}`, status: 400, code: CodeInvalidType, field: "i"},
		{name: "json bool", ct: js, body: `{"wait":true}`, status: 400, code: CodeInvalidType, field: "wait"},
		{name: "json array", ct: js, body: `{"d":["PJSIP/1","PJSIP/2"]}`, status: 400, code: CodeInvalidType, field: "d"},
		{name: "json object", ct: js, body: `{"v":{"A":"1"}}`, status: 400, code: CodeInvalidType, field: "v"},
		{name: "json unknown", ct: js, body: `{"timeout":"5"}`, status: 400, code: CodeUnknownField, field: "timeout"},
		{name: "json case sensitive", ct: js, body: `{"D":"x"}`, status: 400, code: CodeUnknownField, field: "D"},
		{name: "json duplicate", ct: js, body: `{"d":"a","d":"b"}`, status: 400, code: CodeDuplicateField, field: "d"},
		{name: "json escaped duplicate", ct: js, body: `{"d":"a","\u0064":"b"}`, status: 400, code: CodeDuplicateField, field: "d"},
		{name: "json not object", ct: js, body: `["d"]`, status: 400, code: CodeInvalidBody},
		{name: "json empty", ct: js, body: ``, status: 400, code: CodeInvalidBody},
		{name: "json trailing", ct: js, body: `{"d":"x"}{"d":"y"}`, status: 400, code: CodeInvalidBody},
		{name: "json truncated", ct: js, body: `{"d":"x"`, status: 400, code: CodeInvalidBody},
		{name: "json invalid utf8", ct: js, body: "{\"d\":\"\xff\"}", status: 400, code: CodeInvalidEncoding},
		{name: "json empty object", ct: js, body: `{}`, want: Fields{}},
		{name: "text/plain", ct: "text/plain", body: "d=x", status: 415, code: CodeUnsupportedMediaType},
		{name: "no content type", ct: "", body: "d=x", status: 415, code: CodeUnsupportedMediaType},
		{name: "multipart", ct: "multipart/form-data; boundary=x", body: "", status: 415, code: CodeUnsupportedMediaType},
		{name: "latin1", ct: form + "; charset=iso-8859-1", body: "d=x", status: 415, code: CodeUnsupportedMediaType},
		{name: "garbage ct", ct: ";;;", body: "", status: 415, code: CodeUnsupportedMediaType},
		{name: "json upper ct", ct: "Application/JSON", body: `{"d":"x"}`, want: Fields{D: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, e := DecodeBody(tt.ct, []byte(tt.body))
			if tt.code != "" {
				if e == nil {
					t.Fatalf("DecodeBody = %+v, want error %s", got, tt.code)
				}
				if e.Status != tt.status || e.Code != tt.code || e.Field != tt.field {
					t.Fatalf("error = %d %s %q, want %d %s %q", e.Status, e.Code, e.Field, tt.status, tt.code, tt.field)
				}
				return
			}
			if e != nil {
				t.Fatalf("DecodeBody error %v", e)
			}
			if got != tt.want {
				t.Fatalf("DecodeBody = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMergeIdempotencyKey(t *testing.T) {
	tests := []struct {
		field, header, want string
		fail                bool
	}{
		{"", "", "", false},
		{"a", "", "a", false},
		{"", "h", "h", false},
		{"a", "a", "a", false},
		{"a", "b", "", true},
	}
	for _, tt := range tests {
		f := Fields{ID: tt.field}
		e := f.MergeIdempotencyKey(tt.header)
		if tt.fail {
			if e == nil || e.Status != 400 || e.Field != "id" {
				t.Errorf("merge(%q,%q) = %v, want 400 on id", tt.field, tt.header, e)
			}
			continue
		}
		if e != nil || f.ID != tt.want {
			t.Errorf("merge(%q,%q) = %q, %v; want %q", tt.field, tt.header, f.ID, e, tt.want)
		}
	}
}
