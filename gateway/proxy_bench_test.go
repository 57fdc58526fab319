package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// constBackend answers every Generate at once with four tokens: the cheapest
// possible backend, so the benchmark measures the path, not the model.
type constBackend struct {
	pb.UnimplementedInferenceServer
}

func (constBackend) Generate(_ context.Context, r *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	return &pb.GenerateResponse{
		Text: "four tokens of text", FinishReason: pb.FinishReason_FINISH_REASON_LENGTH,
		Usage: &pb.Usage{InputTokens: 8, OutputTokens: r.GetMaxTokens()},
	}, nil
}

// startBackend serves impl as a native gRPC backend on a free loopback port.
func startBackend(tb testing.TB, impl pb.InferenceServer) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(transportServerOptions...)
	pb.RegisterInferenceServer(gs, impl)
	go func() { _ = gs.Serve(l) }()
	tb.Cleanup(gs.Stop)
	return l.Addr().String()
}

// BenchmarkProxyPath: one unary Generate from parallel callers over four
// connections, straight to a backend (direct) and through the router with
// in-memory counters and metrics on (router; router-goroutine-per-call
// without --stream-workers), all in one process on
// loopback. allocs/op counts the whole process (client, router, backend):
// router minus direct is what the router allocates per call. Latency and
// throughput against nginx are scripts/bench-proxy.sh's job; this one is for
// allocations and CPU per call, which are steady enough to compare commits.
//
//	go test -run '^$' -bench ProxyPath -benchmem ./gateway/
func BenchmarkProxyPath(b *testing.B) {
	backend := startBackend(b, constBackend{})
	fleet := filepath.Join(b.TempDir(), "fleet.yaml")
	if err := os.WriteFile(fleet, fmt.Appendf(nil, `models:
  - {name: bench, max_input_tokens: 4096, max_output_tokens: 64}
pools:
  - {name: bench, cloud: aws, region: us-east-1, accelerator: h100, models: [bench],
     endpoints: ["%s"], limits: {max_concurrent: 100000}, cost_per_million_tokens: 1}
`, backend), 0o600); err != nil {
		b.Fatal(err)
	}
	args := []string{"--config", fleet, "--metrics-listen", "127.0.0.1:0", "--http-listen", "off", "--watch-config", "0"}
	router, _ := startRouter(b, args...)
	noWorkers, _ := startRouter(b, append(args, "--stream-workers", "0")...)
	req := &pb.GenerateRequest{Model: "bench", Prompt: "hello from the proxy benchmark", MaxTokens: 4}
	for _, c := range []struct{ name, addr string }{{"direct", backend}, {"router", router}, {"router-goroutine-per-call", noWorkers}} {
		b.Run(c.name, func(b *testing.B) {
			var clients [4]pb.InferenceClient
			for i := range clients {
				clients[i] = pb.NewInferenceClient(dial(b, c.addr))
				if _, err := clients[i].Generate(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
			var next uint32
			b.ReportAllocs()
			b.SetParallelism(32) // 64 callers on two cores, as bench-proxy's saturation step
			b.ResetTimer()
			b.RunParallel(func(p *testing.PB) {
				cl := clients[int(atomicAdd(&next))%len(clients)]
				for p.Next() {
					if _, err := cl.Generate(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func atomicAdd(p *uint32) uint32 { return atomic.AddUint32(p, 1) }
