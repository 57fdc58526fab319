package grpcedge

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPanicsBecomeInternalErrors(t *testing.T) {
	_, err := recoverUnary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"}, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if status.Code(err) != codes.Internal {
		t.Fatalf("unary panic: %v, want INTERNAL", err)
	}
	err = recoverStream(nil, fakeStream{}, &grpc.StreamServerInfo{FullMethod: "/x/Z"}, func(any, grpc.ServerStream) error {
		var m map[string]int
		m["nil map"]++ // a runtime panic
		return nil
	})
	if status.Code(err) != codes.Internal {
		t.Fatalf("stream panic: %v, want INTERNAL", err)
	}
}

type fakeStream struct{ grpc.ServerStream }

func (fakeStream) Context() context.Context { return context.Background() }
