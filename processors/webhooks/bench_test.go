package webhooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/partners-engine/partners-engine/internal/benchtest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// The webhooks figures of `make bench` (BenchmarkFigures), each beside a
// baseline measured in the same run:
//
//   - signed deliveries/s through the delivery client and through the whole
//     processor (Kafka in, fan-out, signing, attempt log out, transactional
//     commits), beside a plain Go HTTP POST loop of the same payloads to the
//     same receiver at the same concurrency;
//   - fan-out cost per event with 10,000 tenants of which one is subscribed
//     to the event's type, beside the same with that tenant alone;
//   - listing 100,000 dead letters from the DLQ index, beside the scan of
//     the DLQ topic the listing used to be;
//   - HMAC signing per KB (1 and 2 secrets) beside a bare SHA-256.
func BenchmarkFigures(b *testing.B) {
	n, tenants, dead := 20_000, 10_000, 100_000
	if benchtest.Quick() {
		n, tenants, dead = 3_000, 1_000, 10_000
	}
	figs, err := figures(b, testenv.Brokers(b), n, tenants, dead, 5)
	if err != nil {
		b.Fatal(err)
	}
	benchtest.Report(b, figs...)
}

// TestBenchQuick runs the figures' measurements at small sizes so they
// cannot rot: every figure has a value and a same-run baseline.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark measurements")
	}
	// Inside a benchmark, as make bench runs them: a measurement that
	// cannot run there (testing.Benchmark waits for the running
	// benchmark's lock) hangs this test instead of only make bench.
	brokers := testenv.Brokers(t)
	var figs []benchtest.Figure
	var err error
	testing.Benchmark(func(b *testing.B) {
		if figs == nil && err == nil {
			figs, err = figures(b, brokers, 2_000, 500, 3_000, 1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 7 {
		t.Fatalf("want 7 figures, got %d: %+v", len(figs), figs)
	}
	for _, f := range figs {
		if f.Value <= 0 || f.BaselineValue <= 0 || f.Baseline == "" {
			t.Errorf("figure without a value or baseline: %+v", f)
		}
		t.Logf("%-80s %12.1f %-13s | %-45s %12.1f | ratio %.2f", f.Name, f.Value, f.Unit, f.Baseline, f.BaselineValue, f.Ratio())
	}
}

func BenchmarkSign1KB(b *testing.B) {
	body := benchPayloads(1, 1024)[0]
	s := []string{benchSecret(1)}
	now := time.Now()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_, _ = Sign(s, "msg_x", now, body)
	}
}

func BenchmarkSignedDelivery(b *testing.B) {
	rcv, err := newBenchReceiver()
	if err != nil {
		b.Fatal(err)
	}
	defer rcv.close()
	cfg := config.Default()
	rules, _ := ssrf.ParseRules([]string{"127.0.0.1/32:1-65535"})
	hc := newHTTPClient(cfg.Partner.Webhooks, ssrf.NewGuard(rules))
	defer hc.CloseIdleConnections()
	body := benchPayloads(1, 1024)[0]
	s := []string{benchSecret(1)}
	i := 0
	for b.Loop() {
		i++
		if a := send(context.Background(), hc, 1<<16, Request{URL: rcv.url, ID: fmt.Sprint(i), Body: body, Secrets: s}, time.Now()); a.Class != Delivered {
			b.Fatal(a.Err)
		}
	}
}

// benchReceiver is a local endpoint counting requests.
type benchReceiver struct {
	srv  *http.Server
	url  string
	hits atomic.Int64
}

func newBenchReceiver() (*benchReceiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &benchReceiver{url: "http://" + lis.Addr().String() + "/hook"}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(lis) }()
	return r, nil
}

func (r *benchReceiver) close() { _ = r.srv.Close() }

// staticTenants serves a fixed tenant list (benchmarks need no registry).
type staticTenants []*schemas.Tenant

func (s staticTenants) Get(id string) (*schemas.Tenant, bool) {
	for _, t := range s {
		if t.ID == id {
			return t, true
		}
	}
	return nil, false
}
func (s staticTenants) List() []*schemas.Tenant { return s }

func benchPayloads(n, size int) [][]byte {
	out := make([][]byte, n)
	filler := bytes.Repeat([]byte("x"), max(size-120, 1))
	for i := range out {
		out[i] = []byte(fmt.Sprintf(`{"schema_version":"1","id":"evt_bench_%07d","type":"order.created","occurred_at":"2026-01-01T00:00:00Z","data":{"f":"%s"}}`, i, filler))
	}
	return out
}

func benchSecret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the rate.
func parallel(n, workers int, fn func(i int) error) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, *e
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func figures(tb testing.TB, brokers []string, n, tenants, dead, rounds int) ([]benchtest.Figure, error) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	size, workers := 1024, 32
	rcv, err := newBenchReceiver()
	if err != nil {
		return nil, err
	}
	defer rcv.close()
	payloads := benchPayloads(n, size)
	var figs []benchtest.Figure

	// Plain POST loop: the default transport with a pool as large as ours.
	plain := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxIdleConns: workers}, Timeout: 10 * time.Second}
	defer plain.CloseIdleConnections()
	post := func(i int) error {
		resp, err := plain.Post(rcv.url, "application/json", bytes.NewReader(payloads[i%n]))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	_, _ = parallel(min(n, 500), workers, post) // warm the pool
	plainRate, err := parallel(n, workers, post)
	if err != nil {
		return nil, fmt.Errorf("plain POST loop: %w", err)
	}

	cfg := config.Default()
	cfg.Partner.Webhooks.AllowPrivate = []string{"127.0.0.1/32:1-65535"}
	cfg.Partner.Webhooks.PerEndpoint = workers
	rules, _ := ssrf.ParseRules(cfg.Partner.Webhooks.AllowPrivate)
	hc := newHTTPClient(cfg.Partner.Webhooks, ssrf.NewGuard(rules))
	defer hc.CloseIdleConnections()
	secrets := []string{benchSecret(1)}
	signed := func(i int) error {
		a := send(ctx, hc, 64<<10, Request{URL: rcv.url, ID: fmt.Sprintf("msg_%d", i), EventType: "order.created",
			Body: payloads[i%n], Secrets: secrets}, time.Now())
		if a.Class != Delivered {
			return fmt.Errorf("signed delivery: %s", a.Err)
		}
		return nil
	}
	_, _ = parallel(min(n, 500), workers, signed)
	signedRate, err := parallel(n, workers, signed)
	if err != nil {
		return nil, err
	}
	figs = append(figs, benchtest.Figure{Name: fmt.Sprintf("webhooks: signed deliveries/s, delivery client, %d B, %d concurrent", size, workers),
		Value: signedRate, Unit: "deliveries/s", Baseline: "plain Go HTTP POST loop, same payloads", BaselineValue: plainRate})

	// The processor and the plain loop alternate, rounds times, so a load
	// swing on the shared machine hits both; the round with the median
	// ratio is reported.
	type round struct{ plain, e2e float64 }
	var rs []round
	for range rounds {
		pr, err := parallel(min(n, 10_000), workers, post)
		if err != nil {
			return nil, fmt.Errorf("plain POST loop: %w", err)
		}
		e2e, err := benchEndToEnd(ctx, brokers, log, rcv, min(n, 10_000), workers)
		if err != nil {
			return nil, fmt.Errorf("end to end: %w", err)
		}
		rs = append(rs, round{pr, e2e})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].e2e/rs[i].plain < rs[j].e2e/rs[j].plain })
	med := rs[len(rs)/2]
	figs = append(figs, benchtest.Figure{Name: fmt.Sprintf("webhooks: signed deliveries/s, processor end to end (Kafka in, log out), %d concurrent, median of %d alternating rounds", workers, rounds),
		Value: med.e2e, Unit: "deliveries/s", Baseline: "plain Go HTTP POST loop, same payloads, same round", BaselineValue: med.plain})

	many, one, err := benchFanOut(tenants)
	if err != nil {
		return nil, err
	}
	figs = append(figs, benchtest.Figure{Name: fmt.Sprintf("webhooks: fan-out per event, %d tenants, 1 subscribed to the type", tenants),
		Value: many, Unit: "ns/event", Baseline: "the subscribed tenant alone", BaselineValue: one})

	all, page, scan, err := benchDLQList(ctx, brokers, log, dead)
	if err != nil {
		return nil, fmt.Errorf("DLQ listing: %w", err)
	}
	figs = append(figs,
		benchtest.Figure{Name: fmt.Sprintf("webhooks: DLQ list, %d dead letters, every page of 1000 from the index", dead),
			Value: all, Unit: "ms", Baseline: "scan of the DLQ topic (the previous listing)", BaselineValue: scan},
		benchtest.Figure{Name: fmt.Sprintf("webhooks: DLQ list, %d dead letters, one tenant's first page of 100 from the index", dead),
			Value: page, Unit: "ms", Baseline: "scan of the DLQ topic (the previous listing)", BaselineValue: scan})

	// HMAC cost per KB: Standard Webhooks signing of a 64 KiB body, one and
	// two secrets, beside SHA-256 of the same bytes.
	body := bytes.Repeat([]byte("a"), 64<<10)
	kb := float64(len(body)) / 1024
	now := time.Now()
	shaNs := nsPerOp(func() { _ = sha256.Sum256(body) }) / kb
	oneNs := nsPerOp(func() { _, _ = Sign(secrets, "msg_x", now, body) }) / kb
	twoNs := nsPerOp(func() { _, _ = Sign([]string{benchSecret(1), benchSecret(2)}, "msg_x", now, body) }) / kb
	figs = append(figs,
		benchtest.Figure{Name: "webhooks: HMAC-SHA256 signing per KB (1 secret)", Value: oneNs, Unit: "ns/KB", Baseline: "bare SHA-256 per KB", BaselineValue: shaNs},
		benchtest.Figure{Name: "webhooks: HMAC-SHA256 signing per KB (2 secrets, rotation)", Value: twoNs, Unit: "ns/KB", Baseline: "bare SHA-256 per KB", BaselineValue: shaNs},
	)
	return figs, nil
}

// nsPerOp times f: it runs f in rounds doubling in size until a round
// takes half a second and returns that round's ns per call. (Not
// testing.Benchmark: called from inside BenchmarkFigures it waits forever
// for the lock the running benchmark holds.)
func nsPerOp(f func()) float64 {
	for n := 1; ; n *= 2 {
		start := time.Now()
		for range n {
			f()
		}
		if d := time.Since(start); d >= 500*time.Millisecond || n >= 1<<30 {
			return float64(d.Nanoseconds()) / float64(n)
		}
	}
}

// benchCluster creates the topics of cfg under a random prefix, deleted
// afterwards.
func benchCluster(ctx context.Context, cfg *config.Config, brokers []string, log *slog.Logger) (*kgo.Client, func(), error) {
	cfg.Kafka.TopicPrefix = "bench" + randomHex(4) + "."
	cl, err := kafka.NewClient(cfg.Kafka, brokers, log)
	if err != nil {
		return nil, nil, err
	}
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		cl.Close()
		return nil, nil, err
	}
	return cl, func() {
		var names []string
		for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
			names = append(names, s.Name)
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(dctx, names...)
		cl.Close()
	}, nil
}

// benchEndToEnd publishes n events for one tenant endpoint and runs the
// processor until the receiver got them all; it returns deliveries/s.
func benchEndToEnd(ctx context.Context, brokers []string, log *slog.Logger, rcv *benchReceiver, n, workers int) (float64, error) {
	cfg := config.Default()
	cfg.Partner.Webhooks.AllowPrivate = []string{"127.0.0.1/32:1-65535"}
	cfg.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 2, BackoffBase: time.Second, BackoffMultiplier: 2}
	cfg.Partner.Webhooks.PerEndpoint = workers // the same concurrency as the plain loop
	cl, done, err := benchCluster(ctx, &cfg, brokers, log)
	if err != nil {
		return 0, err
	}
	defer done()
	ten := &schemas.Tenant{ID: "tn_bench", Name: "bench", Tier: schemas.TierStandard, Status: schemas.StatusActive,
		Endpoints: []schemas.Endpoint{{ID: "ep_bench", URL: rcv.url, SchemaVersion: "1",
			Secrets: []schemas.WebhookSecret{{ID: "sec", Secret: benchSecret(3)}}}}}
	var recs []*kgo.Record
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicEvents)
	for i := 0; i < n; i++ {
		ev := schemas.Event{SchemaVersion: "1", ID: fmt.Sprintf("evt_e2e_%07d", i), Type: "order.created",
			OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{"order_id":"o","total":"12.30"}`)}
		b, _ := json.Marshal(ev)
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(ev.ID), Value: b})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, err
	}
	p, err := New(Options{Config: cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: log, Tracer: noop.NewTracerProvider()},
		Tenants: staticTenants{ten}, Log: log, TracerProvider: noop.NewTracerProvider(), InstanceID: "bench-" + randomHex(4)})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	before := rcv.hits.Load()
	rctx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- p.Run(rctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	var first time.Time
	for rcv.hits.Load()-before < int64(n) && time.Now().Before(deadline) {
		if first.IsZero() && rcv.hits.Load() > before {
			first = time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(first)
	cancel()
	<-runDone
	got := rcv.hits.Load() - before
	if got < int64(n) {
		return 0, fmt.Errorf("%d of %d delivered in %v", got, n, time.Since(start))
	}
	return float64(n) / elapsed.Seconds(), nil
}

// benchFanOut times the fan-out of one event with tenants tenants of which
// one takes its type, and with that tenant alone (ns/event).
func benchFanOut(tenants int) (float64, float64, error) {
	mk := func(i int, typ string) *schemas.Tenant {
		return &schemas.Tenant{ID: fmt.Sprintf("tn_%06d", i), Status: schemas.StatusActive, Endpoints: []schemas.Endpoint{{
			ID: fmt.Sprintf("ep_%06d", i), URL: "https://hooks.example/h", EventTypes: []string{typ},
			Secrets: []schemas.WebhookSecret{{ID: "s", Secret: benchSecret(1)}}}}}
	}
	var many staticTenants
	for i := range tenants - 1 {
		many = append(many, mk(i, "lead.qualified"))
	}
	subscribed := mk(tenants, "order.created")
	many = append(many, subscribed)
	ev, _ := json.Marshal(schemas.Event{SchemaVersion: "1", ID: "evt_fan", Type: "order.created", OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{"total":"1"}`)})
	per := func(ts staticTenants) (float64, error) {
		cfg := config.Default()
		p, err := New(Options{Config: cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: cfg.Kafka}, Tenants: ts,
			Log: slog.New(slog.DiscardHandler), TracerProvider: noop.NewTracerProvider()})
		if err != nil {
			return 0, err
		}
		r := &kgo.Record{Topic: "events", Value: ev}
		if jobs, _ := p.fanOut(context.Background(), r); len(jobs) != 1 {
			return 0, fmt.Errorf("fan-out made %d deliveries, want 1", len(jobs))
		}
		return nsPerOp(func() { p.fanOut(context.Background(), r) }), nil
	}
	m, err := per(many)
	if err != nil {
		return 0, 0, err
	}
	o, err := per(staticTenants{subscribed})
	return m, o, err
}

// benchDLQList writes dead dead letters (DLQ topic and index, as the stages
// do, spread over 100 tenants), loads the index, and times listing every
// page of 1000 and one tenant's first page of 100 from it, beside a scan of
// the DLQ topic that keeps one tenant's dead letters, as the listing used
// to do on every call. Milliseconds.
func benchDLQList(ctx context.Context, brokers []string, log *slog.Logger, dead int) (all, page, scan float64, err error) {
	cfg := config.Default()
	cl, done, err := benchCluster(ctx, &cfg, brokers, log)
	if err != nil {
		return 0, 0, 0, err
	}
	defer done()
	p, err := New(Options{Config: cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: log, Tracer: noop.NewTracerProvider()},
		Tenants: staticTenants{}, Log: log, TracerProvider: noop.NewTracerProvider()})
	if err != nil {
		return 0, 0, 0, err
	}
	body := []byte(`{"schema_version":"1","id":"evt","type":"order.created","occurred_at":"2026-01-01T00:00:00Z","data":{"order_id":"ord_1042","total":"129.90"}}`)
	var batch []*kgo.Record
	flush := func() error {
		err := cl.ProduceSync(ctx, batch...).FirstErr()
		batch = batch[:0]
		return err
	}
	for i := range dead {
		t := Task{SchemaVersion: "1", DeliveryID: fmt.Sprintf("msg_%08d", i), TenantID: fmt.Sprintf("tn_%03d", i%100),
			EndpointID: fmt.Sprintf("ep_%03d", i%100), EventID: fmt.Sprintf("evt_%08d", i), EventType: "order.created",
			Attempts: 8, Stage: 7, LastStatus: 503, LastError: "HTTP 503 Service Unavailable", Body: body}
		batch = append(batch, p.deadLetter(ctx, t, ReasonHTTPStatus, "attempts exhausted (8 of 8): HTTP 503 Service Unavailable", false)...)
		if len(batch) >= 2000 {
			if err := flush(); err != nil {
				return 0, 0, 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, 0, 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = p.index.Run(rctx) }()
	if err := p.index.waitReady(ctx); err != nil {
		return 0, 0, 0, err
	}
	if d := p.index.Depth(); d != dead {
		return 0, 0, 0, fmt.Errorf("index holds %d dead letters, want %d", d, dead)
	}
	start := time.Now()
	listed := 0
	for tok := ""; ; {
		es, next, err := p.index.List(DLQFilter{Limit: 1000, PageToken: tok})
		if err != nil {
			return 0, 0, 0, err
		}
		listed += len(es)
		if next == "" {
			break
		}
		tok = next
	}
	all = float64(time.Since(start).Microseconds()) / 1000
	if listed != dead {
		return 0, 0, 0, fmt.Errorf("listed %d of %d", listed, dead)
	}
	start = time.Now()
	es, _, err := p.index.List(DLQFilter{Tenant: "tn_042", Limit: 100})
	page = float64(time.Since(start).Microseconds()) / 1000
	if err != nil || len(es) != min(100, dead/100) {
		return 0, 0, 0, fmt.Errorf("tenant page: %d entries, %v", len(es), err)
	}
	start = time.Now()
	kept, err := scanTopic(ctx, p, "tn_042")
	scan = float64(time.Since(start).Microseconds()) / 1000
	if err != nil || kept != dead/100 {
		return 0, 0, 0, fmt.Errorf("scan kept %d, want %d: %v", kept, dead/100, err)
	}
	return all, page, scan, nil
}

// scanTopic is the previous listing: read the DLQ topic from its start to
// its end, decode every record, keep one tenant's.
func scanTopic(ctx context.Context, p *Processor, tenant string) (int, error) {
	topic := p.names.Topic(schemas.TopicDLQ)
	cl, err := p.kafka.NewClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	want := map[int32]int64{}
	assign := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			assign[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign})
	kept := 0
	for len(want) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if fs.NumRecords() == 0 {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			var dl schemas.DeadLetter
			if json.Unmarshal(r.Value, &dl) == nil && dl.TenantID == tenant {
				kept++
			}
		})
	}
	return kept, nil
}
