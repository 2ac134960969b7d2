package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/twmb/franz-go/pkg/kgo"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/benchtest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// The plugin's `make bench` figures (an internal test file: the baseline
// must be served with the plugin's own gRPC server options).

// emptyAuthz answers every Check with OK and does nothing else: the cost of
// the gRPC round trip alone, the baseline of the Check figures.
type emptyAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (emptyAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

type mapLookup map[string]*schemas.Tenant

func (m mapLookup) ByKeyHash(h string, _ time.Time) (*schemas.Tenant, bool) {
	t, ok := m[h]
	return t, ok
}
func (m mapLookup) OnChange(func(old, new *schemas.Tenant)) func() { return func() {} }

type discard struct{}

func (discard) Produce(_ context.Context, r *kgo.Record, p func(*kgo.Record, error)) { p(r, nil) }

// BenchmarkFigures: Check throughput and p50/p99 latency over loopback gRPC
// with the key cache warm and holding 100k tenants (every fifth tenant's key
// is asked, spread over the whole cache; a fifth of the tenants carry their
// own limits, so their answers carry dynamic metadata), beside an empty
// ext_authz handler served and called exactly the same way in the same run
// (rounds alternate; throughput is the median round).
func BenchmarkFigures(b *testing.B) {
	tenants, requests, n := 100_000, 40_000, 40_000
	if benchtest.Quick() {
		tenants, requests, n = 10_000, 2_000, 5_000
	}
	benchtest.Report(b, checkFigures(b, tenants, requests, n)...)
}

// TestCheckFigures keeps the measurement from rotting: tiny sizes, every
// figure measured (never a speed asserted).
func TestCheckFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("make bench runs it in full")
	}
	for _, f := range checkFigures(t, 500, 100, 400) {
		if f.Value <= 0 || f.BaselineValue <= 0 {
			t.Fatalf("figure without a measurement: %+v", f)
		}
		t.Logf("%s: %.1f %s (baseline %s: %.1f, ratio %.2f)", f.Name, f.Value, f.Unit, f.Baseline, f.BaselineValue, f.Ratio())
	}
}

func checkFigures(tb testing.TB, tenantCount, distinct, n int) []benchtest.Figure {
	tb.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.Partner.Keys.Pepper = "bench-pepper-0123456789"
	lookup := mapLookup{}
	keys := make([]string, tenantCount)
	for i := range keys {
		keys[i] = apikey.New(schemas.TierStandard)
		t := &schemas.Tenant{ID: fmt.Sprintf("tn_bench%08d", i), Tier: schemas.Tiers[i%3], Status: schemas.StatusActive,
			Regions: []string{"us-east"}, Version: 1, Keys: []schemas.APIKey{{ID: "k", Hash: apikey.Hash(cfg.Partner.Keys.Pepper, keys[i])}}}
		if t.Tier == schemas.TierEnterprise {
			t.Tier = schemas.TierStandard // the mutual-TLS path is measured by its own tests
		}
		if i%5 == 0 {
			t.RateLimit = &schemas.RateLimit{RequestsPerMinute: 120 + i%7, BurstSize: 20}
		}
		lookup[t.Keys[0].Hash] = t
	}
	srv, err := New(Options{Config: NewConfig(&cfg), Tenants: lookup, Producer: discard{}, Names: kafka.Names{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	// Warm: every tenant's key resolved once.
	for _, k := range keys {
		if _, ok := srv.resolver.Resolve(apikey.Hash(cfg.Partner.Keys.Pepper, k)); !ok {
			tb.Fatal("warm-up lookup failed")
		}
	}
	step := max(1, tenantCount/distinct)
	var reqs []*authv3.CheckRequest
	for i := 0; i < tenantCount && len(reqs) < distinct; i += step {
		reqs = append(reqs, benchRequest(keys[i]))
	}
	workers := 16
	// Alternate short rounds so drift in a shared machine's load hits both
	// alike; throughput is the median of the rounds' rates (a burst of
	// outside load spoils one round, not the figure).
	var plugin, empty loadResult
	const rounds = 10
	for r := 0; r < rounds; r++ {
		p, err := loadRun(ctx, srv, reqs, n/rounds, workers)
		if err != nil {
			tb.Fatal(err)
		}
		e, err := loadRun(ctx, emptyAuthz{}, reqs, n/rounds, workers)
		if err != nil {
			tb.Fatal(err)
		}
		plugin.merge(p)
		empty.merge(e)
	}
	if got := srv.resolver.pos.Len(); got < tenantCount*9/10 {
		tb.Fatalf("the key cache holds %d tenants, want about %d", got, tenantCount)
	}
	plugin.finish()
	empty.finish()
	base := "empty ext_authz handler, same gRPC setup"
	return []benchtest.Figure{
		{Name: fmt.Sprintf("Check throughput, warm cache of %d tenants (%d in flight)", tenantCount, workers), Value: plugin.rps, Unit: "req/s", Baseline: base, BaselineValue: empty.rps},
		{Name: fmt.Sprintf("Check latency p50, warm cache of %d tenants", tenantCount), Value: plugin.p50, Unit: "µs", Baseline: base, BaselineValue: empty.p50},
		{Name: fmt.Sprintf("Check latency p99, warm cache of %d tenants", tenantCount), Value: plugin.p99, Unit: "µs", Baseline: base, BaselineValue: empty.p99},
	}
}

// benchRequest is a CheckRequest as Envoy sends it for an allowed call.
func benchRequest(key string) *authv3.CheckRequest {
	h := map[string]string{":authority": "us-east.edge.example", ":method": "GET", ":path": "/api/v1/partners/orders?page=2", ":scheme": "https",
		"authorization": "Bearer " + key, "user-agent": "partner-sdk/1.0", "x-request-id": "0f1e2d3c-bench",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-forwarded-proto": "https"}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "203.0.113.7", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Headers: h, Path: h[":path"], Host: h[":authority"], Scheme: "https", Protocol: "HTTP/2"}},
		ContextExtensions: map[string]string{schemas.ContextRegion: "us-east"},
	}}
}

type loadResult struct {
	rps, p50, p99 float64
	lat           []time.Duration
	elapsed       time.Duration
	rates         []float64 // per round
}

func (r *loadResult) merge(o loadResult) {
	r.lat = append(r.lat, o.lat...)
	r.elapsed += o.elapsed
	r.rates = append(r.rates, float64(len(o.lat))/o.elapsed.Seconds())
}

func (r *loadResult) finish() {
	all := r.lat
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1000 }
	sort.Float64s(r.rates)
	r.rps, r.p50, r.p99 = r.rates[len(r.rates)/2], q(0.50), q(0.99)
}

// loadRun serves h with the plugin's gRPC server options on loopback and
// sends n Checks, cycling through reqs, from `workers` goroutines over one
// connection.
func loadRun(ctx context.Context, h authv3.AuthorizationServer, reqs []*authv3.CheckRequest, n, workers int) (loadResult, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadResult{}, err
	}
	gs := grpc.NewServer(serverOptions(nil)...)
	authv3.RegisterAuthorizationServer(gs, h)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return loadResult{}, err
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	for i := 0; i < 200; i++ { // warm up: connection, caches
		if _, err := c.Check(ctx, reqs[i%len(reqs)]); err != nil {
			return loadResult{}, err
		}
	}
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				t0 := time.Now()
				resp, err := c.Check(ctx, reqs[(w*7919+i)%len(reqs)])
				if err == nil && resp.GetOkResponse() == nil {
					err = fmt.Errorf("benchmark Check denied: %v", resp.GetDeniedResponse().GetBody())
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	res := loadResult{elapsed: elapsed}
	for _, l := range lat {
		res.lat = append(res.lat, l...)
	}
	return res, nil
}
