package router_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// fakeBackend is a native gRPC backend that records the trace context it
// receives and either fails every call or answers it.
type fakeBackend struct {
	pb.UnimplementedInferenceServer
	fail  bool
	block chan struct{} // when set, calls wait for it to close

	mu          sync.Mutex
	traceparent []string
}

const generatedText = "GENERATED-TEXT-MUST-NOT-BE-LOGGED "

func (b *fakeBackend) record(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	b.mu.Lock()
	b.traceparent = append(b.traceparent, md.Get("traceparent")...)
	b.mu.Unlock()
	if b.block != nil {
		select {
		case <-b.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.fail {
		return status.Error(codes.Unavailable, "backend down")
	}
	return nil
}

func (b *fakeBackend) parents() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.traceparent...)
}

func (b *fakeBackend) Generate(ctx context.Context, r *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	if err := b.record(ctx); err != nil {
		return nil, err
	}
	return &pb.GenerateResponse{Text: generatedText, Usage: &pb.Usage{InputTokens: 5, OutputTokens: r.MaxTokens}, FinishReason: pb.FinishReason_FINISH_REASON_LENGTH}, nil
}

func (b *fakeBackend) GenerateStream(r *pb.GenerateRequest, s grpc.ServerStreamingServer[pb.GenerateChunk]) error {
	if err := b.record(s.Context()); err != nil {
		return err
	}
	for range r.MaxTokens - 1 {
		if err := s.Send(&pb.GenerateChunk{Text: generatedText, Tokens: 1}); err != nil {
			return err
		}
	}
	return s.Send(&pb.GenerateChunk{Text: generatedText, Tokens: 1, FinishReason: pb.FinishReason_FINISH_REASON_LENGTH, Usage: &pb.Usage{InputTokens: 5, OutputTokens: r.MaxTokens}})
}

func startFake(t *testing.T, b *fakeBackend) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterInferenceServer(gs, b)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// obsFleet is a router with telemetry in front of two fake pools: "near"
// (us-east-1, the caller's region) and "far" (us-central1).
type obsFleet struct {
	client     pb.InferenceClient
	near, far  *fakeBackend
	spans      *tracetest.InMemoryExporter
	logs       *syncbuf.Buffer
	metricsURL string
}

func startObsFleet(t *testing.T, nearFails bool, limit int, routing string) *obsFleet {
	t.Helper()
	f := &obsFleet{near: &fakeBackend{fail: nearFails}, far: &fakeBackend{}, spans: tracetest.NewInMemoryExporter(), logs: &syncbuf.Buffer{}}
	nearAddr, farAddr := startFake(t, f.near), startFake(t, f.far)
	yaml := fmt.Sprintf(`models:
  - {name: m, max_input_tokens: 1000, max_output_tokens: 500}
pools:
  - {name: near, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [%q], limits: {max_concurrent: %d}, cost_per_million_tokens: 1}
  - {name: far, cloud: gcp, region: us-central1, accelerator: tpu-v6e, models: [m], endpoints: [%q], limits: {max_concurrent: %d}, cost_per_million_tokens: 1}
routing:
  health_check_interval: 1s
%s`, nearAddr, limit, farAddr, limit, routing)
	fleet, err := config.Parse([]byte(yaml), "obs fleet")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans))
	tel, err := telemetry.New(context.Background(), telemetry.Options{Metrics: true, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	otelOpts := []otelgrpc.Option{otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(tel.MeterProvider), otelgrpc.WithPropagators(telemetry.Propagator())}
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{DialOptions: []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...))}})
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = tel.Shutdown(context.Background())
	})
	r := routertest.Start(t, routertest.Options{
		Router: router.Options{Fleet: fleet, Backends: reg, Logger: logger, TracerProvider: tp, MeterProvider: tel.MeterProvider, QueuePoll: 10 * time.Millisecond, UsageRefresh: 250 * time.Millisecond},
		GRPC:   []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelOpts...))},
	})
	hs := httptest.NewServer(tel.Handler)
	t.Cleanup(hs.Close)
	f.client, f.metricsURL = r.Inference, hs.URL+"/metrics"
	return f
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// waitSpans polls until the exporter holds a span named name (the server
// span ends just after the client has its answer).
// waitSpans waits until a server span called name for which match (when not
// nil) holds has ended — the router's client spans to its backends carry the
// same method name and end earlier — and returns every span recorded by then.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, name string, match func(tracetest.SpanStub) bool) tracetest.SpanStubs {
	t.Helper()
	ended := testwait.Until(2*time.Second, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == name && s.SpanKind == trace.SpanKindServer && (match == nil || match(s)) {
				return true
			}
		}
		return false
	})
	if !ended {
		t.Fatalf("no server span %q among %v", name, exp.GetSpans())
	}
	return exp.GetSpans()
}

func TestTraceOfAFailoverCall(t *testing.T) {
	f := startObsFleet(t, true, 4, "")
	clientTrace, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	clientSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), "traceparent", "00-"+clientTrace.String()+"-"+clientSpan.String()+"-01")
	resp, err := f.client.Generate(ctx, req("us-east-1", 8))
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetRoute(); r.GetPool() != "far" || r.GetAttempts() != 2 {
		t.Fatalf("route %v: want far after a failed attempt on near", r)
	}
	spans := waitSpans(t, f.spans, "switchyard.v1.Inference/Generate", nil)

	var server tracetest.SpanStub
	var attempts, clients []tracetest.SpanStub
	for _, s := range spans {
		switch {
		case s.Name == "switchyard.v1.Inference/Generate" && s.SpanKind == trace.SpanKindServer:
			server = s
		case s.Name == "switchyard.attempt":
			attempts = append(attempts, s)
		case s.SpanKind == trace.SpanKindClient:
			clients = append(clients, s)
		}
	}
	if server.SpanContext.TraceID() != clientTrace || server.Parent.SpanID() != clientSpan || !server.Parent.IsRemote() {
		t.Fatalf("server span trace %s parent %s: want the client's trace %s and span %s", server.SpanContext.TraceID(), server.Parent.SpanID(), clientTrace, clientSpan)
	}
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans, want 2: %v", len(attempts), spans)
	}
	want := []struct {
		pool, cloud, region, accel, outcome string
		n                                   int64
	}{
		{"near", "aws", "us-east-1", "h100", "failure", 1},
		{"far", "gcp", "us-central1", "tpu-v6e", "ok", 2},
	}
	for i, w := range want {
		a := attempts[i]
		if a.Parent.SpanID() != server.SpanContext.SpanID() || a.SpanContext.TraceID() != clientTrace {
			t.Fatalf("attempt %d is not a child of the server span", i+1)
		}
		m := attrs(a.Snapshot())
		if m["switchyard.pool"].AsString() != w.pool || m["cloud.provider"].AsString() != w.cloud || m["cloud.region"].AsString() != w.region ||
			m["switchyard.accelerator"].AsString() != w.accel || m["switchyard.attempt"].AsInt64() != w.n || m["switchyard.outcome"].AsString() != w.outcome ||
			m["switchyard.policy"].AsString() != "switchyard" || m["switchyard.decision.tier"].AsString() == "" || m["switchyard.decision.reason"].AsString() == "" {
			t.Fatalf("attempt %d attributes %v: want %+v", i+1, m, w)
		}
	}
	if m := attrs(attempts[0].Snapshot()); m["error.type"].AsString() != "UNAVAILABLE" || attempts[0].Status.Code.String() != "Error" {
		t.Fatalf("failed attempt: error.type %v status %v", m["error.type"], attempts[0].Status)
	}
	if m := attrs(server.Snapshot()); m["switchyard.request_id"].AsString() != resp.GetRequestId() || m["switchyard.attempts"].AsInt64() != 2 {
		t.Fatalf("server span attributes %v", m)
	}

	// Each backend saw the trace context of the router's client span, a child of its attempt span.
	for i, b := range []*fakeBackend{f.near, f.far} {
		tp := b.parents()
		if len(tp) != 1 {
			t.Fatalf("backend %d got traceparent %v", i, tp)
		}
		parts := strings.Split(tp[0], "-")
		if len(parts) != 4 || parts[1] != clientTrace.String() {
			t.Fatalf("backend %d traceparent %q: want trace %s", i, tp[0], clientTrace)
		}
		found := false
		for _, c := range clients {
			if c.SpanContext.SpanID().String() == parts[2] && c.Parent.SpanID() == attempts[i].SpanContext.SpanID() {
				found = true
			}
		}
		if !found {
			t.Fatalf("backend %d parent span %s is not the client span of attempt %d", i, parts[2], i+1)
		}
	}
}

func TestLogsCarryIDsAndNeverThePrompt(t *testing.T) {
	f := startObsFleet(t, true, 4, "")
	const prompt = "ZEBRA-PROMPT-4f1c9 please summarise my private notes"
	ctx := ctxT(t, 10*time.Second)
	r := &pb.GenerateRequest{Model: "m", Prompt: prompt, MaxTokens: 4, RequestId: "req-log-1", Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
	if _, err := f.client.Generate(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.RequestId = "req-log-2"
	if _, _, _, err := stream(ctx, f.client, r); err != nil {
		t.Fatal(err)
	}
	r.RequestId, r.MaxTokens = "req-log-3", 9999 // rejected
	if _, err := f.client.Generate(ctx, r); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("want INVALID_ARGUMENT, got %v", err)
	}
	logs := f.logs.String()
	if strings.Contains(logs, "ZEBRA-PROMPT") || strings.Contains(logs, "private notes") || strings.Contains(logs, "GENERATED-TEXT") {
		t.Fatalf("the prompt or generated text reached the logs:\n%s", logs)
	}
	for _, id := range []string{"req-log-1", "req-log-2"} {
		var finished, failedOver bool
		for line := range strings.SplitSeq(logs, "\n") {
			if !strings.Contains(line, `"request_id":"`+id+`"`) {
				continue
			}
			if !strings.Contains(line, `"trace_id":"`) || !strings.Contains(line, `"span_id":"`) {
				t.Fatalf("log line without trace ids: %s", line)
			}
			finished = finished || strings.Contains(line, `"msg":"call finished"`)
			failedOver = failedOver || strings.Contains(line, `"msg":"attempt failed, trying another pool"`)
		}
		if !finished || !failedOver {
			t.Fatalf("request %s: call finished %v, attempt failed %v in\n%s", id, finished, failedOver, logs)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// wantSeries fails unless the exposition has a sample of name whose labels
// include every one of labels (k="v" strings) with value val.
func wantSeries(t *testing.T, text, name, val string, labels ...string) {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all && strings.HasSuffix(rest, "} "+val) {
			return
		}
	}
	t.Errorf("no sample %s{%s} %s in:\n%s", name, strings.Join(labels, ","), val, grepLines(text, name))
}

func grepLines(text, prefix string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetricsAfterRealCalls(t *testing.T) {
	f := startObsFleet(t, true, 4, "")
	ctx := ctxT(t, 10*time.Second)
	if _, err := f.client.Generate(ctx, req("us-east-1", 8)); err != nil {
		t.Fatal(err)
	}
	if _, tokens, _, err := stream(ctx, f.client, req("us-east-1", 6)); err != nil || tokens != 6 {
		t.Fatalf("stream: %d tokens, %v", tokens, err)
	}
	if _, err := f.client.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 999}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("want INVALID_ARGUMENT, got %v", err)
	}
	m := scrape(t, f.metricsURL)
	model := `gen_ai_request_model="m"`
	wantSeries(t, m, "switchyard_requests_total", "1", model, `pool="far"`, `rpc="generate"`, `status="OK"`)
	wantSeries(t, m, "switchyard_requests_total", "1", model, `pool="far"`, `rpc="generate_stream"`, `status="OK"`)
	wantSeries(t, m, "switchyard_requests_total", "1", model, `pool="none"`, `rpc="generate"`, `status="INVALID_ARGUMENT"`)
	wantSeries(t, m, "switchyard_request_duration_seconds_count", "1", model, `pool="far"`, `rpc="generate_stream"`, `status="OK"`)
	wantSeries(t, m, "switchyard_attempts_total", "2", `pool="near"`, `outcome="failure"`, `cloud="aws"`, `region="us-east-1"`, `accelerator="h100"`)
	wantSeries(t, m, "switchyard_attempts_total", "2", `pool="far"`, `outcome="ok"`)
	wantSeries(t, m, "switchyard_retries_total", "2", `pool="far"`)
	wantSeries(t, m, "gen_ai_server_time_to_first_token_seconds_count", "1", model, `pool="far"`)
	wantSeries(t, m, "gen_ai_server_time_per_output_token_seconds_count", "1", model, `pool="far"`)
	wantSeries(t, m, "gen_ai_client_token_usage_count", "2", model, `pool="far"`, `gen_ai_token_type="input"`)
	wantSeries(t, m, "gen_ai_client_token_usage_sum", "14", model, `pool="far"`, `gen_ai_token_type="output"`)
	wantSeries(t, m, "switchyard_capacity_acquire_duration_seconds_count", "2", `pool="near"`, `result="ok"`)
	wantSeries(t, m, "switchyard_pool_limit", "4", `pool="near"`, `cloud="aws"`)
	wantSeries(t, m, "switchyard_pool_headroom", "4", `pool="far"`)
	wantSeries(t, m, "switchyard_pool_in_flight", "0", `pool="far"`)
	wantSeries(t, m, "switchyard_pool_drained", "0", `pool="far"`)
	wantSeries(t, m, "switchyard_pool_ejected", "0", `pool="far"`)
	wantSeries(t, m, "switchyard_pool_healthy", "1", `pool="far"`)
	wantSeries(t, m, "switchyard_capacity_mode", "1", `mode="local"`)
	wantSeries(t, m, "switchyard_capacity_mode", "0", `mode="degraded"`)
	if !strings.Contains(m, "\nswitchyard_queue_length ") && !strings.Contains(m, "\nswitchyard_queue_length{") {
		t.Errorf("no switchyard_queue_length in:\n%s", grepLines(m, "switchyard_queue"))
	}
}

func TestShedAndQueueMetrics(t *testing.T) {
	// One slot per pool, both held by blocked calls: the third call queues,
	// waits out queue_max_wait and is shed for no capacity.
	f := startObsFleet(t, false, 1, "  queue_max_wait: 150ms\n")
	f.near.block, f.far.block = make(chan struct{}), make(chan struct{})
	ctx := ctxT(t, 10*time.Second)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _, _ = f.client.Generate(ctx, req("us-east-1", 4)) })
	}
	testwait.For(t, 5*time.Second, "the two blocked calls to reach the backends", func() bool { return len(f.near.parents())+len(f.far.parents()) >= 2 })
	_, err := f.client.Generate(ctx, req("us-east-1", 4))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("want RESOURCE_EXHAUSTED, got %v", err)
	}
	m := scrape(t, f.metricsURL)
	close(f.near.block)
	close(f.far.block)
	wg.Wait()
	wantSeries(t, m, "switchyard_sheds_total", "1", `reason="no_capacity"`, `priority="standard"`, `caller_region="us-east-1"`)
	wantSeries(t, m, "switchyard_requests_total", "1", `pool="none"`, `status="RESOURCE_EXHAUSTED"`)
	wantSeries(t, m, "switchyard_pool_in_flight", "1", `pool="near"`)
	wantSeries(t, m, "switchyard_pool_headroom", "0", `pool="near"`)
	wantSeries(t, m, "switchyard_capacity_acquire_duration_seconds_count", "1", `pool="near"`, `result="ok"`)
	if !strings.Contains(m, `switchyard_capacity_acquire_duration_seconds_count{pool="near",result="full"}`) {
		t.Errorf("no acquire result=full series:\n%s", grepLines(m, "switchyard_capacity_acquire_duration_seconds_count"))
	}
	if !strings.Contains(m, `switchyard_queue_wait_seconds_count{priority="standard",result="retry"}`) {
		t.Errorf("no queue wait series:\n%s", grepLines(m, "switchyard_queue_wait"))
	}
	// The shed call's server span carries its queue waits as events.
	shed := func(s tracetest.SpanStub) bool {
		return attrs(s.Snapshot())["switchyard.shed_reason"].AsString() == "no_capacity"
	}
	spans := waitSpans(t, f.spans, "switchyard.v1.Inference/Generate", shed)
	events := 0
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindServer && shed(s) {
			for _, e := range s.Events {
				if e.Name == "switchyard.queue.wait" {
					events++
				}
			}
		}
	}
	if events == 0 {
		t.Fatal("the shed call's span has no queue wait events")
	}
}
