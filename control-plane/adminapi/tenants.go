package adminapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// TenantView is a tenant as the API shows it: key hashes and webhook secrets
// are never returned (credentials are shown once, at creation or rotation).
type TenantView struct {
	ID                 string             `json:"id"`
	Name               string             `json:"name"`
	Tier               string             `json:"tier"`
	Status             string             `json:"status"`
	Regions            []string           `json:"regions"`
	RateLimit          *schemas.RateLimit `json:"rate_limit,omitempty"`
	EffectiveRateLimit schemas.RateLimit  `json:"effective_rate_limit"`
	Features           map[string]bool    `json:"features,omitempty"`
	JWT                *schemas.JWTConfig `json:"jwt,omitempty"`
	ClientIdentities   []string           `json:"client_identities,omitempty"`
	Keys               []KeyView          `json:"keys"`
	Endpoints          []EndpointView     `json:"endpoints"`
	CreatedAt          time.Time          `json:"created_at"`
	UpdatedAt          time.Time          `json:"updated_at"`
	Version            int64              `json:"version"`
}

// KeyView is an API key without its hash.
type KeyView struct {
	ID        string     `json:"id"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// EndpointView is an endpoint without secret values.
type EndpointView struct {
	ID             string                `json:"id"`
	URL            string                `json:"url"`
	EventTypes     []string              `json:"event_types,omitempty"`
	Filter         string                `json:"filter,omitempty"`
	PayloadVersion string                `json:"payload_version,omitempty"`
	Mapping        *schemas.FieldMapping `json:"mapping,omitempty"`
	Disabled       bool                  `json:"disabled,omitempty"`
	DisabledReason string                `json:"disabled_reason,omitempty"`
	Secrets        []SecretView          `json:"secrets"`
}

// SecretView is a webhook secret's id and validity.
type SecretView struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// EffectiveRateLimit is the tier bucket with the tenant's override on top.
func (s *Server) effective(t *schemas.Tenant) schemas.RateLimit {
	if t.RateLimit != nil {
		return *t.RateLimit
	}
	rl := s.opt.Limits.ForTier(t.Tier)
	return schemas.RateLimit{RequestsPerMinute: rl.RequestsPerMinute, BurstSize: rl.BurstSize}
}

// View redacts a tenant for output.
func (s *Server) View(t *schemas.Tenant) TenantView {
	v := TenantView{
		ID: t.ID, Name: t.Name, Tier: t.Tier, Status: t.Status, Regions: t.Regions,
		RateLimit: t.RateLimit, EffectiveRateLimit: s.effective(t), Features: t.Features, JWT: t.JWT,
		ClientIdentities: t.ClientIdentities,
		Keys:             []KeyView{}, Endpoints: []EndpointView{},
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, Version: t.Version,
	}
	if v.Regions == nil {
		v.Regions = []string{}
	}
	for _, k := range t.Keys {
		v.Keys = append(v.Keys, KeyView{ID: k.ID, Prefix: k.Prefix, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt})
	}
	for _, e := range t.Endpoints {
		ev := EndpointView{ID: e.ID, URL: e.URL, EventTypes: e.EventTypes, Filter: e.Filter, PayloadVersion: e.SchemaVersion,
			Mapping: e.Mapping, Disabled: e.Disabled, DisabledReason: e.DisabledReason, Secrets: []SecretView{}}
		for _, sec := range e.Secrets {
			ev.Secrets = append(ev.Secrets, SecretView{ID: sec.ID, CreatedAt: sec.CreatedAt, ExpiresAt: sec.ExpiresAt})
		}
		v.Endpoints = append(v.Endpoints, ev)
	}
	return v
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	switch status {
	case "", schemas.StatusActive, schemas.StatusSuspended, schemas.StatusPending:
	default:
		s.writeError(w, r, &registry.FieldError{Field: "status", Value: status, Reason: "must be active, suspended or pending"})
		return
	}
	out := struct {
		Tenants []TenantView `json:"tenants"`
	}{Tenants: []TenantView{}}
	for _, t := range s.opt.Registry.List() {
		if status == "" || t.Status == status {
			out.Tenants = append(out.Tenants, s.View(t))
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var req registry.CreateRequest
	if !httpx.DecodeJSON(w, r, &req) {
		return
	}
	c, err := s.opt.Writer.Create(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opt.Log.Info("tenant created", "tenant_id", c.Tenant.ID, "tier", c.Tenant.Tier)
	setETag(w, c.Tenant)
	w.Header().Set("Location", "/api/v1/tenants/"+c.Tenant.ID)
	httpx.WriteJSON(w, http.StatusCreated, struct {
		TenantView
		APIKey        string `json:"api_key"`
		WebhookSecret string `json:"webhook_secret"`
	}{s.View(c.Tenant), c.APIKey, c.WebhookSecret})
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	t, ok := s.opt.Registry.GetSynced(r.Context(), r.PathValue("id"))
	if !ok {
		s.writeError(w, r, fmt.Errorf("%w: %s", registry.ErrNotFound, r.PathValue("id")))
		return
	}
	setETag(w, t)
	httpx.WriteJSON(w, http.StatusOK, s.View(t))
}

// ETag is a tenant's entity tag: its version, quoted (a strong validator:
// every change makes a new version).
func ETag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

func setETag(w http.ResponseWriter, t *schemas.Tenant) { w.Header().Set("ETag", ETag(t.Version)) }

// conditional returns the request's context carrying the version If-Match
// names, if it names one. "*" asks only that the tenant exists; a weak tag
// never matches (RFC 9110 compares If-Match strongly), and a list matches
// if the current version is in it.
func (s *Server) conditional(w http.ResponseWriter, r *http.Request) (context.Context, bool) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return r.Context(), true
	}
	var versions []int64
	for _, tag := range strings.Split(h, ",") {
		tag = strings.TrimSpace(tag)
		weak := strings.HasPrefix(tag, "W/")
		tag = strings.TrimPrefix(tag, "W/")
		v, err := strconv.ParseInt(strings.Trim(tag, `"`), 10, 64)
		if weak {
			v = -1 // a weak tag matches nothing
		}
		if err != nil || len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' || (!weak && v < 0) {
			d := problem.New(http.StatusBadRequest, `If-Match must be a tenant ETag like "3" (its version), a list of them, or *`)
			d.Field = "If-Match"
			problem.Write(w, r, d)
			return nil, false
		}
		versions = append(versions, v)
	}
	want := versions[0]
	if cur, ok := s.opt.Registry.Get(r.PathValue("id")); ok && slices.Contains(versions, cur.Version) {
		want = cur.Version
	}
	return registry.WithExpectedVersion(r.Context(), want), true
}

func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request) {
	var p registry.Patch
	if !httpx.DecodeJSON(w, r, &p) {
		return
	}
	ctx, ok := s.conditional(w, r)
	if !ok {
		return
	}
	t, err := s.opt.Writer.Update(ctx, r.PathValue("id"), p)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opt.Log.Info("tenant updated", "tenant_id", t.ID, "version", t.Version)
	setETag(w, t)
	httpx.WriteJSON(w, http.StatusOK, s.View(t))
}

func (s *Server) setStatus(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, ok := s.conditional(w, r)
		if !ok {
			return
		}
		t, err := s.opt.Writer.SetStatus(ctx, r.PathValue("id"), status)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.opt.Log.Info("tenant status changed", "tenant_id", t.ID, "status", status, "version", t.Version)
		setETag(w, t)
		httpx.WriteJSON(w, http.StatusOK, s.View(t))
	}
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.conditional(w, r)
	if !ok {
		return
	}
	t, key, err := s.opt.Writer.RotateKey(ctx, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opt.Log.Info("api key rotated", "tenant_id", t.ID, "version", t.Version)
	setETag(w, t)
	httpx.WriteJSON(w, http.StatusOK, struct {
		Tenant TenantView `json:"tenant"`
		APIKey string     `json:"api_key"`
	}{s.View(t), key})
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) {
	ctx, ok := s.conditional(w, r)
	if !ok {
		return
	}
	t, secret, err := s.opt.Writer.RotateSecret(ctx, r.PathValue("id"), r.URL.Query().Get("endpoint_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opt.Log.Info("webhook secret rotated", "tenant_id", t.ID, "version", t.Version)
	setETag(w, t)
	httpx.WriteJSON(w, http.StatusOK, struct {
		Tenant        TenantView `json:"tenant"`
		WebhookSecret string     `json:"webhook_secret"`
	}{s.View(t), secret})
}

func (s *Server) resealSecrets(w http.ResponseWriter, r *http.Request) {
	res, err := s.opt.Writer.ResealSecrets(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.opt.Log.Info("webhook secrets re-encrypted", "active_key", res.ActiveKey, "resealed", res.Resealed,
		"unreadable", len(res.Unreadable), "unavailable", len(res.Unavailable))
	httpx.WriteJSON(w, http.StatusOK, res)
}
