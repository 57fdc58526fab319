// Package grpcedge is the router's gRPC edge: the switchyard.v1.Inference
// service over router.Server's CompleteAs, CompleteStreamAs and EmbedAs (the
// caller read off the call's metadata), the switchyard.v1.Admin service over
// the router's Operator interface, the client port's server options
// (authentication before any message is read, the receive limit, stream and
// connection bounds, keepalive, a recovered panic per call), the operator
// interceptors for services served off the client port, and the gRPC
// edge's one error table (toStatus: the core's errors to statuses).
//
// It imports router; router never imports it, and it imports no other edge
// (openaihttp, anthropichttp, console).
package grpcedge

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// Register adds the router's Inference and Admin services to a gRPC server.
func Register(gs grpc.ServiceRegistrar, rt *router.Server) {
	RegisterInference(gs, rt)
	RegisterAdmin(gs, rt.Operator())
}

// RegisterInference adds switchyard.v1.Inference over rt to a gRPC server.
func RegisterInference(gs grpc.ServiceRegistrar, rt *router.Server) {
	pb.RegisterInferenceServer(gs, &inference{rt: rt})
}

// RegisterAdmin adds switchyard.v1.Admin over op to a gRPC server.
func RegisterAdmin(gs grpc.ServiceRegistrar, op router.Operator) {
	pb.RegisterAdminServer(gs, NewAdmin(op))
}

// callerOf reads the caller's API key off a call's incoming metadata:
// x-api-key, else the token of "authorization: Bearer".
func callerOf(ctx context.Context) dispatch.Caller {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-api-key"); len(v) > 0 {
		return dispatch.Caller{APIKey: v[0]}
	}
	if v := md.Get("authorization"); len(v) > 0 {
		key, _ := strings.CutPrefix(v[0], "Bearer ")
		if key != v[0] {
			return dispatch.Caller{APIKey: key}
		}
	}
	return dispatch.Caller{}
}

// adminToken is the admin token of a call: the token of its
// "authorization: Bearer" metadata ("" when it sent none).
func adminToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) > 0 {
		return router.BearerToken(v[0])
	}
	return "", nil
}
