package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// TestClickHouseCluster proves on the loopback 18.16 cluster what cluster
// mode builds on: ON CLUSTER DDL (after CREATE DATABASE ... ON CLUSTER — 18.16
// does not create a missing database), ReplicatedMergeTree with the {shard}
// and {replica} macros, a Distributed table over both shards, inserts through
// it and complete reads through it from every node, also with one replica of
// shard 01 stopped, and the stopped replica catching up when it returns.
func TestClickHouseCluster(t *testing.T) {
	cc := ClickHouseCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := "partners_cluster_" + RandomID()
	n1, n2, n3 := cc.Conn(1), cc.Conn(2), cc.Conn(3)
	on := " ON CLUSTER " + cc.Cluster
	local := fmt.Sprintf(`CREATE TABLE %s.events%s (id String, partner String, cents Int64)
		ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%s.events', '{replica}') ORDER BY id`, db, on, db)

	// 18.16: ON CLUSTER into a database that does not exist fails on every host
	err := n1.Exec(ctx, local)
	if err == nil || !strings.Contains(err.Error(), "doesn't exist") {
		t.Fatalf("CREATE TABLE ON CLUSTER before the database exists: %v, want \"Database ... doesn't exist\"", err)
	}

	mustExec(t, ctx, n1, "CREATE DATABASE IF NOT EXISTS "+db+on)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n3.Exec(ctx, "DROP DATABASE IF EXISTS "+db+on); err != nil {
			t.Logf("drop %s: %v", db, err)
		}
	})
	mustExec(t, ctx, n1, local)
	mustExec(t, ctx, n1, fmt.Sprintf("CREATE TABLE %s.events_all%s AS %s.events ENGINE = Distributed(%s, %s, events, rand())", db, on, db, cc.Cluster, db))

	// synchronous distributed inserts, so the rows are in the shards when Send returns
	syncInsert := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"insert_distributed_sync": 1}))
	insert := func(conn driver.Conn, from, to int) {
		t.Helper()
		b, err := conn.PrepareBatch(syncInsert, fmt.Sprintf("INSERT INTO %s.events_all (id, partner, cents)", db))
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			if err := b.Append(fmt.Sprintf("e%05d", i), fmt.Sprintf("p%d", i%7), int64(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("insert through Distributed: %v", err)
		}
	}
	// total: rows, distinct ids and cents of ids [0, n)
	want := func(n int) [3]uint64 { return [3]uint64{uint64(n), uint64(n), uint64(n * (n - 1) / 2)} }
	through := func(conn driver.Conn) [3]uint64 {
		t.Helper()
		var c, u uint64
		var s int64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(id), sum(cents) FROM %s.events_all", db)).Scan(&c, &u, &s); err != nil {
			t.Fatalf("read through Distributed: %v", err)
		}
		return [3]uint64{c, u, uint64(s)}
	}
	localCount := func(conn driver.Conn) uint64 {
		t.Helper()
		var c uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.events", db)).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	checkReads := func(what string, total int, conns map[int]driver.Conn) {
		t.Helper()
		for n, conn := range conns {
			if got := through(conn); got != want(total) {
				t.Fatalf("%s: read through node %d = %v (rows, ids, cents), want %v", what, n, got, want(total))
			}
		}
	}

	insert(n3, 0, 1000)
	// synchronous: one replica of each shard has its rows as soon as the insert returns
	s1, s2 := max(localCount(n1), localCount(n2)), localCount(n3)
	if s1 == 0 || s2 == 0 || s1+s2 != 1000 {
		t.Fatalf("rows per shard %d + %d right after the insert, want both > 0 and 1000 in all", s1, s2)
	}
	Eventually(t, time.Minute, "shard 01's replicas equal", func() bool { return localCount(n1) == localCount(n2) })
	checkReads("all nodes up", 1000, map[int]driver.Conn{1: n1, 2: n2, 3: n3})

	cc.StopNode(1)
	checkReads("node 1 stopped", 1000, map[int]driver.Conn{2: n2, 3: n3})
	insert(n3, 1000, 1200) // shard 01's rows go to the replica that is up
	checkReads("node 1 stopped, after more inserts", 1200, map[int]driver.Conn{2: n2, 3: n3})

	// ON CLUSTER DDL waits for every host: with one down it times out (the
	// statement is queued and runs on the host when it returns).
	// clickhouse-go sends a pre-19.x server every setting as an unsigned
	// varint, but 18.16 reads Int64 settings such as this one as zig-zag
	// signed varints: 2n arrives as n (3 sent would arrive as -2: no timeout).
	ddl := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"distributed_ddl_task_timeout": 2 * 3}))
	err = n2.Exec(ddl, fmt.Sprintf("CREATE TABLE %s.later%s (id String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%s.later', '{replica}') ORDER BY id", db, on, db))
	if err == nil || !strings.Contains(err.Error(), "distributed_ddl_task_timeout") {
		t.Fatalf("ON CLUSTER DDL with node 1 down: %v, want a distributed_ddl_task_timeout error", err)
	}

	cc.StartNode(1)
	n1 = cc.Conn(1)
	Eventually(t, time.Minute, "node 1 catching up with node 2", func() bool { return localCount(n1) == localCount(n2) })
	checkReads("node 1 back", 1200, map[int]driver.Conn{1: n1, 2: n2, 3: n3})
	Eventually(t, time.Minute, "the queued DDL applied on node 1", func() bool {
		var ok uint8
		err := n1.QueryRow(ctx, fmt.Sprintf("EXISTS TABLE %s.later", db)).Scan(&ok)
		return err == nil && ok == 1
	})
}

func mustExec(t *testing.T, ctx context.Context, conn driver.Conn, q string) {
	t.Helper()
	if err := conn.Exec(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
