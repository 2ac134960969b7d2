package webhooks

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// maxRawBytes bounds the raw bytes of a malformed input kept in its dead letter.
const maxRawBytes = 64 << 10

// fanOut validates an event and returns one job per subscribed endpoint, or
// dead letters: the whole event when it is malformed (not JSON, invalid
// against the event schema, of an unknown type, oversized), or one
// (event, endpoint) whose filter or payload cannot be evaluated.
func (p *Processor) fanOut(ctx context.Context, r *kgo.Record) (jobs []*job, dead []*kgo.Record) {
	// The fan-out span continues the producer's trace; every first attempt
	// is its child, so one trace shows event → fan-out → attempts.
	rctx, span := p.tracer.Start(kafka.Extract(ctx, r), "webhooks fan-out", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.destination.name", r.Topic), attribute.Int64("messaging.kafka.offset", r.Offset)))
	defer func() {
		span.SetAttributes(attribute.Int("webhook.deliveries", len(jobs)), attribute.Int("webhook.dead_letters", len(dead)))
		span.End()
	}()
	if len(r.Value) > p.wh.MaxEventBytes {
		return nil, []*kgo.Record{p.malformed(rctx, r, fmt.Sprintf("oversized event: %d bytes > max_event_bytes %d", len(r.Value), p.wh.MaxEventBytes), nil)}
	}
	if !json.Valid(r.Value) {
		return nil, []*kgo.Record{p.malformed(rctx, r, "malformed event: not JSON", nil)}
	}
	if err := schemas.Validate(schemas.KindEvent, r.Value); err != nil {
		return nil, []*kgo.Record{p.malformed(rctx, r, "malformed event: "+err.Error(), nil)}
	}
	var ev schemas.Event
	if err := json.Unmarshal(r.Value, &ev); err != nil {
		return nil, []*kgo.Record{p.malformed(rctx, r, "malformed event: "+err.Error(), nil)}
	}
	if !p.known[ev.Type] {
		return nil, []*kgo.Record{p.malformed(rctx, r, "unknown event type: "+ev.Type+" (not in partner.webhooks.event_types)", &ev)}
	}
	span.SetAttributes(attribute.String("event.id", ev.ID), attribute.String("event.type", ev.Type))
	var evMap map[string]any
	for _, t := range p.tenants.List() {
		if t.Status != schemas.StatusActive || (ev.TenantID != "" && ev.TenantID != t.ID) {
			continue
		}
		for _, ep := range t.Endpoints {
			if !ep.Subscribed(ev.Type) {
				continue
			}
			task := Task{SchemaVersion: schemas.SchemaVersion, DeliveryID: WebhookID(ev.ID, ep.ID), TenantID: t.ID,
				EndpointID: ep.ID, EventID: ev.ID, EventType: ev.Type}
			if ep.Filter != "" {
				if evMap == nil {
					if err := json.Unmarshal(r.Value, &evMap); err != nil {
						evMap = map[string]any{}
					}
				}
				ok, err := p.filters.Match(ep.Filter, evMap)
				if err != nil {
					task.Body = r.Value
					if dl := p.deadLetter(rctx, task, "endpoint filter invalid: "+err.Error(), "first"); dl != nil {
						dead = append(dead, dl)
					}
					continue
				}
				if !ok {
					continue
				}
			}
			body, err := Render(&ev, ep)
			if err != nil {
				task.Body = r.Value
				if dl := p.deadLetter(rctx, task, "render: "+err.Error(), "first"); dl != nil {
					dead = append(dead, dl)
				}
				continue
			}
			task.Body = body
			jobs = append(jobs, &job{tenant: t, endpoint: ep, task: task, parent: rctx})
		}
	}
	return jobs, dead
}

// malformed is the dead letter of an input that cannot be delivered at all.
func (p *Processor) malformed(ctx context.Context, r *kgo.Record, reason string, ev *schemas.Event) *kgo.Record {
	p.m.malformed.WithLabelValues(reasonClass(reason)).Inc()
	p.m.dlq.WithLabelValues(reasonClass(reason)).Inc()
	p.log.Warn("dead-lettering input", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason)
	dl := schemas.DeadLetter{SchemaVersion: schemas.SchemaVersion, Reason: reason, SourceTopic: r.Topic}
	if ev != nil {
		dl.EventID, dl.EventType, dl.TenantID = ev.ID, ev.Type, ev.TenantID
	}
	if json.Valid(r.Value) && len(r.Value) <= p.wh.MaxEventBytes {
		dl.Payload = r.Value
	} else {
		dl.Raw = r.Value[:min(len(r.Value), maxRawBytes)]
	}
	key := string(r.Key)
	if dl.EventID != "" {
		key = dl.EventID
	}
	return p.record(ctx, p.names.Topic(schemas.TopicDLQ), key, dl)
}
