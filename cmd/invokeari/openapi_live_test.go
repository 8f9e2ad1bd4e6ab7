package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/invokeari/invokeari/bridge/httpdoor"
)

// validatingTransport checks every reply the daemon sends against openapi.json (status
// code documented for the operation, body matching its schema) with libopenapi-validator,
// and the request too when the request's context says it is a valid one (requests
// built to provoke an error are not, by design).
type validatingTransport struct {
	t  *testing.T
	mu sync.Mutex // the validator is not documented as safe for concurrent use
	v  validator.Validator
}

type validRequestKey struct{}

// asValid marks a request as one the document must accept.
func asValid(req *http.Request) *http.Request {
	return req.WithContext(context.WithValue(req.Context(), validRequestKey{}, true))
}

func newValidatingClient(t *testing.T) *http.Client {
	t.Helper()
	doc, err := libopenapi.NewDocument(httpdoor.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return &http.Client{Transport: &validatingTransport{t: t, v: v}}
}

func (vt *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body.Close()
		reqBody = b
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))

	vreq := req.Clone(req.Context())
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	vresp := *resp
	vresp.Body = io.NopCloser(bytes.NewReader(respBody))
	vt.mu.Lock()
	defer vt.mu.Unlock()
	if ok, errs := vt.v.ValidateHttpResponse(vreq, &vresp); !ok {
		for _, e := range errs {
			vt.t.Errorf("openapi.json does not describe the reply to %s %s (%d): %s: %s\n%s",
				req.Method, req.URL.RequestURI(), resp.StatusCode, e.Message, e.Reason, respBody)
		}
	}
	if valid, _ := req.Context().Value(validRequestKey{}).(bool); valid {
		vreq := req.Clone(req.Context())
		vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
		if ok, errs := vt.v.ValidateHttpRequest(vreq); !ok {
			for _, e := range errs {
				vt.t.Errorf("openapi.json refuses the valid request %s %s: %s: %s", req.Method, req.URL.RequestURI(), e.Message, e.Reason)
			}
		}
	}
	return resp, nil
}

// TestOpenAPILive sends the originate and operations routes' requests through the
// validating client: each reply (and each valid request) must match openapi.json.
// The call-control tests use the same client (startControlEnv).
func TestOpenAPILive(t *testing.T) {
	e := startControlEnv(t)
	send := func(method, path, contentType, body, key string, valid bool) int {
		t.Helper()
		req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		if valid {
			req = asValid(req)
		}
		resp, err := e.http().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	const formCT, jsonCT = "application/x-www-form-urlencoded", "application/json"
	for _, tc := range []struct {
		name, method, path, ct, body, key string
		valid                             bool
		want                              int
	}{
		{"form busy", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/busy", "c", "confirmcode", "e", "s", "id", "oa-1"), testAPIKey, true, 200},
		{"json answered", "POST", "/v2/invokeARI", jsonCT, `{"d":"PJSIP/answer","c":"confirmcode","e":"s","t":5,"wait":"end","id":"oa-2"}`, testAPIKey, true, 200},
		{"allocation failed", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/notfound", "c", "confirmcode", "e", "s"), testAPIKey, true, 200},
		{"no key", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/busy", "c", "confirmcode", "e", "s"), "", false, 401},
		{"bad field", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/busy&PJSIP/x", "c", "confirmcode", "e", "s"), testAPIKey, false, 400},
		{"unknown JSON field", "POST", "/v2/invokeARI", jsonCT, `{"d":"PJSIP/busy","c":"confirmcode","e":"s","timeout":"5"}`, testAPIKey, false, 400},
		{"media type", "POST", "/v2/invokeARI", "text/plain", "d=PJSIP/busy", testAPIKey, false, 415},
		{"too large", "POST", "/v2/invokeARI", formCT, "v=" + strings.Repeat("a", 70<<10), testAPIKey, false, 413},
		{"server not allowed", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/busy", "c", "confirmcode", "e", "s", "ari", "http://192.0.2.1:8088/ari"), testAPIKey, false, 403},
		{"idempotency conflict", "POST", "/v2/invokeARI", formCT, form("d", "PJSIP/decline", "c", "confirmcode", "e", "s", "id", "oa-1"), testAPIKey, false, 409},
		{"get", "GET", "/v2/calls/oa-1", "", "", testAPIKey, true, 200},
		{"list", "GET", "/v2/calls?state=ended&limit=5", "", "", testAPIKey, true, 200},
		{"hangup ended", "DELETE", "/v2/calls/oa-2?reason=done", "", "", testAPIKey, true, 200},
		{"healthz", "GET", "/healthz", "", "", "", true, 200},
		{"readyz", "GET", "/readyz", "", "", "", true, 200},
		{"metrics", "GET", "/metrics", "", "", "", true, 200},
		{"openapi", "GET", "/openapi.json", "", "", "", true, 200},
	} {
		if got := send(tc.method, tc.path, tc.ct, tc.body, tc.key, tc.valid); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
}
