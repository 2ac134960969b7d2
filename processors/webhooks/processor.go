package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// Tenants is what the processor reads of the tenant registry.
type Tenants interface {
	Get(id string) (*schemas.Tenant, bool)
	List() []*schemas.Tenant
}

// Disabler disables an endpoint that answered 410 Gone (registry.Writer).
type Disabler interface {
	DisableEndpoint(ctx context.Context, id, endpointID, reason string) (*schemas.Tenant, error)
}

// Options configure a Processor.
type Options struct {
	Config         config.Webhooks // the partner.webhooks section
	Kafka          kafka.Cluster   // brokers, topic names, client settings
	Tenants        Tenants
	Disabler       Disabler // nil: a 410 is dead-lettered but the endpoint stays enabled
	Log            *slog.Logger
	Metrics        prometheus.Registerer // nil: metrics are not registered
	TracerProvider trace.TracerProvider  // nil: the global provider
	// InstanceID names the instance in transactional ids; empty:
	// partner.webhooks.instance_id, else the host name.
	InstanceID string
}

// Task is a record of a retry topic: one pending delivery. Body holds the
// exact bytes of the first attempt so every retry and replay sends the same
// content under the same webhook-id.
type Task struct {
	SchemaVersion  string    `json:"schema_version"`
	DeliveryID     string    `json:"delivery_id"`
	TenantID       string    `json:"tenant_id"`
	EndpointID     string    `json:"endpoint_id"`
	EventID        string    `json:"event_id"`
	EventType      string    `json:"event_type"`
	Stage          int       `json:"stage"`    // retry topic this record is in (1-based)
	Attempts       int       `json:"attempts"` // attempts made so far
	NotBefore      time.Time `json:"not_before"`
	FirstAttemptAt time.Time `json:"first_attempt_at"`
	LastAttemptAt  time.Time `json:"last_attempt_at"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	TraceID        string    `json:"trace_id,omitempty"`
	SpanID         string    `json:"span_id,omitempty"` // last attempt's span, linked by the next
	Replayed       bool      `json:"replayed,omitempty"`
	Body           []byte    `json:"body"`
}

// Processor is the webhook fan-out.
type Processor struct {
	wh      config.Webhooks
	kafka   kafka.Cluster
	names   kafka.Names
	tenants Tenants
	disable Disabler
	log     *slog.Logger
	tracer  trace.Tracer
	hc      *http.Client
	filters *filters
	known   map[string]bool
	inst    string

	global chan struct{} // overall concurrency

	mu       sync.Mutex
	lanes    map[string]*lane
	breakers map[string]*gobreaker.CircuitBreaker[Attempt]

	m metrics
}

// lane is one endpoint's bulkhead: a FIFO queue with at most PerEndpoint
// requests in flight. Deliveries start in the order they were submitted, so
// a partition's records finish roughly in offset order and the committed
// watermark stays close behind (few repeats after a crash). When its queue is
// long and nothing completed for a while (a hanging or very slow endpoint),
// new deliveries take the retry path at once instead of queueing, so such
// an endpoint never piles up work; a healthy endpoint with a backlog keeps
// completing requests and simply queues.
type lane struct {
	max      int
	mu       sync.Mutex
	running  int
	queue    []func()
	progress atomic.Int64 // unix nanos of the last completed request (or creation)
}

// submit runs fn now if a slot is free, else queues it. The goroutine that
// finishes a job runs the next queued one: no goroutine per waiting job.
func (l *lane) submit(fn func()) {
	l.mu.Lock()
	if l.running < l.max {
		l.running++
		l.mu.Unlock()
		go l.work(fn)
		return
	}
	l.queue = append(l.queue, fn)
	l.mu.Unlock()
}

func (l *lane) work(fn func()) {
	for {
		fn()
		l.progress.Store(time.Now().UnixNano())
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.running--
			l.mu.Unlock()
			return
		}
		fn = l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()
	}
}

// saturated reports whether the lane holds more than queueCap waiting jobs
// and completed nothing for stall.
func (l *lane) saturated(queueCap int, stall time.Duration) bool {
	l.mu.Lock()
	n := len(l.queue)
	l.mu.Unlock()
	return n > queueCap && time.Since(time.Unix(0, l.progress.Load())) > stall
}

type metrics struct {
	attempts  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	dlq       *prometheus.CounterVec
	dlqDepth  *prometheus.GaugeVec
	malformed *prometheus.CounterVec
	inflight  prometheus.Gauge
	breaker   *prometheus.CounterVec
}

// New returns a processor. It does not start anything.
func New(opt Options) (*Processor, error) {
	wh := opt.Config
	g, err := NewGuard(wh.AllowPrivate)
	if err != nil {
		return nil, err
	}
	f, err := newFilters()
	if err != nil {
		return nil, err
	}
	tp := opt.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	inst := opt.InstanceID
	if inst == "" {
		inst = wh.InstanceID
	}
	if inst == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			inst = h
		} else {
			inst = randomHex(6)
		}
	}
	if opt.Kafka.Log == nil {
		opt.Kafka.Log = opt.Log
	}
	p := &Processor{
		wh: wh, kafka: opt.Kafka, names: opt.Kafka.Names(),
		tenants: opt.Tenants, disable: opt.Disabler, log: opt.Log.With("component", "webhooks"),
		tracer:  tp.Tracer("github.com/partners-engine/partners-engine/processors/webhooks"),
		filters: f, known: map[string]bool{}, inst: inst,
		global: make(chan struct{}, wh.Concurrency),
		lanes:  map[string]*lane{}, breakers: map[string]*gobreaker.CircuitBreaker[Attempt]{},
	}
	p.hc = newHTTPClient(p.wh, g)
	for _, t := range p.wh.EventTypes {
		p.known[t] = true
	}
	p.m = metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_attempts_total",
			Help: "Webhook attempts by outcome (delivered, retry, failed, disabled, skipped) and retry stage."}, []string{"outcome", "stage"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "partners_webhook_attempt_seconds",
			Help: "Latency of webhook HTTP attempts by outcome.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}, []string{"outcome"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_dead_letters_total",
			Help: "Records written to the webhooks DLQ by reason class."}, []string{"reason"}),
		dlqDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "partners_webhook_dlq_depth",
			Help: "Dead letters on partners.webhooks.dlq per tenant (within retention, since the process started reading it); alert on increase. tenant_id is \"\" for malformed events."}, []string{"tenant_id"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_malformed_events_total",
			Help: "Events dead-lettered before fan-out, by reason."}, []string{"reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "partners_webhook_inflight_requests",
			Help: "Webhook HTTP requests in flight."}),
		breaker: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_webhook_breaker_transitions_total",
			Help: "Circuit breaker state changes by new state."}, []string{"state"}),
	}
	if opt.Metrics != nil {
		for _, c := range []prometheus.Collector{p.m.attempts, p.m.latency, p.m.dlq, p.m.dlqDepth, p.m.malformed, p.m.inflight, p.m.breaker} {
			if err := opt.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("webhooks metrics: %w", err)
			}
		}
	}
	return p, nil
}

// Run runs the first-attempt stage on partners.events.v1, one stage per retry
// topic and the DLQ depth watcher until ctx ends.
func (p *Processor) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.newStage(0).run(gctx) })
	for n := 1; n < p.wh.Retry.MaxAttempts; n++ {
		g.Go(func() error { return p.newStage(n).run(gctx) })
	}
	g.Go(func() error { return p.watchDLQ(gctx) })
	return g.Wait()
}

func (p *Processor) lane(endpointID string) *lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.lanes[endpointID]
	if !ok {
		l = &lane{max: p.wh.PerEndpoint}
		l.progress.Store(time.Now().UnixNano())
		p.lanes[endpointID] = l
	}
	return l
}

// errRetryable is what a retryable attempt returns to its breaker.
var errRetryable = errors.New("retryable failure")

func (p *Processor) breaker(endpointID string) *gobreaker.CircuitBreaker[Attempt] {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.breakers[endpointID]
	if !ok {
		n := uint32(p.wh.Breaker.ConsecutiveFailures)
		b = gobreaker.NewCircuitBreaker[Attempt](gobreaker.Settings{
			Name:        endpointID,
			MaxRequests: 1, // one half-open probe
			Timeout:     p.wh.Breaker.Open,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n },
			OnStateChange: func(name string, from, to gobreaker.State) {
				p.m.breaker.WithLabelValues(to.String()).Inc()
				p.log.Info("circuit breaker", "endpoint_id", name, "from", from.String(), "to", to.String())
			},
			IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		})
		p.breakers[endpointID] = b
	}
	return b
}

// BreakerState returns the state of an endpoint's breaker (tests, metrics).
func (p *Processor) BreakerState(endpointID string) gobreaker.State {
	return p.breaker(endpointID).State()
}

// job is one delivery attempt to make.
type job struct {
	tenant   *schemas.Tenant
	endpoint schemas.Endpoint
	task     Task // Stage = the stage the attempt runs in (0: first attempt)
	parent   context.Context
}

// outcome is the result of one attempt: the attempt itself and the log
// record, plus where the delivery goes next.
type outcome struct {
	att     Attempt
	skipped bool   // no HTTP call made (breaker open, endpoint saturated)
	result  string // schemas.Outcome*
	spanCtx trace.SpanContext
}

// errSaturated is the skip reason of a delivery refused by a stalled lane.
const errSaturated = "endpoint saturated: bulkhead queue full and no response completed recently"

// attempt makes one attempt through the endpoint's breaker, in a span linked
// to the previous attempt; with skip set it makes no call and records the
// attempt as skipped for that reason. The caller runs it in the endpoint's lane.
func (p *Processor) attempt(ctx context.Context, j *job, skip string) outcome {
	attempt := j.task.Attempts + 1
	host := ""
	if u, err := url.Parse(j.endpoint.URL); err == nil {
		host = u.Hostname()
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("tenant.id", j.tenant.ID), attribute.String("webhook.endpoint.id", j.endpoint.ID),
		attribute.String("webhook.endpoint.host", host), attribute.Int("webhook.attempt", attempt),
		attribute.String("webhook.id", j.task.DeliveryID), attribute.String("event.type", j.task.EventType))}
	if prev := prevSpan(j.task); prev.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: prev}))
	}
	parent := j.parent
	if parent == nil {
		parent = ctx
	}
	sctx, span := p.tracer.Start(parent, "webhook attempt", opts...)
	defer span.End()
	// The HTTP call runs under ctx's cancellation with the span's context.
	sctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(sctx))

	out := outcome{spanCtx: span.SpanContext()}
	now := time.Now()
	if skip != "" {
		out.skipped, out.result = true, schemas.OutcomeSkipped
		out.att = Attempt{Class: Retryable, Err: skip, At: now}
		span.SetAttributes(attribute.String("webhook.outcome", out.result))
		return out
	}
	select {
	case p.global <- struct{}{}:
	case <-ctx.Done():
		out.att = Attempt{Class: Retryable, Err: ctx.Err().Error(), At: now}
		out.result = "cancelled"
		return out
	}
	defer func() { <-p.global }()

	req := Request{URL: j.endpoint.URL, ID: j.task.DeliveryID, EventType: j.task.EventType, Body: j.task.Body,
		Secrets: activeSecrets(j.endpoint, time.Now()), Headers: j.endpoint.Headers}
	p.m.inflight.Inc()
	att, err := p.breaker(j.endpoint.ID).Execute(func() (Attempt, error) {
		a := send(sctx, p.hc, p.wh.MaxBodyBytes, req, time.Now())
		if a.Class == Retryable {
			if ctx.Err() != nil {
				return a, context.Canceled
			}
			return a, errRetryable
		}
		return a, nil
	})
	p.m.inflight.Dec()
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		out.skipped, out.result = true, schemas.OutcomeSkipped
		out.att = Attempt{Class: Retryable, Err: "circuit open: " + err.Error(), At: now}
	case ctx.Err() != nil:
		out.att, out.result = att, "cancelled"
		return out
	default:
		out.att = att
		switch att.Class {
		case Delivered:
			out.result = schemas.OutcomeDelivered
		case Retryable:
			out.result = schemas.OutcomeRetry
		case Gone:
			out.result = schemas.OutcomeDisabled
		default:
			out.result = schemas.OutcomeFailed
		}
	}
	span.SetAttributes(attribute.Int("http.response.status_code", out.att.StatusCode), attribute.String("webhook.outcome", out.result))
	if out.result != schemas.OutcomeDelivered {
		span.SetStatus(codes.Error, out.att.Err)
	}
	return out
}

func prevSpan(t Task) trace.SpanContext {
	tid, err1 := trace.TraceIDFromHex(t.TraceID)
	sid, err2 := trace.SpanIDFromHex(t.SpanID)
	if err1 != nil || err2 != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// records turns an outcome into the records to produce in the stage's
// transaction: the attempt log, and the next retry topic or the DLQ.
func (p *Processor) records(ctx context.Context, j *job, o outcome, stage string) []*kgo.Record {
	t := j.task
	t.Attempts++
	if t.FirstAttemptAt.IsZero() {
		t.FirstAttemptAt = o.att.At.UTC()
	}
	t.LastAttemptAt = o.att.At.UTC()
	t.LastStatus, t.LastError = o.att.StatusCode, o.att.Err
	if o.spanCtx.IsValid() {
		t.TraceID, t.SpanID = o.spanCtx.TraceID().String(), o.spanCtx.SpanID().String()
	}
	// The logged outcome says where the delivery went: a retryable failure
	// of the last attempt is "failed" (dead-lettered), not "retry".
	next := t.Stage + 1
	result := o.result
	if (result == schemas.OutcomeRetry || result == schemas.OutcomeSkipped) && next >= p.wh.Retry.MaxAttempts {
		result = schemas.OutcomeFailed
	}
	p.m.attempts.WithLabelValues(result, stage).Inc()
	if !o.skipped {
		p.m.latency.WithLabelValues(result).Observe(o.att.Latency.Seconds())
	}
	attempt := schemas.DeliveryAttempt{
		SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("%s/%d", t.DeliveryID, t.Attempts), DeliveryID: t.DeliveryID,
		TenantID: t.TenantID, EndpointID: t.EndpointID, EventID: t.EventID, EventType: t.EventType, Attempt: t.Attempts,
		StatusCode: o.att.StatusCode, Outcome: result, LatencyMS: float64(o.att.Latency.Microseconds()) / 1000,
		Error: o.att.Err, TraceID: t.TraceID, AttemptedAt: o.att.At.UTC(),
	}
	spanCtx := trace.ContextWithSpanContext(ctx, o.spanCtx)
	out := []*kgo.Record{p.record(spanCtx, p.names.Topic(schemas.TopicDeliveries), t.DeliveryID, attempt)}
	log := p.log.With("tenant_id", t.TenantID, "delivery_id", t.DeliveryID, "trace_id", t.TraceID, "attempt", t.Attempts)
	switch o.result {
	case schemas.OutcomeDelivered:
		log.Debug("delivered", "status", o.att.StatusCode)
	case schemas.OutcomeRetry, schemas.OutcomeSkipped:
		if next >= p.wh.Retry.MaxAttempts {
			log.Info("attempts exhausted; dead-lettering", "status", o.att.StatusCode, "err", o.att.Err)
			if dl := p.deadLetter(spanCtx, t, "attempts exhausted", stage); dl != nil {
				out = append(out, dl)
			}
			break
		}
		delay := p.wh.Retry.Delay(next)
		if ra := min(o.att.RetryAfter, p.wh.MaxRetryAfter); ra > delay {
			delay = ra
		}
		t.Stage = next
		t.NotBefore = time.Now().Add(delay).UTC()
		log.Debug("retrying", "stage", next, "in", delay, "err", o.att.Err)
		out = append(out, p.record(spanCtx, p.names.Retry(next), t.DeliveryID, t))
	case schemas.OutcomeDisabled:
		log.Warn("endpoint answered 410 Gone; disabling it", "endpoint_id", t.EndpointID)
		if p.disable != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			if _, err := p.disable.DisableEndpoint(dctx, t.TenantID, t.EndpointID, "410 Gone from the endpoint"); err != nil {
				log.Error("disable endpoint failed", "endpoint_id", t.EndpointID, "err", err)
			}
			cancel()
		}
		if dl := p.deadLetter(spanCtx, t, "endpoint gone (410): endpoint disabled", stage); dl != nil {
			out = append(out, dl)
		}
	default:
		log.Info("permanent failure; dead-lettering", "status", o.att.StatusCode, "err", o.att.Err)
		if dl := p.deadLetter(spanCtx, t, "permanent failure: "+o.att.Err, stage); dl != nil {
			out = append(out, dl)
		}
	}
	return out
}

func (p *Processor) deadLetter(ctx context.Context, t Task, reason, stage string) *kgo.Record {
	p.m.dlq.WithLabelValues(reasonClass(reason)).Inc()
	if !p.wh.DLQ.Enabled {
		p.log.Warn("DLQ disabled: dropping failed delivery", "tenant_id", t.TenantID, "delivery_id", t.DeliveryID, "reason", reason)
		return nil
	}
	src := p.names.Topic(schemas.TopicEvents)
	if t.Stage > 0 {
		src = p.names.Retry(t.Stage)
	}
	dl := schemas.DeadLetter{
		SchemaVersion: schemas.SchemaVersion, DeliveryID: t.DeliveryID, TenantID: t.TenantID, EndpointID: t.EndpointID,
		EventID: t.EventID, EventType: t.EventType, Attempts: t.Attempts, LastStatus: t.LastStatus, LastError: t.LastError,
		Reason: reason, SourceTopic: src, TraceID: t.TraceID, FirstAttemptAt: t.FirstAttemptAt, LastAttemptAt: t.LastAttemptAt,
		Payload: json.RawMessage(t.Body),
	}
	return p.record(ctx, p.names.Topic(schemas.TopicDLQ), t.DeliveryID, dl)
}

func reasonClass(reason string) string {
	for _, c := range []string{"attempts exhausted", "permanent failure", "endpoint gone", "endpoint", "tenant", "malformed", "unknown event type", "oversized", "render"} {
		if len(reason) >= len(c) && reason[:len(c)] == c {
			return c
		}
	}
	return "other"
}

// record marshals v into a record for topic with the trace context of ctx.
func (p *Processor) record(ctx context.Context, topic, key string, v any) *kgo.Record {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("webhooks: marshal %T: %v", v, err)) // our own types always marshal
	}
	// Context makes kotel's publish span a child of the attempt's span, so
	// the header it injects keeps the delivery in one trace.
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: b, Context: ctx}
	kafka.Inject(ctx, r)
	return r
}

// Close releases idle HTTP connections. Call it after Run returned.
func (p *Processor) Close() { p.hc.CloseIdleConnections() }
