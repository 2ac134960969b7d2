package authz

import (
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// derived is what an allowed request of one tenant version carries to
// Envoy's rate limiting: computed once per version.
type derived struct {
	limit       schemas.RateLimit
	shieldClass string
	// metadata is the ext_authz dynamic metadata: the tenant's own limits
	// per window, read by the routes' rate-limit "limit" overrides. nil for
	// a tenant on its tier's limits (the rate-limit service's descriptors
	// hold those).
	metadata *structpb.Struct
	// ok is the answer to an allowed request: the tenant's headers and the
	// metadata. Shared by every Check of the version; never modified.
	ok *authv3.CheckResponse
}

// EffectiveLimit is the tenant's limit: the tier's from partner.rate_limit,
// or the tenant's own override. An invalid override (a record written
// around the admin API's validation) is ignored and reported, so the tenant
// keeps a sane limit rather than none.
func EffectiveLimit(limits config.RateLimits, t *schemas.Tenant) (rl schemas.RateLimit, override bool, err error) {
	d := limits.ForTier(t.Tier)
	eff := schemas.RateLimit{RequestsPerMinute: d.RequestsPerMinute, BurstSize: d.BurstSize}
	if o := t.RateLimit; o != nil {
		if o.RequestsPerMinute <= 0 || o.RequestsPerMinute > 1_000_000 || o.BurstSize <= 0 || o.BurstSize > 1_000_000 {
			return eff, false, fmt.Errorf("rate_limit override {requests_per_minute: %d, burst_size: %d} is invalid (each must be 1..1000000): tier %q limits used",
				o.RequestsPerMinute, o.BurstSize, t.Tier)
		}
		return *o, true, nil
	}
	return eff, false, nil
}

// OverrideMetadata is the dynamic metadata carrying a tenant's own limit:
// {partners_rate_limit: {minute: {requests_per_unit, unit: MINUTE},
// second: {requests_per_unit, unit: SECOND}}}, the windows of
// schemas.RateLimit.Windows.
func OverrideMetadata(rl schemas.RateLimit) *structpb.Struct {
	perMinute, perSecond := rl.Windows()
	window := func(n int, unit string) *structpb.Value {
		return structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"requests_per_unit": structpb.NewNumberValue(float64(n)),
			"unit":              structpb.NewStringValue(unit),
		}})
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		schemas.MetadataRateLimit: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			schemas.MetadataWindowMinute: window(perMinute, "MINUTE"),
			schemas.MetadataWindowSecond: window(perSecond, "SECOND"),
		}}),
	}}
}

// derive returns the cached rate-limit data of t's version, reporting an
// invalid override once per version.
func (s *Server) derive(t *schemas.Tenant) *derived {
	k := versionKey{t.ID, t.Version}
	if d, ok := s.derived.Get(k); ok {
		return d
	}
	rl, override, err := EffectiveLimit(s.cfg.RateLimit, t)
	if err != nil {
		s.issues.WithLabelValues("tier_default").Inc()
		s.log.Warn("tenant config cannot be served as written", "tenant_id", t.ID, "version", t.Version, "outcome", "tier_default", "reason", err.Error())
	}
	d := &derived{limit: rl, shieldClass: schemas.ShieldClassName(schemas.ShieldClass(rl))}
	if override {
		d.metadata = OverrideMetadata(rl)
	}
	d.ok = &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpccodes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			// Overwrite: a partner cannot choose its own tenant, route or
			// bucket.
			Headers: []*core.HeaderValueOption{
				headerOpt(schemas.HeaderTenantID, t.ID),
				headerOpt(schemas.HeaderTier, t.Tier),
				headerOpt(schemas.HeaderRateLimitKey, t.ID),
				headerOpt(schemas.HeaderShieldClass, d.shieldClass),
			},
			HeadersToRemove: []string{"authorization", s.cfg.Edge.JWTHeader},
		}},
		// The tenant's own limits, which the routes' rate limits send the
		// global service as descriptor limit overrides.
		DynamicMetadata: d.metadata,
	}
	s.derived.Add(k, d)
	return d
}
