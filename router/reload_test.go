package router

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/syncbuf"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Every routing setting a reload changes takes effect on the running
// router: one test per setting, on the fake clock.

// callResult is how one call ended.
type callResult struct {
	prio pb.Priority
	err  error
}

// callAll starts one Complete per priority in prios and returns where they end.
func callAll(df *dispatchFleet, prios ...pb.Priority) <-chan callResult {
	out := make(chan callResult, len(prios))
	for _, p := range prios {
		go func() {
			_, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1, Priority: p})
			out <- callResult{prio: p, err: err}
		}()
	}
	return out
}

// recv takes n results from ch, failing after a bounded real-time wait.
func recv(t *testing.T, ch <-chan callResult, n int, what string) []callResult {
	t.Helper()
	var got []callResult
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case r := <-ch:
			got = append(got, r)
		case <-deadline:
			t.Fatalf("%s: %d of %d calls ended", what, len(got), n)
		}
	}
	return got
}

// The case: eight concurrent calls into a full one-slot pool. A
// router started with queue_max_length 1 queues one and sheds the other seven
// at once (the fake clock does not move); a router started with 100 and
// reloaded to 1 must do the same.
func TestReloadedQueueLengthShedsTheExcessAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name           string
		start, reload  string
		wantLenInError string
	}{
		{name: "started with 1", start: "  queue_max_length: 1\n"},
		{name: "reloaded to 1", start: "  queue_max_length: 100\n", reload: "  queue_max_length: 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools := []fakePool{{backend: fake("a", true, ok(1)), full: true}}
			df := newDispatchFleet(t, tc.start, pools...)
			if tc.reload != "" {
				df.reload(t, tc.reload)
			}
			prios := slices.Repeat([]pb.Priority{pb.Priority_PRIORITY_STANDARD}, 8)
			results := callAll(df, prios...)
			shed := recv(t, results, 7, "calls shed at once")
			for _, r := range shed {
				if grpccode.Of(r.err) != codes.ResourceExhausted || !strings.Contains(r.err.Error(), "wait queue full (1 calls)") {
					t.Fatalf("shed call: %v, want RESOURCE_EXHAUSTED naming a queue of 1", r.err)
				}
			}
			if n := df.rt.disp.QueueLength(); n != 1 {
				t.Fatalf("%d calls queued, want 1", n)
			}
			df.clk.Advance(2 * time.Second) // queue_max_wait
			last := recv(t, results, 1, "the queued call")
			if grpccode.Of(last[0].err) != codes.ResourceExhausted {
				t.Fatalf("queued call: %v, want RESOURCE_EXHAUSTED after its wait", last[0].err)
			}
			df.rec.mu.Lock()
			sheds := slices.Clone(df.rec.sheds)
			df.rec.mu.Unlock()
			slices.Sort(sheds)
			if want := append([]string{"no_capacity"}, slices.Repeat([]string{"queue_full"}, 7)...); !slices.Equal(sheds, want) {
				t.Fatalf("sheds %v, want %v", sheds, want)
			}
			if leaks := df.leaked(t, pools...); len(leaks) > 0 {
				t.Fatalf("slots leaked: %v", leaks)
			}
		})
	}
}

// Calls already waiting when a reload shortens the queue: those beyond the
// new length are shed at once, lowest priority first; the rest keep waiting.
func TestReloadShedsQueuedCallsBeyondTheNewLength(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, ok(1)), full: true}}
	df := newDispatchFleet(t, "  queue_max_length: 100\n", pools...)
	sub := df.rt.events.subscribe()
	defer df.rt.events.unsubscribe(sub)
	I, S, B := pb.Priority_PRIORITY_INTERACTIVE, pb.Priority_PRIORITY_STANDARD, pb.Priority_PRIORITY_BATCH
	results := callAll(df, B, B, S, S, S, I, I, I)
	testwait.For(t, 5*time.Second, "eight queued calls", func() bool { return df.rt.disp.QueueLength() == 8 })

	df.reload(t, "  queue_max_length: 2\n")
	shed := recv(t, results, 6, "calls shed by the reload")
	count := map[pb.Priority]int{}
	for _, r := range shed {
		if grpccode.Of(r.err) != codes.ResourceExhausted || !strings.Contains(r.err.Error(), "wait queue full (2 calls)") {
			t.Fatalf("%s call: %v, want RESOURCE_EXHAUSTED naming the new length", r.prio, r.err)
		}
		count[r.prio]++
	}
	if count[B] != 2 || count[S] != 3 || count[I] != 1 {
		t.Fatalf("shed by priority %v: want both batch, all three standard and one interactive", count)
	}
	if n := df.rt.disp.QueueLength(); n != 2 {
		t.Fatalf("%d calls still queued, want 2", n)
	}
	ev := <-sub.ch
	if ev.Kind != "config_reload" || !strings.Contains(ev.Detail, "queue_max_length 100 -> 2") || !strings.Contains(ev.Detail, "6 queued calls shed") {
		t.Fatalf("reload event %q %q", ev.Kind, ev.Detail)
	}
	df.clk.Advance(2 * time.Second)
	for _, r := range recv(t, results, 2, "the interactive calls left waiting") {
		if r.prio != I || grpccode.Of(r.err) != codes.ResourceExhausted || !strings.Contains(r.err.Error(), "waited 2s") {
			t.Fatalf("%s call: %v, want interactive shed after its wait", r.prio, r.err)
		}
	}
	// A longer queue takes more calls again.
	df.reload(t, "  queue_max_length: 3\n")
	results = callAll(df, B, B, B)
	testwait.For(t, 5*time.Second, "three queued calls", func() bool { return df.rt.disp.QueueLength() == 3 })
	df.clk.Advance(2 * time.Second)
	recv(t, results, 3, "the three queued calls")
}

// queue_max_wait is read by every new call: after a reload to 10s a call
// waits 10s on the clock, not the 2s the router started with.
func TestReloadedQueueWait(t *testing.T) {
	df := newDispatchFleet(t, "", fakePool{backend: fake("a", true, ok(1)), full: true})
	df.reload(t, "  queue_max_wait: 10s\n")
	base := df.clk.Waiters()
	results := callAll(df, pb.Priority_PRIORITY_STANDARD)
	if !df.clk.WaitForWaiters(base+1, 5*time.Second) {
		t.Fatal("the call never waited in the queue")
	}
	df.clk.Advance(2 * time.Second)
	if n := df.clk.Waiters(); n != base+1 {
		// The wait's timer fires (and leaves the clock) only at 10s.
		t.Fatalf("%d timers pending after 2s, want the call's 10s wait still among them", n)
	}
	df.clk.Advance(8 * time.Second)
	r := recv(t, results, 1, "the queued call")[0]
	if grpccode.Of(r.err) != codes.ResourceExhausted || !strings.Contains(r.err.Error(), "waited 10s") {
		t.Fatalf("call: %v, want RESOURCE_EXHAUSTED after 10s", r.err)
	}
}

// routing.retry_budget: with 0.01 the floor of three retries is all there
// is; after a reload to 1 every call may retry again. The window's counts
// carry over.
func TestReloadedRetryBudget(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, failAfter(0, codes.Unavailable))}, {backend: fake("b", true, ok(1))}}
	df := newDispatchFleet(t, "  retry_budget: 0.01\n  eject_after_failures: 100\n", pools...)
	call := func() error {
		_, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1})
		return err
	}
	for i := range 3 {
		if err := call(); err != nil {
			t.Fatalf("call %d (a retry under the floor): %v", i, err)
		}
	}
	if err := call(); err == nil || !strings.Contains(err.Error(), "retry budget spent") {
		t.Fatalf("4th call: %v, want the retry budget spent", err)
	}
	df.reload(t, "  retry_budget: 1\n  eject_after_failures: 100\n")
	for i := range 3 {
		if err := call(); err != nil {
			t.Fatalf("call %d after the reload to 1: %v", i, err)
		}
	}
}

// routing.max_attempts is read by every new call.
func TestReloadedMaxAttempts(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, failAfter(0, codes.Unavailable))}, {backend: fake("b", true, failAfter(0, codes.Unavailable))}, {backend: fake("c", true, ok(1))}}
	df := newDispatchFleet(t, "  max_attempts: 2\n  eject_after_failures: 100\n", pools...)
	call := func() (*pb.GenerateResponse, error) {
		return df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1})
	}
	if _, err := call(); err == nil || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("with max_attempts 2: %v", err)
	}
	df.reload(t, "  max_attempts: 3\n  eject_after_failures: 100\n")
	if resp, err := call(); err != nil || resp.GetRoute().GetPool() != "c" {
		t.Fatalf("with max_attempts 3: %v %v, want c's answer", resp.GetRoute(), err)
	}
}

// routing.attempt_timeout is read by every new attempt: a reload that sets
// it moves a call off a hanging pool.
func TestReloadedAttemptTimeout(t *testing.T) {
	pools := []fakePool{{backend: fake("a", true, step{hang: true})}, {backend: fake("b", true, ok(2))}}
	df := newDispatchFleet(t, "", pools...)
	df.reload(t, "  attempt_timeout: 3s\n")
	base := df.clk.Waiters()
	type result struct {
		resp *pb.GenerateResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 10})
		done <- result{resp, err}
	}()
	if !df.clk.WaitForWaiters(base+1, 5*time.Second) {
		t.Fatal("the reloaded attempt timeout set no timer")
	}
	df.clk.Advance(3 * time.Second)
	select {
	case r := <-done:
		if r.err != nil || !slices.Equal(r.resp.GetRoute().GetPoolsTried(), []string{"a", "b"}) {
			t.Fatalf("got %v %v, want b's answer after a timed out", r.resp.GetRoute(), r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not move on after the reloaded attempt timeout")
	}
}

// The health loop picks up a reloaded routing.health_check_interval: the
// new ticker replaces the old one (no ticker left behind).
func TestReloadedHealthCheckInterval(t *testing.T) {
	a := fake("a", true, ok(1))
	df := newDispatchFleet(t, "  health_check_interval: 1h\n", fakePool{backend: a})
	base := df.clk.Waiters()
	df.clk.Advance(time.Second)
	if n := a.checks.Load(); n != 0 {
		t.Fatalf("%d health checks within the first second of a 1h interval", n)
	}
	df.reload(t, "  health_check_interval: 1s\n")
	for want := int64(1); want <= 3; want++ {
		df.clk.Advance(time.Second)
		testwait.For(t, 5*time.Second, fmt.Sprintf("health check %d at the reloaded 1s interval", want), func() bool { return a.checks.Load() == want })
	}
	testwait.For(t, 5*time.Second, "the 1h ticker stopped", func() bool { return df.clk.Waiters() == base })
	// Two reloads before the loop looks: only the last interval stays.
	df.reload(t, "  health_check_interval: 1m\n")
	df.reload(t, "  health_check_interval: 2s\n")
	testwait.For(t, 5*time.Second, "one health ticker", func() bool { return df.clk.Waiters() == base })
	df.clk.Advance(2 * time.Second)
	testwait.For(t, 5*time.Second, "a health check at the 2s interval", func() bool { return a.checks.Load() == 4 })
}

// Policy parameters (here the spill reserve) live in the fleet snapshot
// every decision reads: a reload that raises the standard reserve above
// the near pool's free share sends standard calls to the far pool.
func TestReloadedPolicyParameters(t *testing.T) {
	pools := []fakePool{{backend: fake("near", true, ok(1))}, {backend: fake("far", true, ok(1)), region: "eu-west-1"}}
	routing := func(standard float64) string {
		return fmt.Sprintf("  spill_band: -1\n  spill_reserve: {interactive: 0.05, standard: %g, batch: 0.25}\n", standard)
	}
	df := newDispatchFleetWith(t, routing(0.1), "switchyard", policy.Builtins(), pools...)
	// Another replica holds half of near's 8 slots.
	df.pool("near").SetShared(4)
	served := func() string {
		t.Helper()
		resp, err := df.rt.CompleteAs(context.Background(), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 1,
			Priority: pb.Priority_PRIORITY_STANDARD, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetRoute().GetPool()
	}
	if p := served(); p != "near" {
		t.Fatalf("reserve 0.1, near half free: served by %s, want near", p)
	}
	df.reload(t, routing(0.6))
	if got := df.pool("near").Shared(); got != 4 {
		t.Fatalf("the reload lost near's shared count: %d", got)
	}
	if p := served(); p != "far" {
		t.Fatalf("reserve 0.6, near half free: served by %s, want far (spilled)", p)
	}
}

// routing.policy follows the file unless --policy or an operator chose one.
func TestReloadedRoutingPolicy(t *testing.T) {
	fleet := func(pol, extra string) *config.Fleet {
		f, err := config.Parse([]byte("models:\n  - {name: m, max_input_tokens: 100, max_output_tokens: 10}\npools:\n"+
			"  - {name: a, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: [x], adapter: fake, limits: {max_concurrent: 1}}\n"+
			"routing:\n  policy: "+pol+"\n"+extra), "t")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	start := func(flag string) (*Server, *subscriber) {
		breg := backends.NewRegistry()
		breg.Register("fake", func(backends.Spec) (backends.Backend, error) { return fake("a", true, ok(1)), nil })
		reg := policy.Builtins()
		reg.Register(inOrder{})
		rt, err := New(Options{Fleet: fleet("in_order", ""), Backends: breg, Policies: reg, Policy: flag,
			Clock: clock.NewFake(time.Unix(0, 0)), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Close() })
		sub := rt.events.subscribe()
		t.Cleanup(func() { rt.events.unsubscribe(sub) })
		return rt, sub
	}
	events := func(sub *subscriber) string {
		var out []string
		for {
			select {
			case ev := <-sub.ch:
				out = append(out, ev.Kind+": "+ev.Detail)
			default:
				return strings.Join(out, "\n")
			}
		}
	}

	rt, sub := start("")
	if err := rt.Reload(fleet("round_robin", "")); err != nil {
		t.Fatal(err)
	}
	if rt.PolicyName() != "round_robin" {
		t.Fatalf("policy %s after a reload naming round_robin", rt.PolicyName())
	}
	if ev := events(sub); !strings.Contains(ev, "policy: policy is now round_robin") || !strings.Contains(ev, "policy in_order -> round_robin") {
		t.Fatalf("events:\n%s", ev)
	}
	// An operator's choice outlives reloads.
	st := control.State{}.Clone()
	st.Policy, st.Version = "least_request", 1<<30
	rt.applyControl(st)
	_ = events(sub)
	if err := rt.Reload(fleet("random", "")); err != nil {
		t.Fatal(err)
	}
	if rt.PolicyName() != "least_request" {
		t.Fatalf("policy %s: a reload overrode the operator's least_request", rt.PolicyName())
	}
	if ev := events(sub); !strings.Contains(ev, "routing.policy random not applied: an operator chose least_request") {
		t.Fatalf("events:\n%s", ev)
	}

	// --policy outlives reloads too.
	rt, sub = start("random")
	if err := rt.Reload(fleet("round_robin", "")); err != nil {
		t.Fatal(err)
	}
	if rt.PolicyName() != "random" {
		t.Fatalf("policy %s: a reload overrode --policy random", rt.PolicyName())
	}
	if ev := events(sub); !strings.Contains(ev, "routing.policy round_robin not applied: the router was started with --policy random") {
		t.Fatalf("events:\n%s", ev)
	}
}

// What a reload cannot apply is named in its log line and its event; a
// reload that only changes reloadable settings names nothing.
func TestReloadNamesWhatNeedsARestart(t *testing.T) {
	df := newDispatchFleet(t, "", fakePool{backend: fake("a", true, ok(1))})
	logs := &syncbuf.Buffer{}
	df.rt.log = slog.New(slog.NewTextHandler(logs, nil))
	sub := df.rt.events.subscribe()
	defer df.rt.events.unsubscribe(sub)
	df.rt.FixRecvLimit(0) // as the gRPC edge does: fixes the receive limit for max_input_tokens 1000

	df.reload(t, "  queue_max_length: 5\n  cost_weight: 0.5\n")
	ev := <-sub.ch
	if strings.Contains(ev.Detail, "restart") || !strings.Contains(ev.Detail, "queue_max_length 1024 -> 5") || !strings.Contains(ev.Detail, "cost_weight 0 -> 0.5") {
		t.Fatalf("reload event %q: want the routing changes and no restart", ev.Detail)
	}
	if l := logs.String(); !strings.Contains(l, "level=INFO msg=\"fleet config reloaded\"") || strings.Contains(l, "restart_needed") {
		t.Fatalf("log:\n%s", l)
	}

	f, err := df.fleet("")
	if err != nil {
		t.Fatal(err)
	}
	f.Sim.TimeScale, f.Sim.QueueLength, f.Capacity.Mode = 5, 7, config.CountingStrict
	f.Models[0].MaxInputTokens = 2000
	if err := df.rt.Reload(f); err != nil {
		t.Fatal(err)
	}
	ev = <-sub.ch
	for _, want := range []string{"needs a restart to take effect:", "sim.time_scale (running 1)", "sim.queue_length (running 0)", `capacity.mode (running "")`, "models.max_input_tokens above 1000"} {
		if !strings.Contains(ev.Detail, want) {
			t.Errorf("reload event %q does not name %q", ev.Detail, want)
		}
	}
	l := logs.String()
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "restart_needed=") || !strings.Contains(l, "sim.time_scale") {
		t.Fatalf("log does not name what needs a restart:\n%s", l)
	}
	// Reloadable settings changed alongside still apply.
	if got := df.rt.disp.QueueLimit(); got != 1024 {
		t.Fatalf("queue length %d after a reload back to the default", got)
	}
}
