package grpcedge

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
)

// RPC names for the request metrics' rpc label.
const (
	rpcGenerate       = "generate"
	rpcGenerateStream = "generate_stream"
	rpcEmbed          = "embed"
)

// inference is switchyard.v1.Inference over a router: each method reads the
// caller off the call's metadata, runs the call through the router's core
// and maps its error with toStatus.
type inference struct {
	pb.UnimplementedInferenceServer
	rt *router.Server
}

var _ pb.InferenceServer = (*inference)(nil)

// Generate implements pb.InferenceServer.
func (s *inference) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	resp, err := s.rt.CompleteAs(ctx, router.CallInfo{RPC: rpcGenerate, Caller: callerOf(ctx)}, req)
	return resp, toStatus(err)
}

// GenerateStream implements pb.InferenceServer.
func (s *inference) GenerateStream(req *pb.GenerateRequest, stream grpc.ServerStreamingServer[pb.GenerateChunk]) error {
	ctx := stream.Context()
	return toStatus(s.rt.CompleteStreamAs(ctx, router.CallInfo{RPC: rpcGenerateStream, Caller: callerOf(ctx)}, req, stream.Send))
}

// Embed implements pb.InferenceServer.
func (s *inference) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	resp, err := s.rt.EmbedAs(ctx, router.CallInfo{RPC: rpcEmbed, Caller: callerOf(ctx)}, req)
	return resp, toStatus(err)
}

// ListModels implements pb.InferenceServer.
func (s *inference) ListModels(context.Context, *pb.ListModelsRequest) (*pb.ListModelsResponse, error) {
	return s.rt.Models(), nil
}
