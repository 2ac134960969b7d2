// Package xds owns the xDS control plane of the regional Envoy edges: the
// snapshot builder that turns the tenants of a region into listeners, routes,
// clusters and SDS secrets (per-tenant routes, token buckets and jwt_authn
// providers), the validation every snapshot passes before it is served, and
// the ADS server (SotW and delta) with per-region snapshots, hot reload on
// tenant changes and NACK handling.
package xds

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	stream "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwt "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// Names shared by the builder, the edge plugin and the tests. The header
// names are the contract between the ext_authz plugin (which sets them on
// allowed requests) and the routes and token buckets built here.
const (
	// DescriptorKey is the local_ratelimit descriptor entry holding the
	// tenant id (from schemas.HeaderRateLimitKey).
	DescriptorKey = "partner_tenant"

	ListenerPublic     = "partners-https"
	ListenerEnterprise = "partners-enterprise"
	RouteConfigName    = "partners"
	ClusterProduction  = "partners-production"
	ClusterSandbox     = "partners-sandbox"
	ClusterExtAuthz    = "partners-ext-authz"
	ClusterOTel        = "partners-otel-collector"
	SecretServerCert   = "edge-server-cert"
	SecretClientCA     = "enterprise-client-ca"

	filterExtAuthz   = "envoy.filters.http.ext_authz"
	filterJWT        = "envoy.filters.http.jwt_authn"
	filterRateLimit  = "envoy.filters.http.local_ratelimit"
	filterRouter     = "envoy.filters.http.router"
	filterHCM        = "envoy.filters.network.http_connection_manager"
	transportTLS     = "envoy.transport_sockets.tls"
	jwtPayloadKey    = "jwt_payload"
	http2OptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// tenantKey identifies one version of a tenant: the derived config of a
// version never changes, so it is cached under this key.
type tenantKey struct {
	id      string
	version int64
}

// tenantConfig is what one tenant contributes to a region's snapshot. It
// does not depend on the region (cluster names are the same in every
// region), so one cached value serves all regions.
type tenantConfig struct {
	routes     []*route.Route
	descriptor *rlcommon.LocalRateLimitDescriptor
	jwt        *jwt.JwtProvider // enterprise tenants with a JWT config
	limit      schemas.RateLimit
	warning    string // an override that was ignored
	err        error  // the tenant cannot be served: left out of the snapshot
}

// Builder turns tenants into xDS resources. It is safe for concurrent use.
type Builder struct {
	cfg   *Config
	cache *lru.Cache[tenantKey, *tenantConfig]
	// featureRoutes sorted by prefix length, longest first, so a tenant's
	// feature routes precede its catch-all route.
	featureRoutes []config.FeatureRoute
}

// NewBuilder returns a builder for cfg caching up to cfg.XDS.CacheSize
// derived tenant configs.
func NewBuilder(cfg *Config) (*Builder, error) {
	c, err := lru.New[tenantKey, *tenantConfig](cfg.XDS.CacheSize)
	if err != nil {
		return nil, err
	}
	frs := slices.Clone(cfg.Gateway.FeatureRoutes)
	sort.SliceStable(frs, func(i, j int) bool { return len(frs[i].Prefix) > len(frs[j].Prefix) })
	return &Builder{cfg: cfg, cache: c, featureRoutes: frs}, nil
}

// Skipped is a tenant left out of a region's snapshot, or served with its
// tier defaults because an override was invalid.
type Skipped struct {
	TenantID string
	Version  int64
	Reason   string
	Excluded bool // false: served with the tier default
}

// Resources are a region's resources by type URL, each list sorted by name.
type Resources map[resource.Type][]types.Resource

// Build returns the resources of region for the given tenants (all tenants:
// those not served in region are ignored), and the tenants it had to skip or
// downgrade. Suspended and pending tenants get no routes and no bucket.
func (b *Builder) Build(region string, tenants []*schemas.Tenant) (res Resources, skipped []Skipped, err error) {
	defer func() {
		// mustAny cannot fail on what the builder constructs; should it
		// ever, the build is refused rather than the process crashing.
		if v := recover(); v != nil {
			res, skipped, err = nil, nil, fmt.Errorf("build region %s: %v", region, v)
		}
	}()
	reg, ok := b.cfg.Region(region)
	if !ok {
		return nil, nil, fmt.Errorf("unknown region %q", region)
	}
	var (
		routes      []*route.Route
		descriptors []*rlcommon.LocalRateLimitDescriptor
		providers   = map[string]*jwt.JwtProvider{}
	)
	served := make([]*schemas.Tenant, 0, len(tenants))
	for _, t := range tenants {
		if t != nil && t.Status == schemas.StatusActive && t.InRegion(region) {
			served = append(served, t)
		}
	}
	sort.Slice(served, func(i, j int) bool { return served[i].ID < served[j].ID })
	for _, t := range served {
		tc := b.tenant(t)
		if tc.err != nil {
			skipped = append(skipped, Skipped{TenantID: t.ID, Version: t.Version, Reason: tc.err.Error(), Excluded: true})
			continue
		}
		if tc.warning != "" {
			skipped = append(skipped, Skipped{TenantID: t.ID, Version: t.Version, Reason: tc.warning})
		}
		routes = append(routes, tc.routes...)
		descriptors = append(descriptors, tc.descriptor)
		if tc.jwt != nil {
			providers[providerName(t.ID)] = tc.jwt
		}
	}
	routes = append(routes, b.fallbackRoute())

	rc := &route.RouteConfiguration{
		Name: RouteConfigName,
		VirtualHosts: []*route.VirtualHost{{
			Name:    "partners",
			Domains: []string{"*"},
			Routes:  routes,
			TypedPerFilterConfig: map[string]*anypb.Any{
				filterExtAuthz: mustAny(&extauthz.ExtAuthzPerRoute{Override: &extauthz.ExtAuthzPerRoute_CheckSettings{
					CheckSettings: &extauthz.CheckSettings{ContextExtensions: map[string]string{schemas.ContextRegion: region}},
				}}),
			},
		}},
	}
	public, err := b.listener(region, ListenerPublic, b.cfg.XDS.ListenerPort, false, descriptors, nil)
	if err != nil {
		return nil, nil, err
	}
	enterprise, err := b.listener(region, ListenerEnterprise, b.cfg.XDS.EnterpriseListenerPort, true, descriptors, providers)
	if err != nil {
		return nil, nil, err
	}
	prod, err := b.upstream(ClusterProduction, reg.ProductionUpstream)
	if err != nil {
		return nil, nil, fmt.Errorf("regions[%s].production_upstream: %w", region, err)
	}
	sbx, err := b.upstream(ClusterSandbox, reg.SandboxUpstream)
	if err != nil {
		return nil, nil, fmt.Errorf("regions[%s].sandbox_upstream: %w", region, err)
	}
	authz, err := b.grpcCluster(ClusterExtAuthz, b.cfg.XDS.ExtAuthzCluster)
	if err != nil {
		return nil, nil, fmt.Errorf("xds.ext_authz_address: %w", err)
	}
	clusters := []types.Resource{authz, prod, sbx}
	if addr := b.cfg.XDS.Tracing.CollectorAddress; addr != "" {
		otel, err := b.grpcCluster(ClusterOTel, addr)
		if err != nil {
			return nil, nil, fmt.Errorf("xds.tracing.collector_address: %w", err)
		}
		clusters = append(clusters, otel)
	}
	return Resources{
		resource.ListenerType: {enterprise, public},
		resource.RouteType:    {rc},
		resource.ClusterType:  clusters,
		resource.SecretType:   b.secrets(),
	}, skipped, nil
}

// tenant returns the cached derived config of t's version.
func (b *Builder) tenant(t *schemas.Tenant) *tenantConfig {
	k := tenantKey{id: t.ID, version: t.Version}
	if tc, ok := b.cache.Get(k); ok {
		return tc
	}
	tc := b.derive(t)
	b.cache.Add(k, tc)
	return tc
}

// EffectiveLimit is the tenant's token bucket: the tier default from
// partner.rate_limit with the tenant's override on top. An invalid override
// (a record written around the admin API's validation) is ignored and
// reported, so the tenant keeps a sane bucket rather than none.
func EffectiveLimit(limits config.RateLimits, t *schemas.Tenant) (schemas.RateLimit, error) {
	d := limits.ForTier(t.Tier)
	eff := schemas.RateLimit{RequestsPerMinute: d.RequestsPerMinute, BurstSize: d.BurstSize}
	if o := t.RateLimit; o != nil {
		if o.RequestsPerMinute <= 0 || o.RequestsPerMinute > 1_000_000 || o.BurstSize <= 0 || o.BurstSize > 1_000_000 {
			return eff, fmt.Errorf("rate_limit override {requests_per_minute: %d, burst_size: %d} is invalid (each must be 1..1000000): tier %q default used",
				o.RequestsPerMinute, o.BurstSize, t.Tier)
		}
		eff = *o
	}
	return eff, nil
}

// validTenantID reports whether id can be used verbatim in header matchers,
// descriptor values and route and provider names.
func validTenantID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (b *Builder) derive(t *schemas.Tenant) *tenantConfig {
	tc := &tenantConfig{}
	if !validTenantID(t.ID) {
		tc.err = fmt.Errorf("tenant id %q is not a lower-case identifier: not routable", t.ID)
		return tc
	}
	limit, err := EffectiveLimit(b.cfg.RateLimit, t)
	if err != nil {
		tc.warning = err.Error()
	}
	tc.limit = limit
	tc.descriptor = &rlcommon.LocalRateLimitDescriptor{
		Entries:     []*rlcommon.RateLimitDescriptor_Entry{{Key: DescriptorKey, Value: t.ID}},
		TokenBucket: TokenBucket(limit),
	}
	if t.Tier == schemas.TierEnterprise && t.JWT != nil {
		p, err := jwtProvider(t.JWT, b.cfg.JWTHeader)
		if err != nil {
			// Fail closed: an enterprise tenant whose JWT config cannot be
			// enforced is not served at all.
			tc.err = fmt.Errorf("jwt: %w", err)
			return tc
		}
		tc.jwt = p
	}
	cl := ClusterProduction
	if t.Tier == schemas.TierSandbox {
		cl = ClusterSandbox
	}
	for _, fr := range b.featureRoutes {
		if t.Features[fr.Feature] {
			tc.routes = append(tc.routes, b.tenantRoute(t.ID+"/"+fr.Feature, fr.Prefix, t.ID, cl))
		}
	}
	tc.routes = append(tc.routes, b.tenantRoute(t.ID, b.cfg.Gateway.APIPrefix, t.ID, cl))
	return tc
}

// TokenBucket converts a rate limit into Envoy's bucket: max_tokens is the
// burst and the refill averages requests_per_minute/60 per second. The fill
// interval is a whole number of seconds (so it is a multiple of the default
// bucket's 1s interval, as local_ratelimit requires of descriptors): the
// smallest k in 1..60 with rpm·k/60 an integer no larger than the burst.
// When none exists the refill is rounded (at most one token per interval off).
func TokenBucket(rl schemas.RateLimit) *typev3.TokenBucket {
	rpm, burst := rl.RequestsPerMinute, rl.BurstSize
	k, tokens := 0, 0
	for i := 1; i <= 60; i++ {
		if rpm*i%60 == 0 && rpm*i/60 <= burst {
			k, tokens = i, rpm*i/60
			break
		}
	}
	if k == 0 {
		if rpm < 60 {
			k = (60 + rpm - 1) / rpm
		} else {
			k = 1
		}
		tokens = max(1, min(burst, (rpm*k+30)/60))
	}
	return &typev3.TokenBucket{
		MaxTokens:     uint32(burst),
		TokensPerFill: wrapperspb.UInt32(uint32(tokens)),
		FillInterval:  durationpb.New(time.Duration(k) * time.Second),
	}
}

func (b *Builder) tenantRoute(name, prefix, tenantID, clusterName string) *route.Route {
	return &route.Route{
		Name: name,
		Match: &route.RouteMatch{
			PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix},
			Headers: []*route.HeaderMatcher{{
				Name: schemas.HeaderTenantID,
				HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
					MatchPattern: &matcher.StringMatcher_Exact{Exact: tenantID},
				}},
			}},
		},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName},
			Timeout:          durationpb.New(b.cfg.XDS.UpstreamTimeout),
			RateLimits: []*route.RateLimit{{
				Actions: []*route.RateLimit_Action{{
					ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{RequestHeaders: &route.RateLimit_Action_RequestHeaders{
						HeaderName:    schemas.HeaderRateLimitKey,
						DescriptorKey: DescriptorKey,
					}},
				}},
			}},
		}},
	}
}

// fallbackRoute answers requests no tenant route matched: a tenant the
// region does not (yet) serve, or a feature route the tenant lacks.
func (b *Builder) fallbackRoute() *route.Route {
	body := problem.New(403, "no partner route for this tenant and path in this region").JSON()
	return &route.Route{
		Name:  "no-tenant-route",
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
			Status: 403,
			Body:   &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: string(body)}},
		}},
		ResponseHeadersToAdd: []*core.HeaderValueOption{header("content-type", problem.ContentType)},
	}
}

func providerName(tenantID string) string { return "tenant-" + tenantID }

func jwtProvider(c *schemas.JWTConfig, fromHeader string) (*jwt.JwtProvider, error) {
	if c.Issuer == "" {
		return nil, errors.New("issuer is empty")
	}
	keys, err := jwks.Parse([]byte(c.JWKS))
	if err != nil {
		return nil, err
	}
	return &jwt.JwtProvider{
		Issuer:            c.Issuer,
		Audiences:         c.Audiences,
		RequireExpiration: true,
		JwksSourceSpecifier: &jwt.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
			Specifier: &core.DataSource_InlineString{InlineString: keys.Document()},
		}},
		FromHeaders:       []*jwt.JwtHeader{{Name: fromHeader}},
		Forward:           true,
		PayloadInMetadata: jwtPayloadKey,
	}, nil
}

func (b *Builder) listener(region, name string, port int, enterprise bool, descriptors []*rlcommon.LocalRateLimitDescriptor, providers map[string]*jwt.JwtProvider) (*listener.Listener, error) {
	var filters []*hcm.HttpFilter
	if enterprise {
		filters = append(filters, httpFilter(filterJWT, jwtAuthn(providers, b.cfg.Gateway.APIPrefix)))
	}
	filters = append(filters,
		httpFilter(filterExtAuthz, b.extAuthz()),
		httpFilter(filterRateLimit, b.rateLimit(descriptors)),
		httpFilter(filterRouter, &router.Router{}),
	)
	m := &hcm.HttpConnectionManager{
		CodecType:  hcm.HttpConnectionManager_AUTO,
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigName,
		}},
		HttpFilters:       filters,
		AccessLog:         []*accesslog.AccessLog{accessLog()},
		LocalReplyConfig:  b.localReplies(),
		UseRemoteAddress:  wrapperspb.Bool(true),
		GenerateRequestId: wrapperspb.Bool(true),
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{
			HeadersWithUnderscoresAction: core.HttpProtocolOptions_REJECT_REQUEST,
		},
		// Oversized request headers are refused by Envoy (431) before any
		// filter runs; the plugin also bounds Authorization itself.
		MaxRequestHeadersKb: wrapperspb.UInt32(60),
	}
	if b.cfg.XDS.Tracing.CollectorAddress != "" {
		// Envoy's spans (and the ext_authz call's, which the plugin's Check
		// span continues) go to the collector.
		m.Tracing = &hcm.HttpConnectionManager_Tracing{
			RandomSampling: &typev3.Percent{Value: b.cfg.XDS.Tracing.SamplePercent},
			Provider: &tracev3.Tracing_Http{
				Name: "envoy.tracers.opentelemetry",
				ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
					GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ClusterOTel}}},
					ServiceName: "partners-edge-" + region,
				})},
			},
		}
	}
	tlsCtx := &tls.DownstreamTlsContext{
		CommonTlsContext: &tls.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tls.SdsSecretConfig{{Name: SecretServerCert, SdsConfig: adsSource()}},
		},
	}
	if enterprise && b.cfg.Enterprise.MTLS == "enabled" {
		tlsCtx.RequireClientCertificate = wrapperspb.Bool(true)
		tlsCtx.CommonTlsContext.ValidationContextType = &tls.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: SecretClientCA, SdsConfig: adsSource()},
		}
	}
	hcmAny, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	tlsAny, err := anypb.New(tlsCtx)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name:    name,
		Address: socketAddress("0.0.0.0", uint32(port)),
		FilterChains: []*listener.FilterChain{{
			Name:            name,
			Filters:         []*listener.Filter{{Name: filterHCM, ConfigType: &listener.Filter_TypedConfig{TypedConfig: hcmAny}}},
			TransportSocket: &core.TransportSocket{Name: transportTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: tlsAny}},
		}},
	}, nil
}

func jwtAuthn(providers map[string]*jwt.JwtProvider, prefix string) *jwt.JwtAuthentication {
	names := make([]string, 0, len(providers))
	for n := range providers {
		names = append(names, n)
	}
	sort.Strings(names)
	// Any configured provider may verify the JWT; the edge plugin then checks
	// that the issuer is the one of the tenant the API key belongs to. A
	// missing JWT passes here and is refused by the plugin for tenants that
	// have a JWT config.
	reqs := make([]*jwt.JwtRequirement, 0, len(names)+1)
	for _, n := range names {
		reqs = append(reqs, &jwt.JwtRequirement{RequiresType: &jwt.JwtRequirement_ProviderName{ProviderName: n}})
	}
	reqs = append(reqs, &jwt.JwtRequirement{RequiresType: &jwt.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	req := reqs[0]
	if len(reqs) > 1 {
		req = &jwt.JwtRequirement{RequiresType: &jwt.JwtRequirement_RequiresAny{RequiresAny: &jwt.JwtRequirementOrList{Requirements: reqs}}}
	}
	return &jwt.JwtAuthentication{
		Providers: providers,
		Rules: []*jwt.RequirementRule{{
			Match:           &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}},
			RequirementType: &jwt.RequirementRule_Requires{Requires: req},
		}},
	}
}

func (b *Builder) extAuthz() *extauthz.ExtAuthz {
	return &extauthz.ExtAuthz{
		Services: &extauthz.ExtAuthz_GrpcService{GrpcService: &core.GrpcService{
			TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ClusterExtAuthz}},
			Timeout:         durationpb.New(b.cfg.XDS.ExtAuthzTimeout),
		}},
		TransportApiVersion: core.ApiVersion_V3,
		// Fail closed: without an answer from the plugin no request passes.
		FailureModeAllow: false,
		StatusOnError:    &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		// The plugin's headers decide the tenant route.
		ClearRouteCache:           true,
		IncludePeerCertificate:    true,
		MetadataContextNamespaces: []string{filterJWT},
		StatPrefix:                "partners",
	}
}

func (b *Builder) rateLimit(descriptors []*rlcommon.LocalRateLimitDescriptor) *lrl.LocalRateLimit {
	d := b.cfg.RateLimit.Default
	return &lrl.LocalRateLimit{
		StatPrefix: "partners_tenant",
		// Requests without a tenant descriptor (none pass ext_authz) share
		// the default bucket, refilled each second.
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     uint32(d.BurstSize),
			TokensPerFill: wrapperspb.UInt32(uint32(max(1, (d.RequestsPerMinute+59)/60))),
			FillInterval:  durationpb.New(time.Second),
		},
		FilterEnabled:                   percent100("partners_tenant_rl_enabled"),
		FilterEnforced:                  percent100("partners_tenant_rl_enforced"),
		Descriptors:                     descriptors,
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		EnableXRatelimitHeaders:         rlcommon.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
	}
}

func (b *Builder) localReplies() *hcm.LocalReplyConfig {
	problemBody := func(status int, detail string) *core.SubstitutionFormatString {
		p := problem.New(status, detail)
		s, _ := structpb.NewStruct(map[string]any{"type": p.Type, "title": p.Title, "status": float64(status), "detail": p.Detail})
		return &core.SubstitutionFormatString{
			Format:      &core.SubstitutionFormatString_JsonFormat{JsonFormat: s},
			ContentType: problem.ContentType,
		}
	}
	flags := func(f ...string) *accesslog.AccessLogFilter {
		return &accesslog.AccessLogFilter{FilterSpecifier: &accesslog.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslog.ResponseFlagFilter{Flags: f},
		}}
	}
	return &hcm.LocalReplyConfig{Mappers: []*hcm.ResponseMapper{
		{
			// Upstream overflow (circuit breaker) or no healthy host (outlier
			// ejection): a fast 503 the partner can back off from.
			Filter:             flags("UO", "UH"),
			StatusCode:         wrapperspb.UInt32(503),
			HeadersToAdd:       []*core.HeaderValueOption{header("retry-after", strconv.Itoa(int(b.cfg.XDS.OverloadRetryAfter/time.Second)))},
			BodyFormatOverride: problemBody(503, "the partner API is overloaded in this region; retry after the Retry-After delay"),
		},
		{
			Filter:             flags("RL"),
			HeadersToAdd:       []*core.HeaderValueOption{header("retry-after", "1")},
			BodyFormatOverride: problemBody(429, "rate limit of this tenant exceeded; see the X-RateLimit-* headers"),
		},
	}}
}

func accessLog() *accesslog.AccessLog {
	fields, _ := structpb.NewStruct(map[string]any{
		"time":        "%START_TIME%",
		"tenant_id":   "%REQ(X-PARTNER-TENANT-ID)%",
		"tier":        "%REQ(X-PARTNER-TIER)%",
		"method":      "%REQ(:METHOD)%",
		"path":        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"status":      "%RESPONSE_CODE%",
		"flags":       "%RESPONSE_FLAGS%",
		"details":     "%RESPONSE_CODE_DETAILS%",
		"duration_ms": "%DURATION%",
		"upstream":    "%UPSTREAM_CLUSTER%",
		"request_id":  "%REQ(X-REQUEST-ID)%",
		"traceparent": "%REQ(TRACEPARENT)%",
	})
	return &accesslog.AccessLog{
		Name: "envoy.access_loggers.stdout",
		ConfigType: &accesslog.AccessLog_TypedConfig{TypedConfig: mustAny(&stream.StdoutAccessLog{
			AccessLogFormat: &stream.StdoutAccessLog_LogFormat{LogFormat: &core.SubstitutionFormatString{
				Format: &core.SubstitutionFormatString_JsonFormat{JsonFormat: fields},
			}},
		})},
	}
}

func (b *Builder) upstream(name, hostPort string) (*cluster.Cluster, error) {
	c, err := staticCluster(name, hostPort, b.cfg.XDS.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	cb, od := b.cfg.XDS.CircuitBreakers, b.cfg.XDS.OutlierDetection
	c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		Priority:           core.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(uint32(cb.MaxConnections)),
		MaxPendingRequests: wrapperspb.UInt32(uint32(cb.MaxPendingRequests)),
		MaxRequests:        wrapperspb.UInt32(uint32(cb.MaxRequests)),
		MaxRetries:         wrapperspb.UInt32(uint32(cb.MaxRetries)),
	}}}
	if od.Consecutive5xx > 0 {
		c.OutlierDetection = &cluster.OutlierDetection{
			Consecutive_5Xx:    wrapperspb.UInt32(uint32(od.Consecutive5xx)),
			Interval:           durationpb.New(od.Interval),
			BaseEjectionTime:   durationpb.New(od.BaseEjection),
			MaxEjectionPercent: wrapperspb.UInt32(uint32(od.MaxEjectionPercent)),
		}
	}
	return c, nil
}

// grpcCluster is an HTTP/2 cluster for a gRPC service Envoy calls.
func (b *Builder) grpcCluster(name, hostPort string) (*cluster.Cluster, error) {
	c, err := staticCluster(name, hostPort, b.cfg.XDS.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		http2OptionsName: mustAny(&upstreamhttp.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
			}},
		}),
	}
	return c, nil
}

// staticCluster is a cluster of one host:port: STATIC for an IP, STRICT_DNS
// for a name.
func staticCluster(name, hostPort string, connectTimeout time.Duration) (*cluster.Cluster, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port of %q: %w", hostPort, err)
	}
	typ := cluster.Cluster_STRICT_DNS
	if net.ParseIP(host) != nil {
		typ = cluster.Cluster_STATIC
	}
	return &cluster.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(connectTimeout),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: typ},
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
				HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(host, uint32(port))}},
			}}}},
		},
	}, nil
}

// secrets point at files on the Envoy host: rotating a certificate is a file
// change there, and no key material crosses the xDS stream.
func (b *Builder) secrets() []types.Resource {
	t := b.cfg.XDS.TLS
	file := func(p string) *core.DataSource {
		return &core.DataSource{Specifier: &core.DataSource_Filename{Filename: p}}
	}
	return []types.Resource{
		&tls.Secret{Name: SecretClientCA, Type: &tls.Secret_ValidationContext{ValidationContext: &tls.CertificateValidationContext{
			TrustedCa: file(t.ClientCAPath),
		}}},
		&tls.Secret{Name: SecretServerCert, Type: &tls.Secret_TlsCertificate{TlsCertificate: &tls.TlsCertificate{
			CertificateChain: file(t.ServerCertPath),
			PrivateKey:       file(t.ServerKeyPath),
		}}},
	}
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func socketAddress(host string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       host,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func header(k, v string) *core.HeaderValueOption {
	return &core.HeaderValueOption{
		Header:       &core.HeaderValue{Key: k, Value: v},
		AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func percent100(runtimeKey string) *core.RuntimeFractionalPercent {
	return &core.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		RuntimeKey:   runtimeKey,
	}
}

func httpFilter(name string, cfg proto.Message) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: name, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// mustAny packs a message the builder constructed; anypb.New fails only on
// a message that cannot be marshalled, which these never are.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("xds: pack %T: %v", m, err))
	}
	return a
}
