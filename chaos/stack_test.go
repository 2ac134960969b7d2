package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
)

// The servers a scenario runs on. Kafka is the shared three-broker cluster
// (killed one node at a time through testenv.KafkaCluster, which restores
// what a test leaves down) or a single broker of the suite's own; ClickHouse
// is the shared server (a private database per scenario) or, for the
// scenario that restarts it, a server of the suite's own. The shared single
// broker on 9092 and the shared ClickHouse are never stopped.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// partnersBinary builds bin/partners once per test binary, from this tree.
func partnersBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "partners-chaos-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "partners")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/partners")
		cmd.Dir = testenv.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/partners: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// script runs deploy/local/<name> with env and returns its output.
func script(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(testenv.RepoRoot(t), "deploy", "local", name)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/local/%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// kafkaTarget is the Kafka a scenario runs on.
type kafkaTarget interface {
	Name() string
	Brokers() []string
	// Env is the processes' replication settings for this Kafka.
	Env() []string
}

// clusterKafka is the shared three-broker KRaft cluster (RF 3, min ISR 2).
type clusterKafka struct{ *testenv.KafkaNodes }

func (c clusterKafka) Name() string      { return "cluster (3 brokers, RF 3, min ISR 2)" }
func (c clusterKafka) Brokers() []string { return c.KafkaNodes.Brokers }
func (c clusterKafka) Env() []string {
	return []string{"PARTNERS_KAFKA_REPLICATION=3", "PARTNERS_KAFKA_MIN_ISR=2"}
}

// singleKafka is a single KRaft broker of the suite's own (deploy/local/
// kafka.sh with its own state directory and ports, no SASL), so it can be
// restarted while others' tests use the shared one.
type singleKafka struct {
	env  []string
	addr string
}

// startSingleKafka starts the broker with its state in dir (its
// server.log is kept with the run's logs; the data is removed at cleanup).
func startSingleKafka(t *testing.T, dir string) *singleKafka {
	t.Helper()
	port, ctrl := testenv.FreePort(t), testenv.FreePort(t)
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(dir, "data")) })
	k := &singleKafka{addr: "127.0.0.1:" + strconv.Itoa(port), env: []string{
		"PARTNERS_KAFKA_DIR=" + dir,
		"KAFKA_PORT=" + strconv.Itoa(port),
		"KAFKA_CONTROLLER_PORT=" + strconv.Itoa(ctrl),
		"KAFKA_SASL=off",
		"KAFKA_NAME=kafka-chaos",
		"KAFKA_HEAP=384m",
		// a SIGKILLed broker's restart is bounded, not timed (loaded cores)
		"KAFKA_WAIT_TIMEOUT=300",
		// fewer internal partitions than the 50 default: a SIGKILLed broker
		// recovers every log on restart, and 2 shared cores make that slow
		"KAFKA_EXTRA_CONFIG=offsets.topic.num.partitions=6\ntransaction.state.log.num.partitions=6",
	}}
	t.Logf("single broker: %s", script(t, 6*time.Minute, k.env, "kafka.sh", "start"))
	t.Cleanup(func() { script(t, 2*time.Minute, k.env, "kafka.sh", "stop") })
	return k
}

func (k *singleKafka) Name() string      { return "single broker (own, restartable)" }
func (k *singleKafka) Brokers() []string { return []string{k.addr} }
func (k *singleKafka) Env() []string {
	return []string{"PARTNERS_KAFKA_REPLICATION=1", "PARTNERS_KAFKA_MIN_ISR=1"}
}

// Kill SIGKILLs the broker; Start starts it on its data and waits until it
// answers. t is the calling (scenario's) test.
func (k *singleKafka) Kill(t *testing.T) {
	t.Logf("%s", script(t, time.Minute, k.env, "kafka.sh", "kill"))
}
func (k *singleKafka) Start(t *testing.T) {
	t.Logf("%s", script(t, 6*time.Minute, k.env, "kafka.sh", "start"))
}

// ownClickHouse is a ClickHouse server of the suite's own (deploy/local/
// clickhouse.sh, own directory and ports), killed and restarted by the
// ClickHouse scenario.
type ownClickHouse struct {
	t    *testing.T
	env  []string
	addr string
}

func startOwnClickHouse(t *testing.T) *ownClickHouse {
	t.Helper()
	tcp, http := testenv.FreePort(t), testenv.FreePort(t)
	c := &ownClickHouse{t: t, addr: "127.0.0.1:" + strconv.Itoa(tcp), env: []string{
		"PARTNERS_CLICKHOUSE_DIR=" + t.TempDir(),
		"CLICKHOUSE_TCP_PORT=" + strconv.Itoa(tcp),
		"CLICKHOUSE_HTTP_PORT=" + strconv.Itoa(http),
	}}
	t.Logf("own clickhouse: %s", script(t, 2*time.Minute, c.env, "clickhouse.sh", "start"))
	t.Cleanup(func() { script(t, time.Minute, c.env, "clickhouse.sh", "stop") })
	return c
}

func (c *ownClickHouse) Kill() {
	c.t.Logf("%s", script(c.t, time.Minute, c.env, "clickhouse.sh", "kill"))
}
func (c *ownClickHouse) Start() {
	c.t.Logf("%s", script(c.t, 2*time.Minute, c.env, "clickhouse.sh", "start"))
}
