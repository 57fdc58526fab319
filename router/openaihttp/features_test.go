package openaihttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func weatherTool() openai.ChatCompletionToolUnionParam {
	return openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name: "get_weather", Description: openai.String("current weather"),
		Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	})
}

// openai-go calls a tool through the front door, unary and streamed, with
// finish_reason tool_calls, then sends the result back and gets text. The
// demo fleet's simulated pools answer tools with tool calls.
func TestOpenAIGoToolCallsUnaryAndStreamed(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	c := fd.sdk()
	ctx := ctxT(t, 30*time.Second)
	params := openai.ChatCompletionNewParams{
		Model:      "llama-3.1-8b",
		Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris?")},
		Tools:      []openai.ChatCompletionToolUnionParam{weatherTool()},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
		MaxTokens:  openai.Int(64),
	}
	cc, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	ch := cc.Choices[0]
	if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 {
		t.Fatalf("finish %q, %d tool calls: %s", ch.FinishReason, len(ch.Message.ToolCalls), cc.RawJSON())
	}
	call := ch.Message.ToolCalls[0]
	var args struct {
		City string `json:"city"`
	}
	if call.Function.Name != "get_weather" || call.ID == "" || json.Unmarshal([]byte(call.Function.Arguments), &args) != nil || args.City == "" {
		t.Fatalf("tool call %s", call.RawJSON())
	}

	// The result goes back as a tool message: the answer is text.
	params2 := params
	params2.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")}
	params2.Messages = append(params.Messages, ch.Message.ToParam(), openai.ToolMessage("18C and sunny", call.ID))
	cc2, err := c.Chat.Completions.New(ctx, params2)
	if err != nil {
		t.Fatal(err)
	}
	if cc2.Choices[0].FinishReason == "tool_calls" || cc2.Choices[0].Message.Content == "" {
		t.Fatalf("after the tool result: %s", cc2.RawJSON())
	}

	// Streamed: index-keyed pieces the SDK's accumulator joins.
	s := c.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	finish, pieces := "", 0
	var finished []openai.FinishedChatCompletionToolCall
	for s.Next() {
		chunk := s.Current()
		acc.AddChunk(chunk)
		if tc, ok := acc.JustFinishedToolCall(); ok {
			finished = append(finished, tc)
		}
		if len(chunk.Choices) > 0 {
			pieces += len(chunk.Choices[0].Delta.ToolCalls)
			if chunk.Choices[0].FinishReason != "" {
				finish = chunk.Choices[0].FinishReason
			}
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	got := acc.Choices[0].Message.ToolCalls
	if finish != "tool_calls" || pieces < 2 || len(got) != 1 || len(finished) != 1 {
		t.Fatalf("finish %q, %d pieces, calls %v, finished %v", finish, pieces, got, finished)
	}
	// (Another pool may serve the stream: its arguments are its own.)
	if got[0].Function.Name != "get_weather" || json.Unmarshal([]byte(got[0].Function.Arguments), &args) != nil || args.City == "" || finished[0].Arguments != got[0].Function.Arguments {
		t.Fatalf("streamed call %+v", got[0])
	}
}

// What the chosen pools cannot honour is refused with 400 naming the field:
// the demo fleet's simulated pools have no logprobs and no JSON mode.
func TestOptionNoPoolHonoursIs400NamingIt(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	c := fd.sdk()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}
	for _, tc := range []struct {
		param string
		p     openai.ChatCompletionNewParams
	}{
		{"logprobs", openai.ChatCompletionNewParams{Model: "llama-3.1-8b", Messages: msgs, Logprobs: openai.Bool(true)}},
		{"response_format", openai.ChatCompletionNewParams{Model: "llama-3.1-8b", Messages: msgs,
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}}},
	} {
		_, err := c.Chat.Completions.New(ctxT(t, 10*time.Second), tc.p)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Param != tc.param {
			t.Fatalf("%s: %v, want 400 naming it", tc.param, err)
		}
	}
}

// A stream broken in the middle of a tool call ends with an error event
// saying so; it is not continued on another pool.
func TestToolCallBrokenMidStreamEndsWithAnError(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 2})
	c := fd.sdk()
	s := c.Chat.Completions.NewStreaming(ctxT(t, 30*time.Second), openai.ChatCompletionNewParams{
		Model:      "llama-3.3-70b",
		Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("look it up")},
		Tools:      []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "search", Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}}})},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
		MaxTokens:  openai.Int(200),
	}, option.WithHeader("X-Switchyard-Caller-Region", "us-east-1"))
	pieces, killed := 0, ""
	for s.Next() {
		ch := s.Current()
		if len(ch.Choices) == 0 {
			continue
		}
		pieces += len(ch.Choices[0].Delta.ToolCalls)
		if pieces == 5 && killed == "" {
			for name, n := range fd.inFlight(t) {
				if n == 1 {
					killed = name
				}
			}
			if killed == "" {
				t.Fatal("no pool has the stream in flight")
			}
			if _, err := fd.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: killed, Outage: true}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := s.Err()
	if err == nil || !strings.Contains(err.Error(), "middle of a tool call") {
		t.Fatalf("stream ended with %v after %d pieces, want an error naming the broken tool call", err, pieces)
	}
	fd.waitInFlight(t, 0, 5*time.Second)
}

// llamaFleet is a fleet of one real llama-server pool (chat, with llama.cpp's
// grammar for response_format) and, when emb is set, one llama-server
// serving embeddings, plus simulated pools for the embedding model.
func llamaFleet(chat, emb *llamatest.Server) string {
	var b strings.Builder
	b.WriteString("models:\n  - {name: tiny, max_input_tokens: 400, max_output_tokens: 64}\n")
	if emb != nil {
		b.WriteString("  - {name: tiny-embed, kind: embedding, max_input_tokens: 256}\n")
	}
	b.WriteString("pools:\n")
	fmt.Fprintf(&b, "  - {name: llama-chat, cloud: aws, region: us-east-1, accelerator: cpu, models: [tiny], adapter: openai, endpoints: [%q], limits: {max_concurrent: 2}, options: {server: llamacpp, model_names: {tiny: %s}, metrics: \"off\"}}\n", chat.URL, llamatest.Alias)
	if emb != nil {
		fmt.Fprintf(&b, "  - {name: llama-embed, cloud: aws, region: us-east-1, accelerator: cpu, models: [tiny-embed], adapter: openai, endpoints: [%q], limits: {max_concurrent: 2}, options: {server: llamacpp, model_names: {tiny-embed: %s}, metrics: \"off\"}}\n", emb.URL, llamatest.Alias)
	}
	return b.String()
}

// startLlamaChat runs a llama-server whose grammar-constrained JSON works
// with the tiny model (docs/backends.md says why the llama2 template).
func startLlamaChat(t *testing.T) *llamatest.Server {
	return llamatest.Start(t, llamatest.Options{Slots: 2, Args: []string{"--jinja", "--chat-template", "llama2"}})
}

// openai-go against the router in front of a real llama-server: a
// json_schema answer (llama.cpp's grammar) that parses, and logprobs,
// unary and streamed, chat and text completions.
func TestOpenAIGoJSONModeAndLogprobsOnLlamaServer(t *testing.T) {
	srv := startLlamaChat(t)
	fd := startFrontDoor(t, doorOpts{fleetYAML: llamaFleet(srv, nil)})
	c := fd.sdk()
	ctx := ctxT(t, 60*time.Second)
	cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "tiny", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("is it ok?")}, MaxTokens: openai.Int(40), Seed: openai.Int(7),
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{
			Name: "answer", Strict: openai.Bool(true),
			Schema: map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}, "required": []string{"ok"}, "additionalProperties": false},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		OK *bool `json:"ok"`
	}
	if err := json.Unmarshal([]byte(cc.Choices[0].Message.Content), &answer); err != nil || answer.OK == nil {
		t.Fatalf("JSON-mode answer %q does not parse into the schema: %v", cc.Choices[0].Message.Content, err)
	}

	lp := openai.ChatCompletionNewParams{Model: "tiny", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(4),
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2), Stop: openai.ChatCompletionNewParamsStopUnion{OfString: openai.String("\n\n\n")}}
	cc, err = c.Chat.Completions.New(ctx, lp)
	if err != nil {
		t.Fatal(err)
	}
	content := cc.Choices[0].Logprobs.Content
	if len(content) != 4 || len(content[0].TopLogprobs) != 2 || content[0].Logprob >= 0 || content[0].Token == "" {
		t.Fatalf("logprobs %s", cc.Choices[0].Logprobs.RawJSON())
	}
	s := c.Chat.Completions.NewStreaming(ctx, lp)
	streamed := 0
	for s.Next() {
		if ch := s.Current(); len(ch.Choices) > 0 {
			streamed += len(ch.Choices[0].Logprobs.Content)
		}
	}
	if err := s.Err(); err != nil || streamed != 4 {
		t.Fatalf("streamed logprobs %d, err %v", streamed, err)
	}
	tc, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
		MaxTokens: openai.Int(3), Logprobs: openai.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	if l := tc.Choices[0].Logprobs; len(l.Tokens) != 3 || len(l.TokenLogprobs) != 3 || len(l.TopLogprobs) != 3 {
		t.Fatalf("completion logprobs %s", l.RawJSON())
	}
}

func startLlamaEmbed(t *testing.T) *llamatest.Server {
	return llamatest.Start(t, llamatest.Options{Slots: 2, Args: []string{"--embeddings", "--pooling", "mean"}})
}

func faultOutage(pool string) *pb.InjectFaultRequest {
	return &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: pool, Outage: true}}
}
