package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

// received is one request a receiver got.
type received struct {
	status int // 0: hung
	id     string
	body   []byte
	header http.Header
	at     time.Time
}

// response is what a receiver answers to the n-th request (1-based) for a webhook-id.
type response func(n int) (status int, header map[string]string, hang bool)

// receiver is a local partner endpoint recording every request.
type receiver struct {
	srv  *httptest.Server
	stop chan struct{}

	mu    sync.Mutex
	reqs  []received
	perID map[string]int
	resp  response
	// failFirst, if set, answers 503 to the first request of the ids it selects.
	failFirst func(id string) bool
	// byID, if set, is the status answered to the ids it names.
	byID map[string]int
	// hanging, maxHanging: requests held open now, and the most at once.
	hanging, maxHanging int
}

func newReceiver(t *testing.T, resp response) *receiver {
	rc := &receiver{stop: make(chan struct{}), perID: map[string]int{}, resp: resp}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.stop)
		rc.srv.CloseClientConnections()
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || int64(len(body)) != r.ContentLength {
		// A request torn by a killed sender is not a delivery: the sender
		// saw no response and the receiver answers nothing useful.
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	rc.perID[id]++
	n := rc.perID[id]
	resp := rc.resp
	status, hdr, hang := resp(n)
	if rc.failFirst != nil && n == 1 && rc.failFirst(id) {
		status, hdr, hang = http.StatusServiceUnavailable, nil, false
	}
	if st, ok := rc.byID[id]; ok {
		status, hdr, hang = st, nil, false
	}
	if hang {
		status = 0
	}
	rc.reqs = append(rc.reqs, received{status: status, id: id, body: body, header: r.Header.Clone(), at: time.Now()})
	rc.mu.Unlock()
	if hang {
		rc.mu.Lock()
		rc.hanging++
		rc.maxHanging = max(rc.maxHanging, rc.hanging)
		rc.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-rc.stop:
		}
		rc.mu.Lock()
		rc.hanging--
		rc.mu.Unlock()
		return
	}
	for k, v := range hdr {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
}

func (rc *receiver) setResponse(r response) {
	rc.mu.Lock()
	rc.resp = r
	rc.mu.Unlock()
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

func always(status int) response {
	return func(int) (int, map[string]string, bool) { return status, nil, false }
}

// env is one isolated test environment: topics, registry, writer, and a
// processor started on demand.
type env struct {
	t       *testing.T
	cfg     *config.Config
	brokers []string
	cl      *kgo.Client
	reg     *registry.Registry
	writer  *registry.Writer
	ch      driver.Conn
	spans   *tracetest.SpanRecorder
	tp      *trace.TracerProvider
	logs    *testenv.LogBuffer
	p       *Processor
	log     *slog.Logger
}

func newEnv(t *testing.T, withClickHouse bool, mutate func(*config.Config)) *env {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Partner.Webhooks.Timeouts = config.Timeouts{Connect: time.Second, Total: 2 * time.Second} // generous: -race on 2 busy cores; exact attempt counts must not see spurious timeouts
	cfg.Partner.Webhooks.Breaker = config.Breaker{ConsecutiveFailures: 1000, Open: 30 * time.Second}
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, logs: &testenv.LogBuffer{}}
	e.log = e.logs.Logger(t)
	e.brokers, e.cl = testenv.Kafka(t, cfg)
	if withClickHouse {
		e.ch = testenv.ClickHouse(t, cfg)
	}
	e.reg = registrytest.Start(t, cfg, e.brokers, e.log)
	e.writer = registrytest.Writer(cfg, e.reg, e.cl, time.Hour)
	e.spans = tracetest.NewSpanRecorder()
	e.tp = trace.NewTracerProvider(trace.WithSpanProcessor(e.spans))
	// Global too: kotel's publish spans (Kafka clients) use it, as in the binary.
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(e.tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = e.tp.Shutdown(context.Background())
	})
	return e
}

// tenant onboards a partner whose endpoint is rc.
func (e *env) tenant(name string, rc *receiver, events ...string) *registry.Created {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := e.writer.Create(ctx, registry.CreateRequest{Name: name, Tier: schemas.TierStandard, WebhookURL: rc.url(), Events: events})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// start runs the processor (and the delivery log when ClickHouse is set)
// until the test ends.
func (e *env) start() *Processor {
	e.t.Helper()
	p, err := New(Options{Config: e.cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Tenants: e.reg, Disabler: e.writer, Log: e.log, TracerProvider: e.tp})
	if err != nil {
		e.t.Fatal(err)
	}
	e.p = p
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			e.t.Errorf("processor: %v", err)
		}
	}()
	if e.ch != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := RunDeliveryLog(ctx, DeliveryLogOptions{Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Conn: e.ch, Config: e.cfg.Partner.Webhooks, Log: e.log}); err != nil {
				e.t.Errorf("delivery log: %v", err)
			}
		}()
	}
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
		p.Close()
	})
	return p
}

func (e *env) event(id, typ, data string) schemas.Event {
	return schemas.Event{SchemaVersion: "1", ID: id, Type: typ, Source: "test", OccurredAt: time.Now().UTC().Truncate(time.Millisecond), Data: json.RawMessage(data)}
}

func (e *env) publish(evs ...schemas.Event) {
	e.t.Helper()
	var recs []*kgo.Record
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		recs = append(recs, &kgo.Record{Topic: e.topic(schemas.TopicEvents), Key: []byte(ev.ID), Value: b})
	}
	e.publishRaw(recs...)
}

func (e *env) publishRaw(recs ...*kgo.Record) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) topic(logical string) string {
	return kafka.Names{Prefix: e.cfg.Kafka.TopicPrefix}.Topic(logical)
}

// readAll reads a topic (read committed) from the start to its end.
func (e *env) readAll(topic string) []*kgo.Record {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		e.t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var out []*kgo.Record
	if total == 0 {
		return nil
	}
	for {
		pctx, pc := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pc()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < ends[topic][r.Partition].Offset {
				out = append(out, r)
				n++
			}
		})
		if n == 0 || ctx.Err() != nil {
			return out
		}
	}
}

func (e *env) deadLetters() []schemas.DeadLetter {
	var out []schemas.DeadLetter
	for _, r := range e.readAll(e.topic(schemas.TopicDLQ)) {
		var dl schemas.DeadLetter
		if err := json.Unmarshal(r.Value, &dl); err != nil {
			e.t.Fatalf("undecodable dead letter: %v", err)
		}
		if err := schemas.Validate(schemas.KindDeadLetter, r.Value); err != nil {
			e.t.Errorf("dead letter violates its schema: %v\n%s", err, r.Value)
		}
		out = append(out, dl)
	}
	return out
}

func (e *env) attempts() []schemas.DeliveryAttempt {
	var out []schemas.DeliveryAttempt
	for _, r := range e.readAll(e.topic(schemas.TopicDeliveries)) {
		var a schemas.DeliveryAttempt
		if err := json.Unmarshal(r.Value, &a); err != nil {
			e.t.Fatalf("undecodable attempt: %v", err)
		}
		if err := schemas.Validate(schemas.KindDeliveryAttempt, r.Value); err != nil {
			e.t.Errorf("attempt violates its schema: %v\n%s", err, r.Value)
		}
		out = append(out, a)
	}
	return out
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func idsOf(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}
