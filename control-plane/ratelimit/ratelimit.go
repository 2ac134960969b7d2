// Package ratelimit owns the configuration of the global rate-limit service
// (envoyproxy/ratelimit backed by Redis) that every Envoy of a region calls
// through envoy.filters.http.ratelimit: the descriptors of the partner API's
// domain, one per tier and window, that the control plane serves the
// service over xDS (RateLimitConfig resources), and the policy deciding which
// tiers fail closed when the service cannot answer.
//
// The mapping of the seed's token bucket onto the service's fixed windows:
// a tier's requests_per_minute is the limit of each calendar minute and its
// burst_size the limit of each calendar second (raised to the per-second rate
// when smaller; see schemas.RateLimit.Windows). Both windows are counted per
// tenant: the descriptors name the tier and the window, and carry the tenant
// id as a wildcard entry, so one configuration serves every tenant. A
// tenant's own limit (a rate_limit override) travels with each request as
// the descriptor's limit override (from the ext_authz plugin's dynamic
// metadata), so changing it never pushes configuration.
package ratelimit

import (
	"errors"
	"fmt"
	"strings"

	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// Stages of Envoy's rate-limit filters: the routes of a fail-open tier
// carry their descriptors at StageFailOpen, those of a fail-closed tier at
// StageFailClosed, and each stage has its own filter with the matching
// failure_mode_deny.
const (
	StageFailOpen   = 0
	StageFailClosed = 1
)

// Stage is the filter stage of tier's descriptors.
func Stage(svc config.RateLimitService, tier string) uint32 {
	if svc.FailClosed(tier) {
		return StageFailClosed
	}
	return StageFailOpen
}

// Config is the service's configuration of the partner API domain: for
// every tier, (tier, <tier>) → (tenant, *) → (window, minute | second) with
// the tier's limits.
func Config(limits config.RateLimits) *rlsconf.RateLimitConfig {
	c := &rlsconf.RateLimitConfig{Name: limits.Service.Domain, Domain: limits.Service.Domain}
	for _, tier := range schemas.Tiers {
		d := limits.ForTier(tier)
		perMinute, perSecond := schemas.RateLimit{RequestsPerMinute: d.RequestsPerMinute, BurstSize: d.BurstSize}.Windows()
		c.Descriptors = append(c.Descriptors, &rlsconf.RateLimitDescriptor{
			Key: schemas.DescriptorTier, Value: tier,
			Descriptors: []*rlsconf.RateLimitDescriptor{{
				Key: schemas.DescriptorTenant, // no value: every tenant counts on its own
				Descriptors: []*rlsconf.RateLimitDescriptor{
					{Key: schemas.DescriptorWindow, Value: schemas.MetadataWindowMinute,
						RateLimit: &rlsconf.RateLimitPolicy{Unit: rlsconf.RateLimitUnit_MINUTE, RequestsPerUnit: uint32(perMinute)}},
					{Key: schemas.DescriptorWindow, Value: schemas.MetadataWindowSecond,
						RateLimit: &rlsconf.RateLimitPolicy{Unit: rlsconf.RateLimitUnit_SECOND, RequestsPerUnit: uint32(perSecond)}},
				},
			}},
		})
	}
	return c
}

// Validate checks a configuration as the service would load it (the
// message carries no generated validation): a domain, every descriptor with
// a key, no key+value twice at one level, every policy with a unit and a
// positive limit.
func Validate(c *rlsconf.RateLimitConfig) error {
	if c.GetName() == "" || c.GetDomain() == "" {
		return errors.New("rate limit config: name and domain must be set")
	}
	return validateLevel(c.GetDescriptors(), c.GetDomain())
}

func validateLevel(ds []*rlsconf.RateLimitDescriptor, path string) error {
	seen := map[string]bool{}
	for _, d := range ds {
		p := path + "." + d.GetKey()
		if d.GetValue() != "" {
			p += "_" + d.GetValue()
		}
		if d.GetKey() == "" {
			return fmt.Errorf("rate limit config %s: descriptor without a key", path)
		}
		if seen[p] {
			return fmt.Errorf("rate limit config %s: duplicate descriptor", p)
		}
		seen[p] = true
		if rl := d.GetRateLimit(); rl != nil && !rl.GetUnlimited() {
			if rl.GetUnit() == rlsconf.RateLimitUnit_UNKNOWN || rl.GetRequestsPerUnit() == 0 {
				return fmt.Errorf("rate limit config %s: a limit needs a unit and requests_per_unit > 0", p)
			}
		}
		if err := validateLevel(d.GetDescriptors(), p); err != nil {
			return err
		}
	}
	return nil
}

// YAML renders c in the service's file format (what its /rlconfig debug
// page and the FILE provider read), for operators and the docs.
func YAML(c *rlsconf.RateLimitConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "domain: %s\ndescriptors:\n", c.GetDomain())
	var level func(ds []*rlsconf.RateLimitDescriptor, indent string)
	level = func(ds []*rlsconf.RateLimitDescriptor, indent string) {
		for _, d := range ds {
			fmt.Fprintf(&b, "%s- key: %s\n", indent, d.GetKey())
			if d.GetValue() != "" {
				fmt.Fprintf(&b, "%s  value: %s\n", indent, d.GetValue())
			}
			if rl := d.GetRateLimit(); rl != nil {
				fmt.Fprintf(&b, "%s  rate_limit: {unit: %s, requests_per_unit: %d}\n", indent, strings.ToLower(rl.GetUnit().String()), rl.GetRequestsPerUnit())
			}
			if len(d.GetDescriptors()) > 0 {
				fmt.Fprintf(&b, "%s  descriptors:\n", indent)
				level(d.GetDescriptors(), indent+"    ")
			}
		}
	}
	level(c.GetDescriptors(), "  ")
	return b.String()
}
