package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// maxRawBytes bounds the raw bytes of a malformed input kept in its dead letter.
const maxRawBytes = 64 << 10

// subscriptions indexes the active endpoints by event type, rebuilt when the
// tenant list changes, so the fan-out of an event costs what its
// subscribers cost, not a scan of every tenant.
type subscriptions struct {
	mu  sync.Mutex
	cur *subIndex
}

type subIndex struct {
	list   []*schemas.Tenant // the registry snapshot it was built from
	byType map[string][]sub
	all    []sub // endpoints that take every type
}

type sub struct {
	seq int // build order: tenant order, then endpoint order
	t   *schemas.Tenant
	ep  int
}

func sameSnapshot(a, b []*schemas.Tenant) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (s *subscriptions) get(ts Tenants) *subIndex {
	list := ts.List()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && sameSnapshot(s.cur.list, list) {
		return s.cur
	}
	x := &subIndex{list: list, byType: map[string][]sub{}}
	seq := 0
	for _, t := range list {
		if t.Status != schemas.StatusActive {
			continue
		}
		for i, ep := range t.Endpoints {
			if ep.Disabled {
				continue
			}
			seq++
			sb := sub{seq: seq, t: t, ep: i}
			if len(ep.EventTypes) == 0 || slices.Contains(ep.EventTypes, "*") {
				x.all = append(x.all, sb)
				continue
			}
			for _, typ := range ep.EventTypes {
				x.byType[typ] = append(x.byType[typ], sb)
			}
		}
	}
	s.cur = x
	return x
}

// each calls fn for every endpoint subscribed to typ, in tenant order.
func (x *subIndex) each(typ string, fn func(*schemas.Tenant, schemas.Endpoint)) {
	a, b := x.byType[typ], x.all
	for len(a) > 0 || len(b) > 0 {
		var s sub
		if len(b) == 0 || (len(a) > 0 && a[0].seq < b[0].seq) {
			s, a = a[0], a[1:]
		} else {
			s, b = b[0], b[1:]
		}
		fn(s.t, s.t.Endpoints[s.ep])
	}
}

// decodeEvent validates a record of partners.events.v1: size, JSON, the
// event schema, a known type. It never panics; a rejection carries its
// reason.
func (p *Processor) decodeEvent(v []byte) (*schemas.Event, Reason, string) {
	if len(v) > p.wh.MaxEventBytes {
		return nil, ReasonOversizedEvent, fmt.Sprintf("oversized event: %d bytes > max_event_bytes %d", len(v), p.wh.MaxEventBytes)
	}
	if ev, ok := fastEvent(v); ok {
		if !p.known[ev.Type] {
			return ev, ReasonUnknownType, "unknown event type: " + ev.Type + " (not in partner.webhooks.event_types)"
		}
		return ev, "", ""
	}
	if !json.Valid(v) {
		return nil, ReasonMalformedEvent, "malformed event: not JSON"
	}
	if err := schemas.Validate(schemas.KindEvent, v); err != nil {
		return nil, ReasonMalformedEvent, "malformed event: " + err.Error()
	}
	var ev schemas.Event
	if err := json.Unmarshal(v, &ev); err != nil {
		return nil, ReasonMalformedEvent, "malformed event: " + err.Error()
	}
	if !p.known[ev.Type] {
		return &ev, ReasonUnknownType, "unknown event type: " + ev.Type + " (not in partner.webhooks.event_types)"
	}
	return &ev, "", ""
}

// fanOut validates an event and returns one job per subscribed endpoint,
// the records of ordered (FIFO) endpoints' deliveries for the FIFO topic,
// and dead letters: the whole event when it is malformed, or one (event,
// endpoint) whose filter or payload cannot be evaluated.
func (p *Processor) fanOut(ctx context.Context, r *kgo.Record) (jobs []*job, out []*kgo.Record) {
	// The fan-out span continues the producer's trace; every first attempt
	// is its child, so one trace shows event → fan-out → attempts.
	rctx, span := p.tracer.Start(kafka.Extract(ctx, r), "webhooks fan-out", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.destination.name", r.Topic), attribute.Int64("messaging.kafka.offset", r.Offset)))
	defer func() {
		span.SetAttributes(attribute.Int("webhook.deliveries", len(jobs)), attribute.Int("webhook.records", len(out)))
		span.End()
	}()
	ev, reason, text := p.decodeEvent(r.Value)
	if reason != "" {
		return nil, p.malformed(rctx, r, reason, text, ev)
	}
	span.SetAttributes(attribute.String("event.id", ev.ID), attribute.String("event.type", ev.Type))
	now := time.Now().UTC()
	var evMap map[string]any
	deliver := func(t *schemas.Tenant, ep schemas.Endpoint) {
		task := Task{SchemaVersion: schemas.SchemaVersion, DeliveryID: WebhookID(ev.ID, ep.ID), TenantID: t.ID,
			EndpointID: ep.ID, EventID: ev.ID, EventType: ev.Type, Since: now, NotBefore: now}
		if ep.Filter != "" {
			if evMap == nil {
				if err := json.Unmarshal(r.Value, &evMap); err != nil {
					evMap = map[string]any{}
				}
			}
			ok, err := p.filters.Match(ep.Filter, evMap)
			if err != nil {
				task.Body = r.Value
				out = append(out, p.deadLetter(rctx, task, ReasonFilter, "endpoint filter invalid: "+err.Error(), true)...)
				return
			}
			if !ok {
				return
			}
		}
		body, err := render(ev, ep, p.wh.MaxPayloadBytes)
		if err != nil {
			task.Body = r.Value
			out = append(out, p.deadLetter(rctx, task, ReasonRender, "render: "+err.Error(), true)...)
			return
		}
		task.Body = body
		if ep.FIFO() {
			task.FIFO = true
			out = append(out, p.record(rctx, p.names.Topic(schemas.TopicFIFO), ep.ID, task))
			return
		}
		jobs = append(jobs, &job{task: task, parent: rctx})
	}
	if ev.TenantID != "" { // scoped: this tenant only
		if t, ok := p.tenants.Get(ev.TenantID); ok && t.Status == schemas.StatusActive {
			for _, ep := range t.Endpoints {
				if ep.Subscribed(ev.Type) {
					deliver(t, ep)
				}
			}
		}
		return jobs, out
	}
	p.subs.get(p.tenants).each(ev.Type, deliver)
	return jobs, out
}

// malformed is the dead letter of an input that cannot be delivered at all.
func (p *Processor) malformed(ctx context.Context, r *kgo.Record, reason Reason, text string, ev *schemas.Event) []*kgo.Record {
	p.m.malformed.WithLabelValues(string(reason)).Inc()
	p.log.Warn("dead-lettering input", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", text)
	key, dl := inputDeadLetter(r, reason, text, p.wh.MaxEventBytes)
	if ev != nil {
		dl.EventID, dl.EventType, dl.TenantID = ev.ID, ev.Type, ev.TenantID
	}
	dlqKey := string(r.Key)
	if dl.EventID != "" {
		dlqKey = dl.EventID
	}
	return p.deadLetterRecords(ctx, key, dlqKey, dl)
}

// eventEnvelope is an event with every field kept raw, to check each one's
// JSON type as the schema does (null is not a string).
type eventEnvelope struct {
	SchemaVersion json.RawMessage `json:"schema_version"`
	ID            json.RawMessage `json:"id"`
	Type          json.RawMessage `json:"type"`
	Source        json.RawMessage `json:"source"`
	OccurredAt    json.RawMessage `json:"occurred_at"`
	TenantID      json.RawMessage `json:"tenant_id"`
	Data          json.RawMessage `json:"data"`
}

var (
	rfc3339Re    = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`)
	errNotString = errors.New("not a string")
)

// validEventType is the event schema's type pattern,
// ^[A-Za-z0-9][A-Za-z0-9_.:-]*$, without a regexp on the hot path.
func validEventType(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func rawString(r json.RawMessage) (string, error) {
	if len(r) == 0 || r[0] != '"' {
		return "", errNotString
	}
	// A decoded JSON string without escapes is its bytes (the decoder
	// refused control characters); invalid UTF-8 and escapes take the
	// decoder, which replaces and unescapes.
	if len(r) >= 2 && r[len(r)-1] == '"' && bytes.IndexByte(r, '\\') < 0 && utf8.Valid(r) {
		return string(r[1 : len(r)-1]), nil
	}
	var s string
	err := json.Unmarshal(r, &s)
	return s, err
}

// fastEvent decodes an event that the event schema
// (schemas/json/event.v1.schema.json) certainly accepts, in one pass: the
// fan-out's hot path. It answers false for anything else (also for some
// valid events, such as a leap second), and the caller then validates with
// the schema itself, which gives the error. FuzzEventRecord checks that it
// never accepts what the schema refuses.
func fastEvent(v []byte) (*schemas.Event, bool) {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	var e eventEnvelope
	if err := dec.Decode(&e); err != nil || dec.More() {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // trailing data
	}
	var ev schemas.Event
	var err error
	if sv, err := rawString(e.SchemaVersion); err != nil || sv != schemas.SchemaVersion {
		return nil, false
	}
	ev.SchemaVersion = schemas.SchemaVersion
	if ev.ID, err = rawString(e.ID); err != nil || ev.ID == "" || utf8.RuneCountInString(ev.ID) > 256 {
		return nil, false
	}
	if ev.Type, err = rawString(e.Type); err != nil || utf8.RuneCountInString(ev.Type) > 128 || !validEventType(ev.Type) {
		return nil, false
	}
	if e.Source != nil {
		if ev.Source, err = rawString(e.Source); err != nil || utf8.RuneCountInString(ev.Source) > 256 {
			return nil, false
		}
	}
	if e.TenantID != nil {
		if ev.TenantID, err = rawString(e.TenantID); err != nil || ev.TenantID == "" {
			return nil, false
		}
	}
	at, err := rawString(e.OccurredAt)
	if err != nil || !rfc3339Re.MatchString(at) {
		return nil, false
	}
	if ev.OccurredAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return nil, false
	}
	if len(e.Data) == 0 || e.Data[0] != '{' {
		return nil, false
	}
	ev.Data = e.Data
	return &ev, true
}
