package router_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The gRPC API's tool calls, unary and streamed, through the router to
// native (switchyard-sim) backends.
func TestGRPCToolCalls(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	r := &pb.GenerateRequest{Model: "m", MaxTokens: 40, Messages: []*pb.ChatMessage{{Role: "user", Content: "weather?"}},
		Tools:      []*pb.Tool{{Name: "get_weather", ParametersJson: `{"type":"object","properties":{"city":{"type":"string"}}}`}},
		ToolChoice: &pb.ToolChoice{Mode: "required"}}
	resp, err := f.client.Generate(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || len(resp.GetToolCalls()) != 1 || !json.Valid([]byte(resp.GetToolCalls()[0].GetArguments())) {
		t.Fatalf("answer %v", resp)
	}
	st, err := f.client.GenerateStream(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	var args strings.Builder
	var last *pb.GenerateChunk
	for {
		ch, err := st.Recv()
		if err != nil {
			break
		}
		for _, d := range ch.GetToolCalls() {
			args.WriteString(d.GetArguments())
		}
		last = ch
	}
	if last.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || !json.Valid([]byte(args.String())) || last.GetRoute().GetPool() == "" {
		t.Fatalf("stream ended %v with arguments %q", last, args.String())
	}
}

// gRPC Embed: routed by residency, failed over when a pool dies, and kept
// apart from chat models.
func TestGRPCEmbed(t *testing.T) {
	pools := usEU()
	for _, p := range pools {
		p.models = append(p.models, "m", "embed")
	}
	f := startFleet(t, fleetOpts{}, pools...)
	ctx := ctxT(t, 10*time.Second)
	resp, err := f.client.Embed(ctx, &pb.EmbedRequest{Model: "embed", Input: []string{"a", "b"}, Routing: &pb.RoutingHints{Residency: "eu"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEmbeddings()) != 2 || resp.GetRoute().GetPool() != "azure-weu" || resp.GetUsage().GetInputTokens() <= 0 || resp.GetRequestId() == "" {
		t.Fatalf("embed %v", resp)
	}
	f.pools["aws-use1"].kill()
	for range 4 {
		resp, err = f.client.Embed(ctx, &pb.EmbedRequest{Model: "embed", Input: []string{"x"}, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}})
		if err != nil {
			t.Fatalf("after a pool died: %v", err)
		}
		if resp.GetRoute().GetPool() == "aws-use1" {
			t.Fatal("served by the dead pool")
		}
	}
	_, err = f.client.Embed(ctx, &pb.EmbedRequest{Model: "m", Input: []string{"x"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not an embedding model") {
		t.Fatalf("embed on a chat model: %v", err)
	}
	_, err = f.client.Generate(ctx, &pb.GenerateRequest{Model: "embed", Prompt: "p", MaxTokens: 1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("generate on an embedding model: %v", err)
	}
	_, err = f.client.Embed(ctx, &pb.EmbedRequest{Model: "embed", Input: []string{"ok", ""}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "input[1]") {
		t.Fatalf("empty input: %v", err)
	}
	models, err := f.client.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, m := range models.GetModels() {
		kinds[m.GetName()] = m.GetKind()
	}
	if kinds["embed"] != "embedding" || kinds["m"] != "chat" {
		t.Fatalf("kinds %v", kinds)
	}
}
