package router_test

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/backends/sim"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// simPool is one simulated pool served by its own real gRPC server on
// loopback, the way switchyard-sim serves it (routertest.StartSimPool).
type simPool struct {
	name, cloud, region, accel string
	limit                      int
	timeScale                  float64
	models                     []string

	pool *sim.Pool
	addr string
	sp   *routertest.SimPool
}

// kill stops the pool's server hard, like a crashed process.
func (p *simPool) kill() { p.sp.Kill() }

func startSimPool(t testing.TB, p *simPool) {
	t.Helper()
	p.sp = routertest.StartSimPool(t, sim.Options{Name: p.name, Accelerator: p.accel, MaxBatch: p.limit, TimeScale: p.timeScale})
	p.pool, p.addr = p.sp.Pool, p.sp.Addr
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

// startFleet starts pools, each behind its own server, and a router
// (routertest.Start) in front of them.
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
	r := routertest.Start(t, routertest.Options{FleetYAML: b.String(),
		Router: router.Options{Policy: o.policy, Store: o.store, Region: o.region}})
	tf.rt, tf.client, tf.addr = r.Server, r.Inference, r.Addr
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
