package webhooks

import (
	"context"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/schemas"
)

// attempt makes one HTTP attempt of t to ep in a client span linked to the
// previous attempt's span; parent is the trace parent (the fan-out span or
// the retry record's context), ctx bounds the call. It returns the attempt
// and the span's context.
func (p *Processor) attempt(ctx, parent context.Context, t Task, ep schemas.Endpoint) (Attempt, trace.SpanContext) {
	n := t.Attempts + 1
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	if prev := prevSpan(t); prev.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: prev}))
	}
	if parent == nil {
		parent = ctx
	}
	sctx, span := p.tracer.Start(parent, "webhook attempt", opts...)
	defer span.End()
	recording := span.IsRecording() // attributes cost allocations: only for spans that keep them
	if recording {
		host := ""
		if u, err := url.Parse(ep.URL); err == nil {
			host = u.Hostname()
		}
		span.SetAttributes(attribute.String("tenant.id", t.TenantID), attribute.String("webhook.endpoint.id", ep.ID),
			attribute.String("webhook.endpoint.host", host), attribute.Int("webhook.attempt", n),
			attribute.String("webhook.id", t.DeliveryID), attribute.String("event.type", t.EventType))
	}
	// The HTTP call runs under ctx's cancellation with the span's context.
	sctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(sctx))

	now := time.Now()
	req := Request{URL: ep.URL, ID: t.DeliveryID, EventType: t.EventType, Body: t.Body,
		Secrets: activeSecrets(ep, now), Headers: ep.Headers}
	p.m.inflight.Inc()
	a := send(sctx, p.hc, p.wh.MaxBodyBytes, req, now)
	p.m.inflight.Dec()
	if recording {
		span.SetAttributes(attribute.Int("http.response.status_code", a.StatusCode), attribute.String("webhook.reason", string(a.Reason)))
	}
	if a.Class != Delivered {
		span.SetStatus(codes.Error, a.Err)
	}
	return a, span.SpanContext()
}

func prevSpan(t Task) trace.SpanContext {
	tid, err1 := trace.TraceIDFromHex(t.TraceID)
	sid, err2 := trace.SpanIDFromHex(t.SpanID)
	if err1 != nil || err2 != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// health is what an attempt says about its endpoint, for the breaker.
func health(a Attempt) result {
	switch a.Class {
	case Retryable:
		return unhealthy
	case Permanent:
		if a.Reason == ReasonBlocked || a.Reason == ReasonInvalidURL || a.Reason == ReasonNoSecret {
			return unknown // no request reached the endpoint
		}
	}
	return healthy
}
