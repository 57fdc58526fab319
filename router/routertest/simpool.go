package routertest

import (
	"cmp"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// SimPool is one simulated pool served by its own real gRPC server on
// loopback (Inference and grpc.health.v1), the way switchyard-sim serves
// it: a fleet names it by Addr with the native gRPC adapter.
type SimPool struct {
	// Pool is the simulated pool (stats, faults).
	Pool *sim.Pool
	// Addr is its server's loopback address.
	Addr string
	gs   *grpc.Server
}

// StartSimPool starts the pool o describes (TimeScale 50 when unset, Seed
// 1) behind its own gRPC server; both stop at cleanup.
func StartSimPool(t testing.TB, o sim.Options) *SimPool {
	t.Helper()
	o.TimeScale = cmp.Or(o.TimeScale, 50)
	o.Seed = cmp.Or(o.Seed, 1)
	sp, err := sim.NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	gs := grpc.NewServer()
	pb.RegisterInferenceServer(gs, sim.NewInferenceServer(sp))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis := Listen(t)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return &SimPool{Pool: sp, Addr: lis.Addr().String(), gs: gs}
}

// Kill stops the pool's server hard, like a crashed process: open calls
// break, new connections are refused.
func (p *SimPool) Kill() { p.gs.Stop() }
