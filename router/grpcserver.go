package router

import (
	"context"

	"google.golang.org/grpc"
)

// OperatorInterceptors return interceptors that let a call through only with
// an admin token of the operator role (the Admin API's tokens): for services
// served off the client port that change the fleet, such as SimControl.
func (s *Server) OperatorInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	a := s.Admin()
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		actor, err := a.authorize(ctx, roleOperator)
		if err != nil {
			return nil, adminStatus(err)
		}
		s.log.InfoContext(ctx, "operator call", "actor", actor)
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if _, err := a.authorize(ss.Context(), roleOperator); err != nil {
			return adminStatus(err)
		}
		return handler(srv, ss)
	}
	return unary, stream
}
