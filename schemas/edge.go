package schemas

// The edge contract between the ext_authz plugin, which decides and sets
// these on every allowed request, and the xDS configuration the control
// plane gives Envoy, whose routes and rate limits read them. Both sides
// take the names from here.
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

	// ContextRegion is the ext_authz context extension carrying the region
	// of the edge, set on the virtual host.
	ContextRegion = "region"
)
