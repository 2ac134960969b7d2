// Package adminapi owns the HTTP API of operators and analysts on
// listeners.admin (127.0.0.1:8080): the server each process runs (bearer
// credentials, panics answered 500, unknown /api/ routes 404), the tenant
// handlers under /api/v1/tenants, health, readiness and Prometheus metrics.
// Which routes a process serves comes from internal/runner/routes; the
// handlers of other areas (DLQ, ROI, webhook test) are mounted beside these
// by internal/runner. Errors are RFC 9457 problem details. The contract is
// schemas/openapi/openapi.yaml, and the server enforces it (contract.go):
// every request to a route of the spec is validated against its operation
// before the handler runs, whoever wrote the handler, a method a path does
// not declare is a 405 with Allow, and GET /api/v1/openapi.json serves the
// document as enforced. Tests check every exchange against it (kin-openapi)
// and make test runs Schemathesis against a dev process. Tenant writes are
// compare-and-set (control-plane/registry): 409 with current_version and
// the ETag when they lose; If-Match makes them conditional.
package adminapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/schemas"
)

// Check is a readiness check; nil means healthy.
type Check func(ctx context.Context) error

// Options configure the server.
type Options struct {
	Token    string
	Pepper   string
	Registry *registry.Registry // resolves tenant API keys (every process follows it)
	Writer   *registry.Writer   // tenant changes: only the tenant routes use it
	Limits   config.RateLimits
	Gatherer prometheus.Gatherer // served by the metrics operation; nil: an empty one
	Log      *slog.Logger
	// Contract is the spec the server enforces on every request to a
	// route of it; nil: the spec with Regions as its Region enum.
	Contract *Contract
	Regions  []string
	Features []string // the configured feature flags (nil: the spec's own)
}

// Server is the HTTP API of one process: its routes are mounted from the
// route table (internal/runner/routes) with Mount, each behind the
// credential the table names; every other /api/ path answers 404 with a
// problem.
type Server struct {
	opt         Options
	mux         *http.ServeMux
	mu          sync.Mutex
	checks      map[string]Check
	contract    *Contract
	contractErr error
}

// New returns a server with no routes mounted. A path it does not serve is
// a 404 problem; a path it serves with another method a 405 problem with
// Allow.
func New(opt Options) *Server {
	s := &Server{opt: opt, mux: http.NewServeMux(), checks: map[string]Check{}, contract: opt.Contract}
	if s.contract == nil {
		s.contract, s.contractErr = LoadContract(opt.Regions, opt.Features)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := methodsFor(s.mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			problem.Error(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/") {
			problem.Error(w, r, http.StatusNotFound, "no such API route: "+r.Method+" "+r.URL.Path)
			return
		}
		problem.Error(w, r, http.StatusNotFound, "not found: "+r.URL.Path)
	})
	return s
}

// Contract is the spec the server enforces and serves.
func (s *Server) Contract() *Contract { return s.contract }

// Handlers are the server's own operations by operationId: probes,
// metrics and the tenant admin API.
func (s *Server) Handlers() map[string]http.HandlerFunc {
	h := map[string]http.HandlerFunc{
		"healthz": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok\n")
		},
		"readyz":         s.readyz,
		"listTenants":    s.listTenants,
		"createTenant":   s.createTenant,
		"getTenant":      s.getTenant,
		"updateTenant":   s.updateTenant,
		"suspendTenant":  s.setStatus(schemas.StatusSuspended),
		"activateTenant": s.setStatus(schemas.StatusActive),
		"rotateKey":      s.rotateKey,
		"rotateSecret":   s.rotateSecret,
		"resealSecrets":  s.resealSecrets,
	}
	g := s.opt.Gatherer
	if g == nil {
		g = prometheus.NewRegistry() // nothing registered: an empty exposition
	}
	h["metrics"] = promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP
	h["openapi"] = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.contract.JSON())
	}
	return h
}

// Mount serves rs, each with handlers[r.Operation] behind the route's
// credential. A route without a handler is an error: a process never
// advertises a route it cannot answer.
func (s *Server) Mount(rs []routes.Route, handlers map[string]http.HandlerFunc) error {
	if s.contractErr != nil {
		return s.contractErr
	}
	for _, r := range rs {
		h, ok := handlers[r.Operation]
		if !ok {
			return fmt.Errorf("adminapi: no handler for %s (%s)", r.Pattern, r.Operation)
		}
		// The credential first (an unauthenticated caller learns nothing
		// about the API's shape), then the spec, then the handler.
		h = s.contract.validate(r, h)
		switch r.Auth {
		case routes.Public:
			s.mux.Handle(r.Pattern, h)
		case routes.Admin:
			s.HandleAdmin(r.Pattern, h)
		case routes.Tenant:
			s.HandleTenant(r.Pattern, false, h)
		case routes.TenantOrAdmin:
			s.HandleTenant(r.Pattern, true, h)
		case routes.Session:
			s.mux.Handle(r.Pattern, h) // the UI authenticates its own sessions
		default:
			return fmt.Errorf("adminapi: %s: unknown credential %d", r.Pattern, r.Auth)
		}
	}
	return nil
}

// AddCheck registers a readiness check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			s.opt.Log.Error("panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v))
			problem.Error(w, r, http.StatusInternalServerError, "internal error")
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// HandleAdmin mounts h behind the admin token.
func (s *Server) HandleAdmin(pattern string, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.adminAuth(h))
}

// HandleTenant mounts h behind a tenant API key; h finds the tenant with
// authctx.TenantFrom. If admin is true the admin token is accepted too (no
// tenant in the context then).
func (s *Server) HandleTenant(pattern string, admin bool, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.tenantAuth(admin, h))
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func unauthorized(w http.ResponseWriter, r *http.Request, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="partners-engine"`)
	problem.Error(w, r, http.StatusUnauthorized, detail)
}

func (s *Server) isAdmin(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.opt.Token)) == 1
}

func (s *Server) adminAuth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		if !ok {
			unauthorized(w, r, "missing bearer token")
			return
		}
		if !s.isAdmin(tok) {
			unauthorized(w, r, "invalid admin token")
			return
		}
		h(w, r)
	})
}

func (s *Server) tenantAuth(admin bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		if !ok {
			unauthorized(w, r, "missing bearer token")
			return
		}
		if admin && s.isAdmin(tok) {
			h(w, r)
			return
		}
		if !apikey.LooksValid(tok) {
			unauthorized(w, r, "invalid API key")
			return
		}
		t, ok := s.opt.Registry.ByKeyHash(apikey.Hash(s.opt.Pepper, tok), time.Now())
		if !ok {
			unauthorized(w, r, "invalid API key")
			return
		}
		if t.Status != schemas.StatusActive {
			problem.Error(w, r, http.StatusForbidden, "tenant is "+t.Status)
			return
		}
		h(w, r.WithContext(authctx.WithTenant(r.Context(), t)))
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	out := struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}{Ready: true, Checks: map[string]string{}}
	for _, n := range names {
		s.mu.Lock()
		c := s.checks[n]
		s.mu.Unlock()
		if err := c(ctx); err != nil {
			out.Ready = false
			out.Checks[n] = err.Error()
		} else {
			out.Checks[n] = "ok"
		}
	}
	status := http.StatusOK
	if !out.Ready {
		status = http.StatusServiceUnavailable
	}
	httpx.WriteJSON(w, status, out)
}

// conflictProblem is a 409: the tenant's current version, when there is one,
// is in current_version (and the ETag header), so a client can re-read and
// retry.
type conflictProblem struct {
	problem.Details
	CurrentVersion int64 `json:"current_version,omitempty"`
}

// writeError maps registry errors to problems: the one place statuses are chosen.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var fe *registry.FieldError
	switch {
	case errors.As(err, &fe):
		d := problem.New(http.StatusBadRequest, fe.Error())
		d.Field = fe.Field
		problem.Write(w, r, d)
	case errors.Is(err, registry.ErrNotFound):
		problem.Error(w, r, http.StatusNotFound, err.Error())
	case errors.Is(err, registry.ErrConflict):
		var ce *registry.ConflictError
		d := conflictProblem{Details: problem.New(http.StatusConflict, err.Error())}
		if errors.As(err, &ce) && ce.Current > 0 {
			d.CurrentVersion = ce.Current
			w.Header().Set("ETag", ETag(ce.Current))
		}
		d.Instance = r.URL.Path
		w.Header().Set("Content-Type", problem.ContentType)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(d)
	case errors.Is(err, registry.ErrTooLarge):
		problem.Error(w, r, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, context.Canceled):
		problem.Error(w, r, http.StatusServiceUnavailable, "request cancelled")
	default:
		s.opt.Log.Error("admin API error", "path", r.URL.Path, "err", err)
		problem.Error(w, r, http.StatusServiceUnavailable, "the tenants topic is unavailable; retry")
	}
}
