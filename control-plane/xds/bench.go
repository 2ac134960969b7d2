package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	client "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// BenchTenants returns n active tenants spread over the default regions and
// tiers, some with features, overrides and JWT configs.
func BenchTenants(n int) []*schemas.Tenant {
	tiers := []string{schemas.TierSandbox, schemas.TierStandard, schemas.TierEnterprise}
	out := make([]*schemas.Tenant, n)
	for i := range out {
		t := &schemas.Tenant{SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("tn_bench%08d", i), Name: fmt.Sprintf("bench %d", i),
			Tier: tiers[i%3], Status: schemas.StatusActive, Regions: []string{"us-east", "eu-west"}, Version: 1}
		if i%2 == 0 {
			t.Features = map[string]bool{"reports": true, "bulk_export": i%4 == 0}
		}
		if i%5 == 0 {
			t.RateLimit = &schemas.RateLimit{RequestsPerMinute: 120 + i%7, BurstSize: 20}
		}
		out[i] = t
	}
	return out
}

func benchConfig() *config.Config {
	cfg := config.Default()
	cfg.Partner.Keys.Pepper = "bench-pepper-0123456789"
	cfg.Admin.Token = "bench-admin-token"
	cfg.XDS.CacheSize = 100_000
	return &cfg
}

// buildOnce builds and validates one region's snapshot, as a rebuild does.
func buildOnce(b *Builder, tenants []*schemas.Tenant) (time.Duration, error) {
	start := time.Now()
	res, _, err := b.Build("us-east", tenants)
	if err != nil {
		return 0, err
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		return 0, err
	}
	if _, err := Validate(snap); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Bench measures, for `make bench`: the time to build and validate a
// region's snapshot after one tenant changed (derived configs cached) for
// 100, 1k and 10k tenants beside the same build from a cold cache; and the
// delay from a tenant change to the new version at 100 connected SotW ADS
// clients beside one client, on loopback gRPC in this process.
func Bench(ctx context.Context, env benchrow.Env) ([]benchrow.Row, error) {
	var rows []benchrow.Row
	sizes := []int{100, 1_000, 10_000}
	if env.Quick {
		sizes = []int{100, 1_000}
	}
	for _, n := range sizes {
		tenants := BenchTenants(n)
		reps := max(3, 3000/n)
		var cold, warm []time.Duration
		for i := 0; i < reps; i++ {
			b, err := NewBuilder(NewConfig(benchConfig()))
			if err != nil {
				return nil, err
			}
			d, err := buildOnce(b, tenants)
			if err != nil {
				return nil, err
			}
			cold = append(cold, d)
			changed := *tenants[i%n]
			changed.Version++
			tenants[i%n] = &changed
			d, err = buildOnce(b, tenants)
			if err != nil {
				return nil, err
			}
			warm = append(warm, d)
		}
		rows = append(rows, benchrow.Row{
			Name: fmt.Sprintf("snapshot build+validate, %d tenants, one changed (p50)", n), Value: ms(pct(warm, 50)), Unit: "ms",
			Baseline: "same build, derived-config cache cold", BaselineValue: ms(pct(cold, 50)),
		})
	}
	changes := 30
	if env.Quick {
		changes = 8
	}
	many, err := changeToVersion(ctx, env.Log, 100, changes)
	if err != nil {
		return rows, err
	}
	one, err := changeToVersion(ctx, env.Log, 1, changes)
	if err != nil {
		return rows, err
	}
	rows = append(rows,
		benchrow.Row{Name: "tenant change → new version at all of 100 ADS clients (p50)", Value: ms(pct(many, 50)), Unit: "ms",
			Baseline: "same with 1 ADS client", BaselineValue: ms(pct(one, 50))},
		benchrow.Row{Name: "tenant change → new version at all of 100 ADS clients (p99)", Value: ms(pct(many, 99)), Unit: "ms",
			Baseline: "same with 1 ADS client", BaselineValue: ms(pct(one, 99))},
	)
	return rows, nil
}

// changeToVersion runs a control plane with 1k tenants and `clients` SotW
// ADS clients of us-east (listeners), then applies tenant changes one at a
// time and measures from each change to the moment every client has
// received the new version.
func changeToVersion(ctx context.Context, log *slog.Logger, clients, changes int) ([]time.Duration, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := benchConfig()
	tenants := NewStaticTenants(BenchTenants(1000)...)
	srv, err := New(Options{Config: NewConfig(cfg), Tenants: tenants, Log: log})
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
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := 0; i < clients; i++ {
		c := client.NewADSClient(sctx, &core.Node{Id: fmt.Sprintf("bench-%d", i), Cluster: "us-east"}, typeListener)
		if err := c.InitConnect(conn); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for {
				if _, err := c.Fetch(); err != nil {
					return
				}
				if err := c.Ack(); err != nil {
					return
				}
				if !first {
					got <- time.Now()
				}
				first = false
			}
		}()
	}
	// Wait until every client holds the initial version: let the streams
	// settle, then measure from a quiet state.
	time.Sleep(500 * time.Millisecond)
	var out []time.Duration
	for i := 0; i < changes; i++ {
		t := BenchTenants(1)[0]
		t.ID = fmt.Sprintf("tn_benchnew%04d", i)
		start := time.Now()
		tenants.Put(t)
		var last time.Time
		for n := 0; n < clients; n++ {
			select {
			case at := <-got:
				last = at
			case <-time.After(30 * time.Second):
				return nil, fmt.Errorf("change %d: %d of %d clients got the new version within 30s", i, n, clients)
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
