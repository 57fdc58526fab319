package grpcnative

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// serve runs a real gRPC server (the simulator behind switchyard.v1.Inference) on a free loopback port.
func serve(t *testing.T, fault *pb.Fault) string {
	t.Helper()
	sp, err := sim.NewPool(sim.Options{Name: "contract", Accelerator: "h100", MaxBatch: 16, TimeScale: 50})
	if err != nil {
		t.Fatal(err)
	}
	if fault != nil {
		if err := sp.SetFault(fault); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterInferenceServer(gs, sim.NewInferenceServer(sp))
	hs := health.NewServer()
	if fault != nil {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); _ = sp.Close() })
	return lis.Addr().String()
}

// The native adapter passes the contract against a real gRPC server.
func TestBackendContract(t *testing.T) {
	dial := func(t *testing.T, addr string) backends.Backend {
		b, err := New(backends.Spec{Pool: "contract", Endpoints: []string{addr}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return dial(t, serve(t, nil)) },
		Model:         "m",
		LongMaxTokens: 4000,
		Broken: func(t *testing.T) backends.Backend {
			// A port nothing listens on.
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := lis.Addr().String()
			_ = lis.Close()
			return dial(t, addr)
		},
		ClientFault:   &pb.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 4, Continuation: &pb.Continuation{GeneratedTokens: -1}},
		Deterministic: true,
	})
}
