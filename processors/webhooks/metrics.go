package webhooks

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	attempts  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	dlq       *prometheus.CounterVec
	dlqDepth  prometheus.Gauge
	malformed *prometheus.CounterVec
	inflight  prometheus.Gauge
	breaker   *prometheus.CounterVec
	held      *prometheus.CounterVec
	replayed  prometheus.Counter
	tracked   prometheus.GaugeFunc
	sessions  *prometheus.CounterVec
}

func newMetrics(tracked func() float64) metrics {
	return metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_attempts_total",
			Help: "Webhook HTTP attempts by outcome (delivered, retry, failed, disabled) and retry stage (first, 1, 2, …, fifo)."}, []string{"outcome", "stage"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "partners_webhook_attempt_seconds",
			Help: "Latency of webhook HTTP attempts by outcome.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"outcome"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_dead_letters_total",
			Help: "Records written to the webhooks DLQ, by reason code."}, []string{"reason"}),
		dlqDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "partners_webhook_dlq_depth",
			Help: "Dead letters waiting in the DLQ index (status dead, within retention): goes down on replay, recovery and expiry."}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_malformed_events_total",
			Help: "Events dead-lettered before fan-out, by reason code."}, []string{"reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "partners_webhook_inflight_requests",
			Help: "Webhook HTTP requests in flight."}),
		breaker: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_breaker_transitions_total",
			Help: "Circuit breaker state changes by new state (open, half-open, closed)."}, []string{"state"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_held_total",
			Help: "Deliveries held without an attempt, by reason (breaker_open, retry_after, endpoint_saturated, recovering)."}, []string{"reason"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_webhook_replayed_total",
			Help: "Dead letters replayed (dlq replay and recover)."}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_kafka_sessions_restarted_total",
			Help: "Kafka sessions of a stage (first, 1, 2, …, fifo) that failed and were replaced by a new one (a transaction that could not be ended: the brokers were down); the unfinished records are handled again."}, []string{"stage"}),
		tracked: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "partners_webhook_tracked_endpoints",
			Help: "Endpoints with breaker or bulkhead state in memory (shrinks as endpoints go idle or away)."}, tracked),
	}
}

func (m metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.attempts, m.latency, m.dlq, m.dlqDepth, m.malformed, m.inflight, m.breaker, m.held, m.replayed, m.tracked, m.sessions} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("webhooks metrics: %w", err)
		}
	}
	return nil
}
