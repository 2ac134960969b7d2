package xds

import "github.com/partners-engine/partners-engine/internal/config"

// Config is what the control plane reads of the configuration: its own xds
// section and the sections whose values end up in Envoy's resources. The
// composition root (internal/runner) fills it from config.Config.
type Config struct {
	XDS        config.XDS        // listeners, clusters, timeouts, TLS paths, tracing
	Gateway    config.Gateway    // partner.gateway: API prefix, feature routes
	RateLimit  config.RateLimits // partner.rate_limit: tier buckets
	Enterprise config.Enterprise // partner.security.enterprise: mTLS
	JWTHeader  string            // edge.jwt_header: where enterprise JWTs travel
	Regions    config.Regions
}

// NewConfig selects the control plane's sections of cfg.
func NewConfig(cfg *config.Config) *Config {
	return &Config{XDS: cfg.XDS, Gateway: cfg.Partner.Gateway, RateLimit: cfg.Partner.RateLimit,
		Enterprise: cfg.Partner.Security.Enterprise, JWTHeader: cfg.Edge.JWTHeader, Regions: cfg.Regions}
}

// Region returns the named region.
func (c *Config) Region(name string) (config.Region, bool) { return c.Regions.Get(name) }

// RegionNames returns the configured region names.
func (c *Config) RegionNames() []string { return c.Regions.Names() }
