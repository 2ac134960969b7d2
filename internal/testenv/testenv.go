// Package testenv gives tests the real servers the project runs against:
// Apache Kafka when PARTNERS_TEST_KAFKA names brokers (make test starts one),
// otherwise an in-process kfake broker; ClickHouse at PARTNERS_TEST_CLICKHOUSE
// (default 127.0.0.1:9000). Every test gets its own topic prefix and
// database, removed at cleanup.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
)

// Config returns a valid configuration for tests: a random topic prefix, a
// random ClickHouse database name, loopback allowed for webhooks, short
// retry delays.
func Config(t testing.TB) *config.Config {
	t.Helper()
	cfg := config.Default()
	id := RandomID()
	cfg.Partner.Keys.Pepper = "test-pepper-" + id + "-0123456789"
	cfg.Admin.Token = "test-admin-token-" + id
	cfg.Kafka.TopicPrefix = "t" + id + "."
	cfg.Kafka.GroupPrefix = "partners"
	cfg.ClickHouse.Database = "partners_test_" + id
	cfg.ClickHouse.Addr = []string{ClickHouseAddr()}
	// Test receivers listen on random loopback ports (the SSRF guard
	// wants a port with every private address).
	cfg.Partner.Webhooks.AllowPrivate = []string{"127.0.0.1/32:1024-65535", "[::1]:1024-65535"}
	cfg.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 3, BackoffBase: 200 * time.Millisecond, BackoffMultiplier: 2}
	cfg.Partner.Webhooks.Timeouts = config.Timeouts{Connect: time.Second, Total: 2 * time.Second}
	cfg.Partner.Attribution.Batch = config.Batch{Size: 500, Linger: 200 * time.Millisecond}
	cfg.Listeners = config.Listeners{Admin: "127.0.0.1:0", XDS: "127.0.0.1:0", ExtAuthz: "127.0.0.1:0"}
	cfg.Edge.Spool.Dir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	CleanupTopics(t, cfg.Kafka.TopicPrefix)
	return &cfg
}

// CleanupTopics deletes, when the test ends (after the cleanups registered
// later: the processes under test are stopped by then), every topic of the
// real test broker (PARTNERS_TEST_KAFKA) whose name starts with prefix,
// such as the topics the processes under test created themselves, and the
// same on the three-broker cluster once a test of the binary has used it
// (KafkaCluster). A failure is only logged: it leaves topics behind,
// nothing else. Nothing happens on kfake.
func CleanupTopics(t testing.TB, prefix string) {
	t.Helper()
	if !RealKafka() || prefix == "" {
		return
	}
	t.Cleanup(func() {
		deleteTopics(t, strings.Split(os.Getenv("PARTNERS_TEST_KAFKA"), ","), prefix)
		if clusterUsed.Load() {
			deleteTopics(t, strings.Split(os.Getenv("PARTNERS_TEST_KAFKA_CLUSTER"), ","), prefix)
		}
	})
}

// clusterUsed: a test of this binary called KafkaCluster, so tests may
// have topics on the cluster.
var clusterUsed atomic.Bool

// deleteTopics deletes prefix's topics on brokers.
func deleteTopics(t testing.TB, brokers []string, prefix string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Logf("topics of prefix %s on %v not listed for deletion: %v", prefix, brokers, err)
		return
	}
	var names []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	if _, err := adm.DeleteTopics(ctx, names...); err != nil {
		t.Logf("%d topics of prefix %s on %v not deleted: %v", len(names), prefix, brokers, err)
	}
}

// RandomID returns 8 random hex characters.
func RandomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var (
	embeddedOnce sync.Once
	embedded     *kafka.Embedded
	embeddedErr  error
)

// RealKafka reports whether tests run against a real broker.
func RealKafka() bool { return os.Getenv("PARTNERS_TEST_KAFKA") != "" }

// Brokers returns the brokers tests use: PARTNERS_TEST_KAFKA, or a kfake
// broker shared by the package's tests. It logs which, with the version.
func Brokers(t testing.TB) []string {
	t.Helper()
	var brokers []string
	if env := os.Getenv("PARTNERS_TEST_KAFKA"); env != "" {
		brokers = strings.Split(env, ",")
	} else {
		embeddedOnce.Do(func() { embedded, embeddedErr = kafka.StartEmbedded("", 0, slog.New(slog.DiscardHandler)) })
		if embeddedErr != nil {
			t.Fatal(embeddedErr)
		}
		brokers = embedded.Addrs()
	}
	kind := "kfake (embedded)"
	if RealKafka() {
		kind = "Apache Kafka"
	}
	logKafkaVersion(t, brokers, kind)
	return brokers
}

var versionLogged sync.Map

func logKafkaVersion(t testing.TB, brokers []string, kind string) {
	if _, done := versionLogged.LoadOrStore(strings.Join(brokers, ","), true); done {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		t.Fatalf("kafka at %v unreachable: %v", brokers, err)
	}
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			// A node another test stopped a moment ago: nothing to guess from.
			t.Logf("kafka: %s at %v, node %d: %v", kind, brokers, v.NodeID, v.Err)
			return
		}
		t.Logf("kafka: %s at %v, version guess %s", kind, brokers, v.VersionGuess())
	})
}

// Kafka returns a client on the test brokers with the topics of cfg created,
// and deletes those topics at cleanup.
func Kafka(t testing.TB, cfg *config.Config, opts ...kgo.Opt) ([]string, *kgo.Client) {
	t.Helper()
	brokers := Brokers(t)
	cl, err := kafka.NewClient(cfg.Kafka, brokers, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var names []string
		for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
			names = append(names, s.Name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(ctx, names...)
		cl.Close()
	})
	return brokers, cl
}

// ClickHouseAddr is the test ClickHouse address.
func ClickHouseAddr() string {
	if a := os.Getenv("PARTNERS_TEST_CLICKHOUSE"); a != "" {
		return a
	}
	return "127.0.0.1:9000"
}

// ClickHouse opens cfg's (random) database, applies the migrations, logs the
// server version and drops the database at cleanup. Without
// PARTNERS_TEST_CLICKHOUSE set and no server reachable the test is skipped;
// with it set (as make test does) an unreachable server fails the test.
func ClickHouse(t testing.TB, cfg *config.Config) driver.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := chdb.Open(ctx, cfg.ClickHouse)
	if err != nil {
		if os.Getenv("PARTNERS_TEST_CLICKHOUSE") == "" {
			t.Skipf("ClickHouse not reachable at %s and PARTNERS_TEST_CLICKHOUSE unset: %v (make test starts one)", ClickHouseAddr(), err)
		}
		t.Fatalf("clickhouse: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := chdb.DropDatabase(ctx, cfg.ClickHouse); err != nil {
			t.Logf("drop test database: %v", err)
		}
	})
	v, err := chdb.ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, logged := versionLogged.LoadOrStore("clickhouse", true); !logged {
		t.Logf("clickhouse: server %s at %s", v, ClickHouseAddr())
	}
	if _, err := chdb.Migrate(ctx, conn, slog.New(slog.DiscardHandler), chdb.For(cfg.ClickHouse)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// LogBuffer captures logs so tests can search them (e.g. for leaked secrets).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a debug-level JSON logger writing to b and, with -v, to the
// test log.
func (b *LogBuffer) Logger(t testing.TB) *slog.Logger {
	var w io.Writer = b
	if testing.Verbose() && os.Getenv("PARTNERS_TEST_LOGS") != "" {
		w = io.MultiWriter(b, os.Stderr)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Eventually polls cond until it is true or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GoleakIgnores are the goroutines goleak must not report in packages that
// use the shared in-process kfake broker, which lives as long as the test
// binary (see Brokers).
func GoleakIgnores(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*broker).listen"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).handleConn"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*Cluster).groupCoordinatorLoop"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*groups).manage"),
	}, extra...)
}

// ServeGRPC runs serve on a loopback listener until the test's cleanup (a
// serve error fails the test) and returns a client connection to it.
func ServeGRPC(t testing.TB, serve func(ctx context.Context, lis net.Listener) error) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
