// Package routertest starts switchyard routers in-process for tests, the way
// gubernator's cluster package starts its daemons: Start (or StartN for
// several replicas) builds a router from a fleet, backends and stores, serves
// its gRPC Inference and Admin services on a loopback port and hands back
// the router, its address and connected clients. Simulated pools run either
// in the router (the sim adapter, on the Router's Host) or each behind its
// own loopback gRPC server as switchyard-sim serves them (StartSimPool). An
// HTTP edge (the OpenAI or Anthropic front door, the console) is served on a
// loopback listener with ServeHTTP. Everything started is stopped by
// t.Cleanup, last started first, and leaves no goroutine behind (each
// package's TestMain runs goleak).
//
// It is the one harness for tests above the core: tests of the request
// path's own decisions build a dispatch.Dispatcher instead
// (router/dispatch/dispatchtest).
package routertest

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	openaiadapter "github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/grpcedge"
)

// Options describe one router.
type Options struct {
	// Router is what the router is built from. Unset fields get the
	// harness's defaults: Fleet the embedded demo fleet (or FleetYAML),
	// Backends the registry Backends makes on the Router's Host, Logger one
	// that discards, UsageRefresh 20ms (shared counts show within a test's
	// patience), Replica "routertest-N". Everything else is router.New's
	// default (an in-memory capacity and control store, no admin tokens).
	Router router.Options
	// FleetYAML, when set and Router.Fleet is not, is parsed for the fleet.
	FleetYAML string
	// Host runs the sim adapter's in-process pools; nil: a new one.
	Host *sim.Host
	// TimeScale of those pools (default 50: fast).
	TimeScale float64
	// GRPC are extra options for the router's gRPC server, after
	// grpcedge.ServerOptions (stats handlers).
	GRPC []grpc.ServerOption
}

// Router is one running router and its clients.
type Router struct {
	// Server is the router.
	Server *router.Server
	// Host runs its in-process simulated pools (fault injection).
	Host *sim.Host
	// Addr is its gRPC listener on loopback (Inference and Admin).
	Addr string
	// Conn is a client connection to Addr; Inference and Admin use it.
	Conn      *grpc.ClientConn
	Inference pb.InferenceClient
	Admin     pb.AdminClient
}

// Discard is a logger that discards: routers log nothing into test output
// unless a test gives them a logger.
var Discard = slog.New(slog.DiscardHandler)

var replicas atomic.Int64

// Start builds the router o describes, serves it on a loopback port and
// connects clients. The router, its server and the clients stop at cleanup.
func Start(t testing.TB, o Options) *Router {
	t.Helper()
	ro := o.Router
	if ro.Fleet == nil {
		ro.Fleet = config.Demo()
		if o.FleetYAML != "" {
			f, err := config.Parse([]byte(o.FleetYAML), "routertest fleet")
			if err != nil {
				t.Fatal(err)
			}
			ro.Fleet = f
		}
	}
	host := o.Host
	if host == nil {
		host = sim.NewHost()
	}
	if ro.Backends == nil {
		ro.Backends = Backends(host, cmp.Or(o.TimeScale, 50), ro.Fleet.Sim.QueueLength)
	}
	if ro.Logger == nil {
		ro.Logger = Discard
	}
	if ro.UsageRefresh == 0 {
		ro.UsageRefresh = 20 * time.Millisecond
	}
	if ro.Replica == "" {
		ro.Replica = fmt.Sprintf("routertest-%d", replicas.Add(1))
	}
	rt, err := router.New(ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	gs := grpc.NewServer(grpcedge.ServerOptions(o.GRPC...)...)
	grpcedge.Register(gs, rt)
	lis := Listen(t)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc := Dial(t, lis.Addr().String())
	return &Router{Server: rt, Host: host, Addr: lis.Addr().String(), Conn: cc,
		Inference: pb.NewInferenceClient(cc), Admin: pb.NewAdminClient(cc)}
}

// StartN starts n routers, router i from each(i): replicas of one fleet
// sharing stores, or different fleets. They stop at cleanup, the last first.
func StartN(t testing.TB, n int, each func(i int) Options) []*Router {
	t.Helper()
	out := make([]*Router, n)
	for i := range n {
		out[i] = Start(t, each(i))
	}
	return out
}

// Backends is the registry a router gets unless its options name one: the
// native gRPC adapter (pools at host:port, e.g. StartSimPool's), the
// simulator hosted in-process on host (pools with endpoint "sim", at
// timeScale, queueLength calls queued per pool; 0: the simulator's default)
// and the OpenAI-compatible adapter (real model servers, logging nothing).
func Backends(host *sim.Host, timeScale float64, queueLength int) *backends.Registry {
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{})
	sim.Register(reg, sim.RegistryOptions{Host: host, TimeScale: timeScale, QueueLength: queueLength})
	openaiadapter.Register(reg, openaiadapter.Options{Logger: Discard})
	return reg
}

// Listen is a listener on a free loopback port, closed at cleanup.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	return lis
}

// Dial is a plaintext gRPC client connection to addr, closed at cleanup.
func Dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Bearer is ctx carrying token as the call's "authorization: Bearer" (an
// admin token for Admin, an API key for Inference).
func Bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// Context is a context ending after d or at cleanup.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
