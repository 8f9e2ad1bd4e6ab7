package api

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/invokeari/invokeari/stasisapp"
)

// FuzzDecodeBody: decoding and building never panic; decoded fields are valid UTF-8; an
// accepted request holds no control characters and re-validates to itself.
func FuzzDecodeBody(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", []byte("d=PJSIP%2F6001&c=confirmcode&e=1234&v=A%3D1%5C%2C2"))
	f.Add("application/json", []byte(`{"d":"PJSIP/6001","c":"x","e":"1","t":30,"i":"\"A\" <1>"}`))
	g := newTestGate(f, testConfig())
	p := principal(f, g, funcsKey)
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		fields, e := DecodeBody(ct, body)
		if e != nil {
			if e.Status != 400 && e.Status != 415 {
				t.Fatalf("DecodeBody status %d", e.Status)
			}
			return
		}
		for _, s := range []string{fields.D, fields.C, fields.E, fields.T, fields.I, fields.V, fields.Ari, fields.AriUser, fields.AriPass, fields.Wait, fields.ID} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 survived decoding: %q", s)
			}
		}
		req, e := g.Build(p, fields)
		if e != nil {
			if e.Status != 400 && e.Status != 403 {
				t.Fatalf("Build status %d: %v", e.Status, e)
			}
			return
		}
		assertClean(t, req)
		again, e := g.Build(p, fieldsOf(req))
		if e != nil {
			t.Fatalf("accepted request does not re-validate: %v\n%+v", e, req)
		}
		if again.FreshID {
			t.Fatalf("a caller's id %q was taken as generated", again.ID)
		}
		again.FreshID = req.FreshID // an id the door generated comes back as the caller's own
		if !reflect.DeepEqual(again, req) {
			t.Fatalf("re-validation changed the request:\n%+v\n%+v", req, again)
		}
	})
}

// fieldsOf turns a built request back into wire fields.
func fieldsOf(r stasisapp.Request) Fields {
	var vars []Variable
	for _, k := range slices.Sorted(maps.Keys(r.Variables)) {
		vars = append(vars, Variable{k, r.Variables[k]})
	}
	return Fields{D: r.Endpoint, C: r.Context, E: r.Extension, T: strconv.Itoa(int(r.Timeout / time.Second)),
		I: r.CallerID, V: FormatVariables(vars), Ari: r.Server, Wait: string(r.Wait), ID: r.ID}
}

// FuzzParseVariables: never panics; accepted output is bounded, clean and round-trips.
func FuzzParseVariables(f *testing.F) {
	f.Add(`A=1,B=2`)
	f.Fuzz(func(t *testing.T, s string) {
		vars, err := ParseVariables(s)
		if err != nil {
			return
		}
		if len(vars) > MaxVariables {
			t.Fatalf("%d variables accepted", len(vars))
		}
		for _, v := range vars {
			if hasControl(v.Name) || hasControl(v.Value) {
				t.Fatalf("control character survived: %q", v)
			}
			if !reVarName.MatchString(v.Name) && !reFuncName.MatchString(v.Name) {
				t.Fatalf("bad name accepted: %q", v.Name)
			}
		}
		back, err := ParseVariables(FormatVariables(vars))
		if err != nil || !reflect.DeepEqual(back, vars) {
			t.Fatalf("round trip: %v, %v; want %v", back, err, vars)
		}
	})
}

// FuzzParseCallerID: never panics; accepted output is clean and its canonical form
// parses back to the same parts.
func FuzzParseCallerID(f *testing.F) {
	f.Add(`"Bob" <6000>`)
	f.Fuzz(func(t *testing.T, s string) {
		name, number, err := ParseCallerID(s)
		if err != nil {
			return
		}
		if hasControl(name) || hasControl(number) || number == "" {
			t.Fatalf("bad parts accepted: %q %q", name, number)
		}
		canon := FormatCallerID(name, number)
		n2, num2, err := ParseCallerID(canon)
		if err != nil || n2 != name || num2 != number {
			t.Fatalf("canonical %q parses to %q %q %v; want %q %q", canon, n2, num2, err, name, number)
		}
	})
}
