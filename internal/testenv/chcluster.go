package testenv

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouseClusterName is the cluster's name in the servers' <remote_servers>
// (ON CLUSTER partners, Distributed(partners, db, table, key)).
const ClickHouseClusterName = "partners"

// ClickHouseNodes is the ClickHouse 18.16 cluster of
// deploy/local/clickhouse-cluster.sh, coordinated by ZooKeeper: node 1 and
// node 2 are the two replicas of shard 01, node 3 is shard 02, every shard
// with internal_replication. Each node has the macros {shard} (01, 02) and
// {replica} (node1..node3), so one statement creates the replicated tables
// everywhere:
//
//	CREATE DATABASE IF NOT EXISTS db ON CLUSTER partners
//	CREATE TABLE db.t ON CLUSTER partners (...)
//	    ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}') ...
//	CREATE TABLE db.t_all ON CLUSTER partners AS db.t ENGINE = Distributed(partners, db, t, rand())
//
// StopNode, KillNode and StartNode act on the real servers; whatever a test
// leaves down is started again at its cleanup.
type ClickHouseNodes struct {
	// Nodes are the native-protocol addresses, node n at index n-1.
	Nodes []string
	// Cluster is the cluster name, ClickHouseClusterName.
	Cluster string
	// Shards lists each shard's node numbers: [[1 2] [3]].
	Shards [][]int

	t    testing.TB
	mu   sync.Mutex
	down map[int]bool
}

// ClickHouseCluster returns the cluster at PARTNERS_TEST_CLICKHOUSE_CLUSTER
// once every node answers. It skips the test when the variable is unset and
// fails it when a node does not answer.
func ClickHouseCluster(t testing.TB) *ClickHouseNodes {
	t.Helper()
	nodes := stackAddrs(t, "PARTNERS_TEST_CLICKHOUSE_CLUSTER", "ClickHouse cluster")
	if len(nodes) != 3 {
		t.Fatalf("PARTNERS_TEST_CLICKHOUSE_CLUSTER=%v: want the three node addresses", nodes)
	}
	c := &ClickHouseNodes{Nodes: nodes, Cluster: ClickHouseClusterName, Shards: [][]int{{1, 2}, {3}}, t: t, down: map[int]bool{}}
	c.lockCluster()
	t.Cleanup(c.restoreDown)
	for n := 1; n <= 3; n++ {
		// another package's fault test may have a node down for a while
		c.waitUp(n, 2*time.Minute)
	}
	return c
}

// clusterLockWait bounds the wait for another package's test on the cluster.
const clusterLockWait = 15 * time.Minute

// lockCluster holds an exclusive flock, named after the cluster's first
// port, until the test ends (cleanups run last to first: it is released
// after every node the test stopped is back). Tests of different packages
// take turns on the cluster: one test's StopNode must not meet another's
// ON CLUSTER DDL (which waits for every node, up to the servers'
// distributed_ddl_task_timeout) or its assumption that both replicas of a
// shard are up. The kernel releases the lock when the process dies.
func (c *ClickHouseNodes) lockCluster() {
	c.t.Helper()
	name := filepath.Join(os.TempDir(), "partners-clickhouse-cluster-"+strings.NewReplacer(":", "_", ".", "_").Replace(c.Nodes[0])+".lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		c.t.Fatalf("clickhouse cluster lock: %v", err)
	}
	deadline := time.Now().Add(clusterLockWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			c.t.Fatalf("clickhouse cluster lock %s: %v (another test held it for more than %v?)", name, err, clusterLockWait)
		}
		if !logged {
			c.t.Logf("clickhouse cluster: another test is using it; waiting for its turn (%s)", name)
			logged = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Cleanup(func() { f.Close() })
}

// Conn opens a connection to node n (closed at cleanup).
func (c *ClickHouseNodes) Conn(n int) driver.Conn {
	c.t.Helper()
	conn, err := c.open(n)
	if err != nil {
		c.t.Fatalf("clickhouse cluster node %d (%s): %v", n, c.addr(n), err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// StopNode shuts node n down (SIGTERM, waits for the process to exit).
func (c *ClickHouseNodes) StopNode(n int) {
	c.t.Helper()
	c.node(n, "stop-node")
	c.mark(n, true)
}

// KillNode sends SIGKILL to node n's server.
func (c *ClickHouseNodes) KillNode(n int) {
	c.t.Helper()
	c.node(n, "kill-node")
	c.mark(n, true)
}

// StartNode starts node n on its data and returns once it answers queries.
// Its replicated tables reconnect to ZooKeeper and fetch what they missed in
// the background.
func (c *ClickHouseNodes) StartNode(n int) {
	c.t.Helper()
	c.node(n, "start-node")
	c.waitUp(n, time.Minute)
	c.mark(n, false)
}

func (c *ClickHouseNodes) addr(n int) string {
	if n < 1 || n > len(c.Nodes) {
		c.t.Fatalf("clickhouse cluster node %d: want 1..%d", n, len(c.Nodes))
	}
	return c.Nodes[n-1]
}

func (c *ClickHouseNodes) open(n int) (driver.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{c.addr(n)},
		Protocol:    clickhouse.Native,
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *ClickHouseNodes) waitUp(n int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		conn, err := c.open(n)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("clickhouse cluster node %d at %s does not answer after %v: %v (make test starts it with deploy/local/clickhouse-cluster.sh start)",
				n, c.addr(n), timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *ClickHouseNodes) node(n int, cmd string) {
	c.t.Helper()
	c.addr(n)
	runScript(c.t, 2*time.Minute, c.scriptEnv(), "clickhouse-cluster.sh", cmd, strconv.Itoa(n))
}

// scriptEnv makes the script use the ports the test was given.
func (c *ClickHouseNodes) scriptEnv() []string {
	_, p, err := net.SplitHostPort(c.Nodes[0])
	if err != nil {
		return nil
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil
	}
	return []string{"CLICKHOUSE_CLUSTER_TCP_BASE=" + strconv.Itoa(port-1)}
}

func (c *ClickHouseNodes) mark(n int, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if down {
		c.down[n] = true
	} else {
		delete(c.down, n)
	}
}

func (c *ClickHouseNodes) restoreDown() {
	c.mu.Lock()
	var nodes []int
	for n := range c.down {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		c.StartNode(n)
	}
}
