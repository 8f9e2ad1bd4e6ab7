package api

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Field limits (SPEC §2). Lengths are in bytes.
const (
	MaxDestination = 256
	MaxContext     = 80
	MaxExtension   = 80
	MaxCallerID    = 128
	MaxVariables   = 32   // pairs
	MaxVarsLen     = 4096 // the whole v field
	MaxServerRef   = 512  // the ari field
	MaxCredential  = 256  // ariuser, aripass
	MinTimeoutSec  = 1
	MaxTimeoutSec  = 600
)

var (
	reContext = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// Extensions: digits, letters and the dialplan's own characters; no spaces, no
	// expression syntax (${}, [], ()).
	reExtension = regexp.MustCompile(`^[0-9A-Za-z*#+_.!-]+$`)
	reID        = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	reTimeout   = regexp.MustCompile(`^[0-9]{1,4}$`)
	reTech      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)
	// A destination resource: endpoint names, numbers, SIP URIs (with ;params and
	// [IPv6]) and Local's exten@context/n. Refused: '&' (parallel dial), ',' and quotes
	// and whitespace and anything that could be dialplan expression syntax ($ { } ( )).
	reResource = regexp.MustCompile(`^[A-Za-z0-9_.:@/+*#=;~%!\[\]-]+$`)
	reVarName  = regexp.MustCompile(`^_{0,2}[A-Za-z][A-Za-z0-9_]*$`)
	// A dialplan function used as a variable name, e.g. CALLERID(name) or
	// PJSIP_HEADER(add,X-Foo); refused unless the key allows functions.
	reFuncName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*\([A-Za-z0-9_.:@/+*#=;~%! -]*\)$`)
	// Caller id parts.
	reCIDNumber = regexp.MustCompile(`^[0-9A-Za-z+*#._-]{1,64}$`)
)

// DefaultTechnologies are the channel technologies a destination may use when the
// config lists none. Asterisk matches technology names case-insensitively, so a
// destination's technology is rewritten to the spelling here before policy globs are
// applied (else `pjsip/900` would slip past a `PJSIP/9*` deny).
var DefaultTechnologies = []string{"PJSIP", "SIP", "IAX2", "Local", "DAHDI", "Motif", "WebSocket", "AudioSocket"}

// hasControl reports whether s holds a control character (C0, DEL, C1) or a Unicode
// line/paragraph separator.
func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == utf8.RuneError {
			return true
		}
	}
	return false
}

// checkText applies the checks every field shares: valid UTF-8, no control
// characters, at most max bytes.
func checkText(field, v string, maxLen int) *Error {
	switch {
	case len(v) > maxLen:
		return badField(field, "%s is longer than %d bytes", field, maxLen)
	case !utf8.ValidString(v):
		return newError(400, CodeInvalidEncoding, field, "%s is not valid UTF-8", field)
	case hasControl(v):
		return badField(field, "%s holds a control character", field)
	}
	return nil
}

// parseDestination checks d and returns it with the technology spelt canonically.
func parseDestination(d string, techs map[string]string) (string, *Error) {
	if d == "" {
		return "", newError(400, CodeMissingField, "d", "d (destination) is required")
	}
	if e := checkText("d", d, MaxDestination); e != nil {
		return "", e
	}
	if strings.Contains(d, "&") {
		return "", badField("d", "d must name one endpoint; '&' (parallel dial) is not allowed")
	}
	tech, res, ok := strings.Cut(d, "/")
	if !ok || !reTech.MatchString(tech) || res == "" {
		return "", badField("d", "d must be TECH/resource, e.g. PJSIP/6001")
	}
	canon, ok := techs[strings.ToLower(tech)]
	if !ok {
		return "", badField("d", "technology %s is not allowed", tech)
	}
	if !reResource.MatchString(res) {
		return "", badField("d", "d holds a character not allowed in a destination")
	}
	return canon + "/" + res, nil
}

// ParseCallerID splits a caller id given as `"Name" <number>`, `Name <number>`,
// `<number>` or `number`. The name may be empty; the number is required and made of
// [0-9A-Za-z+*#._-]. Names hold no quotes, backslashes, angle brackets or control
// characters. FormatCallerID gives the canonical form back.
func ParseCallerID(s string) (name, number string, err error) {
	if len(s) > MaxCallerID {
		return "", "", fmt.Errorf("longer than %d bytes", MaxCallerID)
	}
	if !utf8.ValidString(s) || hasControl(s) {
		return "", "", errors.New("holds a control character or invalid UTF-8")
	}
	s = strings.TrimSpace(s)
	lt := strings.IndexByte(s, '<')
	if lt < 0 {
		number = s
	} else {
		if !strings.HasSuffix(s, ">") {
			return "", "", errors.New(`must end in '>' after "<number"`)
		}
		number = s[lt+1 : len(s)-1]
		name = strings.TrimSpace(s[:lt])
		if q, ok := strings.CutPrefix(name, `"`); ok {
			q, ok = strings.CutSuffix(q, `"`)
			if !ok {
				return "", "", errors.New("unterminated quoted name")
			}
			name = q
		}
		if strings.ContainsAny(name, "\"\\<>") {
			return "", "", errors.New(`name holds '"', '\', '<' or '>'`)
		}
	}
	if !reCIDNumber.MatchString(number) {
		return "", "", errors.New("number must be 1-64 of [0-9A-Za-z+*#._-]")
	}
	if len(FormatCallerID(name, number)) > MaxCallerID {
		return "", "", fmt.Errorf("longer than %d bytes in canonical form", MaxCallerID)
	}
	return name, number, nil
}

// FormatCallerID is the canonical caller id: `"Name" <number>`, or just `number`.
func FormatCallerID(name, number string) string {
	if name == "" {
		return number
	}
	return `"` + name + `" <` + number + `>`
}

// Variable is one channel variable of the v field, in the order given.
type Variable struct {
	Name, Value string
}

// IsFunction reports whether the name is dialplan-function style, e.g. CALLERID(name).
func (v Variable) IsFunction() bool { return strings.HasSuffix(v.Name, ")") }

// ParseVariables parses `NAME=VALUE,NAME2=VALUE2`. In values, `\,` is a literal comma
// and `\\` a literal backslash; any other backslash is kept as is. Spaces around a name
// are trimmed; values are taken verbatim (a value may contain '='). Names are
// `_{0,2}[A-Za-z][A-Za-z0-9_]*` or function style `FUNC(args)` (the caller decides
// whether functions are allowed). At most MaxVariables pairs, no duplicate names, no
// control characters, no empty pairs. FormatVariables is the inverse.
func ParseVariables(s string) ([]Variable, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > MaxVarsLen {
		return nil, fmt.Errorf("longer than %d bytes", MaxVarsLen)
	}
	if !utf8.ValidString(s) || hasControl(s) {
		return nil, errors.New("holds a control character or invalid UTF-8")
	}
	var (
		out  []Variable
		seen = make(map[string]bool)
		cur  strings.Builder
		add  = func(pair string) error {
			name, val, ok := strings.Cut(pair, "=")
			name = strings.TrimSpace(name)
			if !ok {
				return fmt.Errorf("pair %d has no '='", len(out)+1)
			}
			if !reVarName.MatchString(name) && !reFuncName.MatchString(name) {
				return fmt.Errorf("pair %d: %q is not a variable name", len(out)+1, shorten(name))
			}
			if seen[name] {
				return fmt.Errorf("variable %s given twice", name)
			}
			if len(out) == MaxVariables {
				return fmt.Errorf("more than %d variables", MaxVariables)
			}
			seen[name] = true
			out = append(out, Variable{Name: name, Value: val})
			return nil
		}
	)
	// Split on unescaped commas, unescaping as we go. The name part never legitimately
	// holds a backslash, so unescaping the whole pair is safe: a name that had one fails
	// the name check.
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == ',' || s[i+1] == '\\'):
			cur.WriteByte(s[i+1])
			i++
		case c == ',':
			if err := add(cur.String()); err != nil {
				return nil, err
			}
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if err := add(cur.String()); err != nil {
		return nil, err
	}
	return out, nil
}

// FormatVariables is the inverse of ParseVariables.
func FormatVariables(vars []Variable) string {
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`)
	for i, v := range vars {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(v.Name)
		b.WriteByte('=')
		b.WriteString(esc.Replace(v.Value))
	}
	return b.String()
}

func shorten(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
