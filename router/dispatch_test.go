package router

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// The router's wiring of the request path: fake backends behind a real
// router.Server (its fleet from YAML, its pb requests and statuses), a fake
// clock, the in-memory store, no network and no sleeping. The path's own
// decisions are tested on the core alone (router/dispatch/path_test.go, with
// router/dispatch/dispatchtest); the e2e tests (e2e_test.go) prove the same
// path over gRPC against the simulator.

// step is what a fake backend does on one call.
type step struct {
	tokens int32      // tokens streamed (one per chunk) before the end
	fail   codes.Code // after the tokens: fail with this code (OK: finish)
	hang   bool       // block until the attempt's context ends
	panic  bool
	tool   bool // the streamed chunks are pieces of a tool call, not text
}

// fakeBackend plays its steps in order, the last one again once they run out.
type fakeBackend struct {
	name      string
	continues bool
	steps     []step
	// prompt is the input its server counts for the client's request; a
	// continuation adds its generated tokens, as a real server counting the
	// re-sent text would. 0: the backend reports no input tokens.
	prompt int32
	// cached is the prompt tokens its server reports served from its prefix cache.
	cached int32
	// caps are the optional capabilities it claims (Continuation comes from continues).
	caps backends.Capabilities

	mu    sync.Mutex
	calls []*pb.GenerateRequest
	// checks counts active health checks.
	checks atomic.Int64
}

var _ backends.Backend = (*fakeBackend)(nil)

func (f *fakeBackend) next(req *pb.GenerateRequest) step {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	return f.steps[min(len(f.calls), len(f.steps))-1]
}

func (f *fakeBackend) ncalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeBackend) text(i int32) string { return fmt.Sprintf("%s%d ", f.name, i) }

func (f *fakeBackend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	s := f.next(req)
	switch {
	case s.panic:
		panic("fake backend " + f.name + " panicked")
	case s.hang:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case s.fail != codes.OK:
		return nil, status.Errorf(s.fail, "%s: injected %s", f.name, s.fail)
	}
	var b strings.Builder
	for i := range s.tokens {
		b.WriteString(f.text(i))
	}
	return &pb.GenerateResponse{Text: b.String(), FinishReason: pb.FinishReason_FINISH_REASON_LENGTH,
		Usage: &pb.Usage{InputTokens: f.input(req), OutputTokens: s.tokens, CachedInputTokens: f.cached}}, nil
}

// input is the input tokens the fake's server reports for req.
func (f *fakeBackend) input(req *pb.GenerateRequest) int32 {
	if f.prompt == 0 {
		return 0
	}
	return f.prompt + req.GetContinuation().GetGeneratedTokens()
}

func (f *fakeBackend) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	s := f.next(req)
	if s.panic {
		panic("fake backend " + f.name + " panicked")
	}
	for i := range s.tokens {
		ch := &pb.GenerateChunk{Text: f.text(i), Tokens: 1}
		if s.tool {
			ch.Text, ch.ToolCalls = "", []*pb.ToolCallDelta{{Arguments: f.text(i)}}
		}
		if err := send(ch); err != nil {
			return err
		}
	}
	switch {
	case s.hang:
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	case s.fail != codes.OK:
		return status.Errorf(s.fail, "%s: injected %s", f.name, s.fail)
	}
	return send(&pb.GenerateChunk{FinishReason: pb.FinishReason_FINISH_REASON_LENGTH, Usage: &pb.Usage{InputTokens: f.input(req), OutputTokens: s.tokens, CachedInputTokens: f.cached}})
}

func (f *fakeBackend) Check(context.Context) error { f.checks.Add(1); return nil }
func (f *fakeBackend) Capabilities() backends.Capabilities {
	c := f.caps
	c.Continuation = f.continues
	return c
}
func (f *fakeBackend) Close() error { return nil }

// recorder is an observer that remembers the sheds the dispatcher told it
// of (the router's telemetry hears everything too: Options.Observer).
type recorder struct {
	dispatch.NopObserver
	mu    sync.Mutex
	sheds []string
}

func (r *recorder) Shed(_ context.Context, why dispatch.ShedReason, _ priority.Class) {
	r.mu.Lock()
	r.sheds = append(r.sheds, why.String())
	r.mu.Unlock()
}

// dispatchFleet is a router over fake pools, on a fake clock.
type dispatchFleet struct {
	rt    *Server
	clk   *clock.Fake
	store *capacity.Memory
	rec   *recorder
	fakes map[string]*fakeBackend
	// pools is the fleet file up to its routing section (reload builds on
	// it); policy the routing policy named in it.
	pools, policy string
}

// fleet is the dispatch fleet's config with routing as the extra lines
// under routing: (queue_max_wait 2s unless they set it; the policy the
// router runs, so a reload finds it in the router's registry).
func (df *dispatchFleet) fleet(routing string) (*config.Fleet, error) {
	head := "routing:\n  policy: " + df.policy + "\n"
	if !strings.Contains(routing, "queue_max_wait:") {
		head += "  queue_max_wait: 2s\n"
	}
	return config.Parse([]byte(df.pools+head+routing), "dispatch test")
}

// reload reloads the router with routing as the extra lines under routing:.
func (df *dispatchFleet) reload(t testing.TB, routing string) {
	t.Helper()
	f, err := df.fleet(routing)
	if err != nil {
		t.Fatal(err)
	}
	if err := df.rt.Reload(f); err != nil {
		t.Fatal(err)
	}
}

// fakePool is a pool of the fleet: a backend, and full when held.
type fakePool struct {
	backend *fakeBackend
	full    bool   // another call holds its only slot
	region  string // default us-east-1
}

func newDispatchFleet(t testing.TB, routing string, pools ...fakePool) *dispatchFleet {
	return newDispatchFleetWith(t, routing, "in_order", orderedPolicies(), pools...)
}

func newDispatchFleetWith(t testing.TB, routing, pol string, reg *policy.Registry, pools ...fakePool) *dispatchFleet {
	t.Helper()
	return newDispatchFleetOpts(t, dispatchOpts{routing: routing, policy: pol, policies: reg}, pools...)
}

// dispatchOpts are a dispatch fleet's settings beyond its pools.
type dispatchOpts struct {
	routing  string // extra lines under routing:
	policy   string
	policies *policy.Registry
	meter    metric.MeterProvider // nil: no-op metrics
	rand     func() float64       // nil: math/rand/v2
	// store, when set, wraps the fleet's in-memory store (to watch it).
	store func(*capacity.Memory) capacity.Store
	// quiet: no recorder (benchmarks measure the router's own observer only).
	quiet bool
}

func newDispatchFleetOpts(t testing.TB, o dispatchOpts, pools ...fakePool) *dispatchFleet {
	t.Helper()
	routing, pol, reg := o.routing, o.policy, o.policies
	var b strings.Builder
	b.WriteString("models:\n  - {name: m, max_input_tokens: 1000, max_output_tokens: 500}\npools:\n")
	df := &dispatchFleet{clk: clock.NewFake(time.Unix(1_800_000_000, 0)), fakes: map[string]*fakeBackend{}}
	for _, p := range pools {
		limit := 8
		if p.full {
			limit = 1
		}
		// Every pool in one region with equal weight: the test fixes the
		// order with preferred_cloud weights below, not chance.
		fmt.Fprintf(&b, "  - {name: %s, cloud: aws, region: %s, accelerator: h100, models: [m], endpoints: [x], adapter: fake, limits: {max_concurrent: %d}, cost_per_million_tokens: 1}\n",
			p.backend.name, cmp.Or(p.region, "us-east-1"), limit)
		df.fakes[p.backend.name] = p.backend
	}
	df.pools, df.policy = b.String(), cmp.Or(pol, "round_robin")
	fleet, err := df.fleet(routing)
	if err != nil {
		t.Fatal(err)
	}
	breg := backends.NewRegistry()
	breg.Register("fake", func(s backends.Spec) (backends.Backend, error) { return df.fakes[s.Pool], nil })
	df.store = capacity.NewMemory(capacity.MemoryOptions{Clock: df.clk})
	var store capacity.Store = df.store
	if o.store != nil {
		store = o.store(df.store)
	}
	df.rec = &recorder{}
	var obs dispatch.Observer = df.rec
	if o.quiet {
		obs = nil
	}
	rt, err := New(Options{Fleet: fleet, Backends: breg, Store: store, Clock: df.clk, Policies: reg,
		Policy: pol, Logger: slog.New(slog.DiscardHandler), MeterProvider: o.meter, Rand: o.rand, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	if !df.clk.WaitForWaiters(3, 5*time.Second) {
		// The usage refresh, health check and queue poll tickers: tests
		// count the waiters they add on top of these.
		t.Fatal("the router's tickers did not start")
	}
	df.rt = rt
	for _, p := range pools {
		if p.full {
			if _, err := df.store.Acquire(context.Background(), capacity.Reservation{ID: "holder", Pool: p.backend.name, Limits: capacity.Limits{MaxConcurrent: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return df
}

// inFlight is every pool's in-flight count in the store and in the router,
// minus the holders' slots.
func (df *dispatchFleet) leaked(t testing.TB, pools ...fakePool) []string {
	t.Helper()
	var names []string
	for _, p := range pools {
		names = append(names, p.backend.name)
	}
	u, err := df.store.Usage(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pools {
		want := 0
		if p.full {
			want = 1
		}
		if got := u[p.backend.name].InFlight; got != want {
			out = append(out, fmt.Sprintf("%s: store has %d in flight, want %d", p.backend.name, got, want))
		}
		if got := df.pool(p.backend.name).InFlight(); got != 0 {
			out = append(out, fmt.Sprintf("%s: router counts %d in flight", p.backend.name, got))
		}
	}
	return out
}

// pool is the running pool named name.
func (df *dispatchFleet) pool(name string) *dispatch.Pool {
	p, _ := df.rt.disp.Generation().Pool(name)
	return p
}

func fake(name string, continues bool, steps ...step) *fakeBackend {
	return &fakeBackend{name: name, continues: continues, steps: steps}
}

func ok(tokens int32) step                 { return step{tokens: tokens} }
func failAfter(n int32, c codes.Code) step { return step{tokens: n, fail: c} }

// strata is a random source for tests: the midpoints of k equal strata of
// [0,1) over and over (1/16, 3/16, ... for k = 8), so every k draws cover
// it evenly. Safe for concurrent use.
func strata(k int64) func() float64 {
	var n atomic.Int64
	return func() float64 { return (float64((n.Add(1)-1)%k) + 0.5) / float64(k) }
}

// The dispatcher walks the policy's order, drawn as it goes: with the
// default policy, equal pools in one region share the calls by weight, not
// in config order. The router's random source is injected, so the shares
// are exact: one draw a call, every eight draws spread evenly over [0,1)
// (a weight of 2 would give a 3 of 8 calls, not 2).
func TestDispatcherFollowsTheWeightedDraw(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, ok(1))}, {backend: fake("b", true, ok(1))}}
	df := newDispatchFleetOpts(t, dispatchOpts{policy: "switchyard", policies: policy.Builtins(), rand: strata(8)}, pools...)
	st := control.State{}.Clone() // an operator's weight change, as the control store delivers it
	st.Weights["b"] = 3
	st.Version = 1 << 30
	df.rt.applyControl(st)
	const n = 400
	for range n {
		if _, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1,
			Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := df.fakes["a"].ncalls(), df.fakes["b"].ncalls()
	// Weight 3 against 1: b first in 6 of every 8 calls.
	if a != n/4 || b != 3*n/4 {
		t.Fatalf("a served %d, b %d: want %d and %d", a, b, n/4, 3*n/4)
	}
}

// A backend's refusal of the request (a client fault) reaches the edge as
// the backend's own code and words, never retried (the gRPC edge then passes
// the backend's status through: router/grpcedge, toStatus).
func TestBackendClientFaultReachesTheClient(t *testing.T) {
	df := newDispatchFleet(t, "", fakePool{backend: fake("a", true, failAfter(0, codes.InvalidArgument))}, fakePool{backend: fake("b", true, ok(1))})
	_, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 10})
	be, ok := dispatch.BackendVerdict(err)
	if !ok || be.Code != dispatch.CodeInvalid || grpccode.Of(err) != codes.InvalidArgument || dispatch.PublicText(err) != "a: injected InvalidArgument" {
		t.Fatalf("err %v, want the backend's INVALID_ARGUMENT as it worded it", err)
	}
	if n := df.fakes["b"].ncalls(); n != 0 {
		t.Fatalf("b called %d times after a client fault", n)
	}
}

func TestAttemptTimeoutValidation(t *testing.T) {
	_, err := config.Parse([]byte("models:\n  - {name: m, max_input_tokens: 10, max_output_tokens: 10}\npools:\n  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [sim], limits: {max_concurrent: 1}}\nrouting:\n  attempt_timeout: -1s\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "attempt_timeout") {
		t.Fatalf("negative attempt_timeout: %v", err)
	}
}

// inOrder ranks pools in config order, so table rows choose the order.
type inOrder struct{}

func (inOrder) Name() string                                                             { return "in_order" }
func (inOrder) Rank(*policy.Request, []policy.PoolView, []policy.Candidate, *policy.Env) {}

func orderedPolicies() *policy.Registry {
	r := policy.NewRegistry()
	r.Register(inOrder{})
	return r
}

// BenchmarkComplete is the router's own cost per unary call: admission,
// decision, reservation in the in-memory store, attempt, release and
// telemetry (no-op providers), against a fake backend that answers at once.
// Eight pools like the demo fleet.
func BenchmarkComplete(b *testing.B) {
	var pools []fakePool
	for i := range 8 {
		pools = append(pools, fakePool{backend: fake(fmt.Sprintf("p%d", i), true, ok(4))})
	}
	df := newDispatchFleetOpts(b, dispatchOpts{policy: "in_order", policies: orderedPolicies(), quiet: true}, pools...)
	df.rt.ops.policy.Store(&policyHolder{p: &policy.Switchyard{}})
	r := &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 4, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := df.rt.CompleteAs(ctx, CallInfo{RPC: "bench"}, r); err != nil {
			b.Fatal(err)
		}
	}
}

// A policy registered with the router's registry can be named in the fleet
// file; a reload naming one the registry does not hold is refused.
func TestFleetFileNamesARegisteredPolicy(t *testing.T) {
	yaml := func(pol string) *config.Fleet {
		f, err := config.Parse([]byte("models:\n  - {name: m, max_input_tokens: 100, max_output_tokens: 10}\npools:\n"+
			"  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [x], adapter: fake, limits: {max_concurrent: 1}}\n"+
			"routing:\n  policy: "+pol+"\n"), "t")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	breg := backends.NewRegistry()
	breg.Register("fake", func(backends.Spec) (backends.Backend, error) { return fake("a", true, ok(1)), nil })
	rt, err := New(Options{Fleet: yaml("in_order"), Backends: breg, Policies: orderedPolicies(), Clock: clock.NewFake(time.Unix(0, 0)), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("a registered policy named in the fleet file: %v", err)
	}
	defer rt.Close()
	if rt.PolicyName() != "in_order" {
		t.Fatalf("policy %s", rt.PolicyName())
	}
	if err := rt.Reload(yaml("no_such_policy")); err == nil || !strings.Contains(err.Error(), "in_order") {
		t.Fatalf("reload naming an unknown policy: %v, want a refusal listing the known ones", err)
	}
	if _, err := New(Options{Fleet: yaml("switchyard"), Backends: breg, Policies: orderedPolicies(), Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("a policy missing from the registry was accepted")
	}
}

// settleRecorder is the capacity store, remembering every settlement.
type settleRecorder struct {
	capacity.Store
	mu      sync.Mutex
	settled []string // "pool:tokens", in order
}

func (s *settleRecorder) Release(l capacity.Lease, used int64) {
	s.mu.Lock()
	s.settled = append(s.settled, fmt.Sprintf("%s:%d", l.Pool, used))
	s.mu.Unlock()
	s.Store.Release(l, used)
}

// tokenMetrics sums gen_ai.client.token.usage by token type.
func tokenMetrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "gen_ai.client.token.usage" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[int64]).DataPoints {
				v, _ := dp.Attributes.Value(attribute.Key(telemetry.KeyTokenType))
				out[v.AsString()] += dp.Sum
			}
		}
	}
	return out
}

// The usage a call reports to its client, records in metrics and settles
// into the pools' tokens-per-minute windows: the backend's reported input
// tokens, the router's estimate only where it reported none; across a
// continuation the client pays its prompt once and every token it received
// once, while each pool's window is charged what that pool processed (the
// re-sent prefix included). The router's estimate of "hello" is 2 tokens,
// the fake servers count 37.
func TestUsageAccounting(t *testing.T) {
	const est = 2 // backends.EstimateInputTokens of the prompt "hello"
	withPrompt := func(f *fakeBackend, n int32) *fakeBackend { f.prompt = n; return f }
	cases := []struct {
		name    string
		stream  bool
		cont    *pb.Continuation // sent by the client
		pools   func() []fakePool
		in, out int32    // the client's usage and the call's token metrics
		settled []string // each attempt's settlement, "pool:tokens"
		// sent is the continuation the serving pool received (nil: none).
		sent *pb.Continuation
	}{
		{
			name:  "unary: the server's input count",
			pools: func() []fakePool { return []fakePool{{backend: withPrompt(fake("a", true, ok(3)), 37)}} },
			in:    37, out: 3, settled: []string{"a:40"},
		},
		{
			name: "stream: the server's input count, not the router's estimate", stream: true,
			pools: func() []fakePool { return []fakePool{{backend: withPrompt(fake("a", true, ok(3)), 37)}} },
			in:    37, out: 3, settled: []string{"a:40"},
		},
		{
			name:  "unary: no input reported, the estimate",
			pools: func() []fakePool { return []fakePool{{backend: fake("a", true, ok(3))}} },
			in:    est, out: 3, settled: []string{"a:5"},
		},
		{
			name: "stream: no input reported, the estimate", stream: true,
			pools: func() []fakePool { return []fakePool{{backend: fake("a", true, ok(3))}} },
			in:    est, out: 3, settled: []string{"a:5"},
		},
		{
			name: "unary failover: the serving pool's count; the failed pool charged the estimate",
			pools: func() []fakePool {
				return []fakePool{{backend: withPrompt(fake("a", true, failAfter(0, codes.Unavailable)), 37)}, {backend: withPrompt(fake("b", true, ok(3)), 41)}}
			},
			in: 41, out: 3, settled: []string{"a:2", "b:44"},
		},
		{
			name: "continued stream: the prompt once, every token once; B's window holds the re-sent prefix", stream: true,
			pools: func() []fakePool {
				return []fakePool{{backend: withPrompt(fake("a", true, failAfter(3, codes.Unavailable)), 37)}, {backend: withPrompt(fake("b", true, ok(2)), 37)}}
			},
			in: 37, out: 5, settled: []string{"a:5", "b:42"},
			sent: &pb.Continuation{GeneratedText: "a0 a1 a2 ", GeneratedTokens: 3},
		},
		{
			name: "continued stream, the continuing pool reports no input: the estimate", stream: true,
			pools: func() []fakePool {
				return []fakePool{{backend: withPrompt(fake("a", true, failAfter(3, codes.Unavailable)), 37)}, {backend: fake("b", true, ok(2))}}
			},
			in: est, out: 5, settled: []string{"a:5", "b:7"},
			sent: &pb.Continuation{GeneratedText: "a0 a1 a2 ", GeneratedTokens: 3},
		},
		{
			name: "a client's own continuation is input it pays for, and is kept when the router continues", stream: true,
			cont: &pb.Continuation{GeneratedText: "x0 x1 x2 x3 ", GeneratedTokens: 4},
			pools: func() []fakePool {
				return []fakePool{{backend: withPrompt(fake("a", true, failAfter(3, codes.Unavailable)), 37)}, {backend: withPrompt(fake("b", true, ok(2)), 37)}}
			},
			// The estimate is 2 for the prompt plus 3 for the client's text.
			in: 41, out: 5, settled: []string{"a:8", "b:46"},
			sent: &pb.Continuation{GeneratedText: "x0 x1 x2 x3 a0 a1 a2 ", GeneratedTokens: 7},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			pools := tc.pools()
			var rec *settleRecorder
			df := newDispatchFleetOpts(t, dispatchOpts{policy: "in_order", policies: orderedPolicies(), meter: mp,
				store: func(m *capacity.Memory) capacity.Store { rec = &settleRecorder{Store: m}; return rec }}, pools...)
			r := &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 10, Continuation: tc.cont}
			var usage *pb.Usage
			if tc.stream {
				err := df.rt.CompleteStreamAs(context.Background(), CallInfo{RPC: "test"}, r, func(ch *pb.GenerateChunk) error {
					if ch.Usage != nil {
						usage = ch.Usage
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				resp, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, r)
				if err != nil {
					t.Fatal(err)
				}
				usage = resp.Usage
			}
			if usage.GetInputTokens() != tc.in || usage.GetOutputTokens() != tc.out {
				t.Errorf("client's usage %v, want %d in, %d out", usage, tc.in, tc.out)
			}
			if m := tokenMetrics(t, reader); m["input"] != int64(tc.in) || m["output"] != int64(tc.out) {
				t.Errorf("token metrics %v, want input %d, output %d", m, tc.in, tc.out)
			}
			if !slices.Equal(rec.settled, tc.settled) {
				t.Errorf("settled %v, want %v", rec.settled, tc.settled)
			}
			var names []string
			for _, p := range pools {
				names = append(names, p.backend.name)
			}
			windows, err := df.store.Usage(context.Background(), names)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.settled {
				name, n, _ := strings.Cut(s, ":")
				if got := fmt.Sprint(windows[name].TokensLastMinute); got != n {
					t.Errorf("pool %s's tokens-per-minute window holds %s, want %s", name, got, n)
				}
			}
			served := df.fakes[tc.settled[len(tc.settled)-1][:1]]
			got := served.calls[len(served.calls)-1].GetContinuation()
			if !proto.Equal(got, tc.sent) {
				t.Errorf("the serving pool got continuation %v, want %v", got, tc.sent)
			}
		})
	}
}

// A slot this replica frees shows as free in the routing view at once, not
// at the next read of the shared count (Options.UsageRefresh away): right
// after a release the next call is not steered off a pool whose only slot
// the router itself just gave back.
func TestReleasedSlotIsFreeInTheViewAtOnce(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, step{hang: true})}}
	df := newDispatchFleet(t, "", pools...)
	p := df.pool("a")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := df.rt.CompleteAs(ctx, CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1})
		done <- err
	}()
	testwait.For(t, 5*time.Second, "the call to hold a slot", func() bool { return p.InFlight() == 1 })
	if got := p.Shared(); got != 1 {
		t.Errorf("shared in-flight right after the acquire: %d, want 1", got)
	}
	df.rt.refreshUsage() // the periodic read, while the slot is held
	if got := p.Shared(); got != 1 {
		t.Errorf("shared in-flight read while the slot is held: %d, want 1", got)
	}
	cancel()
	if err := <-done; grpccode.Of(err) != codes.Canceled {
		t.Fatalf("the held call: %v, want CANCELLED", err)
	}
	if local, shared := p.InFlight(), p.Shared(); local != 0 || shared != 0 {
		t.Fatalf("right after the release the view counts %d local, %d shared in flight; want 0 and 0", local, shared)
	}
	if leaks := df.leaked(t, pools...); len(leaks) > 0 {
		t.Fatal(leaks)
	}
}

// TestFailedAttemptLogCountsItsTokens: the "attempt failed" line's
// streamed_tokens is every token the client has had, this attempt's
// included (it said 0 beside "stream broke after 62 tokens").
func TestFailedAttemptLogCountsItsTokens(t *testing.T) {
	df := newDispatchFleet(t, "", fakePool{backend: fake("a", true, failAfter(3, codes.Unavailable))}, fakePool{backend: fake("b", true, failAfter(2, codes.Unavailable))})
	var mu sync.Mutex
	var buf bytes.Buffer
	df.rt.tel.log = slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
	err := df.rt.CompleteStreamAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 10}, func(*pb.GenerateChunk) error { return nil })
	if grpccode.Of(err) != codes.Unavailable {
		t.Fatalf("stream: %v", err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, `"msg":"attempt failed, trying another pool"`) {
			i := strings.Index(line, `"streamed_tokens":`)
			got = append(got, strings.TrimRight(strings.SplitN(line[i+len(`"streamed_tokens":`):], ",", 2)[0], "}"))
		}
	}
	if !slices.Equal(got, []string{"3", "5"}) {
		t.Fatalf("streamed_tokens in the attempt-failed lines %v, want [3 5]\n%s", got, out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestCachedTokensCounted: the prompt tokens a backend reports served from
// its prefix cache reach switchyard.prompt.cached_tokens, for unary and
// streamed calls alike.
func TestCachedTokensCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	a := fake("a", true, ok(2))
	a.prompt, a.cached = 10, 4
	df := newDispatchFleetOpts(t, dispatchOpts{policy: "in_order", policies: orderedPolicies(), meter: mp}, fakePool{backend: a})
	req := &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 5}
	if _, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, req); err != nil {
		t.Fatal(err)
	}
	if err := df.rt.CompleteStreamAs(context.Background(), CallInfo{RPC: "test"}, req, func(*pb.GenerateChunk) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var got int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "switchyard.prompt.cached_tokens" {
				for _, dp := range sum.DataPoints {
					got += dp.Value
				}
			}
		}
	}
	if got != 8 {
		t.Fatalf("switchyard.prompt.cached_tokens %d after two calls with 4 cached each, want 8", got)
	}
}
