package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// MaxBody is the largest request body a door accepts (SPEC §7). Enforcing it is the
// door's job (it owns the reader); answer BodyTooLarge() beyond it.
const MaxBody = 64 << 10

// Fields are the raw request fields as received (HTTP form/JSON or NATS JSON), all
// strings. An empty string means absent. Fields is not validated: Gate.Build does that.
type Fields struct {
	D, C, E, T, I, V, Ari, AriUser, AriPass, Wait, ID string
	// Callback and CallbackEvents are the status callback URL and its comma-separated
	// event kinds (SPEC §2, §8).
	Callback, CallbackEvents string
}

// originateFields is the table of the originate request's wire fields: the one list
// the decoders, FieldNames and the OpenAPI test read. Wire names are case-sensitive, as
// in the hosted API.
var originateFields = []wireField[Fields]{
	{"d", func(f *Fields) *string { return &f.D }},
	{"c", func(f *Fields) *string { return &f.C }},
	{"e", func(f *Fields) *string { return &f.E }},
	{"t", func(f *Fields) *string { return &f.T }},
	{"i", func(f *Fields) *string { return &f.I }},
	{"v", func(f *Fields) *string { return &f.V }},
	{"ari", func(f *Fields) *string { return &f.Ari }},
	{"ariuser", func(f *Fields) *string { return &f.AriUser }},
	{"aripass", func(f *Fields) *string { return &f.AriPass }},
	{"wait", func(f *Fields) *string { return &f.Wait }},
	{"id", func(f *Fields) *string { return &f.ID }},
	{"callback", func(f *Fields) *string { return &f.Callback }},
	{"callback_events", func(f *Fields) *string { return &f.CallbackEvents }},
}

// wireField is one named string field of a request struct T.
type wireField[T any] struct {
	name string
	ptr  func(*T) *string
}

// lookupField returns the member of v named name in table, or nil for an unknown name.
func lookupField[T any](table []wireField[T], v *T, name string) *string {
	for _, f := range table {
		if f.name == name {
			return f.ptr(v)
		}
	}
	return nil
}

// names lists a field table's wire names in order.
func names[T any](table []wireField[T]) []string {
	out := make([]string, len(table))
	for i, f := range table {
		out[i] = f.name
	}
	return out
}

// FieldNames lists the originate request's wire fields (form and JSON).
func FieldNames() []string { return names(originateFields) }

// fieldPtr returns the Fields member for a wire field name, or nil for an unknown name.
func (f *Fields) fieldPtr(name string) *string { return lookupField(originateFields, f, name) }

// MergeIdempotencyKey folds the Idempotency-Key header into f.ID: the header fills an
// empty id; an id field and a header that differ are refused (400).
func (f *Fields) MergeIdempotencyKey(header string) *Error {
	switch {
	case header == "":
	case f.ID == "":
		f.ID = header
	case f.ID != header:
		return badField("id", "the id field and the Idempotency-Key header differ")
	}
	return nil
}

// DecodeBody parses a request body by its Content-Type:
//
//   - application/x-www-form-urlencoded (the hosted API's format): unknown fields are
//     ignored, as the hosted API does; ';' is not a separator.
//   - application/json: one object whose values are strings, except `t`, which may also
//     be a JSON integer. Unknown fields are refused (400 unknown_field): JSON is new to
//     this API, so there are no legacy clients to keep working, and a typo such as
//     "timeout" must not be silently ignored. null is refused like any non-string.
//
// Media type parameters are allowed, but a charset other than UTF-8 is refused (415).
// In both formats a field given twice is refused (400 duplicate_field), names are
// case-sensitive, an empty value means absent, and the decoded text must be valid UTF-8.
func DecodeBody(contentType string, body []byte) (Fields, *Error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return Fields{}, unsupported(contentType)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return Fields{}, newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "",
			"charset must be utf-8")
	}
	switch mt {
	case "application/x-www-form-urlencoded":
		return decodeForm(body)
	case "application/json":
		return decodeJSON(body)
	}
	return Fields{}, unsupported(mt)
}

func unsupported(ct string) *Error {
	if len(ct) > 64 || !utf8.ValidString(ct) || hasControl(ct) {
		ct = "(unprintable)"
	}
	return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "",
		"content type %q is not application/x-www-form-urlencoded or application/json", ct)
}

func decodeForm(body []byte) (Fields, *Error) {
	var f Fields
	seen := make(map[string]bool)
	for part := range strings.SplitSeq(string(body), "&") {
		if part == "" {
			continue
		}
		rawKey, rawVal, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return Fields{}, newError(http.StatusBadRequest, CodeInvalidBody, "", "malformed form encoding")
		}
		val, err := url.QueryUnescape(rawVal)
		if err != nil {
			return Fields{}, newError(http.StatusBadRequest, CodeInvalidBody, safeName(key), "malformed form encoding")
		}
		p := f.fieldPtr(key)
		if p == nil {
			continue // unknown fields are ignored, as the hosted API does
		}
		if seen[key] {
			return Fields{}, newError(http.StatusBadRequest, CodeDuplicateField, key, "field %s given more than once", key)
		}
		seen[key] = true
		if !utf8.ValidString(val) {
			return Fields{}, newError(http.StatusBadRequest, CodeInvalidEncoding, key, "field %s is not valid UTF-8", key)
		}
		*p = val
	}
	return f, nil
}

// jsonInt is a plain JSON integer literal (no fraction, no exponent).
var jsonInt = regexp.MustCompile(`^-?[0-9]+$`)

func decodeJSON(body []byte) (Fields, *Error) {
	var f Fields
	if e := decodeJSONObject(body, func(name string) *string { return f.fieldPtr(name) }); e != nil {
		return Fields{}, e
	}
	return f, nil
}

// decodeJSONObject decodes one JSON object of string fields into the members field
// names (nil: unknown field, refused). Only `t` may also be a JSON integer.
func decodeJSONObject(body []byte, field func(name string) *string) *Error {
	invalid := func(msg string) *Error {
		return newError(http.StatusBadRequest, CodeInvalidBody, "", "%s", msg)
	}
	if !utf8.Valid(body) {
		// encoding/json would silently turn invalid bytes into U+FFFD.
		return newError(http.StatusBadRequest, CodeInvalidEncoding, "", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return invalid("body is not a JSON object")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return invalid("body is not a JSON object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid("malformed JSON")
		}
		key, _ := tok.(string) // object keys are always strings
		p := field(key)
		if p == nil {
			return newError(http.StatusBadRequest, CodeUnknownField, safeName(key), "unknown field %q", safeName(key))
		}
		if seen[key] {
			return newError(http.StatusBadRequest, CodeDuplicateField, key, "field %s given more than once", key)
		}
		seen[key] = true
		tok, err = dec.Token()
		if err != nil {
			return invalid("malformed JSON")
		}
		switch v := tok.(type) {
		case string:
			*p = v
		case json.Number:
			if key != "t" || !jsonInt.MatchString(string(v)) {
				return typeError(key)
			}
			*p = string(v)
		default:
			return typeError(key)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return invalid("malformed JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("data after the JSON object")
	}
	return nil
}

func typeError(key string) *Error {
	if key == "t" {
		return newError(http.StatusBadRequest, CodeInvalidType, key, "t must be a string or an integer")
	}
	return newError(http.StatusBadRequest, CodeInvalidType, key, "%s must be a string", key)
}

// safeName makes a client-sent field name fit to quote in an error message.
func safeName(s string) string {
	if len(s) > 32 || !utf8.ValidString(s) || hasControl(s) {
		return "(unprintable)"
	}
	return s
}
