package openai

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Tools, tool turns, response_format and logprobs reach the server in
// OpenAI's shape, and a streamed tool call (vLLM's documented framing) comes
// back as index-keyed pieces with finish TOOL_CALLS.
func TestToolsAndFormatsOnTheWire(t *testing.T) {
	f := newFake(t, sse(fixture(t, "vllm-tools.sse")))
	b := newBackend(t, map[string]string{OptServer: "vllm", OptModelNames + ".llama": "meta-llama/Llama-3.3-70B-Instruct", OptMetrics: "off"}, Options{}, f.URL+"/v1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &pb.GenerateRequest{Model: "llama", MaxTokens: 50,
		Messages: []*pb.ChatMessage{
			{Role: "user", Content: "weather in Paris and Rome?"},
			{Role: "assistant", ToolCalls: []*pb.ToolCall{{Id: "c1", Name: "get_weather", Arguments: `{"city":"Rome"}`}}},
			{Role: "tool", ToolCallId: "c1", Content: "sunny"},
		},
		Tools:             []*pb.Tool{{Name: "get_weather", Description: "weather now", ParametersJson: `{"type":"object","properties":{"city":{"type":"string"}}}`, Strict: proto.Bool(true)}},
		ToolChoice:        &pb.ToolChoice{Mode: "function", FunctionName: "get_weather"},
		ParallelToolCalls: proto.Bool(false),
		ResponseFormat:    &pb.ResponseFormat{Type: "json_schema", SchemaName: "w", SchemaJson: `{"type":"object"}`, Strict: proto.Bool(true)},
		Logprobs:          true, TopLogprobs: proto.Int32(2),
	}
	chunks, err := collect(ctx, b, req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := f.last()
	got, _ := json.Marshal(map[string]any{"tools": body["tools"], "tool_choice": body["tool_choice"], "parallel_tool_calls": body["parallel_tool_calls"],
		"response_format": body["response_format"], "logprobs": body["logprobs"], "top_logprobs": body["top_logprobs"], "messages": body["messages"]})
	want := `{"logprobs":true,"messages":[{"content":"weather in Paris and Rome?","role":"user"},{"content":"","role":"assistant","tool_calls":[{"function":{"arguments":"{\"city\":\"Rome\"}","name":"get_weather"},"id":"c1","type":"function"}]},{"content":"sunny","role":"tool","tool_call_id":"c1"}],"parallel_tool_calls":false,"response_format":{"json_schema":{"name":"w","schema":{"type":"object"},"strict":true},"type":"json_schema"},"tool_choice":{"function":{"name":"get_weather"},"type":"function"},"tools":[{"function":{"description":"weather now","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"type":"object"},"strict":true},"type":"function"}],"top_logprobs":2}`
	if string(got) != want {
		t.Fatalf("sent\n%s\nwant\n%s", got, want)
	}
	var args strings.Builder
	var first *pb.ToolCallDelta
	for _, c := range chunks {
		for _, d := range c.GetToolCalls() {
			if first == nil {
				first = d
			}
			args.WriteString(d.GetArguments())
		}
	}
	last := chunks[len(chunks)-1]
	if first.GetId() != "chatcmpl-tool-9d1" || first.GetName() != "get_weather" || args.String() != `{"city": "Paris"}` || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || last.GetUsage().GetOutputTokens() != 22 {
		t.Fatalf("first piece %v, arguments %q, last %v", first, args.String(), last)
	}

	// Unary: the message's tool_calls.
	f.handle = func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":{"content":[{"token":"{","logprob":-0.5,"bytes":[123],"top_logprobs":[{"token":"{","logprob":-0.5,"bytes":[123]},{"token":"[","logprob":-2,"bytes":[91]}]}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":7}}`)
	}
	resp, err := b.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS || len(resp.GetToolCalls()) != 1 || resp.GetToolCalls()[0].GetArguments() != `{"city":"Paris"}` {
		t.Fatalf("unary %v", resp)
	}
	if lp := resp.GetLogprobs(); len(lp) != 1 || lp[0].GetLogprob() != -0.5 || len(lp[0].GetTopLogprobs()) != 2 || string(lp[0].GetBytes()) != "{" {
		t.Fatalf("logprobs %v", lp)
	}
}

// The completions endpoint's logprobs format (tokens, token_logprobs,
// top_logprobs maps) reads into the same shape, likeliest first.
func TestLegacyCompletionLogprobs(t *testing.T) {
	lp := ParseLogprobs(json.RawMessage(`{"tokens":["a","b"],"token_logprobs":[-1,-2],"top_logprobs":[{"a":-1,"x":-3},{"b":-2,"y":-0.5}]}`))
	if len(lp) != 2 || lp[1].GetToken() != "b" || lp[1].GetLogprob() != -2 || lp[1].GetTopLogprobs()[0].GetToken() != "y" {
		t.Fatalf("%v", lp)
	}
	if ParseLogprobs(json.RawMessage(`null`)) != nil {
		t.Fatal("null logprobs are none")
	}
}

// Against real llama-servers: a json_schema answer forced by llama.cpp's
// grammar parses and follows the schema; logprobs and top_logprobs come
// back, unary and streamed; /v1/embeddings gives one vector per input.
func TestLlamaServerJSONSchemaLogprobsEmbeddings(t *testing.T) {
	// The tiny model has no chat template; llama2's (with --jinja) gives the
	// grammar an empty generation prompt, which llama.cpp's JSON grammar needs.
	srv := llamatest.Start(t, llamatest.Options{Slots: 2, Args: []string{"--jinja", "--chat-template", "llama2"}})
	emb := llamatest.Start(t, llamatest.Options{Slots: 2, Args: []string{"--embeddings", "--pooling", "mean"}})
	b := newLlama(t, nil, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	schema := `{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}`
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", MaxTokens: 40, Messages: chat("answer in JSON"),
		ResponseFormat: &pb.ResponseFormat{Type: "json_schema", SchemaName: "answer", SchemaJson: schema, Strict: proto.Bool(true)}})
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]bool
	if err := json.Unmarshal([]byte(resp.GetText()), &v); err != nil || len(v) != 1 {
		t.Fatalf("answer %q is not the schema's object: %v", resp.GetText(), err)
	}

	lreq := &pb.GenerateRequest{Model: "tiny", MaxTokens: 5, Messages: chat("hi"), Logprobs: true, TopLogprobs: proto.Int32(2)}
	resp, err = b.Generate(ctx, lreq)
	if err != nil {
		t.Fatal(err)
	}
	if lp := resp.GetLogprobs(); len(lp) != 5 || len(lp[0].GetTopLogprobs()) != 2 || lp[0].GetLogprob() >= 0 {
		t.Fatalf("logprobs %v", lp)
	}
	chunks, err := collect(ctx, b, lreq)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range chunks {
		n += len(c.GetLogprobs())
	}
	if n != 5 {
		t.Fatalf("%d streamed logprobs, want 5", n)
	}
	// The prompt endpoint's logprobs too.
	resp, err = b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", MaxTokens: 3, Prompt: "once", Logprobs: true, TopLogprobs: proto.Int32(1)})
	if err != nil || len(resp.GetLogprobs()) != 3 {
		t.Fatalf("completion logprobs %v: %v", resp.GetLogprobs(), err)
	}

	e := newLlama(t, nil, emb)
	if !e.Capabilities().Embeddings {
		t.Fatal("llama.cpp pools serve embeddings")
	}
	er, err := e.Embed(ctx, &pb.EmbedRequest{Model: "tiny", Input: []string{"hello", "a longer second input"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(er.GetEmbeddings()) != 2 || len(er.GetEmbeddings()[0].GetValues()) == 0 || er.GetEmbeddings()[1].GetIndex() != 1 || er.GetUsage().GetInputTokens() <= 0 {
		t.Fatalf("embeddings %v", er)
	}
}
