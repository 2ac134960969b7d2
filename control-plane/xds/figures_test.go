package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/benchtest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// benchTenantCount is the tenant count of the scale figures.
const benchTenantCount = 100_000

// BenchTenants returns n active tenants spread over the default regions and
// tiers, some with features, overrides, JWT configs and client identities,
// each with one key: what a registry of n partners holds.
func benchTenants(n int) []*schemas.Tenant {
	out := make([]*schemas.Tenant, n)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range out {
		t := &schemas.Tenant{SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("tn_bench%08d", i), Name: fmt.Sprintf("bench %d", i),
			Tier: schemas.Tiers[i%3], Status: schemas.StatusActive, Regions: []string{"us-east", "eu-west"}, Version: 1,
			CreatedAt: now, UpdatedAt: now,
			Keys: []schemas.APIKey{{ID: fmt.Sprintf("key_%08d", i), Hash: apikey.Hash("bench-pepper-0123456789", fmt.Sprint(i)), Prefix: "pk_std_abcd", CreatedAt: now}},
			Endpoints: []schemas.Endpoint{{ID: fmt.Sprintf("ep_%08d", i), URL: "https://partner.example/hooks",
				Secrets: []schemas.WebhookSecret{{ID: "sec", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", CreatedAt: now}}}}}
		if i%2 == 0 {
			t.Features = map[string]bool{"reports": true, "bulk_export": i%4 == 0}
		}
		if i%5 == 0 {
			t.RateLimit = &schemas.RateLimit{RequestsPerMinute: 120 + i%7, BurstSize: 20}
		}
		if t.Tier == schemas.TierEnterprise {
			t.ClientIdentities = []string{fmt.Sprintf("spiffe://partner-%d.example/client", i)}
		}
		out[i] = t
	}
	return out
}

func benchConfig() *xds.Config {
	cfg := config.Default()
	return xds.NewConfig(&cfg)
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkFigures is the control plane's `make bench` suite, at 100k
// tenants:
//   - heap of the tenant records (as the registry holds them: decoded from
//     their topic JSON, indexed by id and key hash) plus the xDS server with
//     every region's snapshot, beside the records alone;
//   - the build and validation of a region's snapshot, beside a
//     deterministic marshal of the same resources (the least any build must
//     spend to hand them out);
//   - the delay from a configuration change (Reload with a new upstream
//     timeout: routes change, listeners do not) to the new route table at
//     every one of 100 delta ADS clients, beside the same with one client.
//
// No figure depends on the tenant count: no xDS resource names a tenant.
// (A tenant change reaches no ADS client at all: TestTenantChangesNeverReachXDS.)
func BenchmarkFigures(b *testing.B) {
	figs, err := figures(context.Background(), benchtest.Quick())
	if err != nil {
		b.Fatal(err)
	}
	benchtest.Report(b, figs...)
}

// TestFigures runs the suite in its quick form, so it cannot rot; its
// figures are printed, never asserted.
func TestFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("make bench runs it in full")
	}
	figs, err := figures(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 4 {
		t.Fatalf("%d figures", len(figs))
	}
	for _, f := range figs {
		if f.Value <= 0 || f.BaselineValue <= 0 {
			t.Fatalf("figure without a measurement: %+v", f)
		}
		t.Logf("%s: %.3f %s (baseline %s: %.3f, ratio %.2f)", f.Name, f.Value, f.Unit, f.Baseline, f.BaselineValue, f.Ratio())
	}
}

func figures(ctx context.Context, quick bool) ([]benchtest.Figure, error) {
	log := slog.New(slog.DiscardHandler)
	n := benchTenantCount
	if quick {
		n = 10_000
	}
	var rows []benchtest.Figure

	// Memory: the records as the registry keeps them, then the server too.
	base := heapInUse()
	raw := make([][]byte, n)
	for i, t := range benchTenants(n) {
		raw[i], _ = json.Marshal(t)
	}
	byID := make(map[string]*schemas.Tenant, n)
	byHash := make(map[string]string, n)
	for _, b := range raw {
		var t schemas.Tenant
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, err
		}
		byID[t.ID] = &t
		for _, k := range t.Keys {
			byHash[k.Hash] = t.ID
		}
	}
	raw = nil
	records := heapInUse() - base
	srv, err := xds.New(xds.Options{Config: benchConfig(), Log: log})
	if err != nil {
		return nil, err
	}
	withServer := heapInUse() - base
	runtime.KeepAlive(byID)
	runtime.KeepAlive(byHash)
	runtime.KeepAlive(srv)
	rows = append(rows, benchtest.Figure{
		Name:  fmt.Sprintf("control-plane heap, %d tenants (records + xDS server, every region's snapshot)", n),
		Value: float64(withServer) / (1 << 20), Unit: "MiB",
		Baseline: "the tenant records alone, as the registry holds them", BaselineValue: float64(records) / (1 << 20),
	})

	// Build time.
	b := xds.NewBuilder(benchConfig())
	reps := 200
	if quick {
		reps = 30
	}
	var build, marshal []time.Duration
	for i := 0; i < reps; i++ {
		start := time.Now()
		res, err := b.Build("us-east")
		if err != nil {
			return nil, err
		}
		snap, err := cachev3.NewSnapshot("1", res)
		if err != nil {
			return nil, err
		}
		if _, err := xds.Validate(snap); err != nil {
			return nil, err
		}
		build = append(build, time.Since(start))
		start = time.Now()
		for _, rs := range res {
			for _, r := range rs {
				if _, err := (proto.MarshalOptions{Deterministic: true}).Marshal(r); err != nil {
					return nil, err
				}
			}
		}
		marshal = append(marshal, time.Since(start))
	}
	rows = append(rows, benchtest.Figure{
		Name:  fmt.Sprintf("snapshot build+validate of a region, %d tenants (p50)", n),
		Value: ms(pct(build, 50)), Unit: "ms",
		Baseline: "deterministic marshal of the same resources", BaselineValue: ms(pct(marshal, 50)),
	})

	changes := 20
	if quick {
		changes = 6
	}
	many, err := changeToVersion(ctx, log, 100, changes)
	if err != nil {
		return rows, err
	}
	one, err := changeToVersion(ctx, log, 1, changes)
	if err != nil {
		return rows, err
	}
	rows = append(rows,
		benchtest.Figure{Name: "config change → new route table at all of 100 delta ADS clients (p50)", Value: ms(pct(many, 50)), Unit: "ms",
			Baseline: "same with 1 delta ADS client", BaselineValue: ms(pct(one, 50))},
		benchtest.Figure{Name: "config change → new route table at all of 100 delta ADS clients (p99)", Value: ms(pct(many, 99)), Unit: "ms",
			Baseline: "same with 1 delta ADS client", BaselineValue: ms(pct(one, 99))},
	)
	return rows, nil
}

// changeToVersion runs a control plane with `clients` delta ADS streams of
// us-east (every Envoy type, each response ACKed as Envoy does), then
// reloads the configuration with a new upstream timeout `changes` times and
// measures from each Reload to the moment every client has the new route
// table.
func changeToVersion(ctx context.Context, log *slog.Logger, clients, changes int) ([]time.Duration, error) {
	cfg := benchConfig()
	srv, err := xds.New(xds.Options{Config: cfg, Log: log})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	got := make(chan time.Time, clients*4)
	ready := make(chan struct{}, clients)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := 0; i < clients; i++ {
		st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
		if err != nil {
			return nil, err
		}
		node := &core.Node{Id: fmt.Sprintf("bench-%d", i), Cluster: "us-east"}
		for _, typ := range xds.EnvoyTypes {
			if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
				return nil, err
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			routes := 0
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
					return
				}
				if r.GetTypeUrl() != resource.RouteType {
					continue
				}
				if routes++; routes == 1 {
					ready <- struct{}{}
				} else {
					got <- time.Now()
				}
			}
		}()
	}
	for i := 0; i < clients; i++ {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("%d of %d clients got the first route table within 30s", i, clients)
		}
	}
	var out []time.Duration
	for i := 0; i < changes; i++ {
		next := *cfg
		next.XDS.UpstreamTimeout = cfg.XDS.UpstreamTimeout + time.Duration(1+i)*time.Millisecond
		start := time.Now()
		if err := srv.Reload(&next); err != nil {
			return nil, err
		}
		var last time.Time
		for c := 0; c < clients; c++ {
			select {
			case at := <-got:
				last = at
			case <-time.After(30 * time.Second):
				return nil, fmt.Errorf("change %d: %d of %d clients got the new route table within 30s", i, c, clients)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		out = append(out, last.Sub(start))
	}
	return out, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
