package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/switchyard-dev/switchyard/router/telemetry"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestExporterFromEnvironment(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		vars    map[string]string
		want    string
		wantErr string
	}{
		{nil, "none", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none"}, "none", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "console", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "otlp", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp", ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "", "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, "", "OTEL_TRACES_EXPORTER"},
	}
	for _, c := range cases {
		tel, err := telemetry.New(ctx, telemetry.Options{Getenv: env(c.vars)})
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%v: want an error naming %s, got %v", c.vars, c.wantErr, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", c.vars, err)
		}
		if tel.TracesExporter != c.want || tel.Handler != nil {
			t.Errorf("%v: exporter %q (handler %v), want %q and no metrics", c.vars, tel.TracesExporter, tel.Handler, c.want)
		}
		_, isSDK := tel.TracerProvider.(*sdktrace.TracerProvider)
		if isSDK != (c.want != "none") {
			t.Errorf("%v: SDK tracer provider %v", c.vars, isSDK)
		}
		if err := tel.Shutdown(ctx); err != nil && c.want != "otlp" {
			t.Errorf("%v: shutdown: %v", c.vars, err)
		}
	}
}

func TestConsoleExporterWritesSpans(t *testing.T) {
	var out bytes.Buffer
	tel, err := telemetry.New(context.Background(), telemetry.Options{Getenv: env(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), Console: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.TracerProvider.Tracer("t").Start(context.Background(), "hello-span")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "hello-span") {
		t.Fatalf("console output %q lacks the span", out.String())
	}
}

func TestLogHandlerAddsIDs(t *testing.T) {
	var out bytes.Buffer
	tp := sdktrace.NewTracerProvider()
	log := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&out, nil))).With("replica", "r1")
	ctx, span := tp.Tracer("t").Start(telemetry.WithRequestID(context.Background(), "req-9"), "s")
	log.InfoContext(ctx, "hello")
	span.End()
	log.Info("no context ids")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	sc := span.SpanContext()
	if first["request_id"] != "req-9" || first["trace_id"] != sc.TraceID().String() || first["span_id"] != sc.SpanID().String() || first["replica"] != "r1" {
		t.Fatalf("line %v", first)
	}
	if _, ok := second["trace_id"]; ok {
		t.Fatalf("line without a span got a trace id: %v", second)
	}
}

func TestWithRequestIDValue(t *testing.T) {
	type k1 struct{}
	type k2 struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), k2{}, "outer"))
	ctx := telemetry.WithRequestIDValue(parent, "req-7", k1{}, 42)
	child, stop := context.WithCancel(ctx)
	defer stop()
	if got := telemetry.RequestID(ctx); got != "req-7" {
		t.Fatalf("request id %q", got)
	}
	if got := telemetry.RequestID(child); got != "req-7" {
		t.Fatalf("request id through a child %q", got)
	}
	if child.Value(k1{}) != 42 || child.Value(k2{}) != "outer" || child.Value("other") != nil {
		t.Fatalf("values %v %v %v", child.Value(k1{}), child.Value(k2{}), child.Value("other"))
	}
	cancel()
	select { // the parent's cancellation reaches through the node
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a child of the node was not cancelled with its parent")
	}
	if ctx.Err() == nil {
		t.Fatal("the node did not report its parent's cancellation")
	}
}
