package api

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCallerID(t *testing.T) {
	tests := []struct {
		in, name, number string
		fail             bool
	}{
		{in: `"Bob" <6000>`, name: "Bob", number: "6000"},
		{in: `"Bob Smith, Jr." <+15551234>`, name: "Bob Smith, Jr.", number: "+15551234"},
		{in: `Bob <6000>`, name: "Bob", number: "6000"},
		{in: `<6000>`, number: "6000"},
		{in: `6000`, number: "6000"},
		{in: `  6000  `, number: "6000"},
		{in: `"" <6000>`, number: "6000"},
		{in: `anonymous`, number: "anonymous"},
		{in: `"Zoë" <*98#>`, name: "Zoë", number: "*98#"},
		{in: ``, fail: true},
		{in: `"Bob"`, fail: true},
		{in: `"Bob" <>`, fail: true},
		{in: `"Bob" <6000`, fail: true},
		{in: `"Bob <6000>`, fail: true},
		{in: `"Bo"b" <6000>`, fail: true},
		{in: `"Bo\"b" <6000>`, fail: true},
		{in: `Bob <60 00>`, fail: true},
		{in: `Bob <6000> x`, fail: true},
		{in: `<6000><7000>`, fail: true},
		{in: "\"Bob\nX\" <6000>", fail: true},
		{in: "6000\r\n", fail: true},
		{in: "Bob\x00 <6000>", fail: true},
		{in: "\xff <6000>", fail: true},
		{in: `6000;evil`, fail: true},
		{in: `${SHELL(id)}`, fail: true},
		{in: strings.Repeat("9", 65), fail: true},
		{in: strings.Repeat("n", 124) + ` <1>`, fail: true}, // 128 bytes, but 130 in canonical form
	}
	for _, tt := range tests {
		name, number, err := ParseCallerID(tt.in)
		if tt.fail {
			if err == nil {
				t.Errorf("ParseCallerID(%q) = %q, %q; want error", tt.in, name, number)
			}
			continue
		}
		if err != nil || name != tt.name || number != tt.number {
			t.Errorf("ParseCallerID(%q) = %q, %q, %v; want %q, %q", tt.in, name, number, err, tt.name, tt.number)
		}
	}
}

func TestParseVariables(t *testing.T) {
	tests := []struct {
		in   string
		want []Variable
		fail string // substring of the error
	}{
		{in: "", want: nil},
		{in: "A=1", want: []Variable{{"A", "1"}}},
		{in: "CONFCODE=1234,TICKET_ID=77", want: []Variable{{"CONFCODE", "1234"}, {"TICKET_ID", "77"}}},
		{in: `NOTE=a\,b,X=y`, want: []Variable{{"NOTE", "a,b"}, {"X", "y"}}},
		{in: `P=C:\\dir,Q=\x`, want: []Variable{{"P", `C:\dir`}, {"Q", `\x`}}},
		{in: `E=a=b=c`, want: []Variable{{"E", "a=b=c"}}},
		{in: `E=`, want: []Variable{{"E", ""}}},
		{in: `_INH=1,__INH2=2`, want: []Variable{{"_INH", "1"}, {"__INH2", "2"}}},
		{in: ` A=1, B= 2 `, want: []Variable{{"A", "1"}, {"B", " 2 "}}},
		{in: `CALLERID(name)=Bob`, want: []Variable{{"CALLERID(name)", "Bob"}}},
		{in: `T=trailing\`, want: []Variable{{"T", `trailing\`}}},
		{in: `A`, fail: "no '='"},
		{in: `A=1,`, fail: "no '='"},
		{in: `A=1,,B=2`, fail: "no '='"},
		{in: `=1`, fail: "not a variable name"},
		{in: `1A=1`, fail: "not a variable name"},
		{in: `___A=1`, fail: "not a variable name"},
		{in: `A-B=1`, fail: "not a variable name"},
		{in: `A B=1`, fail: "not a variable name"},
		{in: `A\,B=1`, fail: "not a variable name"},
		{in: `${X}=1`, fail: "not a variable name"},
		{in: `SHELL(rm -rf $HOME)=1`, fail: "not a variable name"},
		{in: `F(a)(b)=1`, fail: "not a variable name"},
		{in: `A=1,A=2`, fail: "twice"},
		{in: "A=1\nB=2", fail: "control"},
		{in: "A=\x00", fail: "control"},
		{in: "A=\t", fail: "control"},
		{in: "A=\xff", fail: "control"},
		{in: strings.Repeat("A=1,", 1) + strings.Repeat("x", MaxVarsLen), fail: "longer"},
	}
	var many []string
	for i := range 33 {
		many = append(many, "V"+strings.Repeat("x", i)+"=1")
	}
	tests = append(tests, struct {
		in   string
		want []Variable
		fail string
	}{in: strings.Join(many, ","), fail: "more than 32"})
	for _, tt := range tests {
		got, err := ParseVariables(tt.in)
		if tt.fail != "" {
			if err == nil || !strings.Contains(err.Error(), tt.fail) {
				t.Errorf("ParseVariables(%.40q) = %v, %v; want error containing %q", tt.in, got, err, tt.fail)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseVariables(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if back, err := ParseVariables(FormatVariables(got)); err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("round trip of %q: %v, %v", tt.in, back, err)
		}
	}
}

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		p, s string
		want bool
		bad  bool
	}{
		{p: "PJSIP/6*", s: "PJSIP/6001", want: true},
		{p: "PJSIP/6*", s: "PJSIP/7001"},
		{p: "PJSIP/6*", s: "PJSIP/6/sip:1@x", want: true}, // '*' crosses '/'
		{p: "PJSIP/*@trunk-premium", s: "PJSIP/0115@trunk-premium", want: true},
		{p: "PJSIP/*@trunk-premium", s: "PJSIP/0115@trunk-premium2"},
		{p: "PJSIP/60??", s: "PJSIP/6012", want: true},
		{p: "PJSIP/60??", s: "PJSIP/601"},
		{p: "PJSIP/6[0-4]*", s: "PJSIP/6300", want: true},
		{p: "PJSIP/6[0-4]*", s: "PJSIP/6500"},
		{p: "PJSIP/6[!0-4]*", s: "PJSIP/6500", want: true},
		{p: "PJSIP/6[^0-4]*", s: "PJSIP/6100"},
		{p: `PJSIP/\*1`, s: "PJSIP/*1", want: true},
		{p: `PJSIP/\*1`, s: "PJSIP/91"},
		{p: "*", s: "", want: true},
		{p: "*", s: "anything/at/all", want: true},
		{p: "a*b*c", s: "axxbyyc", want: true},
		{p: "a*b*c", s: "axxbyy"},
		{p: "PJSIP/6001", s: "PJSIP/6001", want: true},
		{p: "PJSIP/6001", s: "PJSIP/60011"},
		{p: "TICKET_*", s: "TICKET_ID", want: true},
		{p: "TICKET_*", s: "__TICKET_ID"},
		{p: "a[", s: "a", bad: true},
		{p: "a[b", s: "zz", bad: true},
		{p: `a\`, s: "a", bad: true},
		{p: "[z-a]", s: "b", bad: true},
	}
	for _, tt := range tests {
		got, err := matchGlob(tt.p, tt.s)
		if tt.bad {
			if err == nil {
				t.Errorf("matchGlob(%q, %q): want a pattern error", tt.p, tt.s)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("matchGlob(%q, %q) = %v, %v; want %v", tt.p, tt.s, got, err, tt.want)
		}
	}
}
