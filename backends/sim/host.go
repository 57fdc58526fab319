package sim

import (
	"context"
	"slices"
	"sort"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Host holds simulated pools by name and serves switchyard.v1.SimControl
// for them. Both switchyard-sim and the router (for pools built by the "sim"
// adapter) expose one.
//
// Concurrency: safe for concurrent use. mu guards only the map; pool methods
// are called on a snapshot with mu released, so a Host lock is never held
// while a Pool lock is taken.
type Host struct {
	pb.UnimplementedSimControlServer

	mu    sync.RWMutex
	pools map[string]*Pool
}

var _ pb.SimControlServer = (*Host)(nil)

// NewHost returns an empty host.
func NewHost() *Host { return &Host{pools: map[string]*Pool{}} }

// Add hosts p under its name. A pool already hosted under that name is
// replaced (as when the router rebuilds a pool on config reload) and its
// fault carries over to p, so an injected shortage survives the rebuild.
// When p is closed later it leaves the host by itself.
func (h *Host) Add(p *Pool) (replaced bool) {
	h.mu.Lock()
	old, replaced := h.pools[p.Name()]
	h.pools[p.Name()] = p
	h.mu.Unlock()
	if replaced && old != p {
		if f := old.Fault(); isFaulty(f) {
			_ = p.SetFault(f) // validated when it was set on old
		}
	}
	if closed := p.setHost(h); closed {
		h.removeIf(p)
	}
	return replaced
}

// Pool returns a hosted pool by name.
func (h *Host) Pool(name string) (*Pool, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	p, ok := h.pools[name]
	return p, ok
}

// Pools returns the hosted pools sorted by name.
func (h *Host) Pools() []*Pool {
	h.mu.RLock()
	out := make([]*Pool, 0, len(h.pools))
	for _, p := range h.pools {
		out = append(out, p)
	}
	h.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// removeIf drops p if it is still the pool hosted under its name.
func (h *Host) removeIf(p *Pool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pools[p.Name()] == p {
		delete(h.pools, p.Name())
	}
}

// targets resolves a pool name ("" = every hosted pool).
func (h *Host) targets(name string) ([]*Pool, error) {
	if name == "" {
		return h.Pools(), nil
	}
	p, ok := h.Pool(name)
	if !ok {
		h.mu.RLock()
		known := make([]string, 0, len(h.pools))
		for n := range h.pools {
			known = append(known, n)
		}
		h.mu.RUnlock()
		slices.Sort(known)
		return nil, status.Errorf(codes.NotFound, "no simulated pool %q here (hosted: %v)", name, known)
	}
	return []*Pool{p}, nil
}

// InjectFault sets the fault on one pool, or on every hosted pool when
// fault.pool is empty. The fault replaces any earlier one on those pools.
func (h *Host) InjectFault(_ context.Context, req *pb.InjectFaultRequest) (*pb.InjectFaultResponse, error) {
	f := req.GetFault()
	if err := ValidateFault(f); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pools, err := h.targets(f.GetPool())
	if err != nil {
		return nil, err
	}
	resp := &pb.InjectFaultResponse{}
	for _, p := range pools {
		if err := p.SetFault(f); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		resp.Pools = append(resp.Pools, p.Name())
	}
	return resp, nil
}

// ClearFaults clears the fault on one pool, or on every pool when pool is empty.
func (h *Host) ClearFaults(_ context.Context, req *pb.ClearFaultsRequest) (*pb.ClearFaultsResponse, error) {
	pools, err := h.targets(req.GetPool())
	if err != nil {
		return nil, err
	}
	resp := &pb.ClearFaultsResponse{}
	for _, p := range pools {
		p.ClearFault()
		resp.Pools = append(resp.Pools, p.Name())
	}
	return resp, nil
}

// SimStats reports every hosted pool, sorted by name.
func (h *Host) SimStats(context.Context, *pb.SimStatsRequest) (*pb.SimStatsResponse, error) {
	resp := &pb.SimStatsResponse{}
	for _, p := range h.Pools() {
		resp.Pools = append(resp.Pools, p.Stats().Proto())
	}
	return resp, nil
}

func isFaulty(f *pb.Fault) bool {
	return f.GetOutage() || f.GetCapacityLoss() != 0 || f.GetSlowdown() != 0 || f.GetErrorRate() != 0
}

// InferenceServer exposes one Pool as switchyard.v1.Inference, the way a
// real native backend would serve it (switchyard-sim registers one per
// simulated pool). It is stateless beyond the pool and safe for concurrent use.
type InferenceServer struct {
	pb.UnimplementedInferenceServer
	pool *Pool
}

var _ pb.InferenceServer = (*InferenceServer)(nil)

// NewInferenceServer adapts p to the Inference service.
func NewInferenceServer(p *Pool) *InferenceServer { return &InferenceServer{pool: p} }

// loadMD is the pool's load report as gRPC metadata (backends.LoadHeader).
func (s *InferenceServer) loadMD() metadata.MD {
	l, _ := s.pool.Load()
	return metadata.Pairs(backends.LoadHeader, backends.FormatLoad(l))
}

// Generate serves a unary completion from the pool. The load report goes
// out in the header (at arrival) and the trailer (at the end).
func (s *InferenceServer) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	_ = grpc.SendHeader(ctx, s.loadMD())
	defer func() { _ = grpc.SetTrailer(ctx, s.loadMD()) }()
	return s.pool.Generate(ctx, req)
}

// GenerateStream streams a completion from the pool, with the load report
// in the header and the trailer.
func (s *InferenceServer) GenerateStream(req *pb.GenerateRequest, stream pb.Inference_GenerateStreamServer) error {
	_ = stream.SendHeader(s.loadMD())
	defer func() { stream.SetTrailer(s.loadMD()) }()
	return s.pool.GenerateStream(stream.Context(), req, stream.Send)
}

// Embed serves embeddings from the pool, with the load report in the header and the trailer.
func (s *InferenceServer) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	_ = grpc.SendHeader(ctx, s.loadMD())
	defer func() { _ = grpc.SetTrailer(ctx, s.loadMD()) }()
	return s.pool.Embed(ctx, req)
}

// ListModels lists the pool's configured models (none when the pool accepts any name).
func (s *InferenceServer) ListModels(context.Context, *pb.ListModelsRequest) (*pb.ListModelsResponse, error) {
	o := s.pool.Options()
	resp := &pb.ListModelsResponse{}
	for _, m := range o.Models {
		resp.Models = append(resp.Models, &pb.Model{
			Name:            m.Name,
			MaxInputTokens:  clamp32(m.MaxInputTokens),
			MaxOutputTokens: clamp32(m.MaxOutputTokens),
			Placements: []*pb.ModelPlacement{{
				Pool: o.Name, Cloud: o.Cloud, Region: o.Region, Accelerator: s.pool.Profile().Name,
			}},
		})
	}
	return resp, nil
}
