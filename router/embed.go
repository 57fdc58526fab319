package router

import (
	"cmp"
	"context"
	"fmt"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Bounds on an embedding request.
const (
	maxEmbedInputs = 2048
	maxDimensions  = 1 << 16
)

// EmbedAs runs one embedding call for an edge (gRPC Embed, the HTTP front
// door's /v1/embeddings): the same authentication, admission, routing,
// capacity, tiers, residency, failover and metrics as generation, on the
// pools serving the model whose adapter serves embeddings
// (backends.Embedder). The error is the core's, as for CompleteAs.
func (s *Server) EmbedAs(ctx context.Context, ci CallInfo, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	start := s.opts.Clock.Now()
	c, ereq, err := s.admitEmbed(ci.Caller, req)
	if err != nil {
		model := ""
		if m, ok := s.disp.Generation().Fleet.Model(req.GetModel()); ok {
			model = m.Name
		}
		s.tel.done(ctx, callStats{rpc: ci.RPC, model: model, start: start}, err)
		return nil, err
	}
	ctx = s.tel.withCall(ctx, c)
	var resp *pb.EmbedResponse
	route, err := s.disp.Run(ctx, c.gen, &c.Request, nil, func(ctx context.Context, p *dispatch.Pool, _ *dispatch.Resume, _ func()) (dispatch.Usage, error) {
		e, ok := backendOf(p).(backends.Embedder)
		if !ok {
			// Capabilities said embeddings and the adapter has no Embed: a bug, not the client's.
			return dispatch.Usage{}, &dispatch.BackendError{Code: dispatch.CodeInternal, Status: "Internal",
				Err: fmt.Errorf("pool %s: adapter claims embeddings but does not implement them", p.Name())}
		}
		r, err := e.Embed(ctx, ereq)
		if err != nil {
			return dispatch.Usage{}, grpccode.Backend(err)
		}
		if len(r.GetEmbeddings()) != len(ereq.GetInput()) {
			return dispatch.Usage{}, &dispatch.BackendError{Code: dispatch.CodeUnavailable, Status: "Unavailable",
				Err: fmt.Errorf("pool %s: %d embeddings for %d inputs", p.Name(), len(r.GetEmbeddings()), len(ereq.GetInput()))}
		}
		resp = r
		return dispatch.Usage{InputTokens: r.GetUsage().GetInputTokens()}, nil
	})
	cs := callStats{rpc: ci.RPC, model: c.Model, route: &route, start: start, input: int32(c.InputTokens)}
	if err != nil {
		s.log.InfoContext(ctx, "embed failed", "model", c.Model, "attempts", route.Attempts, "err", err)
		s.tel.done(ctx, cs, err)
		return nil, err
	}
	resp.Route = pbRoute(&route)
	resp.RequestId = c.ID
	resp.Usage = &pb.Usage{InputTokens: int32(c.InputTokens)}
	s.tel.done(ctx, cs, nil)
	return resp, nil
}

// admitEmbed is admit for an embedding call: the caller, the model (of kind
// embedding), the inputs and the hints, checked with errors naming the
// field. It returns the call and the request the backends are sent.
func (s *Server) admitEmbed(caller dispatch.Caller, req *pb.EmbedRequest) (*call, *pb.EmbedRequest, error) {
	g := s.disp.Generation()
	tenant, err := g.Tenants.Authenticate(caller.APIKey)
	if err != nil {
		return nil, nil, err
	}
	if req.GetModel() == "" {
		return nil, nil, invalid("model", "required")
	}
	m, ok := g.Fleet.Model(req.GetModel())
	if !ok {
		return nil, nil, &dispatch.UnknownModelError{Model: echo(req.GetModel())}
	}
	if m.KindOrDefault() != config.KindEmbedding {
		return nil, nil, invalid("model", "%q is a %s model, not an embedding model (kind: embedding in the fleet file)", m.Name, m.KindOrDefault())
	}
	in := req.GetInput()
	if len(in) == 0 || len(in) > maxEmbedInputs {
		return nil, nil, invalid("input", "1..%d inputs, got %d", maxEmbedInputs, len(in))
	}
	tokens := 0
	for i, x := range in {
		if x == "" {
			return nil, nil, invalid(fmt.Sprintf("input[%d]", i), "must not be empty")
		}
		if len(x) > m.MaxInputTokens*backends.BytesPerToken {
			return nil, nil, invalid(fmt.Sprintf("input[%d]", i), "%d bytes (~%d tokens) exceeds model %q max_input_tokens %d", len(x), backends.EstimateTokens(x), m.Name, m.MaxInputTokens)
		}
		tokens += backends.EstimateTokens(x)
	}
	if d := req.GetDimensions(); d < 0 || d > maxDimensions {
		return nil, nil, invalid("dimensions", "must be in 0..%d, got %d", maxDimensions, d)
	}
	if _, ok := pb.Priority_name[int32(req.GetPriority())]; !ok {
		return nil, nil, invalid("priority", "unknown value %d", req.GetPriority())
	}
	h := req.GetRouting()
	if r := h.GetResidency(); !policy.ValidResidency(r) {
		return nil, nil, invalid("routing.residency", "%s is not one of %q", echo(r), policy.Residencies)
	}
	id := req.GetRequestId()
	if err := dispatch.CheckRequestID("request_id", id); err != nil {
		return nil, nil, err
	}
	if id == "" {
		id = dispatch.NewRequestID()
	}
	routing := h
	if h.GetCallerRegion() == "" && s.opts.Region != "" {
		routing = &pb.RoutingHints{CallerRegion: s.opts.Region, Residency: h.GetResidency(), PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(), PrefixKey: h.GetPrefixKey()}
	}
	ereq := &pb.EmbedRequest{Model: m.Name, Input: in, Dimensions: req.GetDimensions(), Priority: req.GetPriority(), Routing: routing, RequestId: id}
	return &call{
		gen: g,
		Request: dispatch.Request{
			ID: id, Tenant: tenant, Model: m.Name, InputTokens: tokens, Needs: dispatch.NeedEmbeddings, Operation: "embeddings",
			Routing: policy.Request{
				Model: m.Name, Priority: priority.FromWire(req.GetPriority()), CallerRegion: cmp.Or(h.GetCallerRegion(), s.opts.Region), Residency: h.GetResidency(),
				PreferredCloud: h.GetPreferredCloud(), PreferredAccelerator: h.GetPreferredAccelerator(),
			},
		},
	}, ereq, nil
}
