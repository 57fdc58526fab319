package router_test

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/grpcnative"
	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
)

// simPool is one simulated pool served by its own real gRPC server on
// loopback, the way switchyard-sim serves it.
type simPool struct {
	name, cloud, region, accel string
	limit                      int
	timeScale                  float64
	models                     []string

	pool *sim.Pool
	gs   *grpc.Server
	addr string
}

// kill stops the pool's server hard, like a crashed process.
func (p *simPool) kill() { p.gs.Stop() }

func startSimPool(t testing.TB, p *simPool) {
	t.Helper()
	if p.timeScale == 0 {
		p.timeScale = 50
	}
	sp, err := sim.NewPool(sim.Options{Name: p.name, Accelerator: p.accel, MaxBatch: p.limit, TimeScale: p.timeScale, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterInferenceServer(gs, sim.NewInferenceServer(sp))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); _ = sp.Close() })
	p.pool, p.gs, p.addr = sp, gs, lis.Addr().String()
}

// testFleet is a router in front of real sim servers, with a client.
type testFleet struct {
	pools  map[string]*simPool
	rt     *router.Server
	client pb.InferenceClient
	addr   string
}

type fleetOpts struct {
	routing string // extra YAML under routing:
	policy  string
	store   capacity.Store
	region  string // the router's own region
	// queueWait overrides routing.queue_max_wait (default 300ms).
	queueWait string
	// topLevel is YAML appended at the top level (tenants:, admin:).
	topLevel string
}

func startFleet(t *testing.T, o fleetOpts, pools ...*simPool) *testFleet {
	t.Helper()
	var b strings.Builder
	b.WriteString("models:\n  - {name: m, max_input_tokens: 1000, max_output_tokens: 500}\n")
	for _, p := range pools {
		if strings.Contains(strings.Join(p.models, ","), "other") {
			b.WriteString("  - {name: other, max_input_tokens: 1000, max_output_tokens: 500}\n")
			break
		}
	}
	for _, p := range pools {
		if strings.Contains(strings.Join(p.models, ","), "embed") {
			b.WriteString("  - {name: embed, kind: embedding, max_input_tokens: 500}\n")
			break
		}
	}
	b.WriteString("pools:\n")
	tf := &testFleet{pools: map[string]*simPool{}}
	for _, p := range pools {
		startSimPool(t, p)
		tf.pools[p.name] = p
		models := p.models
		if len(models) == 0 {
			models = []string{"m"}
		}
		fmt.Fprintf(&b, "  - {name: %s, cloud: %s, region: %s, accelerator: %s, models: [%s], endpoints: [%q], limits: {max_concurrent: %d}, cost_per_million_tokens: 1}\n",
			p.name, p.cloud, p.region, p.accel, strings.Join(models, ", "), p.addr, p.limit)
	}
	fmt.Fprintf(&b, "routing:\n  queue_max_wait: %s\n  health_check_interval: 100ms\n", cmp.Or(o.queueWait, "300ms"))
	b.WriteString(o.routing)
	b.WriteString(o.topLevel)
	fleet, err := config.Parse([]byte(b.String()), "test fleet")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	grpcnative.Register(reg, grpcnative.Options{})
	rt, err := router.New(router.Options{Fleet: fleet, Backends: reg, Policy: o.policy, Store: o.store, Region: o.region, UsageRefresh: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(router.ServerOptions()...)
	rt.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); gs.Stop(); _ = rt.Close() })
	tf.rt, tf.client, tf.addr = rt, pb.NewInferenceClient(cc), lis.Addr().String()
	return tf
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func req(region string, maxTokens int32) *pb.GenerateRequest {
	return &pb.GenerateRequest{Model: "m", Prompt: "tell me about switchyards", MaxTokens: maxTokens, Routing: &pb.RoutingHints{CallerRegion: region}}
}

// stream runs a GenerateStream to the end and returns the chunks' text,
// token count and final chunk.
func stream(ctx context.Context, c pb.InferenceClient, r *pb.GenerateRequest) (text string, tokens int32, last *pb.GenerateChunk, err error) {
	s, err := c.GenerateStream(ctx, r)
	if err != nil {
		return "", 0, nil, err
	}
	var b strings.Builder
	for {
		ch, err := s.Recv()
		if err != nil {
			if err.Error() == "EOF" {
				return b.String(), tokens, last, nil
			}
			return b.String(), tokens, last, err
		}
		b.WriteString(ch.Text)
		tokens += ch.Tokens
		last = ch
	}
}
