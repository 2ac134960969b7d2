package attribution_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// newClusterEnv is newEnv in cluster mode (clickhouse.cluster) on the
// loopback ClickHouse cluster: migrations ON CLUSTER, Replicated local
// tables on two shards (the first with two replicas), Distributed tables
// for every read and write.
func newClusterEnv(t *testing.T) (*env, *testenv.ClickHouseNodes) {
	t.Helper()
	cc := testenv.ClickHouseCluster(t)
	cfg := testenv.Config(t)
	cfg.ClickHouse.Addr = cc.Nodes
	cfg.ClickHouse.Cluster = cc.Cluster
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	brokers, cl := testenv.Kafka(t, cfg)
	conn := testenv.ClickHouse(t, cfg)
	return &env{cfg: cfg, brokers: brokers, cl: cl, conn: conn, names: namesOf(cfg), log: &testenv.LogBuffer{}}, cc
}

// localRows counts the rows of table_local on node n (its own replica).
func localRows(t *testing.T, e *env, cc *testenv.ClickHouseNodes, n int, table string) uint64 {
	t.Helper()
	var c uint64
	q := fmt.Sprintf("SELECT count() FROM %s.%s_local", e.cfg.ClickHouse.Database, table)
	if err := cc.Conn(n).QueryRow(context.Background(), q).Scan(&c); err != nil {
		t.Fatalf("node %d: %s: %v", n, q, err)
	}
	return c
}

// TestClusterOracle is TestOracle on the cluster, with replicas stopped:
// half the dataset, then the second replica of shard 01 stops and the rest
// arrives with every record published twice — the rollups and the raw
// tables equal the oracle to the cent with the replica down; it starts and
// catches up (its own tables hold what the first replica holds); then the
// first replica (the one that took the writes) stops, the topics are
// replayed from the start, and every figure, now read from the second
// replica, is still the oracle's.
func TestClusterOracle(t *testing.T) {
	e, cc := newClusterEnv(t)
	now := time.Now().UTC()
	d := oracleDataset(now, "c")
	want := expected(d, e, now, 7, 30, 90)
	if len(want) < 20 {
		t.Fatalf("dataset too small to mean anything: %d rows", len(want))
	}
	recs, err := d.Records(e.names)
	if err != nil {
		t.Fatal(err)
	}
	half := len(recs) / 2
	e.publish(t, recs[:half])
	var proc *attribution.Processor
	stop := e.start(t, nil, func(p *attribution.Processor) { proc = p })
	e.waitCaughtUp(t, 2*time.Minute)

	// Both shards hold data: the cluster is really sharded.
	for _, n := range []int{1, 3} {
		if c := localRows(t, e, cc, n, "touchpoints"); c == 0 {
			t.Fatalf("node %d holds no touchpoints: not sharded", n)
		}
	}

	cc.StopNode(2)
	e.publish(t, recs[half:])
	e.publishDataset(t, d) // every record again: duplicates
	e.waitCaughtUp(t, 2*time.Minute)
	diff(t, "rollups vs oracle, replica 2 down", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw tables vs oracle, replica 2 down", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)

	cc.StartNode(2)
	for _, table := range []string{"roi_daily", "touchpoints", "conversions", "attributions", "costs", "touchpoints_by_user"} {
		testenv.Eventually(t, 2*time.Minute, "replica 2 caught up on "+table, func() bool {
			return localRows(t, e, cc, 2, table) == localRows(t, e, cc, 1, table)
		})
	}

	stop()
	cc.StopNode(1)
	e.replayFromStart(t)
	e.start(t, nil, func(p *attribution.Processor) { proc = p })
	e.waitCaughtUp(t, 2*time.Minute)
	diff(t, "rollups vs oracle after a replay, replica 1 down", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw tables vs oracle after a replay, replica 1 down", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	from, to := roi.Query{Window: 90, AsOf: now}.Range()
	if bad, err := proc.Reconcile(context.Background(), from, to); err != nil || len(bad) != 0 {
		t.Errorf("reconciliation: %v %v", bad, err)
	}
	cc.StartNode(1)
	t.Logf("%d expected ROI rows matched on the cluster with either replica of shard 01 down", len(want))
}
