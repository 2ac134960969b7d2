// Package xds owns the xDS control plane of the regional Envoy edges: the
// snapshot builder that turns the configuration of a region into listeners,
// routes, clusters, SDS secrets and the global rate-limit service's
// configuration, the validation every snapshot passes before it is served,
// and the ADS server (SotW and delta) with per-region snapshots and NACK
// handling.
//
// Nothing in a snapshot names a tenant. Envoy drains a listener whose
// content changes and resends a route table with every entry changed, so
// every per-tenant fact lives outside xDS and travels with the request: the
// ext_authz plugin decides (key, status, region, features, mutual-TLS
// identity, JWT) and sets the tenant, tier, rate-limit key and shield class
// headers plus, for a tenant with its own limits, dynamic metadata the routes'
// rate-limit actions turn into descriptor limit overrides; the global
// rate-limit service counts per tenant under per-tier descriptors. A tenant
// change therefore changes no xDS resource at all, and a snapshot costs the
// same whatever the number of tenants.
package xds

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rlconf "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	stream "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/partners-engine/partners-engine/control-plane/ratelimit"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// Names of the resources, shared by the builder, the tests and the tools.
const (
	ListenerPublic     = "partners-https"
	ListenerEnterprise = "partners-enterprise"
	RouteConfigName    = "partners"
	ClusterProduction  = "partners-production"
	ClusterSandbox     = "partners-sandbox"
	ClusterExtAuthz    = "partners-ext-authz"
	ClusterRateLimit   = "partners-ratelimit"
	ClusterOTel        = "partners-otel-collector"
	SecretServerCert   = "edge-server-cert"
	SecretClientCA     = "enterprise-client-ca"
	// SecretGRPCClientCert and SecretGRPCCA are Envoy's client certificate
	// and trust anchor toward ext_authz and the rate-limit service
	// (xds.grpc_tls).
	SecretGRPCClientCert = "edge-grpc-client-cert"
	SecretGRPCCA         = "edge-grpc-ca"

	// Filter names in the listeners' HTTP filter chain, in order.
	FilterExtAuthz        = "envoy.filters.http.ext_authz"
	FilterShield          = "envoy.filters.http.local_ratelimit"
	FilterGlobalFailOpen  = "envoy.filters.http.ratelimit"
	FilterGlobalFailClose = "partners.ratelimit.fail_closed"
	FilterRouter          = "envoy.filters.http.router"

	filterHCM        = "envoy.filters.network.http_connection_manager"
	transportTLS     = "envoy.transport_sockets.tls"
	http2OptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// TierRouteName is the name of the route serving tier's tenants.
func TierRouteName(tier string) string { return "tier-" + tier }

// Builder turns a region's configuration into xDS resources. It is safe
// for concurrent use.
type Builder struct {
	cfg *Config
}

// NewBuilder returns a builder for cfg.
func NewBuilder(cfg *Config) *Builder { return &Builder{cfg: cfg} }

// Resources are a region's resources by type URL, each list sorted by name.
type Resources map[resource.Type][]types.Resource

// Build returns the resources of region.
func (b *Builder) Build(region string) (res Resources, err error) {
	defer func() {
		// mustAny cannot fail on what the builder constructs; should it
		// ever, the build is refused rather than the process crashing.
		if v := recover(); v != nil {
			res, err = nil, fmt.Errorf("build region %s: %v", region, v)
		}
	}()
	reg, ok := b.cfg.Region(region)
	if !ok {
		return nil, fmt.Errorf("unknown region %q", region)
	}
	public, err := b.listener(region, ListenerPublic, b.cfg.XDS.ListenerPort, false)
	if err != nil {
		return nil, err
	}
	enterprise, err := b.listener(region, ListenerEnterprise, b.cfg.XDS.EnterpriseListenerPort, true)
	if err != nil {
		return nil, err
	}
	prod, err := b.upstream(ClusterProduction, reg.ProductionUpstream)
	if err != nil {
		return nil, fmt.Errorf("regions[%s].production_upstream: %w", region, err)
	}
	sbx, err := b.upstream(ClusterSandbox, reg.SandboxUpstream)
	if err != nil {
		return nil, fmt.Errorf("regions[%s].sandbox_upstream: %w", region, err)
	}
	authz, err := b.grpcCluster(ClusterExtAuthz, b.cfg.XDS.ExtAuthzCluster, true)
	if err != nil {
		return nil, fmt.Errorf("xds.ext_authz_address: %w", err)
	}
	rls, err := b.grpcCluster(ClusterRateLimit, b.cfg.RateLimit.Service.Address, true)
	if err != nil {
		return nil, fmt.Errorf("partner.rate_limit.service.address: %w", err)
	}
	clusters := []types.Resource{authz, prod, sbx, rls}
	if addr := b.cfg.XDS.Tracing.CollectorAddress; addr != "" {
		otel, err := b.grpcCluster(ClusterOTel, addr, false)
		if err != nil {
			return nil, fmt.Errorf("xds.tracing.collector_address: %w", err)
		}
		clusters = append(clusters, otel)
	}
	slices.SortFunc(clusters, func(a, b types.Resource) int {
		return compareNames(a.(*cluster.Cluster).GetName(), b.(*cluster.Cluster).GetName())
	})
	return Resources{
		resource.ListenerType:        {enterprise, public},
		resource.RouteType:           {b.routes(region)},
		resource.ClusterType:         clusters,
		resource.SecretType:          b.secrets(),
		resource.RateLimitConfigType: {ratelimit.Config(b.cfg.RateLimit)},
	}, nil
}

func compareNames(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// routes is the region's one route table: a route per tier (the plugin's
// tier header selects it) carrying the tier's upstream and rate limits, and
// a 403 for anything else. The plugin has already answered every request
// that reaches a route (unknown key, suspended tenant, feature off, ...), so
// the table needs no tenant.
func (b *Builder) routes(region string) *route.RouteConfiguration {
	var routes []*route.Route
	for _, tier := range schemas.Tiers {
		cl := ClusterProduction
		if tier == schemas.TierSandbox {
			cl = ClusterSandbox
		}
		routes = append(routes, &route.Route{
			Name: TierRouteName(tier),
			Match: &route.RouteMatch{
				PathSpecifier: &route.RouteMatch_Prefix{Prefix: b.cfg.Gateway.APIPrefix},
				Headers: []*route.HeaderMatcher{{
					Name: schemas.HeaderTier,
					HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
						MatchPattern: &matcher.StringMatcher_Exact{Exact: tier},
					}},
				}},
			},
			Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cl},
				Timeout:          durationpb.New(b.cfg.XDS.UpstreamTimeout),
				RateLimits:       b.tierRateLimits(tier),
			}},
		})
	}
	routes = append(routes, b.fallbackRoute())
	return &route.RouteConfiguration{
		Name: RouteConfigName,
		VirtualHosts: []*route.VirtualHost{{
			Name:    "partners",
			Domains: []string{"*"},
			Routes:  routes,
			TypedPerFilterConfig: map[string]*anypb.Any{
				FilterExtAuthz: mustAny(&extauthz.ExtAuthzPerRoute{Override: &extauthz.ExtAuthzPerRoute_CheckSettings{
					CheckSettings: &extauthz.CheckSettings{ContextExtensions: map[string]string{schemas.ContextRegion: region}},
				}}),
			},
		}},
	}
}

// tierRateLimits are the descriptors a tier's route sends the global
// service, at the stage of the tier's failure policy: (tier, T), (tenant,
// id), (window, minute|second), each with the tenant's own limit as the
// override when the plugin's dynamic metadata carries one.
func (b *Builder) tierRateLimits(tier string) []*route.RateLimit {
	stage := ratelimit.Stage(b.cfg.RateLimit.Service, tier)
	window := func(w string) *route.RateLimit {
		return &route.RateLimit{
			Stage: wrapperspb.UInt32(stage),
			Actions: []*route.RateLimit_Action{
				{ActionSpecifier: &route.RateLimit_Action_GenericKey_{GenericKey: &route.RateLimit_Action_GenericKey{
					DescriptorKey: schemas.DescriptorTier, DescriptorValue: tier}}},
				{ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{RequestHeaders: &route.RateLimit_Action_RequestHeaders{
					HeaderName: schemas.HeaderRateLimitKey, DescriptorKey: schemas.DescriptorTenant}}},
				{ActionSpecifier: &route.RateLimit_Action_GenericKey_{GenericKey: &route.RateLimit_Action_GenericKey{
					DescriptorKey: schemas.DescriptorWindow, DescriptorValue: w}}},
			},
			Limit: &route.RateLimit_Override{OverrideSpecifier: &route.RateLimit_Override_DynamicMetadata_{
				DynamicMetadata: &route.RateLimit_Override_DynamicMetadata{MetadataKey: &metadatav3.MetadataKey{
					Key: schemas.MetadataNamespace,
					Path: []*metadatav3.MetadataKey_PathSegment{
						{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: schemas.MetadataRateLimit}},
						{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: w}},
					},
				}},
			}},
		}
	}
	return []*route.RateLimit{window(schemas.MetadataWindowMinute), window(schemas.MetadataWindowSecond)}
}

// fallbackRoute answers requests no tier route matched.
func (b *Builder) fallbackRoute() *route.Route {
	body := problem.New(403, "no partner route for this request in this region").JSON()
	return &route.Route{
		Name:  "no-partner-route",
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
			Status: 403,
			Body:   &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: string(body)}},
		}},
		ResponseHeadersToAdd: []*core.HeaderValueOption{header("content-type", problem.ContentType)},
	}
}

func (b *Builder) listener(region, name string, port int, enterprise bool) (*listener.Listener, error) {
	m := &hcm.HttpConnectionManager{
		CodecType:  hcm.HttpConnectionManager_AUTO,
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigName,
		}},
		HttpFilters: []*hcm.HttpFilter{
			httpFilter(FilterExtAuthz, b.extAuthz()),
			httpFilter(FilterShield, b.shield()),
			httpFilter(FilterGlobalFailOpen, b.globalRateLimit(ratelimit.StageFailOpen, false)),
			httpFilter(FilterGlobalFailClose, b.globalRateLimit(ratelimit.StageFailClosed, true)),
			httpFilter(FilterRouter, &router.Router{}),
		},
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
		// The path every filter, the plugin and the router see is the
		// normalised one (RFC 3986 dot segments removed, percent-encoded
		// unreserved characters decoded, runs of slashes merged); an encoded
		// slash or backslash is refused (400) rather than guessed at. The
		// plugin normalises again and decides on that, so a listener
		// without these settings still cannot be bypassed.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcm.HttpConnectionManager_REJECT_REQUEST,
		RequestHeadersTimeout:        durationpb.New(10 * time.Second),
		StreamIdleTimeout:            durationpb.New(5 * time.Minute),
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
		// Any certificate the enterprise CA signed passes the handshake; the
		// plugin then refuses one whose identity the tenant did not register.
		tlsCtx.RequireClientCertificate = wrapperspb.Bool(true)
		tlsCtx.CommonTlsContext.ValidationContextType = &tls.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: SecretClientCA, SdsConfig: adsSource()},
		}
	}
	return &listener.Listener{
		Name:    name,
		Address: socketAddress("0.0.0.0", uint32(port)),
		FilterChains: []*listener.FilterChain{{
			Name:            name,
			Filters:         []*listener.Filter{{Name: filterHCM, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(m)}}},
			TransportSocket: &core.TransportSocket{Name: transportTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(tlsCtx)}},
		}},
	}, nil
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
		// The plugin's headers decide the route.
		ClearRouteCache: true,
		// The plugin binds the client certificate to the tenant.
		IncludePeerCertificate: true,
		StatPrefix:             "partners",
	}
}

// shield is each Envoy's own per-tenant token bucket behind the global
// limit: one wildcard descriptor per shield class, (shield_class, cK) →
// (tenant, *), keyed by the plugin's class and rate-limit key headers. It
// only ever refuses what the global limit would refuse too (a class is at
// least the tenant's limit), and holds a replica to about twice a tenant's
// limit when the global service is down and the tier fails open.
func (b *Builder) shield() *lrl.LocalRateLimit {
	d := b.cfg.RateLimit.Default
	var ds []*rlcommon.LocalRateLimitDescriptor
	for k := schemas.ShieldClassMin; k <= schemas.ShieldClassMax; k++ {
		n := uint32(schemas.ShieldTokens(k))
		ds = append(ds, &rlcommon.LocalRateLimitDescriptor{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{
				{Key: schemas.DescriptorShieldClass, Value: schemas.ShieldClassName(k)},
				{Key: schemas.DescriptorTenant}, // no value: a bucket per tenant
			},
			TokenBucket: &typev3.TokenBucket{MaxTokens: n, TokensPerFill: wrapperspb.UInt32(n),
				FillInterval: durationpb.New(schemas.ShieldFillSeconds * time.Second)},
		})
	}
	return &lrl.LocalRateLimit{
		StatPrefix: "partners_shield",
		// Requests without the plugin's headers (none pass ext_authz) share
		// the default bucket, refilled each second.
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     uint32(d.BurstSize),
			TokensPerFill: wrapperspb.UInt32(uint32(max(1, (d.RequestsPerMinute+59)/60))),
			FillInterval:  durationpb.New(time.Second),
		},
		FilterEnabled:                   percent100("partners_shield_enabled"),
		FilterEnforced:                  percent100("partners_shield_enforced"),
		Descriptors:                     ds,
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		MaxDynamicDescriptors:           wrapperspb.UInt32(uint32(b.cfg.RateLimit.Service.ShieldMaxTenants)),
		RateLimits: []*route.RateLimit{{Actions: []*route.RateLimit_Action{
			{ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{RequestHeaders: &route.RateLimit_Action_RequestHeaders{
				HeaderName: schemas.HeaderShieldClass, DescriptorKey: schemas.DescriptorShieldClass}}},
			{ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{RequestHeaders: &route.RateLimit_Action_RequestHeaders{
				HeaderName: schemas.HeaderRateLimitKey, DescriptorKey: schemas.DescriptorTenant}}},
		}}},
	}
}

// globalRateLimit is one stage of the global rate-limit filter: the routes'
// descriptors of that stage go to the region's rate-limit service; when it
// cannot answer in time the stage fails open or closed.
func (b *Builder) globalRateLimit(stage uint32, failClosed bool) *grl.RateLimit {
	svc := b.cfg.RateLimit.Service
	// Both stages emit Envoy's standard cluster.<cluster>.ratelimit.* stats
	// (ok, over_limit, error, failure_mode_allowed): a request meets one.
	return &grl.RateLimit{
		Domain: svc.Domain,
		Stage:  stage,
		// Every request, whatever its source address: a partner behind a
		// private-network load balancer must not count as internal.
		RequestType: "both",
		Timeout:     durationpb.New(svc.Timeout),
		// A tier fails closed by carrying its descriptors at this filter's stage.
		FailureModeDeny: failClosed,
		StatusOnError:   &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		RateLimitService: &rlconf.RateLimitServiceConfig{
			GrpcService: &core.GrpcService{
				TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ClusterRateLimit}},
				Timeout:         durationpb.New(svc.Timeout),
			},
			TransportApiVersion: core.ApiVersion_V3,
		},
		EnableXRatelimitHeaders: grl.RateLimit_DRAFT_VERSION_03,
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
			// Refused by the global limit or the shield.
			Filter:             flags("RL"),
			HeadersToAdd:       []*core.HeaderValueOption{header("retry-after", "1")},
			BodyFormatOverride: problemBody(429, "rate limit of this tenant exceeded; see the X-RateLimit-* headers"),
		},
		{
			// A fail-closed tier while the rate-limit service cannot answer.
			Filter:             flags("RLSE"),
			HeadersToAdd:       []*core.HeaderValueOption{header("retry-after", "5")},
			BodyFormatOverride: problemBody(503, "rate limiting is unavailable in this region; retry after the Retry-After delay"),
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

// grpcCluster is an HTTP/2 cluster for a gRPC service Envoy calls; with
// xds.grpc_tls enabled and edgeService set (ext_authz, rate limit) Envoy
// reaches it over mutual TLS.
func (b *Builder) grpcCluster(name, hostPort string, edgeService bool) (*cluster.Cluster, error) {
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
	if edgeService && b.cfg.XDS.GRPCTLS.Enabled {
		host, _, _ := net.SplitHostPort(hostPort)
		c.TransportSocket = &core.TransportSocket{Name: transportTLS, ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&tls.UpstreamTlsContext{
			Sni: host,
			CommonTlsContext: &tls.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tls.SdsSecretConfig{{Name: SecretGRPCClientCert, SdsConfig: adsSource()}},
				ValidationContextType: &tls.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: SecretGRPCCA, SdsConfig: adsSource()},
				},
				AlpnProtocols: []string{"h2"},
			},
		})}}
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
	out := []types.Resource{
		&tls.Secret{Name: SecretClientCA, Type: &tls.Secret_ValidationContext{ValidationContext: &tls.CertificateValidationContext{
			TrustedCa: file(t.ClientCAPath),
		}}},
	}
	if g := b.cfg.XDS.GRPCTLS; g.Enabled {
		out = append(out,
			&tls.Secret{Name: SecretGRPCCA, Type: &tls.Secret_ValidationContext{ValidationContext: &tls.CertificateValidationContext{
				TrustedCa: file(g.CAPath),
			}}},
			&tls.Secret{Name: SecretGRPCClientCert, Type: &tls.Secret_TlsCertificate{TlsCertificate: &tls.TlsCertificate{
				CertificateChain: file(g.CertPath),
				PrivateKey:       file(g.KeyPath),
			}}},
		)
	}
	out = append(out, &tls.Secret{Name: SecretServerCert, Type: &tls.Secret_TlsCertificate{TlsCertificate: &tls.TlsCertificate{
		CertificateChain: file(t.ServerCertPath),
		PrivateKey:       file(t.ServerKeyPath),
	}}})
	return out
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

// mustAny packs a message the builder constructed, deterministically: maps
// inside (per-filter configs, JSON log formats) would otherwise marshal in a
// random order, so an unchanged listener would look changed to the delta
// server's resource hash, and Envoy would drain it. Packing fails only on a
// message that cannot be marshalled, which these never are.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("xds: pack %T: %v", m, err))
	}
	return a
}

// sameResources reports whether two snapshots hold the same resources of typ.
func sameResources(a, b interface {
	GetResources(string) map[string]types.Resource
}, typ string) bool {
	ra, rb := a.GetResources(typ), b.GetResources(typ)
	if len(ra) != len(rb) {
		return false
	}
	for name, r := range ra {
		o, ok := rb[name]
		if !ok || !proto.Equal(r, o) {
			return false
		}
	}
	return true
}
