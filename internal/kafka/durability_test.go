package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// TestEnsureTopicsOnCluster: on the three-broker cluster with
// kafka.replication_factor 3 and kafka.min_insync_replicas 2, every topic
// the platform needs has three replicas per partition, all in sync, and
// min.insync.replicas=2 as a topic config (not merely the broker default).
func TestEnsureTopicsOnCluster(t *testing.T) {
	kc := testenv.KafkaCluster(t)
	kc.Exclusive() // RF 3 topics and, where it has one, its own fault: no other test's node down meanwhile
	cfg := testenv.Config(t)
	cfg.Kafka.Replication, cfg.Kafka.MinInsyncReplicas = 3, 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cl := kc.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var names []string
	for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
		names = append(names, s.Name)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, names...)
	})
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		t.Fatal(err)
	}
	kc.WaitInSync(time.Minute, names...)
	adm := kadm.NewClient(cl)
	td, err := adm.ListTopics(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		d, ok := td[name]
		if !ok || d.Err != nil {
			t.Fatalf("topic %s not created: %v", name, d.Err)
		}
		if len(d.Partitions) != cfg.Kafka.Partitions {
			t.Errorf("%s: %d partitions, want %d", name, len(d.Partitions), cfg.Kafka.Partitions)
		}
		for _, p := range d.Partitions {
			if len(p.Replicas) != 3 {
				t.Errorf("%s/%d: replicas %v, want 3", name, p.Partition, p.Replicas)
			}
		}
	}
	// A broker answers for a topic once its metadata has it: right after the
	// creation one may still say UNKNOWN_TOPIC_OR_PARTITION (CI saw it).
	var rcs kadm.ResourceConfigs
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		rcs, err = adm.DescribeTopicConfigs(ctx, names...)
		unknown := false
		for _, rc := range rcs {
			unknown = unknown || errors.Is(rc.Err, kerr.UnknownTopicOrPartition)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !unknown || time.Now().After(deadline) {
			break
		}
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			t.Fatalf("%s: %v", rc.Name, rc.Err)
		}
		got, source := "", ""
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" && c.Value != nil {
				got, source = *c.Value, c.Source.String()
			}
		}
		if got != "2" || source != "DYNAMIC_TOPIC_CONFIG" {
			t.Errorf("%s: min.insync.replicas = %q from %s, want 2 set on the topic", rc.Name, got, source)
		}
	}
}

// fastFail makes the platform's client give up after a few seconds: it
// retries NOT_ENOUGH_REPLICAS for up to 30 s, and the test needs the error,
// not the patience.
var fastFail = []kgo.Opt{kgo.RecordRetries(2), kgo.RecordDeliveryTimeout(5 * time.Second)}

// TestProducerWaitsForAllInSyncReplicas checks acks=all, the setting every
// component's producer runs with (kafka.Cluster.Opts), by its effect: with a
// follower of a topic with min.insync.replicas 3 stopped, the broker refuses
// acks=all writes (NOT_ENOUGH_REPLICAS) and accepts leader-ack ones. The
// platform's producer is refused; the same client with acks=1 is accepted,
// so the refusal is acks=all's. (The broker caps min.insync.replicas at the
// replica count, so this needs a replica out of the ISR: one node down.)
func TestProducerWaitsForAllInSyncReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("stops a broker of the cluster")
	}
	kc := testenv.KafkaCluster(t)
	kc.Exclusive() // RF 3 topics and, where it has one, its own fault: no other test's node down meanwhile
	cfg := testenv.Config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adm := kc.Admin()
	topic := cfg.Kafka.TopicPrefix + "durability.min-isr-3"
	three := "3"
	res, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": &three}, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	kc.WaitInSync(time.Minute, topic)
	platform := kafka.Cluster{Config: cfg.Kafka, Brokers: kc.Brokers, Log: slog.New(slog.DiscardHandler)}
	newClient := func(extra ...kgo.Opt) *kgo.Client {
		cl, err := platform.NewClient(append(append([]kgo.Opt{}, fastFail...), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	prod := newClient()
	leaderAcks := newClient(kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("all three in sync")}).FirstErr(); err != nil {
		t.Fatalf("platform producer with every replica in sync: %v", err)
	}

	leader := kc.Leader(topic, 0)
	follower := 1
	for follower == int(leader) {
		follower++
	}
	kc.Stop(follower) // KafkaCluster starts it again if the test fails before Start
	testenv.Eventually(t, time.Minute, fmt.Sprintf("node %d out of the ISR", follower), func() bool {
		tds, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return false
		}
		p, ok := tds[topic].Partitions[0]
		return ok && len(p.ISR) == 2
	})
	// The broker answers NOT_ENOUGH_REPLICAS; franz-go retries it (and
	// retries NOT_ENOUGH_REPLICAS_AFTER_APPEND past the retry limit, since
	// the write may have landed) until the delivery timeout.
	err = prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("must wait for 3 in-sync replicas")}).FirstErr()
	if !errors.Is(err, kerr.NotEnoughReplicas) && !errors.Is(err, kerr.NotEnoughReplicasAfterAppend) && !errors.Is(err, kgo.ErrRecordTimeout) {
		t.Fatalf("platform producer with 2 of min.insync.replicas 3 in sync: err %v, want NOT_ENOUGH_REPLICAS or its timeout (acks=all)", err)
	}
	if err := leaderAcks.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("leader ack only")}).FirstErr(); err != nil {
		t.Fatalf("the same client with acks=1: %v (want accepted: the refusal above is acks=all's)", err)
	}
	kc.Start(follower)
	kc.WaitInSync(time.Minute, topic)
	if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("in sync again")}).FirstErr(); err != nil {
		t.Fatalf("platform producer once the follower is back in sync: %v", err)
	}
}

// TestProducerIdempotent checks idempotence by its effect: the records the
// platform's producer writes carry a producer id in their batch (the broker
// de-duplicates a retried batch by producer id and sequence number); a
// client with idempotence disabled writes producer id -1.
func TestProducerIdempotent(t *testing.T) {
	cfg := testenv.Config(t)
	brokers, admCl := testenv.Kafka(t, cfg)
	adm := kadm.NewClient(admCl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := cfg.Kafka.TopicPrefix + "durability.idempotence"
	res, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	platform := kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: slog.New(slog.DiscardHandler)}
	prod, err := platform.NewClient(fastFail...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	plain, err := platform.NewClient(append(fastFail, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())...)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for i := 0; i < 3; i++ {
		for _, cl := range []*kgo.Client{prod, plain} {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte("v")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	reader, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var withID, withoutID []int64
	for len(withID)+len(withoutID) < 6 {
		fs := reader.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read back: %v (got %d of 6 records)", ctx.Err(), len(withID)+len(withoutID))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.ProducerID >= 0 {
				withID = append(withID, r.ProducerID)
			} else {
				withoutID = append(withoutID, r.ProducerID)
			}
		})
	}
	if len(withID) != 3 || len(withoutID) != 3 {
		t.Fatalf("records with a producer id: %v, without: %v; want the platform's 3 with one, the non-idempotent client's 3 without", withID, withoutID)
	}
	for _, id := range withID[1:] {
		if id != withID[0] {
			t.Errorf("producer ids %v: want the one id of the platform's idempotent producer", withID)
		}
	}
}
