package main

// The edge across its parts, as the processes of a region run it: tenants
// changed through the admin API (a registry on the tenants topic), the
// ext_authz plugin answering CheckRequests shaped as Envoy sends them, the
// xDS control plane serving the region's configuration over ADS, and the
// real global rate-limit service (envoyproxy/ratelimit on Redis) answering
// the ShouldRateLimit requests that configuration makes Envoy send. No
// Envoy runs: each "replica" below is the configuration an Envoy of the
// region fetched over delta ADS plus its own gRPC connection to the
// rate-limit service, and the requests it sends are derived from the
// fetched route table and the plugin's answer (xdstest.Edge).

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/control-plane/xds/xdstest"
	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// region is one region's edge processes, in this test process.
type region struct {
	t       *testing.T
	cfg     *config.Config
	admin   *xdstest.Admin
	xds     *xds.Server
	xdsAddr string
	xdsConn *grpc.ClientConn
	plugin  authv3.AuthorizationClient
	logs    *testenv.LogBuffer
}

func startRegion(t *testing.T, cfg *config.Config, producer authz.Producer) *region {
	t.Helper()
	logs := &testenv.LogBuffer{}
	log := logs.Logger(t)
	admin := xdstest.Start(t, cfg, log, xdstest.Options{})
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(cfg), Log: log, Registerer: prometheus.NewRegistry()})
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("xds Serve: %v", err)
		}
	})
	conn := dial(t, lis.Addr().String())
	if producer == nil {
		producer = discardProducer{}
	}
	plugin, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: admin.Registry, Producer: producer,
		Names: kafka.Names{Prefix: cfg.Kafka.TopicPrefix}, Log: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return &region{t: t, cfg: cfg, admin: admin, xds: srv, xdsAddr: lis.Addr().String(), xdsConn: conn,
		plugin: authv3.NewAuthorizationClient(testenv.ServeGRPC(t, plugin.Serve)), logs: logs}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type discardProducer struct{}

func (discardProducer) Produce(_ context.Context, r *kgo.Record, p func(*kgo.Record, error)) {
	p(r, nil)
}

// envoyCheck is a CheckRequest as Envoy's ext_authz filter sends it for a
// partner request on region's edge.
func envoyCheck(regionName, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": regionName + ".edge.partners.example", ":method": "GET", ":path": path, ":scheme": "https",
		"user-agent": "partner-sdk/1.0", "x-forwarded-proto": "https", "x-request-id": "req-" + testenv.RandomID(),
	}
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "203.0.113.7", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Headers: h, Path: path, Host: h[":authority"], Scheme: "https", Protocol: "HTTP/2"}},
		ContextExtensions: map[string]string{schemas.ContextRegion: regionName},
	}}
}

// check asks the plugin as Envoy does and returns the status and, when
// allowed, the request's headers after ext_authz and the stream's dynamic
// metadata.
func (r *region) check(regionName, path, key string) (int, map[string]string, map[string]*structpb.Struct) {
	r.t.Helper()
	req := envoyCheck(regionName, path, map[string]string{"authorization": "Bearer " + key})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := r.plugin.Check(ctx, req)
	if err != nil {
		r.t.Fatalf("Check: %v", err)
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil, nil
	}
	headers := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	for _, h := range ok.GetHeaders() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	for _, k := range ok.GetHeadersToRemove() {
		delete(headers, k)
	}
	md := map[string]*structpb.Struct{}
	if resp.GetDynamicMetadata() != nil {
		md[schemas.MetadataNamespace] = resp.GetDynamicMetadata()
	}
	return 200, headers, md
}

// replica is one Envoy of a region: the configuration it fetched over
// delta ADS and its own connection to the rate-limit service.
type replica struct {
	name string
	edge *xdstest.Edge
	rls  rlsv3.RateLimitServiceClient
}

func (r *region) replica(name, regionName, rlsAddr string) *replica {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := xds.Fetch(ctx, r.xdsConn, regionName, name)
	if err != nil {
		r.t.Fatal(err)
	}
	var l *listener.Listener
	for _, m := range f.Resources[resource.ListenerType] {
		if m.(*listener.Listener).GetName() == xds.ListenerPublic {
			l = m.(*listener.Listener)
		}
	}
	e, err := xdstest.NewEdge(l, f.Resources[resource.RouteType][0].(*route.RouteConfiguration))
	if err != nil {
		r.t.Fatal(err)
	}
	return &replica{name: name, edge: e, rls: rlsv3.NewRateLimitServiceClient(dial(r.t, rlsAddr))}
}

// outcome of one partner request through a replica.
type outcome int

const (
	allowed outcome = iota
	limited
	serviceError
)

// send is a partner request through the replica: the plugin's decision,
// then every ShouldRateLimit call Envoy makes for it, in filter order. A
// failed call is serviceError (what Envoy then does depends on the
// filter's failure_mode_deny, which the caller checks).
func (p *replica) send(t *testing.T, r *region, regionName, path, key string) (outcome, []xdstest.Call) {
	t.Helper()
	status, headers, md := r.check(regionName, path, key)
	if status != 200 {
		t.Fatalf("plugin refused the request: %d", status)
	}
	calls, err := p.edge.Requests(strings.SplitN(path, "?", 2)[0], headers, md)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) == 0 {
		t.Fatal("the route sends the rate-limit service nothing")
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := p.rls.ShouldRateLimit(ctx, c.Request)
		cancel()
		if err != nil {
			return serviceError, calls
		}
		if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			return limited, calls
		}
	}
	return allowed, calls
}

// alignToMinute waits, when fewer than need remain of the current calendar
// minute, for the next one: the service counts in calendar windows, and the
// assertions below are about one window.
func alignToMinute(t *testing.T, need time.Duration) {
	now := time.Now()
	left := now.Truncate(time.Minute).Add(time.Minute).Sub(now)
	if left < need {
		t.Logf("waiting %v for the next rate-limit window", left.Round(time.Millisecond))
		time.Sleep(left + 50*time.Millisecond)
	}
}

// TestGlobalRateLimitAcrossReplicas: three Envoy replicas of one region
// (two calling one rate-limit service instance, the third another one on
// the same Redis) send one tenant's requests, paced within its burst. The
// tenant gets its tier's requests_per_minute across the three — not three
// times it — and the rest are refused. A second tenant, part-way through
// its window, is given its own limit above the tier's through the admin
// API: no xDS version moves (nothing is pushed to any Envoy or to the
// rate-limit service), and the same window then allows it up to its own
// limit. Finally a burst beyond burst_size within one second is cut at
// burst_size.
func TestGlobalRateLimitAcrossReplicas(t *testing.T) {
	redis := testenv.RedisAddr(t)
	cfg := testenv.Config(t)
	r := startRegion(t, cfg, nil)
	prefix := "t" + testenv.RandomID() + "_"
	rlsA := testenv.StartRateLimit(t, testenv.RateLimitOptions{XDS: r.xdsAddr, Region: "us-east", Redis: redis, KeyPrefix: prefix})
	rlsB := testenv.StartRateLimit(t, testenv.RateLimitOptions{XDS: r.xdsAddr, Region: "us-east", Redis: redis, KeyPrefix: prefix})
	replicas := []*replica{r.replica("envoy-us-east-1", "us-east", rlsA.Addr), r.replica("envoy-us-east-2", "us-east", rlsA.Addr),
		r.replica("envoy-us-east-3", "us-east", rlsB.Addr)}

	tier := cfg.Partner.RateLimit.ForTier(schemas.TierSandbox) // 20 a minute, burst 5
	one := r.admin.Create(registry.CreateRequest{Name: "Limited " + testenv.RandomID(), Tier: schemas.TierSandbox, Regions: []string{"us-east"}})
	two := r.admin.Create(registry.CreateRequest{Name: "Raised " + testenv.RandomID(), Tier: schemas.TierSandbox, Regions: []string{"us-east"}})
	path := "/api/v1/partners/orders"
	versions := map[string]string{"us-east": r.xds.Version("us-east"), "eu-west": r.xds.Version("eu-west")}

	// The three replicas at once, each a request every 750 ms (4/s in all,
	// under the burst of 5).
	run := func(key string, total int) (ok map[string]int, refused int) {
		ok = map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		per := total / len(replicas)
		for i, rep := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i) * 250 * time.Millisecond)
				for n := 0; n < per; n++ {
					start := time.Now()
					o, _ := rep.send(t, r, "us-east", path, key)
					mu.Lock()
					switch o {
					case allowed:
						ok[rep.name]++
					case limited:
						refused++
					default:
						t.Errorf("%s: rate-limit service error", rep.name)
					}
					mu.Unlock()
					time.Sleep(750*time.Millisecond - time.Since(start))
				}
			}()
		}
		wg.Wait()
		return ok, refused
	}
	sum := func(m map[string]int) int {
		n := 0
		for _, v := range m {
			n += v
		}
		return n
	}
	// Tolerance: never more than the limit; at most one fewer per other
	// replica in flight when a window fills (documented in edge/README.md).
	within := func(got, limit int) bool { return got <= limit && got >= limit-(len(replicas)-1) }

	alignToMinute(t, 20*time.Second)
	window := time.Now().Truncate(time.Minute)
	ok1, refused1 := run(one.APIKey, 30)
	got1 := sum(ok1)
	t.Logf("tier limit %d/min across 3 replicas: allowed %d %v, refused %d", tier.RequestsPerMinute, got1, ok1, refused1)
	if !within(got1, tier.RequestsPerMinute) {
		t.Fatalf("allowed %d across the replicas, want the tier's %d a minute", got1, tier.RequestsPerMinute)
	}
	for name, n := range ok1 {
		if n == got1 {
			t.Fatalf("replica %s alone was allowed every request: the limit is not shared", name)
		}
	}

	// The second tenant uses half its tier's window, then gets its own
	// limit, with no configuration push.
	before, _ := run(two.APIKey, 9)
	own := schemas.RateLimit{RequestsPerMinute: 27, BurstSize: 10}
	r.admin.Patch(two.ID, registry.Patch{RateLimit: &own})
	for reg, v := range versions {
		if got := r.xds.Version(reg); got != v {
			t.Fatalf("region %s xDS version %s -> %s on a tenant's limit change", reg, v, got)
		}
	}
	status, _, md := r.check("us-east", path, two.APIKey)
	if status != 200 || md[schemas.MetadataNamespace] == nil {
		t.Fatalf("plugin answer after the override: %d, metadata %v", status, md)
	}
	after, _ := run(two.APIKey, 24)
	if time.Now().Truncate(time.Minute) != window {
		t.Fatalf("the test left its rate-limit window (slow machine?): cannot compare counts")
	}
	// The check above went through the plugin only; it used no budget.
	total := sum(before) + sum(after)
	t.Logf("own limit %d/min set after %d requests: %d allowed in the same window", own.RequestsPerMinute, sum(before), total)
	if sum(before) != 9 || !within(total, own.RequestsPerMinute) {
		t.Fatalf("with its own limit %d the tenant was allowed %d in the window (%d before the change), want %d",
			own.RequestsPerMinute, total, sum(before), own.RequestsPerMinute)
	}

	// A burst: 3 × burst_size at once for a fresh standard tenant, within
	// one second; retried once if it straddled a second boundary.
	std := cfg.Partner.RateLimit.ForTier(schemas.TierStandard)
	for attempt := 0; ; attempt++ {
		b := r.admin.Create(registry.CreateRequest{Name: "Bursty " + testenv.RandomID(), Tier: schemas.TierStandard, Regions: []string{"us-east"}})
		r.check("us-east", path, b.APIKey) // warm the plugin's cache outside the burst
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		sec := time.Now().Truncate(time.Second)
		var mu sync.Mutex
		var wg sync.WaitGroup
		got := 0
		for i := 0; i < 3*std.BurstSize; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if o, _ := replicas[i%3].send(t, r, "us-east", path, b.APIKey); o == allowed {
					mu.Lock()
					got++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if time.Now().Truncate(time.Second) != sec {
			if attempt == 0 {
				continue
			}
			t.Fatal("the burst straddled a second boundary twice")
		}
		t.Logf("burst of %d within one second: %d allowed (burst_size %d)", 3*std.BurstSize, got, std.BurstSize)
		if got != std.BurstSize {
			t.Fatalf("burst: %d allowed, want burst_size %d", got, std.BurstSize)
		}
		break
	}
}

// TestRateLimitServiceDown: the service's answer when its Redis or itself is
// down, and what the configuration makes Envoy do then, per tier: sandbox
// fails closed (the filter at its stage has failure_mode_deny), standard
// and enterprise fail open, held by each replica's shield. A Redis that
// comes back is counted in again.
func TestRateLimitServiceDown(t *testing.T) {
	testenv.RedisAddr(t)
	cfg := testenv.Config(t)
	r := startRegion(t, cfg, nil)
	redis := testenv.StartRedis(t)
	rls := testenv.StartRateLimit(t, testenv.RateLimitOptions{XDS: r.xdsAddr, Region: "us-east", Redis: redis.Addr, KeyPrefix: "down_"})
	rep := r.replica("envoy-us-east-1", "us-east", rls.Addr)
	path := "/api/v1/partners/orders"

	keys := map[string]string{}
	for _, tier := range schemas.Tiers {
		c := registry.CreateRequest{Name: "Down " + tier + " " + testenv.RandomID(), Tier: tier, Regions: []string{"us-east"}}
		if tier == schemas.TierEnterprise {
			c.ClientIdentities = []string{"spiffe://down.example/client"}
		}
		keys[tier] = r.admin.Create(c).APIKey
	}
	// Enterprise tenants call the mutual-TLS listener; for the rate limit
	// only their route counts, so the standard path is used for the check
	// below except for the certificate, which the plugin needs.
	sendTier := func(tier string) (outcome, []xdstest.Call) {
		if tier != schemas.TierEnterprise {
			return rep.send(t, r, "us-east", path, keys[tier])
		}
		req := envoyCheck("us-east", path, map[string]string{"authorization": "Bearer " + keys[tier]})
		req.Attributes.Source.Principal = "spiffe://down.example/client"
		resp, err := r.plugin.Check(context.Background(), req)
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("enterprise Check: %v %v", err, resp.GetDeniedResponse())
		}
		headers := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
		for _, h := range resp.GetOkResponse().GetHeaders() {
			headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		calls, err := rep.edge.Requests(path, headers, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range calls {
			if _, err := rep.rls.ShouldRateLimit(context.Background(), c.Request); err != nil {
				return serviceError, calls
			}
		}
		return allowed, calls
	}
	policy := func(tier string) bool { // failure_mode_deny of the filter the tier's descriptors go to
		_, calls := sendTier(tier)
		if len(calls) != 1 {
			t.Fatalf("tier %s: %d rate-limit calls, want 1", tier, len(calls))
		}
		return calls[0].Filter.GetFailureModeDeny()
	}
	want := map[string]bool{schemas.TierSandbox: true, schemas.TierStandard: false, schemas.TierEnterprise: false}
	for tier, deny := range want {
		if got := policy(tier); got != deny {
			t.Errorf("tier %s: failure_mode_deny %v, documented %v", tier, got, deny)
		}
	}
	for _, tier := range schemas.Tiers {
		if o, _ := sendTier(tier); o != allowed {
			t.Fatalf("tier %s with Redis up: %v", tier, o)
		}
	}

	redis.Kill()
	start := time.Now()
	for _, tier := range schemas.Tiers {
		o, calls := sendTier(tier)
		if o != serviceError {
			t.Fatalf("tier %s with Redis down: outcome %v, want a service error", tier, o)
		}
		action := "passes (fail open, held by the shield)"
		if calls[0].Filter.GetFailureModeDeny() {
			action = fmt.Sprintf("refused with %d (fail closed)", calls[0].Filter.GetStatusOnError().GetCode())
		}
		t.Logf("Redis down, tier %s: the service errs after %v; Envoy %s", tier, time.Since(start).Round(time.Millisecond), action)
	}

	redis.Start()
	testenv.Eventually(t, 30*time.Second, "the service counts again once Redis is back", func() bool {
		o, _ := sendTier(schemas.TierStandard)
		return o == allowed
	})

	rls.Kill()
	if o, _ := sendTier(schemas.TierSandbox); o != serviceError {
		t.Fatalf("service down: outcome %v, want an error", o)
	}
}

// TestAdminAPIChangesReachTheEdge runs the plugin on the registry of the
// test brokers (real Kafka with PARTNERS_TEST_KAFKA) and changes the tenant
// through the admin API over HTTP: suspension and key rotation apply to the
// very next Check; the touchpoint lands on the topic with the trace.
func TestAdminAPIChangesReachTheEdge(t *testing.T) {
	cfg := testenv.Config(t)
	var logs testenv.LogBuffer
	log := logs.Logger(t)
	prod, err := kafka.NewClient(cfg.Kafka, testenv.Brokers(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	r := startRegion(t, cfg, prod)

	c := r.admin.Create(registry.CreateRequest{Name: "Edge Partner", Tier: schemas.TierStandard})
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	check := func(key string) int {
		t.Helper()
		req := envoyCheck("us-east", "/api/v1/partners/orders?uid=user-1&utm_source=partner-site", map[string]string{
			"authorization": "Bearer " + key, "traceparent": "00-" + traceID + "-b7ad6b7169203331-01"})
		resp, err := r.plugin.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			return 200
		}
		return int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
	if s := check(c.APIKey); s != 200 {
		t.Fatalf("new tenant: status %d", s)
	}

	start := time.Now()
	r.admin.Suspend(c.ID)
	if s := check(c.APIKey); s != 403 {
		t.Fatalf("first Check after the suspension returned: status %d, want 403", s)
	}
	t.Logf("revocation: suspend request to a refused Check in %v (cache TTL %v)", time.Since(start).Round(time.Millisecond), cfg.Partner.Gateway.TenantResolutionTTL)

	r.admin.Activate(c.ID)
	if s := check(c.APIKey); s != 200 {
		t.Fatalf("after activation: status %d", s)
	}
	newKey := r.admin.RotateKey(c.ID)
	if s := check(c.APIKey); s != 403 {
		t.Fatalf("old key after rotation without overlap: status %d, want 403", s)
	}
	if s := check(newKey); s != 200 {
		t.Fatalf("new key: status %d", s)
	}

	// The touchpoints are on the topic with the trace context.
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
	cons, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers(t)...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < 3 && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != 3 { // the three allowed Checks; denied ones yield none
		t.Fatalf("%d touchpoints on %s, want 3", len(got), topic)
	}
	for _, rec := range got {
		var tp schemas.Touchpoint
		if err := json.Unmarshal(rec.Value, &tp); err != nil {
			t.Fatal(err)
		}
		if tp.PartnerID != c.ID || tp.UserID != "user-1" || tp.UTMSource != "partner-site" || tp.TraceID != traceID {
			t.Fatalf("touchpoint %+v", tp)
		}
		if err := schemas.Validate("touchpoint", rec.Value); err != nil {
			t.Fatalf("touchpoint breaks its schema: %v", err)
		}
		if got := trace.SpanContextFromContext(kafka.Extract(context.Background(), rec)).TraceID().String(); got != traceID {
			t.Fatalf("record trace %q, want %q", got, traceID)
		}
	}
	if all := logs.String() + r.logs.String(); strings.Contains(all, c.APIKey) || strings.Contains(all, newKey) {
		t.Fatal("an API key reached the logs")
	}
}
