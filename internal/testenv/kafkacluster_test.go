package testenv

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaClusterDefaults: a topic created with the broker defaults gets
// three replicas and min.insync.replicas 2, and so does the consumer offsets
// topic once a group commits.
func TestKafkaClusterDefaults(t *testing.T) {
	kc := KafkaCluster(t)
	kc.Exclusive() // RF 3 topics and, where it has one, its own fault: no other test's node down meanwhile
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kc.Admin()
	topic := "t" + RandomID() + ".defaults"
	if _, err := adm.CreateTopic(ctx, 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })

	cl := kc.Client(kgo.ConsumerGroup("g"+RandomID()), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 1; {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		got += fs.NumRecords()
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{topic, "__consumer_offsets"} {
		tds, err := adm.ListTopics(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, pd := range tds[name].Partitions.Sorted() {
			if len(pd.Replicas) != 3 {
				t.Fatalf("%s/%d: replicas %v, want 3", name, pd.Partition, pd.Replicas)
			}
		}
		rcs, err := adm.DescribeTopicConfigs(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		var minISR string
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" {
				minISR = c.MaybeValue()
			}
		}
		if minISR != "2" {
			t.Fatalf("%s: min.insync.replicas %q, want 2", name, minISR)
		}
	}
}

// TestKafkaClusterLeaderKill: SIGKILL the partition leader in the middle of
// acks=all writes; the partition moves to another node, writes go on, the
// killed node comes back on its own data, rejoins the ISR and, made leader
// again, serves every record written before, during and after its absence.
func TestKafkaClusterLeaderKill(t *testing.T) {
	kc := KafkaCluster(t)
	kc.Exclusive() // RF 3 topics and, where it has one, its own fault: no other test's node down meanwhile
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adm := kc.Admin()
	topic := "t" + RandomID() + ".kill"
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	kc.WaitInSync(time.Minute, topic)

	// acks=all and idempotence are franz-go's defaults; a write is
	// acknowledged only once min.insync.replicas (2) have it.
	prod := kc.Client(kgo.DefaultProduceTopic(topic), kgo.RecordRetries(100), kgo.RecordDeliveryTimeout(2*time.Minute))
	next := 0
	produce := func(n int) {
		t.Helper()
		var rs []*kgo.Record
		for i := 0; i < n; i++ {
			rs = append(rs, &kgo.Record{Value: []byte(strconv.Itoa(next))})
			next++
		}
		if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	produce(200)

	leader := kc.Leader(topic, 0)
	if leader < 1 || leader > 3 {
		t.Fatalf("leader of %s/0 is %d", topic, leader)
	}
	kc.Kill(int(leader))
	killedAt := time.Now()
	produce(200) // rides through the failover
	Eventually(t, time.Minute, "a new leader", func() bool {
		l := kc.Leader(topic, 0)
		return l > 0 && l != leader
	})
	t.Logf("kafka cluster: leader %d killed; new leader %d, writes acknowledged %v after the kill",
		leader, kc.Leader(topic, 0), time.Since(killedAt).Round(time.Millisecond))
	produce(200)

	kc.Start(int(leader))
	kc.WaitInSync(2*time.Minute, topic)
	// make the restarted node the leader again (it is the preferred replica
	// of a partition it led at creation) and read everything from it
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if pref := tds[topic].Partitions[0].Replicas[0]; pref == leader {
		Eventually(t, time.Minute, fmt.Sprintf("node %d leading again", leader), func() bool {
			rs, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{topic: {0: {}}})
			if err != nil {
				return false
			}
			if r := rs[topic][0]; r.Err != nil && r.Err != kerr.ElectionNotNeeded {
				return false
			}
			return kc.Leader(topic, 0) == leader
		})
	}

	cons := kc.Client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	seen := make([]bool, next)
	for got := 0; got < next; {
		fs := cons.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatalf("consume after restart (%d of %d): %v", got, next, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			i, err := strconv.Atoi(string(r.Value))
			if err != nil || i < 0 || i >= next {
				t.Fatalf("unexpected record %q", r.Value)
			}
			if seen[i] {
				t.Fatalf("record %d read twice (offset %d): idempotent producer duplicated it", i, r.Offset)
			}
			seen[i] = true
			got++
		})
	}
	t.Logf("kafka cluster: all %d acknowledged records read back, from leader %d", next, kc.Leader(topic, 0))
}
