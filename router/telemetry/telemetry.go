// Package telemetry sets up OpenTelemetry for switchyard: a tracer provider
// whose exporter is chosen by the standard OTEL_* environment variables, a
// meter provider exported for Prometheus, the W3C propagators, the router's
// metric instruments, and a slog handler that stamps request and trace ids on
// every per-call log line.
//
// Import direction: router and cmd import telemetry; telemetry imports neither.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of the router's spans and metrics.
const ScopeName = "github.com/switchyard-dev/switchyard/router"

// Options configure New and Setup.
type Options struct {
	// ServiceName is service.name (default "switchyard"; OTEL_SERVICE_NAME wins).
	ServiceName string
	// Replica is service.instance.id.
	Replica string
	// Getenv reads OTEL_* variables; defaults to os.Getenv (tests inject).
	Getenv func(string) string
	// Console receives spans when OTEL_TRACES_EXPORTER=console (default os.Stdout).
	Console io.Writer
	// Metrics turns on the Prometheus-exported meter provider. Off: a no-op
	// meter provider and a nil Handler.
	Metrics bool
}

// Telemetry holds the providers built by New. Pass TracerProvider and
// MeterProvider to router.Options and the otelgrpc stats handlers.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	// Registry is the Prometheus registry the metrics go to (nil when off).
	Registry *prometheus.Registry
	// Handler serves Registry in the Prometheus text format (nil when off).
	Handler http.Handler
	// TracesExporter is the exporter in use: "none", "console" or "otlp".
	TracesExporter string

	shutdowns []func(context.Context) error
}

// Propagator returns the W3C TraceContext + Baggage propagator.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// New builds the providers. The traces exporter follows the OpenTelemetry
// environment variables: OTEL_TRACES_EXPORTER=otlp|console|none (default
// none) and, for otlp, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL = grpc|http/protobuf (default grpc, read with
// the rest of OTEL_EXPORTER_OTLP_* by the exporters themselves).
func New(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Console == nil {
		o.Console = os.Stdout
	}
	if o.ServiceName == "" {
		o.ServiceName = "switchyard"
	}
	if v := o.Getenv("OTEL_SERVICE_NAME"); v != "" {
		o.ServiceName = v
	}
	t := &Telemetry{Propagator: Propagator()}
	attrs := []attribute.KeyValue{attribute.String("service.name", o.ServiceName)}
	if o.Replica != "" {
		attrs = append(attrs, attribute.String("service.instance.id", o.Replica))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	exp, name, err := traceExporter(ctx, o)
	if err != nil {
		return nil, err
	}
	t.TracesExporter = name
	if exp == nil {
		t.TracerProvider = tracenoop.NewTracerProvider()
	} else {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.TracerProvider = tp
		t.shutdowns = append(t.shutdowns, tp.Shutdown)
	}

	if !o.Metrics {
		t.MeterProvider = metricnoop.NewMeterProvider()
		return t, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pe, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		_ = t.Shutdown(ctx)
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(pe), sdkmetric.WithResource(res))
	t.MeterProvider = mp
	t.shutdowns = append(t.shutdowns, mp.Shutdown)
	t.Registry = reg
	t.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return t, nil
}

func traceExporter(ctx context.Context, o Options) (sdktrace.SpanExporter, string, error) {
	kind := strings.ToLower(strings.TrimSpace(o.Getenv("OTEL_TRACES_EXPORTER")))
	switch kind {
	case "", "none":
		return nil, "none", nil
	case "console":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(o.Console))
		if err != nil {
			return nil, "", fmt.Errorf("console trace exporter: %w", err)
		}
		return exp, "console", nil
	case "otlp":
		proto := o.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = o.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		var exp sdktrace.SpanExporter
		var err error
		switch proto {
		case "", "grpc":
			exp, err = otlptracegrpc.New(ctx)
		case "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		default:
			return nil, "", fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", proto)
		}
		if err != nil {
			return nil, "", fmt.Errorf("otlp trace exporter: %w", err)
		}
		return exp, "otlp", nil
	}
	return nil, "", fmt.Errorf("OTEL_TRACES_EXPORTER %q: want otlp, console or none", kind)
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(t.shutdowns) - 1; i >= 0; i-- {
		errs = append(errs, t.shutdowns[i](ctx))
	}
	t.shutdowns = nil
	return errors.Join(errs...)
}

// Install makes t's providers and propagator the process-wide defaults.
func (t *Telemetry) Install() {
	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	otel.SetTextMapPropagator(t.Propagator)
}

// Setup is New followed by Install; it returns the shutdown function.
func Setup(ctx context.Context, o Options) (func(context.Context) error, error) {
	t, err := New(ctx, o)
	if err != nil {
		return nil, err
	}
	t.Install()
	return t.Shutdown, nil
}
