package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// traceBackend answers Generate and passes on the traceparent it received.
type traceBackend struct {
	constBackend
	got chan string
}

func (b *traceBackend) Generate(ctx context.Context, r *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	select {
	case b.got <- strings.Join(metadata.ValueFromIncomingContext(ctx, "traceparent"), ","):
	default:
	}
	return b.constBackend.Generate(ctx, r)
}

// With a traces exporter on, otelgrpc's handlers ride on the client port and
// the backend links next to the metric interceptors: a caller's trace goes on
// through the router's spans to the backend, and each call is measured once.
func TestTracesExportedThroughTheRouter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	be := &traceBackend{got: make(chan string, 1)}
	backend := startBackend(t, be)
	fleet := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(fleet, fmt.Appendf(nil, `models:
  - {name: m, max_input_tokens: 4096, max_output_tokens: 64}
pools:
  - {name: p, cloud: aws, region: us-east-1, accelerator: h100, models: [m],
     endpoints: ["%s"], limits: {max_concurrent: 8}, cost_per_million_tokens: 1}
`, backend), 0o600); err != nil {
		t.Fatal(err)
	}

	var spans syncbuf.Buffer
	addr, metricsURL, stop := startMetricsRouter(t, &spans, "--config", fleet, "--http-listen", "off", "--watch-config", "0")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callCtx, callCancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01"), 10*time.Second)
	defer callCancel()
	if _, err := pb.NewInferenceClient(dial(t, addr)).Generate(callCtx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 2}); err != nil {
		t.Fatal(err)
	}
	got := <-be.got
	if !strings.HasPrefix(got, "00-"+traceID+"-") || strings.Contains(got, "00f067aa0ba902b7") {
		t.Errorf("backend got traceparent %q, want the caller's trace with the router's span as parent", got)
	}

	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`rpc_server_call_duration_seconds_count{rpc_method="switchyard.v1.Inference/Generate",rpc_response_status_code="OK",rpc_system_name="grpc"} 1`,
		`rpc_client_call_duration_seconds_count{rpc_method="switchyard.v1.Inference/Generate",rpc_response_status_code="OK",rpc_system_name="grpc",server_address="127.0.0.1"`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if n := strings.Count(string(body), "rpc_server_call_duration_seconds_count{"); n != 1 {
		t.Errorf("%d server duration series, want 1 (one per call, not one per handler)", n)
	}

	if err := stop(); err != nil { // Run flushes the span batcher on the way out
		t.Fatal(err)
	}
	out := spans.String()
	for _, name := range []string{`"Name":"switchyard.v1.Inference/Generate","SpanContext":{"TraceID":"` + traceID} {
		if strings.Count(out, name) < 2 {
			t.Errorf("want the server and the backend-client span of the caller's trace (%s) among the exported spans:\n%s", name, out)
		}
	}
}
