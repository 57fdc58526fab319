package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/control"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	dt "github.com/switchyard-dev/switchyard/router/dispatch/dispatchtest"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// The request path's table tests, on the core alone: pools described in Go,
// scripted backends, a fake clock, the in-memory store; no YAML, no
// router.Server, no tickers, no network and no sleeping
// (router/dispatch/dispatchtest). The router's tests keep what needs the
// wire (router/dispatch_test.go); the e2e tests run the same path over gRPC
// against the simulator.

var (
	ok        = dt.OK
	failAfter = dt.FailAfter
)

// pool is a pool named name playing steps.
func pool(name string, steps ...dt.Step) dt.Pool { return dt.Pool{Name: name, Steps: steps} }

// full is pool, with every slot held by another call.
func full(name string, steps ...dt.Step) dt.Pool {
	p := pool(name, steps...)
	p.Full = true
	return p
}

// noCont is pool, on a backend that cannot continue a stream.
func noCont(name string, steps ...dt.Step) dt.Pool {
	p := pool(name, steps...)
	p.NoContinuation = true
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func noLeaks(t *testing.T, h *dt.Harness) {
	t.Helper()
	if leaks := h.Leaks(); len(leaks) > 0 {
		t.Errorf("slots leaked: %v", leaks)
	}
}

func TestAttemptLoop(t *testing.T) {
	type want struct {
		code    dispatch.Code
		text    string   // what the client saw, in order
		tried   []string // route.PoolsTried (or the pools attempted on error)
		errHas  string
		retries int64 // retry budget charged
		// continued is the tokens the last attempt was asked to continue, -1: none
		continued int32
		untouched []string // pools whose backend must never be called
	}
	cases := []struct {
		name   string
		stream bool
		pools  []dt.Pool
		want   want
	}{
		{
			name:  "first pool serves",
			pools: []dt.Pool{pool("a", ok(3)), pool("b", ok(3))},
			want:  want{text: "a0 a1 a2 ", tried: []string{"a"}, continued: -1, untouched: []string{"b"}},
		},
		{
			name:   "pool A full, B fails after 3 tokens, C continues: one stream, leases released, one retry charged",
			stream: true,
			pools:  []dt.Pool{full("a", ok(5)), pool("b", failAfter(3, dispatch.CodeUnavailable)), pool("c", ok(2))},
			want:   want{text: "b0 b1 b2 c0 c1 ", tried: []string{"b", "c"}, retries: 1, continued: 3, untouched: []string{"a"}},
		},
		{
			name:   "mid-stream failure skips a pool that cannot continue",
			stream: true,
			pools:  []dt.Pool{pool("a", failAfter(2, dispatch.CodeUnavailable)), noCont("b", ok(4)), pool("c", ok(1))},
			want:   want{text: "a0 a1 c0 ", tried: []string{"a", "c"}, retries: 1, continued: 2, untouched: []string{"b"}},
		},
		{
			name:   "mid-stream RESOURCE_EXHAUSTED continues only where the adapter supports it",
			stream: true,
			pools:  []dt.Pool{pool("a", failAfter(2, dispatch.CodeExhausted)), noCont("b", ok(4)), pool("c", ok(1))},
			want:   want{text: "a0 a1 c0 ", tried: []string{"a", "c"}, retries: 1, continued: 2, untouched: []string{"b"}},
		},
		{
			name:   "mid-stream failure with no pool able to continue ends the stream",
			stream: true,
			pools:  []dt.Pool{pool("a", failAfter(2, dispatch.CodeUnavailable)), noCont("b", ok(4))},
			want:   want{code: dispatch.CodeUnavailable, text: "a0 a1 ", tried: []string{"a"}, errHas: "no other pool can continue", continued: -1, untouched: []string{"b"}},
		},
		{
			name:   "failure before any token moves to any pool, continuation or not",
			stream: true,
			pools:  []dt.Pool{pool("a", failAfter(0, dispatch.CodeUnavailable)), noCont("b", ok(2))},
			want:   want{text: "b0 b1 ", tried: []string{"a", "b"}, retries: 1, continued: -1},
		},
		{
			name:  "a client fault is returned as is, never retried",
			pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeInvalid)), pool("b", ok(1))},
			want:  want{code: dispatch.CodeInvalid, tried: []string{"a"}, errHas: "injected", continued: -1, untouched: []string{"b"}},
		},
		{
			name:  "unary: A unavailable, B serves",
			pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeUnavailable)), pool("b", ok(2))},
			want:  want{text: "b0 b1 ", tried: []string{"a", "b"}, retries: 1, continued: -1},
		},
		{
			name: "max attempts bound the retries",
			pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeInternal)), pool("b", failAfter(0, dispatch.CodeUnavailable)),
				pool("c", failAfter(0, dispatch.CodeUnavailable)), pool("d", ok(1))},
			want: want{code: dispatch.CodeUnavailable, tried: []string{"a", "b", "c"}, errHas: "gave up after 3 attempts", retries: 2, continued: -1, untouched: []string{"d"}},
		},
		{
			name:  "a shortage moves on, before any token",
			pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeExhausted)), pool("b", ok(1))},
			want:  want{text: "b0 ", tried: []string{"a", "b"}, retries: 1, continued: -1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := dt.New(t, dt.Options{Pools: tc.pools})
			res := h.Call(ctxT(t), dt.Call{Stream: tc.stream})
			if got := dispatch.CodeOf(res.Err); got != tc.want.code {
				t.Fatalf("code %s (%v), want %s", got, res.Err, tc.want.code)
			}
			if tc.want.errHas != "" && !strings.Contains(fmt.Sprint(res.Err), tc.want.errHas) {
				t.Errorf("error %v, want it to say %q", res.Err, tc.want.errHas)
			}
			if res.Text != tc.want.text {
				t.Errorf("client saw %q, want %q", res.Text, tc.want.text)
			}
			if got := h.Rec.Pools(); !slices.Equal(got, tc.want.tried) {
				t.Errorf("attempts %v, want pools %v", h.Rec.Attempts(), tc.want.tried)
			}
			if !slices.Equal(res.Route.PoolsTried, tc.want.tried) {
				t.Errorf("route's pools tried %v, want %v", res.Route.PoolsTried, tc.want.tried)
			}
			if got := h.Rec.Retries(); got != tc.want.retries {
				t.Errorf("retry budget charged %d times, want %d", got, tc.want.retries)
			}
			noLeaks(t, h)
			for _, name := range tc.want.untouched {
				if n := h.Backend(name).Calls(); n != 0 {
					t.Errorf("pool %s called %d times, want never", name, n)
				}
			}
			last := h.Backend(tc.want.tried[len(tc.want.tried)-1])
			if last.Calls() == 0 {
				t.Fatalf("the last pool tried was never called")
			}
			r := last.LastResume()
			switch {
			case tc.want.continued < 0 && r != nil:
				t.Errorf("last attempt continued %+v", r)
			case tc.want.continued >= 0 && (r == nil || r.Tokens != tc.want.continued):
				t.Errorf("last attempt continued %+v, want %d tokens", r, tc.want.continued)
			case tc.want.continued > 0 && !strings.HasPrefix(tc.want.text, r.Text):
				t.Errorf("continuation text %q is not what the client saw", r.Text)
			}
		})
	}
}

// A shortage (a backend's RESOURCE_EXHAUSTED, a full pool) shifts the call
// and never counts against the pool's health; real failures eject it after
// eject_after_failures in a row, for eject_base on the router's clock.
func TestShortageNeverEjectsFailuresDo(t *testing.T) {
	t.Run("shortage", func(t *testing.T) {
		// Every call retries once: a budget of 1 retry a call lets them all.
		h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeExhausted)), pool("b", ok(1))},
			Routing: config.Routing{RetryBudget: 1}})
		for i := range 6 {
			if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil || res.Route.Pool != "b" {
				t.Fatalf("call %d: %v on %q, want b's answer", i, res.Err, res.Route.Pool)
			}
		}
		if n := h.Backend("a").Calls(); n != 6 {
			t.Fatalf("a was asked %d times, want every call's first attempt (6): a shortage never ejects", n)
		}
		if e := h.Rec.Ejections(); len(e) != 0 {
			t.Fatalf("ejected %v after shortages", e)
		}
		noLeaks(t, h)
	})
	t.Run("failure", func(t *testing.T) {
		h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeUnavailable)), pool("b", ok(1))}})
		for i := range 4 {
			if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil || res.Route.Pool != "b" {
				t.Fatalf("call %d: %v on %q, want b's answer", i, res.Err, res.Route.Pool)
			}
		}
		if e := h.Rec.Ejections(); !slices.Equal(e, []string{"a"}) {
			t.Fatalf("ejections %v, want a once, after its 3rd failure", e)
		}
		if n := h.Backend("a").Calls(); n != 3 {
			t.Fatalf("a was asked %d times, want 3: the 4th call skips an ejected pool", n)
		}
		if v := h.Pool("a").View(h.Clock.Now()); !v.Ejected {
			t.Fatal("a is not ejected in the routing view")
		}
		h.Clock.Advance(5 * time.Second) // eject_base
		if v := h.Pool("a").View(h.Clock.Now()); v.Ejected {
			t.Fatal("a is still ejected after eject_base")
		}
		h.Call(ctxT(t), dt.Call{})
		if n := h.Backend("a").Calls(); n != 4 {
			t.Fatalf("a was asked %d times after its ejection ended, want 4", n)
		}
		noLeaks(t, h)
	})
}

// A caller that leaves ends its call at once: the attempt is the caller's
// doing (caller_gone), no other pool is tried and the pool is not blamed.
func TestCallerGoneStopsTheCall(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Hang()), pool("b", ok(1))}})
			ctx, cancel := context.WithCancel(ctxT(t))
			done := h.Go(ctx, dt.Call{Stream: stream})
			waitInFlight(t, h, "a", 1)
			cancel()
			res := h.Wait(done, "cancelled call")
			if !errors.Is(res.Err, context.Canceled) || dispatch.CodeOf(res.Err) != dispatch.CodeCanceled {
				t.Fatalf("err %v, want the caller's cancellation", res.Err)
			}
			if got := h.Rec.Attempts(); !slices.Equal(got, []string{"a:caller_gone"}) {
				t.Fatalf("attempts %v, want a:caller_gone alone", got)
			}
			if h.Backend("b").Calls() != 0 {
				t.Fatal("b was tried for a caller that left")
			}
			noLeaks(t, h)
		})
	}
}

// waitInFlight waits until pool holds n of the test's calls.
func waitInFlight(t *testing.T, h *dt.Harness, pool string, n int64) {
	t.Helper()
	p := h.Pool(pool)
	testwait.For(t, 5*time.Second, fmt.Sprintf("pool %s to hold %d calls", pool, n), func() bool { return p.InFlight() == n })
}

// A panic in an adapter after the slot was taken must not leak the slot
// (the gRPC edge turns the panic into INTERNAL; the slot is released first).
func TestAdapterPanicReleasesTheSlot(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Step{Panic: true})}})
			recovered := func() (v any) {
				defer func() { v = recover() }()
				h.Call(ctxT(t), dt.Call{Stream: stream})
				return nil
			}()
			if recovered == nil {
				t.Fatal("the adapter's panic did not reach the caller")
			}
			if leaks := h.Leaks(); len(leaks) > 0 {
				t.Fatalf("slots leaked after a panic: %v", leaks)
			}
		})
	}
}

// routing.attempt_timeout moves a call off a pool that hangs, on the fake
// clock: no sleeping.
func TestAttemptTimeoutMovesToTheNextPool(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Hang()), pool("b", ok(2))},
				Routing: config.Routing{AttemptTimeout: config.Duration(3 * time.Second)}})
			done := h.Go(ctxT(t), dt.Call{Stream: stream})
			h.WaitForWaiters(1, "the attempt timer")
			select {
			case res := <-done:
				t.Fatalf("call ended before the attempt timeout: %+v", res)
			default:
			}
			h.Clock.Advance(3 * time.Second)
			res := h.Wait(done, "after the attempt timeout")
			if res.Err != nil || res.Text != "b0 b1 " || !slices.Equal(res.Route.PoolsTried, []string{"a", "b"}) {
				t.Fatalf("got %+v, want b's answer after a timed out on a", res)
			}
			if got := h.Rec.Attempts(); !slices.Equal(got, []string{"a:failure", "b:ok"}) {
				t.Fatalf("attempts %v: a timed-out attempt is a failure of the pool", got)
			}
			noLeaks(t, h)
		})
	}
}

// An answer that began in time is not cut by the attempt timeout: it
// bounds a stream's first chunk only.
func TestAttemptTimeoutEndsAtTheFirstChunk(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Step{Tokens: 2, Hang: true}), pool("b", ok(2))},
		Routing: config.Routing{AttemptTimeout: config.Duration(3 * time.Second)}})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := h.Go(ctx, dt.Call{Stream: true})
	waitInFlight(t, h, "a", 1)
	// The timer is stopped once a's first chunk arrived: nothing waits on the clock.
	testwait.For(t, 5*time.Second, "the attempt timer to stop after the first chunk", func() bool { return h.Clock.Waiters() == 0 })
	h.Clock.Advance(time.Minute)
	select {
	case res := <-done:
		t.Fatalf("the stream ended when the attempt timeout passed after its first chunk: %+v", res)
	default:
	}
	cancel()
	res := h.Wait(done, "cancelled stream")
	if !errors.Is(res.Err, context.Canceled) || res.Text != "a0 a1 " {
		t.Fatalf("got %+v, want a's two tokens, then the caller's cancellation", res)
	}
	noLeaks(t, h)
}

// With every pool full the call waits in the queue on the router's clock,
// then is shed with an ExhaustedError (RESOURCE_EXHAUSTED at the edges).
func TestQueueWaitOnTheClock(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{full("a", ok(1)), full("b", ok(1))}})
	done := h.Go(ctxT(t), dt.Call{})
	h.WaitForWaiters(1, "the call waiting in the queue")
	h.Clock.Advance(2 * time.Second)
	res := h.Wait(done, "queue_max_wait on the fake clock")
	var ex *dispatch.ExhaustedError
	if !errors.As(res.Err, &ex) || dispatch.CodeOf(res.Err) != dispatch.CodeExhausted || dispatch.RetryAfter(res.Err) != time.Second {
		t.Fatalf("err %v, want an ExhaustedError (retry after 1s) after the wait", res.Err)
	}
	if !strings.Contains(res.Err.Error(), "waited 2s") {
		t.Errorf("err %q does not say how long it waited", res.Err)
	}
	if got := h.Rec.Sheds(); !slices.Equal(got, []string{"no_capacity"}) || len(h.Rec.Waits()) != 1 {
		t.Fatalf("sheds %v, waits %v", got, h.Rec.Waits())
	}
	noLeaks(t, h)
	if slices.ContainsFunc(h.Rec.Acquires(), func(s string) bool { return !strings.HasPrefix(s, "!") }) {
		t.Fatalf("acquires %v: no pool had a slot", h.Rec.Acquires())
	}
}

// A slot freed while a call waits lets it in: the queue poll (capacity
// another replica freed) wakes the first waiter, which takes it.
func TestQueuedCallTakesAFreedSlot(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{full("a", ok(2))}})
	done := h.Go(ctxT(t), dt.Call{})
	h.WaitForWaiters(1, "the call waiting in the queue")
	h.Free("a")
	res := h.Wait(done, "the woken call")
	if res.Err != nil || res.Text != "a0 a1 " {
		t.Fatalf("got %+v, want a's answer once its slot was freed", res)
	}
	if w := h.Rec.Waits(); !slices.Equal(w, []dispatch.WaitResult{dispatch.WaitRetry}) {
		t.Fatalf("waits %v, want one that ended to try again", w)
	}
	if s := h.Rec.Sheds(); len(s) != 0 {
		t.Fatalf("sheds %v", s)
	}
	noLeaks(t, h)
}

// A full queue sheds a newcomer of the same or a lower priority at once
// (queue_full), and a higher-priority newcomer takes the place of the
// newest lower-priority waiter (evicted): both are ExhaustedErrors.
func TestQueueFullShedsAndEvicts(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{full("a", ok(1))}, Routing: config.Routing{QueueMaxLength: 1}})
	prio := func(c priority.Class) dt.Call {
		r := dt.Request()
		r.Routing.Priority = c
		return dt.Call{Req: r}
	}
	batch := h.Go(ctxT(t), prio(priority.Batch))
	h.WaitForWaiters(1, "the batch call waiting")

	// Another batch call: no lower class to evict, shed at once.
	res := h.Call(ctxT(t), prio(priority.Batch))
	if !errors.Is(res.Err, dispatch.ErrShed) || !strings.Contains(res.Err.Error(), "wait queue full (1 calls)") || dispatch.CodeOf(res.Err) != dispatch.CodeExhausted {
		t.Fatalf("a batch call into a full queue: %v, want shed: wait queue full", res.Err)
	}

	// An interactive call evicts the waiting batch call.
	inter := h.Go(ctxT(t), prio(priority.Interactive))
	res = h.Wait(batch, "the evicted batch call")
	if !errors.Is(res.Err, dispatch.ErrShed) || !strings.Contains(res.Err.Error(), "shed for a higher-priority call") || dispatch.RetryAfter(res.Err) != 2*time.Second {
		t.Fatalf("the batch call: %v, want evicted for the interactive call, retry after 2s", res.Err)
	}
	h.WaitForWaiters(1, "the interactive call waiting")
	h.Free("a")
	if res := h.Wait(inter, "the interactive call"); res.Err != nil {
		t.Fatalf("the interactive call: %v, want it served once a slot was freed", res.Err)
	}
	if got := h.Rec.Sheds(); !slices.Equal(got, []string{"queue_full", "evicted"}) {
		t.Fatalf("sheds %v, want [queue_full evicted]", got)
	}
	noLeaks(t, h)
}

// A reload that shortens the queue sheds the waiters beyond it at once.
func TestReloadShortensTheQueue(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{full("a", ok(1))}})
	var calls []<-chan dt.Result
	for i := range 3 {
		calls = append(calls, h.Go(ctxT(t), dt.Call{}))
		h.WaitForWaiters(i+1, "the calls waiting")
	}
	if shed := h.Reload(func(f *config.Fleet) { f.Routing.QueueMaxLength = 1 }); shed != 2 {
		t.Fatalf("the reload shed %d waiters, want 2", shed)
	}
	for _, c := range calls[1:] {
		if res := h.Wait(c, "a shed waiter"); !strings.Contains(fmt.Sprint(res.Err), "wait queue full (1 calls)") {
			t.Fatalf("a waiter beyond the new length: %v, want shed quoting the new length", res.Err)
		}
	}
	h.Free("a")
	if res := h.Wait(calls[0], "the first waiter"); res.Err != nil {
		t.Fatalf("the first waiter: %v", res.Err)
	}
	noLeaks(t, h)
}

// The retry budget lets a quiet router retry a few times (its floor), then
// at most retry_budget of its calls: a retry beyond it fails the call at
// once with the shed reason retry_budget.
func TestRetryBudgetSpent(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeUnavailable)), pool("b", ok(1))},
		Routing: config.Routing{EjectAfterFailures: 100}})
	for i := range 3 {
		if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil || res.Route.Pool != "b" {
			t.Fatalf("call %d: %v, want b's answer on a retry", i, res.Err)
		}
	}
	res := h.Call(ctxT(t), dt.Call{})
	if dispatch.CodeOf(res.Err) != dispatch.CodeUnavailable || !strings.Contains(res.Err.Error(), "retry budget spent") {
		t.Fatalf("4th call: %v, want UNAVAILABLE: retry budget spent (3 retries of 4 calls is over 20%%)", res.Err)
	}
	if got := h.Rec.Sheds(); !slices.Equal(got, []string{"retry_budget"}) {
		t.Fatalf("sheds %v", got)
	}
	if n := h.Backend("b").Calls(); n != 3 {
		t.Fatalf("b was asked %d times, want 3", n)
	}
	noLeaks(t, h)

	// A backend's shortage holds a slot, so its retry is charged too; the
	// refusal then names the shortage.
	h = dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", failAfter(0, dispatch.CodeExhausted)), pool("b", ok(1))}})
	for range 3 {
		h.Call(ctxT(t), dt.Call{})
	}
	res = h.Call(ctxT(t), dt.Call{})
	if !strings.Contains(fmt.Sprint(res.Err), "retry budget spent: a: injected resource_exhausted") {
		t.Fatalf("4th call after shortages: %v, want the retry budget's refusal naming a's shortage", res.Err)
	}
}

// A stream that broke after a piece of a tool call reached the client ends
// as unavailable saying so, and no other pool is asked to continue it; one
// that broke before any tool call continues on another pool.
func TestToolCallsUnderFault(t *testing.T) {
	t.Run("broken mid tool call", func(t *testing.T) {
		h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Step{Tokens: 3, Fail: dispatch.CodeUnavailable, Tool: true}), pool("b", ok(2))}})
		res := h.Call(ctxT(t), dt.Call{Stream: true})
		if dispatch.CodeOf(res.Err) != dispatch.CodeUnavailable || !strings.Contains(res.Err.Error(), "middle of a tool call") {
			t.Fatalf("err %v, want unavailable naming the broken tool call", res.Err)
		}
		if res.ToolPieces != 3 {
			t.Fatalf("client got %d tool-call pieces, want the 3 sent before the break", res.ToolPieces)
		}
		if h.Backend("b").Calls() != 0 {
			t.Fatal("pool b was asked to continue a tool call")
		}
		noLeaks(t, h)
	})
	t.Run("broken before any tool call continues", func(t *testing.T) {
		h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", failAfter(2, dispatch.CodeUnavailable)), pool("b", dt.Step{Tokens: 2, Tool: true})}})
		res := h.Call(ctxT(t), dt.Call{Stream: true})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if res.Text != "a0 a1 " || res.ToolPieces != 2 {
			t.Fatalf("client saw text %q and %d tool-call pieces, want a0 a1 and 2", res.Text, res.ToolPieces)
		}
		if r := h.Backend("b").LastResume(); r == nil || r.Tokens != 2 {
			t.Fatalf("b continued from %+v, want 2 tokens", r)
		}
	})
}

// A pool whose backend lacks a feature the call needs is never sent it;
// when no pool serving the model has it, an InvalidError names the field.
func TestPoolsLackingAFeatureAreSkippedOrTheFieldRefused(t *testing.T) {
	for _, tc := range []struct {
		need  dispatch.Features
		field string
	}{
		{dispatch.NeedTools, "tools"},
		{dispatch.NeedResponseFormat, "response_format"},
		{dispatch.NeedLogprobs, "logprobs"},
		{dispatch.NeedTopK, "sampling.top_k"},
		{dispatch.NeedEmbeddings, "model"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			all := dispatch.NeedTools | dispatch.NeedResponseFormat | dispatch.NeedLogprobs | dispatch.NeedTopK | dispatch.NeedEmbeddings
			h := dt.New(t, dt.Options{Pools: []dt.Pool{
				{Name: "a", Offers: all &^ tc.need}, {Name: "b", Offers: all},
			}})
			req := dt.Request()
			req.Needs = tc.need
			res := h.Call(ctxT(t), dt.Call{Req: req})
			if res.Err != nil || res.Route.Pool != "b" || h.Backend("a").Calls() != 0 {
				t.Fatalf("served by %q (%v), a called %d times; want b only", res.Route.Pool, res.Err, h.Backend("a").Calls())
			}
			h = dt.New(t, dt.Options{Pools: []dt.Pool{{Name: "a", Offers: all &^ tc.need}}})
			req = dt.Request()
			req.Needs = tc.need
			res = h.Call(ctxT(t), dt.Call{Req: req})
			var inv *dispatch.InvalidError
			if !errors.As(res.Err, &inv) || inv.Fields[0] != tc.field {
				t.Fatalf("err %v, want an InvalidError naming %s", res.Err, tc.field)
			}
			if h.Backend("a").Calls() != 0 {
				t.Fatal("the pool lacking the feature was called")
			}
			// Without the need the same pool serves.
			if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil {
				t.Fatal(res.Err)
			}
		})
	}
}

// No pool eligible: an UnavailableError naming why each was left out, with
// no attempt and no wait.
func TestNoEligiblePool(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a"), {Name: "b", Config: config.Pool{Region: "eu-west-1"}}}})
	st := control.State{}.Clone()
	st.Drained["a"] = true
	h.Pool("a").SetControl(&st)
	req := dt.Request()
	req.Routing.Residency = "us"
	res := h.Call(ctxT(t), dt.Call{Req: req})
	if !errors.Is(res.Err, dispatch.ErrNoEligiblePool) || dispatch.CodeOf(res.Err) != dispatch.CodeUnavailable {
		t.Fatalf("err %v, want no eligible pool", res.Err)
	}
	for _, want := range []string{`residency "us"`, "a: ", "b: "} {
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("err %q does not say %q", res.Err, want)
		}
	}
	if len(h.Rec.Acquires()) != 0 || len(h.Rec.Waits()) != 0 {
		t.Fatalf("acquires %v, waits %v: nothing to try", h.Rec.Acquires(), h.Rec.Waits())
	}
}

// A tenant over its own budget is refused at once: no other pool and no
// wait would help.
func TestTenantQuotaStopsAtOnce(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a"), pool("b")},
		Tenants: []config.Tenant{{Name: "acme", RequestsPerMinute: 1, APIKeySHA256: []string{strings.Repeat("ab", 32)}}}})
	call := func() dt.Result {
		r := dt.Request()
		r.Tenant = "acme"
		return h.Call(ctxT(t), dt.Call{Req: r})
	}
	if res := call(); res.Err != nil {
		t.Fatal(res.Err)
	}
	res := call()
	var q *capacity.QuotaError
	if !errors.As(res.Err, &q) || q.Scope != "tenant" || dispatch.CodeOf(res.Err) != dispatch.CodeExhausted {
		t.Fatalf("second call: %v, want the tenant's quota", res.Err)
	}
	if got := h.Rec.Acquires(); !slices.Equal(got, []string{"a", "!a"}) || len(h.Rec.Waits()) != 0 {
		t.Fatalf("acquires %v, waits %v: want one refused acquire and no wait", got, h.Rec.Waits())
	}
}

// learning ranks in config order and records the outcomes the dispatcher
// reports to it (policy.Feedback).
type learning struct {
	dt.InOrder
	seen []string
}

func (l *learning) Name() string { return "learning" }
func (l *learning) AttemptDone(r policy.AttemptResult) {
	l.seen = append(l.seen, fmt.Sprintf("%s:%d", r.Pool, r.Outcome))
}

// A policy that implements policy.Feedback hears every attempt's outcome,
// after its slot was released.
func TestPolicyHearsEveryAttempt(t *testing.T) {
	l := &learning{}
	h := dt.New(t, dt.Options{Policy: l, Pools: []dt.Pool{
		pool("a", failAfter(0, dispatch.CodeUnavailable)), pool("b", failAfter(0, dispatch.CodeExhausted)), pool("c", ok(1)),
	}})
	if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil {
		t.Fatal(res.Err)
	}
	want := []string{
		fmt.Sprintf("a:%d", policy.OutcomeFailure), fmt.Sprintf("b:%d", policy.OutcomeShortage), fmt.Sprintf("c:%d", policy.OutcomeOK),
	}
	if !slices.Equal(l.seen, want) {
		t.Fatalf("feedback %v, want %v", l.seen, want)
	}
}

// The dispatcher walks the policy's order, drawn as it goes: with the
// default policy, equal pools in one region share the calls by weight, not
// in config order. The random source is injected, so the shares are exact:
// one draw a call, every eight draws spread evenly over [0,1).
func TestDispatcherFollowsTheWeightedDraw(t *testing.T) {
	h := dt.New(t, dt.Options{Policy: &policy.Switchyard{}, Rand: dt.Strata(8), Pools: []dt.Pool{pool("a"), pool("b")}})
	st := control.State{}.Clone() // an operator's weight change, as the control store delivers it
	st.Weights["b"] = 3
	h.Pool("b").SetControl(&st)
	const n = 400
	for range n {
		if res := h.Call(ctxT(t), dt.Call{}); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	a, b := h.Backend("a").Calls(), h.Backend("b").Calls()
	// Weight 3 against 1: b first in 6 of every 8 calls.
	if a != n/4 || b != 3*n/4 {
		t.Fatalf("a served %d, b %d: want %d and %d", a, b, n/4, 3*n/4)
	}
}

// The usage a call settles into each attempt's pool window and charges its
// client: the backend's reported input, the router's estimate (2 tokens
// here) only where it reported none; across a continuation the client pays
// its prompt once and every token it received once, while each pool's
// window is charged what that pool processed (the re-sent prefix included).
func TestUsageSettlement(t *testing.T) {
	const est = 2 // dt.Request's estimate
	withPrompt := func(p dt.Pool, n int32) dt.Pool { p.Prompt = n; return p }
	cases := []struct {
		name    string
		stream  bool
		pools   []dt.Pool
		in      int
		out     int32
		settled []string // each attempt's settlement, "pool:tokens"
		resume  int32    // the tokens the serving pool was asked to continue (0: none)
	}{
		{name: "unary: the server's input count", pools: []dt.Pool{withPrompt(pool("a", ok(3)), 37)}, in: 37, out: 3, settled: []string{"a:40"}},
		{name: "stream: the server's input count", stream: true, pools: []dt.Pool{withPrompt(pool("a", ok(3)), 37)}, in: 37, out: 3, settled: []string{"a:40"}},
		{name: "unary: no input reported, the estimate", pools: []dt.Pool{pool("a", ok(3))}, in: est, out: 3, settled: []string{"a:5"}},
		{name: "stream: no input reported, the estimate", stream: true, pools: []dt.Pool{pool("a", ok(3))}, in: est, out: 3, settled: []string{"a:5"}},
		{
			name:  "unary failover: the serving pool's count; the failed pool charged the estimate",
			pools: []dt.Pool{withPrompt(pool("a", failAfter(0, dispatch.CodeUnavailable)), 37), withPrompt(pool("b", ok(3)), 41)},
			in:    41, out: 3, settled: []string{"a:2", "b:44"},
		},
		{
			name: "continued stream: the prompt once, every token once; B's window holds the re-sent prefix", stream: true,
			pools: []dt.Pool{withPrompt(pool("a", failAfter(3, dispatch.CodeUnavailable)), 37), withPrompt(pool("b", ok(2)), 37)},
			in:    37, out: 5, settled: []string{"a:5", "b:42"}, resume: 3,
		},
		{
			name: "continued stream, the continuing pool reports no input: the estimate", stream: true,
			pools: []dt.Pool{withPrompt(pool("a", failAfter(3, dispatch.CodeUnavailable)), 37), pool("b", ok(2))},
			in:    est, out: 5, settled: []string{"a:5", "b:7"}, resume: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := dt.New(t, dt.Options{Pools: tc.pools})
			res := h.Call(ctxT(t), dt.Call{Stream: tc.stream})
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Input != tc.in || res.Output != tc.out {
				t.Errorf("client charged %d in, %d out; want %d, %d", res.Input, res.Output, tc.in, tc.out)
			}
			if got := h.Settled(); !slices.Equal(got, tc.settled) {
				t.Errorf("settled %v, want %v", got, tc.settled)
			}
			var names []string
			for _, p := range tc.pools {
				names = append(names, p.Name)
			}
			windows, err := h.Memory.Usage(context.Background(), names)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.settled {
				name, n, _ := strings.Cut(s, ":")
				if got := fmt.Sprint(windows[name].TokensLastMinute); got != n {
					t.Errorf("pool %s's tokens-per-minute window holds %s, want %s", name, got, n)
				}
			}
			serving := h.Backend(res.Route.Pool).LastResume()
			if got := int32(0); serving != nil {
				got = serving.Tokens
				if got != tc.resume || serving.Text != dt.Texts("a", got) {
					t.Errorf("the serving pool continued %+v, want a's first %d tokens", serving, tc.resume)
				}
			} else if tc.resume != 0 {
				t.Errorf("the serving pool continued nothing, want %d tokens", tc.resume)
			}
			noLeaks(t, h)
		})
	}
}

// A slot this replica frees shows as free in the routing view at once, in
// the local and the shared count (the shared one never below zero).
func TestReleasedSlotIsFreeInTheViewAtOnce(t *testing.T) {
	h := dt.New(t, dt.Options{Pools: []dt.Pool{pool("a", dt.Hang())}})
	p := h.Pool("a")
	ctx, cancel := context.WithCancel(ctxT(t))
	done := h.Go(ctx, dt.Call{})
	waitInFlight(t, h, "a", 1)
	if got := p.Shared(); got != 1 {
		t.Errorf("shared in-flight right after the acquire: %d, want 1", got)
	}
	if v := p.View(h.Clock.Now()); v.InFlight != 1 {
		t.Errorf("the routing view counts %d in flight, want 1", v.InFlight)
	}
	cancel()
	h.Wait(done, "the cancelled call")
	if local, shared := p.InFlight(), p.Shared(); local != 0 || shared != 0 {
		t.Fatalf("right after the release the view counts %d local, %d shared in flight; want 0 and 0", local, shared)
	}
	noLeaks(t, h)
}
