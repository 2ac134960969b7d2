package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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
	waitTopic(tb, adm, topic)
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

	rcl, err := kgo.NewClient(append(registry.ConsumerOpts(), kgo.SeedBrokers(brokers...))...)
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

// BenchmarkFollowDelay: how long a change made through one process's writer
// takes to be applied by a registry following the topic in another, beside
// a plain franz-go produce → consume round on the same brokers.
func BenchmarkFollowDelay(b *testing.B) {
	n := 50
	if benchtest.Quick() {
		n = 10
	}
	follow, plain := measureFollow(b, n)
	benchtest.Report(b, benchtest.Figure{
		Name: fmt.Sprintf("change → running follower applied, p50 of %d", n), Value: ms(follow), Unit: "ms",
		Baseline: "plain franz-go produce → consume, p50", BaselineValue: ms(plain),
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measureFollow returns the median follow delay and the median plain
// produce → consume delay over n rounds each.
func measureFollow(tb testing.TB, n int) (follow, plain time.Duration) {
	tb.Helper()
	cfg := testenv.Config(tb)
	log := slog.New(slog.DiscardHandler)
	brokers, cl := testenv.Kafka(tb, cfg)
	writerSide := startRegistry(tb, cfg, brokers, log)
	follower := startRegistry(tb, cfg, brokers, log)
	seen := make(chan time.Time, 16)
	cancel := follower.OnChange(func(_, t *schemas.Tenant) {
		if t != nil {
			seen <- time.Now()
		}
	})
	defer cancel()
	w := newWriter(cfg, writerSide, cl)
	ctx := context.Background()
	c, err := w.Create(ctx, registry.CreateRequest{Name: "Follow", Tier: "standard", WebhookURL: "https://partner.example/hook"})
	if err != nil {
		tb.Fatal(err)
	}
	<-seen
	var delays []time.Duration
	for i := 0; i < n; i++ {
		status := schemas.StatusSuspended
		if i%2 == 1 {
			status = schemas.StatusActive
		}
		start := time.Now()
		if _, err := w.SetStatus(ctx, c.Tenant.ID, status); err != nil {
			tb.Fatal(err)
		}
		select {
		case at := <-seen:
			delays = append(delays, at.Sub(start))
		case <-time.After(20 * time.Second):
			tb.Fatal("follower never saw the change")
		}
	}

	topic := "bench.follow." + testenv.RandomID()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		tb.Fatal(err)
	}
	defer func() { _, _ = adm.DeleteTopics(context.Background(), topic) }()
	waitTopic(tb, adm, topic)
	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cons.Close()
	got := make(chan time.Time, 16)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for cctx.Err() == nil {
			f := cons.PollFetches(cctx)
			f.EachRecord(func(*kgo.Record) { got <- time.Now() })
		}
	}()
	defer func() { stop(); <-done }()
	var base []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
			tb.Fatal(err)
		}
		select {
		case at := <-got:
			base = append(base, at.Sub(start))
		case <-time.After(20 * time.Second):
			tb.Fatal("plain consumer never saw the record")
		}
	}
	return median(delays), median(base)
}

// waitTopic returns once every partition of a topic just created has a
// leader: on a loaded broker a produce right after CreateTopic can otherwise
// exhaust the client's unknown-topic retries.
func waitTopic(tb testing.TB, adm *kadm.Client, topic string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		md, err := adm.ListTopics(ctx, topic)
		cancel()
		if err == nil {
			if d, ok := md[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
				ready := true
				for _, p := range d.Partitions {
					ready = ready && p.Err == nil && p.Leader >= 0
				}
				if ready {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("topic %s has no leader after 30s: %v", topic, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestFollowFigure runs the follow measurement at a small size so it cannot
// rot.
func TestFollowFigure(t *testing.T) {
	t.Parallel()
	follow, plain := measureFollow(t, 4)
	if follow <= 0 || plain <= 0 {
		t.Fatalf("delays %v / %v", follow, plain)
	}
}
