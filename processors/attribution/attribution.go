// Package attribution owns the attribution processor: it consumes
// touchpoints, conversions and costs from Kafka, credits every conversion to
// the partners that touched its user inside the lookback window under each
// attribution model (processors/attribution/models), and writes the raw
// records and the attribution rows to ClickHouse in batches, with one
// rollup INSERT per batch into roi_daily (corrections at (model, day,
// partner) grain plus the ingest ledger of source offsets), committing Kafka
// offsets only after the inserts succeeded; processors/attribution/roi reads
// roi_daily (or, for checks, the raw tables).
//
// Guarantees: every record's effect reaches roi_daily exactly once —
// duplicates are dropped by id, records below the ledger are skipped, an
// INSERT whose outcome was lost is resolved before the next batch — so the
// rollup equals the raw tables (schemas/clickhouse/README.md, "Exactly once
// into the rollup"; checked periodically by the reconciliation). Raw rows
// are at least once with deterministic ids (reads de-duplicate by id).
// ClickHouse down: the batch is retried with backoff, never committed and
// never dropped. Malformed, oversized or unwritable input goes to
// partners.attribution.dlq with its reason; the partition keeps going. The
// same code runs on one server or on a cluster (clickhouse.cluster).
package attribution

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// Options configure a Processor.
type Options struct {
	Config   config.Attribution // the partner.attribution section
	Kafka    kafka.Cluster      // brokers, topic and group names, client settings
	Conn     driver.Conn        // ClickHouse, migrated
	Producer *kgo.Client        // produces dead letters
	Log      *slog.Logger
	Metrics  prometheus.Registerer // nil: no metrics
	// Now is the clock used for ingested_at (tests may fix it); nil: time.Now.
	Now func() time.Time
}

// Processor is the attribution processor.
type Processor struct {
	opt     Options
	names   kafka.Names
	rates   map[string]decimal.Decimal
	params  models.Params
	sources map[string]bool
	hist    *lru.Cache[string, *history]
	costIDs *lru.Cache[string, struct{}] // cost ids the rollup counts
	led     *ledger
	// topicIDs: the source topics' Kafka topic ids (hex), read at start
	// (checkLedgerAgainstLog) and recorded in the ledger.
	topicIDs map[string]string
	poison   poisoned // records that cannot be written, to dead-letter (isolate)
	owners   partitionLocks
	faults   faults
	m        metrics
}

// faults are seams for fault tests (export_test.go); zero in production.
type faults struct {
	// insert runs before a batch's raw inserts; an error fails them.
	insert func(touchIDs, convIDs []string) error
	// afterRollup runs after a rollup INSERT landed; an error is returned
	// as if the INSERT had failed (its outcome unknown to the processor).
	afterRollup func() error
}

type metrics struct {
	records  *prometheus.CounterVec
	rows     *prometheus.CounterVec
	retries  prometheus.Counter
	batchDur prometheus.Histogram
	batchLen prometheus.Histogram
	pending  prometheus.Counter
	recRuns  prometheus.Counter
	recBad   prometheus.Gauge
}

// New validates the options and builds a processor.
func New(opt Options) (*Processor, error) {
	if opt.Conn == nil || opt.Producer == nil || opt.Log == nil {
		return nil, errors.New("attribution: Conn, Producer and Log are required")
	}
	if err := config.Validate(&opt.Config); err != nil {
		return nil, fmt.Errorf("attribution: %w", err)
	}
	if opt.Kafka.Log == nil {
		opt.Kafka.Log = opt.Log
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	a := opt.Config
	p := &Processor{
		opt:     opt,
		names:   opt.Kafka.Names(),
		rates:   map[string]decimal.Decimal{},
		sources: map[string]bool{},
		params: models.Params{
			Lookback: a.Lookback,
			HalfLife: a.TimeDecayHalfLife,
		},
	}
	for cur, r := range a.CurrencyRates {
		d, err := decimal.NewFromString(r)
		if err != nil || !d.IsPositive() {
			return nil, fmt.Errorf("partner.attribution.currency_rates.%s: %q is not a positive decimal", cur, r)
		}
		p.rates[cur] = d
	}
	for _, s := range a.TouchpointSources {
		p.sources[s] = true
	}
	h, err := lru.New[string, *history](a.HistoryCacheSize)
	if err != nil {
		return nil, fmt.Errorf("attribution: history cache: %w", err)
	}
	p.hist = h
	if p.costIDs, err = lru.New[string, struct{}](a.HistoryCacheSize); err != nil {
		return nil, fmt.Errorf("attribution: cost cache: %w", err)
	}
	p.led = newLedger(opt.Conn, p.paramsText())
	p.poison.m = map[pos]string{}
	p.m = metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partners_attribution_records_total", Help: "Kafka records handled by the attribution processor, by topic and outcome (ok, dead_letter; duplicate: its id was already counted; replayed: its offset was already counted).",
		}, []string{"topic", "outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partners_attribution_rows_inserted_total", Help: "Rows inserted into ClickHouse, by table (duplicates on replay included).",
		}, []string{"table"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_attribution_batch_retries_total", Help: "Batches retried because ClickHouse or Kafka failed.",
		}),
		batchDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "partners_attribution_batch_seconds", Help: "Time to attribute and insert one batch.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		batchLen: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "partners_attribution_batch_rows", Help: "Kafka records per ClickHouse insert batch (batch sizes).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		pending: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_attribution_refunds_pending_total", Help: "Refunds seen before the conversion they refund (credited when it arrives).",
		}),
		recRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_attribution_reconcile_runs_total", Help: "Reconciliations of roi_daily against the raw tables.",
		}),
		recBad: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partners_attribution_reconcile_mismatches", Help: "(model, day, partner, previous day) keys where roi_daily and the raw tables disagreed in the last reconciliation (0: equal).",
		}),
	}
	if opt.Metrics != nil {
		for _, c := range []prometheus.Collector{p.m.records, p.m.rows, p.m.retries, p.m.batchDur, p.m.batchLen, p.m.pending, p.m.recRuns, p.m.recBad} {
			if err := opt.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("attribution metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Topics are the broker names of the topics the processor consumes.
func (p *Processor) Topics() []string {
	return []string{
		p.names.Topic(schemas.TopicTouchpoints),
		p.names.Topic(schemas.TopicConversions),
		p.names.Topic(schemas.TopicCosts),
	}
}

// Group is the consumer group of the processor.
func (p *Processor) Group() string {
	return p.opt.Kafka.Group("attribution")
}

// Run consumes until ctx ends. Records are gathered into a batch until
// partner.attribution.batch.size records or batch.linger_sec after the
// first one, then attributed and inserted; the batch's offsets are committed
// only after every insert (and every dead letter) succeeded. A failing batch
// is retried with backoff (100 ms doubling to 10 s) until it succeeds or ctx
// ends; nothing is committed meanwhile, so a restart replays it.
func (p *Processor) Run(ctx context.Context) error {
	// The model parameters must be those the rollup was built with; wait
	// for ClickHouse if it is not up yet.
	if err := p.waitLedger(ctx); err != nil {
		return err
	}
	reset := func(context.Context, *kgo.Client, map[string][]int32) {
		p.hist.Purge()
		p.led.invalidate()
	}
	opts := append(kafka.ConsumerOptions(),
		kgo.ConsumerGroup(p.Group()),
		kgo.ConsumeTopics(p.Topics()...),
		// Touchpoints and conversions are both keyed by user id over the same
		// partition count: the range balancer gives one member the same
		// partition numbers of every topic, so one process sees all of a
		// user's records and its history cache stays coherent.
		kgo.Balancers(kgo.RangeBalancer()),
		// A partition that moved may have been written by another member:
		// forget cached histories (ClickHouse is reloaded on the next miss)
		// and reload the ledger (after that member's inserts finished).
		kgo.OnPartitionsAssigned(reset), kgo.OnPartitionsRevoked(reset), kgo.OnPartitionsLost(reset),
	)
	// A plain client (no group) for the check: the workers join below.
	check, err := p.opt.Kafka.NewClient()
	if err != nil {
		return err
	}
	err = p.checkLedgerAgainstLog(ctx, check)
	check.Close()
	if err != nil {
		return err
	}
	rctx, stopReconcile := context.WithCancel(ctx)
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		p.reconcileLoop(rctx)
	}()
	defer func() {
		stopReconcile()
		<-reconciled
	}()
	// partner.attribution.workers members of the group in this process:
	// each owns some partition numbers (of every topic, as above) and runs
	// its own batches, so one's ClickHouse round trips overlap another's
	// work. Their caches and ledger are shared (per user, per partition).
	b := p.opt.Config.Batch
	g, gctx := errgroup.WithContext(ctx)
	for w := range max(1, p.opt.Config.Workers) {
		cl, err := p.opt.Kafka.NewClient(opts...)
		if err != nil {
			return err
		}
		g.Go(func() error {
			defer cl.Close()
			return kafka.ConsumeBatches(gctx, cl, p.opt.Log.With("component", "attribution", "worker", w),
				kafka.Batching{Size: b.Size, Linger: b.Linger, MaxBytes: maxBatchBytes}, p.handleBatch)
		})
	}
	return g.Wait()
}

// maxBatchBytes caps the records one batch gathers (keys and values): a
// batch of batch.size records of up to max_record_bytes each (20,000 of
// 64 KiB would be 1.3 GB per worker) is cut short at 64 MiB. Typical records
// of about 500 bytes fill batch.size long before.
const maxBatchBytes = 64 << 20

// waitLedger loads the ingest ledger, retrying while ClickHouse is
// unreachable; different model parameters are an error.
func (p *Processor) waitLedger(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := p.led.load(ctx)
		if err == nil || errors.Is(err, ErrParamsChanged) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		p.opt.Log.Warn("attribution: ingest ledger not readable yet; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// paramsText names the parameters the attribution split depends on.
// Corrections are differences of splits, so a rollup is only extended under
// the parameters it was built with. split=2 is the version of the split
// rules (models package doc).
func (p *Processor) paramsText() string {
	return fmt.Sprintf("lookback=%s half_life=%s split=2", p.params.Lookback, p.params.HalfLife)
}

// handleBatch attributes and inserts one batch, with its metrics: a failure
// counts as a retry (ConsumeBatches handles the batch again).
func (p *Processor) handleBatch(ctx context.Context, recs []*kgo.Record) error {
	t0 := time.Now()
	if err := p.Handle(ctx, recs); err != nil {
		if ctx.Err() == nil {
			p.m.retries.Inc()
		}
		return err
	}
	p.m.batchDur.Observe(time.Since(t0).Seconds())
	p.m.batchLen.Observe(float64(len(recs)))
	return nil
}
