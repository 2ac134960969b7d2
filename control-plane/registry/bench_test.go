package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/benchtest"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// BenchmarkRebuild is the registry figure of `make bench`: how fast a
// registry rebuilds its state from the tenants topic at start (decode,
// index, notify), beside a raw franz-go read of the same records in the
// same run, on the test brokers (real Kafka under make bench).
func BenchmarkRebuild(b *testing.B) {
	n := 20_000
	if benchtest.Quick() {
		n = 2_000
	}
	rate, base := measureRebuild(b, n)
	benchtest.Report(b, benchtest.Figure{
		Name: fmt.Sprintf("registry rebuild (%d tenants)", n), Value: rate, Unit: "tenants/s",
		Baseline: "raw franz-go read of the same records", BaselineValue: base,
	})
}

// TestRebuildFigure runs the benchmark's measurement at a small size so it
// cannot rot: the registry loads every tenant, both rates are measured.
func TestRebuildFigure(t *testing.T) {
	t.Parallel()
	rate, base := measureRebuild(t, 500)
	if rate <= 0 || base <= 0 {
		t.Fatalf("rates %v / %v", rate, base)
	}
}

func measureRebuild(tb testing.TB, n int) (rate, baseline float64) {
	tb.Helper()
	ctx := context.Background()
	brokers := testenv.Brokers(tb)
	topic := fmt.Sprintf("bench.tenants.%s", testenv.RandomID())
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	if _, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"cleanup.policy": &compact}, topic); err != nil {
		tb.Fatal(err)
	}
	defer func() { _, _ = adm.DeleteTopics(context.Background(), topic) }()
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	for i := 0; i < n; i++ {
		key := apikey.New("standard")
		t := schemas.Tenant{SchemaVersion: "1", ID: registry.NewID("tn_"), Name: fmt.Sprintf("Partner %d", i), Tier: "standard", Status: "active",
			Regions: []string{"us-east"}, Keys: []schemas.APIKey{{ID: registry.NewID("key_"), Hash: apikey.Hash("bench-pepper-0123456789", key), Prefix: apikey.DisplayPrefix(key), CreatedAt: now}},
			Endpoints: []schemas.Endpoint{{ID: registry.NewID("ep_"), URL: "https://p.example/h", Secrets: []schemas.WebhookSecret{{ID: "sec", Secret: registry.NewWebhookSecret(), CreatedAt: now}}}},
			CreatedAt: now, UpdatedAt: now, Version: 1}
		b, _ := json.Marshal(t)
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(t.ID), Value: b})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		tb.Fatal(err)
	}

	// Baseline: a raw consumer reading every record.
	raw, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	for got := 0; got < n; {
		got += raw.PollFetches(ctx).NumRecords()
	}
	rawTook := time.Since(start)
	raw.Close()

	rcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		tb.Fatal(err)
	}
	defer rcl.Close()
	reg, err := registry.New(topic, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- reg.Run(rctx, rcl) }()
	select {
	case <-reg.Ready():
	case err := <-done:
		cancel()
		tb.Fatal(err)
	}
	regTook := time.Since(start)
	cancel()
	<-done
	if reg.Len() != n {
		tb.Fatalf("registry loaded %d tenants, want %d", reg.Len(), n)
	}
	return float64(n) / regTook.Seconds(), float64(n) / rawTook.Seconds()
}
