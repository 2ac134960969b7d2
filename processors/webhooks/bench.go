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
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/schemas"
)

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

// Bench measures, in one run: signed webhook deliveries per second through
// the delivery client (signing, SSRF-guarded dialer, keep-alive pool, otelhttp)
// and through the whole processor (Kafka in, fan-out, attempt log, commits),
// each beside a plain Go HTTP POST loop of the same payloads to the same
// receiver; and the HMAC signing cost per KB beside a bare SHA-256.
func Bench(ctx context.Context, env benchrow.Env) ([]benchrow.Row, error) {
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, size, workers := 20_000, 1024, 32
	if env.Quick {
		n = 3_000
	}
	rcv, err := newBenchReceiver()
	if err != nil {
		return nil, err
	}
	defer rcv.close()
	payloads := benchPayloads(n, size)
	var rows []benchrow.Row

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
	rows = append(rows, benchrow.Row{Name: fmt.Sprintf("webhooks: signed deliveries/s, delivery client, %d B, %d concurrent", size, workers),
		Value: signedRate, Unit: "deliveries/s", Baseline: "plain Go HTTP POST loop, same payloads", BaselineValue: plainRate})

	if e2e, err := benchEndToEnd(ctx, env, log, rcv, min(n, 10_000), workers); err != nil {
		log.Warn("webhooks end-to-end bench skipped", "err", err)
	} else {
		rows = append(rows, benchrow.Row{Name: fmt.Sprintf("webhooks: signed deliveries/s, processor end to end (Kafka in, log out), %d concurrent", workers),
			Value: e2e, Unit: "deliveries/s", Baseline: "plain Go HTTP POST loop, same payloads", BaselineValue: plainRate})
	}

	// HMAC cost per KB: Standard Webhooks signing of a 64 KiB body, one and
	// two secrets, beside SHA-256 of the same bytes.
	body := bytes.Repeat([]byte("a"), 64<<10)
	kb := float64(len(body)) / 1024
	per := func(iters int, fn func()) float64 {
		start := time.Now()
		for i := 0; i < iters; i++ {
			fn()
		}
		return float64(time.Since(start).Nanoseconds()) / float64(iters) / kb
	}
	iters := 2000
	if env.Quick {
		iters = 300
	}
	now := time.Now()
	shaNs := per(iters, func() { _ = sha256.Sum256(body) })
	one := per(iters, func() { _, _ = Sign(secrets, "msg_x", now, body) })
	two := per(iters, func() { _, _ = Sign([]string{benchSecret(1), benchSecret(2)}, "msg_x", now, body) })
	rows = append(rows,
		benchrow.Row{Name: "webhooks: HMAC-SHA256 signing per KB (1 secret)", Value: one, Unit: "ns/KB", Baseline: "bare SHA-256 per KB", BaselineValue: shaNs},
		benchrow.Row{Name: "webhooks: HMAC-SHA256 signing per KB (2 secrets, rotation)", Value: two, Unit: "ns/KB", Baseline: "bare SHA-256 per KB", BaselineValue: shaNs},
	)
	return rows, nil
}

// benchEndToEnd publishes n events for one tenant endpoint and runs the
// processor until the receiver got them all; it returns deliveries/s.
func benchEndToEnd(ctx context.Context, env benchrow.Env, log *slog.Logger, rcv *benchReceiver, n, workers int) (float64, error) {
	brokers := env.Brokers
	if len(brokers) == 0 {
		emb, err := kafka.StartEmbedded("", 0, log)
		if err != nil {
			return 0, err
		}
		defer emb.Close()
		brokers = emb.Addrs()
	}
	cfg := config.Default()
	cfg.Kafka.TopicPrefix = "bench" + randomHex(4) + "."
	cfg.Partner.Webhooks.AllowPrivate = []string{"127.0.0.1/32:1-65535"}
	cfg.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 2, BackoffBase: time.Second, BackoffMultiplier: 2}
	cfg.Partner.Webhooks.PerEndpoint = workers // the same concurrency as the plain loop
	cl, err := kafka.NewClient(cfg.Kafka, brokers, log)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		return 0, err
	}
	defer func() {
		var names []string
		for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
			names = append(names, s.Name)
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(dctx, names...)
	}()
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
	p, err := New(Options{Config: cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: log}, Tenants: staticTenants{ten}, Log: log,
		TracerProvider: noop.NewTracerProvider(), InstanceID: "bench-" + randomHex(4)})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	before := rcv.hits.Load()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(rctx) }()
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
	<-done
	got := rcv.hits.Load() - before
	if got < int64(n) {
		return 0, fmt.Errorf("end to end: %d of %d delivered in %v", got, n, time.Since(start))
	}
	return float64(n) / elapsed.Seconds(), nil
}
