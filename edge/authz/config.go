package authz

import "github.com/partners-engine/partners-engine/internal/config"

// Config is what the ext_authz plugin reads of the configuration. The
// composition root (internal/runner) fills it from config.Config.
type Config struct {
	Gateway    config.Gateway    // partner.gateway: cache sizes and TTLs, API prefix, feature routes
	Edge       config.Edge       // the edge section: headers, buffers, limits
	Enterprise config.Enterprise // partner.security.enterprise: mTLS, audit
	RateLimit  config.RateLimits // partner.rate_limit: the tiers' limits a tenant's requests carry
	Pepper     string            // partner.keys.pepper: the API key hash key
	// TouchpointSources are the partner.attribution.touchpoint_sources the
	// plugin records.
	TouchpointSources []string
}

// NewConfig selects the plugin's sections of cfg.
func NewConfig(cfg *config.Config) Config {
	return Config{Gateway: cfg.Partner.Gateway, Edge: cfg.Edge, Enterprise: cfg.Partner.Security.Enterprise,
		RateLimit: cfg.Partner.RateLimit, Pepper: cfg.Partner.Keys.Pepper, TouchpointSources: cfg.Partner.Attribution.TouchpointSources}
}
