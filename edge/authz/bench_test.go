package authz_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// BenchmarkCheckCacheHit is the in-process cost of one Check on the
// cache-hit path (no gRPC).
func BenchmarkCheckCacheHit(b *testing.B) {
	cfg := testenv.Config(b)
	tenants := newFakeTenants()
	key := apikey.New("standard")
	tenants.put(nil, &schemas.Tenant{ID: "tn_b", Tier: "standard", Status: "active", Regions: []string{"us-east"}, Version: 1,
		Keys: []schemas.APIKey{{ID: "k", Hash: apikey.Hash(cfg.Partner.Keys.Pepper, key)}}})
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: tenants, Producer: &sink{}, Names: kafka.Names{},
		Log: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Now: time.Now})
	if err != nil {
		b.Fatal(err)
	}
	req := envoyRequest{path: "/api/v1/partners/orders", headers: bearer(key)}.proto()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := srv.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
