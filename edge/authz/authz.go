// Package authz owns the edge plugin: the ext_authz v3 gRPC service every
// regional Envoy calls for each partner request. It resolves the bearer API
// key to a tenant (keyed hash, expirable LRU with singleflight and a negative
// cache, evicted on tenant changes), decides 401/403/OK, enforces feature
// flags, client certificates and RS256 JWTs for enterprise tenants, sets the
// tenant headers the routes and token buckets key on, and emits touchpoints
// and enterprise audit records to Kafka without ever delaying a Check.
// See edge/README.md for the contract with Envoy, partners and upstreams.
package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// Tenants is what the plugin needs of the registry.
type Tenants interface {
	Lookup
	// OnChange registers fn for every tenant change; cancel unregisters it.
	OnChange(fn func(old, new *schemas.Tenant)) (cancel func())
}

// Options configure a Server.
type Options struct {
	Config         Config
	Tenants        Tenants
	Producer       Producer // touchpoints and audit records
	Names          kafka.Names
	Log            *slog.Logger
	Registerer     prometheus.Registerer // nil: metrics not registered
	TracerProvider trace.TracerProvider  // nil: the global provider
	Now            func() time.Time
}

// Server is the ext_authz service.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	cfg      *Config
	log      *slog.Logger
	resolver *Resolver
	emit     *emitter
	names    kafka.Names
	tracer   trace.Tracer
	now      func() time.Time
	jwks     *lru.Cache[jwksKey, jwks.Keys]
	sources  map[string]bool

	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
}

type jwksKey struct {
	tenant  string
	version int64
}

// New returns the plugin, subscribed to tenant changes.
func New(opt Options) (*Server, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	tp := opt.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	g := opt.Config.Gateway
	jwks, err := lru.New[jwksKey, jwks.Keys](1024)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   &opt.Config,
		log:   opt.Log.With("component", "edge"),
		names: opt.Names,
		resolver: NewResolver(opt.Tenants, ResolverOptions{
			Size: g.CacheSize, TTL: g.TenantResolutionTTL, NegativeTTL: g.NegativeTTL, Now: opt.Now,
		}),
		tracer:  tp.Tracer("github.com/partners-engine/partners-engine/edge/authz"),
		now:     opt.Now,
		jwks:    jwks,
		sources: map[string]bool{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_authz_decisions_total",
			Help: "ext_authz decisions by result (ok, unauthenticated, forbidden, not_found)."}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "partners_edge_check_duration_seconds",
			Help: "Time to answer one Check.", Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18)}),
	}
	for _, src := range opt.Config.TouchpointSources {
		s.sources[src] = true
	}
	s.emit = newEmitter(opt.Producer, opt.Config.Edge.TouchpointBuffer, s.log)
	if opt.Registerer != nil {
		cs := append(s.resolver.Collectors(), s.decisions, s.latency, s.emit.dropped, s.emit.produced, s.emit.failed)
		for _, c := range cs {
			if err := opt.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	opt.Tenants.OnChange(func(old, new *schemas.Tenant) {
		s.resolver.Evict(old, new)
		for _, t := range []*schemas.Tenant{old, new} {
			if t != nil {
				s.jwks.Remove(jwksKey{t.ID, t.Version})
			}
		}
	})
	return s, nil
}

// Serve serves ext_authz on lis until ctx ends, and produces touchpoints and
// audit records meanwhile.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(serverOptions()...)
	authv3.RegisterAuthorizationServer(gs, s)
	done := make(chan struct{})
	ectx, stopEmitter := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		s.emit.run(ectx, 5*time.Second)
	}()
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		gs.GracefulStop() // in-flight Checks finish and offer their records first
		err = <-errc
	}
	stopEmitter()
	<-done
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// serverOptions are the ext_authz gRPC server's options: OTel tracing and a
// bound on CheckRequest size (Envoy's own header limit is 60 KiB).
func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler()), grpc.MaxRecvMsgSize(1 << 20)}
}

// decision is the outcome of one Check before it is encoded for Envoy.
type decision struct {
	status  int // 200 allows
	detail  string
	bearer  string // WWW-Authenticate error code on 401: invalid_request or invalid_token
	tenant  *schemas.Tenant
	jwtSub  string
	region  string
	user    string
	request *authv3.AttributeContext_HttpRequest
	peer    *authv3.AttributeContext_Peer
}

func (d *decision) result() string {
	switch d.status {
	case 200:
		return "ok"
	case 401:
		return "unauthenticated"
	case 403:
		return "forbidden"
	case 404:
		return "not_found"
	}
	return "error"
}

// Check answers Envoy's CheckRequest. It never fails the RPC for a bad
// request: every outcome is an HTTP answer Envoy relays to the partner.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	headers := requestHeaders(httpReq)
	// Continue the trace Envoy propagates in the request's traceparent; the
	// gRPC metadata carries Envoy's own span only when Envoy traces.
	if headers["traceparent"] != "" {
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{
			"traceparent": headers["traceparent"], "tracestate": headers["tracestate"],
		})
	}
	ctx, span := s.tracer.Start(ctx, "ext_authz.Check", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", httpReq.GetMethod())))
	defer span.End()

	d := s.decide(req, headers)
	d.request = httpReq
	resp := s.encode(d)
	s.decisions.WithLabelValues(d.result()).Inc()
	span.SetAttributes(attribute.String("partners.authz.result", d.result()), attribute.Int("http.response.status_code", d.status))
	if d.tenant != nil {
		span.SetAttributes(attribute.String("partners.tenant_id", d.tenant.ID))
		if d.tenant.Tier == schemas.TierEnterprise && s.cfg.Enterprise.AuditLogging == "enabled" {
			s.audit(ctx, d, headers)
		}
		if d.status == 200 && d.user != "" && s.sources[schemas.SourceAPIKey] {
			s.touchpoint(ctx, d, headers)
		}
	}
	if d.status != 200 {
		span.SetStatus(codes.Error, d.detail)
	}
	s.latency.Observe(time.Since(start).Seconds())
	return resp, nil
}

// requestHeaders returns the request headers, lower-cased. Envoy sends them
// in headers, or in header_map (raw values) when configured to.
func requestHeaders(r *authv3.AttributeContext_HttpRequest) map[string]string {
	if hs := r.GetHeaders(); len(hs) > 0 {
		out := make(map[string]string, len(hs))
		for k, v := range hs {
			out[strings.ToLower(k)] = v
		}
		return out
	}
	out := map[string]string{}
	for _, h := range r.GetHeaderMap().GetHeaders() {
		v := h.GetValue()
		if v == "" {
			v = string(h.GetRawValue())
		}
		k := strings.ToLower(h.GetKey())
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out
}

// Bearer parsing errors, each a distinct 401.
var (
	ErrNoCredentials = errors.New("missing Authorization header")
	//lint:ignore ST1005 the message starts with the header's name
	ErrNotBearer = errors.New("Authorization must use the Bearer scheme")
	//lint:ignore ST1005 the message starts with the header's name
	ErrTooLong      = errors.New("Authorization header too long")
	ErrMalformedKey = errors.New("bearer token is not an API key")
)

// ParseBearer extracts the API key from an Authorization header value. It
// accepts exactly `Bearer <key>` (scheme case-insensitive, single spaces or
// tabs around) with a key shaped as apikey.LooksValid requires.
func ParseBearer(h string, maxBytes int) (string, error) {
	if h == "" {
		return "", ErrNoCredentials
	}
	if len(h) > maxBytes {
		return "", ErrTooLong
	}
	scheme, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", ErrNotBearer
	}
	key := strings.TrimSpace(rest)
	if !apikey.LooksValid(key) {
		return "", ErrMalformedKey
	}
	return key, nil
}

func (s *Server) decide(req *authv3.CheckRequest, headers map[string]string) *decision {
	d := &decision{region: req.GetAttributes().GetContextExtensions()[schemas.ContextRegion], peer: req.GetAttributes().GetSource()}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	key, err := ParseBearer(headers["authorization"], s.cfg.Edge.MaxAuthHeaderBytes)
	if err != nil {
		d.status, d.detail, d.bearer = 401, err.Error(), "invalid_token"
		if errors.Is(err, ErrNoCredentials) {
			d.bearer = "invalid_request"
		}
		return d
	}
	t, ok := s.resolver.Resolve(apikey.Hash(s.cfg.Pepper, key))
	if !ok {
		d.status, d.detail = 403, "unknown or expired API key"
		return d
	}
	d.tenant = t
	switch t.Status {
	case schemas.StatusActive:
	case schemas.StatusSuspended:
		d.status, d.detail = 403, "tenant is suspended"
		return d
	case schemas.StatusPending:
		d.status, d.detail = 403, "tenant is pending activation"
		return d
	default:
		d.status, d.detail = 403, "tenant is not active"
		return d
	}
	if d.region != "" && !t.InRegion(d.region) {
		d.status, d.detail = 403, "tenant is not served in region "+d.region
		return d
	}
	path, query, _ := strings.Cut(httpReq.GetPath(), "?")
	g := s.cfg.Gateway
	if !strings.HasPrefix(path, g.APIPrefix) {
		d.status, d.detail = 404, "no partner API route at this path"
		return d
	}
	if f, gated := g.FeatureFor(path); gated && !t.Features[f] {
		d.status, d.detail = 403, "feature "+f+" is not enabled for this tenant"
		return d
	}
	if t.Tier == schemas.TierEnterprise {
		if s.cfg.Enterprise.MTLS == "enabled" {
			src := req.GetAttributes().GetSource()
			if src.GetCertificate() == "" && src.GetPrincipal() == "" {
				d.status, d.detail = 403, "enterprise tenants must present a client certificate (enterprise listener)"
				return d
			}
		}
		if t.JWT != nil {
			sub, err := s.checkJWT(t, headers[s.cfg.Edge.JWTHeader])
			if err != nil {
				d.status, d.detail, d.bearer = 401, err.Error(), "invalid_token"
				return d
			}
			d.jwtSub = sub
		}
	}
	d.user = userID(headers[s.cfg.Edge.UserHeader], query, s.cfg.Edge.UserQueryParam)
	d.status = 200
	return d
}

func (s *Server) checkJWT(t *schemas.Tenant, token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("a JWT in %s is required for this tenant", s.cfg.Edge.JWTHeader)
	}
	k := jwksKey{t.ID, t.Version}
	keys, ok := s.jwks.Get(k)
	if !ok {
		var err error
		keys, err = jwks.Parse([]byte(t.JWT.JWKS))
		if err != nil {
			s.log.Error("tenant JWKS unusable: its JWT calls are refused", "tenant_id", t.ID, "err", err)
			return "", errors.New("the tenant's JWT configuration is unusable; contact support")
		}
		s.jwks.Add(k, keys)
	}
	c, err := jwks.Verify(token, keys, jwks.Expect{Issuer: t.JWT.Issuer, Audiences: t.JWT.Audiences, Now: s.now(), Leeway: 30 * time.Second})
	if err != nil {
		return "", err
	}
	return c.Subject, nil
}

// userID is the end user a request acts for: the configured header, else
// the query parameter. Values that are empty, long or not printable ASCII
// are ignored (no touchpoint) rather than stored.
func userID(header, rawQuery, param string) string {
	v := strings.TrimSpace(header)
	if v == "" && param != "" && rawQuery != "" {
		if q, err := url.ParseQuery(rawQuery); err == nil {
			v = strings.TrimSpace(q.Get(param))
		}
	}
	if v == "" || len(v) > 128 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return ""
		}
	}
	return v
}

func headerOpt(k, v string) *core.HeaderValueOption {
	return &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: v}, AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

func (s *Server) encode(d *decision) *authv3.CheckResponse {
	if d.status == 200 {
		t := d.tenant
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(grpccodes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				// Overwrite: a partner cannot choose its own tenant or bucket.
				Headers: []*core.HeaderValueOption{
					headerOpt(schemas.HeaderTenantID, t.ID),
					headerOpt(schemas.HeaderTier, t.Tier),
					headerOpt(schemas.HeaderRateLimitKey, t.ID),
				},
				HeadersToRemove: []string{"authorization", s.cfg.Edge.JWTHeader},
			}},
		}
	}
	p := problem.New(d.status, d.detail)
	p.Instance, _, _ = strings.Cut(d.request.GetPath(), "?")
	hs := []*core.HeaderValueOption{headerOpt("content-type", problem.ContentType), headerOpt("cache-control", "no-store")}
	code := grpccodes.PermissionDenied
	if d.status == 401 {
		code = grpccodes.Unauthenticated
		hs = append(hs, headerOpt("www-authenticate",
			fmt.Sprintf(`Bearer realm="partners-engine", error=%q, error_description=%q`, d.bearer, d.detail)))
	}
	if d.status == 404 {
		code = grpccodes.NotFound
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: d.detail},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.status)},
			Headers: hs,
			Body:    string(p.JSON()),
		}},
	}
}

// requestID is Envoy's x-request-id, else its stream id.
func requestID(d *decision, headers map[string]string) string {
	if id := headers["x-request-id"]; id != "" && len(id) <= 128 {
		return id
	}
	return d.request.GetId()
}

func deterministicID(prefix string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + hex.EncodeToString(h[:16])
}

// touchpoint queues the request's touchpoint: source api_key, UTM
// parameters from the query and the referral header when those sources are
// enabled, the Check span's trace context in the record headers.
func (s *Server) touchpoint(ctx context.Context, d *decision, headers map[string]string) {
	sc := trace.SpanContextFromContext(ctx)
	tp := schemas.Touchpoint{
		SchemaVersion: schemas.SchemaVersion,
		ID:            deterministicID("tp_", d.tenant.ID, d.user, requestID(d, headers)),
		UserID:        d.user,
		PartnerID:     d.tenant.ID,
		Source:        schemas.SourceAPIKey,
		Region:        d.region,
		OccurredAt:    s.now().UTC(),
	}
	if sc.HasTraceID() {
		tp.TraceID = sc.TraceID().String()
	}
	if s.sources[schemas.SourceUTM] {
		_, query, _ := strings.Cut(d.request.GetPath(), "?")
		if q, err := url.ParseQuery(query); err == nil {
			tp.UTMSource, tp.UTMMedium, tp.UTMCampaign = clip(q.Get("utm_source")), clip(q.Get("utm_medium")), clip(q.Get("utm_campaign"))
		}
	}
	if s.sources[schemas.SourceReferral] {
		tp.Referrer = clip(headers[s.cfg.Edge.ReferralHeader])
	}
	b, err := json.Marshal(tp)
	if err != nil {
		return
	}
	rec := &kgo.Record{Topic: s.names.Topic(schemas.TopicTouchpoints), Key: []byte(tp.UserID), Value: b}
	kafka.Inject(ctx, rec)
	s.emit.offer(KindTouchpoint, rec)
}

func clip(v string) string {
	if len(v) > 512 {
		return v[:512]
	}
	return v
}

// AuditRecord is what the plugin writes to partners.audit.v1 for every call
// of an enterprise tenant, allowed or denied, keyed by tenant id. It holds
// no credential: no key, no JWT, no query string.
type AuditRecord struct {
	SchemaVersion string    `json:"schema_version"`
	ID            string    `json:"id"`
	TenantID      string    `json:"tenant_id"`
	Region        string    `json:"region,omitempty"`
	Method        string    `json:"method"`
	Path          string    `json:"path"`
	Decision      string    `json:"decision"` // allow | deny
	Status        int       `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	ClientCert    string    `json:"client_principal,omitempty"` // mTLS principal (URI SAN or subject)
	JWTSubject    string    `json:"jwt_subject,omitempty"`
	SourceAddress string    `json:"source_address,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	TraceID       string    `json:"trace_id,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
}

func (s *Server) audit(ctx context.Context, d *decision, headers map[string]string) {
	path, _, _ := strings.Cut(d.request.GetPath(), "?")
	a := AuditRecord{
		SchemaVersion: schemas.SchemaVersion,
		ID:            deterministicID("au_", d.tenant.ID, requestID(d, headers)),
		TenantID:      d.tenant.ID,
		Region:        d.region,
		Method:        d.request.GetMethod(),
		Path:          path,
		Decision:      "allow",
		Status:        d.status,
		JWTSubject:    d.jwtSub,
		ClientCert:    d.peer.GetPrincipal(),
		SourceAddress: d.peer.GetAddress().GetSocketAddress().GetAddress(),
		RequestID:     requestID(d, headers),
		OccurredAt:    s.now().UTC(),
	}
	if d.status != 200 {
		a.Decision, a.Reason = "deny", d.detail
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		a.TraceID = sc.TraceID().String()
	}
	b, err := json.Marshal(a)
	if err != nil {
		return
	}
	rec := &kgo.Record{Topic: s.names.Topic(schemas.TopicAudit), Key: []byte(a.TenantID), Value: b}
	kafka.Inject(ctx, rec)
	s.emit.offer(KindAudit, rec)
}
