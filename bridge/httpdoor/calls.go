package httpdoor

import (
	"context"
	"net/http"
	"strconv"

	"github.com/invokeari/invokeari/bridge/api"
)

// The call-control routes (SPEC §8). Rules and replies are bridge/api's; these only
// carry the key, the path value and the query in, and the envelope out.

func (h *Handler) getCall(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, api.GetCall)
}

func (h *Handler) hangupCall(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, api.HangupCall)
}

// control serves a /v2/calls/{id} route with do (api.GetCall or api.HangupCall).
func (h *Handler) control(w http.ResponseWriter, r *http.Request,
	do func(context.Context, api.CallControl, *api.Principal, api.ControlFields) (api.Envelope, int)) {
	p, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	f, aerr := api.DecodeControlQuery(r.PathValue("id"), r.URL.Query())
	if aerr != nil {
		env, status := api.Failure(aerr, nil)
		h.controlReply(w, r, p.Name, env, status)
		return
	}
	env, status := do(r.Context(), h.cfg.Calls, p, f)
	h.controlReply(w, r, p.Name, env, status)
}

func (h *Handler) listCalls(w http.ResponseWriter, r *http.Request) {
	p, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	q, aerr := api.DecodeListQuery(r.URL.Query())
	if aerr != nil {
		env, status := api.Failure(aerr, nil)
		h.controlReply(w, r, p.Name, env, status)
		return
	}
	env, status := api.ListCalls(h.cfg.Calls, p, q)
	h.controlReply(w, r, p.Name, env, status)
}

// authenticate checks X-API-Key and answers the failure itself.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (*api.Principal, bool) {
	p, aerr := h.cfg.Gate.Authenticate(r.Header.Get("X-API-Key"))
	if aerr != nil {
		env, status := api.Failure(aerr, nil)
		h.controlReply(w, r, "", env, status)
		return nil, false
	}
	return p, true
}

func (h *Handler) controlReply(w http.ResponseWriter, r *http.Request, key string, env api.Envelope, status int) {
	if e := env.Error; e != nil {
		if s := e.RetryAfterSeconds(); s > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(s))
		}
		h.log.Info("call control refused", "method", r.Method, "path", r.URL.Path, "key", key,
			"status", status, "code", e.Code, "field", e.Field, "remote", r.RemoteAddr)
	}
	writeJSON(w, status, env)
}
