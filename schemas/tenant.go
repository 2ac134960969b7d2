package schemas

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Tenant tiers.
const (
	TierSandbox    = "sandbox"
	TierStandard   = "standard"
	TierEnterprise = "enterprise"
)

// Tiers lists every tenant tier.
var Tiers = []string{TierSandbox, TierStandard, TierEnterprise}

// Tenant statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
	StatusPending   = "pending"
)

// Tenant is the record on the compacted partners.tenants.v1 topic, keyed by
// tenant id: the source of truth for partners. A tombstone (nil value) deletes
// the tenant. Version increases by one with every change; consumers ignore a
// record whose version is not newer than the one they hold.
//
// API keys are stored only as keyed hashes. Webhook secrets must be stored
// (the processor signs with them): they are sealed with a key from the
// configuration (WebhookSecret.Sealed), and never reach logs or traces.
type Tenant struct {
	SchemaVersion string          `json:"schema_version"`
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	Tier          string          `json:"tier"`
	Status        string          `json:"status"`
	Regions       []string        `json:"regions"`
	RateLimit     *RateLimit      `json:"rate_limit,omitempty"` // override on top of the tier
	Features      map[string]bool `json:"features,omitempty"`
	Keys          []APIKey        `json:"keys"`
	Endpoints     []Endpoint      `json:"endpoints"`
	JWT           *JWTConfig      `json:"jwt,omitempty"` // enterprise only
	// ClientIdentities are the client-certificate identities an enterprise
	// tenant calls the mutual-TLS listener with: URI SANs (a SPIFFE id such
	// as spiffe://acme.example/partner) or DNS SANs (client.acme.example),
	// compared exactly (DNS names without regard to case). A certificate the
	// enterprise CA signed for any other identity is refused; with none set,
	// no certificate is accepted. Enterprise only.
	ClientIdentities []string  `json:"client_identities,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	Version          int64     `json:"version"`
}

// RateLimit is a token bucket: BurstSize tokens, refilled at
// RequestsPerMinute/60 per second.
type RateLimit struct {
	RequestsPerMinute int `json:"requests_per_minute" yaml:"requests_per_minute"`
	BurstSize         int `json:"burst_size" yaml:"burst_size"`
}

// APIKey is a stored key: only its keyed hash (hex HMAC-SHA256 with the
// pepper) and a short prefix for operators to recognise it.
type APIKey struct {
	ID        string     `json:"id"`
	Hash      string     `json:"hash"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // set when rotated: valid until then
}

// Endpoint is one webhook destination of a tenant.
type Endpoint struct {
	ID             string            `json:"id"`
	URL            string            `json:"url"`
	EventTypes     []string          `json:"event_types,omitempty"` // empty: all types
	Filter         string            `json:"filter,omitempty"`      // CEL expression over the event
	SchemaVersion  string            `json:"payload_version,omitempty"`
	Mapping        *FieldMapping     `json:"mapping,omitempty"`
	Secrets        []WebhookSecret   `json:"secrets"`
	Disabled       bool              `json:"disabled,omitempty"`
	DisabledReason string            `json:"disabled_reason,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	// Ordering "fifo" delivers the endpoint's messages one at a time in
	// order: the next waits until the previous is delivered or
	// dead-lettered. Empty: concurrent, unordered (the default).
	Ordering string `json:"ordering,omitempty"`
}

// OrderingFIFO is Endpoint.Ordering for in-order, one-at-a-time delivery.
const OrderingFIFO = "fifo"

// FIFO reports whether the endpoint takes its messages in order.
func (e Endpoint) FIFO() bool { return e.Ordering == OrderingFIFO }

// FieldMapping is a declarative, versioned payload transformation: each
// output field is taken from a JSON path of the event.
type FieldMapping struct {
	Version int               `json:"version"`
	Fields  map[string]string `json:"fields"` // output field -> source path, e.g. "data.amount"
}

// WebhookSecret is a Standard Webhooks secret ("whsec_" + base64). During a
// rotation the old secret stays until ExpiresAt and both sign.
//
// On the tenants topic the secret is sealed: Sealed holds it encrypted
// (AES-256-GCM under a key from partner.keys.secret_keys, bound to its
// tenant, endpoint and secret id; internal/seal) and Secret is empty. The
// registry opens it on reading, so in memory Secret is the plaintext and
// Sealed the value it came from. Records written before sealing carry
// Secret in the clear; they stay readable and are sealed by the next write
// (or `partners tenants reencrypt`).
type WebhookSecret struct {
	ID        string     `json:"id"`
	Secret    string     `json:"secret,omitempty"`
	Sealed    string     `json:"sealed,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// JWTConfig configures jwt_authn for an enterprise tenant.
type JWTConfig struct {
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	JWKS      string   `json:"jwks"` // inline JWKS JSON (RS256 keys)
}

// ActiveSecrets returns the secrets valid at t, newest first. A secret whose
// plaintext is unknown (sealed with a key this process does not have) is
// left out: nothing is ever signed with an empty key.
func (e Endpoint) ActiveSecrets(t time.Time) []WebhookSecret {
	out := make([]WebhookSecret, 0, len(e.Secrets))
	for i := len(e.Secrets) - 1; i >= 0; i-- {
		s := e.Secrets[i]
		if s.Secret == "" {
			continue
		}
		if s.ExpiresAt == nil || t.Before(*s.ExpiresAt) {
			out = append(out, s)
		}
	}
	return out
}

// Subscribed reports whether the endpoint takes events of type typ.
func (e Endpoint) Subscribed(typ string) bool {
	if e.Disabled {
		return false
	}
	if len(e.EventTypes) == 0 {
		return true
	}
	for _, t := range e.EventTypes {
		if t == typ || t == "*" {
			return true
		}
	}
	return false
}

// InRegion reports whether the tenant is served in region r.
func (t *Tenant) InRegion(r string) bool {
	for _, x := range t.Regions {
		if x == r {
			return true
		}
	}
	return false
}

// MaxClientIdentities bounds Tenant.ClientIdentities.
const MaxClientIdentities = 16

// CheckClientIdentity reports why id cannot be a client identity: it must be
// an absolute URI without spaces (a URI SAN) or a DNS name (a DNS SAN).
func CheckClientIdentity(id string) error {
	if id == "" || len(id) > 512 || strings.ContainsAny(id, " \t\r\n") {
		return errors.New("must be a URI or DNS name of 1 to 512 characters without spaces")
	}
	if strings.Contains(id, ":") {
		u, err := url.Parse(id)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Opaque == "") || u.User != nil {
			return errors.New("must be an absolute URI such as spiffe://acme.example/partner")
		}
		return nil
	}
	labels := strings.Split(strings.ToLower(id), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("must be a DNS name such as client.acme.example")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("must be a DNS name such as client.acme.example")
			}
		}
	}
	return nil
}

// Limits of a FieldMapping, checked when the mapping is written (the
// renderer bounds its output too).
const (
	MaxMappingFields     = 256
	MaxMappingPathLength = 256
	MaxMappingDepth      = 16
)

// MappingVersions are the FieldMapping versions the renderer understands.
// Version 1: every output field (dotted names nest: "order.total") is copied
// from a dotted source path of the version-1 payload ("data.total", "id");
// a missing source path leaves the output field out.
var MappingVersions = map[int]bool{1: true}

// Validate checks a mapping before it is stored: a known version, 1 to
// MaxMappingFields fields, non-empty dotted names and paths of bounded
// length and depth, and no output field that is both a value and an object
// ("a" and "a.b"). It names the offending field.
func (m *FieldMapping) Validate() error {
	if m == nil {
		return nil
	}
	if !MappingVersions[m.Version] {
		return fmt.Errorf("mapping.version: %d is not supported (supported: 1)", m.Version)
	}
	if len(m.Fields) == 0 || len(m.Fields) > MaxMappingFields {
		return fmt.Errorf("mapping.fields: want 1 to %d fields, got %d", MaxMappingFields, len(m.Fields))
	}
	names := make([]string, 0, len(m.Fields))
	for name, path := range m.Fields {
		for _, x := range []struct{ what, v string }{{"field name", name}, {"source path", path}} {
			if err := checkDotted(x.v); err != nil {
				return fmt.Errorf("mapping.fields[%q]: %s %q %v", name, x.what, x.v, err)
			}
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for i := 1; i < len(names); i++ {
		if strings.HasPrefix(names[i], names[i-1]+".") {
			return fmt.Errorf("mapping.fields[%q]: %q is both a value and an object", names[i], names[i-1])
		}
	}
	return nil
}

func checkDotted(s string) error {
	if s == "" || len(s) > MaxMappingPathLength {
		return fmt.Errorf("must be 1 to %d characters", MaxMappingPathLength)
	}
	parts := strings.Split(s, ".")
	if len(parts) > MaxMappingDepth {
		return fmt.Errorf("is nested deeper than %d levels", MaxMappingDepth)
	}
	for _, p := range parts {
		if p == "" {
			return errors.New("has an empty segment")
		}
	}
	return nil
}
