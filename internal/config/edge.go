package config

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/schemas"
)

// RateLimitService configures the global rate-limit service every Envoy of
// a region calls (envoyproxy/ratelimit with Redis): the tier limits of
// partner.rate_limit are its descriptors, and the control plane serves its
// configuration over xDS.
type RateLimitService struct {
	// Address is the host:port Envoy reaches the service's gRPC API at.
	Address string `yaml:"address"`
	// Domain is the rate-limit domain of the partner API.
	Domain string `yaml:"domain"`
	// Timeout bounds Envoy's call; a late answer counts as the service
	// being down.
	Timeout time.Duration `yaml:"timeout_ms"`
	// FailClosedTiers are the tiers whose requests Envoy refuses (503) while
	// the service or its Redis cannot answer. Every other tier fails open:
	// its requests pass, held only by the per-replica shield.
	FailClosedTiers []string `yaml:"fail_closed_tiers"`
	// ShieldMaxTenants is how many tenants' shield buckets each Envoy keeps
	// per shield class (least recently used first out; an evicted tenant's
	// bucket starts full again).
	ShieldMaxTenants int `yaml:"shield_max_tenants"`
}

// FailClosed reports whether tier fails closed when the service is down.
func (s RateLimitService) FailClosed(tier string) bool {
	return slices.Contains(s.FailClosedTiers, tier)
}

var domainRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// Validate implements Validator.
func (s *RateLimitService) Validate() error {
	c := Check(s)
	c.HostPort(&s.Address, true)
	if !domainRe.MatchString(s.Domain) {
		c.Fail(&s.Domain, "must be 1 to 64 letters, digits and underscores")
	}
	c.Positive(&s.Timeout)
	for i := range s.FailClosedTiers {
		if !slices.Contains(schemas.Tiers, s.FailClosedTiers[i]) {
			c.Fail(&s.FailClosedTiers[i], "must be one of "+strings.Join(schemas.Tiers, ", "))
		}
	}
	c.Positive(&s.ShieldMaxTenants)
	return c.Err()
}

// ServerTLS is the TLS of a gRPC server this process runs: a certificate and
// its key, and with ClientCAFile mutual TLS (a client must present a
// certificate signed by that CA). All empty: plaintext (loopback only).
type ServerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the server runs TLS.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// Validate implements Validator.
func (t *ServerTLS) Validate() error {
	c := Check(t)
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.Fail(&t.CertFile, "cert_file and key_file must be set together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		c.Fail(&t.ClientCAFile, "needs cert_file and key_file")
	}
	return c.Err()
}

// MutualTLS is a gRPC server's TLS where clients must always present a
// certificate: all three files, or none (plaintext on loopback).
type MutualTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Server is the same files as a ServerTLS.
func (t MutualTLS) Server() ServerTLS {
	return ServerTLS(t)
}

// Validate implements Validator.
func (t *MutualTLS) Validate() error {
	c := Check(t)
	if t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" {
		for _, p := range []*string{&t.CertFile, &t.KeyFile, &t.ClientCAFile} {
			if *p == "" {
				c.Fail(p, "must be set: this server runs mutual TLS or none (set all three files)")
			}
		}
	}
	return c.Err()
}

// EnvoyGRPCTLS is how Envoy connects to the gRPC services it calls
// (ext_authz, rate limit): paths on the Envoy hosts, served to Envoy as SDS
// secrets that point at them, like xds.tls.
type EnvoyGRPCTLS struct {
	Enabled bool `yaml:"enabled"`
	// CAPath verifies the services' certificates.
	CAPath string `yaml:"ca_path"`
	// CertPath and KeyPath are Envoy's client certificate (mutual TLS).
	CertPath string `yaml:"cert_path"`
	KeyPath  string `yaml:"key_path"`
}

// Validate implements Validator.
func (g *EnvoyGRPCTLS) Validate() error {
	c := Check(g)
	if g.Enabled {
		for _, p := range []*string{&g.CAPath, &g.CertPath, &g.KeyPath} {
			if !strings.HasPrefix(*p, "/") {
				c.Fail(p, "must be an absolute path on the Envoy host")
			}
		}
	}
	return c.Err()
}
