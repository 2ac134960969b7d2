package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// record marshals v into a record for topic with the trace context of ctx.
// The processor's types always marshal (payloads are checked to be JSON
// before they are set); should one not, the failure is logged and the
// record carries the error instead of panicking the process.
func (p *Processor) record(ctx context.Context, topic, key string, v any) *kgo.Record {
	return newRecord(ctx, p.log, topic, key, v)
}

// newRecord is Processor.record for code without a processor (the
// delivery-log sink).
func newRecord(ctx context.Context, log *slog.Logger, topic, key string, v any) *kgo.Record {
	b, err := json.Marshal(v)
	if err != nil {
		log.Error("record does not marshal", "topic", topic, "type", fmt.Sprintf("%T", v), "err", err)
		b, _ = json.Marshal(map[string]string{"schema_version": schemas.SchemaVersion, "error": err.Error()})
	}
	// Context makes kotel's publish span a child of the attempt's span, so
	// the header it injects keeps the delivery in one trace.
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: b, Context: ctx}
	kafka.Inject(ctx, r)
	return r
}

// recordSize is about what r weighs on the broker.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value) + 64
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return n
}

// attemptLog is the delivery-log record of one HTTP attempt.
func (p *Processor) attemptLog(ctx context.Context, t Task, a Attempt, result string) *kgo.Record {
	rec := schemas.DeliveryAttempt{
		SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("%s/%d", t.DeliveryID, t.Attempts), DeliveryID: t.DeliveryID,
		TenantID: t.TenantID, EndpointID: t.EndpointID, EventID: t.EventID, EventType: t.EventType, Attempt: t.Attempts,
		StatusCode: a.StatusCode, Outcome: result, LatencyMS: float64(a.Latency.Microseconds()) / 1000,
		Error: a.Err, TraceID: t.TraceID, AttemptedAt: a.At.UTC(),
	}
	if a.Class != Delivered {
		rec.Reason = string(a.Reason)
	}
	return p.record(ctx, p.names.Topic(schemas.TopicDeliveries), t.DeliveryID, rec)
}

// taskRecord puts t on retry topic level.
func (p *Processor) taskRecord(ctx context.Context, t Task, level int) *kgo.Record {
	t.Stage = level
	return p.record(ctx, p.names.Retry(level), t.DeliveryID, t)
}

// deadLetter builds the DLQ and index records of a delivery. payloadIsEvent
// says Body holds the event (nothing could be rendered for the endpoint).
// With the DLQ disabled it returns nothing and logs the loss.
func (p *Processor) deadLetter(ctx context.Context, t Task, reason Reason, text string, payloadIsEvent bool) []*kgo.Record {
	if sc := trace.SpanContextFromContext(ctx); t.TraceID == "" && sc.IsValid() {
		t.TraceID = sc.TraceID().String() // no attempt was made: the event's trace
	}
	src := p.names.Topic(schemas.TopicEvents)
	switch {
	case t.FIFO:
		src = p.names.Topic(schemas.TopicFIFO)
	case t.Stage > 0:
		src = p.names.Retry(t.Stage)
	}
	dl := schemas.DeadLetter{
		SchemaVersion: schemas.SchemaVersion, DeliveryID: t.DeliveryID, TenantID: t.TenantID, EndpointID: t.EndpointID,
		EventID: t.EventID, EventType: t.EventType, Attempts: t.Attempts, LastStatus: t.LastStatus, LastError: t.LastError,
		Reason: text, ReasonCode: string(reason), SourceTopic: src, TraceID: t.TraceID, FirstAttemptAt: t.FirstAttemptAt,
		LastAttemptAt: t.LastAttemptAt, Replays: t.Replays,
	}
	if payloadIsEvent || t.Render {
		dl.PayloadKind = "event"
	}
	// A body that is not JSON (a hand-written retry record) is kept as raw
	// bytes: json.RawMessage would not marshal.
	if json.Valid(t.Body) {
		dl.Payload = t.Body
	} else {
		dl.Raw = t.Body
	}
	if n := len(t.Body); n > p.wh.MaxRecordBytes-16<<10 {
		dl.Payload, dl.Raw = nil, nil
		dl.Reason += fmt.Sprintf(" (payload of %d bytes omitted: over max_record_bytes)", n)
	}
	return p.deadLetterRecords(ctx, t.DeliveryID, t.DeliveryID, dl)
}

// deadLetterRecords are the DLQ record and its index entry.
func (p *Processor) deadLetterRecords(ctx context.Context, indexKey, dlqKey string, dl schemas.DeadLetter) []*kgo.Record {
	p.m.dlq.WithLabelValues(dl.ReasonCode).Inc()
	if !p.wh.DLQ.Enabled {
		p.log.Warn("DLQ disabled: dropping failed delivery", "tenant_id", dl.TenantID, "delivery_id", dl.DeliveryID, "reason", dl.Reason)
		return nil
	}
	return deadLetterPair(ctx, p.log, p.names, indexKey, dlqKey, dl)
}

// deadLetterPair is the DLQ record of dl and its entry in the DLQ index.
// The DLQ key (an input record's own key, for a malformed one) and the
// reason are cut to the dead-letter limits, so the pair fits a Kafka record
// whatever the input was.
func deadLetterPair(ctx context.Context, log *slog.Logger, names kafka.Names, indexKey, dlqKey string, dl schemas.DeadLetter) []*kgo.Record {
	dlqKey = schemas.TruncateUTF8(dlqKey, schemas.MaxDeadLetterKeyBytes)
	dl.Reason = schemas.TruncateUTF8(dl.Reason, schemas.MaxDeadLetterReasonBytes)
	now := time.Now().UTC()
	return []*kgo.Record{
		newRecord(ctx, log, names.Topic(schemas.TopicDLQ), dlqKey, dl),
		newRecord(ctx, log, names.Topic(schemas.TopicDLQIndex), indexKey, indexRecord{DeadLetter: dl, Key: indexKey, Status: statusDead, DeadAt: now, UpdatedAt: now}),
	}
}

// inputDeadLetter is the dead letter of an input record that cannot be
// handled at all, and its index key (the record's position): its bytes are
// kept, as the payload when they are JSON of at most maxPayload bytes, else
// as a copy truncated to maxRawBytes. It never panics, whatever the bytes.
func inputDeadLetter(r *kgo.Record, reason Reason, text string, maxPayload int) (indexKey string, dl schemas.DeadLetter) {
	part, off := r.Partition, r.Offset
	dl = schemas.DeadLetter{SchemaVersion: schemas.SchemaVersion, Reason: text, ReasonCode: string(reason),
		SourceTopic: r.Topic, SourcePartition: &part, SourceOffset: &off}
	if len(r.Value) <= maxPayload && json.Valid(r.Value) {
		dl.Payload = r.Value
	} else {
		dl.Raw = r.Value[:min(len(r.Value), maxRawBytes)]
	}
	return "input/" + position(r), dl
}

// resolved is the index update of a replayed delivery that was delivered
// (or that the endpoint's filter no longer selects).
func (p *Processor) resolved(ctx context.Context, t Task, status string) *kgo.Record {
	now := time.Now().UTC()
	dl := schemas.DeadLetter{SchemaVersion: schemas.SchemaVersion, DeliveryID: t.DeliveryID, TenantID: t.TenantID,
		EndpointID: t.EndpointID, EventID: t.EventID, EventType: t.EventType, Attempts: t.Attempts, LastStatus: t.LastStatus,
		Reason: "resolved by replay " + t.ReplayID, TraceID: t.TraceID, FirstAttemptAt: t.FirstAttemptAt,
		LastAttemptAt: t.LastAttemptAt, Replays: t.Replays}
	// Kept so a forced replay can send it again.
	if json.Valid(t.Body) && len(t.Body) <= p.wh.MaxRecordBytes-16<<10 {
		dl.Payload = t.Body
		if t.Render {
			dl.PayloadKind = "event"
		}
	}
	deadAt := t.DeadAt
	if deadAt.IsZero() {
		deadAt = now
	}
	return p.record(ctx, p.names.Topic(schemas.TopicDLQIndex), t.DeliveryID,
		indexRecord{DeadLetter: dl, Key: t.DeliveryID, Status: status, DeadAt: deadAt, UpdatedAt: now, ReplayID: t.ReplayID})
}

// outputs are the records one outcome of job j produces, per decision d,
// with the task updated by the attempt. It logs and counts.
func (p *Processor) outputs(j *job, o outcome, d decision, spanCtx trace.SpanContext) []*kgo.Record {
	t := j.task
	ctx := j.parent
	if ctx == nil {
		ctx = context.Background()
	}
	if spanCtx.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, spanCtx)
	}
	var out []*kgo.Record
	// Logged only at enabled levels: building attributes for every
	// delivery costs what the delivery costs.
	log := func(level slog.Level, msg string, args ...any) {
		if p.log.Enabled(ctx, level) {
			p.log.Log(ctx, level, msg, append([]any{"tenant_id", t.TenantID, "delivery_id", t.DeliveryID,
				"trace_id", t.TraceID, "attempt", t.Attempts}, args...)...)
		}
	}
	if o.kind == attempted {
		a := o.att
		t.Attempts++
		if d.charge {
			t.Charged++
		}
		if t.FirstAttemptAt.IsZero() {
			t.FirstAttemptAt = a.At.UTC()
		}
		t.LastAttemptAt = a.At.UTC()
		t.LastStatus, t.LastError, t.LastReason = a.StatusCode, a.Err, a.Reason
		if spanCtx.IsValid() {
			t.TraceID, t.SpanID = spanCtx.TraceID().String(), spanCtx.SpanID().String()
		}
		t.HeldBy = ""
		p.m.attempts.WithLabelValues(d.logResult, j.stage).Inc()
		p.m.latency.WithLabelValues(d.logResult).Observe(a.Latency.Seconds())
		out = append(out, p.attemptLog(ctx, t, a, d.logResult))
	}
	now := time.Now().UTC()
	switch d.action {
	case actDone:
		if t.Replayed {
			status := statusDelivered
			if o.kind == filtered {
				status = statusDropped
			}
			out = append(out, p.resolved(ctx, t, status))
		}
		log(slog.LevelDebug, "done", "status", o.att.StatusCode)
	case actRetry, actHold:
		if d.action == actHold {
			t.HeldBy = o.reason
			t.Holds++
			p.m.held.WithLabelValues(string(o.reason)).Inc()
		}
		t.NotBefore = now.Add(d.wait)
		if t.FIFO {
			// Ordered endpoints retry in place; the caller keeps the task.
			j.task = t
			return out
		}
		log(slog.LevelDebug, d.action.String(), "level", d.level, "in", d.wait, "err", o.att.Err, "held_by", t.HeldBy)
		r := p.taskRecord(ctx, t, d.level)
		if size := recordSize(r); size > p.wh.MaxRecordBytes {
			// Never produce what the broker refuses (the transaction would
			// abort and the record come back forever): dead-letter it.
			text := fmt.Sprintf("payload too large for a retry record: %d bytes > max_record_bytes %d", size, p.wh.MaxRecordBytes)
			log(slog.LevelWarn, "dead-lettering", "reason", ReasonPayloadTooLarge, "detail", text)
			out = append(out, p.deadLetter(ctx, t, ReasonPayloadTooLarge, text, false)...)
			break
		}
		if j.from != "" {
			// Which record this move consumed: a move is exactly once when
			// no two records share it.
			kafka.SetHeader(r, "moved-from", j.from)
		}
		out = append(out, r)
	case actDeadLetter:
		if o.kind == rejected && t.LastError == "" {
			t.LastError = o.detail
		}

		log(slog.LevelInfo, "dead-lettering", "reason", d.reason, "detail", d.text)
		out = append(out, p.deadLetter(ctx, t, d.reason, d.text, d.reason == ReasonFilter || d.reason == ReasonRender)...)
		if d.disable {
			p.cmds.disable(t.TenantID, t.EndpointID, "410 Gone from the endpoint")
		}
	}
	j.task = t
	return out
}
