package router_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// runaway is a real OpenAI-compatible HTTP server (llama.cpp's surface:
// /health, /v1/models, SSE completions) that ignores max_tokens: every
// stream goes on until the router hangs up. mode "tokens" sends one token
// per event; "empty" sends events without any text.
type runaway struct {
	url     string
	mode    string
	written atomic.Int64 // bytes of completions written, all streams
	active  atomic.Int64 // streams being written now
	streams atomic.Int64 // streams started
}

func startRunaway(t *testing.T, mode string) *runaway {
	t.Helper()
	ra := &runaway{mode: mode}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"status":"ok"}`) })
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"runaway-model","object":"model"}]}`)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "llamacpp:requests_processing 0\nllamacpp:requests_deferred 0\n")
	})
	stream := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ra.streams.Add(1)
		ra.active.Add(1)
		defer ra.active.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		event := `data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}` + "\n\n"
		if ra.mode == "empty" {
			event = `data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":null}]}` + "\n\n"
		}
		batch := strings.Repeat(event, 16)
		for r.Context().Err() == nil {
			n, err := io.WriteString(w, batch)
			ra.written.Add(int64(n))
			if err != nil || rc.Flush() != nil {
				return
			}
		}
	}
	mux.HandleFunc("POST /v1/chat/completions", stream)
	mux.HandleFunc("POST /v1/completions", stream)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	ra.url = "http://" + lis.Addr().String()
	return ra
}

// runawayRouter is a real router with one openai pool on ra, its metrics
// read by reader, called over gRPC.
func runawayRouter(t *testing.T, ra *runaway) (pb.InferenceClient, *sdkmetric.ManualReader) {
	t.Helper()
	yaml := fmt.Sprintf("models:\n  - {name: m, max_input_tokens: 8192, max_output_tokens: 4096}\npools:\n"+
		"  - {name: runaway, cloud: aws, region: us-east-1, accelerator: cpu, models: [m], adapter: openai, endpoints: [%q], limits: {max_concurrent: 64},"+
		" options: {server: llamacpp, model_names: {m: runaway-model}, metrics_interval: 1s}}\n"+
		"routing:\n  queue_max_wait: 1s\n  health_check_interval: 1s\n  eject_after_failures: 1000\n", ra.url)
	fleet, err := config.Parse([]byte(yaml), "runaway fleet")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	openai.Register(reg, openai.Options{})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	r := routertest.Start(t, routertest.Options{Router: router.Options{Fleet: fleet, Backends: reg, MeterProvider: mp}})
	return r.Inference, reader
}

// overruns reads switchyard.backend.overruns by reason.
func overruns(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "switchyard.backend.overruns" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				reason, _ := dp.Attributes.Value("reason")
				pool, _ := dp.Attributes.Value("pool")
				out[pool.AsString()+"/"+reason.AsString()] += dp.Value
			}
		}
	}
	return out
}

// streamChat runs one streamed chat and returns its text tokens and last chunk.
func streamChat(ctx context.Context, c pb.InferenceClient, maxTokens int32) (tokens int32, last *pb.GenerateChunk, err error) {
	st, err := c.GenerateStream(ctx, &pb.GenerateRequest{Model: "m", MaxTokens: maxTokens,
		Messages: []*pb.ChatMessage{{Role: "user", Content: "count forever"}}})
	if err != nil {
		return 0, nil, err
	}
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return tokens, last, nil
		}
		if err != nil {
			return tokens, last, err
		}
		tokens += ch.GetTokens()
		last = ch
	}
}

// TestRunawayBackendStoppedAtMaxTokens is the outside probe's runaway
// backend (2026-12-02): a server that streams without end gave a client who
// asked for 8 tokens 150,694 chunks (53 MB) in 3 s. Now the router stops the
// attempt at max_tokens: a finished stream of 8 tokens with finish reason
// LENGTH, in under 3 s; the backend's connection is closed (its writes stop);
// the overrun is counted; the router's heap stays bounded while 16 such
// streams run at once.
func TestRunawayBackendStoppedAtMaxTokens(t *testing.T) {
	ra := startRunaway(t, "tokens")
	client, reader := runawayRouter(t, ra)
	ctx := ctxT(t, 30*time.Second)

	start := time.Now()
	tokens, last, err := streamChat(ctx, client, 8)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("runaway stream: %v", err)
	}
	if tokens != 8 || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH || last.GetUsage().GetOutputTokens() != 8 {
		t.Fatalf("stream of %d tokens, finish %v, usage %v; want 8, LENGTH, 8 output tokens", tokens, last.GetFinishReason(), last.GetUsage())
	}
	if took >= 3*time.Second {
		t.Fatalf("runaway stream finished after %s, want < 3s", took)
	}
	testwait.For(t, 5*time.Second, "the backend's stream ended (the router hung up)", func() bool { return ra.active.Load() == 0 })
	t.Logf("8 tokens in %s; the backend wrote %d bytes before the router hung up", took.Round(time.Millisecond), ra.written.Load())
	if got := overruns(t, reader); got["runaway/max_tokens"] != 1 {
		t.Fatalf("overruns %v, want runaway/max_tokens 1", got)
	}

	// 16 at once: the router's heap stays bounded while the backend writes
	// as fast as loopback goes.
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, last, err := streamChat(ctx, client, 8)
			if err == nil && (n != 8 || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH) {
				err = fmt.Errorf("%d tokens, finish %v", n, last.GetFinishReason())
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent runaway stream: %v", err)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use %d MiB before, peak %d MiB during 16 runaway streams", base.HeapInuse>>20, peak.Load()>>20)
	if growth > 64<<20 {
		t.Fatalf("the router's heap grew by %d MiB during 16 runaway streams of 8 tokens", growth>>20)
	}
	testwait.For(t, 5*time.Second, "every backend stream ended", func() bool { return ra.active.Load() == 0 })
	if got := overruns(t, reader); got["runaway/max_tokens"] != 17 {
		t.Fatalf("overruns %v, want runaway/max_tokens 17", got)
	}
}

// TestRunawayBackendWithoutTextIsCutByBytes: a server that streams events
// without any text (so no token ever counts) is cut off once its stream
// passes the bytes max_tokens can take: UNAVAILABLE, counted as an overrun
// for bytes, the backend's connection closed. (The client is not told the
// backend's own error, as for every backend failure.)
func TestRunawayBackendWithoutTextIsCutByBytes(t *testing.T) {
	ra := startRunaway(t, "empty")
	client, reader := runawayRouter(t, ra)
	ctx := ctxT(t, 30*time.Second)
	_, _, err := streamChat(ctx, client, 8)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("empty runaway stream: %v, want UNAVAILABLE", err)
	}
	// Unary: an answer longer than 8 tokens can take is refused as well.
	if _, err := client.Generate(ctx, &pb.GenerateRequest{Model: "m", MaxTokens: 8, Prompt: "count forever"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("endless unary answer: %v, want UNAVAILABLE", err)
	}
	testwait.For(t, 5*time.Second, "the backend's streams ended", func() bool { return ra.active.Load() == 0 })
	if got := overruns(t, reader); got["runaway/bytes"] != 2 {
		t.Fatalf("overruns %v, want runaway/bytes 2", got)
	}
	t.Logf("%d attempts, %d bytes written by the backend in all", ra.streams.Load(), ra.written.Load())
}

// TestGenAIClientOperationDuration: each attempt on a backend is a GenAI
// client operation (the router is the backends' client): counted in
// gen_ai.client.operation.duration with gen_ai.operation.name (chat,
// text_completion), gen_ai.provider.name (openai for an OpenAI-compatible
// server), the model and the pool, and error.type when it failed.
func TestGenAIClientOperationDuration(t *testing.T) {
	ra := startRunaway(t, "tokens")
	client, reader := runawayRouter(t, ra)
	ctx := ctxT(t, 30*time.Second)
	if _, _, err := streamChat(ctx, client, 4); err != nil {
		t.Fatal(err)
	}
	ra2 := startRunaway(t, "empty")
	client2, reader2 := runawayRouter(t, ra2)
	if _, err := client2.Generate(ctx, &pb.GenerateRequest{Model: "m", MaxTokens: 4, Prompt: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("endless unary answer: %v", err)
	}
	ops := func(reader *sdkmetric.ManualReader) map[string]uint64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "gen_ai.client.operation.duration" {
					continue
				}
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					var k []string
					for _, key := range []string{"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "pool", "error.type"} {
						v, _ := dp.Attributes.Value(attribute.Key(key))
						k = append(k, v.AsString())
					}
					out[strings.Join(k, "/")] += dp.Count
				}
			}
		}
		return out
	}
	if got := ops(reader); got["chat/openai/m/runaway/"] != 1 || len(got) != 1 {
		t.Fatalf("gen_ai.client.operation.duration %v, want one chat/openai/m/runaway without error", got)
	}
	if got := ops(reader2); got["text_completion/openai/m/runaway/UNAVAILABLE"] < 1 {
		t.Fatalf("gen_ai.client.operation.duration %v, want a failed text_completion", got)
	}
}
