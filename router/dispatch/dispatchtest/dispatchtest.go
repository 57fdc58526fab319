// Package dispatchtest runs the request path of router/dispatch on its own:
// a Dispatcher built from pools described in Go (no fleet YAML, no
// router.Server, no tickers), on a fake clock, with the in-memory capacity
// store and scripted backends. Tests of the core's decisions — failover,
// shortages, client faults, attempt timeouts, the wait queue, the retry
// budget, continuation, feature skipping, usage settlement — build one with
// New and run calls through it with Call or Start:
//
//	h := dispatchtest.New(t, dispatchtest.Options{Pools: []dispatchtest.Pool{
//		{Name: "a", Steps: []dispatchtest.Step{dispatchtest.FailAfter(0, dispatch.CodeUnavailable)}},
//		{Name: "b"},
//	}})
//	res := h.Call(ctx, dispatchtest.Call{Stream: true})
//	// res.Route.PoolsTried == [a b], h.Rec.Attempts() == [a:failure b:ok]
//
// Nothing here starts a goroutine that outlives a call or a timer the test
// did not ask for: the fake clock's waiters are the calls' own (a queue wait,
// an attempt timeout), so a test counts them from zero.
//
// Tests that need the wire (gRPC statuses, protobuf requests, HTTP) run
// routers instead: router/routertest.
package dispatchtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Model is the model every pool serves unless its config names others.
const Model = "m"

// Start is when the fake clock starts.
var Start = time.Unix(1_800_000_000, 0)

// Options describe the fleet a Harness runs.
type Options struct {
	// Pools in config order (the InOrder policy tries them so). At least one.
	Pools []Pool
	// Routing is the fleet's routing section; zero fields take the fleet
	// file's defaults (max_attempts 3, retry_budget 0.2, queue_max_wait 2s,
	// queue_max_length 1024, ejection after 3 failures for 5s...).
	Routing config.Routing
	// Models default to Model with 1,000 input and 500 output tokens.
	Models []config.Model
	// Tenants are the fleet's tenants (API keys as hex SHA-256).
	Tenants []config.Tenant
	// Policy ranks the pools; default InOrder.
	Policy policy.Policy
	// Rand is the policies' random source; default math/rand/v2's Float64.
	Rand func() float64
	// Store, when set, wraps the in-memory store (to watch or break it).
	Store func(*capacity.Memory) capacity.Store
	// Observer hears of every step after the harness's Recorder.
	Observer dispatch.Observer
}

// Pool is one pool of the fleet and what its backend does.
type Pool struct {
	// Name is the pool's name. Required.
	Name string
	// Config is the rest of the pool's config; zero fields get defaults:
	// cloud aws, region us-east-1, accelerator h100, models [Model],
	// max_concurrent 8 (1 when Full), cost 1 per million tokens.
	Config config.Pool
	// Steps are what the backend does on its first, second... attempt;
	// the last one repeats. Empty: OK(1).
	Steps []Step
	// NoContinuation: the backend cannot continue a stream broken on
	// another pool (it is skipped once tokens reached the client).
	NoContinuation bool
	// Offers are the optional features the backend passes on.
	Offers dispatch.Features
	// Full: other calls hold every slot of the pool before the test's
	// calls come (Leaks and the store count them as expected).
	Full bool
	// Prompt is the input tokens the backend's server reports for a call
	// (a continuation's re-sent tokens added, as a real server counts
	// them); 0: it reports none, and the router's estimate stands in.
	Prompt int32
	// Cached is the input tokens it reports served from its prefix cache.
	Cached int32
	// Load is the backend's load report (PoolOptions.Load); nil: none.
	Load func() (policy.Reported, time.Time, bool)
}

// Step is what a backend does on one attempt.
type Step struct {
	// Tokens are streamed one per chunk (unary: answered) before the end.
	Tokens int32
	// Fail, after the tokens, fails the attempt with a backend error of
	// this code; CodeOK finishes it.
	Fail dispatch.Code
	// Hang blocks, after the tokens, until the attempt's context ends.
	Hang bool
	// Panic panics before anything else.
	Panic bool
	// Tool: the streamed chunks are pieces of a tool call, not text.
	Tool bool
}

// OK answers n tokens.
func OK(n int32) Step { return Step{Tokens: n} }

// FailAfter streams n tokens, then fails with code.
func FailAfter(n int32, code dispatch.Code) Step { return Step{Tokens: n, Fail: code} }

// Hang blocks until the attempt's context ends.
func Hang() Step { return Step{Hang: true} }

// Harness is a Dispatcher over scripted pools on a fake clock. Its methods
// may be called from any goroutine.
type Harness struct {
	// D is the dispatcher under test.
	D *dispatch.Dispatcher
	// Clock is the dispatcher's and the store's clock. No ticker runs on
	// it: its waiters are the calls' queue waits and attempt timeouts.
	Clock *clock.Fake
	// Memory is the in-memory capacity store (under Options.Store's wrapper).
	Memory *capacity.Memory
	// Rec recorded every step of the request path.
	Rec *Recorder

	t        testing.TB
	env      func(*config.Fleet) *policy.Env
	backends map[string]*Backend
	full     map[string]int // slots Full takes, by pool

	mu      sync.Mutex
	held    map[string][]capacity.Lease // slots other calls hold, by pool
	settled []string
}

// New builds the harness: the fleet (defaults filled and validated as a
// fleet file would be), its pools and generation, the store and the
// dispatcher; Full pools get their slots taken.
func New(t testing.TB, o Options) *Harness {
	t.Helper()
	if len(o.Pools) == 0 {
		t.Fatal("dispatchtest: at least one pool")
	}
	f := &config.Fleet{Models: o.Models, Tenants: o.Tenants, Routing: o.Routing}
	if f.Models == nil {
		f.Models = []config.Model{{Name: Model, MaxInputTokens: 1000, MaxOutputTokens: 500}}
	}
	h := &Harness{
		Clock:    clock.NewFake(Start),
		Rec:      &Recorder{},
		t:        t,
		backends: map[string]*Backend{},
		full:     map[string]int{},
		held:     map[string][]capacity.Lease{},
	}
	for _, p := range o.Pools {
		c := p.Config
		c.Name = p.Name
		c.Cloud = or(c.Cloud, "aws")
		c.Region = or(c.Region, "us-east-1")
		c.Accelerator = or(c.Accelerator, "h100")
		c.Adapter = or(c.Adapter, "fake")
		if c.Models == nil {
			c.Models = []string{Model}
		}
		if c.Endpoints == nil {
			c.Endpoints = []string{"fake"}
		}
		if c.Limits.MaxConcurrent == 0 {
			c.Limits.MaxConcurrent = 8
			if p.Full {
				c.Limits.MaxConcurrent = 1
			}
		}
		if c.CostPerMillionTokens == 0 {
			c.CostPerMillionTokens = 1
		}
		f.Pools = append(f.Pools, c)
		steps := p.Steps
		if len(steps) == 0 {
			steps = []Step{OK(1)}
		}
		h.backends[p.Name] = &Backend{name: p.Name, steps: steps, continues: !p.NoContinuation, offers: p.Offers,
			prompt: p.Prompt, cached: p.Cached, load: p.Load}
		if p.Full {
			h.full[p.Name] = c.Limits.MaxConcurrent
		}
	}
	if err := f.Normalize("dispatchtest fleet"); err != nil {
		t.Fatal(err)
	}
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	h.env = func(f *config.Fleet) *policy.Env { return Env(t, f, rnd) }
	h.Memory = capacity.NewMemory(capacity.MemoryOptions{Clock: h.Clock})
	var store capacity.Store = h.Memory
	if o.Store != nil {
		store = o.Store(h.Memory)
	}
	pol := o.Policy
	if pol == nil {
		pol = InOrder{}
	}
	h.D = dispatch.New(dispatch.Options{
		Store:      &settleRecorder{Store: store, h: h},
		Policy:     func() policy.Policy { return pol },
		Clock:      h.Clock,
		Observer:   dispatch.Tee(h.Rec, o.Observer),
		Generation: h.generation(f, nil),
	})
	for name, n := range h.full {
		for i := range n {
			l, err := h.Memory.Acquire(context.Background(), capacity.Reservation{
				ID: fmt.Sprintf("holder-%d", i), Pool: name, Limits: capacity.Limits{MaxConcurrent: n},
			})
			if err != nil {
				t.Fatal(err)
			}
			h.held[name] = append(h.held[name], l)
		}
	}
	return h
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// generation builds f's pools (taking over prev's counters and health for
// pools of the same name) and their generation.
func (h *Harness) generation(f *config.Fleet, prev *dispatch.Generation) *dispatch.Generation {
	pools := make([]*dispatch.Pool, 0, len(f.Pools))
	for _, c := range f.Pools {
		b := h.backends[c.Name]
		o := dispatch.PoolOptions{Config: c, Continues: b.continues, Offers: b.offers, Load: b.load, Attached: b}
		if prev != nil {
			o.Carry, _ = prev.Pool(c.Name)
		}
		pools = append(pools, dispatch.NewPool(o))
	}
	return dispatch.NewGeneration(dispatch.GenerationOptions{Fleet: f, Pools: pools, Env: h.env(f)})
}

// Env is the policy environment of fleet f, as the router builds it
// (dispatch.NewEnv), failing t when f's latency table does not build.
func Env(t testing.TB, f *config.Fleet, rnd func() float64) *policy.Env {
	t.Helper()
	env, err := dispatch.NewEnv(f, rnd)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// Reload builds a new generation from a copy of the running fleet changed by
// change (defaults filled, validated), its pools taking over the running
// ones' counters and health, and swaps it in as a reload does; it returns
// how many queued calls the swap shed. Pools are kept by name: change may
// edit their config, not add pools.
func (h *Harness) Reload(change func(*config.Fleet)) (shed int) {
	h.t.Helper()
	prev := h.D.Generation()
	f := *prev.Fleet
	f.Pools = slices.Clone(f.Pools)
	f.Models = slices.Clone(f.Models)
	change(&f)
	for _, c := range f.Pools {
		if h.backends[c.Name] == nil {
			h.t.Fatalf("dispatchtest: Reload added pool %q; describe every pool in Options.Pools", c.Name)
		}
	}
	if err := f.Normalize("dispatchtest fleet (reloaded)"); err != nil {
		h.t.Fatal(err)
	}
	return h.D.Swap(h.generation(&f, prev))
}

// Pool is the running generation's pool named name.
func (h *Harness) Pool(name string) *dispatch.Pool {
	h.t.Helper()
	p, ok := h.D.Generation().Pool(name)
	if !ok {
		h.t.Fatalf("dispatchtest: no pool %q", name)
	}
	return p
}

// Backend is pool name's scripted backend.
func (h *Harness) Backend(name string) *Backend {
	h.t.Helper()
	b, ok := h.backends[name]
	if !ok {
		h.t.Fatalf("dispatchtest: no pool %q", name)
	}
	return b
}

// Request is a call for Model with the prompt "hello" (the router's
// estimate: 2 input tokens) and max_tokens 10, under a new request id.
func Request() *dispatch.Request {
	return &dispatch.Request{
		ID: dispatch.NewRequestID(), Model: Model, InputTokens: 2, MaxTokens: 10, Operation: "text_completion",
		Routing: policy.Request{Model: Model, CallerRegion: "us-east-1", InputTokens: 2, MaxTokens: 10},
	}
}

// Call is one call to run.
type Call struct {
	// Req is the admitted request; nil: Request().
	Req *dispatch.Request
	// Stream runs it as a streaming call.
	Stream bool
}

// Result is how a call ended.
type Result struct {
	Route dispatch.Route
	Err   error
	// Text is what the client received: every streamed chunk's text, or the
	// serving attempt's answer.
	Text string
	// Tokens is what reached the client (streams) or the answer's tokens.
	Tokens int32
	// ToolPieces counts the tool-call pieces that reached the client.
	ToolPieces int
	// Input is the input the client is charged (Request.InputTokens after
	// Run); Output the tokens it received over all attempts.
	Input  int
	Output int32
}

// Call runs c through the dispatcher on this goroutine: the way a test
// calls it when nothing needs the fake clock to move. A panic in a backend
// reaches the caller, as it would the router's.
func (h *Harness) Call(ctx context.Context, c Call) Result {
	req := c.Req
	if req == nil {
		req = Request()
	}
	var res Result
	var stream *dispatch.Stream
	if c.Stream {
		stream = &dispatch.Stream{}
	}
	var answer string
	var answered int32
	route, err := h.D.Run(ctx, h.D.Generation(), req, stream, func(ctx context.Context, p *dispatch.Pool, resume *dispatch.Resume, started func()) (dispatch.Usage, error) {
		b := p.Attached().(*Backend)
		if stream != nil {
			return b.stream(ctx, req, stream, resume, started, &res.ToolPieces)
		}
		text, u, err := b.unary(ctx, resume)
		answer, answered = text, u.OutputTokens
		return u, err
	})
	res.Route, res.Err, res.Input = route, err, req.InputTokens
	if stream != nil {
		res.Text, res.Tokens, res.Output = stream.Text(), stream.Tokens(), stream.Tokens()
	} else if err == nil {
		res.Text, res.Tokens, res.Output = answer, answered, answered
	}
	return res
}

// Go runs c on a goroutine of its own and delivers its result on the
// channel: for a test that moves the fake clock while the call waits. A
// backend's panic is delivered as the result's Err. The call ends with ctx
// at the latest; a test must read the channel (or cancel ctx) before it ends.
func (h *Harness) Go(ctx context.Context, c Call) <-chan Result {
	out := make(chan Result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				out <- Result{Err: fmt.Errorf("dispatchtest: backend panicked: %v", v)}
			}
		}()
		out <- h.Call(ctx, c)
	}()
	return out
}

// Wait is the result on ch, failing the test when none comes within 10s
// of real time (the call is stuck).
func (h *Harness) Wait(ch <-chan Result, what string) Result {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatalf("dispatchtest: %s: the call did not end", what)
		return Result{}
	}
}

// WaitForWaiters waits until the fake clock has n waiters (a call in the
// queue, an attempt timer set), failing the test after 5s of real time.
func (h *Harness) WaitForWaiters(n int, what string) {
	h.t.Helper()
	if !h.Clock.WaitForWaiters(n, 5*time.Second) {
		h.t.Fatalf("dispatchtest: %s: the fake clock has %d waiters, want %d", what, h.Clock.Waiters(), n)
	}
}

// Leaks lists the slots not given back: for every pool, the store's
// in-flight count beyond the slots Full held, and the pool's own count.
func (h *Harness) Leaks() []string {
	h.t.Helper()
	g := h.D.Generation()
	names := make([]string, 0, len(g.Pools))
	for _, p := range g.Pools {
		names = append(names, p.Name())
	}
	u, err := h.Memory.Usage(context.Background(), names)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range g.Pools {
		if got, want := u[p.Name()].InFlight, len(h.held[p.Name()]); got != want {
			out = append(out, fmt.Sprintf("%s: store has %d in flight, want %d", p.Name(), got, want))
		}
		if got := p.InFlight(); got != 0 {
			out = append(out, fmt.Sprintf("%s: the pool counts %d in flight", p.Name(), got))
		}
	}
	return out
}

// Free gives back one of the slots Full took in pool and lets the first
// queued call try again (as the router's queue poll does for capacity
// other replicas freed).
func (h *Harness) Free(pool string) {
	h.t.Helper()
	h.mu.Lock()
	held := h.held[pool]
	if len(held) == 0 {
		h.mu.Unlock()
		h.t.Fatalf("dispatchtest: pool %q holds no slot of another call", pool)
	}
	l := held[len(held)-1]
	h.held[pool] = held[:len(held)-1]
	h.mu.Unlock()
	h.Memory.Release(l, 0)
	h.D.Poll()
}

// Settled is every slot's settlement in order, "pool:tokens": what each
// attempt's pool window was charged on Release.
func (h *Harness) Settled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.settled)
}

// settleRecorder is the capacity store, remembering every settlement.
type settleRecorder struct {
	capacity.Store
	h *Harness
}

func (s *settleRecorder) Release(l capacity.Lease, used int64) {
	s.h.mu.Lock()
	s.h.settled = append(s.h.settled, fmt.Sprintf("%s:%d", l.Pool, used))
	s.h.mu.Unlock()
	s.Store.Release(l, used)
}

// InOrder ranks pools in config order, so a test chooses the order.
type InOrder struct{}

var _ policy.Policy = InOrder{}

// Name implements policy.Policy.
func (InOrder) Name() string { return "in_order" }

// Rank implements policy.Policy: it leaves the eligible pools as they are.
func (InOrder) Rank(*policy.Request, []policy.PoolView, []policy.Candidate, *policy.Env) {}

// Strata is a random source whose draws are the midpoints of k equal strata
// of [0,1) over and over (1/16, 3/16, ... for k = 8), so every k draws cover
// it evenly and a weighted draw's shares are exact. Safe for concurrent use.
func Strata(k int64) func() float64 {
	var mu sync.Mutex
	var n int64
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := (float64(n%k) + 0.5) / float64(k)
		n++
		return v
	}
}

// Text is what backend name sends as its i-th token ("a0 ", "a1 "...).
func Text(name string, i int32) string { return fmt.Sprintf("%s%d ", name, i) }

// Texts is what backend name sends as its first n tokens.
func Texts(name string, n int32) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(Text(name, i))
	}
	return b.String()
}
