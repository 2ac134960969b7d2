package otlptest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestReceivesWhatAnExporterSends: spans exported by the SDK's OTLP/gRPC
// exporter arrive with their names, kinds, ids, parents and attributes.
func TestReceivesWhatAnExporterSends(t *testing.T) {
	t.Parallel()
	r := Start(t)
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(r.Endpoint()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tr := tp.Tracer("test")
	pctx, parent := tr.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer))
	_, child := tr.Start(pctx, "attempt", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.Int("webhook.attempt", 1)))
	child.End()
	parent.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := r.Spans()
	if len(got) != 2 {
		t.Fatalf("%d spans", len(got))
	}
	c, p := got[0], got[1]
	if c.Name != "attempt" || c.Kind != "Client" || c.Attrs["webhook.attempt"] != "1" || c.Parent != p.SpanID || c.TraceID != p.TraceID {
		t.Errorf("child %+v", c)
	}
	if p.Name != "publish" || p.Kind != "Producer" || p.Parent != "" || p.TraceID != parent.SpanContext().TraceID().String() {
		t.Errorf("parent %+v", p)
	}
}
