package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"

	"github.com/invokeari/invokeari/events"
	"github.com/invokeari/invokeari/stasisapp"
)

// Call control (SPEC §8): GET /v2/calls/{id}, GET /v2/calls, DELETE /v2/calls/{id} and
// their NATS twins invokeari.calls.get and invokeari.hangup. The doors authenticate and
// carry the raw strings here; every rule (id syntax, list query, who may see which
// call, reply status and envelope) is in this file, once.

// CallControl is what the call-control requests need from the App; *stasisapp.App
// implements it. owner "" means every key's calls.
type CallControl interface {
	Get(ctx context.Context, id, owner string) (events.Call, bool, error)
	List(f stasisapp.ListFilter) (stasisapp.CallPage, error)
	Hangup(ctx context.Context, id, owner, note string) (stasisapp.HangupResult, error)
}

var _ CallControl = (*stasisapp.App)(nil)

// MaxHangupReason bounds the optional reason of a hangup, in bytes.
const MaxHangupReason = 128

// ControlFields are the raw fields of a call-control request: the NATS body of
// invokeari.calls.get and invokeari.hangup, or an HTTP route's path value and query.
type ControlFields struct {
	ID, Reason string
}

// controlFields is the wire table of ControlFields.
var controlFields = []wireField[ControlFields]{
	{"id", func(f *ControlFields) *string { return &f.ID }},
	{"reason", func(f *ControlFields) *string { return &f.Reason }},
}

// ControlFieldNames lists the wire fields of a call-control request.
func ControlFieldNames() []string { return names(controlFields) }

// DecodeControl decodes the JSON body `{id, reason?}` of a call-control NATS request,
// as strictly as an originate body (unknown or repeated fields are refused).
func DecodeControl(body []byte) (ControlFields, *Error) {
	if len(body) > MaxBody {
		return ControlFields{}, BodyTooLarge()
	}
	var f ControlFields
	if e := decodeJSONObject(body, func(name string) *string { return lookupField(controlFields, &f, name) }); e != nil {
		return ControlFields{}, e
	}
	return f, nil
}

// ListQuery is the raw query of GET /v2/calls.
type ListQuery struct {
	State, Server, Limit, Cursor string
}

var listFields = []wireField[ListQuery]{
	{"state", func(q *ListQuery) *string { return &q.State }},
	{"server", func(q *ListQuery) *string { return &q.Server }},
	{"limit", func(q *ListQuery) *string { return &q.Limit }},
	{"cursor", func(q *ListQuery) *string { return &q.Cursor }},
}

// ListFieldNames lists the query parameters of GET /v2/calls.
func ListFieldNames() []string { return names(listFields) }

// DecodeListQuery takes GET /v2/calls's query parameters (as url.Values): an unknown or
// repeated parameter is refused, as in a JSON body.
func DecodeListQuery(values map[string][]string) (ListQuery, *Error) {
	var q ListQuery
	return q, decodeQuery(listFields, &q, values)
}

// DecodeControlQuery takes the call id of a /v2/calls/{id} route and its query
// parameters (only `reason`, and only on DELETE; GetCall refuses it).
func DecodeControlQuery(id string, values map[string][]string) (ControlFields, *Error) {
	var f ControlFields
	if _, ok := values["id"]; ok {
		return ControlFields{}, newError(http.StatusBadRequest, CodeUnknownField, "id", "the call id goes in the path, not the query")
	}
	if e := decodeQuery(controlFields, &f, values); e != nil {
		return ControlFields{}, e
	}
	f.ID = id
	return f, nil
}

func decodeQuery[T any](table []wireField[T], v *T, values map[string][]string) *Error {
	for name, vs := range values {
		p := lookupField(table, v, name)
		switch {
		case p == nil:
			return newError(http.StatusBadRequest, CodeUnknownField, safeName(name), "unknown query parameter %q", safeName(name))
		case len(vs) > 1:
			return newError(http.StatusBadRequest, CodeDuplicateField, name, "query parameter %s given more than once", name)
		case len(vs) == 1:
			*p = vs[0]
		}
	}
	return nil
}

// MaxCursor bounds a list cursor, in bytes.
const MaxCursor = 512

var reLimit = regexp.MustCompile(`^[0-9]{1,4}$`)

// owner is whose calls p may see: "" (all) for an admin key and for the internal
// principal of a trusted bus, else the key's name.
func (p *Principal) owner() string {
	if p.key.Admin {
		return ""
	}
	return p.Name
}

// authenticated refuses a nil principal (a door bug) the way Build does.
func authenticated(p *Principal) *Error {
	if p == nil || p.key == nil {
		return newError(http.StatusUnauthorized, CodeMissingAPIKey, "", "not authenticated")
	}
	return nil
}

func checkCallID(id string) *Error {
	switch {
	case id == "":
		return newError(http.StatusBadRequest, CodeMissingField, "id", "id (the call id) is required")
	case !reID.MatchString(id):
		return badField("id", "id must be 1-64 of [A-Za-z0-9_-]")
	}
	return nil
}

// GetCall answers GET /v2/calls/{id} and invokeari.calls.get: the call's record, 404
// call_not_found for an unknown id or another key's call.
func GetCall(ctx context.Context, cc CallControl, p *Principal, f ControlFields) (Envelope, int) {
	if e := firstError(authenticated(p), checkCallID(f.ID), noReason(f.Reason)); e != nil {
		return Failure(e, nil)
	}
	rec, found, err := cc.Get(ctx, f.ID, p.owner())
	switch {
	case err != nil:
		return Failure(FromControlError(err), nil)
	case !found:
		return Failure(FromControlError(stasisapp.ErrCallNotFound), nil)
	}
	return callReply(rec, 0), http.StatusOK
}

// noReason refuses a reason on a request that takes none (invokeari.calls.get).
func noReason(reason string) *Error {
	if reason != "" {
		return newError(http.StatusBadRequest, CodeUnknownField, "reason", "reason is only taken by a hangup")
	}
	return nil
}

// ListCalls answers GET /v2/calls: a page of the calls p may see, newest first.
func ListCalls(cc CallControl, p *Principal, q ListQuery) (Envelope, int) {
	if e := authenticated(p); e != nil {
		return Failure(e, nil)
	}
	f := stasisapp.ListFilter{Owner: p.owner(), Cursor: q.Cursor}
	switch q.State {
	case "", stasisapp.ListActive, stasisapp.ListEnded:
		f.State = q.State
	default:
		return Failure(badField("state", "state must be active or ended"), nil)
	}
	if q.Server != "" {
		if !reName.MatchString(q.Server) {
			return Failure(badField("server", "server must be a server name, 1-64 of [A-Za-z0-9_.-]"), nil)
		}
		f.Server = q.Server
	}
	if q.Limit != "" {
		n, _ := strconv.Atoi(q.Limit)
		if !reLimit.MatchString(q.Limit) || n < 1 || n > stasisapp.MaxListLimit {
			return Failure(badField("limit", "limit must be a whole number, 1-%d", stasisapp.MaxListLimit), nil)
		}
		f.Limit = n
	}
	if len(q.Cursor) > MaxCursor {
		return Failure(FromControlError(stasisapp.ErrBadCursor), nil)
	}
	page, err := cc.List(f)
	if err != nil {
		return Failure(FromControlError(err), nil)
	}
	env := Envelope{Status: StatusSuccess, Response: EnvResponse{Success: true}, Calls: page.Calls, NextCursor: page.Next}
	if env.Calls == nil {
		env.Calls = []events.Call{}
	}
	return env, http.StatusOK
}

// HangupCall answers DELETE /v2/calls/{id} and invokeari.hangup: 200 with the ended
// call once Asterisk confirmed the end (or it had ended before), 202 with the call as
// it is when the wait bound passed first (its end follows in events).
func HangupCall(ctx context.Context, cc CallControl, p *Principal, f ControlFields) (Envelope, int) {
	if e := firstError(authenticated(p), checkCallID(f.ID), checkText("reason", f.Reason, MaxHangupReason)); e != nil {
		return Failure(e, nil)
	}
	res, err := cc.Hangup(ctx, f.ID, p.owner(), f.Reason)
	if err != nil {
		var partial *stasisapp.Result
		if res.Call.ID != "" {
			partial = &stasisapp.Result{Call: res.Call, ARIStatus: res.ARIStatus}
		}
		return Failure(FromControlError(err), partial)
	}
	env := callReply(res.Call, res.ARIStatus)
	env.Hangup = &HangupState{Confirmed: res.Confirmed}
	if !res.Confirmed {
		env.Hangup.Message = "the end of the call was not confirmed by Asterisk within the wait bound; it follows as events"
		return env, http.StatusAccepted
	}
	return env, http.StatusOK
}

// HangupState is the envelope's `hangup` object on a hangup reply.
type HangupState struct {
	// Confirmed: the call has ended (Asterisk confirmed it, or it had ended before).
	Confirmed bool   `json:"confirmed"`
	Message   string `json:"message,omitempty"`
}

func callReply(rec events.Call, ariStatus int) Envelope {
	return Envelope{Status: StatusSuccess, Response: EnvResponse{Success: true, HTTPCode: ariStatus}, Call: &rec}
}

func firstError(errs ...*Error) *Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// FromControlError maps an error of the call-control methods to the reply Error; those
// the originate path shares (ARI, connection) map as for an originate.
func FromControlError(err error) *Error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, stasisapp.ErrCallNotFound):
		return newError(http.StatusNotFound, CodeCallNotFound, "id", "no call by that id is known to this key")
	case errors.Is(err, stasisapp.ErrBadCursor):
		return badField("cursor", "%s", stasisapp.ErrBadCursor)
	case errors.Is(err, stasisapp.ErrLookup):
		return newError(http.StatusServiceUnavailable, CodeLookupUnavailable, "", "the record of ended calls cannot be read now; retry")
	}
	return FromOriginateError(err)
}
