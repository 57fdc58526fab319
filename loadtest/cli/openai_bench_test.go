package cli

import (
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/loadtest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// BenchmarkEdge measures one call end to end through each edge of the same
// router in the same run: gRPC (the baseline) and the OpenAI-compatible HTTP
// front door over HTTP/1.1 keep-alive and h2c, unary and streamed, with the
// same client code for both (loadtest.OpenAIClient is a pb.InferenceClient).
// The simulated pools run so fast (time scale 1e9) that they never sleep: the
// time per call is the edges' and the router's, and the difference between
// protocols is what the HTTP edge adds.
func BenchmarkEdge(b *testing.B) {
	grpcAddr, httpURL := startRouterWithHTTP(b, 1e9)
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	h1, err := loadtest.NewOpenAIClient(loadtest.OpenAIOptions{BaseURL: httpURL, MaxConns: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer h1.Close()
	h2, err := loadtest.NewOpenAIClient(loadtest.OpenAIOptions{BaseURL: httpURL, MaxConns: 4, HTTP2: true})
	if err != nil {
		b.Fatal(err)
	}
	defer h2.Close()
	clients := []struct {
		name string
		c    pb.InferenceClient
	}{{"grpc", pb.NewInferenceClient(cc)}, {"http1", h1}, {"h2c", h2}}
	req := &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "how far is the next switchyard from here?", MaxTokens: 16,
		Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
	ctx := context.Background()
	for _, mode := range []string{"unary", "stream"} {
		for _, cl := range clients {
			b.Run(mode+"/"+cl.name, func(b *testing.B) {
				for b.Loop() {
					if mode == "unary" {
						resp, err := cl.c.Generate(ctx, req)
						if err != nil || resp.GetUsage().GetOutputTokens() != 16 {
							b.Fatalf("%v %v", resp, err)
						}
						continue
					}
					s, err := cl.c.GenerateStream(ctx, req)
					if err != nil {
						b.Fatal(err)
					}
					var out int32
					for {
						ch, err := s.Recv()
						if errors.Is(err, io.EOF) {
							break
						}
						if err != nil {
							b.Fatal(err)
						}
						out = max(out, ch.GetUsage().GetOutputTokens())
					}
					if out != 16 {
						b.Fatalf("stream ended with %d tokens", out)
					}
				}
			})
		}
	}
}
