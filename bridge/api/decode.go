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

// fieldPtr returns the Fields member for a wire field name, or nil for an unknown name.
// Wire names are case-sensitive, as in the hosted API.
func (f *Fields) fieldPtr(name string) *string {
	switch name {
	case "d":
		return &f.D
	case "c":
		return &f.C
	case "e":
		return &f.E
	case "t":
		return &f.T
	case "i":
		return &f.I
	case "v":
		return &f.V
	case "ari":
		return &f.Ari
	case "ariuser":
		return &f.AriUser
	case "aripass":
		return &f.AriPass
	case "wait":
		return &f.Wait
	case "id":
		return &f.ID
	case "callback":
		return &f.Callback
	case "callback_events":
		return &f.CallbackEvents
	}
	return nil
}

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
	invalid := func(msg string) (Fields, *Error) {
		return Fields{}, newError(http.StatusBadRequest, CodeInvalidBody, "", "%s", msg)
	}
	if !utf8.Valid(body) {
		// encoding/json would silently turn invalid bytes into U+FFFD.
		return Fields{}, newError(http.StatusBadRequest, CodeInvalidEncoding, "", "body is not valid UTF-8")
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
	var f Fields
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid("malformed JSON")
		}
		key, _ := tok.(string) // object keys are always strings
		p := f.fieldPtr(key)
		if p == nil {
			return Fields{}, newError(http.StatusBadRequest, CodeUnknownField, safeName(key), "unknown field %q", safeName(key))
		}
		if seen[key] {
			return Fields{}, newError(http.StatusBadRequest, CodeDuplicateField, key, "field %s given more than once", key)
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
				return Fields{}, typeError(key)
			}
			*p = string(v)
		default:
			return Fields{}, typeError(key)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return invalid("malformed JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("data after the JSON object")
	}
	return f, nil
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
