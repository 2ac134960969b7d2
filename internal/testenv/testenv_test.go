package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/chdb"
)

// TestServerVersions reports the servers the suite runs against (make test
// prints it before the suite) and fails if they are not reachable.
func TestServerVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokers := Brokers(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kind := "kfake (embedded)"
	if RealKafka() {
		kind = "Apache Kafka"
	}
	vs.Each(func(v kadm.BrokerApiVersions) {
		t.Logf("server under test: %s %s at %v", kind, v.VersionGuess(), brokers)
	})
	conn := ClickHouse(t, Config(t))
	v, err := chdb.ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server under test: ClickHouse %s at %s", v, ClickHouseAddr())

	// the rest of the stack, where make test says it is
	if os.Getenv("PARTNERS_TEST_KAFKA_SASL") != "" {
		s := KafkaSASL(t)
		t.Logf("server under test: Kafka SASL_PLAINTEXT %s and SASL_SSL %s (%s, user %s, CA %s)", s.Addr, s.TLSAddr, s.Mechanism, s.User, s.CAFile)
	}
	if os.Getenv("PARTNERS_TEST_KAFKA_CLUSTER") != "" {
		kc := KafkaCluster(t) // may wait for a node another test restarts
		kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer kcancel()
		vs, err := kc.Admin().ApiVersions(kctx)
		if err != nil {
			t.Fatal(err)
		}
		vs.Each(func(v kadm.BrokerApiVersions) {
			t.Logf("server under test: Apache Kafka cluster node %d %s at %s", v.NodeID, v.VersionGuess(), kc.Brokers[v.NodeID-1])
		})
	}
	if os.Getenv("PARTNERS_TEST_CLICKHOUSE_CLUSTER") != "" {
		// Waiting for the cluster's lock (another package's test holds it)
		// can outlast ctx: ask the nodes with a deadline of their own.
		cc := ClickHouseCluster(t)
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		for n := range cc.Nodes {
			v, err := chdb.ServerVersion(cctx, cc.Conn(n+1))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("server under test: ClickHouse cluster %s node %d %s at %s", cc.Cluster, n+1, v, cc.Nodes[n])
		}
	}
}
