package api

import (
	"net/http"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
)

// Envelope is the reply of both doors (SPEC §2): the hosted API's original envelope plus
// `call`, `error` and `debug`.
type Envelope struct {
	Status   string       `json:"status"` // "success" or "fail"
	Response EnvResponse  `json:"response"`
	Call     *events.Call `json:"call,omitempty"`
	// Calls and NextCursor are a page of GET /v2/calls (NextCursor empty on the last page).
	Calls      []events.Call `json:"calls,omitzero"`
	NextCursor string        `json:"next_cursor,omitempty"`
	// Hangup says, on a hangup reply, whether the end of the call was confirmed.
	Hangup *HangupState `json:"hangup,omitempty"`
	Error  *Error       `json:"error,omitempty"`
	Debug  *Debug       `json:"debug,omitempty"`
}

// EnvResponse is the envelope's `response` object, kept as the hosted API shaped it.
type EnvResponse struct {
	Success  bool `json:"success"`
	HTTPCode int  `json:"http_code"` // ARI's HTTP status; 0 when ARI was not reached
	Response any  `json:"response"`  // ARI's decoded body
	// CurlError is the transport error text (the name is kept for existing clients).
	CurlError string `json:"curl_error"`
}

// Debug is the envelope's `debug` object. It never holds secrets.
type Debug struct {
	Transcript []stasisapp.Step `json:"transcript"`
}

// Envelope status values.
const (
	StatusSuccess = "success"
	StatusFail    = "fail"
)

// Success is the reply to a request that was carried out; the HTTP status is always 200
// (a busy callee is not an HTTP error). status/success are true when Asterisk accepted
// the originate and, for wait=answer|end, the call was answered.
func Success(res stasisapp.Result, wait stasisapp.Wait) (Envelope, int) {
	ok := res.ARIStatus >= 200 && res.ARIStatus < 300
	if ok && wait != stasisapp.WaitAccepted {
		ok = wasAnswered(res.Call)
	}
	env := envelopeFrom(&res)
	env.Response.Success = ok
	env.Status = StatusFail
	if ok {
		env.Status = StatusSuccess
	}
	return env, http.StatusOK
}

func wasAnswered(c events.Call) bool {
	return c.Outcome == events.Answered || c.Outcome == events.Completed || c.AnsweredAt != nil
}

// Failure is the reply to a request that was not carried out: status fail, the error,
// and what is known of the call when res is not nil. The int is e.Status (500 for a nil
// e, which is a bug in the caller).
func Failure(e *Error, res *stasisapp.Result) (Envelope, int) {
	if e == nil {
		e = Internal("unknown error")
	}
	env := envelopeFrom(res)
	env.Status = StatusFail
	env.Error = e
	return env, e.Status
}

func envelopeFrom(res *stasisapp.Result) Envelope {
	var env Envelope
	if res == nil {
		return env
	}
	env.Response = EnvResponse{HTTPCode: res.ARIStatus, Response: res.ARIBody, CurlError: res.TransportError}
	if res.Call.ID != "" {
		c := res.Call
		env.Call = &c
	}
	if len(res.Transcript) > 0 {
		env.Debug = &Debug{Transcript: res.Transcript}
	}
	return env
}
