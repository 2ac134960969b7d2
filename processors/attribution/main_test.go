package attribution_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

// env is one test's Kafka topics, ClickHouse database and producer.
type env struct {
	cfg     *config.Config
	brokers []string
	cl      *kgo.Client
	conn    driver.Conn
	names   kafka.Names
	log     *testenv.LogBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	conn := testenv.ClickHouse(t, cfg)
	return &env{cfg: cfg, brokers: brokers, cl: cl, conn: conn, names: kafka.Names{Prefix: cfg.Kafka.TopicPrefix}, log: &testenv.LogBuffer{}}
}

// start runs a processor on e until the test ends (or stop is called);
// tweak, if given, adjusts it before it runs (fault seams of export_test.go).
func (e *env) start(t *testing.T, conn driver.Conn, tweak ...func(*attribution.Processor)) (stop func()) {
	stop, _ = e.startWith(t, conn, tweak...)
	return stop
}

// startWith is start that also returns the processor's metrics.
func (e *env) startWith(t *testing.T, conn driver.Conn, tweak ...func(*attribution.Processor)) (stop func(), reg *prometheus.Registry) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("processor logs:\n%s", tail(e.log.String(), 4000))
		}
	})
	t.Helper()
	if conn == nil {
		conn = e.conn
	}
	reg = prometheus.NewRegistry()
	p, err := attribution.New(attribution.Options{Config: e.cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Conn: conn, Producer: e.cl,
		Log: slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelInfo})), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tweak {
		f(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop, reg
}

// metric sums the samples of a metric family whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// replayFromStart moves the processor group's committed offsets back to the
// start of every partition (the processor must be stopped): a topic replay.
func (e *env) replayFromStart(t *testing.T) {
	t.Helper()
	adm := kadm.NewClient(e.cl)
	p, err := attribution.New(attribution.Options{Config: e.cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: e.cfg.Kafka}, Conn: e.conn, Producer: e.cl, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	starts, err := adm.ListStartOffsets(ctx, p.Topics()...)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := adm.CommitOffsets(ctx, p.Group(), starts.Offsets())
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); err != nil {
		t.Fatal(err)
	}
}

func (e *env) publish(t *testing.T, recs []*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func (e *env) publishDataset(t *testing.T, d Dataset) {
	t.Helper()
	recs, err := d.Records(e.names)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, recs)
}

// caughtUp reports whether the processor's group has committed every offset
// of its topics: everything produced so far is in ClickHouse.
func caughtUp(t *testing.T, e *env) bool {
	adm := kadm.NewClient(e.cl)
	p, err := attribution.New(attribution.Options{Config: e.cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: e.cfg.Kafka}, Conn: e.conn, Producer: e.cl, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, p.Topics()...)
	if err != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, p.Group())
	if err != nil {
		return false
	}
	ok := true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset == 0 {
			return
		}
		c, found := committed.Lookup(o.Topic, o.Partition)
		if !found || c.At < o.Offset {
			ok = false
		}
	})
	return ok
}

// waitCaughtUp waits until caughtUp.
func (e *env) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, "attribution group caught up", func() bool { return caughtUp(t, e) })
}

func namesOf(cfg *config.Config) kafka.Names { return kafka.Names{Prefix: cfg.Kafka.TopicPrefix} }

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
