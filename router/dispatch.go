package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// dispatcher runs one admitted call through the request path:
//
//	rank → reserve → attempt → release → failover → wait (→ rank again)
//
// It depends only on its fields: the call's fleet snapshot (pools with their
// live state, carried by the call), the capacity store, the active policy, one
// clock for every time it reads or waits on, and an observer that hears of
// every step (telemetry implements it; tests record with it). It never touches
// the Server, so table tests run it with fake backends and a fake clock.
// Safe for concurrent use.
type dispatcher struct {
	store  capacity.Store
	policy func() policy.Policy
	clock  clock.Clock
	obs    observer
	queue  *waitQueue
	budget *retryBudget
	// scratch recycles the per-decision buffers (views, candidates).
	scratch sync.Pool
}

// observer hears of every step of the request path. Methods run on the
// call's goroutine and must not block. Telemetry (metrics, spans, logs, watch
// events) implements it; a policy that implements policy.Feedback also hears
// of every attempt's outcome.
type observer interface {
	// explain reports whether this call wants human-readable decision
	// reasons (they cost allocations: only traced calls get them).
	explain(ctx context.Context) bool
	// acquired: one capacity-store Acquire on p took took and returned err.
	acquired(ctx context.Context, p *pool, took time.Duration, err error)
	// attemptStarted: an attempt holds a slot and is about to call the
	// backend; the returned context carries the attempt (its span).
	attemptStarted(ctx context.Context, a *attempt) context.Context
	// attemptDone: the attempt ended with oc (its slot is already released).
	attemptDone(ctx context.Context, a *attempt, oc outcome, err error)
	// overrun: p's backend produced more than the call allows (reason
	// "max_tokens": output past it, stopped; "bytes": an answer longer than
	// max_tokens can take, refused by the adapter).
	overrun(ctx context.Context, p *pool, reason string, maxTokens, tokens int32, err error)
	// ejected: p was just taken out of rotation after consecutive failures.
	ejected(ctx context.Context, p *pool, err error)
	// shed: the call is refused for want of capacity or retry budget.
	shed(ctx context.Context, r shedReason, prio pb.Priority)
	// queueWaited: one wait in the queue ended.
	queueWaited(ctx context.Context, prio pb.Priority, took time.Duration, res waitResult, err error)
	// done: the call is finished (the edge reports it, with its rpc label).
	done(ctx context.Context, cs callStats, err error)
}

// attempt is one try of a call on one pool.
type attempt struct {
	pool     *pool
	n        int32     // 1 for the first attempt
	start    time.Time // when the slot was asked for
	cand     *policy.Candidate
	policy   string
	streamed int32 // tokens already delivered to the client before it
	// op is the call's gen_ai.operation.name, model its model.
	op, model string
	// output is the tokens the attempt itself produced (its usage; for a
	// broken stream, those delivered before it broke).
	output int32
	// took is how long the backend call ran (set before attemptDone); ttft
	// how long its first chunk took (streams; 0 when none came).
	took, ttft time.Duration
	// busy is the pool's share of its limit in use as the attempt began, it included.
	busy float64
	// span is the observer's handle for the attempt (telemetry's trace span).
	span any
}

// attemptFunc runs one attempt on a pool with req (a stream resuming on
// another pool carries a continuation). It returns the usage to settle the
// reservation with. started, when not nil, is called once the backend's
// first chunk arrived: it ends the attempt timeout, since from then on the
// stream is bounded by the client's deadline alone.
type attemptFunc func(ctx context.Context, p *pool, req *pb.GenerateRequest, started func()) (usage *pb.Usage, err error)

// progress tracks what a stream delivered to the client.
type progress struct {
	text   strings.Builder
	tokens int32
	// toolCall: a piece of a tool call reached the client; the stream is
	// never continued on another pool after that.
	toolCall bool
}

func streamed(p *progress) int32 {
	if p == nil {
		return 0
	}
	return p.tokens
}

// errAttemptTimeout marks an attempt cut short by routing.attempt_timeout.
var errAttemptTimeout = errors.New("attempt timeout")

// decision is one call's scratch for ranking: recycled across calls.
type decision struct {
	views []policy.PoolView
	reps  []policy.Reported // the views' load reports
	dec   policy.Decision
	att   attempt // the attempt under way
}

// decide snapshots the pools serving the call's model and ranks them.
func (d *dispatcher) decide(c *call, pol policy.Policy, sc *decision) {
	now := d.clock.Now()
	pools := c.state.forModel(c.model)
	if cap(sc.views) < len(pools) {
		sc.views = make([]policy.PoolView, len(pools))
		sc.reps = make([]policy.Reported, len(pools))
	}
	sc.views, sc.reps = sc.views[:len(pools)], sc.reps[:len(pools)]
	for i, p := range pools {
		p.viewInto(&sc.views[i], &sc.reps[i], now)
	}
	policy.DecideInto(&sc.dec, pol, &c.preq, sc.views, c.state.env)
}

// run takes an admitted call through the request path and returns the route
// taken. prog is nil for unary calls.
func (d *dispatcher) run(ctx context.Context, c *call, prog *progress, do attemptFunc) (*pb.Route, error) {
	d.budget.call()
	pol := d.policy()
	c.preq.Explain = d.obs.explain(ctx)
	if dl, ok := ctx.Deadline(); ok {
		// The client's deadline is wall time, whatever clock the router runs on.
		c.preq.Deadline = max(time.Until(dl), time.Nanosecond)
	}
	route := &pb.Route{Policy: pol.Name()}
	sc, _ := d.scratch.Get().(*decision)
	if sc == nil {
		sc = &decision{}
	}
	defer d.scratch.Put(sc)
	var failed []bool // by pool index: pools that really failed this call
	var lastErr error
	rf := c.state.fleet.Routing
	waitUntil := d.clock.Now().Add(rf.QueueMaxWait.Std())
	waited := false // the call has been in the wait queue
	pools := c.state.forModel(c.model)
	for {
		d.decide(c, pol, sc)
		dec := &sc.dec
		if len(dec.Ranked) == 0 {
			return route, noEligible(c, dec)
		}
		var shortage error
		cannotContinue := ""              // a pool skipped because it cannot resume the stream
		lacking, lacks := "", features(0) // a pool skipped because it lacks a feature the call needs
		// Next draws the order as the loop goes: usually only the first.
		for cand := dec.Next(); cand != nil; cand = dec.Next() {
			if prog != nil && prog.toolCall {
				return route, toolCallBroken(prog, cmpErr(lastErr, shortage))
			}
			p := pools[cand.Index]
			if failed != nil && failed[p.index] {
				continue
			}
			if miss := c.needs &^ p.offers; miss != 0 {
				lacking, lacks = p.cfg.Name, miss
				continue
			}
			if streamed(prog) > 0 && !p.continues {
				// Tokens reached the client: only a pool that honours a
				// continuation can go on without repeating or losing text.
				cannotContinue = p.cfg.Name
				continue
			}
			if int(route.Attempts) >= rf.MaxAttempts {
				return route, fmt.Errorf("%w: gave up after %d attempts: %w", errPoolFailed, route.Attempts, lastErr)
			}
			if route.Attempts > 0 && !d.budget.canRetry() {
				d.obs.shed(ctx, shedRetryBudget, c.req.GetPriority())
				return route, fmt.Errorf("%w: retry budget spent: %w", errPoolFailed, lastErr)
			}
			start := d.clock.Now()
			lease, err := d.acquire(ctx, c, p, pol, &sc.views[cand.Index])
			d.obs.acquired(ctx, p, d.clock.Now().Sub(start), err)
			if err != nil {
				if ctx.Err() != nil {
					return route, ctx.Err()
				}
				var q *capacity.QuotaError
				if errors.As(err, &q) && q.Scope == "tenant" {
					// The caller's own budget: no other pool and no wait helps.
					return route, err
				}
				shortage = err
				continue
			}
			if route.Attempts > 0 {
				// A retry is charged to the budget only once it has a slot:
				// pools that were full cost nothing.
				d.budget.allowRetry()
			}
			if waited {
				// A queued call got a slot: more may be free (released by other
				// replicas), so the next waiter tries too.
				d.queue.wake()
				waited = false
			}
			route.Attempts++
			route.PoolsTried = append(route.PoolsTried, p.cfg.Name)
			req := c.req
			if prog != nil && prog.tokens > 0 {
				req = continued(c.req, prog)
			}
			a := &sc.att
			*a = attempt{pool: p, n: route.Attempts, start: start, cand: cand, policy: route.Policy, streamed: streamed(prog), op: c.operation(), model: c.model}
			if v := &sc.views[cand.Index]; v.Limit > 0 {
				a.busy = float64(v.InFlight+1) / float64(v.Limit)
			}
			var usage *pb.Usage
			usage, err = d.attempt(ctx, c, a, lease, req, do)
			a.output = usage.GetOutputTokens()
			oc := classify(ctx, err)
			d.obs.attemptDone(ctx, a, oc, err)
			if fb, ok := pol.(policy.Feedback); ok {
				r := policy.AttemptResult{Pool: p.cfg.Name, Outcome: policyOutcome(oc), Duration: a.took, TTFT: a.ttft,
					InputTokens: c.inputTokens, Busy: a.busy, Prefix: c.preq.Prefix}
				if usage != nil {
					r.OutputTokens, r.CachedTokens = int(usage.GetOutputTokens()), int(usage.GetCachedInputTokens())
					if in := int(usage.GetInputTokens()); in > 0 {
						r.InputTokens = in
					}
				}
				fb.AttemptDone(r)
			}
			switch oc {
			case outcomeOK:
				p.health.success()
				fillRoute(route, p)
				// The edge reports c.inputTokens to the client, the metrics
				// and the log: from here it is the input the client is
				// charged, the backend's count where it gave one.
				c.inputTokens = clientInput(c, a, usage)
				return route, nil
			case outcomeClientFault:
				return route, err
			case outcomeCallerGone:
				if ctx.Err() != nil {
					return route, ctx.Err()
				}
				return route, err
			case outcomeShortage:
				shortage = err
				continue
			case outcomeFailure:
				if failed == nil {
					failed = make([]bool, len(c.state.pools))
				}
				failed[p.index] = true
				lastErr = fmt.Errorf("pool %s: %w", p.cfg.Name, err)
				if p.health.failure(d.clock.Now(), c.state.ejectP, err) {
					d.obs.ejected(ctx, p, err)
				}
				continue
			}
		}
		if prog != nil && prog.toolCall {
			return route, toolCallBroken(prog, cmpErr(lastErr, shortage))
		}
		if shortage == nil {
			if lacking != "" && lastErr == nil && cannotContinue == "" {
				return route, unsupported(c, lacks, lacking)
			}
			if cannotContinue != "" {
				return route, fmt.Errorf("%w: stream broke after %d tokens and no other pool can continue it (%s cannot): %w", errPoolFailed, streamed(prog), cannotContinue, lastErr)
			}
			// Every eligible pool failed for real.
			return route, fmt.Errorf("%w: every eligible pool failed: %w", errPoolFailed, lastErr)
		}
		// Nothing had headroom: wait briefly, in priority order, then try again.
		if !d.clock.Now().Before(waitUntil) {
			d.obs.shed(ctx, shedNoCapacity, c.req.GetPriority())
			return route, &exhaustedError{err: fmt.Errorf("%w: no pool serving %q has headroom (waited %s): %w", errNoCapacity, c.model, rf.QueueMaxWait.Std(), shortage), retryAfter: time.Second}
		}
		qstart := d.clock.Now()
		res, err := d.queue.wait(ctx, c.req.GetPriority(), waitUntil.Sub(qstart), waited)
		waited = true
		d.obs.queueWaited(ctx, c.req.GetPriority(), d.clock.Now().Sub(qstart), res, err)
		if err != nil {
			return route, err
		}
		switch res {
		case waitFull:
			d.obs.shed(ctx, shedQueueFull, c.req.GetPriority())
			// The queue's length now: a reload may have shortened it since the call came in.
			return route, &exhaustedError{err: fmt.Errorf("%w: wait queue full (%d calls): %w", errShed, d.queue.maxLength(), shortage), retryAfter: time.Second}
		case waitEvicted:
			d.obs.shed(ctx, shedEvicted, c.req.GetPriority())
			return route, &exhaustedError{err: fmt.Errorf("%w: %s call shed for a higher-priority call: %w", errShed, priorityLabel(c.req.GetPriority()), shortage), retryAfter: 2 * time.Second}
		}
	}
}

// attempt runs do on a.pool holding lease. The slot is released on every
// way out, a panic in the adapter included; the attempt timeout
// (routing.attempt_timeout) bounds the time to the backend's answer (unary)
// or first chunk (streams).
func (d *dispatcher) attempt(ctx context.Context, c *call, a *attempt, lease capacity.Lease, req *pb.GenerateRequest, do attemptFunc) (usage *pb.Usage, err error) {
	defer func() { d.release(a.pool, lease, c, a, usage) }()
	actx := d.obs.attemptStarted(ctx, a)
	var started func()
	timeout := c.state.fleet.Routing.AttemptTimeout.Std()
	if timeout > 0 {
		var cancel context.CancelCauseFunc
		actx, cancel = context.WithCancelCause(actx)
		t := d.clock.NewTimer(timeout)
		stop := make(chan struct{})
		var once sync.Once
		started = func() { once.Do(func() { close(stop) }) }
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			defer t.Stop()
			select {
			case <-t.C():
				cancel(errAttemptTimeout)
			case <-stop:
			case <-actx.Done():
			}
		}()
		defer func() { started(); <-exited; cancel(nil) }()
	}
	begin := d.clock.Now()
	// first notes the first chunk's time, then ends the attempt timeout.
	var firstOnce sync.Once
	first := func() {
		firstOnce.Do(func() { a.ttft = d.clock.Now().Sub(begin) })
		if started != nil {
			started()
		}
	}
	usage, err = do(actx, a.pool, req, first)
	a.took = d.clock.Now().Sub(begin)
	if re := (*backends.RunawayError)(nil); errors.As(err, &re) {
		d.obs.overrun(actx, a.pool, "bytes", c.req.GetMaxTokens(), usage.GetOutputTokens(), err)
	}
	if err != nil && timeout > 0 && ctx.Err() == nil && errors.Is(context.Cause(actx), errAttemptTimeout) {
		// The backend's own error is a cancellation; say what happened instead.
		err = fmt.Errorf("pool %s: %w (%s): %v", a.pool.cfg.Name, errAttemptTimeout, timeout, err)
	}
	return usage, err
}

func policyOutcome(oc outcome) policy.Outcome {
	switch oc {
	case outcomeOK:
		return policy.OutcomeOK
	case outcomeShortage:
		return policy.OutcomeShortage
	case outcomeFailure:
		return policy.OutcomeFailure
	default:
		return policy.OutcomeNeutral
	}
}

func priorityLabel(p pb.Priority) string { return priority.FromWire(p).String() }

func noEligible(c *call, dec *policy.Decision) error {
	reasons := make([]string, 0, len(dec.Skipped))
	for _, sk := range dec.Skipped {
		if sk.Skip == policy.SkipModel {
			continue
		}
		reasons = append(reasons, sk.Pool+": "+sk.Describe(&c.preq))
	}
	what := fmt.Sprintf("model %q", c.model)
	if c.preq.Residency != "" {
		what += fmt.Sprintf(" with residency %q", c.preq.Residency)
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no pool serves it")
	}
	return fmt.Errorf("%w for %s (%s)", errNoEligiblePool, what, strings.Join(reasons, "; "))
}

func fillRoute(r *pb.Route, p *pool) {
	r.Pool, r.Cloud, r.Region, r.Accelerator = p.cfg.Name, p.cfg.Cloud, p.cfg.Region, p.cfg.Accelerator
}

// acquire takes a slot in p for c.
func (d *dispatcher) acquire(ctx context.Context, c *call, p *pool, pol policy.Policy, view *policy.PoolView) (capacity.Lease, error) {
	limit := view.Limit // the config's or an operator's override
	if adv, ok := pol.(policy.LimitAdvisor); ok {
		limit = min(limit, adv.AdvisedLimit(view))
	}
	var tl capacity.Limits
	if c.tenant != "" {
		tl = c.state.tenantLimits[c.tenant]
	}
	lease, err := d.store.Acquire(ctx, capacity.Reservation{
		ID:   c.req.RequestId,
		Pool: p.cfg.Name,
		Limits: capacity.Limits{
			MaxConcurrent: limit, RequestsPerMinute: p.cfg.Limits.RequestsPerMinute, TokensPerMinute: p.cfg.Limits.TokensPerMinute,
		},
		Tenant:       c.tenant,
		TenantLimits: tl,
		Tokens:       int64(c.inputTokens) + int64(c.req.MaxTokens),
	})
	if err != nil {
		return lease, fmt.Errorf("pool %s: %w", p.cfg.Name, err)
	}
	p.local.Add(1)
	p.sharedAcquired()
	return lease, nil
}

// release returns the slot and settles tokens; always paired with acquire.
// The charge is what the attempt's pool processed (see fillInput).
func (d *dispatcher) release(p *pool, l capacity.Lease, c *call, a *attempt, u *pb.Usage) {
	used := int64(c.inputTokens) + int64(a.streamed)
	if u != nil {
		fillInput(c, a, u)
		used = int64(u.GetInputTokens()) + int64(u.GetOutputTokens())
	}
	d.store.Release(l, used)
	p.local.Add(-1)
	p.sharedReleased()
	d.queue.wake()
}

// Usage accounting. A backend reports the tokens its server processed; the
// router's estimate (backends.EstimateInputTokens, 4 bytes a token) stands
// in only where it reported none. Docs: architecture.md, "Usage: what is
// counted".
//
//   - a pool's tokens-per-minute window (and the tenant's: capacity.Store
//     settles both with one count) is charged what each attempt processed:
//     its server's input, the re-sent continuation prefix included, plus
//     the tokens it generated; a failed attempt, the estimated input plus
//     the tokens it streamed;
//   - the client, the call's metrics and logs see the client's input and
//     the output of every attempt (each token the client received once);
//   - the client's input is the serving pool's reported input minus the
//     continuation prefix the router re-sent (the tokens earlier attempts
//     streamed): that prefix is the router's cost of failing over, not the
//     client's. Pools serving one model share its tokenizer, so this is the
//     prompt as the servers count it, to within the few tokens a re-encoded
//     prefix may differ by.

// fillInput fills the input tokens of an attempt's usage with the router's
// estimate when the backend reported none (0): the client's input plus the
// prefix re-sent in a continuation.
func fillInput(c *call, a *attempt, u *pb.Usage) {
	if u.GetInputTokens() <= 0 {
		u.InputTokens = int32(c.inputTokens) + a.streamed
	}
}

// clientInput is the input the client is charged for the attempt that
// served the call (u is its usage, filled by fillInput): its reported input
// less the continuation prefix the router re-sent, or the router's
// estimate when that leaves nothing or the backend reported no usage.
func clientInput(c *call, a *attempt, u *pb.Usage) int {
	if u == nil {
		return c.inputTokens
	}
	if in := u.GetInputTokens() - a.streamed; in > 0 {
		return int(in)
	}
	return c.inputTokens
}

// cmpErr is the first non-nil error.
func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// continued is the request for an attempt that resumes a stream after
// prog's tokens reached the client: the client's request with a
// continuation holding everything generated so far (a continuation the
// client itself sent, then what this call streamed).
func continued(req *pb.GenerateRequest, prog *progress) *pb.GenerateRequest {
	r := proto.Clone(req).(*pb.GenerateRequest)
	prev := req.GetContinuation()
	r.Continuation = &pb.Continuation{
		GeneratedText:   prev.GetGeneratedText() + prog.text.String(),
		GeneratedTokens: prev.GetGeneratedTokens() + prog.tokens,
	}
	return r
}
