package openai

import (
	"encoding/json"
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// NewWireRequest is the standard body every client in the module sends: the
// prompt to completions, messages to chat completions, the sampling
// parameters as set, include_usage on streams, nothing else.
func TestNewWireRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    *pb.GenerateRequest
		stream bool
		path   string
		body   string
	}{
		{
			name: "prompt, unary",
			req:  &pb.GenerateRequest{Model: "m", Prompt: "a <b> & c", MaxTokens: 5},
			path: CompletionsPath,
			body: `{"model":"m","prompt":"a <b> & c","max_tokens":5}`,
		},
		{
			name: "chat, streamed, every sampling parameter", stream: true,
			req: &pb.GenerateRequest{Model: "m", MaxTokens: 7, Messages: []*pb.ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}},
				Sampling: &pb.SamplingParameters{Temperature: ptr[float32](0.5), TopP: ptr[float32](0.9), TopK: ptr[int32](40), Stop: []string{"\n"},
					Seed: ptr[int64](3), PresencePenalty: ptr[float32](0.1), FrequencyPenalty: ptr[float32](-0.2)}},
			path: ChatCompletionsPath,
			body: `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"max_tokens":7,"stream":true,` +
				`"stream_options":{"include_usage":true},"temperature":0.5,"top_p":0.9,"top_k":40,"stop":["\n"],"seed":3,"presence_penalty":0.1,"frequency_penalty":-0.2}`,
		},
		{
			name: "a continuation is the adapter's to apply, not the standard body's",
			req:  &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 9, Continuation: &pb.Continuation{GeneratedText: "so far", GeneratedTokens: 2}},
			path: CompletionsPath,
			body: `{"model":"m","prompt":"p","max_tokens":9}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, path := NewWireRequest(tc.req, tc.stream)
			b, err := w.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if path != tc.path || string(b) != tc.body+"\n" {
				t.Fatalf("got %s %s\nwant %s %s", path, b, tc.path, tc.body)
			}
			var back WireRequest
			if err := json.Unmarshal(b, &back); err != nil || back.Model != "m" {
				t.Fatalf("the body does not decode: %v", err)
			}
		})
	}
}
