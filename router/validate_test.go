package router

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

func TestValidateRequest(t *testing.T) {
	m := config.Model{Name: "m", MaxInputTokens: 10, MaxOutputTokens: 8}
	user := func(s string) []*pb.ChatMessage { return []*pb.ChatMessage{{Role: "user", Content: s}} }
	cases := []struct {
		name  string
		req   *pb.GenerateRequest
		field string // "" = valid
	}{
		{"prompt", &pb.GenerateRequest{Prompt: "hi", MaxTokens: 1}, ""},
		{"chat", &pb.GenerateRequest{Messages: []*pb.ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}, {Role: "assistant"}}, MaxTokens: 1}, ""},
		{"neither", &pb.GenerateRequest{MaxTokens: 1}, "prompt"},
		{"both", &pb.GenerateRequest{Prompt: "p", Messages: user("u"), MaxTokens: 1}, "messages"},
		{"empty user content", &pb.GenerateRequest{Messages: user(""), MaxTokens: 1}, "messages[0].content"},
		{"unknown role", &pb.GenerateRequest{Messages: []*pb.ChatMessage{{Role: "robot", Content: "x"}}, MaxTokens: 1}, "messages[0].role"},
		{"too many messages", &pb.GenerateRequest{Messages: make([]*pb.ChatMessage, maxMessages+1), MaxTokens: 1}, "messages"},
		{"prompt at the limit", &pb.GenerateRequest{Prompt: strings.Repeat("x", 40), MaxTokens: 1}, ""},
		{"prompt over the limit", &pb.GenerateRequest{Prompt: strings.Repeat("x", 41), MaxTokens: 1}, "prompt"},
		{"chat over the limit", &pb.GenerateRequest{Messages: append(user(strings.Repeat("x", 30)), user(strings.Repeat("y", 11))...), MaxTokens: 1}, "messages"},
		{"continuation counts as input", &pb.GenerateRequest{Prompt: "hi", MaxTokens: 4, Continuation: &pb.Continuation{GeneratedText: strings.Repeat("x", 39), GeneratedTokens: 1}}, "continuation.generated_text"},
		{"continuation tokens past max", &pb.GenerateRequest{Prompt: "hi", MaxTokens: 2, Continuation: &pb.Continuation{GeneratedText: "a", GeneratedTokens: 2}}, "continuation.generated_tokens"},
		{"max_tokens 0", &pb.GenerateRequest{Prompt: "p"}, "max_tokens"},
		{"max_tokens over", &pb.GenerateRequest{Prompt: "p", MaxTokens: 9}, "max_tokens"},
		{"temperature 0 is valid", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{Temperature: proto.Float32(0)}}, ""},
		{"temperature NaN", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{Temperature: proto.Float32(float32(math.NaN()))}}, "sampling.temperature"},
		{"top_p 0", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{TopP: proto.Float32(0)}}, "sampling.top_p"},
		{"top_p 1", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{TopP: proto.Float32(1)}}, ""},
		{"top_k 0", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{TopK: proto.Int32(0)}}, "sampling.top_k"},
		{"penalty", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{PresencePenalty: proto.Float32(-2.5)}}, "sampling.presence_penalty"},
		{"frequency penalty", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{FrequencyPenalty: proto.Float32(2.1)}}, "sampling.frequency_penalty"},
		{"five stops", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{Stop: []string{"a", "b", "c", "d", "e"}}}, "sampling.stop"},
		{"empty stop", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{Stop: []string{"a", ""}}}, "sampling.stop[1]"},
		{"prefix key over 256 bytes", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Routing: &pb.RoutingHints{PrefixKey: strings.Repeat("k", 257)}}, "routing.prefix_key"},
		{"long residency is not echoed", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1, Routing: &pb.RoutingHints{Residency: strings.Repeat("r", 5000)}}, "routing.residency"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validateRequest(c.req, m)
			if c.field == "" {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.field+":") && !strings.Contains(err.Error(), c.field+" + ") {
				t.Fatalf("got %v, want an error naming %q", err, c.field)
			}
			var fe *dispatch.InvalidError
			if !errors.As(err, &fe) || !slices.Contains(fe.Fields, c.field) || dispatch.CodeOf(err) != dispatch.CodeInvalid {
				t.Fatalf("got %#v, want a field error for %q", err, c.field)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes echoes client input", len(err.Error()))
			}
		})
	}
}
