package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/twmb/franz-go/pkg/kgo"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// emptyAuthz answers every Check with OK and does nothing else: the cost of
// the gRPC round trip alone, the baseline of the Check benchmark.
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

// Bench measures, for `make bench`, Check throughput and p50/p99 latency
// on the cache-hit path over loopback gRPC, beside an empty ext_authz
// handler served and called exactly the same way in the same run.
func Bench(ctx context.Context, env benchrow.Env) ([]benchrow.Row, error) {
	cfg := config.Default()
	cfg.Partner.Keys.Pepper = "bench-pepper-0123456789"
	cfg.Admin.Token = "bench-admin-token"
	key := apikey.New(schemas.TierStandard)
	t := &schemas.Tenant{ID: "tn_bench", Tier: schemas.TierStandard, Status: schemas.StatusActive, Regions: []string{"us-east"}, Version: 1,
		Keys: []schemas.APIKey{{ID: "k", Hash: apikey.Hash(cfg.Partner.Keys.Pepper, key)}}}
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv, err := New(Options{Config: NewConfig(&cfg), Tenants: mapLookup{t.Keys[0].Hash: t}, Producer: discard{}, Names: kafka.Names{}, Log: log})
	if err != nil {
		return nil, err
	}
	req := benchRequest(key)
	n, workers := 40_000, 16
	if env.Quick {
		n = 5_000
	}
	// Alternate rounds so drift in a shared machine's load hits both alike.
	var plugin, empty loadResult
	const rounds = 4
	for r := 0; r < rounds; r++ {
		p, err := loadRun(ctx, srv, req, n/rounds, workers)
		if err != nil {
			return nil, err
		}
		e, err := loadRun(ctx, emptyAuthz{}, req, n/rounds, workers)
		if err != nil {
			return nil, err
		}
		plugin.merge(p)
		empty.merge(e)
	}
	plugin.finish()
	empty.finish()
	base := "empty ext_authz handler, same gRPC setup"
	return []benchrow.Row{
		{Name: fmt.Sprintf("Check throughput, cache hit (%d in flight)", workers), Value: plugin.rps, Unit: "req/s", Baseline: base, BaselineValue: empty.rps},
		{Name: "Check latency p50, cache hit", Value: plugin.p50, Unit: "µs", Baseline: base, BaselineValue: empty.p50},
		{Name: "Check latency p99, cache hit", Value: plugin.p99, Unit: "µs", Baseline: base, BaselineValue: empty.p99},
	}, nil
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
}

func (r *loadResult) merge(o loadResult) {
	r.lat = append(r.lat, o.lat...)
	r.elapsed += o.elapsed
}

func (r *loadResult) finish() {
	all := r.lat
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1000 }
	r.rps, r.p50, r.p99 = float64(len(all))/r.elapsed.Seconds(), q(0.50), q(0.99)
}

// loadRun serves h with the plugin's gRPC server options on loopback and
// sends n Checks from `workers` goroutines over one connection.
func loadRun(ctx context.Context, h authv3.AuthorizationServer, req *authv3.CheckRequest, n, workers int) (loadResult, error) {
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
		if _, err := c.Check(ctx, req); err != nil {
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
				resp, err := c.Check(ctx, req)
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
