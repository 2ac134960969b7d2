package xds

import "github.com/partners-engine/partners-engine/internal/config"

// Config is what the control plane reads of the configuration: its own xds
// section and the sections whose values end up in Envoy's resources and the
// rate-limit service's configuration. The composition root fills it from
// config.Config.
type Config struct {
	XDS        config.XDS        // listeners, clusters, timeouts, TLS (its own and Envoy's), tracing
	Gateway    config.Gateway    // partner.gateway: API prefix
	RateLimit  config.RateLimits // partner.rate_limit: tier limits, the global service, failure policy
	Enterprise config.Enterprise // partner.security.enterprise: mTLS
	Regions    config.Regions
}

// NewConfig selects the control plane's sections of cfg.
func NewConfig(cfg *config.Config) *Config {
	return &Config{XDS: cfg.XDS, Gateway: cfg.Partner.Gateway, RateLimit: cfg.Partner.RateLimit,
		Enterprise: cfg.Partner.Security.Enterprise, Regions: cfg.Regions}
}

// Region returns the named region.
func (c *Config) Region(name string) (config.Region, bool) { return c.Regions.Get(name) }

// RegionNames returns the configured region names.
func (c *Config) RegionNames() []string { return c.Regions.Names() }
