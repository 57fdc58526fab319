// Package testfake is a TEST FAKE of the switchyard router for the load
// tester's own tests: it serves switchyard.v1.Inference (streaming a few
// tokens per call, round-robin over made-up pools), Admin and SimControl, and
// records every call it receives and when. It is no simulator: the real
// simulated fleet is backends/sim.
package testfake

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Pool is a made-up pool the fake reports in routes.
type Pool struct{ Name, Cloud, Region, Accelerator string }

// DefaultPools are three pools on three clouds.
var DefaultPools = []Pool{
	{"aws-use1-trn2", "aws", "us-east-1", "trn2"},
	{"gcp-usc1-tpu-v6e", "gcp", "us-central1", "tpu-v6e"},
	{"azure-eastus-b200", "azure", "eastus", "b200"},
}

// Options configures the fake.
type Options struct {
	Model          string // default "fake-model"
	MaxInputTokens int32  // reported by ListModels; default 4096
	// MaxStreamTokens caps tokens streamed per call (default 8) to keep tests fast.
	MaxStreamTokens int
	// Block, when set, holds every Generate/GenerateStream call until it is closed.
	Block chan struct{}
	// Token is the admin bearer token expected (default "test-token").
	Token string
	Pools []Pool
}

// Call is one Inference call as received.
type Call struct {
	At           time.Time
	RequestID    string
	PromptTokens int // backends.EstimateInputTokens(req)
	MaxTokens    int32
	Priority     pb.Priority
	Pool         string
}

// Control is one Admin or SimControl call as received.
type Control struct {
	At     time.Time
	Method string // e.g. "InjectFault", "Drain", "SetPolicy"
	Detail string // the request in text form
	Auth   string // the authorization header
}

// Server is the running fake.
type Server struct {
	pb.UnimplementedInferenceServer
	pb.UnimplementedAdminServer
	pb.UnimplementedSimControlServer

	Addr string
	opts Options

	mu       sync.Mutex
	calls    []Call
	controls []Control
	next     int
	done     int
	policy   string
	pools    map[string]*pb.PoolStatus
	received chan struct{} // signalled on each Inference call (non-blocking)
}

// Start serves the fake on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Model == "" {
		o.Model = "fake-model"
	}
	if o.MaxInputTokens == 0 {
		o.MaxInputTokens = 4096
	}
	if o.MaxStreamTokens == 0 {
		o.MaxStreamTokens = 8
	}
	if o.Token == "" {
		o.Token = "test-token"
	}
	if len(o.Pools) == 0 {
		o.Pools = DefaultPools
	}
	s := &Server{opts: o, policy: "switchyard", pools: map[string]*pb.PoolStatus{}, received: make(chan struct{}, 1<<16)}
	for _, p := range o.Pools {
		s.pools[p.Name] = &pb.PoolStatus{Name: p.Name, Cloud: p.Cloud, Region: p.Region, Accelerator: p.Accelerator, Weight: 1, Limit: 10}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterInferenceServer(g, s)
	pb.RegisterAdminServer(g, s)
	pb.RegisterSimControlServer(g, s)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	s.Addr = lis.Addr().String()
	return s
}

// Calls returns the Inference calls received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Completed is how many Inference calls have returned.
func (s *Server) Completed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Controls returns the Admin and SimControl calls received so far.
func (s *Server) Controls() []Control {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Control(nil), s.controls...)
}

// WaitCalls waits until n Inference calls have arrived or timeout passes.
func (s *Server) WaitCalls(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		have := len(s.calls)
		s.mu.Unlock()
		if have >= n {
			return true
		}
		select {
		case <-s.received:
		case <-deadline:
			return false
		}
	}
}

func (s *Server) admit(ctx context.Context, req *pb.GenerateRequest) (Pool, error) {
	if req.GetModel() != s.opts.Model {
		return Pool{}, status.Errorf(codes.NotFound, "unknown model %q", req.GetModel())
	}
	if req.GetMaxTokens() < 1 {
		return Pool{}, status.Error(codes.InvalidArgument, "max_tokens must be >= 1")
	}
	s.mu.Lock()
	p := s.opts.Pools[s.next%len(s.opts.Pools)]
	s.next++
	s.calls = append(s.calls, Call{
		At: time.Now(), RequestID: req.GetRequestId(), PromptTokens: backends.EstimateInputTokens(req),
		MaxTokens: req.GetMaxTokens(), Priority: req.GetPriority(), Pool: p.Name,
	})
	s.mu.Unlock()
	select {
	case s.received <- struct{}{}:
	default:
	}
	if s.opts.Block != nil {
		select {
		case <-s.opts.Block:
		case <-ctx.Done():
			return Pool{}, status.FromContextError(ctx.Err()).Err()
		}
	}
	return p, nil
}

func (s *Server) finish() {
	s.mu.Lock()
	s.done++
	s.mu.Unlock()
}

func route(p Pool) *pb.Route {
	return &pb.Route{Pool: p.Name, Cloud: p.Cloud, Region: p.Region, Accelerator: p.Accelerator, Attempts: 1, Policy: "fake"}
}

// Generate implements Inference.
func (s *Server) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	defer s.finish()
	p, err := s.admit(ctx, req)
	if err != nil {
		return nil, err
	}
	n := min(int(req.GetMaxTokens()), s.opts.MaxStreamTokens)
	return &pb.GenerateResponse{Text: "tok ", Usage: &pb.Usage{OutputTokens: int32(n)}, Route: route(p), RequestId: req.GetRequestId()}, nil
}

// GenerateStream implements Inference: one token per chunk, route in the last.
func (s *Server) GenerateStream(req *pb.GenerateRequest, stream grpc.ServerStreamingServer[pb.GenerateChunk]) error {
	defer s.finish()
	p, err := s.admit(stream.Context(), req)
	if err != nil {
		return err
	}
	n := min(int(req.GetMaxTokens()), s.opts.MaxStreamTokens)
	for i := 0; i < n; i++ {
		c := &pb.GenerateChunk{Text: "tok ", Tokens: 1, RequestId: req.GetRequestId()}
		if i == n-1 {
			c.Usage = &pb.Usage{InputTokens: int32(backends.EstimateInputTokens(req)), OutputTokens: int32(n)}
			c.FinishReason = pb.FinishReason_FINISH_REASON_LENGTH
			c.Route = route(p)
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

// ListModels implements Inference.
func (s *Server) ListModels(context.Context, *pb.ListModelsRequest) (*pb.ListModelsResponse, error) {
	return &pb.ListModelsResponse{Models: []*pb.Model{{Name: s.opts.Model, MaxInputTokens: s.opts.MaxInputTokens, MaxOutputTokens: 2048}}}, nil
}

func (s *Server) record(ctx context.Context, method string, req fmt.Stringer, admin bool) error {
	auth := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("authorization")) > 0 {
		auth = md.Get("authorization")[0]
	}
	s.mu.Lock()
	s.controls = append(s.controls, Control{At: time.Now(), Method: method, Detail: req.String(), Auth: auth})
	s.mu.Unlock()
	if admin && auth != "Bearer "+s.opts.Token {
		return status.Error(codes.Unauthenticated, "bad or missing bearer token")
	}
	return nil
}

// InjectFault implements SimControl.
func (s *Server) InjectFault(ctx context.Context, r *pb.InjectFaultRequest) (*pb.InjectFaultResponse, error) {
	return &pb.InjectFaultResponse{Pools: []string{r.GetFault().GetPool()}}, s.record(ctx, "InjectFault", r, false)
}

// ClearFaults implements SimControl.
func (s *Server) ClearFaults(ctx context.Context, r *pb.ClearFaultsRequest) (*pb.ClearFaultsResponse, error) {
	return &pb.ClearFaultsResponse{}, s.record(ctx, "ClearFaults", r, false)
}

func (s *Server) pool(name string) (*pb.PoolStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no pool %q", name)
	}
	return p, nil
}

// ListPools implements Admin.
func (s *Server) ListPools(ctx context.Context, r *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
	if err := s.record(ctx, "ListPools", r, true); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.ListPoolsResponse{Policy: s.policy}
	for _, p := range s.opts.Pools {
		resp.Pools = append(resp.Pools, s.pools[p.Name])
	}
	return resp, nil
}

// Drain implements Admin.
func (s *Server) Drain(ctx context.Context, r *pb.DrainRequest) (*pb.DrainResponse, error) {
	if err := s.record(ctx, "Drain", r, true); err != nil {
		return nil, err
	}
	p, err := s.pool(r.GetPool())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p.Drained = true
	s.mu.Unlock()
	return &pb.DrainResponse{Pool: p, Applied: true, FleetHasHeadroom: true}, nil
}

// Resume implements Admin.
func (s *Server) Resume(ctx context.Context, r *pb.ResumeRequest) (*pb.PoolChangeResponse, error) {
	if err := s.record(ctx, "Resume", r, true); err != nil {
		return nil, err
	}
	p, err := s.pool(r.GetPool())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p.Drained = false
	s.mu.Unlock()
	return &pb.PoolChangeResponse{Pool: p}, nil
}

// SetWeight implements Admin.
func (s *Server) SetWeight(ctx context.Context, r *pb.SetWeightRequest) (*pb.PoolChangeResponse, error) {
	if err := s.record(ctx, "SetWeight", r, true); err != nil {
		return nil, err
	}
	p, err := s.pool(r.GetPool())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	p.Weight = r.GetWeight()
	s.mu.Unlock()
	return &pb.PoolChangeResponse{Pool: p}, nil
}

// SetCapacityOverride implements Admin.
func (s *Server) SetCapacityOverride(ctx context.Context, r *pb.SetCapacityOverrideRequest) (*pb.PoolChangeResponse, error) {
	if err := s.record(ctx, "SetCapacityOverride", r, true); err != nil {
		return nil, err
	}
	p, err := s.pool(r.GetPool())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if r.GetClear() {
		p.CapacityOverride = 0
	} else {
		p.CapacityOverride = r.GetLimit()
	}
	s.mu.Unlock()
	return &pb.PoolChangeResponse{Pool: p}, nil
}

// SetPolicy implements Admin.
func (s *Server) SetPolicy(ctx context.Context, r *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	if err := s.record(ctx, "SetPolicy", r, true); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.policy
	s.policy = r.GetPolicy()
	return &pb.SetPolicyResponse{Previous: prev, Policy: s.policy}, nil
}
