package authz_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores(
		// expirable.LRU's cleanup goroutine has no stop (golang-lru v2.0.7).
		goleak.IgnoreAnyFunction("github.com/hashicorp/golang-lru/v2/expirable.NewLRU[...].func1"),
	)...)
}

// fakeTenants is an in-memory registry: ByKeyHash counts calls and can be
// held to test singleflight.
type fakeTenants struct {
	mu       sync.Mutex
	byHash   map[string]*schemas.Tenant
	watchers map[int]func(old, new *schemas.Tenant)
	nextID   int
	calls    atomic.Int64
	hold     chan struct{} // non-nil: ByKeyHash waits for it to close
}

func newFakeTenants() *fakeTenants {
	return &fakeTenants{byHash: map[string]*schemas.Tenant{}, watchers: map[int]func(old, new *schemas.Tenant){}}
}

func (f *fakeTenants) ByKeyHash(hash string, now time.Time) (*schemas.Tenant, bool) {
	f.calls.Add(1)
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.byHash[hash]
	if !ok {
		return nil, false
	}
	for _, k := range t.Keys {
		if k.Hash == hash && k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
			return nil, false
		}
	}
	return t, true
}

func (f *fakeTenants) OnChange(fn func(old, new *schemas.Tenant)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextID
	f.nextID++
	f.watchers[id] = fn
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.watchers, id)
	}
}

func (f *fakeTenants) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

// put applies a change like the registry: index, then notify.
func (f *fakeTenants) put(old, t *schemas.Tenant) {
	f.mu.Lock()
	if old != nil {
		for _, k := range old.Keys {
			delete(f.byHash, k.Hash)
		}
	}
	for _, k := range t.Keys {
		f.byHash[k.Hash] = t
	}
	ws := make([]func(old, new *schemas.Tenant), 0, len(f.watchers))
	for _, w := range f.watchers {
		ws = append(ws, w)
	}
	f.mu.Unlock()
	for _, w := range ws {
		w(old, t)
	}
}

// sink is a Producer collecting records; block makes Produce hang like a
// Kafka client whose buffer is full.
type sink struct {
	mu     sync.Mutex
	recs   []*kgo.Record
	block  chan struct{}
	refuse *atomic.Bool   // set: every record fails, as after the producer's retries
	via    authz.Producer // set: records go to this producer (a real Kafka client); acknowledged ones are collected
}

func (s *sink) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if s.via != nil {
		s.via.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err == nil {
				s.mu.Lock()
				s.recs = append(s.recs, r)
				s.mu.Unlock()
			}
			promise(r, err)
		})
		return
	}
	if s.refuse != nil && s.refuse.Load() {
		promise(r, kerr.LeaderNotAvailable)
		return
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			promise(r, ctx.Err())
			return
		}
	}
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
	promise(r, nil)
}

func (s *sink) records(topic string) []*kgo.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*kgo.Record
	for _, r := range s.recs {
		if r.Topic == topic {
			out = append(out, r)
		}
	}
	return out
}

type plugin struct {
	t       *testing.T
	cfg     *config.Config
	tenants *fakeTenants
	sink    *sink
	client  authv3.AuthorizationClient
	prom    *prometheus.Registry
	spans   *tracetest.SpanRecorder
	now     atomic.Pointer[time.Time]
	stop    func() // stops serving (as a process stops); also at cleanup
}

type pluginOpt func(*config.Config, *sink)

// startPlugin serves the plugin over gRPC on loopback, as Envoy reaches it.
func startPlugin(t *testing.T, opts ...pluginOpt) *plugin {
	t.Helper()
	cfg := testenv.Config(t)
	p := &plugin{t: t, cfg: cfg, tenants: newFakeTenants(), sink: &sink{}, prom: prometheus.NewRegistry(), spans: tracetest.NewSpanRecorder()}
	for _, o := range opts {
		o(cfg, p.sink)
	}
	now := time.Now()
	p.now.Store(&now)
	var logs testenv.LogBuffer
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: p.tenants, Producer: p.sink, Names: kafka.Names{Prefix: cfg.Kafka.TopicPrefix},
		Log: logs.Logger(t), Registerer: p.prom,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p.spans)),
		Now:            func() time.Time { return *p.now.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(p.stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client = authv3.NewAuthorizationClient(conn)
	return p
}

func (p *plugin) metric(name string, label ...string) float64 {
	mfs, _ := p.prom.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(label); i += 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[i] && lp.GetValue() != label[i+1] {
						continue metrics
					}
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// addTenant registers a tenant with a fresh key and returns the key.
func (p *plugin) addTenant(t *schemas.Tenant) string {
	key := apikey.New(t.Tier)
	t.Keys = append(t.Keys, schemas.APIKey{ID: "key_" + testenv.RandomID(), Hash: apikey.Hash(p.cfg.Partner.Keys.Pepper, key), Prefix: apikey.DisplayPrefix(key)})
	p.tenants.put(nil, t)
	return key
}

func tenant(id, tier, status string) *schemas.Tenant {
	return &schemas.Tenant{SchemaVersion: "1", ID: id, Name: id, Tier: tier, Status: status,
		Regions: []string{"us-east"}, Version: 1, Features: map[string]bool{"reports": true}}
}

// envoyRequest is a CheckRequest shaped as Envoy's ext_authz filter sends
// it: lower-cased headers including pseudo-headers, path with query,
// source/destination peers, the region context extension from the
// virtual host.
type envoyRequest struct {
	method, path string
	headers      map[string]string
	certificate  string // URL-encoded PEM when the client presented one
	principal    string
	region       string
}

func (e envoyRequest) proto() *authv3.CheckRequest {
	if e.method == "" {
		e.method = "GET"
	}
	if e.region == "" {
		e.region = "us-east"
	}
	h := map[string]string{
		":authority": "us-east.edge.partners.example", ":method": e.method, ":path": e.path, ":scheme": "https",
		"user-agent": "partner-sdk/1.0", "x-forwarded-proto": "https", "x-request-id": "req-" + testenv.RandomID(),
	}
	for k, v := range e.headers {
		h[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:     &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: "203.0.113.7", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 51234}}}},
			Principal:   e.principal,
			Certificate: e.certificate,
		},
		Destination: &authv3.AttributeContext_Peer{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: "10.0.0.5", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 10000}}}},
		},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234567890", Method: e.method, Headers: h, Path: e.path, Host: h[":authority"], Scheme: "https", Protocol: "HTTP/2",
		}},
		ContextExtensions: map[string]string{schemas.ContextRegion: e.region},
	}}
}

func (p *plugin) check(e envoyRequest) *authv3.CheckResponse {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.client.Check(ctx, e.proto())
	if err != nil {
		p.t.Fatalf("Check: %v", err)
	}
	return resp
}

func status(r *authv3.CheckResponse) int {
	if r.GetOkResponse() != nil {
		return 200
	}
	return int(r.GetDeniedResponse().GetStatus().GetCode())
}

func deniedHeader(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

func bearer(k string) map[string]string { return map[string]string{"authorization": "Bearer " + k} }

// TestAnswers covers every answer of the plugin.
func TestAnswers(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_active", schemas.TierStandard, schemas.StatusActive))
	suspended := p.addTenant(tenant("tn_susp", schemas.TierStandard, schemas.StatusSuspended))
	pending := p.addTenant(tenant("tn_pend", schemas.TierStandard, schemas.StatusPending))
	euOnly := tenant("tn_eu", schemas.TierSandbox, schemas.StatusActive)
	euOnly.Regions = []string{"eu-west"}
	euKey := p.addTenant(euOnly)
	unknown := apikey.New("standard")

	api := "/api/v1/partners/orders"
	cases := []struct {
		name   string
		req    envoyRequest
		status int
		detail string
		www    string
	}{
		{"missing authorization", envoyRequest{path: api}, 401, "missing Authorization", `error="invalid_request"`},
		{"basic scheme", envoyRequest{path: api, headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"}}, 401, "Bearer scheme", `error="invalid_token"`},
		{"empty bearer", envoyRequest{path: api, headers: map[string]string{"authorization": "Bearer "}}, 401, "Bearer scheme", `error="invalid_token"`},
		{"not a key", envoyRequest{path: api, headers: bearer("hunter2")}, 401, "not an API key", `error="invalid_token"`},
		{"key with spaces", envoyRequest{path: api, headers: bearer(key[:20] + " " + key[20:])}, 401, "not an API key", `error="invalid_token"`},
		{"oversized", envoyRequest{path: api, headers: bearer(key + strings.Repeat("A", 10_000))}, 401, "too long", `error="invalid_token"`},
		{"unknown key", envoyRequest{path: api, headers: bearer(unknown)}, 403, "unknown or expired API key", ""},
		{"suspended", envoyRequest{path: api, headers: bearer(suspended)}, 403, "suspended", ""},
		{"pending", envoyRequest{path: api, headers: bearer(pending)}, 403, "pending", ""},
		{"other region", envoyRequest{path: api, headers: bearer(euKey)}, 403, "not served in region us-east", ""},
		{"feature off", envoyRequest{path: "/api/v1/partners/bulk/export", headers: bearer(key)}, 403, "feature bulk_export", ""},
		{"outside the API", envoyRequest{path: "/admin", headers: bearer(key)}, 404, "no partner API route", ""},
		{"feature on", envoyRequest{path: "/api/v1/partners/reports/daily?x=1", headers: bearer(key)}, 200, "", ""},
		{"ok", envoyRequest{path: api, headers: bearer(key)}, 200, "", ""},
		{"lower-case scheme", envoyRequest{path: api, headers: map[string]string{"authorization": "bearer " + key}}, 200, "", ""},
		{"eu tenant in eu", envoyRequest{path: api, headers: bearer(euKey), region: "eu-west"}, 200, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.check(c.req)
			if got := status(r); got != c.status {
				t.Fatalf("status %d, want %d (%s)", got, c.status, r.GetStatus().GetMessage())
			}
			if c.status == 200 {
				return
			}
			if ct := deniedHeader(r, "content-type"); ct != "application/problem+json" {
				t.Errorf("content-type %q", ct)
			}
			var body struct {
				Status   int    `json:"status"`
				Detail   string `json:"detail"`
				Instance string `json:"instance"`
			}
			if err := json.Unmarshal([]byte(r.GetDeniedResponse().GetBody()), &body); err != nil {
				t.Fatalf("body is not problem JSON: %v", err)
			}
			if body.Status != c.status || !strings.Contains(body.Detail, c.detail) || strings.Contains(body.Instance, "?") {
				t.Errorf("problem %+v, want status %d detail ~%q", body, c.status, c.detail)
			}
			www := deniedHeader(r, "www-authenticate")
			if (c.www == "") != (www == "") || !strings.Contains(www, c.www) {
				t.Errorf("www-authenticate %q, want ~%q", www, c.www)
			}
			if strings.Contains(r.GetDeniedResponse().GetBody(), "pk_") {
				t.Error("denial echoes the key")
			}
		})
	}
}

func TestOKHeaders(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_ok", schemas.TierSandbox, schemas.StatusActive))
	// A partner trying to pick another tenant's bucket or route.
	r := p.check(envoyRequest{path: "/api/v1/partners/x", headers: map[string]string{
		"authorization": "Bearer " + key, schemas.HeaderTenantID: "tn_other", schemas.HeaderRateLimitKey: "tn_other"}})
	ok := r.GetOkResponse()
	if ok == nil {
		t.Fatalf("denied: %v", r.GetDeniedResponse())
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if h.GetAppendAction() != core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s appends instead of overwriting", h.GetHeader().GetKey())
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := map[string]string{schemas.HeaderTenantID: "tn_ok", schemas.HeaderTier: "sandbox", schemas.HeaderRateLimitKey: "tn_ok"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !strings.Contains(strings.Join(ok.GetHeadersToRemove(), ","), "authorization") {
		t.Errorf("authorization not removed upstream: %v", ok.GetHeadersToRemove())
	}
}

// TestCacheHitMakesNoRegistryCall: after the first resolution, Checks with
// the same key never reach the registry.
func TestCacheHitMakesNoRegistryCall(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_hit", schemas.TierStandard, schemas.StatusActive))
	for i := 0; i < 100; i++ {
		if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if n := p.tenants.calls.Load(); n != 1 {
		t.Fatalf("%d registry calls for 100 Checks of one key, want 1", n)
	}
	if hits := p.metric("partners_edge_tenant_cache_total", "result", "hit"); hits != 99 {
		t.Fatalf("%v cache hits, want 99", hits)
	}
}

// TestSingleflight: concurrent misses on one key make one registry call.
func TestSingleflight(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_sf", schemas.TierStandard, schemas.StatusActive))
	hold := make(chan struct{})
	p.tenants.mu.Lock()
	p.tenants.hold = hold
	p.tenants.mu.Unlock()
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)}))
		}()
	}
	testenv.Eventually(t, 10*time.Second, "20 misses", func() bool {
		return p.metric("partners_edge_tenant_cache_total", "result", "miss") == 20
	})
	close(hold)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if n := p.tenants.calls.Load(); n != 1 {
		t.Fatalf("%d registry calls for 20 concurrent misses, want 1", n)
	}
}

// TestNegativeCache: guessed keys hit the registry once per TTL; a key that
// starts to exist is resolvable at once.
func TestNegativeCache(t *testing.T) {
	p := startPlugin(t)
	guess := apikey.New("standard")
	for i := 0; i < 50; i++ {
		if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(guess)})); s != 403 {
			t.Fatalf("status %d", s)
		}
	}
	if n := p.tenants.calls.Load(); n != 1 {
		t.Fatalf("%d registry calls for 50 Checks of one unknown key, want 1", n)
	}
	// The key becomes a tenant's (the change evicts its negative entry).
	tn := tenant("tn_late", schemas.TierStandard, schemas.StatusActive)
	tn.Keys = []schemas.APIKey{{ID: "key_late", Hash: apikey.Hash(p.cfg.Partner.Keys.Pepper, guess)}}
	p.tenants.put(nil, tn)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(guess)})); s != 200 {
		t.Fatalf("status %d after the key was created", s)
	}
}

// TestChangeEvictsAtOnce: suspension and key rotation apply at the next
// Check, however long the TTL.
func TestChangeEvictsAtOnce(t *testing.T) {
	p := startPlugin(t)
	tn := tenant("tn_ev", schemas.TierStandard, schemas.StatusActive)
	key := p.addTenant(tn)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 200 {
		t.Fatalf("status %d", s)
	}
	susp := *tn
	susp.Status, susp.Version = schemas.StatusSuspended, 2
	p.tenants.put(tn, &susp)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 403 {
		t.Fatalf("status %d right after suspension, want 403", s)
	}
	// Rotation without overlap: the old key stops, the new works.
	act := susp
	act.Status, act.Version = schemas.StatusActive, 3
	newKey := apikey.New("standard")
	act.Keys = []schemas.APIKey{{ID: "key_new", Hash: apikey.Hash(p.cfg.Partner.Keys.Pepper, newKey)}}
	p.tenants.put(&susp, &act)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 403 {
		t.Fatalf("old key: status %d after rotation, want 403", s)
	}
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(newKey)})); s != 200 {
		t.Fatalf("new key: status %d", s)
	}
}

// TestRotatedKeyExpiresWhileCached: a rotated key cached before its expiry
// stops working at its expiry, not at the end of the cache TTL.
func TestRotatedKeyExpiresWhileCached(t *testing.T) {
	p := startPlugin(t)
	tn := tenant("tn_exp", schemas.TierStandard, schemas.StatusActive)
	key := apikey.New("standard")
	exp := p.now.Load().Add(10 * time.Second)
	tn.Keys = []schemas.APIKey{{ID: "key_old", Hash: apikey.Hash(p.cfg.Partner.Keys.Pepper, key), ExpiresAt: &exp}}
	p.tenants.put(nil, tn)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 200 {
		t.Fatalf("status %d", s)
	}
	later := exp.Add(time.Second)
	p.now.Store(&later)
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})); s != 403 {
		t.Fatalf("status %d after the key's expiry, want 403", s)
	}
}

var (
	keyOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSA(t *testing.T) *rsa.PrivateKey {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaKey = k
	})
	return rsaKey
}

// TestEnterprise: client certificate required, RS256 JWT checked against
// the tenant's JWKS, issuer and audience, and an audit record per call.
func TestEnterprise(t *testing.T) {
	p := startPlugin(t)
	k := testRSA(t)
	tn := tenant("tn_ent", schemas.TierEnterprise, schemas.StatusActive)
	tn.JWT = &schemas.JWTConfig{Issuer: "https://idp.acme.example", Audiences: []string{"partners"}, JWKS: jwks.Document(&k.PublicKey, "k1")}
	tn.ClientIdentities = []string{"spiffe://acme.example/partner-client"}
	key := p.addTenant(tn)
	now := *p.now.Load()
	sign := func(claims map[string]any, key *rsa.PrivateKey) string {
		s, err := jwks.Sign(key, "k1", claims)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(map[string]any{"iss": "https://idp.acme.example", "sub": "svc-reporting", "aud": "partners", "exp": now.Add(time.Hour).Unix()}, k)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	principal := "spiffe://acme.example/partner-client"
	req := func(jwt string, withCert bool) envoyRequest {
		h := bearer(key)
		if jwt != "" {
			h["x-partner-jwt"] = jwt
		}
		e := envoyRequest{path: "/api/v1/partners/orders?uid=u1", headers: h}
		if withCert { // the principal Envoy reports; certificates: TestClientIdentityBound
			e.principal = principal
		}
		return e
	}
	cases := []struct {
		name   string
		req    envoyRequest
		status int
		detail string
	}{
		{"no client certificate", req(good, false), 403, "client certificate"},
		{"no JWT", req("", true), 401, "JWT in x-partner-jwt is required"},
		{"garbage JWT", req("a.b", true), 401, "malformed"},
		{"wrong issuer", req(sign(map[string]any{"iss": "https://evil.example", "aud": "partners", "exp": now.Add(time.Hour).Unix()}, k), true), 401, "issuer"},
		{"wrong audience", req(sign(map[string]any{"iss": "https://idp.acme.example", "aud": "other", "exp": now.Add(time.Hour).Unix()}, k), true), 401, "audience"},
		{"expired", req(sign(map[string]any{"iss": "https://idp.acme.example", "aud": "partners", "exp": now.Add(-time.Hour).Unix()}, k), true), 401, "expired"},
		{"other signer", req(sign(map[string]any{"iss": "https://idp.acme.example", "aud": "partners", "exp": now.Add(time.Hour).Unix()}, other), true), 401, "signature"},
		{"ok", req(good, true), 200, ""},
	}
	for _, c := range cases {
		r := p.check(c.req)
		if status(r) != c.status || !strings.Contains(r.GetDeniedResponse().GetBody(), c.detail) {
			t.Errorf("%s: status %d body %s, want %d ~%q", c.name, status(r), r.GetDeniedResponse().GetBody(), c.status, c.detail)
		}
	}
	topic := kafka.Names{Prefix: p.cfg.Kafka.TopicPrefix}.Topic(schemas.TopicAudit)
	testenv.Eventually(t, 10*time.Second, "an audit record per enterprise call", func() bool {
		return len(p.sink.records(topic)) == len(cases)
	})
	var allowed authz.AuditRecord
	for _, r := range p.sink.records(topic) {
		var a authz.AuditRecord
		if err := json.Unmarshal(r.Value, &a); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(r.Value), key) || strings.Contains(string(r.Value), good) || strings.Contains(string(r.Value), "uid=") {
			t.Fatal("audit record holds a credential or the query string")
		}
		if a.Decision == "allow" {
			allowed = a
		}
	}
	if allowed.TenantID != "tn_ent" || allowed.JWTSubject != "svc-reporting" || allowed.ClientCert != principal || allowed.Path != "/api/v1/partners/orders" || allowed.SourceAddress != "203.0.113.7" {
		t.Fatalf("allowed audit record = %+v", allowed)
	}
	// Standard tenants are not audited.
	std := p.addTenant(tenant("tn_std", schemas.TierStandard, schemas.StatusActive))
	p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(std)})
	time.Sleep(50 * time.Millisecond)
	if n := len(p.sink.records(topic)); n != len(cases) {
		t.Fatalf("%d audit records after a standard call, want %d", n, len(cases))
	}
}

// TestTouchpointAndTrace: the Check span continues Envoy's traceparent and
// the touchpoint carries the same trace, in its headers and its trace_id.
func TestTouchpointAndTrace(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_tp", schemas.TierStandard, schemas.StatusActive))
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := p.check(envoyRequest{path: "/api/v1/partners/orders?uid=user-42&utm_source=newsletter&utm_medium=email&utm_campaign=spring",
		headers: map[string]string{"authorization": "Bearer " + key, "traceparent": "00-" + traceID + "-" + parent + "-01",
			"referer": "https://blog.partner.example/post"}})
	if status(r) != 200 {
		t.Fatalf("status %d", status(r))
	}
	var span sdktrace.ReadOnlySpan
	for _, s := range p.spans.Ended() {
		if s.Name() == "ext_authz.Check" {
			span = s
		}
	}
	if span == nil || span.SpanContext().TraceID().String() != traceID || span.Parent().SpanID().String() != parent {
		t.Fatalf("Check span does not continue Envoy's trace: %v", span)
	}
	topic := kafka.Names{Prefix: p.cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
	testenv.Eventually(t, 10*time.Second, "a touchpoint", func() bool { return len(p.sink.records(topic)) == 1 })
	rec := p.sink.records(topic)[0]
	var tp schemas.Touchpoint
	if err := json.Unmarshal(rec.Value, &tp); err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != "user-42" || tp.UserID != "user-42" || tp.PartnerID != "tn_tp" || tp.Source != schemas.SourceAPIKey ||
		tp.UTMSource != "newsletter" || tp.UTMMedium != "email" || tp.UTMCampaign != "spring" ||
		tp.Referrer != "https://blog.partner.example/post" || tp.Region != "us-east" || tp.TraceID != traceID || !strings.HasPrefix(tp.ID, "tp_") {
		t.Fatalf("touchpoint = %+v", tp)
	}
	ctx := kafka.Extract(context.Background(), rec)
	if got := traceOf(ctx); got != traceID {
		t.Fatalf("record headers carry trace %q, want %q", got, traceID)
	}
	// The header form of the user identity works too; no user, no touchpoint.
	p.check(envoyRequest{path: "/api/v1/partners/orders", headers: map[string]string{"authorization": "Bearer " + key, "x-partner-user-id": "user-7"}})
	p.check(envoyRequest{path: "/api/v1/partners/orders", headers: bearer(key)})
	testenv.Eventually(t, 10*time.Second, "the header touchpoint", func() bool { return len(p.sink.records(topic)) == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := len(p.sink.records(topic)); n != 2 {
		t.Fatalf("%d touchpoints, want 2", n)
	}
}

// TestKafkaDownNeverDelaysCheck: with the producer stuck (its buffer full),
// Checks still answer; the overflow goes to the spool, and once the
// producer takes records again every touchpoint arrives. Without a spool
// (edge.spool.dir empty) the overflow is dropped and counted.
func TestKafkaDownNeverDelaysCheck(t *testing.T) {
	for _, spooled := range []bool{true, false} {
		t.Run(fmt.Sprintf("spool=%v", spooled), func(t *testing.T) {
			block := make(chan struct{})
			p := startPlugin(t, func(cfg *config.Config, s *sink) {
				cfg.Edge.TouchpointBuffer = 4
				if !spooled {
					cfg.Edge.Spool.Dir = ""
				}
				s.block = block
			})
			key := p.addTenant(tenant("tn_down", schemas.TierStandard, schemas.StatusActive))
			for i := 0; i < 50; i++ {
				r := p.check(envoyRequest{path: "/api/v1/partners/x?uid=u" + string(rune('a'+i%26)), headers: bearer(key)})
				if status(r) != 200 {
					t.Fatalf("status %d", status(r))
				}
			}
			// 50 offered: one held by the stuck producer, 4 buffered, the rest spooled or dropped.
			kept, dropped := p.metric("partners_edge_records_spooled_total", "kind", "touchpoint"), p.metric("partners_edge_records_dropped_total", "kind", "touchpoint")
			if !spooled {
				close(block)
				if dropped < 45 || kept != 0 {
					t.Fatalf("no spool: %v dropped, %v spooled; want >= 45 dropped", dropped, kept)
				}
				return
			}
			if kept < 45 || dropped != 0 {
				t.Fatalf("%v spooled, %v dropped; want >= 45 spooled, none dropped", kept, dropped)
			}
			close(block)
			topic := kafka.Names{Prefix: p.cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
			testenv.Eventually(t, 20*time.Second, "every touchpoint produced after the outage", func() bool { return len(distinctIDs(p.sink.records(topic))) == 50 })
			if r := p.metric("partners_edge_records_replayed_total", "kind", "touchpoint"); r != kept {
				t.Fatalf("replayed %v, spooled %v", r, kept)
			}
			testenv.Eventually(t, 10*time.Second, "the spool empty", func() bool { return p.metric("partners_edge_spool_bytes") == 0 })
		})
	}
}

// TestKafkaRefusesThenRestart: records the producer fails (its retries
// exhausted in a long outage) are spooled; the edge is stopped while Kafka
// is still down, and the next edge process on the same spool directory
// produces them once Kafka is back. Nothing is lost, and a full spool
// drops and counts.
func TestKafkaRefusesThenRestart(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var cfg *config.Config
	p := startPlugin(t, func(c *config.Config, s *sink) {
		s.refuse = &down
		cfg = c
	})
	key := p.addTenant(tenant("tn_refused", schemas.TierStandard, schemas.StatusActive))
	for i := 0; i < 20; i++ {
		if r := p.check(envoyRequest{path: fmt.Sprintf("/api/v1/partners/x?uid=u%d", i), headers: bearer(key)}); status(r) != 200 {
			t.Fatalf("status %d", status(r))
		}
	}
	testenv.Eventually(t, 10*time.Second, "the refused touchpoints spooled", func() bool {
		return p.metric("partners_edge_records_spooled_total", "kind", "touchpoint") >= 20
	})
	p.stop()

	// The next process: same spool directory and topic prefix, Kafka back.
	down.Store(false)
	q := startPlugin(t, func(c *config.Config, _ *sink) { *c = *cfg })
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
	testenv.Eventually(t, 20*time.Second, "the spooled touchpoints produced by the next process", func() bool {
		return len(distinctIDs(q.sink.records(topic))) == 20
	})
	for _, r := range q.sink.records(topic) {
		var tp schemas.Touchpoint
		if err := json.Unmarshal(r.Value, &tp); err != nil || tp.PartnerID != "tn_refused" || string(r.Key) != tp.UserID {
			t.Fatalf("replayed record %q key %q: %v", r.Value, r.Key, err)
		}
	}

	// A spool of one record's size holds no more than that.
	full := startPlugin(t, func(c *config.Config, s *sink) {
		c.Edge.Spool.MaxBytes = 600
		s.refuse = &down
	})
	down.Store(true)
	key = full.addTenant(tenant("tn_full", schemas.TierStandard, schemas.StatusActive))
	for i := 0; i < 10; i++ {
		full.check(envoyRequest{path: fmt.Sprintf("/api/v1/partners/x?uid=u%d", i), headers: bearer(key)})
	}
	testenv.Eventually(t, 10*time.Second, "a full spool drops and counts", func() bool {
		return full.metric("partners_edge_records_spooled_total", "kind", "touchpoint")+full.metric("partners_edge_records_dropped_total", "kind", "touchpoint") == 10 &&
			full.metric("partners_edge_records_dropped_total", "kind", "touchpoint") >= 8
	})
}

// TestSpoolOnRealKafka: an edge whose Kafka client cannot reach a broker
// (franz-go fails the records once their delivery timeout passes) spools
// them; the next edge process, with a client of the real broker, produces
// every one of them, read back from the topic.
func TestSpoolOnRealKafka(t *testing.T) {
	var cfg *config.Config
	dead, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RecordDeliveryTimeout(time.Second), kgo.RetryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	p := startPlugin(t, func(c *config.Config, s *sink) { cfg, s.via = c, dead })
	key := p.addTenant(tenant("tn_realkafka", schemas.TierStandard, schemas.StatusActive))
	const n = 15
	for i := 0; i < n; i++ {
		if r := p.check(envoyRequest{path: fmt.Sprintf("/api/v1/partners/x?uid=u%d", i), headers: bearer(key)}); status(r) != 200 {
			t.Fatalf("status %d", status(r))
		}
	}
	testenv.Eventually(t, 20*time.Second, "the touchpoints spooled after the client gave up", func() bool {
		return p.metric("partners_edge_records_spooled_total", "kind", "touchpoint") >= n
	})
	p.stop()

	_, live := testenv.Kafka(t, cfg)
	defer live.Close()
	q := startPlugin(t, func(c *config.Config, s *sink) { *c = *cfg; s.via = live })
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
	testenv.Eventually(t, 30*time.Second, "the spooled touchpoints acknowledged by the broker", func() bool {
		return len(distinctIDs(q.sink.records(topic))) == n
	})
	rd, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers(t)...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var read []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(distinctIDs(read)) < n && ctx.Err() == nil {
		fs := rd.PollFetches(ctx)
		read = append(read, fs.Records()...)
	}
	if got := distinctIDs(read); len(got) != n {
		t.Fatalf("read %d distinct touchpoints from %s, want %d", len(got), topic, n)
	}
}

func distinctIDs(recs []*kgo.Record) map[string]bool {
	out := map[string]bool{}
	for _, r := range recs {
		var tp schemas.Touchpoint
		if json.Unmarshal(r.Value, &tp) == nil {
			out[tp.ID] = true
		}
	}
	return out
}

func traceOf(ctx context.Context) string { return trace.SpanContextFromContext(ctx).TraceID().String() }

// TestOversizedRequest: a CheckRequest beyond the server's message bound is
// refused by gRPC (Envoy then answers status_on_error, 503, fail closed);
// huge non-credential headers within it are harmless.
func TestOversizedRequest(t *testing.T) {
	p := startPlugin(t)
	key := p.addTenant(tenant("tn_big", schemas.TierStandard, schemas.StatusActive))
	r := p.check(envoyRequest{path: "/api/v1/partners/x", headers: map[string]string{"authorization": "Bearer " + key, "x-big": strings.Repeat("b", 60<<10)}})
	if status(r) != 200 {
		t.Fatalf("60 KiB of other headers: status %d", status(r))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.client.Check(ctx, envoyRequest{path: "/api/v1/partners/x", headers: map[string]string{"authorization": "Bearer " + key, "x-big": strings.Repeat("b", 2<<20)}}.proto())
	if err == nil || !strings.Contains(err.Error(), "ResourceExhausted") {
		t.Fatalf("2 MiB CheckRequest: err %v, want ResourceExhausted", err)
	}
	// The server still answers afterwards.
	if status(p.check(envoyRequest{path: "/api/v1/partners/x", headers: bearer(key)})) != 200 {
		t.Fatal("server broken after an oversized request")
	}
}
