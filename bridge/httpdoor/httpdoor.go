// Package httpdoor is the HTTP front door: POST /v2/invokeARI (wire-compatible with the
// hosted InvokeARI API), call control (GET /v2/calls, GET and DELETE /v2/calls/{id}),
// the operations endpoints /healthz, /readyz and /metrics, and /openapi.json, the
// OpenAPI document of them all.
package httpdoor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/invokeari/invokeari/bridge/api"
	"github.com/invokeari/invokeari/stasisapp"
)

// Originator places a call and follows it until the request's wait is satisfied;
// *stasisapp.App implements it.
type Originator interface {
	Originate(ctx context.Context, req stasisapp.Request) (stasisapp.Result, error)
}

// Readiness reports whether the daemon can take calls, with per-component detail.
type Readiness interface {
	Ready() (ok bool, detail any)
}

// Config wires the door.
type Config struct {
	Originator Originator
	Gate       *api.Gate
	Readiness  Readiness
	// Calls serves the call-control routes (optional: without it they are not served).
	Calls api.CallControl
	// Metrics serves GET /metrics (optional).
	Metrics http.Handler
	// Observe is told each originate's key name and reply status (optional, for metrics).
	Observe func(key string, status int)
	Logger  *slog.Logger
}

// Handler serves the door's routes.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	routes []string
}

var _ Originator = (*stasisapp.App)(nil)

// New builds the door's handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	h.handle("/v2/invokeARI", http.HandlerFunc(h.invoke))
	if cfg.Calls != nil {
		h.handle("GET /v2/calls", http.HandlerFunc(h.listCalls))
		h.handle("GET /v2/calls/{id}", http.HandlerFunc(h.getCall))
		h.handle("DELETE /v2/calls/{id}", http.HandlerFunc(h.hangupCall))
	}
	h.handle("GET /healthz", http.HandlerFunc(h.healthz))
	h.handle("GET /readyz", http.HandlerFunc(h.readyz))
	if cfg.Metrics != nil {
		h.handle("GET /metrics", cfg.Metrics)
	}
	h.handle("GET /openapi.json", http.HandlerFunc(serveOpenAPI))
	return h
}

func (h *Handler) handle(pattern string, handler http.Handler) {
	h.mux.Handle(pattern, handler)
	h.routes = append(h.routes, pattern)
}

// Routes lists the ServeMux patterns the handler serves, in registration order
// (the OpenAPI test checks each is documented).
func (h *Handler) Routes() []string { return append([]string(nil), h.routes...) }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) invoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, "", &api.Error{Status: http.StatusMethodNotAllowed, Code: api.CodeMethodNotAllowed,
			Message: "use POST"}, nil)
		return
	}
	p, aerr := h.cfg.Gate.Authenticate(r.Header.Get("X-API-Key"))
	if aerr != nil {
		h.fail(w, r, "", aerr, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.fail(w, r, p.Name, api.BodyTooLarge(), nil)
			return
		}
		h.fail(w, r, p.Name, &api.Error{Status: http.StatusBadRequest, Code: api.CodeInvalidBody,
			Message: "could not read the request body"}, nil)
		return
	}
	f, aerr := api.DecodeBody(r.Header.Get("Content-Type"), body)
	if aerr == nil {
		aerr = f.MergeIdempotencyKey(r.Header.Get("Idempotency-Key"))
	}
	if aerr != nil {
		h.fail(w, r, p.Name, aerr, nil)
		return
	}
	req, aerr := h.cfg.Gate.Build(p, f)
	if aerr != nil {
		h.fail(w, r, p.Name, aerr, nil)
		return
	}
	release, aerr := h.cfg.Gate.Admit(p, req.Server)
	if aerr != nil {
		h.fail(w, r, p.Name, aerr, nil)
		return
	}
	req.Release = release
	req.Door = "http"
	res, err := h.cfg.Originator.Originate(r.Context(), req)
	if err != nil {
		h.fail(w, r, p.Name, api.FromOriginateError(err), resultOrNil(res))
		return
	}
	env, status := api.Success(res, req.Wait)
	h.observe(p.Name, status)
	writeJSON(w, status, env)
}

// resultOrNil keeps a partial result (the call exists) and drops an empty one.
func resultOrNil(res stasisapp.Result) *stasisapp.Result {
	if res.Call.ID == "" {
		return nil
	}
	return &res
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, key string, e *api.Error, res *stasisapp.Result) {
	env, status := api.Failure(e, res)
	if s := e.RetryAfterSeconds(); s > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(s))
	}
	if status >= 500 {
		h.log.Warn("originate failed", "key", key, "status", status, "code", e.Code, "err", e.Message, "remote", r.RemoteAddr)
	} else {
		h.log.Info("originate refused", "key", key, "status", status, "code", e.Code, "field", e.Field, "remote", r.RemoteAddr)
	}
	h.observe(key, status)
	writeJSON(w, status, env)
}

func (h *Handler) observe(key string, status int) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(key, status)
	}
}

func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "time": time.Now().UTC()})
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, detail := h.cfg.Readiness.Ready()
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ok, "detail": detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing left to tell it
}

// Serve runs an HTTP server for h on ln-less addr until ctx ends, then shuts it down
// gracefully (in-flight replies get until drain).
func Serve(ctx context.Context, srv *http.Server, listen func() error, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- listen() }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	return err
}

// NewServer returns an http.Server with the slow-client limits of SPEC §7. Replies may
// wait for a call to be answered, so there is no write timeout: each wait has its own
// deadline inside the App.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}
