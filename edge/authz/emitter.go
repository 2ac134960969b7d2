package authz

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
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
// to a bounded channel and never waits; when the channel is full (Kafka slow
// or down and the producer's own buffer full) the record is dropped and
// counted. One goroutine, owned by Server.Serve, feeds the producer.
type emitter struct {
	ch       chan outgoing
	prod     Producer
	log      *slog.Logger
	dropped  *prometheus.CounterVec
	produced *prometheus.CounterVec
	failed   *prometheus.CounterVec
}

func newEmitter(prod Producer, size int, log *slog.Logger) *emitter {
	return &emitter{
		ch:   make(chan outgoing, size),
		prod: prod,
		log:  log,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_dropped_total",
			Help: "Touchpoint and audit records dropped because the buffer to Kafka was full."}, []string{"kind"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_produced_total",
			Help: "Touchpoint and audit records acknowledged by Kafka."}, []string{"kind"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_edge_records_failed_total",
			Help: "Touchpoint and audit records Kafka refused after retries."}, []string{"kind"}),
	}
}

// offer queues a record without blocking.
func (e *emitter) offer(kind string, rec *kgo.Record) {
	select {
	case e.ch <- outgoing{kind: kind, rec: rec}:
	default:
		e.dropped.WithLabelValues(kind).Inc()
	}
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
						e.dropped.WithLabelValues(o.kind).Inc()
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
	e.prod.Produce(ctx, o.rec, func(r *kgo.Record, err error) {
		if err != nil {
			e.failed.WithLabelValues(o.kind).Inc()
			e.log.Warn("edge record not produced", "kind", o.kind, "topic", r.Topic, "err", err)
			return
		}
		e.produced.WithLabelValues(o.kind).Inc()
	})
}
