package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// knownModel returns the request's model when the fleet serves it, so that
// metric labels never carry arbitrary client input.
func (s *Server) knownModel(req *pb.GenerateRequest) string {
	if m, ok := s.disp.Generation().Fleet.Model(req.GetModel()); ok {
		return m.Name
	}
	return ""
}

// call is one admitted client call: the core's view of it (dispatch.Request,
// under the generation it was admitted with) and the validated request the
// backends are sent.
type call struct {
	req *pb.GenerateRequest
	gen *dispatch.Generation
	dispatch.Request
}

// admit authenticates the caller, validates the request and resolves its
// model. Authentication comes first: an unknown caller learns nothing about
// the fleet (not even whether a model exists).
func (s *Server) admit(caller dispatch.Caller, req *pb.GenerateRequest) (*call, error) {
	g := s.disp.Generation()
	tenant, err := g.Tenants.Authenticate(caller.APIKey)
	if err != nil {
		return nil, err
	}
	if req.GetModel() == "" {
		return nil, invalid("model", "required")
	}
	m, ok := g.Fleet.Model(req.GetModel())
	if !ok {
		return nil, &dispatch.UnknownModelError{Model: echo(req.GetModel())}
	}
	if err := validateRequest(req, m); err != nil {
		return nil, err
	}
	h := req.GetRouting()
	req = proto.Clone(req).(*pb.GenerateRequest)
	if req.RequestId == "" {
		req.RequestId = dispatch.NewRequestID()
	}
	if req.GetRouting().GetCallerRegion() == "" && s.opts.Region != "" {
		// Backends (and the simulator's network model) see where the call came from.
		if req.Routing == nil {
			req.Routing = &pb.RoutingHints{}
		}
		req.Routing.CallerRegion = s.opts.Region
	}
	in := backends.EstimateInputTokens(req)
	needs := requestFeatures(req)
	return &call{
		req: req,
		gen: g,
		Request: dispatch.Request{
			ID: req.RequestId, Tenant: tenant, Model: m.Name, InputTokens: in, MaxTokens: req.GetMaxTokens(),
			Needs: needs, Operation: operation(needs, req),
			Routing: policy.Request{
				Model: m.Name, Priority: priority.FromWire(req.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
				PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(),
				Prefix: prefixKeys(req), PrefixKeyed: h.GetPrefixKey() != "", InputTokens: in, MaxTokens: int(req.GetMaxTokens()),
			},
		},
	}, nil
}

// prefixKeys are the request's prefix-cache keys (policy/prefix.go): the
// client's explicit prefix key when it sent one, else the chained keys of
// the prompt's (or the messages') leading blocks.
func prefixKeys(req *pb.GenerateRequest) []uint64 {
	if k := req.GetRouting().GetPrefixKey(); k != "" {
		return []uint64{policy.SessionPrefix(k)}
	}
	var h policy.PrefixHasher
	if p := req.GetPrompt(); p != "" {
		if len(p) < policy.PrefixBlockBytes {
			return nil
		}
		h.Reset(make([]uint64, 0, min(len(p)/policy.PrefixBlockBytes, policy.MaxPrefixBlocks)))
		h.WriteString(p)
		return h.Keys()
	}
	for _, m := range req.GetMessages() {
		h.WriteString(m.GetRole())
		h.WriteString(": ")
		h.WriteString(m.GetContent())
		h.WriteString("\n")
		if len(h.Keys()) >= policy.MaxPrefixBlocks {
			break
		}
	}
	return h.Keys()
}

// operation is the call's gen_ai.operation.name (OpenTelemetry GenAI
// semantic conventions): chat, text_completion or embeddings.
func operation(needs dispatch.Features, req *pb.GenerateRequest) string {
	switch {
	case needs&dispatch.NeedEmbeddings != 0:
		return "embeddings"
	case len(req.GetMessages()) > 0:
		return "chat"
	}
	return "text_completion"
}

// errMaxTokensPassed stops a backend's stream that went on past the call's
// max_tokens (CompleteStreamAs finishes the call with LENGTH).
var errMaxTokensPassed = errors.New("backend output passed max_tokens")

// CallInfo is what an edge says about a call besides its request.
type CallInfo struct {
	// RPC names the edge in metrics and logs; a constant, never client input.
	RPC string
	// Caller is the credential the edge read off its transport.
	Caller dispatch.Caller
	// OnRoute (streams only), when set, is called when an attempt's first
	// chunk arrives, before anything of it reaches send, with the route so
	// far: the pool serving the call now (name, cloud, region, accelerator),
	// the attempt number and the pools tried up to it. It is called again if
	// the call moves to another pool (failover, continuation), so the last
	// call before the first send names the pool that sends the first token;
	// the final route is still the last chunk's. Called on the goroutine that
	// calls send; it must not block. The HTTP front door uses it to send the
	// route headers with a stream's first token.
	OnRoute func(*pb.Route)
}

// CompleteAs runs one unary call for an edge. The error is the core's
// (dispatch.CodeOf, dispatch.PublicText; a backend's refusal is a
// *dispatch.BackendError): each edge maps it to its own wire.
func (s *Server) CompleteAs(ctx context.Context, ci CallInfo, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	start := s.opts.Clock.Now()
	c, err := s.admit(ci.Caller, req)
	if err != nil {
		s.tel.done(ctx, callStats{rpc: ci.RPC, model: s.knownModel(req), start: start}, err)
		return nil, err
	}
	ctx = s.tel.withCall(ctx, c)
	var resp *pb.GenerateResponse
	route, err := s.disp.Run(ctx, c.gen, &c.Request, nil, func(ctx context.Context, p *dispatch.Pool, _ *dispatch.Resume, _ func()) (dispatch.Usage, error) {
		r, err := backendOf(p).Generate(ctx, c.req)
		if err != nil {
			s.runaway(ctx, p, c, err)
			return dispatch.Usage{}, grpccode.Backend(err)
		}
		if out := r.GetUsage().GetOutputTokens(); out > c.req.GetMaxTokens() {
			// Too late to stop: recorded, so the operator sees the backend
			// ignoring max_tokens (a stream is stopped at it).
			s.tel.overrun(ctx, p, "max_tokens", c.req.GetMaxTokens(), out, nil)
		}
		resp = r
		return usageOf(r.GetUsage()), nil
	})
	cs := callStats{rpc: ci.RPC, model: c.Model, route: &route, start: start, input: int32(c.InputTokens)}
	if err != nil {
		s.log.InfoContext(ctx, "call failed", "model", c.Model, "attempts", route.Attempts, "err", err)
		s.tel.done(ctx, cs, err)
		return nil, err
	}
	resp.Route = pbRoute(&route)
	resp.RequestId = c.ID
	if u := resp.GetUsage(); u != nil {
		// The input the client is charged: the backend's count, or the
		// router's estimate where it reported none.
		u.InputTokens = int32(c.InputTokens)
		cs.input, cs.output, cs.cached = u.GetInputTokens(), u.GetOutputTokens(), u.GetCachedInputTokens()
	}
	s.tel.done(ctx, cs, nil)
	return resp, nil
}

// runaway records a backend whose answer was longer than the call's
// max_tokens can take (the adapter refused it: backends.RunawayError).
func (s *Server) runaway(ctx context.Context, p *dispatch.Pool, c *call, err error) {
	if re := (*backends.RunawayError)(nil); errors.As(err, &re) {
		s.tel.overrun(ctx, p, "bytes", c.req.GetMaxTokens(), 0, err)
	}
}

// usageOf is a backend's usage as the core counts it (zero: none reported).
func usageOf(u *pb.Usage) dispatch.Usage {
	return dispatch.Usage{InputTokens: u.GetInputTokens(), OutputTokens: u.GetOutputTokens(), CachedInputTokens: u.GetCachedInputTokens()}
}

// pbRoute is the route on the wire.
func pbRoute(r *dispatch.Route) *pb.Route {
	return &pb.Route{Policy: r.Policy, Attempts: r.Attempts, PoolsTried: r.PoolsTried,
		Pool: r.Pool, Cloud: r.Cloud, Region: r.Region, Accelerator: r.Accelerator}
}

// CompleteStreamAs runs one streaming call for an edge, calling send for
// every chunk in order; the last chunk carries usage, finish reason and
// route. When send fails the call stops (the client is gone). The error is
// the core's, as for CompleteAs.
func (s *Server) CompleteStreamAs(ctx context.Context, ci CallInfo, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	start := s.opts.Clock.Now()
	c, err := s.admit(ci.Caller, req)
	if err != nil {
		s.tel.done(ctx, callStats{rpc: ci.RPC, model: s.knownModel(req), start: start}, err)
		return err
	}
	ctx = s.tel.withCall(ctx, c)
	if c.Tenant != "" {
		// A reload that removes the caller's key ends the stream.
		var unwatch func()
		key := ci.Caller.APIKey
		ctx, unwatch = s.watchCredential(ctx, func(g *dispatch.Generation) error {
			_, err := g.Tenants.Authenticate(key)
			return err
		})
		defer unwatch()
	}
	stream := &dispatch.Stream{}
	var firstTok time.Time
	var final *pb.GenerateChunk
	var tried []string // for OnRoute: the pools attempts ran on so far
	route, err := s.disp.Run(ctx, c.gen, &c.Request, stream, func(ctx context.Context, p *dispatch.Pool, resume *dispatch.Resume, started func()) (dispatch.Usage, error) {
		before := stream.Tokens()
		final = nil
		announce := ci.OnRoute != nil
		if announce {
			tried = append(tried, p.Name())
		}
		overran := false
		req := c.req
		if resume != nil {
			req = continued(c.req, resume)
		}
		err := backendOf(p).GenerateStream(ctx, req, func(ch *pb.GenerateChunk) error {
			if started != nil {
				started()
			}
			if announce {
				announce = false
				cfg := p.Config()
				ci.OnRoute(&pb.Route{Attempts: int32(len(tried)), PoolsTried: slices.Clone(tried),
					Pool: cfg.Name, Cloud: cfg.Cloud, Region: cfg.Region, Accelerator: cfg.Accelerator})
			}
			if ch.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED || ch.GetUsage() != nil {
				// Hold the last chunk back: the route goes on it once the call is done.
				final = ch
				return nil
			}
			if ch.Tokens > 0 && stream.Tokens() >= c.req.GetMaxTokens() {
				// Output past max_tokens: the backend ignores it. Stop the
				// attempt here and finish the call with LENGTH, never
				// passing on what the client did not ask for.
				overran = true
				return errMaxTokensPassed
			}
			if err := send(&pb.GenerateChunk{Text: ch.Text, Tokens: ch.Tokens, RequestId: c.ID, ToolCalls: ch.ToolCalls, Logprobs: ch.Logprobs}); err != nil {
				return fmt.Errorf("send to client: %w", context.Canceled)
			}
			if firstTok.IsZero() && ch.Tokens > 0 {
				firstTok = s.opts.Clock.Now()
			}
			stream.Delivered(ch.Text, ch.Tokens, len(ch.GetToolCalls()) > 0)
			return nil
		})
		if overran {
			s.tel.overrun(ctx, p, "max_tokens", c.req.GetMaxTokens(), stream.Tokens(), nil)
			final = &pb.GenerateChunk{FinishReason: pb.FinishReason_FINISH_REASON_LENGTH}
			return dispatch.Usage{OutputTokens: stream.Tokens() - before}, nil
		}
		if err != nil {
			s.runaway(ctx, p, c, err)
			return dispatch.Usage{InputTokens: int32(c.InputTokens), OutputTokens: stream.Tokens() - before}, grpccode.Backend(err)
		}
		if final == nil {
			return dispatch.Usage{}, errors.New("backend ended the stream without a final chunk")
		}
		return usageOf(final.GetUsage()), nil
	})
	cs := callStats{rpc: ci.RPC, model: c.Model, route: &route, start: start, firstTok: firstTok, input: int32(c.InputTokens), output: stream.Tokens()}
	if rerr := revokedCause(ctx); err != nil && rerr != nil {
		err = rerr // the stream was cut because its key was removed
	}
	if err != nil {
		s.log.InfoContext(ctx, "stream failed", "model", c.Model, "attempts", route.Attempts, "streamed_tokens", stream.Tokens(), "err", err)
		s.tel.done(ctx, cs, err)
		return err
	}
	// The final chunk carries the text it holds, the whole call's usage and the route.
	last := &pb.GenerateChunk{
		Text:         final.GetText(),
		ToolCalls:    final.GetToolCalls(),
		Logprobs:     final.GetLogprobs(),
		Tokens:       final.GetTokens(),
		FinishReason: final.GetFinishReason(),
		Usage: &pb.Usage{InputTokens: int32(c.InputTokens), OutputTokens: stream.Tokens() + final.GetTokens(),
			CachedInputTokens: min(final.GetUsage().GetCachedInputTokens(), int32(c.InputTokens))},
		Route:     pbRoute(&route),
		RequestId: c.ID,
	}
	err = send(last)
	if firstTok.IsZero() && last.Tokens > 0 {
		firstTok = s.opts.Clock.Now()
	}
	cs.firstTok, cs.output, cs.cached = firstTok, last.Usage.OutputTokens, last.Usage.CachedInputTokens
	s.tel.done(ctx, cs, err)
	return err
}

// continued is the request for an attempt that resumes a stream after
// resume's tokens reached the client: the client's request with a
// continuation holding everything generated so far (a continuation the
// client itself sent, then what this call streamed).
func continued(req *pb.GenerateRequest, resume *dispatch.Resume) *pb.GenerateRequest {
	r := proto.Clone(req).(*pb.GenerateRequest)
	prev := req.GetContinuation()
	r.Continuation = &pb.Continuation{
		GeneratedText:   prev.GetGeneratedText() + resume.Text,
		GeneratedTokens: prev.GetGeneratedTokens() + resume.Tokens,
	}
	return r
}
