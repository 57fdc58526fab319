package sim

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func toolRequest(choice string, maxTokens int) *pb.GenerateRequest {
	r := &pb.GenerateRequest{Model: "llama-3.3-70b", MaxTokens: int32(maxTokens), RequestId: "r-1",
		Messages: []*pb.ChatMessage{{Role: "user", Content: "weather in Paris?"}},
		Tools: []*pb.Tool{
			{Name: "search", ParametersJson: `{"type":"object","properties":{"q":{"type":"string"}}}`},
			{Name: "get_weather", ParametersJson: `{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},"metric":{"type":"boolean"}}}`},
		}}
	if choice != "" {
		r.ToolChoice = &pb.ToolChoice{Mode: choice}
		if choice == "function" {
			r.ToolChoice.FunctionName = "get_weather"
		}
	}
	return r
}

func TestToolCallAnswers(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := p.Generate(ctx, toolRequest("function", 64))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || len(resp.GetToolCalls()) != 1 || resp.GetText() != "" {
		t.Fatalf("answer %v, want one tool call and finish TOOL_CALLS", resp)
	}
	tc := resp.GetToolCalls()[0]
	var args struct {
		City   string `json:"city"`
		Days   int    `json:"days"`
		Metric bool   `json:"metric"`
	}
	if err := json.Unmarshal([]byte(tc.GetArguments()), &args); err != nil || tc.GetName() != "get_weather" || tc.GetId() == "" {
		t.Fatalf("call %v: %v", tc, err)
	}
	if args.City == "" || args.Days != 1 || !args.Metric {
		t.Fatalf("arguments %+v do not follow the schema", args)
	}

	// Streamed: the first piece has the id and name, the pieces join into the same arguments.
	var pieces []*pb.ToolCallDelta
	var last *pb.GenerateChunk
	if err := p.GenerateStream(ctx, toolRequest("function", 64), func(c *pb.GenerateChunk) error {
		pieces = append(pieces, c.GetToolCalls()...)
		if c.GetText() != "" {
			t.Errorf("text %q in a tool-call stream", c.GetText())
		}
		last = c
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var joined strings.Builder
	for _, d := range pieces {
		joined.WriteString(d.GetArguments())
	}
	if len(pieces) < 2 || pieces[0].GetName() != "get_weather" || pieces[0].GetId() != tc.GetId() || pieces[1].GetName() != "" || joined.String() != tc.GetArguments() {
		t.Fatalf("%d pieces, first %v, joined %q; want %q", len(pieces), pieces[0], joined.String(), tc.GetArguments())
	}
	if last.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || last.GetUsage().GetOutputTokens() != int32(toolTokens(tc.GetArguments())) {
		t.Fatalf("last chunk %v", last)
	}

	// auto picks the first tool; after a tool result, or with none, text.
	resp, err = p.Generate(ctx, toolRequest("", 64))
	if err != nil || len(resp.GetToolCalls()) != 1 || resp.GetToolCalls()[0].GetName() != "search" {
		t.Fatalf("auto: %v %v", resp, err)
	}
	for _, r := range []*pb.GenerateRequest{toolRequest("none", 8), func() *pb.GenerateRequest {
		r := toolRequest("auto", 8)
		r.Messages = append(r.Messages, &pb.ChatMessage{Role: "assistant", ToolCalls: []*pb.ToolCall{{Id: "c", Name: "search", Arguments: "{}"}}},
			&pb.ChatMessage{Role: "tool", ToolCallId: "c", Content: "sunny"})
		return r
	}()} {
		resp, err := p.Generate(ctx, r)
		if err != nil || len(resp.GetToolCalls()) != 0 || resp.GetText() == "" || resp.GetFinishReason() == pb.FinishReason_FINISH_REASON_TOOL_CALLS {
			t.Fatalf("want text: %v %v", resp, err)
		}
	}
	// Arguments that do not fit max_tokens are cut, finish LENGTH.
	resp, err = p.Generate(ctx, toolRequest("required", 2))
	if err != nil || resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH || json.Valid([]byte(resp.GetToolCalls()[0].GetArguments())) {
		t.Fatalf("short budget: %v %v", resp, err)
	}
}

func TestSimRefusesWhatItCannotHonour(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := req("p", 4)
	r.Logprobs = true
	_, err := p.Generate(ctx, r)
	wantCode(t, err, codes.InvalidArgument)
	r = req("p", 4)
	r.ResponseFormat = &pb.ResponseFormat{Type: "json_object"}
	_, err = p.Generate(ctx, r)
	wantCode(t, err, codes.InvalidArgument)
}

func TestSimEmbeddings(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := p.Embed(ctx, &pb.EmbedRequest{Model: "e", Input: []string{"hello", "world", "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	e := resp.GetEmbeddings()
	if len(e) != 3 || len(e[0].GetValues()) != EmbeddingDimensions || e[2].GetIndex() != 2 {
		t.Fatalf("embeddings %v", e)
	}
	var norm float64
	same := true
	for i, v := range e[0].GetValues() {
		norm += float64(v) * float64(v)
		same = same && v == e[2].GetValues()[i]
	}
	if math.Abs(norm-1) > 1e-4 || !same || e[0].GetValues()[0] == e[1].GetValues()[0] && e[0].GetValues()[1] == e[1].GetValues()[1] {
		t.Fatalf("not unit vectors that depend on the input only: %v", e)
	}
	_, err = p.Embed(ctx, &pb.EmbedRequest{Model: "e"})
	wantCode(t, err, codes.InvalidArgument)
}
