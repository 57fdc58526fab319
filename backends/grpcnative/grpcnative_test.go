package grpcnative

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// poolEcho records the pool header the adapter sends.
type poolEcho struct {
	*sim.InferenceServer
	seen chan string
}

func (p poolEcho) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(PoolHeader); len(v) > 0 {
		p.seen <- v[0]
	}
	return p.InferenceServer.Generate(ctx, req)
}

func TestAdapterAgainstARealServer(t *testing.T) {
	sp, err := sim.NewPool(sim.Options{Name: "p", Accelerator: "h100", MaxBatch: 3, TimeScale: 100})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	echo := poolEcho{InferenceServer: sim.NewInferenceServer(sp), seen: make(chan string, 10)}
	pb.RegisterInferenceServer(gs, echo)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	reg := backends.NewRegistry()
	Register(reg, Options{})
	b, err := reg.New(AdapterName, backends.Spec{Pool: "pool-a", Endpoints: []string{lis.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, ok := b.(backends.LoadReporter).Load(); ok {
		t.Fatal("load report before any call")
	}
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 4})
	if err != nil || resp.GetUsage().GetOutputTokens() != 4 {
		t.Fatalf("generate: %v %v", resp, err)
	}
	if got := <-echo.seen; got != "pool-a" {
		t.Fatalf("pool header %q", got)
	}
	l, ok := b.(backends.LoadReporter).Load()
	if !ok || l.Capacity != 3 {
		t.Fatalf("load report after a call: %+v %v", l, ok)
	}
	var chunks, tokens int32
	err = b.GenerateStream(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 9}, func(c *pb.GenerateChunk) error {
		chunks++
		tokens += c.Tokens
		return nil
	})
	if err != nil || tokens != 9 || chunks == 0 {
		t.Fatalf("stream: %d tokens in %d chunks, %v", tokens, chunks, err)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("health check of a serving endpoint: %v", err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if err := b.Check(ctx); err == nil {
		t.Fatal("health check passed on a NOT_SERVING endpoint")
	}
	if !b.Capabilities().Continuation {
		t.Fatal("native adapter must support continuation")
	}
	if _, err := New(backends.Spec{Pool: "x"}, Options{}); err == nil {
		t.Fatal("no endpoints accepted")
	}
}
