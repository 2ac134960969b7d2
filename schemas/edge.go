package schemas

import (
	"math/bits"
	"strconv"
)

// The edge contract between the ext_authz plugin, which decides and sets
// these on every allowed request, and the xDS configuration the control
// plane gives Envoy, whose routes and rate limits read them. Both sides
// take the names from here. Nothing in this contract names a tenant: the
// listeners and routes Envoy holds are the same whatever tenants exist, and
// every per-tenant fact travels with the request.
const (
	// HeaderTenantID carries the tenant id of an allowed request upstream.
	HeaderTenantID = "x-partner-tenant-id"
	// HeaderTier carries the tenant's tier: the routes select the upstream
	// cluster and the rate-limit policy by it.
	HeaderTier = "x-partner-tier"
	// HeaderRateLimitKey is the rate-limit key of the request (the tenant
	// id): the descriptor entry the global rate-limit service counts on and
	// the local shield's per-tenant bucket.
	HeaderRateLimitKey = "x-partner-ratelimit-key"
	// HeaderShieldClass names the local shield bucket size of the request
	// ("c5": see ShieldClass).
	HeaderShieldClass = "x-partner-ratelimit-class"

	// ContextRegion is the ext_authz context extension carrying the region
	// of the edge, set on the virtual host.
	ContextRegion = "region"

	// MetadataNamespace is where Envoy puts the dynamic metadata of an
	// ext_authz answer (the filter's canonical name).
	MetadataNamespace = "envoy.filters.http.ext_authz"
	// MetadataRateLimit is the key, in MetadataNamespace, of a tenant's own
	// limits: present only for a tenant with a rate_limit override, it holds
	// one struct per window (MetadataWindowMinute, MetadataWindowSecond) of
	// the shape Envoy's rate-limit "limit" override reads:
	// {requests_per_unit: N, unit: "MINUTE"|"SECOND"}.
	MetadataRateLimit    = "partners_rate_limit"
	MetadataWindowMinute = "minute"
	MetadataWindowSecond = "second"

	// Descriptor entries the routes send the global rate-limit service, in
	// this order: (tier, <tier>), (tenant, <tenant id>), (window, minute|second).
	DescriptorTier   = "tier"
	DescriptorTenant = "tenant"
	DescriptorWindow = "window"
	// DescriptorShieldClass is the local shield's first descriptor entry.
	DescriptorShieldClass = "shield_class"
)

// Windows maps a token bucket (the seed's meaning: burst_size tokens,
// refilled at requests_per_minute/60 per second) onto the fixed windows the
// global rate-limit service counts in: at most perMinute requests in each
// calendar minute and at most perSecond in each calendar second. perSecond is
// the burst, raised to the steady per-second rate when the burst is smaller
// (a bucket refilled faster than its depth still passes that rate).
func (rl RateLimit) Windows() (perMinute, perSecond int) {
	perMinute = rl.RequestsPerMinute
	perSecond = max(rl.BurstSize, (rl.RequestsPerMinute+59)/60)
	return perMinute, perSecond
}

// Shield classes size the local token bucket each Envoy keeps per tenant as
// a shield behind the global limit. Class k allows 2^(k-2) requests per 15 s
// (2^k a minute) with a bucket of 2^(k-2): ShieldClass picks the smallest
// class at least as large as the tenant's limit in both rate and burst, so
// the shield never refuses what the global limit allows and lets a replica
// pass at most about twice the tenant's limit when the global service is
// unreachable.
const (
	ShieldClassMin = 2
	ShieldClassMax = 22 // 2^22 a minute ≥ 4·1,000,000, the largest override
	// ShieldFillSeconds is the shield buckets' refill interval.
	ShieldFillSeconds = 15
)

// ShieldClass returns the shield class of a tenant's effective limit.
func ShieldClass(rl RateLimit) int {
	need := max(rl.RequestsPerMinute, 4*rl.BurstSize, 1<<ShieldClassMin)
	k := bits.Len(uint(need - 1)) // smallest k with 2^k >= need
	return min(max(k, ShieldClassMin), ShieldClassMax)
}

// ShieldTokens is the bucket size (and tokens per 15 s refill) of class k.
func ShieldTokens(k int) int { return 1 << (k - 2) }

// ShieldClassName is the descriptor value of class k ("c5").
func ShieldClassName(k int) string {
	return "c" + strconv.Itoa(k)
}
