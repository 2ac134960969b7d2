package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
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

// Sealer seals webhook secrets for the tenants topic (internal/seal's
// Keyring): Seal uses the active key, whose id Active names.
type Sealer interface {
	Seal(plain, aad []byte) (string, error)
	Active() string
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	Topic         string
	Pepper        string
	Regions       []string // configured regions; tenants may only name these
	Features      []string // configured feature flags; nil: any well-formed name
	KeyOverlap    time.Duration
	SecretOverlap time.Duration
	// Secrets seals webhook secrets; required (a write without it fails).
	Secrets Sealer
	// TxnTimeout is the transaction timeout of the partition writers: how
	// long a crashed writer's open transaction can hold readers of its
	// partition back when nobody writes there after it (default 10s).
	TxnTimeout time.Duration
	// ApplyTimeout bounds the waits for the registry (default 10s).
	ApplyTimeout time.Duration
	Now          func() time.Time
	Metrics      prometheus.Registerer // nil: not registered
}

// Writer changes tenants: it computes the new version from the Registry's
// copy, writes it to the tenants topic only if no other writer changed the
// tenant meanwhile (compare-and-set on the version, see the package doc),
// and returns once the registry applied it (read-your-writes). Any number
// of Writers, in any processes, may write concurrently: each change either
// applies or fails with a ConflictError.
type Writer struct {
	reg  *Registry
	base *kgo.Client
	opt  WriterOptions

	pmu   sync.Mutex
	parts map[int32]*partWriter

	fenced    prometheus.Counter
	conflicts prometheus.Counter
}

// NewWriter returns a Writer on reg. base is the client whose options the
// per-partition transactional clients are built from (brokers, TLS, SASL,
// logging, tracing); the Writer opens them on first use, and Close (or
// closing base) closes them.
func NewWriter(reg *Registry, base *kgo.Client, opt WriterOptions) *Writer {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.TxnTimeout <= 0 {
		opt.TxnTimeout = 10 * time.Second
	}
	if opt.ApplyTimeout <= 0 {
		opt.ApplyTimeout = 10 * time.Second
	}
	w := &Writer{reg: reg, base: base, opt: opt, parts: map[int32]*partWriter{},
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_registry_writer_fenced_total",
			Help: "Tenant writes retried because another process's writer took the partition."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_registry_writer_conflicts_total",
			Help: "Tenant writes refused with a conflict (a concurrent change, a stale If-Match or a taken name)."}),
	}
	if opt.Metrics != nil {
		for _, c := range []prometheus.Collector{w.fenced, w.conflicts} {
			_ = opt.Metrics.Register(c) // a second Writer on one registry shares nothing: ignore duplicates
		}
	}
	// The partition writers live as long as base: closing it closes them.
	context.AfterFunc(base.Context(), w.Close)
	return w
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

// Caps on what a tenant may hold: each is checked when written and named in
// the error, so a tenant is refused at the API rather than by the broker, the
// edge or the snapshot builder later.
const (
	MaxNameRunes        = 100
	MaxEndpoints        = 20
	MaxEventTypes       = 64 // per endpoint
	MaxEventTypeLength  = 128
	MaxFeatures         = 64
	MaxFilterBytes      = 4096
	MaxJWTIssuerBytes   = 512
	MaxJWTAudiences     = 16
	MaxJWTAudienceBytes = 256
	MaxJWKSBytes        = 64 << 10
)

// validateName requires 1 to MaxNameRunes printable characters without
// leading or trailing spaces: no control characters (NUL, newlines, escape
// sequences), no format characters (bidi overrides and isolates, zero-width
// joiners), no other spaces than ' ', valid UTF-8 — a name is shown in
// consoles, logs and dashboards.
func validateName(name string) error {
	if !utf8.ValidString(name) {
		return invalid("name", "(not UTF-8)", "must be valid UTF-8")
	}
	n := strings.TrimSpace(name)
	if n == "" || utf8.RuneCountInString(n) > MaxNameRunes || n != name {
		return invalid("name", name, fmt.Sprintf("must be 1 to %d characters without leading or trailing spaces", MaxNameRunes))
	}
	if err := printable("name", name); err != nil {
		return err
	}
	return nil
}

// CheckName reports why name cannot be a tenant name (nil: it can).
func CheckName(name string) error { return validateName(name) }

// CheckPrintable reports why v is not printable, non-blank text without
// leading or trailing space (the JWT issuer and audiences).
func CheckPrintable(v string) error {
	if !utf8.ValidString(v) || strings.TrimSpace(v) == "" {
		return invalid("value", v, "must be non-blank UTF-8 text")
	}
	return printable("value", v)
}

// printable refuses control and format characters (bidi overrides, zero
// width joiners, soft hyphens) and non-printing spaces in v. The value is
// shown quoted (Go escapes), so the error itself stays printable.
func printable(field, v string) error {
	for _, r := range v {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || (!unicode.IsPrint(r) && r != ' ') {
			return invalid(field, strconv.QuoteToASCII(v), fmt.Sprintf("must be printable: %U is a control, format (e.g. bidi) or invisible character", r))
		}
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
	if len(events) > MaxEventTypes {
		return invalid(field, fmt.Sprint(len(events)), fmt.Sprintf("must list at most %d event types", MaxEventTypes))
	}
	for i, e := range events {
		if len(e) > MaxEventTypeLength || !eventTypeRe.MatchString(e) {
			return invalid(fmt.Sprintf("%s[%d]", field, i), e, fmt.Sprintf("must be an event type like order.created, or *, of at most %d characters", MaxEventTypeLength))
		}
	}
	return nil
}

func (w *Writer) validateFeatures(f map[string]bool) error {
	if len(f) > MaxFeatures {
		return invalid("features", fmt.Sprint(len(f)), fmt.Sprintf("must hold at most %d flags", MaxFeatures))
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !featureRe.MatchString(k) {
			return invalid("features."+k, strconv.QuoteToASCII(k), "must be lower-case letters, digits and underscores")
		}
		if w.opt.Features != nil && !slices.Contains(w.opt.Features, k) {
			return invalid("features."+k, k, "must be a configured feature ("+strings.Join(w.opt.Features, ", ")+")")
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
// will use it, so an unusable one is refused when written: with an empty
// issuer or a JWKS that is not JSON with an RS256 key, the edge could not
// verify any token and the tenant would fail at its first call.
func validateJWT(c *schemas.JWTConfig) error {
	if c == nil {
		return nil
	}
	if strings.TrimSpace(c.Issuer) == "" || len(c.Issuer) > MaxJWTIssuerBytes {
		return invalid("jwt.issuer", c.Issuer, fmt.Sprintf("must be a non-empty issuer (the tokens' iss) of at most %d bytes", MaxJWTIssuerBytes))
	}
	if err := printable("jwt.issuer", c.Issuer); err != nil {
		return err
	}
	if len(c.Audiences) > MaxJWTAudiences {
		return invalid("jwt.audiences", fmt.Sprint(len(c.Audiences)), fmt.Sprintf("must list at most %d audiences", MaxJWTAudiences))
	}
	for i, a := range c.Audiences {
		f := fmt.Sprintf("jwt.audiences[%d]", i)
		if strings.TrimSpace(a) == "" || len(a) > MaxJWTAudienceBytes {
			return invalid(f, a, fmt.Sprintf("must be a non-empty audience of at most %d bytes", MaxJWTAudienceBytes))
		}
		if err := printable(f, a); err != nil {
			return err
		}
	}
	if len(c.JWKS) > MaxJWKSBytes {
		return invalid("jwt.jwks", fmt.Sprintf("%d bytes", len(c.JWKS)), fmt.Sprintf("must be at most %d bytes", MaxJWKSBytes))
	}
	if _, err := jwks.Parse([]byte(c.JWKS)); err != nil {
		return invalid("jwt.jwks", "(not shown)", "must be a JWKS JSON document with at least one RS256 key: "+err.Error())
	}
	return nil
}

func (w *Writer) validateRegions(regions []string) error {
	for i, r := range regions {
		if !slices.Contains(w.opt.Regions, r) {
			return invalid(fmt.Sprintf("regions[%d]", i), r, "must be one of "+strings.Join(w.opt.Regions, ", "))
		}
		if slices.Contains(regions[:i], r) {
			return invalid(fmt.Sprintf("regions[%d]", i), r, "is listed twice")
		}
	}
	return nil
}

// validateTenant checks the caps of a tenant as it will be written, after a
// patch applied: what a patch adds (endpoints, flags) is bounded here.
func validateTenant(t *schemas.Tenant) error {
	if len(t.Endpoints) > MaxEndpoints {
		return invalid("endpoints", fmt.Sprint(len(t.Endpoints)), fmt.Sprintf("a tenant may have at most %d endpoints", MaxEndpoints))
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
	if err := w.validateFeatures(req.Features); err != nil {
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
	taken := func() error {
		if other, dup := w.reg.ByName(req.Name); dup {
			w.conflicts.Inc()
			return &ConflictError{ID: other.ID, Reason: fmt.Sprintf("a tenant named %q already exists", req.Name)}
		}
		return nil
	}
	if err := taken(); err != nil {
		return nil, err
	}
	n, err := w.reg.partitions(ctx)
	if err != nil {
		return nil, err
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
	if err := w.commit(ctx, namePartition(req.Name, n), t, 0, taken); err != nil {
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

// empty reports whether the patch changes nothing: every field is
// omitempty, so a patch that marshals to {} sets none (whatever fields are
// added later).
func (p Patch) empty() bool {
	b, err := json.Marshal(p)
	return err == nil && string(b) == "{}"
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
	if err := w.validateFeatures(p.Features); err != nil {
		return nil, err
	}
	if err := validateJWT(p.JWT); err != nil {
		return nil, err
	}
	if len(p.Endpoints) > MaxEndpoints {
		return nil, invalid("endpoints", fmt.Sprint(len(p.Endpoints)), fmt.Sprintf("a tenant may have at most %d endpoints", MaxEndpoints))
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
		if len(e.Filter) > MaxFilterBytes {
			return nil, invalid(fmt.Sprintf("endpoints[%d].filter", i), fmt.Sprintf("%d bytes", len(e.Filter)), fmt.Sprintf("must be at most %d bytes", MaxFilterBytes))
		}
		if e.PayloadVersion != "" && e.PayloadVersion != schemas.SchemaVersion {
			return nil, invalid(fmt.Sprintf("endpoints[%d].payload_version", i), e.PayloadVersion, "must be "+schemas.SchemaVersion)
		}
	}
	if p.empty() {
		// Nothing to change: no new version (If-Match still applies).
		if err := w.waitReady(ctx); err != nil {
			return nil, err
		}
		cur, ok := w.reg.GetSynced(ctx, id)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if want, ok := expectedVersion(ctx); ok && want != cur.Version {
			return nil, &ConflictError{ID: id, Current: cur.Version,
				Reason: fmt.Sprintf("tenant %s is at version %d, not %d (If-Match); re-read it and retry", id, cur.Version, want)}
		}
		return cur, nil
	}
	return w.modify(ctx, id, func(t *schemas.Tenant, now time.Time) error {
		if p.Name != nil && *p.Name != t.Name {
			if other, dup := w.reg.ByName(*p.Name); dup && other.ID != t.ID {
				return &ConflictError{ID: other.ID, Reason: fmt.Sprintf("a tenant named %q already exists", *p.Name)}
			}
			t.Name = *p.Name
		}
		if p.Tier != nil {
			t.Tier = *p.Tier
		}
		// What only an enterprise tenant may hold, against the tier it has
		// after this patch: a request that is well formed but conflicts
		// with the tenant's state is a conflict (409), not a bad request.
		if p.JWT != nil {
			if t.Tier != schemas.TierEnterprise {
				return &ConflictError{ID: t.ID, Current: t.Version, Reason: "jwt is only available to enterprise tenants: tenant " + t.ID + " is " + t.Tier}
			}
			t.JWT = p.JWT
		}
		if p.ClientIdentities != nil {
			if len(*p.ClientIdentities) > 0 && t.Tier != schemas.TierEnterprise {
				return &ConflictError{ID: t.ID, Current: t.Version, Reason: "client_identities are only available to enterprise tenants: tenant " + t.ID + " is " + t.Tier}
			}
			if err := validateClientIdentities(t.Tier, *p.ClientIdentities); err != nil {
				return err
			}
			t.ClientIdentities = *p.ClientIdentities
		}
		if t.Tier != schemas.TierEnterprise && len(t.ClientIdentities) > 0 {
			return &ConflictError{ID: t.ID, Current: t.Version, Reason: "a tenant with client_identities must stay enterprise (remove them first)"}
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
				return fmt.Errorf("%w: tenant %s has no endpoint %s", ErrNotFound, t.ID, ep.ID)
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
// Disabling is idempotent, so a write that loses to a concurrent change is
// recomputed on the newer version and tried again (unless ctx carries an
// expected version): the disable is never lost and never undoes the other
// change.
func (w *Writer) DisableEndpoint(ctx context.Context, id, endpointID, reason string) (*schemas.Tenant, error) {
	_, conditional := expectedVersion(ctx)
	for attempt := 1; ; attempt++ {
		t, err := w.modify(ctx, id, func(t *schemas.Tenant, _ time.Time) error {
			for i := range t.Endpoints {
				if t.Endpoints[i].ID == endpointID {
					t.Endpoints[i].Disabled = true
					t.Endpoints[i].DisabledReason = reason
					return nil
				}
			}
			return invalid("endpoint_id", endpointID, "no such endpoint")
		})
		if conditional || attempt >= 20 || !errors.Is(err, ErrConflict) || ctx.Err() != nil {
			return t, err
		}
	}
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
			return fmt.Errorf("%w: tenant %s has no endpoint %s", ErrNotFound, t.ID, endpointID)
		}
		return nil
	})
	return t, secret, err
}

// modify runs fn on a deep copy of the tenant and writes the result as the
// next version, if the tenant is still at the version fn saw (and at the
// version WithExpectedVersion named, if ctx carries one).
func (w *Writer) modify(ctx context.Context, id string, fn func(t *schemas.Tenant, now time.Time) error) (*schemas.Tenant, error) {
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	cur, ok := w.reg.GetSynced(ctx, id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if want, ok := expectedVersion(ctx); ok && want != cur.Version {
		w.conflicts.Inc()
		return nil, &ConflictError{ID: id, Current: cur.Version,
			Reason: fmt.Sprintf("tenant %s is at version %d, not %d (If-Match); re-read it and retry", id, cur.Version, want)}
	}
	_, p, _ := w.reg.version(id)
	t, err := clone(cur)
	if err != nil {
		return nil, err
	}
	now := w.opt.Now().UTC()
	if err := fn(t, now); err != nil {
		return nil, err
	}
	if err := validateTenant(t); err != nil {
		return nil, err
	}
	t.Version = cur.Version + 1
	t.UpdatedAt = now
	if err := w.commit(ctx, p, t, cur.Version, nil); err != nil {
		if errors.Is(err, ErrConflict) {
			w.conflicts.Inc()
		}
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

// waitReady blocks until the registry has read the whole tenants topic:
// before that, duplicate checks and read-modify-write would see a partial state.
func (w *Writer) waitReady(ctx context.Context) error {
	if w.opt.Secrets == nil {
		return errors.New("tenants writer: no webhook secret key configured (partner.keys.secret_keys)")
	}
	select {
	case <-w.reg.Ready():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tenant registry still loading: %w", ctx.Err())
	}
}

// Resealed is what ResealSecrets did.
type Resealed struct {
	ActiveKey   string   `json:"active_key"`
	Resealed    int      `json:"resealed"`    // tenants rewritten with their secrets sealed by the active key
	Unreadable  []string `json:"unreadable"`  // tenants holding a secret no configured key opens (left as they are)
	Unavailable []string `json:"unavailable"` // tenants that could not be rewritten now (retry)
}

// ResealSecrets rewrites, as a new version each, every tenant whose webhook
// secrets are in the clear or sealed with a key other than the active one,
// so the old key can be removed from the configuration afterwards. A
// tenant changed concurrently is re-read and rewritten; its content is
// never changed.
func (w *Writer) ResealSecrets(ctx context.Context) (*Resealed, error) {
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	active := w.opt.Secrets.Active()
	out := &Resealed{ActiveKey: active, Unreadable: []string{}, Unavailable: []string{}}
	for _, id := range w.reg.StaleSecrets(active) {
		if unreadable(w.reg, id) {
			out.Unreadable = append(out.Unreadable, id)
			continue
		}
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			if _, err = w.modify(ctx, id, func(*schemas.Tenant, time.Time) error { return nil }); !errors.Is(err, ErrConflict) {
				break
			}
		}
		switch {
		case err == nil:
			out.Resealed++
		case errors.Is(err, ErrNotFound):
		case ctx.Err() != nil:
			return out, ctx.Err()
		default:
			out.Unavailable = append(out.Unavailable, id)
		}
	}
	return out, nil
}

// unreadable reports whether a secret of tenant id could not be opened.
func unreadable(reg *Registry, id string) bool {
	t, ok := reg.Get(id)
	if !ok {
		return false
	}
	for _, e := range t.Endpoints {
		for _, s := range e.Secrets {
			if s.Secret == "" {
				return true
			}
		}
	}
	return false
}
