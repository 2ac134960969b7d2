package webhooks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestDeliveryLogOnCluster runs the delivery log in ClickHouse cluster mode
// (clickhouse.cluster: Replicated local tables on two shards, the first
// with two replicas, Distributed tables for reads and writes): every
// attempt on partners.deliveries.v1 is in webhook_deliveries once, and the
// per-minute rollup (a materialized view per shard, merged by the
// Distributed read) agrees with it per tenant — with the second replica of
// shard 01 stopped while deliveries go on, then, once it caught up, with
// the first stopped.
func TestDeliveryLogOnCluster(t *testing.T) {
	cc := testenv.ClickHouseCluster(t)
	e := newEnv(t, true, func(c *config.Config) {
		c.ClickHouse.Addr = cc.Nodes
		c.ClickHouse.Cluster = cc.Cluster
		c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 3, BackoffBase: 200 * time.Millisecond, BackoffMultiplier: 2}
	})
	healthy := newReceiver(t, always(200))
	flaky := newReceiver(t, func(n int) (int, map[string]string, bool) {
		if n%3 == 1 {
			return 503, nil, false
		}
		return 200, nil, false
	})
	var tenants []string
	// eight tenants: the log is sharded by tenant, and some land on each
	// shard (all on one: a chance of 1 in 128)
	rcs := []*receiver{healthy, flaky}
	for range 6 {
		rcs = append(rcs, newReceiver(t, always(200)))
	}
	for i, rc := range rcs {
		tenants = append(tenants, e.tenant(fmt.Sprintf("t-cluster-%d", i), rc).Tenant.ID)
	}
	e.start()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// check waits until ClickHouse holds every attempt of the topic, then
	// compares the raw log and the rollup per tenant.
	published := 0
	check := func(what string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, what+": every event delivered to every tenant", func() bool {
			delivered := map[string]int{}
			for _, a := range e.attempts() {
				if a.Outcome == "delivered" {
					delivered[a.TenantID]++
				}
			}
			for _, tn := range tenants {
				if delivered[tn] < published {
					return false
				}
			}
			return true
		})
		var want int
		testenv.Eventually(t, 90*time.Second, what+": every attempt in webhook_deliveries", func() bool {
			want = len(e.attempts())
			var got uint64
			if err := e.ch.QueryRow(ctx, "SELECT uniqExact(id) FROM webhook_deliveries").Scan(&got); err != nil {
				t.Logf("%s: %v", what, err)
				return false
			}
			return int(got) == want
		})
		byTenant := map[string]uint64{}
		for _, a := range e.attempts() {
			byTenant[a.TenantID]++
		}
		for _, tn := range tenants {
			var raw, rolled uint64
			if err := e.ch.QueryRow(ctx, "SELECT uniqExact(id) FROM webhook_deliveries WHERE tenant_id = ?", tn).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if err := e.ch.QueryRow(ctx, "SELECT toUInt64(sum(attempts)) FROM webhook_delivery_stats_per_minute WHERE tenant_id = ?", tn).Scan(&rolled); err != nil {
				t.Fatal(err)
			}
			if raw != byTenant[tn] || rolled != byTenant[tn] {
				t.Fatalf("%s: tenant %s: %d attempts on the topic, %d in webhook_deliveries, %d in the rollup", what, tn, byTenant[tn], raw, rolled)
			}
		}
		t.Logf("%s: %d attempts, log and rollup agree for %d tenants", what, want, len(tenants))
	}
	events := func(from, n int) {
		var evs []schemas.Event
		for i := from; i < from+n; i++ {
			evs = append(evs, e.event(fmt.Sprintf("evt_cluster_%04d", i), "order.created", `{}`))
		}
		e.publish(evs...)
		published += n
	}

	events(0, 40)
	check("all nodes up")
	var shard1, shard2 uint64
	q := fmt.Sprintf("SELECT count() FROM %s.webhook_deliveries_local", e.cfg.ClickHouse.Database)
	if err := cc.Conn(1).QueryRow(ctx, q).Scan(&shard1); err != nil {
		t.Fatal(err)
	}
	if err := cc.Conn(3).QueryRow(ctx, q).Scan(&shard2); err != nil {
		t.Fatal(err)
	}
	if shard1 == 0 || shard2 == 0 {
		t.Fatalf("attempts per shard %d / %d: the log is not sharded", shard1, shard2)
	}

	cc.StopNode(2)
	events(40, 40)
	check("replica 2 of shard 01 down")
	cc.StartNode(2)
	testenv.Eventually(t, 2*time.Minute, "replica 2 caught up", func() bool {
		var a, b uint64
		_ = cc.Conn(1).QueryRow(ctx, q).Scan(&a)
		_ = cc.Conn(2).QueryRow(ctx, q).Scan(&b)
		return a == b && a > 0
	})
	cc.StopNode(1)
	events(80, 20)
	check("replica 1 of shard 01 down")
	cc.StartNode(1)
}
