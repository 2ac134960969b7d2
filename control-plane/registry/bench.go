package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/schemas"
)

// Bench measures how fast a registry rebuilds its state from the tenants
// topic at start (decode, index, notify) beside a raw franz-go read of the
// same records in the same run.
func Bench(ctx context.Context, env benchrow.Env) ([]benchrow.Row, error) {
	n := 20_000
	if env.Quick {
		n = 2_000
	}
	topic := fmt.Sprintf("bench.tenants.%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"cleanup.policy": ptr("compact")}, topic); err != nil {
		return nil, err
	}
	defer func() { _, _ = adm.DeleteTopics(context.Background(), topic) }()
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	for i := 0; i < n; i++ {
		key := apikey.New("standard")
		t := schemas.Tenant{SchemaVersion: "1", ID: NewID("tn_"), Name: fmt.Sprintf("Partner %d", i), Tier: "standard", Status: "active",
			Regions: []string{"us-east"}, Keys: []schemas.APIKey{{ID: NewID("key_"), Hash: apikey.Hash("bench-pepper-0123456789", key), Prefix: apikey.DisplayPrefix(key), CreatedAt: now}},
			Endpoints: []schemas.Endpoint{{ID: NewID("ep_"), URL: "https://p.example/h", Secrets: []schemas.WebhookSecret{{ID: "sec", Secret: NewWebhookSecret(), CreatedAt: now}}}},
			CreatedAt: now, UpdatedAt: now, Version: 1}
		b, _ := json.Marshal(t)
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(t.ID), Value: b})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, err
	}

	// Baseline: a raw consumer reading every record.
	raw, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	got := 0
	for got < n {
		f := raw.PollFetches(ctx)
		if ctx.Err() != nil {
			raw.Close()
			return nil, ctx.Err()
		}
		got += f.NumRecords()
	}
	rawTook := time.Since(start)
	raw.Close()

	rcl, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers...))
	if err != nil {
		return nil, err
	}
	defer rcl.Close()
	reg, err := New(topic, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- reg.Run(rctx, rcl) }()
	select {
	case <-reg.Ready():
	case err := <-done:
		cancel()
		return nil, err
	}
	regTook := time.Since(start)
	cancel()
	<-done
	if reg.Len() != n {
		return nil, fmt.Errorf("registry loaded %d tenants, want %d", reg.Len(), n)
	}
	return []benchrow.Row{{
		Name: fmt.Sprintf("registry rebuild (%d tenants)", n), Value: float64(n) / regTook.Seconds(), Unit: "tenants/s",
		Baseline: "raw franz-go read of the same records", BaselineValue: float64(n) / rawTook.Seconds(),
	}}, nil
}

func ptr(s string) *string { return &s }
