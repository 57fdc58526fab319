package grpcedge

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
)

// admin is the operator control plane on gRPC (switchyard.v1.Admin): each
// method reads the caller's "authorization: Bearer <token>" and calls the
// router's Operator interface, which checks the token's role (viewer to
// read, operator to change; with no token configured every call is
// refused), and maps its errors with toStatus. It reaches nothing of the
// router but that interface.
type admin struct {
	pb.UnimplementedAdminServer
	op router.Operator
}

var _ pb.AdminServer = (*admin)(nil)

// NewAdmin returns switchyard.v1.Admin over op (RegisterAdmin serves it).
func NewAdmin(op router.Operator) pb.AdminServer { return &admin{op: op} }

// ListPools implements pb.AdminServer.
func (a *admin) ListPools(ctx context.Context, _ *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
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
func (a *admin) apply(ctx context.Context, req proto.Message) (*router.Applied, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c, _ := router.ChangeOf(req) // every caller passes a change request
	applied, err := a.op.Apply(ctx, tok, c)
	return applied, toStatus(err)
}

// SetWeight implements pb.AdminServer.
func (a *admin) SetWeight(ctx context.Context, req *pb.SetWeightRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// Drain implements pb.AdminServer. A dry run says where the pool's traffic
// would go; a real drain is refused without force when the rest of the fleet
// lacks the headroom to take the pool's current load.
func (a *admin) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return r.Drain, nil
}

// Resume implements pb.AdminServer.
func (a *admin) Resume(ctx context.Context, req *pb.ResumeRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// SetCapacityOverride implements pb.AdminServer.
func (a *admin) SetCapacityOverride(ctx context.Context, req *pb.SetCapacityOverrideRequest) (*pb.PoolChangeResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.PoolChangeResponse{Pool: r.Pool}, nil
}

// SetPolicy implements pb.AdminServer: every replica switches.
func (a *admin) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.SetPolicyResponse, error) {
	r, err := a.apply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.SetPolicyResponse{Previous: r.Previous, Policy: r.Policy}, nil
}

// ExplainRoute implements pb.AdminServer: the ranked candidates for a
// hypothetical request, with the reason each was chosen or skipped.
func (a *admin) ExplainRoute(ctx context.Context, req *pb.ExplainRouteRequest) (*pb.ExplainRouteResponse, error) {
	tok, err := adminToken(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp, err := a.op.Explain(tok, req.GetRequest())
	return resp, toStatus(err)
}

// ListAudit implements pb.AdminServer.
func (a *admin) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
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
func (a *admin) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
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
