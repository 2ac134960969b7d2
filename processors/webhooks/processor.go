package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/schemas"
)

// Tenants is what the processor reads of the tenant registry.
type Tenants interface {
	Get(id string) (*schemas.Tenant, bool)
	// List returns every tenant; the slice is shared until the next change
	// (a new slice after a change), which the fan-out index relies on.
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

// Processor is the webhook fan-out: the first-attempt stage on
// partners.events.v1, one stage per retry topic, the FIFO stage, the DLQ
// index and the command runner.
type Processor struct {
	wh      config.Webhooks
	kafka   kafka.Cluster
	names   kafka.Names
	tenants Tenants
	log     *slog.Logger
	tracer  trace.Tracer
	hc      *http.Client
	filters *filters
	known   map[string]bool
	inst    string
	policy  policy
	gates   *gates
	bulk    *bulkhead
	subs    subscriptions
	index   *dlqIndex
	cmds    *commands
	m       metrics

	replayMu sync.Mutex

	// httpCtx runs the stages' HTTP attempts: it outlives the stages'
	// intake so started attempts finish at shutdown.
	httpCtx context.Context
}

// New returns a processor. It does not start anything.
func New(opt Options) (*Processor, error) {
	wh := opt.Config
	rules, err := ssrf.ParseRules(wh.AllowPrivate)
	if err != nil {
		return nil, fmt.Errorf("partner.webhooks.allow_private_networks: %w", err)
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
	log := opt.Log.With("component", "webhooks")
	if opt.Kafka.Log == nil {
		opt.Kafka.Log = opt.Log
	}
	p := &Processor{
		wh: wh, kafka: opt.Kafka, names: opt.Kafka.Names(),
		tenants: opt.Tenants, log: log,
		tracer:  tp.Tracer("github.com/partners-engine/partners-engine/processors/webhooks"),
		filters: f, known: map[string]bool{}, inst: inst, policy: newPolicy(wh),
		bulk:    newBulkhead(wh.Concurrency, wh.PerTenant, wh.PerEndpoint),
		httpCtx: context.Background(),
	}
	p.m = newMetrics(func() float64 { return float64(p.gates.len()) })
	p.gates = newGates(newGateConfig(wh, func(id string, from, to gateState) {
		p.m.breaker.WithLabelValues(to.String()).Inc()
		p.log.Info("circuit breaker", "endpoint_id", id, "from", from.String(), "to", to.String())
	}))
	p.hc = newHTTPClient(wh, ssrf.NewGuard(rules))
	for _, t := range wh.EventTypes {
		p.known[t] = true
	}
	p.index = newDLQIndex(p)
	p.cmds = newCommands(opt.Disabler, log)
	if err := p.m.register(opt.Metrics); err != nil {
		return nil, err
	}
	return p, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// commitInterval is the shortest time between a stage's commits: each
// holds the stage's loop for a round of broker calls, so fewer of them
// leave more time for the work; moves and attempt logs wait at most this.
const commitInterval = 50 * time.Millisecond

// InFlightWindow is the most records one stage holds accepted but not yet
// committed: a kill -9 can make a stage deliver again at most the
// deliveries of that many records (one per record of a retry topic; one per
// subscribed endpoint of an event).
func InFlightWindow(w config.Webhooks) int { return max(4*w.Concurrency, 1024) }

// Run runs every stage, the DLQ index, the command runner and the sweeper
// of idle endpoint state until ctx ends. Shutdown stops intake, lets
// started attempts finish (bounded by the HTTP timeout), commits, and only
// then cancels what is left.
func (p *Processor) Run(ctx context.Context) error {
	httpCtx, cancelHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHTTP()
	p.httpCtx = httpCtx
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range p.stages() {
		g.Go(func() error { return s.Run(gctx) })
	}
	g.Go(func() error { return p.index.Run(gctx) })
	g.Go(func() error { p.cmds.Run(gctx); return nil })
	g.Go(func() error { p.sweep(gctx); return nil })
	return g.Wait()
}

// stages are the first-attempt stage, one per retry topic, and the FIFO stage.
func (p *Processor) stages() []*kafka.TxnStage {
	base := p.kafka.Opts()
	drain := p.wh.Timeouts.Total + time.Second
	// Every topic a stage's handler may produce to: a stage closes the
	// transactions Kafka left open on them at start (internal/kafka
	// orphans.go).
	outputs := []string{p.names.Topic(schemas.TopicDeliveries), p.names.Topic(schemas.TopicDLQ),
		p.names.Topic(schemas.TopicDLQIndex), p.names.Topic(schemas.TopicFIFO)}
	for n := 1; n <= p.policy.levels; n++ {
		outputs = append(outputs, p.names.Retry(n))
	}
	mk := func(label, topic, component string, maxPause time.Duration, h kafka.TxnHandler) *kafka.TxnStage {
		group := p.kafka.Group(component)
		return kafka.NewTxnStage(kafka.TxnStageOptions{
			Name: "webhooks " + label, Client: base, Group: group, Topics: []string{topic}, Outputs: outputs,
			TransactionalID: group + "-" + p.inst, MaxOutstanding: InFlightWindow(p.wh), MaxPause: maxPause,
			CommitInterval: commitInterval,
			DrainTimeout:   drain, Log: p.log.With("stage", label, "topic", topic),
			OnNewSession: func(error) { p.m.sessions.WithLabelValues(label).Inc() },
		}, h)
	}
	out := []*kafka.TxnStage{mk("first", p.names.Topic(schemas.TopicEvents), "webhooks", 0, &stageHandler{p: p, label: "first"})}
	for n := 1; n <= p.policy.levels; n++ {
		d := p.wh.Retry.Delay(n)
		out = append(out, mk(strconv.Itoa(n), p.names.Retry(n), "webhooks-retry-"+strconv.Itoa(n), d,
			&stageHandler{p: p, n: n, label: strconv.Itoa(n), delay: d}))
	}
	fifo := kafka.NewTxnStage(kafka.TxnStageOptions{
		Name: "webhooks fifo", Client: base, Group: p.kafka.Group("webhooks-fifo"),
		Topics: []string{p.names.Topic(schemas.TopicFIFO)}, Outputs: outputs, TransactionalID: p.kafka.Group("webhooks-fifo") + "-" + p.inst,
		MaxOutstanding: p.wh.FIFOWindow, DrainTimeout: drain, Log: p.log.With("stage", "fifo"),
		OnNewSession: func(error) { p.m.sessions.WithLabelValues("fifo").Inc() },
	}, newFIFOHandler(p))
	return append(out, fifo)
}

// sweep drops the breaker and bulkhead state of endpoints that went away or
// went idle, so those maps follow live traffic, not every endpoint ever seen.
func (p *Processor) sweep(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.sweepAt(now, 10*time.Minute)
		}
	}
}

func (p *Processor) sweepAt(now time.Time, idleFor time.Duration) {
	endpoints := map[string]bool{}
	tenants := map[string]bool{}
	for _, t := range p.tenants.List() {
		tenants[t.ID] = true
		for _, ep := range t.Endpoints {
			endpoints[ep.ID] = true
		}
	}
	p.gates.sweep(now, func(id string) bool { return endpoints[id] }, idleFor)
	p.bulk.sweep(now, func(id string) bool { return endpoints[id] }, func(id string) bool { return tenants[id] }, idleFor)
}

// Close releases idle HTTP connections. Call it after Run returned.
func (p *Processor) Close() { p.hc.CloseIdleConnections() }
