package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/telemetry"
)

// RPC names for the request metrics' rpc label.
const (
	rpcGenerate       = "generate"
	rpcGenerateStream = "generate_stream"
)

// knownModel returns the request's model when the fleet serves it, so that
// metric labels never carry arbitrary client input.
func (s *Server) knownModel(req *pb.GenerateRequest) string {
	if m, ok := s.state.Load().fleet.Model(req.GetModel()); ok {
		return m.Name
	}
	return ""
}

// call is one admitted client call.
type call struct {
	req    *pb.GenerateRequest
	model  string
	tenant string
	// inputTokens is the estimated prompt size.
	inputTokens int
	preq        policy.Request
	state       *fleetState
}

// admit authenticates the caller, validates the request and resolves its
// model. Authentication comes first: an unknown caller learns nothing about
// the fleet (not even whether a model exists).
func (s *Server) admit(ctx context.Context, req *pb.GenerateRequest) (*call, error) {
	st := s.state.Load()
	tenant, err := s.authenticate(ctx, st)
	if err != nil {
		return nil, err
	}
	if req.GetModel() == "" {
		return nil, invalid("model", "required")
	}
	m, ok := st.fleet.Model(req.GetModel())
	if !ok {
		return nil, fmt.Errorf("%w %s: see ListModels", errUnknownModel, echo(req.GetModel()))
	}
	if err := validateRequest(req, m); err != nil {
		return nil, err
	}
	h := req.GetRouting()
	req = proto.Clone(req).(*pb.GenerateRequest)
	if req.RequestId == "" {
		req.RequestId = randomID()
	}
	if req.GetRouting().GetCallerRegion() == "" && s.opts.Region != "" {
		// Backends (and the simulator's network model) see where the call came from.
		if req.Routing == nil {
			req.Routing = &pb.RoutingHints{}
		}
		req.Routing.CallerRegion = s.opts.Region
	}
	return &call{
		req:         req,
		model:       m.Name,
		tenant:      tenant,
		inputTokens: backends.EstimateInputTokens(req),
		state:       st,
		preq: policy.Request{
			Model: m.Name, Priority: req.GetPriority(), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
			PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(),
		},
	}, nil
}

// attemptFunc runs one attempt on a pool. sent reports how many tokens were
// already delivered to the client (streams), so the router knows whether a
// retry is still invisible to the client.
type attemptFunc func(ctx context.Context, p *pool, req *pb.GenerateRequest) (usage *pb.Usage, err error)

// progress tracks what a stream delivered to the client.
type progress struct {
	text   strings.Builder
	tokens int32
}

// route runs the call: rank, reserve, forward, fail over, queue. It returns
// the route taken. prog is nil for unary calls.
func (s *Server) route(ctx context.Context, c *call, prog *progress, do attemptFunc) (*pb.Route, error) {
	s.budget.call()
	pol := s.policy.Load().p
	// Reasons cost a few Sprintfs per pool: only traced (sampled) calls get them.
	c.preq.Explain = trace.SpanFromContext(ctx).IsRecording()
	route := &pb.Route{Policy: pol.Name()}
	failed := map[string]bool{} // pools that really failed this call
	var lastErr error
	rf := c.state.fleet.Routing
	waitUntil := s.clock.Now().Add(rf.QueueMaxWait.Std())
	waited := false // the call has been in the wait queue
	for {
		views := s.views(c.state)
		dec := policy.Decide(pol, &c.preq, views, c.state.env)
		if len(dec.Ranked) == 0 {
			return route, noEligible(c, dec)
		}
		var shortage error
		for _, cand := range dec.Ranked {
			if failed[cand.Pool] {
				continue
			}
			p := c.state.pools[cand.Index]
			if int(route.Attempts) >= rf.MaxAttempts {
				return route, fmt.Errorf("%w: gave up after %d attempts: %w", errPoolFailed, route.Attempts, lastErr)
			}
			if route.Attempts > 0 && !s.budget.canRetry() {
				s.shed(ctx, shedRetryBudget, c.req.GetPriority())
				return route, fmt.Errorf("%w: retry budget spent: %w", errPoolFailed, lastErr)
			}
			start := time.Now()
			lease, err := s.acquire(ctx, c, p, pol, &views[cand.Index])
			s.recordAcquire(ctx, p, start, err)
			if err != nil {
				if ctx.Err() != nil {
					return route, ctx.Err()
				}
				recordNoSlot(ctx, p, err)
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
				s.budget.allowRetry()
			}
			if waited {
				// A queued call got a slot: more may be free (released by other
				// replicas), so the next waiter tries too.
				s.queue.wake()
				waited = false
			}
			route.Attempts++
			route.PoolsTried = append(route.PoolsTried, p.cfg.Name)
			req := c.req
			if prog != nil && prog.tokens > 0 {
				req = proto.Clone(c.req).(*pb.GenerateRequest)
				req.Continuation = &pb.Continuation{GeneratedText: prog.text.String(), GeneratedTokens: prog.tokens}
			}
			actx, span := s.startAttempt(ctx, start, p, route.Attempts, route.Policy, &cand, prog)
			usage, err := do(actx, p, req)
			s.release(p, lease, c, usage)
			oc := classify(ctx, err)
			s.endAttempt(ctx, span, p, oc, err)
			switch oc {
			case outcomeOK:
				p.health.success()
				fillRoute(route, p)
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
				failed[p.cfg.Name] = true
				lastErr = fmt.Errorf("pool %s: %w", p.cfg.Name, err)
				if p.health.failure(s.clock.Now(), c.state.ejectP, err) {
					s.log.WarnContext(ctx, "pool ejected", "pool", p.cfg.Name, "err", err)
					s.events.publish("ejected", p.cfg.Name, "ejected after consecutive failures: "+err.Error(), "")
				}
				if prog != nil && prog.tokens > 0 && !p.backend.Capabilities().Continuation {
					return route, fmt.Errorf("%w: stream broke after %d tokens and pool %s cannot continue it: %w", errPoolFailed, prog.tokens, p.cfg.Name, err)
				}
				s.log.InfoContext(ctx, "attempt failed, trying another pool", "pool", p.cfg.Name, "err", err, "streamed_tokens", streamed(prog))
				continue
			}
		}
		if shortage == nil {
			// Every eligible pool failed for real.
			return route, fmt.Errorf("%w: every eligible pool failed: %w", errPoolFailed, lastErr)
		}
		// Nothing had headroom: wait briefly, in priority order, then try again.
		if !s.clock.Now().Before(waitUntil) {
			s.shed(ctx, shedNoCapacity, c.req.GetPriority())
			return route, &exhaustedError{err: fmt.Errorf("%w: no pool serving %q has headroom (waited %s): %w", errNoCapacity, c.model, rf.QueueMaxWait.Std(), shortage), retryAfter: time.Second}
		}
		qstart := time.Now()
		res, err := s.queue.wait(ctx, c.req.GetPriority(), waitUntil.Sub(s.clock.Now()), waited)
		waited = true
		s.recordQueueWait(ctx, c.req.GetPriority(), qstart, res, err)
		if err != nil {
			return route, err
		}
		switch res {
		case waitFull:
			s.shed(ctx, shedQueueFull, c.req.GetPriority())
			return route, &exhaustedError{err: fmt.Errorf("%w: wait queue full (%d calls): %w", errShed, rf.QueueMaxLength, shortage), retryAfter: time.Second}
		case waitEvicted:
			s.shed(ctx, shedEvicted, c.req.GetPriority())
			return route, &exhaustedError{err: fmt.Errorf("%w: %s call shed for a higher-priority call: %w", errShed, priorityLabel(c.req.GetPriority()), shortage), retryAfter: 2 * time.Second}
		}
	}
}

func streamed(p *progress) int32 {
	if p == nil {
		return 0
	}
	return p.tokens
}

func priorityLabel(p pb.Priority) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PRIORITY_"))
}

func noEligible(c *call, dec policy.Decision) error {
	reasons := make([]string, 0, len(dec.Skipped))
	for _, sk := range dec.Skipped {
		if strings.HasPrefix(sk.Reason, "does not serve") {
			continue
		}
		reasons = append(reasons, sk.Pool+": "+sk.Reason)
	}
	what := fmt.Sprintf("model %q", c.model)
	if c.preq.Residency != "" {
		what += fmt.Sprintf(" with residency %q", c.preq.Residency)
	}
	return fmt.Errorf("%w for %s (%s)", errNoEligiblePool, what, strings.Join(reasons, "; "))
}

func fillRoute(r *pb.Route, p *pool) {
	r.Pool, r.Cloud, r.Region, r.Accelerator = p.cfg.Name, p.cfg.Cloud, p.cfg.Region, p.cfg.Accelerator
}

// acquire takes a slot in p for c.
func (s *Server) acquire(ctx context.Context, c *call, p *pool, pol policy.Policy, view *policy.PoolView) (capacity.Lease, error) {
	limit := view.Limit // the config's or an operator's override
	if adv, ok := pol.(policy.LimitAdvisor); ok {
		limit = min(limit, adv.AdvisedLimit(view))
	}
	var tl capacity.Limits
	if c.tenant != "" {
		for _, t := range c.state.fleet.Tenants {
			if t.Name == c.tenant {
				tl = capacity.Limits{RequestsPerMinute: t.RequestsPerMinute, TokensPerMinute: t.TokensPerMinute}
			}
		}
	}
	lease, err := s.store.Acquire(ctx, capacity.Reservation{
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
	return lease, nil
}

// release returns the slot and settles tokens; always paired with acquire.
func (s *Server) release(p *pool, l capacity.Lease, c *call, u *pb.Usage) {
	used := int64(c.inputTokens)
	if u != nil {
		used = int64(u.GetInputTokens()) + int64(u.GetOutputTokens())
	}
	s.store.Release(l, used)
	p.local.Add(-1)
	s.queue.wake()
}

// Generate implements pb.InferenceServer.
func (s *Server) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	return s.Complete(ctx, rpcGenerate, req)
}

// GenerateStream implements pb.InferenceServer.
func (s *Server) GenerateStream(req *pb.GenerateRequest, stream grpc.ServerStreamingServer[pb.GenerateChunk]) error {
	return s.CompleteStream(stream.Context(), rpcGenerateStream, req, stream.Send)
}

// Complete runs one unary call for an edge (gRPC Generate, the HTTP front
// door): the same admission, routing, capacity and failover for every edge.
// rpc names the edge in metrics and logs and must be a constant, never client
// input. The caller's credentials travel in ctx as incoming gRPC metadata.
// The error is a gRPC status.
func (s *Server) Complete(ctx context.Context, rpc string, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	start := time.Now()
	c, err := s.admit(ctx, req)
	if err != nil {
		err = toStatus(err)
		s.finishCall(ctx, callStats{rpc: rpc, model: s.knownModel(req), start: start}, err)
		return nil, err
	}
	ctx = telemetry.WithRequestID(ctx, c.req.RequestId)
	var resp *pb.GenerateResponse
	route, err := s.route(ctx, c, nil, func(ctx context.Context, p *pool, req *pb.GenerateRequest) (*pb.Usage, error) {
		r, err := p.backend.Generate(ctx, req)
		if err != nil {
			return nil, err
		}
		resp = r
		return r.GetUsage(), nil
	})
	cs := callStats{rpc: rpc, model: c.model, route: route, start: start, input: int32(c.inputTokens)}
	if err != nil {
		s.log.InfoContext(ctx, "call failed", "model", c.model, "attempts", route.Attempts, "err", err)
		err = toStatus(err)
		s.finishCall(ctx, cs, err)
		return nil, err
	}
	resp.Route = route
	resp.RequestId = c.req.RequestId
	if u := resp.GetUsage(); u != nil {
		cs.input, cs.output = u.GetInputTokens(), u.GetOutputTokens()
	}
	s.finishCall(ctx, cs, nil)
	return resp, nil
}

// CompleteStream runs one streaming call for an edge (gRPC GenerateStream,
// the HTTP front door), calling send for every chunk in order; the last chunk
// carries usage, finish reason and route. rpc is as for Complete. When send
// fails the call stops (the client is gone). The error is a gRPC status.
func (s *Server) CompleteStream(ctx context.Context, rpc string, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	start := time.Now()
	c, err := s.admit(ctx, req)
	if err != nil {
		err = toStatus(err)
		s.finishCall(ctx, callStats{rpc: rpc, model: s.knownModel(req), start: start}, err)
		return err
	}
	ctx = telemetry.WithRequestID(ctx, c.req.RequestId)
	prog := &progress{}
	var firstTok time.Time
	var final *pb.GenerateChunk
	route, err := s.route(ctx, c, prog, func(ctx context.Context, p *pool, req *pb.GenerateRequest) (*pb.Usage, error) {
		before := prog.tokens
		final = nil
		err := p.backend.GenerateStream(ctx, req, func(ch *pb.GenerateChunk) error {
			if ch.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED || ch.GetUsage() != nil {
				// Hold the last chunk back: the route goes on it once the call is done.
				final = ch
				return nil
			}
			if err := send(&pb.GenerateChunk{Text: ch.Text, Tokens: ch.Tokens, RequestId: c.req.RequestId}); err != nil {
				return fmt.Errorf("send to client: %w", context.Canceled)
			}
			if firstTok.IsZero() && ch.Tokens > 0 {
				firstTok = time.Now()
			}
			prog.text.WriteString(ch.Text)
			prog.tokens += ch.Tokens
			return nil
		})
		if err != nil {
			return &pb.Usage{InputTokens: int32(c.inputTokens), OutputTokens: prog.tokens - before}, err
		}
		if final == nil {
			return nil, errors.New("backend ended the stream without a final chunk")
		}
		return final.GetUsage(), nil
	})
	cs := callStats{rpc: rpc, model: c.model, route: route, start: start, firstTok: firstTok, input: int32(c.inputTokens), output: prog.tokens}
	if err != nil {
		s.log.InfoContext(ctx, "stream failed", "model", c.model, "attempts", route.Attempts, "streamed_tokens", prog.tokens, "err", err)
		err = toStatus(err)
		s.finishCall(ctx, cs, err)
		return err
	}
	// The final chunk carries the text it holds, the whole call's usage and the route.
	last := &pb.GenerateChunk{
		Text:         final.GetText(),
		Tokens:       final.GetTokens(),
		FinishReason: final.GetFinishReason(),
		Usage:        &pb.Usage{InputTokens: int32(c.inputTokens), OutputTokens: prog.tokens + final.GetTokens()},
		Route:        route,
		RequestId:    c.req.RequestId,
	}
	err = send(last)
	if firstTok.IsZero() && last.Tokens > 0 {
		firstTok = time.Now()
	}
	cs.firstTok, cs.output = firstTok, last.Usage.OutputTokens
	s.finishCall(ctx, cs, toStatus(err))
	return err
}
