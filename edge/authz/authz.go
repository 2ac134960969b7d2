// Package authz owns the edge plugin: the ext_authz v3 gRPC service every
// regional Envoy calls for each partner request. It resolves the bearer API
// key to a tenant (keyed hash, expirable LRU with singleflight and a negative
// cache, evicted on tenant changes), decides 400/401/403/404/OK on the
// normalised path, enforces feature flags, and for enterprise tenants binds
// the client certificate's identity and the RS256 JWT to the tenant; it sets
// the tenant headers the routes, the global rate-limit descriptors and the
// local shield key on, with the tenant's own limits as dynamic metadata, and
// emits touchpoints and enterprise audit records to Kafka without ever
// delaying a Check. Every per-tenant decision of the edge is made here, so
// no xDS resource depends on a tenant. See edge/README.md for the contract
// with Envoy, partners and upstreams.
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
	"google.golang.org/grpc/credentials"

	"github.com/partners-engine/partners-engine/edge/spool"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/grpcx"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// Tenants is what the plugin needs of the registry.
type Tenants interface {
	Lookup
	// OnChange registers fn for every tenant change applied from now on;
	// cancel unregisters it.
	OnChange(fn func(old, new *schemas.Tenant)) (cancel func())
}

// StopGrace bounds the graceful stop of the ext_authz server.
const StopGrace = 5 * time.Second

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
	tenants  Tenants
	log      *slog.Logger
	resolver *Resolver
	emit     *emitter
	names    kafka.Names
	tracer   trace.Tracer
	now      func() time.Time
	jwks     *lru.Cache[versionKey, jwks.Keys]
	derived  *lru.Cache[versionKey, *derived]
	certs    *lru.Cache[[32]byte, []string]
	sources  map[string]bool

	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	issues    *prometheus.CounterVec
	// results are decisions' counters by result, resolved once.
	results map[string]prometheus.Counter
	hasher  *apikey.Hasher
}

// versionKey identifies one version of a tenant: what is derived from a
// version never changes, so it is cached under this key.
type versionKey struct {
	tenant  string
	version int64
}

// New returns the plugin. It starts nothing: Serve subscribes to tenant
// changes and runs the record emitter.
func New(opt Options) (*Server, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	tp := opt.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	g := opt.Config.Gateway
	keys, err := lru.New[versionKey, jwks.Keys](1024)
	if err != nil {
		return nil, err
	}
	derivedCache, err := lru.New[versionKey, *derived](max(1024, min(g.CacheSize, 100_000)))
	if err != nil {
		return nil, err
	}
	certs, err := lru.New[[32]byte, []string](4096)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     &opt.Config,
		tenants: opt.Tenants,
		log:     opt.Log.With("component", "edge"),
		names:   opt.Names,
		resolver: NewResolver(opt.Tenants, ResolverOptions{
			Size: g.CacheSize, TTL: g.TenantResolutionTTL, NegativeTTL: g.NegativeTTL, Now: opt.Now,
		}),
		tracer:  tp.Tracer("github.com/partners-engine/partners-engine/edge/authz"),
		now:     opt.Now,
		jwks:    keys,
		derived: derivedCache,
		certs:   certs,
		sources: map[string]bool{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_authz_decisions_total",
			Help: "ext_authz decisions by result (ok, bad_request, unauthenticated, forbidden, not_found)."}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "partners_edge_check_duration_seconds",
			Help: "Time to answer one Check.", Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18)}),
		issues: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_tenant_config_issues_total",
			Help: "Tenant versions whose config cannot be served as written (tier_default: an invalid rate_limit override, the tier's limits apply)."}, []string{"outcome"}),
	}
	for _, src := range opt.Config.TouchpointSources {
		s.sources[src] = true
	}
	s.hasher = apikey.NewHasher(opt.Config.Pepper)
	s.results = map[string]prometheus.Counter{}
	for _, r := range []string{"ok", "bad_request", "unauthenticated", "forbidden", "not_found", "error"} {
		s.results[r] = s.decisions.WithLabelValues(r)
	}
	s.emit = newEmitter(opt.Producer, opt.Config.Edge.TouchpointBuffer, s.log)
	if opt.Registerer != nil {
		cs := append(append(s.resolver.Collectors(), s.decisions, s.latency, s.issues), s.emit.collectors()...)
		for _, c := range cs {
			if err := opt.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("edge metrics: %w", err)
			}
		}
	}
	return s, nil
}

// onChange evicts what a tenant change made stale.
func (s *Server) onChange(old, new *schemas.Tenant) {
	s.resolver.Evict(old, new)
	for _, t := range []*schemas.Tenant{old, new} {
		if t != nil {
			s.jwks.Remove(versionKey{t.ID, t.Version})
		}
	}
}

// Serve serves ext_authz on lis until ctx ends (over TLS when
// edge.server_tls is set), evicting cached tenants as they change and
// producing touchpoints and audit records meanwhile. The stop is graceful
// and bounded by StopGrace; records already handed over are still produced.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	creds, err := grpcx.ServerCredentials(s.cfg.Edge.ServerTLS)
	if err != nil {
		return fmt.Errorf("edge.server_tls: %w", err)
	}
	cancel := s.tenants.OnChange(s.onChange)
	defer cancel()
	gs := grpc.NewServer(serverOptions(creds)...)
	authv3.RegisterAuthorizationServer(gs, s)
	var sp *spool.Spool
	if sc := s.cfg.Edge.Spool; sc.Dir != "" {
		sp, err = spool.Open(spool.Options{Dir: sc.Dir, Name: s.names.Prefix, MaxBytes: sc.MaxBytes, MaxAge: sc.MaxAge, Now: s.now})
		if err != nil {
			return fmt.Errorf("edge.spool.dir: %w", err)
		}
		if n := sp.Size(); n > 0 {
			s.log.Info("edge spool holds records from an earlier run; replaying", "dir", sp.Dir(), "bytes", n)
		}
		s.emit.spool.Store(sp)
	}
	done := make(chan struct{})
	ectx, stopEmitter := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		s.emit.run(ectx, 5*time.Second)
	}()
	replayDone := make(chan struct{})
	rctx, stopReplay := context.WithCancel(context.Background())
	go func() {
		defer close(replayDone)
		if sp != nil {
			s.emit.replay(rctx, sp, SpoolReplayInterval)
		}
	}()
	// In-flight Checks finish and offer their records before the emitter
	// stops; what the producer then refuses (its context ends 5 s after
	// the emitter's) reaches the spool before it closes.
	err = grpcx.Serve(ctx, gs, lis, StopGrace)
	stopEmitter()
	<-done
	stopReplay()
	<-replayDone
	if sp != nil {
		if !s.emit.settle(10 * time.Second) {
			s.log.Warn("edge: the producer still holds records at shutdown; those it fails from now on are dropped")
		}
		s.emit.spool.Store(nil)
		if cerr := sp.Close(); cerr != nil {
			s.log.Warn("edge spool close", "err", cerr)
		}
		if n := sp.Size(); n > 0 {
			s.log.Info("edge spool keeps records for the next start", "dir", sp.Dir(), "bytes", n)
		}
	}
	return err
}

// SpoolReplayInterval is how often the edge retries its spool while Kafka
// answers (after a failed pass it waits twice as long, up to 10 s).
var SpoolReplayInterval = time.Second

// serverOptions are the ext_authz gRPC server's options: OTel tracing, a
// bound on CheckRequest size (Envoy's own header limit is 60 KiB) and the
// TLS credentials when there are any.
func serverOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler()), grpc.MaxRecvMsgSize(1 << 20)}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	return opts
}

// decision is the outcome of one Check before it is encoded for Envoy.
type decision struct {
	status   int // 200 allows
	detail   string
	bearer   string // WWW-Authenticate error code on 401: invalid_request or invalid_token
	tenant   *schemas.Tenant
	derived  *derived
	path     string // normalised, without the query
	jwtSub   string
	identity string // the client certificate identity that matched
	region   string
	user     string
	request  *authv3.AttributeContext_HttpRequest
	peer     *authv3.AttributeContext_Peer
}

func (d *decision) result() string {
	switch d.status {
	case 200:
		return "ok"
	case 400:
		return "bad_request"
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
		// headers are lower-cased, as the carrier expects: no copy.
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(headers))
	}
	ctx, span := s.tracer.Start(ctx, "ext_authz.Check", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", httpReq.GetMethod())))
	defer span.End()

	d := s.decide(req, headers)
	d.request = httpReq
	resp := s.encode(d)
	s.results[d.result()].Inc()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("partners.authz.result", d.result()), attribute.Int("http.response.status_code", d.status))
		if d.tenant != nil {
			span.SetAttributes(attribute.String("partners.tenant_id", d.tenant.ID))
		}
	}
	if d.tenant != nil {
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
		if allLower(hs) { // what Envoy sends: no copy
			return hs
		}
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

func allLower(hs map[string]string) bool {
	for k := range hs {
		for i := 0; i < len(k); i++ {
			if c := k[i]; c >= 'A' && c <= 'Z' {
				return false
			}
		}
	}
	return true
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
	path, err := NormalizePath(httpReq.GetPath())
	if err != nil {
		d.status, d.detail = 400, "the request path is malformed (encoded slash, backslash, control character or broken percent escape)"
		return d
	}
	d.path = path
	key, err := ParseBearer(headers["authorization"], s.cfg.Edge.MaxAuthHeaderBytes)
	if err != nil {
		d.status, d.detail, d.bearer = 401, err.Error(), "invalid_token"
		if errors.Is(err, ErrNoCredentials) {
			d.bearer = "invalid_request"
		}
		return d
	}
	t, ok := s.resolver.Resolve(s.hasher.Hash(key))
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
	g := s.cfg.Gateway
	if !strings.HasPrefix(path, g.APIPrefix) {
		d.status, d.detail = 404, "no partner API route at this path"
		return d
	}
	if f, gated := s.featureFor(path); gated && !t.Features[f] {
		d.status, d.detail = 403, "feature "+f+" is not enabled for this tenant"
		return d
	}
	if t.Tier == schemas.TierEnterprise {
		if s.cfg.Enterprise.MTLS == "enabled" {
			id, err := s.checkClientIdentity(t, req.GetAttributes().GetSource())
			if err != nil {
				d.status, d.detail = 403, err.Error()
				return d
			}
			d.identity = id
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
	_, query, _ := strings.Cut(httpReq.GetPath(), "?")
	d.user = userID(headers[s.cfg.Edge.UserHeader], query, s.cfg.Edge.UserQueryParam)
	d.derived = s.derive(t)
	d.status = 200
	return d
}

func (s *Server) checkJWT(t *schemas.Tenant, token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("a JWT in %s is required for this tenant", s.cfg.Edge.JWTHeader)
	}
	k := versionKey{t.ID, t.Version}
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
		// The same for every allowed request of this tenant version, built
		// once (derive); gRPC only reads it.
		return d.derived.ok
	}
	p := problem.New(d.status, d.detail)
	p.Instance = d.path
	if p.Instance == "" {
		p.Instance = "/"
	}
	hs := []*core.HeaderValueOption{headerOpt("content-type", problem.ContentType), headerOpt("cache-control", "no-store")}
	code := grpccodes.PermissionDenied
	if d.status == 401 {
		code = grpccodes.Unauthenticated
		hs = append(hs, headerOpt("www-authenticate",
			fmt.Sprintf(`Bearer realm="partners-engine", error=%q, error_description=%q`, d.bearer, d.detail)))
	}
	switch d.status {
	case 400:
		code = grpccodes.InvalidArgument
	case 404:
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
	ClientCert    string    `json:"client_principal,omitempty"` // the client certificate identity that matched, else Envoy's principal
	JWTSubject    string    `json:"jwt_subject,omitempty"`
	SourceAddress string    `json:"source_address,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	TraceID       string    `json:"trace_id,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
}

func (s *Server) audit(ctx context.Context, d *decision, headers map[string]string) {
	path := d.path
	if path == "" {
		path, _, _ = strings.Cut(d.request.GetPath(), "?")
	}
	principal := d.identity
	if principal == "" {
		principal = d.peer.GetPrincipal()
	}
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
		ClientCert:    principal,
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
