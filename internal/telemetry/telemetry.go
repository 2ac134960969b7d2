// Package telemetry owns logs, traces and metrics setup: slog (text or JSON),
// the OpenTelemetry tracer provider (an OTLP exporter only when the standard
// OTEL_EXPORTER_OTLP_* endpoint variables are set), the meter provider
// exported through Prometheus, and W3C trace-context propagation. Only the
// binary installs them process-wide (internal/runner calls Setup when no
// TracerProvider is injected); components and tests receive a provider.
package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// NewLogger returns the process logger. level is debug|info|warn|error,
// format text|json.
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Providers are the process's OTel providers.
type Providers struct {
	Tracer *sdktrace.TracerProvider
	Meter  *sdkmetric.MeterProvider
}

// Setup installs global tracer and meter providers and the W3C propagator.
// Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (protocol from
// OTEL_EXPORTER_OTLP_PROTOCOL: grpc, the default, or http/protobuf), and
// recorded but not exported otherwise. Metrics go to reg.
func Setup(ctx context.Context, service string, reg prometheus.Registerer, extra ...sdktrace.TracerProviderOption) (*Providers, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service)))
	if err != nil {
		res = resource.Default()
	}
	opts := append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res)}, extra...)
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
		var exp sdktrace.SpanExporter
		proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if strings.HasPrefix(proto, "http") {
			exp, err = otlptracehttp.New(ctx)
		} else {
			exp, err = otlptracegrpc.New(ctx)
		}
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if reg != nil {
		pe, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
		if err != nil {
			return nil, err
		}
		mopts = append(mopts, sdkmetric.WithReader(pe))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return &Providers{Tracer: tp, Meter: mp}, nil
}

// Shutdown flushes and stops the providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	return errors.Join(p.Tracer.Shutdown(ctx), p.Meter.Shutdown(ctx))
}
