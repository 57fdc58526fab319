// Package dispatch is switchyard's transport-neutral core: one admitted call
// through the request path
//
//	rank → reserve → attempt → release → failover → wait (→ rank again)
//
// with the typed errors every edge maps to its own wire, the caller's
// credential check (Authenticator), and the Generation a reload swaps in. It
// imports no gRPC, protobuf or net/http (a test holds it to that): the edges
// (router/grpcedge, router/openaihttp, router/anthropichttp, router/console)
// and the wiring in package router, which hands each attempt to a pool's
// backend, speak the wires.
//
// Read Dispatcher.Run first: it is the request path, top to bottom.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Sentinels the typed errors wrap, for errors.Is and for the words of the
// messages ("no capacity: ...").
var (
	ErrNoEligiblePool = errors.New("no eligible pool")
	ErrNoCapacity     = errors.New("no capacity")
	ErrShed           = errors.New("shed")
	ErrPoolFailed     = errors.New("pool failed")
	// ErrAttemptTimeout marks an attempt cut short by routing.attempt_timeout.
	ErrAttemptTimeout = errors.New("attempt timeout")
)

// Dispatcher runs admitted calls through the request path. It depends only
// on its options: the capacity store, the active policy, one clock for
// every time it reads or waits on, and an observer that hears of every step
// (telemetry implements it; tests record with it); and on the Generation
// each call carries. Safe for concurrent use.
type Dispatcher struct {
	store  capacity.Store
	policy func() policy.Policy
	clock  clock.Clock
	obs    Observer
	queue  *waitQueue
	budget *retryBudget
	gen    atomic.Pointer[Generation]
	// scratch recycles the per-decision buffers (views, candidates).
	scratch sync.Pool
}

// Options build a Dispatcher.
type Options struct {
	// Store counts capacity. Required.
	Store capacity.Store
	// Policy returns the active policy. Required.
	Policy func() policy.Policy
	// Clock defaults to the wall clock.
	Clock clock.Clock
	// Observer hears of every step; nil: nobody.
	Observer Observer
	// Generation is the first generation. Required.
	Generation *Generation
}

// New builds a Dispatcher.
func New(o Options) *Dispatcher {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Observer == nil {
		o.Observer = NopObserver{}
	}
	r := o.Generation.Fleet.Routing
	d := &Dispatcher{
		store:  o.Store,
		policy: o.Policy,
		clock:  o.Clock,
		obs:    o.Observer,
		queue:  newWaitQueue(o.Clock, r.QueueMaxLength),
		budget: newRetryBudget(o.Clock, r.RetryBudget),
	}
	d.gen.Store(o.Generation)
	return d
}

// Generation is the generation new calls are admitted under.
func (d *Dispatcher) Generation() *Generation { return d.gen.Load() }

// Swap installs g for new calls (calls under way keep theirs) and applies
// its wait-queue length and retry budget at once: waiters beyond a shorter
// queue are shed now, lowest priority and newest first; shed says how many.
func (d *Dispatcher) Swap(g *Generation) (shed int) {
	prev := d.gen.Swap(g)
	a, b := prev.Fleet.Routing, g.Fleet.Routing
	if a.QueueMaxLength != b.QueueMaxLength {
		shed = d.queue.setMaxLen(b.QueueMaxLength)
	}
	if a.RetryBudget != b.RetryBudget {
		d.budget.setRatio(b.RetryBudget)
	}
	return shed
}

// Poll lets the first queued call re-check for capacity that other replicas
// (or operators) freed: this replica only hears of its own releases. The
// wiring calls it on a ticker; one waiter per call, whatever the queue length.
func (d *Dispatcher) Poll() { d.queue.wake() }

// QueueLimit is the wait queue's length limit now (routing.queue_max_length
// of the last generation swapped in).
func (d *Dispatcher) QueueLimit() int { return d.queue.maxLength() }

// QueueLength is the number of calls waiting for capacity.
func (d *Dispatcher) QueueLength() int { return d.queue.length() }

// Observer hears of every step of the request path. Methods run on the
// call's goroutine and must not block. Telemetry (metrics, spans, logs, watch
// events) implements it; a policy that implements policy.Feedback also hears
// of every attempt's outcome.
type Observer interface {
	// Explain reports whether this call wants human-readable decision
	// reasons (they cost allocations: only traced calls get them).
	Explain(ctx context.Context) bool
	// Acquired: one capacity-store Acquire on p took took and returned err.
	Acquired(ctx context.Context, p *Pool, took time.Duration, err error)
	// AttemptStarted: an attempt holds a slot and is about to call the
	// backend; the returned context carries the attempt (its span).
	AttemptStarted(ctx context.Context, a *Attempt) context.Context
	// AttemptDone: the attempt ended with oc (its slot is already released).
	AttemptDone(ctx context.Context, a *Attempt, oc Outcome, err error)
	// Ejected: p was just taken out of rotation after consecutive failures.
	Ejected(ctx context.Context, p *Pool, err error)
	// Shed: the call is refused for want of capacity or retry budget.
	Shed(ctx context.Context, r ShedReason, prio priority.Class)
	// QueueWaited: one wait in the queue ended.
	QueueWaited(ctx context.Context, prio priority.Class, took time.Duration, res WaitResult, err error)
}

// NopObserver hears nothing.
type NopObserver struct{}

var _ Observer = NopObserver{}

func (NopObserver) Explain(context.Context) bool                                   { return false }
func (NopObserver) Acquired(context.Context, *Pool, time.Duration, error)          {}
func (NopObserver) AttemptStarted(ctx context.Context, _ *Attempt) context.Context { return ctx }
func (NopObserver) AttemptDone(context.Context, *Attempt, Outcome, error)          {}
func (NopObserver) Ejected(context.Context, *Pool, error)                          {}
func (NopObserver) Shed(context.Context, ShedReason, priority.Class)               {}
func (NopObserver) QueueWaited(context.Context, priority.Class, time.Duration, WaitResult, error) {
}

// ShedReason is why a call was refused for want of capacity or budget.
type ShedReason int

// The reasons.
const (
	ShedQueueFull ShedReason = iota
	ShedEvicted
	ShedNoCapacity
	ShedRetryBudget
	ShedReasons // the number of reasons
)

var shedReasonNames = [ShedReasons]string{"queue_full", "evicted", "no_capacity", "retry_budget"}

func (r ShedReason) String() string {
	if r >= 0 && r < ShedReasons {
		return shedReasonNames[r]
	}
	return "unknown"
}

// Attempt is one try of a call on one pool.
type Attempt struct {
	Pool  *Pool
	N     int32     // 1 for the first attempt
	Start time.Time // when the slot was asked for
	Cand  *policy.Candidate
	// Policy is the ranking policy's name.
	Policy string
	// Streamed is the tokens already delivered to the client before it.
	Streamed int32
	// Op is the call's gen_ai.operation.name, Model its model.
	Op, Model string
	// Output is the tokens the attempt itself produced (its usage; for a
	// broken stream, those delivered before it broke).
	Output int32
	// Took is how long the backend call ran (set before AttemptDone); TTFT
	// how long its first chunk took (streams; 0 when none came).
	Took, TTFT time.Duration
	// Busy is the pool's share of its limit in use as the attempt began, it included.
	Busy float64
	// Span is the observer's handle for the attempt (telemetry's trace span).
	Span any
}

// AttemptFunc runs one attempt of a call on pool p. resume, when not nil,
// is what earlier attempts already streamed to the client: the backend must
// continue from it. started, when not nil, is called once the backend's
// first chunk arrived: it ends the attempt timeout, since from then on the
// stream is bounded by the client's deadline alone. It returns the usage to
// settle the reservation with (the zero Usage when the backend reported
// none) and the backend's error, a *BackendError where the backend gave a
// status.
type AttemptFunc func(ctx context.Context, p *Pool, resume *Resume, started func()) (Usage, error)

// decision is one call's scratch for ranking: recycled across calls.
type decision struct {
	views []policy.PoolView
	reps  []policy.Reported // the views' load reports
	dec   policy.Decision
	att   Attempt // the attempt under way
}

// decide snapshots the pools serving the call's model and ranks them.
func (d *Dispatcher) decide(g *Generation, req *Request, pol policy.Policy, sc *decision) {
	now := d.clock.Now()
	pools := g.ForModel(req.Model)
	if cap(sc.views) < len(pools) {
		sc.views = make([]policy.PoolView, len(pools))
		sc.reps = make([]policy.Reported, len(pools))
	}
	sc.views, sc.reps = sc.views[:len(pools)], sc.reps[:len(pools)]
	for i, p := range pools {
		p.viewInto(&sc.views[i], &sc.reps[i], now)
	}
	policy.DecideInto(&sc.dec, pol, &req.Routing, sc.views, g.Env)
}

// Run takes an admitted call (req under generation g) through the request
// path and returns the route taken. stream is nil for unary calls; for a
// stream, do records what reached the client in it. On success
// req.InputTokens is the input the client is charged.
func (d *Dispatcher) Run(ctx context.Context, g *Generation, req *Request, stream *Stream, do AttemptFunc) (Route, error) {
	d.budget.call()
	pol := d.policy()
	req.Routing.Explain = d.obs.Explain(ctx)
	if dl, ok := ctx.Deadline(); ok {
		// The client's deadline is wall time, whatever clock the router runs on.
		req.Routing.Deadline = remaining(dl)
	}
	route := Route{Policy: pol.Name()}
	sc, _ := d.scratch.Get().(*decision)
	if sc == nil {
		sc = &decision{}
	}
	defer d.scratch.Put(sc)
	prio := req.Routing.Priority
	var failed []bool // by pool index: pools that really failed this call
	var lastErr error
	rf := g.Fleet.Routing
	waitUntil := d.clock.Now().Add(rf.QueueMaxWait.Std())
	waited := false // the call has been in the wait queue
	pools := g.ForModel(req.Model)
	for {
		d.decide(g, req, pol, sc)
		dec := &sc.dec
		if len(dec.Ranked) == 0 {
			return route, noEligible(req, dec)
		}
		var shortage error
		cannotContinue := ""              // a pool skipped because it cannot resume the stream
		lacking, lacks := "", Features(0) // a pool skipped because it lacks a feature the call needs
		// Next draws the order as the loop goes: usually only the first.
		for cand := dec.Next(); cand != nil; cand = dec.Next() {
			if stream != nil && stream.toolCall {
				return route, toolCallBroken(stream, &route, cmpErr(lastErr, shortage))
			}
			p := pools[cand.Index]
			if failed != nil && failed[p.index] {
				continue
			}
			if miss := req.Needs &^ p.offers; miss != 0 {
				lacking, lacks = p.cfg.Name, miss
				continue
			}
			if stream.Tokens() > 0 && !p.continues {
				// Tokens reached the client: only a pool that honours a
				// continuation can go on without repeating or losing text.
				cannotContinue = p.cfg.Name
				continue
			}
			if int(route.Attempts) >= rf.MaxAttempts {
				return route, &UnavailableError{Tried: route.PoolsTried, Err: fmt.Errorf("%w: gave up after %d attempts: %w", ErrPoolFailed, route.Attempts, cmpErr(lastErr, shortage))}
			}
			if route.Attempts > 0 && !d.budget.canRetry() {
				d.obs.Shed(ctx, ShedRetryBudget, prio)
				return route, &UnavailableError{Tried: route.PoolsTried, Err: fmt.Errorf("%w: retry budget spent: %w", ErrPoolFailed, cmpErr(lastErr, shortage))}
			}
			start := d.clock.Now()
			lease, err := d.acquire(ctx, g, req, p, pol, &sc.views[cand.Index])
			d.obs.Acquired(ctx, p, d.clock.Now().Sub(start), err)
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
			var resume *Resume
			if stream.Tokens() > 0 {
				resume = &Resume{Text: stream.Text(), Tokens: stream.tokens}
			}
			a := &sc.att
			*a = Attempt{Pool: p, N: route.Attempts, Start: start, Cand: cand, Policy: route.Policy, Streamed: stream.Tokens(), Op: req.Operation, Model: req.Model}
			if v := &sc.views[cand.Index]; v.Limit > 0 {
				a.Busy = float64(v.InFlight+1) / float64(v.Limit)
			}
			var usage Usage
			usage, err = d.attempt(ctx, g, req, a, lease, resume, do)
			a.Output = usage.OutputTokens
			oc := classify(ctx, err)
			d.obs.AttemptDone(ctx, a, oc, err)
			if fb, ok := pol.(policy.Feedback); ok {
				r := policy.AttemptResult{Pool: p.cfg.Name, Outcome: oc.policy(), Duration: a.Took, TTFT: a.TTFT,
					InputTokens: req.InputTokens, Busy: a.Busy, Prefix: req.Routing.Prefix}
				r.OutputTokens, r.CachedTokens = int(usage.OutputTokens), int(usage.CachedInputTokens)
				if in := int(usage.InputTokens); in > 0 {
					r.InputTokens = in
				}
				fb.AttemptDone(r)
			}
			switch oc {
			case OutcomeOK:
				p.health.success()
				route.Pool, route.Cloud, route.Region, route.Accelerator = p.cfg.Name, p.cfg.Cloud, p.cfg.Region, p.cfg.Accelerator
				// The edge reports req.InputTokens to the client, the
				// metrics and the log: from here it is the input the client
				// is charged, the backend's count where it gave one.
				req.InputTokens = clientInput(req, a, &usage)
				return route, nil
			case OutcomeClientFault:
				return route, err
			case OutcomeCallerGone:
				if ctx.Err() != nil {
					return route, ctx.Err()
				}
				return route, err
			case OutcomeShortage:
				shortage = err
				continue
			case OutcomeFailure:
				if failed == nil {
					failed = make([]bool, len(g.Pools))
				}
				failed[p.index] = true
				lastErr = fmt.Errorf("pool %s: %w", p.cfg.Name, err)
				if p.health.failure(d.clock.Now(), g.Eject, err) {
					d.obs.Ejected(ctx, p, err)
				}
				continue
			}
		}
		if stream != nil && stream.toolCall {
			return route, toolCallBroken(stream, &route, cmpErr(lastErr, shortage))
		}
		if shortage == nil {
			if lacking != "" && lastErr == nil && cannotContinue == "" {
				return route, unsupported(req, lacks, lacking)
			}
			if cannotContinue != "" {
				return route, &UnavailableError{Tried: route.PoolsTried, Err: fmt.Errorf("%w: stream broke after %d tokens and no other pool can continue it (%s cannot): %w", ErrPoolFailed, stream.Tokens(), cannotContinue, lastErr)}
			}
			// Every eligible pool failed for real.
			return route, &UnavailableError{Tried: route.PoolsTried, Err: fmt.Errorf("%w: every eligible pool failed: %w", ErrPoolFailed, lastErr)}
		}
		// Nothing had headroom: wait briefly, in priority order, then try again.
		if !d.clock.Now().Before(waitUntil) {
			d.obs.Shed(ctx, ShedNoCapacity, prio)
			return route, &ExhaustedError{Err: fmt.Errorf("%w: no pool serving %q has headroom (waited %s): %w", ErrNoCapacity, req.Model, rf.QueueMaxWait.Std(), shortage), RetryAfter: time.Second}
		}
		qstart := d.clock.Now()
		res, err := d.queue.wait(ctx, prio, waitUntil.Sub(qstart), waited)
		waited = true
		d.obs.QueueWaited(ctx, prio, d.clock.Now().Sub(qstart), res, err)
		if err != nil {
			return route, err
		}
		switch res {
		case WaitFull:
			d.obs.Shed(ctx, ShedQueueFull, prio)
			// The queue's length now: a reload may have shortened it since the call came in.
			return route, &ExhaustedError{Err: fmt.Errorf("%w: wait queue full (%d calls): %w", ErrShed, d.queue.maxLength(), shortage), RetryAfter: time.Second}
		case WaitEvicted:
			d.obs.Shed(ctx, ShedEvicted, prio)
			return route, &ExhaustedError{Err: fmt.Errorf("%w: %s call shed for a higher-priority call: %w", ErrShed, prio, shortage), RetryAfter: 2 * time.Second}
		}
	}
}

// attempt runs do on a.Pool holding lease. The slot is released on every
// way out, a panic in the adapter included; the attempt timeout
// (routing.attempt_timeout) bounds the time to the backend's answer (unary)
// or first chunk (streams).
func (d *Dispatcher) attempt(ctx context.Context, g *Generation, req *Request, a *Attempt, lease capacity.Lease, resume *Resume, do AttemptFunc) (usage Usage, err error) {
	defer func() { d.release(a.Pool, lease, req, a, &usage) }()
	actx := d.obs.AttemptStarted(ctx, a)
	var started func()
	timeout := g.Fleet.Routing.AttemptTimeout.Std()
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
				cancel(ErrAttemptTimeout)
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
		firstOnce.Do(func() { a.TTFT = d.clock.Now().Sub(begin) })
		if started != nil {
			started()
		}
	}
	usage, err = do(actx, a.Pool, resume, first)
	a.Took = d.clock.Now().Sub(begin)
	if err != nil && timeout > 0 && ctx.Err() == nil && errors.Is(context.Cause(actx), ErrAttemptTimeout) {
		// The backend's own error is a cancellation; say what happened instead.
		err = fmt.Errorf("pool %s: %w (%s): %v", a.Pool.cfg.Name, ErrAttemptTimeout, timeout, err)
	}
	return usage, err
}

// acquire takes a slot in p for req.
func (d *Dispatcher) acquire(ctx context.Context, g *Generation, req *Request, p *Pool, pol policy.Policy, view *policy.PoolView) (capacity.Lease, error) {
	limit := view.Limit // the config's or an operator's override
	if adv, ok := pol.(policy.LimitAdvisor); ok {
		limit = min(limit, adv.AdvisedLimit(view))
	}
	var tl capacity.Limits
	if req.Tenant != "" {
		tl = g.Tenants.Limits(req.Tenant)
	}
	lease, err := d.store.Acquire(ctx, capacity.Reservation{
		ID:   req.ID,
		Pool: p.cfg.Name,
		Limits: capacity.Limits{
			MaxConcurrent: limit, RequestsPerMinute: p.cfg.Limits.RequestsPerMinute, TokensPerMinute: p.cfg.Limits.TokensPerMinute,
		},
		Tenant:       req.Tenant,
		TenantLimits: tl,
		Tokens:       int64(req.InputTokens) + int64(req.MaxTokens),
	})
	if err != nil {
		return lease, fmt.Errorf("pool %s: %w", p.cfg.Name, err)
	}
	p.acquired()
	return lease, nil
}

// release returns the slot and settles tokens; always paired with acquire.
// The charge is what the attempt's pool processed (see fillInput): its
// input, the router's estimate where it reported none, plus its output.
func (d *Dispatcher) release(p *Pool, l capacity.Lease, req *Request, a *Attempt, u *Usage) {
	fillInput(req, a, u)
	d.store.Release(l, int64(u.InputTokens)+int64(u.OutputTokens))
	p.released()
	d.queue.wake()
}

// Usage accounting. A backend reports the tokens its server processed; the
// router's estimate (4 bytes a token) stands in only where it reported
// none. Docs: architecture.md, "Usage: what is counted".
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
func fillInput(req *Request, a *Attempt, u *Usage) {
	if u.InputTokens <= 0 {
		u.InputTokens = int32(req.InputTokens) + a.Streamed
	}
}

// clientInput is the input the client is charged for the attempt that
// served the call (u is its usage, filled by fillInput): its reported input
// less the continuation prefix the router re-sent, or the router's
// estimate when that leaves nothing or the backend reported no usage.
func clientInput(req *Request, a *Attempt, u *Usage) int {
	if in := u.InputTokens - a.Streamed; in > 0 {
		return int(in)
	}
	return req.InputTokens
}

// cmpErr is the first non-nil error.
func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func noEligible(req *Request, dec *policy.Decision) error {
	reasons := make([]string, 0, len(dec.Skipped))
	for _, sk := range dec.Skipped {
		if sk.Skip == policy.SkipModel {
			continue
		}
		reasons = append(reasons, sk.Pool+": "+sk.Describe(&req.Routing))
	}
	what := fmt.Sprintf("model %q", req.Model)
	if req.Routing.Residency != "" {
		what += fmt.Sprintf(" with residency %q", req.Routing.Residency)
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no pool serves it")
	}
	return &UnavailableError{Err: fmt.Errorf("%w for %s (%s)", ErrNoEligiblePool, what, strings.Join(reasons, "; "))}
}

// unsupported is the error when every pool serving the model lacks a
// feature the call needs (missing: what the last such pool lacked).
func unsupported(req *Request, missing Features, pool string) error {
	return Invalid(missing.field(), "no pool serving model %q supports %s (pool %s's adapter does not pass it on; docs/backends.md lists what each server kind supports)", req.Model, missing.what(), pool)
}

// toolCallBroken is the end of a stream that broke after it began a tool
// call: arguments are never spliced from two pools.
func toolCallBroken(s *Stream, route *Route, lastErr error) error {
	return &UnavailableError{Tried: route.PoolsTried, Err: fmt.Errorf("%w: stream broke in the middle of a tool call after %d tokens; a tool call is never continued on another pool: %w", ErrPoolFailed, s.tokens, lastErr)}
}

// Tee is an Observer that tells each of obs in turn (nil ones skipped).
func Tee(obs ...Observer) Observer {
	var t tee
	for _, o := range obs {
		if o != nil {
			t = append(t, o)
		}
	}
	if len(t) == 1 {
		return t[0]
	}
	return t
}

type tee []Observer

func (t tee) Explain(ctx context.Context) bool {
	for _, o := range t {
		if o.Explain(ctx) {
			return true
		}
	}
	return false
}

func (t tee) Acquired(ctx context.Context, p *Pool, took time.Duration, err error) {
	for _, o := range t {
		o.Acquired(ctx, p, took, err)
	}
}

func (t tee) AttemptStarted(ctx context.Context, a *Attempt) context.Context {
	for _, o := range t {
		ctx = o.AttemptStarted(ctx, a)
	}
	return ctx
}

func (t tee) AttemptDone(ctx context.Context, a *Attempt, oc Outcome, err error) {
	for _, o := range t {
		o.AttemptDone(ctx, a, oc, err)
	}
}

func (t tee) Ejected(ctx context.Context, p *Pool, err error) {
	for _, o := range t {
		o.Ejected(ctx, p, err)
	}
}

func (t tee) Shed(ctx context.Context, r ShedReason, prio priority.Class) {
	for _, o := range t {
		o.Shed(ctx, r, prio)
	}
}

func (t tee) QueueWaited(ctx context.Context, prio priority.Class, took time.Duration, res WaitResult, err error) {
	for _, o := range t {
		o.QueueWaited(ctx, prio, took, res, err)
	}
}
