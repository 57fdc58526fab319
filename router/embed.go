package router

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// rpcEmbed is the Embed RPC's label in metrics and logs.
const rpcEmbed = "embed"

// Bounds on an embedding request.
const (
	maxEmbedInputs = 2048
	maxDimensions  = 1 << 16
)

// Embed implements pb.InferenceServer.
func (s *Server) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	return s.EmbedFor(ctx, rpcEmbed, req)
}

// EmbedFor runs one embedding call for an edge (gRPC Embed, the HTTP front
// door's /v1/embeddings): the same authentication, admission, routing,
// capacity, tiers, residency, failover and metrics as generation, on the
// pools serving the model whose adapter serves embeddings
// (backends.Embedder). rpc is as for Complete. The error is a gRPC status.
func (s *Server) EmbedFor(ctx context.Context, rpc string, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	start := s.clock.Now()
	c, err := s.admitEmbed(ctx, req)
	if err != nil {
		err = toStatus(err)
		model := ""
		if m, ok := s.state.Load().fleet.Model(req.GetModel()); ok {
			model = m.Name
		}
		s.tel.done(ctx, callStats{rpc: rpc, model: model, start: start}, err)
		return nil, err
	}
	ctx = withCall(ctx, c)
	ereq := &pb.EmbedRequest{Model: c.model, Input: req.GetInput(), Dimensions: req.GetDimensions(),
		Priority: c.req.GetPriority(), Routing: c.req.GetRouting(), RequestId: c.req.GetRequestId()}
	var resp *pb.EmbedResponse
	route, err := s.disp.run(ctx, c, nil, func(ctx context.Context, p *pool, _ *pb.GenerateRequest, _ func()) (*pb.Usage, error) {
		e, ok := p.backend.(backends.Embedder)
		if !ok {
			// Capabilities said embeddings and the adapter has no Embed: a bug, not the client's.
			return nil, status.Errorf(codes.Internal, "pool %s: adapter claims embeddings but does not implement them", p.cfg.Name)
		}
		r, err := e.Embed(ctx, ereq)
		if err != nil {
			return nil, err
		}
		if len(r.GetEmbeddings()) != len(ereq.GetInput()) {
			return nil, status.Errorf(codes.Unavailable, "pool %s: %d embeddings for %d inputs", p.cfg.Name, len(r.GetEmbeddings()), len(ereq.GetInput()))
		}
		resp = r
		u := r.GetUsage()
		if u == nil {
			u = &pb.Usage{}
		}
		return &pb.Usage{InputTokens: u.GetInputTokens()}, nil
	})
	cs := callStats{rpc: rpc, model: c.model, route: route, start: start, input: int32(c.inputTokens)}
	if err != nil {
		s.log.InfoContext(ctx, "embed failed", "model", c.model, "attempts", route.Attempts, "err", err)
		err = toStatus(err)
		s.tel.done(ctx, cs, err)
		return nil, err
	}
	resp.Route = route
	resp.RequestId = c.req.RequestId
	resp.Usage = &pb.Usage{InputTokens: int32(c.inputTokens)}
	s.tel.done(ctx, cs, nil)
	return resp, nil
}

// admitEmbed is admit for an embedding call: the caller, the model (of kind
// embedding), the inputs and the hints, checked with errors naming the field.
func (s *Server) admitEmbed(ctx context.Context, req *pb.EmbedRequest) (*call, error) {
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
	if m.KindOrDefault() != config.KindEmbedding {
		return nil, invalid("model", "%q is a %s model, not an embedding model (kind: embedding in the fleet file)", m.Name, m.KindOrDefault())
	}
	in := req.GetInput()
	if len(in) == 0 || len(in) > maxEmbedInputs {
		return nil, invalid("input", "1..%d inputs, got %d", maxEmbedInputs, len(in))
	}
	tokens := 0
	for i, x := range in {
		if x == "" {
			return nil, invalid(fmt.Sprintf("input[%d]", i), "must not be empty")
		}
		if len(x) > m.MaxInputTokens*backends.BytesPerToken {
			return nil, invalid(fmt.Sprintf("input[%d]", i), "%d bytes (~%d tokens) exceeds model %q max_input_tokens %d", len(x), backends.EstimateTokens(x), m.Name, m.MaxInputTokens)
		}
		tokens += backends.EstimateTokens(x)
	}
	if d := req.GetDimensions(); d < 0 || d > maxDimensions {
		return nil, invalid("dimensions", "must be in 0..%d, got %d", maxDimensions, d)
	}
	if _, ok := pb.Priority_name[int32(req.GetPriority())]; !ok {
		return nil, invalid("priority", "unknown value %d", req.GetPriority())
	}
	h := req.GetRouting()
	if r := h.GetResidency(); !policy.ValidResidency(r) {
		return nil, invalid("routing.residency", "%s is not one of %q", echo(r), policy.Residencies)
	}
	id := req.GetRequestId()
	if len(id) > maxRequestIDLen || strings.ContainsAny(id, "{}\n\r ") {
		return nil, invalid("request_id", "at most %d characters, no spaces or braces", maxRequestIDLen)
	}
	if id == "" {
		id = randomID()
	}
	routing := h
	if h.GetCallerRegion() == "" && s.opts.Region != "" {
		routing = &pb.RoutingHints{CallerRegion: s.opts.Region, Residency: h.GetResidency(), PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(), PrefixKey: h.GetPrefixKey()}
	}
	// The dispatcher works on a GenerateRequest: this one carries the
	// routing fields only (no output tokens to reserve).
	greq := &pb.GenerateRequest{Model: m.Name, Priority: req.GetPriority(), Routing: routing, RequestId: id}
	return &call{
		req:         greq,
		model:       m.Name,
		tenant:      tenant,
		inputTokens: tokens,
		state:       st,
		needs:       needEmbeddings,
		preq: policy.Request{
			Model: m.Name, Priority: priority.FromWire(req.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
			PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(),
		},
	}, nil
}
