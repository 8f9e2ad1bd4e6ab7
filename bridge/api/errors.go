package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/invokeari/invokeari/stasisapp"
	"github.com/invokeari/invokeari/stasisapp/ari"
)

// Error codes: the `error.code` of a non-200 envelope. Clients switch on these; they are
// part of the contract and never change meaning.
const (
	CodeUnsupportedMediaType = "unsupported_media_type" // 415
	CodeBodyTooLarge         = "body_too_large"         // 413
	CodeInvalidBody          = "invalid_body"           // 400 malformed form or JSON
	CodeInvalidEncoding      = "invalid_encoding"       // 400 not UTF-8
	CodeDuplicateField       = "duplicate_field"        // 400
	CodeUnknownField         = "unknown_field"          // 400 (JSON only)
	CodeInvalidType          = "invalid_type"           // 400 (JSON only)
	CodeMissingField         = "missing_field"          // 400
	CodeInvalidField         = "invalid_field"          // 400
	CodeUnknownServer        = "unknown_server"         // 400
	CodeMissingAPIKey        = "missing_api_key"        // 401
	CodeInvalidAPIKey        = "invalid_api_key"        // 401
	CodeDestinationDenied    = "destination_not_allowed"
	CodeContextDenied        = "context_not_allowed"
	CodeVariableDenied       = "variable_not_allowed"
	CodeServerDenied         = "server_not_allowed"
	CodeTimeoutDenied        = "timeout_not_allowed"
	CodeBadARICredentials    = "bad_ari_credentials"
	CodeWebhookDenied        = "webhook_not_allowed"  // 403 callback or e URL not allowed for the key
	CodeIdempotencyConflict  = "idempotency_conflict" // 409
	CodeRateLimited          = "rate_limited"         // 429 per-key rate
	CodeTooManyConcurrent    = "too_many_concurrent"  // 429 per-key max_concurrent
	CodeTooManyInFlight      = "too_many_in_flight"   // 429 global cap
	CodeServerCPS            = "server_cps_limited"   // 429 per-server calls per second
	CodeNotConnected         = "not_connected"        // 503
	CodeDraining             = "draining"             // 503
	CodeBackpressure         = "backpressure"         // 503
	CodeCanceled             = "canceled"             // 503 request context canceled
	CodeARIError             = "ari_error"            // 502 ARI answered with an error
	CodeARIUnreachable       = "ari_unreachable"      // 502 transport failure
	CodeWaitTimeout          = "wait_timeout"         // 504
	CodeInternal             = "internal"             // 500
	CodeMethodNotAllowed     = "method_not_allowed"   // 405
	CodeCallNotFound         = "call_not_found"       // 404 unknown call id, or another key's call
	CodeLookupUnavailable    = "lookup_unavailable"   // 503 the record of ended calls cannot be read
)

// Error is the `error` object of the reply envelope plus the HTTP status to reply with.
// Messages name the problem but never carry secrets (API keys, ARI passwords).
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// RetryAfter is set on 429 and on back-pressure 503; doors send it as Retry-After
	// (rounded up to whole seconds).
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%d %s (%s): %s", e.Status, e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds (at least 1 when set), the
// value of a Retry-After header.
func (e *Error) RetryAfterSeconds() int {
	if e.RetryAfter <= 0 {
		return 0
	}
	s := int((e.RetryAfter + time.Second - 1) / time.Second)
	return max(s, 1)
}

func newError(status int, code, field, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

func badField(field, format string, args ...any) *Error {
	return newError(http.StatusBadRequest, CodeInvalidField, field, format, args...)
}

func forbidden(code, field, format string, args ...any) *Error {
	return newError(http.StatusForbidden, code, field, format, args...)
}

// BodyTooLarge is the 413 for a body over MaxBody; the door detects it (it owns the reader).
func BodyTooLarge() *Error {
	return newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "",
		"request body is over %d bytes", MaxBody)
}

// Internal is a 500 for a failure that is the daemon's fault; msg must not hold secrets.
func Internal(msg string) *Error {
	return newError(http.StatusInternalServerError, CodeInternal, "", "%s", msg)
}

// backpressureRetry is the Retry-After suggested when the daemon sheds load.
const backpressureRetry = time.Second

// FromOriginateError maps an error from stasisapp.App.Originate to the reply Error.
// It returns nil for a nil err.
func FromOriginateError(err error) *Error {
	var ae *ari.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, stasisapp.ErrNotConnected):
		return newError(http.StatusServiceUnavailable, CodeNotConnected, "ari", "%s", stasisapp.ErrNotConnected)
	case errors.Is(err, stasisapp.ErrDraining):
		return newError(http.StatusServiceUnavailable, CodeDraining, "", "%s", stasisapp.ErrDraining)
	case errors.Is(err, stasisapp.ErrBackpressure):
		e := newError(http.StatusServiceUnavailable, CodeBackpressure, "", "%s", stasisapp.ErrBackpressure)
		e.RetryAfter = backpressureRetry
		return e
	case errors.Is(err, stasisapp.ErrDynamicCredentials):
		return forbidden(CodeBadARICredentials, "aripass", "%s", stasisapp.ErrDynamicCredentials)
	case errors.Is(err, stasisapp.ErrUnknownServer):
		return newError(http.StatusBadRequest, CodeUnknownServer, "ari", "%s", stasisapp.ErrUnknownServer)
	case errors.Is(err, stasisapp.ErrIdempotencyConflict):
		return newError(http.StatusConflict, CodeIdempotencyConflict, "id", "%s", stasisapp.ErrIdempotencyConflict)
	case errors.Is(err, stasisapp.ErrWaitTimeout):
		return newError(http.StatusGatewayTimeout, CodeWaitTimeout, "", "%s", stasisapp.ErrWaitTimeout)
	case errors.As(err, &ae):
		msg := ae.Message
		if msg == "" {
			msg = http.StatusText(ae.Status)
		}
		return newError(http.StatusBadGateway, CodeARIError, "", "ARI answered %d: %s", ae.Status, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusGatewayTimeout, CodeWaitTimeout, "", "deadline exceeded before the awaited call state")
	case errors.Is(err, context.Canceled):
		return newError(http.StatusServiceUnavailable, CodeCanceled, "", "request canceled")
	default:
		return newError(http.StatusBadGateway, CodeARIUnreachable, "", "ARI could not be reached: %v", err)
	}
}
