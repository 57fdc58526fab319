package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/policy"
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
	// inputTokens is the router's estimate of the prompt until an attempt
	// succeeds, then the input the client is charged (dispatch.go clientInput:
	// the backend's own count where it reported one).
	inputTokens int
	preq        policy.Request
	state       *fleetState
	// needs are the backend features the call uses (features.go).
	needs features
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
		needs:       requestFeatures(req),
		preq: policy.Request{
			Model: m.Name, Priority: priority.FromWire(req.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
			PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(),
			Prefix: prefixKeys(req), PrefixKeyed: h.GetPrefixKey() != "", InputTokens: backends.EstimateInputTokens(req), MaxTokens: int(req.GetMaxTokens()),
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
func (c *call) operation() string {
	switch {
	case c.needs&needEmbeddings != 0:
		return "embeddings"
	case len(c.req.GetMessages()) > 0:
		return "chat"
	}
	return "text_completion"
}

// errMaxTokensPassed stops a backend's stream that went on past the call's
// max_tokens (CompleteStreamWith finishes the call with LENGTH).
var errMaxTokensPassed = errors.New("backend output passed max_tokens")

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
	start := s.clock.Now()
	c, err := s.admit(ctx, req)
	if err != nil {
		err = toStatus(err)
		s.tel.done(ctx, callStats{rpc: rpc, model: s.knownModel(req), start: start}, err)
		return nil, err
	}
	ctx = withCall(ctx, c)
	var resp *pb.GenerateResponse
	route, err := s.disp.run(ctx, c, nil, func(ctx context.Context, p *pool, req *pb.GenerateRequest, _ func()) (*pb.Usage, error) {
		r, err := p.backend.Generate(ctx, req)
		if err != nil {
			return nil, err
		}
		if out := r.GetUsage().GetOutputTokens(); out > c.req.GetMaxTokens() {
			// Too late to stop: recorded, so the operator sees the backend
			// ignoring max_tokens (a stream is stopped at it).
			s.tel.overrun(ctx, p, "max_tokens", c.req.GetMaxTokens(), out, nil)
		}
		resp = r
		return r.GetUsage(), nil
	})
	cs := callStats{rpc: rpc, model: c.model, route: route, start: start, input: int32(c.inputTokens)}
	if err != nil {
		s.log.InfoContext(ctx, "call failed", "model", c.model, "attempts", route.Attempts, "err", err)
		err = toStatus(err)
		s.tel.done(ctx, cs, err)
		return nil, err
	}
	resp.Route = route
	resp.RequestId = c.req.RequestId
	if u := resp.GetUsage(); u != nil {
		cs.input, cs.output = u.GetInputTokens(), u.GetOutputTokens()
	}
	s.tel.done(ctx, cs, nil)
	return resp, nil
}

// CompleteStream runs one streaming call for an edge (gRPC GenerateStream,
// the HTTP front door), calling send for every chunk in order; the last chunk
// carries usage, finish reason and route. rpc is as for Complete. When send
// fails the call stops (the client is gone). The error is a gRPC status.
func (s *Server) CompleteStream(ctx context.Context, rpc string, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	return s.CompleteStreamWith(ctx, rpc, req, send, StreamOptions{})
}

// StreamOptions are CompleteStreamWith's optional hooks.
type StreamOptions struct {
	// OnRoute, when set, is called when an attempt's first chunk arrives,
	// before anything of it reaches send, with the route so far: the pool
	// serving the call now (name, cloud, region, accelerator), the attempt
	// number and the pools tried up to it. It is called again if the call
	// moves to another pool (failover, continuation), so the last call
	// before the first send names the pool that sends the first token; the
	// final route is still the last chunk's. Called on the goroutine that
	// calls send; it must not block. The HTTP front door uses it to send the
	// route headers with a stream's first token.
	OnRoute func(*pb.Route)
}

// CompleteStreamWith is CompleteStream with hooks (see StreamOptions).
func (s *Server) CompleteStreamWith(ctx context.Context, rpc string, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error, o StreamOptions) error {
	start := s.clock.Now()
	c, err := s.admit(ctx, req)
	if err != nil {
		err = toStatus(err)
		s.tel.done(ctx, callStats{rpc: rpc, model: s.knownModel(req), start: start}, err)
		return err
	}
	ctx = withCall(ctx, c)
	if c.tenant != "" {
		// A reload that removes the caller's key ends the stream.
		var unwatch func()
		authCtx := ctx
		ctx, unwatch = s.watchCredential(ctx, func(st *fleetState) error {
			_, err := s.authenticate(authCtx, st)
			return err
		})
		defer unwatch()
	}
	prog := &progress{}
	var firstTok time.Time
	var final *pb.GenerateChunk
	var tried []string // for OnRoute: the pools attempts ran on so far
	route, err := s.disp.run(ctx, c, prog, func(ctx context.Context, p *pool, req *pb.GenerateRequest, started func()) (*pb.Usage, error) {
		before := prog.tokens
		final = nil
		announce := o.OnRoute != nil
		if announce {
			tried = append(tried, p.cfg.Name)
		}
		overran := false
		err := p.backend.GenerateStream(ctx, req, func(ch *pb.GenerateChunk) error {
			if started != nil {
				started()
			}
			if announce {
				announce = false
				r := &pb.Route{Attempts: int32(len(tried)), PoolsTried: slices.Clone(tried)}
				fillRoute(r, p)
				o.OnRoute(r)
			}
			if ch.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED || ch.GetUsage() != nil {
				// Hold the last chunk back: the route goes on it once the call is done.
				final = ch
				return nil
			}
			if ch.Tokens > 0 && prog.tokens >= c.req.GetMaxTokens() {
				// Output past max_tokens: the backend ignores it. Stop the
				// attempt here and finish the call with LENGTH, never
				// passing on what the client did not ask for.
				overran = true
				return errMaxTokensPassed
			}
			if len(ch.GetToolCalls()) > 0 {
				prog.toolCall = true
			}
			if err := send(&pb.GenerateChunk{Text: ch.Text, Tokens: ch.Tokens, RequestId: c.req.RequestId, ToolCalls: ch.ToolCalls, Logprobs: ch.Logprobs}); err != nil {
				return fmt.Errorf("send to client: %w", context.Canceled)
			}
			if firstTok.IsZero() && ch.Tokens > 0 {
				firstTok = s.clock.Now()
			}
			prog.text.WriteString(ch.Text)
			prog.tokens += ch.Tokens
			return nil
		})
		if overran {
			s.tel.overrun(ctx, p, "max_tokens", c.req.GetMaxTokens(), prog.tokens, nil)
			final = &pb.GenerateChunk{FinishReason: pb.FinishReason_FINISH_REASON_LENGTH}
			return &pb.Usage{OutputTokens: prog.tokens - before}, nil
		}
		if err != nil {
			return &pb.Usage{InputTokens: int32(c.inputTokens), OutputTokens: prog.tokens - before}, err
		}
		if final == nil {
			return nil, errors.New("backend ended the stream without a final chunk")
		}
		return final.GetUsage(), nil
	})
	cs := callStats{rpc: rpc, model: c.model, route: route, start: start, firstTok: firstTok, input: int32(c.inputTokens), output: prog.tokens}
	if rerr := revokedCause(ctx); err != nil && rerr != nil {
		err = rerr // the stream was cut because its key was removed
	}
	if err != nil {
		s.log.InfoContext(ctx, "stream failed", "model", c.model, "attempts", route.Attempts, "streamed_tokens", prog.tokens, "err", err)
		err = toStatus(err)
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
		Usage: &pb.Usage{InputTokens: int32(c.inputTokens), OutputTokens: prog.tokens + final.GetTokens(),
			CachedInputTokens: min(final.GetUsage().GetCachedInputTokens(), int32(c.inputTokens))},
		Route:     route,
		RequestId: c.req.RequestId,
	}
	err = send(last)
	if firstTok.IsZero() && last.Tokens > 0 {
		firstTok = s.clock.Now()
	}
	cs.firstTok, cs.output = firstTok, last.Usage.OutputTokens
	s.tel.done(ctx, cs, toStatus(err))
	return err
}
