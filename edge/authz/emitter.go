package authz

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/edge/spool"
)

// Producer is what the plugin needs of a Kafka client: an asynchronous
// produce with a completion callback (kgo.Client implements it).
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// Record kinds, the low-cardinality label of the emitter's metrics.
const (
	KindTouchpoint = "touchpoint"
	KindAudit      = "audit"
)

type outgoing struct {
	kind string
	rec  *kgo.Record
}

// emitter hands records to Kafka off the Check path: Check offers a record
// to a bounded channel and never waits on Kafka. A record Kafka cannot take
// — the channel full because the producer's own buffer is, or refused
// after the producer's retries, or still unsent at shutdown — goes to the
// spool on local disk (edge.spool), which replays it once Kafka answers;
// only a full or unusable spool drops records, counted. One goroutine,
// owned by Server.Serve, feeds the producer.
type emitter struct {
	ch       chan outgoing
	prod     Producer
	log      *slog.Logger
	spool    atomic.Pointer[spool.Spool] // nil: none (not serving, or edge.spool.dir empty)
	inflight sync.WaitGroup              // records handed to the producer, promise not called yet
	warned   atomic.Int64                // unix ns of the last "not produced" warning
	unwarned atomic.Int64                // refusals since it
	dropped  *prometheus.CounterVec
	produced *prometheus.CounterVec
	failed   *prometheus.CounterVec
	spooled  *prometheus.CounterVec
	replayed *prometheus.CounterVec
	expired  *prometheus.CounterVec
	corrupt  prometheus.Counter
	size     prometheus.GaugeFunc
}

func newEmitter(prod Producer, size int, log *slog.Logger) *emitter {
	e := &emitter{
		ch:   make(chan outgoing, size),
		prod: prod,
		log:  log,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_dropped_total",
			Help: "Touchpoint and audit records dropped because the buffer to Kafka was full."}, []string{"kind"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_produced_total",
			Help: "Touchpoint and audit records acknowledged by Kafka."}, []string{"kind"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_failed_total",
			Help: "Touchpoint and audit records Kafka refused after the producer's retries (they go to the spool)."}, []string{"kind"}),
		spooled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_spooled_total",
			Help: "Touchpoint and audit records written to the local spool because Kafka could not take them."}, []string{"kind"}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_replayed_total",
			Help: "Spooled touchpoint and audit records Kafka acknowledged on replay."}, []string{"kind"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_expired_total",
			Help: "Spooled records dropped at replay because they were older than edge.spool.max_age_sec."}, []string{"kind"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_edge_spool_corrupt_frames_total",
			Help: "Spool frames that failed their checksum (a write torn by a kill); the rest of their segment is skipped."}),
	}
	e.size = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "partners_edge_spool_bytes",
		Help: "Bytes of records in the local spool, waiting for Kafka."}, func() float64 {
		if s := e.spool.Load(); s != nil {
			return float64(s.Size())
		}
		return 0
	})
	return e
}

func (e *emitter) collectors() []prometheus.Collector {
	return []prometheus.Collector{e.dropped, e.produced, e.failed, e.spooled, e.replayed, e.expired, e.corrupt, e.size}
}

// offer queues a record without blocking on Kafka; with the channel full
// it goes to the spool (one local file write).
func (e *emitter) offer(kind string, rec *kgo.Record) {
	select {
	case e.ch <- outgoing{kind: kind, rec: rec}:
	default:
		e.keep(kind, rec, nil)
	}
}

// keep writes a record Kafka could not take to the spool, or counts it
// dropped when there is none or it is full.
func (e *emitter) keep(kind string, rec *kgo.Record, cause error) {
	s := e.spool.Load()
	if s == nil {
		e.dropped.WithLabelValues(kind).Inc()
		return
	}
	err := s.Put(kind, &kgo.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Timestamp: rec.Timestamp})
	if err != nil {
		e.dropped.WithLabelValues(kind).Inc()
		e.log.Warn("edge record dropped: the spool cannot take it", "kind", kind, "topic", rec.Topic, "err", err, "cause", cause)
		return
	}
	e.spooled.WithLabelValues(kind).Inc()
}

// replay runs the spool's replay loop until ctx ends.
func (e *emitter) replay(ctx context.Context, s *spool.Spool, interval time.Duration) {
	s.Run(ctx, e.prod, interval, 10*time.Second, func(r spool.Result, err error) {
		n := 0
		for kind, c := range r.Replayed {
			e.replayed.WithLabelValues(kind).Add(float64(c))
			n += c
		}
		for kind, c := range r.Expired {
			e.expired.WithLabelValues(kind).Add(float64(c))
		}
		e.corrupt.Add(float64(r.Corrupt))
		if n > 0 || r.Corrupt > 0 || len(r.Expired) > 0 {
			e.log.Info("edge spool replayed", "records", n, "expired", r.Expired, "corrupt", r.Corrupt, "left_bytes", s.Size())
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			e.log.Warn("edge spool replay stopped; Kafka is not taking records yet", "err", err, "left_bytes", s.Size())
		}
	})
}

// run feeds the producer until ctx ends, then hands over what is still
// buffered. Records are produced under a context that outlives ctx by
// drain, so a shutdown neither fails records already handed over nor hangs
// on a Kafka that is down (the process flushes the producer afterwards).
func (e *emitter) run(ctx context.Context, drain time.Duration) {
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(drain, cancel) })
	defer stop()
	for {
		select {
		case o := <-e.ch:
			e.produce(pctx, o)
		case <-ctx.Done():
			for {
				select {
				case o := <-e.ch:
					if pctx.Err() != nil {
						e.keep(o.kind, o.rec, pctx.Err())
						continue
					}
					e.produce(pctx, o)
				default:
					return
				}
			}
		}
	}
}

func (e *emitter) produce(ctx context.Context, o outgoing) {
	e.inflight.Add(1)
	e.prod.Produce(ctx, o.rec, func(r *kgo.Record, err error) {
		defer e.inflight.Done()
		if err != nil {
			e.failed.WithLabelValues(o.kind).Inc()
			e.keep(o.kind, o.rec, err)
			// One warning per 10 s, not one per record of an outage.
			n := e.unwarned.Add(1)
			if now, last := time.Now().UnixNano(), e.warned.Load(); now-last >= int64(10*time.Second) && e.warned.CompareAndSwap(last, now) {
				e.unwarned.Add(-n)
				e.log.Warn("edge records not produced; spooled", "kind", o.kind, "topic", r.Topic, "records", n, "err", err)
			}
			return
		}
		e.produced.WithLabelValues(o.kind).Inc()
	})
}

// settle waits, up to d, for the producer to call back on every record
// handed to it (so the refused ones reach the spool before it closes).
func (e *emitter) settle(d time.Duration) bool {
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
