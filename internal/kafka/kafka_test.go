package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

func TestEnsureTopicsPolicies(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	_, cl := testenv.Kafka(t, cfg)
	// A second run is a no-op, not an error.
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	// A topic just created may not be in every broker's metadata yet.
	var rcs kadm.ResourceConfigs
	testenv.Eventually(t, 15*time.Second, "topic configs describable", func() bool {
		var err error
		rcs, err = kadm.NewClient(cl).DescribeTopicConfigs(context.Background(), names.Topic(schemas.TopicTenants), names.Topic(schemas.TopicDLQ), names.Retry(1))
		if err != nil {
			return false
		}
		for _, rc := range rcs {
			if errors.Is(rc.Err, kerr.UnknownTopicOrPartition) {
				return false
			}
		}
		return true
	})
	want := map[string]map[string]string{
		names.Topic(schemas.TopicTenants): {"cleanup.policy": "compact"},
		names.Topic(schemas.TopicDLQ):     {"cleanup.policy": "delete", "retention.ms": strconv.Itoa(30 * 86400 * 1000)},
		names.Retry(1):                    {"cleanup.policy": "delete"},
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			t.Fatalf("%s: %v", rc.Name, rc.Err)
		}
		for k, v := range want[rc.Name] {
			got := ""
			for _, c := range rc.Configs {
				if c.Key == k && c.Value != nil {
					got = *c.Value
				}
			}
			if got != v {
				t.Errorf("%s %s = %q, want %q", rc.Name, k, got, v)
			}
		}
	}
	retries := 0
	for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
		if len(s.Name) > len(names.Retry(0))-1 && s.Name[:len(names.Retry(0))-1] == names.Retry(0)[:len(names.Retry(0))-1] {
			retries++
		}
	}
	if retries != cfg.Partner.Webhooks.Retry.MaxAttempts-1 {
		t.Errorf("%d retry topics, want max_attempts-1 = %d", retries, cfg.Partner.Webhooks.Retry.MaxAttempts-1)
	}
}

// TestConsumeCommitsOnlyAfterWork: a batch whose handler fails is handled
// again; handled batches are committed; a consumer that stops in the middle
// of a batch leaves that batch to the next member of the group.
func TestConsumeCommitsOnlyAfterWork(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	topic := names.Topic(schemas.TopicEvents)
	group := names.Group(cfg.Kafka.GroupPrefix, "consume-test")
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	newConsumer := func() *kgo.Client {
		c, err := kafka.NewClient(cfg.Kafka, brokers, log, append(kafka.ConsumerOptions(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	var mu sync.Mutex
	first := map[string]int{}
	failures := 0
	crashing := false
	produce(0, 100)
	c1 := newConsumer()
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() {
		done1 <- kafka.Consume(ctx1, c1, log, func(ctx context.Context, rs []*kgo.Record) error {
			mu.Lock()
			defer mu.Unlock()
			if failures == 0 {
				failures++
				return errors.New("transient")
			}
			if crashing { // records 100..199: stop mid-batch, nothing done
				cancel1()
				return ctx.Err()
			}
			for _, r := range rs {
				first[string(r.Value)]++
			}
			return nil
		})
	}()
	testenv.Eventually(t, 60*time.Second, "first 100 records handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) == 100
	})
	// Give the commit a moment to land, then send the batch that "crashes".
	testenv.Eventually(t, 30*time.Second, "first batch committed", func() bool {
		offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		total := int64(0)
		offs.Each(func(o kadm.OffsetResponse) { total += o.At })
		return total == 100
	})
	mu.Lock()
	crashing = true
	mu.Unlock()
	produce(100, 200)
	<-ctx1.Done()
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	c1.Close()

	c2 := newConsumer()
	defer c2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	second := map[string]int{}
	go func() {
		_ = kafka.Consume(ctx2, c2, log, func(_ context.Context, rs []*kgo.Record) error {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range rs {
				second[string(r.Value)]++
			}
			if len(second) >= 100 {
				cancel2()
			}
			return nil
		})
	}()
	<-ctx2.Done()
	mu.Lock()
	defer mu.Unlock()
	if failures != 1 {
		t.Fatalf("the failing handler ran %d times", failures)
	}
	for i := 0; i < 200; i++ {
		k := strconv.Itoa(i)
		if i < 100 && (first[k] != 1 || second[k] != 0) {
			t.Fatalf("record %d: first consumer %d times, second %d times; want 1 and 0 (committed after work)", i, first[k], second[k])
		}
		if i >= 100 && (first[k] != 0 || second[k] != 1) {
			t.Fatalf("record %d: first consumer %d times, second %d times; want 0 and 1 (not committed when the work did not finish)", i, first[k], second[k])
		}
	}
}

// TestConsumeRetriesFailedCommit: a batch is handled but its offset commit
// fails (the coordinator's broker was down) and no further record arrives
// on its partitions. The commit must still land: otherwise the group's lag
// never reaches zero and a restart handles the batch again. The failure is
// injected with kfake's request control; the chaos suite's kafka-leader-kill
// scenario exercises the same path on a real three-broker cluster.
func TestConsumeRetriesFailedCommit(t *testing.T) {
	t.Parallel()
	const topic = "commit-retry"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var failed atomic.Int32
	kc.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if failed.Load() >= 2 {
			kc.DropControl()
			return nil, nil, false
		}
		kc.KeepControl()
		failed.Add(1)
		req := kreq.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.UnknownServerError.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	cfg := testenv.Config(t)
	brokers := kc.ListenAddrs()
	log := slog.New(slog.DiscardHandler)
	pr, err := kafka.NewClient(cfg.Kafka, brokers, log)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var recs []*kgo.Record
	for i := range 30 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	if err := pr.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	const group = "commit-retry-group"
	c, err := kafka.NewClient(cfg.Kafka, brokers, log, append(kafka.ConsumerOptions(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- kafka.Consume(ctx, c, log, func(_ context.Context, rs []*kgo.Record) error {
			handled.Add(int32(len(rs)))
			return nil
		})
	}()
	testenv.Eventually(t, 30*time.Second, "30 records handled and their offsets committed with no new record", func() bool {
		offs, err := kadm.NewClient(pr).FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		total := int64(0)
		offs.Each(func(o kadm.OffsetResponse) { total += o.At })
		return handled.Load() == 30 && total == 30
	})
	if n := failed.Load(); n < 2 {
		t.Fatalf("%d offset commits were refused, want 2 (the test did not inject its failure)", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTraceContextInHeaders(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	r := &kgo.Record{}
	kafka.Inject(ctx, r)
	tp, ok := kafka.Header(r, "traceparent")
	if !ok || tp != fmt.Sprintf("00-%s-%s-01", tid, sid) {
		t.Fatalf("traceparent header %q", tp)
	}
	got := trace.SpanContextFromContext(kafka.Extract(context.Background(), r))
	if got.TraceID() != tid || got.SpanID() != sid {
		t.Fatalf("extracted %v", got)
	}
	kafka.SetHeader(r, "traceparent", "x")
	if v, _ := kafka.Header(r, "traceparent"); v != "x" || len(r.Headers) != 1 {
		t.Fatalf("SetHeader did not replace: %v", r.Headers)
	}
}

// TestConsumeBatchesByteCap: a batch that holds Batching.MaxBytes is
// handled at once, without waiting for Size records or the linger (an hour
// here): large records never pile up to a batch of Size of them.
func TestConsumeBatchesByteCap(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	topic := names.Topic(schemas.TopicEvents)
	group := names.Group(cfg.Kafka.GroupPrefix, "byte-cap-test")
	var recs []*kgo.Record
	for i := range 3 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: bytes.Repeat([]byte("v"), 1000)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	c, err := kafka.NewClient(cfg.Kafka, brokers, log, append(kafka.ConsumerOptions(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	handled := 0
	done := make(chan error, 1)
	go func() {
		done <- kafka.ConsumeBatches(ctx, c, log, kafka.Batching{Size: 1000, Linger: time.Hour, MaxBytes: 1000}, func(ctx context.Context, rs []*kgo.Record) error {
			if ctx.Err() != nil {
				return ctx.Err() // the final flush at the end: not what this test is about
			}
			mu.Lock()
			defer mu.Unlock()
			handled += len(rs)
			return nil
		})
	}()
	testenv.Eventually(t, 60*time.Second, "the 3 records handled before the linger (each batch reached MaxBytes)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled == 3
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
