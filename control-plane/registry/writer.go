package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/schemas"
)

// Error kinds the admin API maps to HTTP statuses.
var (
	ErrNotFound = errors.New("tenant not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// FieldError is an invalid request field.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s (got %q)", e.Field, e.Reason, e.Value)
}

func (e *FieldError) Unwrap() error { return ErrInvalid }

func invalid(field, value, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason}
}

// Producer is what the Writer needs of a Kafka client.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	Topic         string
	Pepper        string
	Regions       []string // configured regions; tenants may only name these
	KeyOverlap    time.Duration
	SecretOverlap time.Duration
	Now           func() time.Time
}

// Writer changes tenants: it reads the current state from the Registry,
// produces the new version to the tenants topic and waits until the registry
// applied it (read-your-writes). One Writer per cluster is assumed; the
// version check makes concurrent writers fail with ErrConflict rather than
// overwrite each other.
type Writer struct {
	reg  *Registry
	prod Producer
	opt  WriterOptions
	mu   sync.Mutex
}

// NewWriter returns a Writer.
func NewWriter(reg *Registry, prod Producer, opt WriterOptions) *Writer {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Writer{reg: reg, prod: prod, opt: opt}
}

// CreateRequest is what an operator gives to onboard a partner.
type CreateRequest struct {
	Name       string             `json:"name"`
	Tier       string             `json:"tier"`
	WebhookURL string             `json:"webhook_url"`
	Events     []string           `json:"events,omitempty"`
	Regions    []string           `json:"regions,omitempty"`
	RateLimit  *schemas.RateLimit `json:"rate_limit,omitempty"`
	Features   map[string]bool    `json:"features,omitempty"`
	Status     string             `json:"status,omitempty"` // active (default) or pending
	JWT        *schemas.JWTConfig `json:"jwt,omitempty"`
	// ClientIdentities: enterprise only (schemas.Tenant.ClientIdentities).
	ClientIdentities []string `json:"client_identities,omitempty"`
}

// Created is a new tenant with its credentials, shown once.
type Created struct {
	Tenant        *schemas.Tenant
	APIKey        string
	WebhookSecret string
}

var (
	eventTypeRe = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]*(\.[a-z0-9_*]+)*)$`)
	featureRe   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

func validateName(name string) error {
	n := strings.TrimSpace(name)
	if n == "" || utf8.RuneCountInString(n) > 100 || n != name {
		return invalid("name", name, "must be 1 to 100 characters without leading or trailing spaces")
	}
	return nil
}

func validateTier(tier string) error {
	if !slices.Contains(schemas.Tiers, tier) {
		return invalid("tier", tier, "must be one of sandbox, standard, enterprise")
	}
	return nil
}

// ValidateWebhookURL checks the shape of a webhook URL. Whether its host
// resolves to an allowed address is checked at delivery time (SSRF guard).
func ValidateWebhookURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" || len(raw) > 2048 {
		return invalid(field, raw, "must be an absolute http(s) URL without credentials or fragment")
	}
	if u.Port() != "" {
		if _, err := fmt.Sscanf(u.Port(), "%d", new(int)); err != nil {
			return invalid(field, raw, "has an invalid port")
		}
	}
	return nil
}

func validateRateLimit(rl *schemas.RateLimit) error {
	if rl == nil {
		return nil
	}
	if rl.RequestsPerMinute <= 0 || rl.RequestsPerMinute > 1_000_000 {
		return invalid("rate_limit.requests_per_minute", fmt.Sprint(rl.RequestsPerMinute), "must be between 1 and 1000000")
	}
	if rl.BurstSize <= 0 || rl.BurstSize > 1_000_000 {
		return invalid("rate_limit.burst_size", fmt.Sprint(rl.BurstSize), "must be between 1 and 1000000")
	}
	return nil
}

func validateEvents(field string, events []string) error {
	for i, e := range events {
		if !eventTypeRe.MatchString(e) {
			return invalid(fmt.Sprintf("%s[%d]", field, i), e, "must be an event type like order.created, or *")
		}
	}
	return nil
}

func validateFeatures(f map[string]bool) error {
	for k := range f {
		if !featureRe.MatchString(k) {
			return invalid("features."+k, k, "must be lower-case letters, digits and underscores")
		}
	}
	return nil
}

// validateClientIdentities checks an enterprise tenant's allowed client
// certificate identities (schemas.Tenant.ClientIdentities).
func validateClientIdentities(tier string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if tier != schemas.TierEnterprise {
		return invalid("client_identities", "set", "is only available to enterprise tenants")
	}
	if len(ids) > schemas.MaxClientIdentities {
		return invalid("client_identities", fmt.Sprint(len(ids)), fmt.Sprintf("must hold at most %d identities", schemas.MaxClientIdentities))
	}
	for i, id := range ids {
		if err := schemas.CheckClientIdentity(id); err != nil {
			return invalid(fmt.Sprintf("client_identities[%d]", i), id, err.Error())
		}
		if slices.Contains(ids[:i], id) {
			return invalid(fmt.Sprintf("client_identities[%d]", i), id, "is listed twice")
		}
	}
	return nil
}

// validateJWT checks an enterprise tenant's JWT configuration as the edge
// will use it, so an unusable JWKS is refused when written, not at the
// tenant's first call.
func validateJWT(c *schemas.JWTConfig) error {
	if c == nil {
		return nil
	}
	if _, err := jwks.ParseConfig(c); err != nil {
		return invalid("jwt", "set", err.Error())
	}
	return nil
}

func (w *Writer) validateRegions(regions []string) error {
	for i, r := range regions {
		if !slices.Contains(w.opt.Regions, r) {
			return invalid(fmt.Sprintf("regions[%d]", i), r, "must be one of "+strings.Join(w.opt.Regions, ", "))
		}
	}
	return nil
}

// Create onboards a tenant and returns its credentials, shown once.
func (w *Writer) Create(ctx context.Context, req CreateRequest) (*Created, error) {
	if err := validateName(req.Name); err != nil {
		return nil, err
	}
	if err := validateTier(req.Tier); err != nil {
		return nil, err
	}
	if err := ValidateWebhookURL("webhook_url", req.WebhookURL); err != nil {
		return nil, err
	}
	if err := validateEvents("events", req.Events); err != nil {
		return nil, err
	}
	if len(req.Regions) == 0 {
		req.Regions = w.opt.Regions
	}
	if err := w.validateRegions(req.Regions); err != nil {
		return nil, err
	}
	if err := validateRateLimit(req.RateLimit); err != nil {
		return nil, err
	}
	if err := validateFeatures(req.Features); err != nil {
		return nil, err
	}
	switch req.Status {
	case "":
		req.Status = schemas.StatusActive
	case schemas.StatusActive, schemas.StatusPending:
	default:
		return nil, invalid("status", req.Status, "must be active or pending")
	}
	if req.JWT != nil && req.Tier != schemas.TierEnterprise {
		return nil, invalid("jwt", "set", "is only available to enterprise tenants")
	}
	if err := validateJWT(req.JWT); err != nil {
		return nil, err
	}
	if err := validateClientIdentities(req.Tier, req.ClientIdentities); err != nil {
		return nil, err
	}
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.reg.ByName(req.Name); dup {
		return nil, fmt.Errorf("%w: a tenant named %q already exists", ErrConflict, req.Name)
	}
	now := w.opt.Now().UTC()
	key := apikey.New(req.Tier)
	secret := NewWebhookSecret()
	t := &schemas.Tenant{
		SchemaVersion: schemas.SchemaVersion,
		ID:            NewID("tn_"),
		Name:          req.Name,
		Tier:          req.Tier,
		Status:        req.Status,
		Regions:       req.Regions,
		RateLimit:     req.RateLimit,
		Features:      req.Features,
		Keys:          []schemas.APIKey{{ID: NewID("key_"), Hash: apikey.Hash(w.opt.Pepper, key), Prefix: apikey.DisplayPrefix(key), CreatedAt: now}},
		Endpoints: []schemas.Endpoint{{
			ID: NewID("ep_"), URL: req.WebhookURL, EventTypes: req.Events, SchemaVersion: schemas.SchemaVersion,
			Secrets: []schemas.WebhookSecret{{ID: NewID("sec_"), Secret: secret, CreatedAt: now}},
		}},
		JWT:              req.JWT,
		ClientIdentities: req.ClientIdentities,
		CreatedAt:        now,
		UpdatedAt:        now,
		Version:          1,
	}
	if err := w.put(ctx, t); err != nil {
		return nil, err
	}
	return &Created{Tenant: t, APIKey: key, WebhookSecret: secret}, nil
}

// Patch is a partial update; nil fields are left alone.
type Patch struct {
	Name      *string            `json:"name,omitempty"`
	Tier      *string            `json:"tier,omitempty"`
	Regions   []string           `json:"regions,omitempty"`
	RateLimit *schemas.RateLimit `json:"rate_limit,omitempty"`
	Features  map[string]bool    `json:"features,omitempty"`
	Endpoints []EndpointPatch    `json:"endpoints,omitempty"`
	JWT       *schemas.JWTConfig `json:"jwt,omitempty"`
	// ClientIdentities replaces the enterprise tenant's allowed client
	// certificate identities (nil: unchanged; an empty list removes them).
	ClientIdentities *[]string `json:"client_identities,omitempty"`
}

// EndpointPatch replaces or adds an endpoint (by id; empty id adds one).
type EndpointPatch struct {
	ID             string                `json:"id,omitempty"`
	URL            string                `json:"url"`
	EventTypes     []string              `json:"event_types,omitempty"`
	Filter         string                `json:"filter,omitempty"`
	PayloadVersion string                `json:"payload_version,omitempty"`
	Mapping        *schemas.FieldMapping `json:"mapping,omitempty"`
	Disabled       *bool                 `json:"disabled,omitempty"`
	Ordering       *string               `json:"ordering,omitempty"` // "fifo" or "" (nil: unchanged)
}

// Update applies a patch.
func (w *Writer) Update(ctx context.Context, id string, p Patch) (*schemas.Tenant, error) {
	if p.Name != nil {
		if err := validateName(*p.Name); err != nil {
			return nil, err
		}
	}
	if p.Tier != nil {
		if err := validateTier(*p.Tier); err != nil {
			return nil, err
		}
	}
	if err := w.validateRegions(p.Regions); err != nil {
		return nil, err
	}
	if err := validateRateLimit(p.RateLimit); err != nil {
		return nil, err
	}
	if err := validateFeatures(p.Features); err != nil {
		return nil, err
	}
	if err := validateJWT(p.JWT); err != nil {
		return nil, err
	}
	for i, e := range p.Endpoints {
		if err := ValidateWebhookURL(fmt.Sprintf("endpoints[%d].url", i), e.URL); err != nil {
			return nil, err
		}
		if err := validateEvents(fmt.Sprintf("endpoints[%d].event_types", i), e.EventTypes); err != nil {
			return nil, err
		}
		if err := e.Mapping.Validate(); err != nil {
			return nil, invalid(fmt.Sprintf("endpoints[%d].mapping", i), "", err.Error())
		}
		if e.Ordering != nil && *e.Ordering != "" && *e.Ordering != schemas.OrderingFIFO {
			return nil, invalid(fmt.Sprintf("endpoints[%d].ordering", i), *e.Ordering, "must be fifo or empty")
		}
	}
	return w.modify(ctx, id, func(t *schemas.Tenant, now time.Time) error {
		if p.Name != nil && *p.Name != t.Name {
			if other, dup := w.reg.ByName(*p.Name); dup && other.ID != t.ID {
				return fmt.Errorf("%w: a tenant named %q already exists", ErrConflict, *p.Name)
			}
			t.Name = *p.Name
		}
		if p.Tier != nil {
			t.Tier = *p.Tier
		}
		if p.JWT != nil {
			if t.Tier != schemas.TierEnterprise {
				return invalid("jwt", "set", "is only available to enterprise tenants")
			}
			t.JWT = p.JWT
		}
		if p.ClientIdentities != nil {
			if err := validateClientIdentities(t.Tier, *p.ClientIdentities); err != nil {
				return err
			}
			t.ClientIdentities = *p.ClientIdentities
		}
		if t.Tier != schemas.TierEnterprise && len(t.ClientIdentities) > 0 {
			return invalid("tier", t.Tier, "a tenant with client_identities must stay enterprise (remove them first)")
		}
		if len(p.Regions) > 0 {
			t.Regions = p.Regions
		}
		if p.RateLimit != nil {
			t.RateLimit = p.RateLimit
		}
		if p.Features != nil {
			t.Features = p.Features
		}
		for _, ep := range p.Endpoints {
			idx := slices.IndexFunc(t.Endpoints, func(e schemas.Endpoint) bool { return e.ID == ep.ID })
			if ep.ID != "" && idx < 0 {
				return invalid("endpoints.id", ep.ID, "no such endpoint")
			}
			var e schemas.Endpoint
			if idx >= 0 {
				e = t.Endpoints[idx]
			} else {
				e = schemas.Endpoint{ID: NewID("ep_"), SchemaVersion: schemas.SchemaVersion,
					Secrets: []schemas.WebhookSecret{{ID: NewID("sec_"), Secret: NewWebhookSecret(), CreatedAt: now}}}
			}
			e.URL, e.EventTypes, e.Filter, e.Mapping = ep.URL, ep.EventTypes, ep.Filter, ep.Mapping
			if ep.PayloadVersion != "" {
				e.SchemaVersion = ep.PayloadVersion
			}
			if ep.Ordering != nil {
				e.Ordering = *ep.Ordering
			}
			if ep.Disabled != nil {
				e.Disabled = *ep.Disabled
				if !e.Disabled {
					e.DisabledReason = ""
				}
			}
			if idx >= 0 {
				t.Endpoints[idx] = e
			} else {
				t.Endpoints = append(t.Endpoints, e)
			}
		}
		return nil
	})
}

// SetStatus suspends or activates a tenant.
func (w *Writer) SetStatus(ctx context.Context, id, status string) (*schemas.Tenant, error) {
	if status != schemas.StatusActive && status != schemas.StatusSuspended && status != schemas.StatusPending {
		return nil, invalid("status", status, "must be active, suspended or pending")
	}
	return w.modify(ctx, id, func(t *schemas.Tenant, _ time.Time) error {
		t.Status = status
		return nil
	})
}

// DisableEndpoint marks an endpoint disabled (a 410 Gone from the partner).
func (w *Writer) DisableEndpoint(ctx context.Context, id, endpointID, reason string) (*schemas.Tenant, error) {
	return w.modify(ctx, id, func(t *schemas.Tenant, _ time.Time) error {
		for i := range t.Endpoints {
			if t.Endpoints[i].ID == endpointID {
				t.Endpoints[i].Disabled = true
				t.Endpoints[i].DisabledReason = reason
				return nil
			}
		}
		return invalid("endpoint_id", endpointID, "no such endpoint")
	})
}

// RotateKey issues a new API key; the previous ones stay valid for the
// configured overlap (0: revoked at once). The new key is returned once.
func (w *Writer) RotateKey(ctx context.Context, id string) (*schemas.Tenant, string, error) {
	var key string
	t, err := w.modify(ctx, id, func(t *schemas.Tenant, now time.Time) error {
		key = apikey.New(t.Tier)
		expires := now.Add(w.opt.KeyOverlap)
		kept := t.Keys[:0:0]
		for _, k := range t.Keys {
			if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
				continue // already expired: drop it
			}
			if k.ExpiresAt == nil || k.ExpiresAt.After(expires) {
				k.ExpiresAt = &expires
			}
			if w.opt.KeyOverlap > 0 {
				kept = append(kept, k)
			}
		}
		t.Keys = append(kept, schemas.APIKey{ID: NewID("key_"), Hash: apikey.Hash(w.opt.Pepper, key), Prefix: apikey.DisplayPrefix(key), CreatedAt: now})
		return nil
	})
	return t, key, err
}

// RotateSecret issues a new webhook secret for every endpoint (or one, if
// endpointID is set); the previous secrets keep signing for the overlap.
func (w *Writer) RotateSecret(ctx context.Context, id, endpointID string) (*schemas.Tenant, string, error) {
	var secret string
	t, err := w.modify(ctx, id, func(t *schemas.Tenant, now time.Time) error {
		secret = NewWebhookSecret()
		expires := now.Add(w.opt.SecretOverlap)
		found := false
		for i := range t.Endpoints {
			e := &t.Endpoints[i]
			if endpointID != "" && e.ID != endpointID {
				continue
			}
			found = true
			kept := e.Secrets[:0:0]
			for _, s := range e.Secrets {
				if s.ExpiresAt != nil && !now.Before(*s.ExpiresAt) {
					continue
				}
				if s.ExpiresAt == nil || s.ExpiresAt.After(expires) {
					s.ExpiresAt = &expires
				}
				if w.opt.SecretOverlap > 0 {
					kept = append(kept, s)
				}
			}
			e.Secrets = append(kept, schemas.WebhookSecret{ID: NewID("sec_"), Secret: secret, CreatedAt: now})
		}
		if !found {
			return invalid("endpoint_id", endpointID, "no such endpoint")
		}
		return nil
	})
	return t, secret, err
}

// modify runs fn on a deep copy of the tenant and writes the result as the
// next version.
func (w *Writer) modify(ctx context.Context, id string, fn func(t *schemas.Tenant, now time.Time) error) (*schemas.Tenant, error) {
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, ok := w.reg.Get(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	t, err := clone(cur)
	if err != nil {
		return nil, err
	}
	now := w.opt.Now().UTC()
	if err := fn(t, now); err != nil {
		return nil, err
	}
	t.Version = cur.Version + 1
	t.UpdatedAt = now
	if err := w.put(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

func clone(t *schemas.Tenant) (*schemas.Tenant, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var out schemas.Tenant
	return &out, json.Unmarshal(b, &out)
}

func (w *Writer) put(ctx context.Context, t *schemas.Tenant) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: w.opt.Topic, Key: []byte(t.ID), Value: b}
	if err := w.prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("write tenant %s: %w", t.ID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return w.reg.WaitVersion(wctx, t.ID, t.Version)
}

// waitReady blocks until the registry has read the whole tenants topic:
// before that, duplicate checks and read-modify-write would see a partial state.
func (w *Writer) waitReady(ctx context.Context) error {
	select {
	case <-w.reg.Ready():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tenant registry still loading: %w", ctx.Err())
	}
}
