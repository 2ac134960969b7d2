package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KafkaNodes is the three-broker KRaft cluster of
// deploy/local/kafka-cluster.sh: every node a combined broker+controller
// voter, topics created with replication factor 3 and min.insync.replicas 2
// by default. Node n (1..3) has node id n and listens on Brokers[n-1].
//
// Kill, Stop and Start act on the real processes (SIGKILL, controlled
// shutdown, start on the same data). Whatever a test leaves down is started
// again at its cleanup, so the next test finds three brokers. The cluster is
// shared by every test binary of a run: a test that kills a node should
// expect other packages' clients to ride through it (which RF 3 / min ISR 2
// lets them do for one node at a time).
type KafkaNodes struct {
	// Brokers are the seed addresses, node n at index n-1.
	Brokers []string

	t    testing.TB
	cl   *kgo.Client
	adm  *kadm.Client
	mu   sync.Mutex
	down map[int]bool
	// fault is the cluster-wide fault lock while this test has nodes down
	// (see lockFault) or holds it (Exclusive).
	fault     *os.File
	exclusive bool
}

// KafkaCluster returns the cluster at PARTNERS_TEST_KAFKA_CLUSTER once all
// three brokers are registered. It skips the test when the variable is unset
// and fails it when the cluster does not answer.
func KafkaCluster(t testing.TB) *KafkaNodes {
	t.Helper()
	brokers := stackAddrs(t, "PARTNERS_TEST_KAFKA_CLUSTER", "three-broker Kafka cluster")
	clusterUsed.Store(true) // CleanupTopics deletes the tests' topics here too
	if len(brokers) != 3 {
		t.Fatalf("PARTNERS_TEST_KAFKA_CLUSTER=%v: want the three node addresses", brokers)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	c := &KafkaNodes{Brokers: brokers, t: t, cl: cl, adm: kadm.NewClient(cl), down: map[int]bool{}}
	t.Cleanup(func() {
		c.restoreDown()
		c.mu.Lock()
		c.exclusive = false
		c.mu.Unlock()
		c.unlockFault()
		cl.Close()
	})
	// another package's fault test may have a node down for a while
	c.waitBrokers(2*time.Minute, func(ids map[int32]bool) bool { return len(ids) == 3 }, "all three brokers registered")
	logKafkaVersion(t, brokers, "Apache Kafka cluster")
	return c
}

// Client returns a franz-go client seeded with every broker (plus opts),
// closed at cleanup.
func (c *KafkaNodes) Client(opts ...kgo.Opt) *kgo.Client {
	c.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

// Admin is an admin client on the cluster (closed at cleanup).
func (c *KafkaNodes) Admin() *kadm.Client { return c.adm }

// Kill sends SIGKILL to node n's JVM and returns once the process is gone
// (the controller fences the broker about broker.session.timeout.ms, 9 s,
// later; leaders move then). Kill and Stop first take the cluster's fault
// lock, so tests of different packages never have two nodes down at once.
func (c *KafkaNodes) Kill(n int) {
	c.t.Helper()
	c.lockFault()
	c.node(n, "kill")
	c.mark(n, true)
}

// Stop shuts node n down in a controlled way (leaders move first).
func (c *KafkaNodes) Stop(n int) {
	c.t.Helper()
	c.lockFault()
	c.node(n, "stop-node")
	c.mark(n, true)
}

// faultLockWait bounds the wait for another test's fault to end.
const faultLockWait = 10 * time.Minute

// lockFault takes the cluster-wide fault lock: an exclusive flock on a file
// named after the cluster's first port, held from the first node this test
// takes down until every node it took down is back (or the process dies:
// the kernel releases it). With RF 3 and min ISR 2 one node may be down;
// two nodes down (two packages' fault tests at once) would refuse every
// write of every test on the cluster.
func (c *KafkaNodes) lockFault() {
	c.t.Helper()
	c.mu.Lock()
	held := c.fault != nil
	c.mu.Unlock()
	if held {
		return // this test already has a node down; a second is its own choice
	}
	name := filepath.Join(os.TempDir(), "partners-kafka-cluster-"+strings.NewReplacer(":", "_", ".", "_").Replace(c.Brokers[0])+".fault.lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		c.t.Fatalf("kafka cluster fault lock: %v", err)
	}
	deadline := time.Now().Add(faultLockWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			c.t.Fatalf("kafka cluster fault lock %s: %v", name, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			c.t.Fatalf("kafka cluster fault lock %s: another test kept a node down for more than %v", name, faultLockWait)
		}
		if !logged {
			c.t.Logf("kafka cluster: another test has a node down; waiting for it to come back before taking one down (%s)", name)
			logged = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.mu.Lock()
	c.fault = f
	c.mu.Unlock()
}

// Exclusive takes the cluster's fault lock and holds it until the test
// ends, whether or not it takes nodes down: no other test's Kill or Stop
// runs meanwhile (a fault suite measuring the effects of its own faults).
//
// It returns once all three brokers are registered: a test that creates
// replication-factor-3 topics, or takes a node down itself, calls it first,
// so another package's fault (a node down between KafkaCluster and the
// topic's creation: INVALID_REPLICATION_FACTOR) cannot reach it.
func (c *KafkaNodes) Exclusive() {
	c.t.Helper()
	c.lockFault()
	c.mu.Lock()
	c.exclusive = true
	c.mu.Unlock()
	c.waitBrokers(2*time.Minute, func(ids map[int32]bool) bool { return len(ids) == 3 }, "all three brokers registered")
}

// unlockFault releases the fault lock once no node of this test is down
// (and it does not hold the lock for its whole run).
func (c *KafkaNodes) unlockFault() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fault == nil || len(c.down) > 0 || c.exclusive {
		return
	}
	_ = syscall.Flock(int(c.fault.Fd()), syscall.LOCK_UN)
	c.fault.Close()
	c.fault = nil
}

// Start starts node n on its data and returns once it answers and is
// registered (unfenced) with the controller. Its replicas may still be
// catching up: WaitInSync waits for that.
func (c *KafkaNodes) Start(n int) {
	c.t.Helper()
	c.node(n, "start-node")
	c.waitBrokers(2*time.Minute, func(ids map[int32]bool) bool { return ids[int32(n)] }, fmt.Sprintf("broker %d registered", n))
	c.mark(n, false)
	c.unlockFault()
}

// Leader returns the node id (1..3) that leads topic's partition, or -1 when
// the partition has no leader.
func (c *KafkaNodes) Leader(topic string, partition int32) int32 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := c.metadata(ctx, topic)
	if err != nil {
		c.t.Fatalf("metadata of %s: %v", topic, err)
	}
	for _, tp := range md.Topics {
		if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
			c.t.Fatalf("topic %s: %v", topic, err)
		}
		for _, p := range tp.Partitions {
			if p.Partition == partition {
				return p.Leader
			}
		}
	}
	c.t.Fatalf("topic %s has no partition %d", topic, partition)
	return -1
}

// metadata asks a broker for the current metadata of topics (none: brokers
// only). kadm's metadata calls answer from the client's cache, which lags a
// restart or a leader change by up to the metadata max age.
func (c *KafkaNodes) metadata(ctx context.Context, topics ...string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	for _, tp := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(tp)
		req.Topics = append(req.Topics, rt)
	}
	return req.RequestWith(ctx, c.cl)
}

// WaitInSync waits until every partition of topics has a leader and all its
// replicas in the ISR (after a restart, before the next fault).
func (c *KafkaNodes) WaitInSync(timeout time.Duration, topics ...string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		md, err := c.metadata(ctx, topics...)
		cancel()
		last = ""
		if err != nil {
			last = err.Error()
		} else {
			for _, tp := range md.Topics {
				if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
					last = fmt.Sprintf("%s: %v", *tp.Topic, err)
				}
				for _, p := range tp.Partitions {
					if p.Leader < 0 || len(p.ISR) != len(p.Replicas) {
						last = fmt.Sprintf("%s/%d leader %d replicas %v isr %v", *tp.Topic, p.Partition, p.Leader, p.Replicas, p.ISR)
					}
				}
			}
		}
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("partitions not in sync after %v: %s", timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *KafkaNodes) node(n int, cmd string) {
	c.t.Helper()
	if n < 1 || n > 3 {
		c.t.Fatalf("kafka cluster node %d: want 1..3", n)
	}
	// A restarted node replays the metadata log and recovers every
	// partition of every test's topics: on 2 loaded cores that took more
	// than the script's default 120 s. Starting is not timed, only bounded.
	env := append(c.scriptEnv(), "KAFKA_WAIT_TIMEOUT=300")
	runScript(c.t, 6*time.Minute, env, "kafka-cluster.sh", cmd, strconv.Itoa(n))
}

// scriptEnv makes the script use the ports the test was given.
func (c *KafkaNodes) scriptEnv() []string {
	_, p, err := net.SplitHostPort(c.Brokers[0])
	if err != nil {
		return nil
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil
	}
	return []string{"KAFKA_CLUSTER_PORT_BASE=" + strconv.Itoa(port-1)}
}

func (c *KafkaNodes) mark(n int, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if down {
		c.down[n] = true
	} else {
		delete(c.down, n)
	}
}

// restoreDown starts the nodes the test left down.
func (c *KafkaNodes) restoreDown() {
	c.mu.Lock()
	var nodes []int
	for n := range c.down {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		c.Start(n)
	}
}

// waitBrokers polls the registered (unfenced) brokers until ok says so.
func (c *KafkaNodes) waitBrokers(timeout time.Duration, ok func(map[int32]bool) bool, what string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	// no answer at all fails sooner than a node that is still coming back
	silentUntil := time.Now().Add(min(timeout, 30*time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		md, err := c.metadata(ctx)
		cancel()
		ids := map[int32]bool{}
		if err == nil {
			for _, b := range md.Brokers {
				ids[b.NodeID] = true
			}
			if ok(ids) {
				return
			}
			silentUntil = deadline
		}
		if time.Now().After(deadline) || (err != nil && time.Now().After(silentUntil)) {
			c.t.Fatalf("kafka cluster %v: still not %s after %v (registered %v, err %v); make test starts it with deploy/local/kafka-cluster.sh start",
				c.Brokers, what, time.Since(deadline.Add(-timeout)).Round(time.Second), ids, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
