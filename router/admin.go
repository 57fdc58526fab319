package router

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Admin is the operator control plane on gRPC (switchyard.v1.Admin): each
// method reads the caller's "authorization: Bearer <token>" and calls the
// Operator interface, which checks the token's role (viewer to read,
// operator to change; with no token configured every call is refused), and
// maps its errors with toStatus. Built once per server.
type Admin struct {
	pb.UnimplementedAdminServer
	op Operator
}

var _ pb.AdminServer = (*Admin)(nil)

// NewAdmin returns the Admin service over op.
func NewAdmin(op Operator) *Admin { return &Admin{op: op} }

// RegisterAdmin adds the Admin service to a gRPC server.
func (s *Server) RegisterAdmin(gs *grpc.Server) { pb.RegisterAdminServer(gs, NewAdmin(s.Operator())) }

// adminToken is the admin token of a call: the token of its
// "authorization: Bearer" metadata ("" when it sent none).
func adminToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) > 0 {
		return BearerToken(v[0])
	}
	return "", nil
}

// ListPools implements pb.AdminServer.
func (a *Admin) ListPools(ctx context.Context, _ *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	snap, err := a.op.Snapshot(tok)
	if err != nil {
		return nil, toStatus(err)
	}
	return snap.Fleet, nil
}

// apply makes the change req asks for (ChangeOf).
func (a *Admin) apply(ctx context.Context, req proto.Message) (*Applied, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c, _ := ChangeOf(req) // every caller passes a change request
	applied, err := a.op.Apply(ctx, tok, c)
	return applied, toStatus(err)
}

// SetWeight implements pb.AdminServer.
func (a *Admin) SetWeight(ctx context.Context, req *pb.SetWeightRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// Drain implements pb.AdminServer. A dry run says where the pool's traffic
// would go; a real drain is refused without force when the rest of the fleet
// lacks the headroom to take the pool's current load.
func (a *Admin) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return r.Drain, nil
}

// Resume implements pb.AdminServer.
func (a *Admin) Resume(ctx context.Context, req *pb.ResumeRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// SetCapacityOverride implements pb.AdminServer.
func (a *Admin) SetCapacityOverride(ctx context.Context, req *pb.SetCapacityOverrideRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// SetPolicy implements pb.AdminServer: every replica switches.
func (a *Admin) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.SetPolicyResponse{Previous: r.Previous, Policy: r.Policy}, nil
}

// ExplainRoute implements pb.AdminServer: the ranked candidates for a
// hypothetical request, with the reason each was chosen or skipped.
func (a *Admin) ExplainRoute(ctx context.Context, req *pb.ExplainRouteRequest) (*pb.ExplainRouteResponse, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp, err := a.op.Explain(tok, req.GetRequest())
	return resp, toStatus(err)
}

// ListAudit implements pb.AdminServer.
func (a *Admin) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	entries, err := a.op.Audit(ctx, tok, int(req.GetLimit()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ListAuditResponse{Entries: entries}, nil
}

// WatchEvents implements pb.AdminServer.
func (a *Admin) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	tok, err := adminToken(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	w, err := a.op.Watch(stream.Context(), tok, int(req.GetRecent()))
	if err != nil {
		return toStatus(err)
	}
	defer w.Close()
	for {
		select {
		case <-w.Done():
			return toStatus(w.Err())
		case ev := <-w.Events():
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
