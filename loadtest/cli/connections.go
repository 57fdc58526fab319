package cli

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/loadtest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

const (
	// streamsPerConn is the most calls --connections 0 lets one gRPC
	// connection carry at --max-concurrency: under the router's limit, so
	// no call waits in the client for a stream.
	streamsPerConn = 200
	// routerStreamsPerConn is the router's default limit of calls at once
	// on one connection (grpcedge.DefaultMaxStreams); calls beyond it wait
	// inside the client's gRPC connection, where the router does not see them.
	routerStreamsPerConn = 256
	// maxConnections bounds --connections (the router serves 1,024
	// connections at once by default).
	maxConnections = 1024
)

// connCount is how many gRPC connections replays spread their calls over.
func (c *config) connCount() int {
	if c.connections > 0 {
		return c.connections
	}
	return min(maxConnections, max(1, (c.maxConcurrency+streamsPerConn-1)/streamsPerConn))
}

// dialInference opens n connections to target, each timing its calls' sends
// (loadtest.SendTimer) and connecting now rather than on its first call, and
// returns their Inference clients and a closer. conns[0] also serves the
// Admin and SimControl clients.
func dialInference(target string, n int) ([]*grpc.ClientConn, []pb.InferenceClient, func(), error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, cc := range conns {
			cc.Close()
		}
	}
	var clients []pb.InferenceClient
	for range n {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(loadtest.SendTimer()))
		if err != nil {
			closeAll()
			return nil, nil, nil, fmt.Errorf("dial %s: %w", target, err)
		}
		cc.Connect()
		conns = append(conns, cc)
		clients = append(clients, pb.NewInferenceClient(cc))
	}
	return conns, clients, closeAll, nil
}

// connectTimeout bounds waitReady.
const connectTimeout = 10 * time.Second

// waitReady waits until every connection is ready, so that no replayed
// call's client wait includes a connection's handshake.
func waitReady(ctx context.Context, target string, conns []*grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	for i, cc := range conns {
		for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
			if st == connectivity.Idle {
				cc.Connect()
			}
			if !cc.WaitForStateChange(ctx, st) {
				return fmt.Errorf("connect to %s (connection %d of %d, %v): %w", target, i+1, len(conns), st, ctx.Err())
			}
		}
	}
	return nil
}
