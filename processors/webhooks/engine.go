package webhooks

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// job is one delivery to try.
type job struct {
	task   Task
	parent context.Context // trace parent: the fan-out span or the retry record's context
	ticket *kafka.Ticket
	stage  string // metrics label: first, 1, 2, …, fifo
	from   string // the record it comes from: topic/partition/offset (header moved-from)
	// done receives the outcome's records instead of the ticket (FIFO
	// heads retry in place); nil: ticket.Done.
	done    func(j *job, o outcome, d decision, recs []*kgo.Record)
	pending []*kgo.Record // FIFO: attempt logs of the head's earlier attempts
}

// stageHandler is the work of the first-attempt stage (n = 0, on
// partners.events.v1) and of retry stage n (partners.webhooks.retry.<n>,
// whose records are due delay after they were written).
type stageHandler struct {
	p     *Processor
	n     int
	label string
	delay time.Duration
}

// Accept implements kafka.TxnHandler.
func (h *stageHandler) Accept(r *kgo.Record, t *kafka.Ticket) kafka.Accepted {
	p := h.p
	if h.n == 0 {
		// The fan-out (decode, filters, rendering) runs off the stage's
		// loop, which then keeps polling and committing: one part for it,
		// which adds a part per delivery before it ends.
		go func() {
			jobs, out := p.fanOut(context.Background(), r)
			t.Add(len(jobs))
			from := position(r)
			for _, j := range jobs {
				j.ticket, j.stage, j.from = t, h.label, from
				p.schedule(j)
			}
			t.Done(out...)
		}()
		return kafka.Accepted{Parts: 1}
	}
	rctx := kafka.Extract(context.Background(), r)
	task, err := decodeTask(r.Value)
	if err != nil {
		return kafka.Accepted{Out: p.malformedTask(rctx, r, err)}
	}
	// Later records of this fixed-delay topic are due later still: fetch
	// the partition again when this one is due by the topic's delay.
	pause := r.Timestamp.Add(h.delay)
	if wait := time.Until(task.NotBefore); wait > h.delay {
		// Due beyond this topic's horizon (a long hold, a Retry-After):
		// move it, unchanged, to the level that fits what remains rather
		// than hold it in memory.
		moved := p.taskRecord(rctx, task, p.policy.levelFor(wait))
		kafka.SetHeader(moved, "moved-from", position(r))
		return kafka.Accepted{Out: []*kgo.Record{moved}, PauseUntil: pause}
	}
	p.schedule(&job{task: task, parent: rctx, ticket: t, stage: h.label, from: position(r)})
	return kafka.Accepted{Parts: 1, PauseUntil: pause}
}

// position names a record: topic/partition/offset.
func position(r *kgo.Record) string {
	return r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
}

// malformedTask dead-letters a retry or FIFO record that is not a task,
// keeping its bytes; it never panics, whatever the bytes.
func (p *Processor) malformedTask(ctx context.Context, r *kgo.Record, err error) []*kgo.Record {
	p.m.malformed.WithLabelValues(string(ReasonMalformedRecord)).Inc()
	p.log.Warn("dead-lettering undecodable record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	key, dl := inputDeadLetter(r, ReasonMalformedRecord, err.Error(), p.wh.MaxRecordBytes-16<<10)
	return p.deadLetterRecords(ctx, key, string(r.Key), dl)
}

// schedule starts j when its task is due. A delivery waiting for its time
// is dropped (and polled again) if the stage stops or rebalances.
func (p *Processor) schedule(j *job) {
	wait := time.Until(j.task.NotBefore)
	if wait <= 0 {
		p.start(j)
		return
	}
	ctx := j.ticket.Context()
	var mu sync.Mutex
	var stop func() bool
	tm := time.AfterFunc(wait, func() {
		mu.Lock()
		s := stop
		mu.Unlock()
		if s != nil {
			s() // the delivery is due: no longer watch the context
		}
		p.start(j) // drops it if the context ended meanwhile
	})
	s := context.AfterFunc(ctx, func() {
		if tm.Stop() {
			j.ticket.Drop() // stopped or rebalanced before it was due
		}
	})
	mu.Lock()
	stop = s
	mu.Unlock()
}

// start re-reads the delivery's tenant and endpoint (a suspension, a
// disabled endpoint, a new URL or a revoked secret applies to what is
// already scheduled), holds it without queueing if its endpoint holds
// everything, and otherwise queues it in the endpoint's lane.
func (p *Processor) start(j *job) {
	ctx := j.ticket.Context()
	if ctx.Err() != nil {
		j.ticket.Drop()
		return
	}
	ep, o, ok := p.resolve(j)
	if !ok {
		p.finish(j, o, trace.SpanContext{})
		return
	}
	g := p.gates.get(ep.ID)
	if adm, blocked := g.blocked(time.Now()); blocked {
		g.held(adm, j.task.Since, j.task.HeldBy)
		p.finish(j, outcome{kind: held, reason: adm.reason, until: adm.until}, trace.SpanContext{})
		return
	}
	l := p.bulk.lane(ep.ID)
	if l.saturated(max(8*p.wh.PerEndpoint, 64), min(time.Second, p.totalTimeout())) {
		p.finish(j, outcome{kind: held, reason: ReasonSaturated, until: time.Now().Add(p.wh.Retry.Delay(1))}, trace.SpanContext{})
		return
	}
	l.submit(func() { p.run(j) })
}

func (p *Processor) totalTimeout() time.Duration {
	return p.wh.Timeouts.Total
}

// run makes the attempt, in the endpoint's lane: tenant and global slots,
// the endpoint read again (it may have changed while queued), the gate's
// admission (a probe or a hold), the HTTP call, the gate told the result.
func (p *Processor) run(j *job) {
	ctx := j.ticket.Context()
	if ctx.Err() != nil {
		j.ticket.Drop()
		return
	}
	release, err := p.bulk.acquire(ctx, j.task.TenantID)
	if err != nil {
		j.ticket.Drop()
		return
	}
	defer release()
	ep, o, ok := p.resolve(j)
	if !ok {
		p.finish(j, o, trace.SpanContext{})
		return
	}
	g := p.gates.get(ep.ID)
	adm := g.admit(ep.ID, ep.URL, time.Now(), j.task.HeldBy, j.task.Since)
	if !adm.ok {
		p.finish(j, outcome{kind: held, reason: adm.reason, until: adm.until}, trace.SpanContext{})
		return
	}
	a, spanCtx := p.attempt(p.httpCtx, j.parent, j.task, ep)
	if p.httpCtx.Err() != nil && a.Class != Delivered {
		g.report(ep.ID, time.Now(), adm.probe, unknown, 0)
		j.ticket.Drop() // cancelled by the shutdown, not the endpoint's doing
		return
	}
	until := g.report(ep.ID, time.Now(), adm.probe, health(a), a.RetryAfter)
	p.finish(j, outcome{kind: attempted, att: a, probe: adm.probe, until: until}, spanCtx)
}

// resolve reads j's tenant and endpoint as they are now. A delivery whose
// tenant is gone or not active, or whose endpoint is gone or disabled, is
// rejected with that reason; a replayed filter or render failure is
// filtered and rendered with the endpoint's current settings.
func (p *Processor) resolve(j *job) (schemas.Endpoint, outcome, bool) {
	t := j.task
	ten, ok := p.tenants.Get(t.TenantID)
	switch {
	case !ok:
		return schemas.Endpoint{}, outcome{kind: rejected, reason: ReasonTenantRemoved, detail: "tenant removed"}, false
	case ten.Status != schemas.StatusActive:
		reason := ReasonTenantSuspended
		if ten.Status != schemas.StatusSuspended {
			reason = ReasonTenantRemoved
		}
		return schemas.Endpoint{}, outcome{kind: rejected, reason: reason, detail: "tenant not active: " + ten.Status}, false
	}
	var ep schemas.Endpoint
	found := false
	for _, e := range ten.Endpoints {
		if e.ID == t.EndpointID {
			ep, found = e, true
		}
	}
	switch {
	case !found:
		return ep, outcome{kind: rejected, reason: ReasonEndpointRemoved, detail: "endpoint removed"}, false
	case ep.Disabled:
		return ep, outcome{kind: rejected, reason: ReasonEndpointDisabled, detail: "endpoint disabled: " + ep.DisabledReason}, false
	}
	if t.Render {
		body, o, ok := p.rerender(t, ep)
		if !ok {
			return ep, o, false
		}
		j.task.Body, j.task.Render = body, false
	}
	return ep, outcome{}, true
}

// rerender filters and renders a replayed event for ep as it is now.
func (p *Processor) rerender(t Task, ep schemas.Endpoint) ([]byte, outcome, bool) {
	var ev schemas.Event
	if err := json.Unmarshal(t.Body, &ev); err != nil {
		return nil, outcome{kind: rejected, reason: ReasonRender, detail: "render: the dead letter's event does not decode: " + err.Error()}, false
	}
	if ep.Filter != "" {
		var m map[string]any
		_ = json.Unmarshal(t.Body, &m)
		ok, err := p.filters.Match(ep.Filter, m)
		if err != nil {
			return nil, outcome{kind: rejected, reason: ReasonFilter, detail: "endpoint filter invalid: " + err.Error()}, false
		}
		if !ok {
			return nil, outcome{kind: filtered}, false
		}
	}
	body, err := render(&ev, ep, p.wh.MaxPayloadBytes)
	if err != nil {
		return nil, outcome{kind: rejected, reason: ReasonRender, detail: "render: " + err.Error()}, false
	}
	return body, outcome{}, true
}

// finish routes the outcome and hands its records to the stage.
func (p *Processor) finish(j *job, o outcome, spanCtx trace.SpanContext) {
	now := time.Now()
	d := p.policy.decide(j.task, o, now)
	recs := p.outputs(j, o, d, spanCtx)
	if j.done != nil {
		j.done(j, o, d, recs)
		return
	}
	j.ticket.Done(recs...)
}
