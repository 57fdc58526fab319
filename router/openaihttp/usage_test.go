package openaihttp

import (
	"encoding/json"
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Cached prompt tokens go out as usage.prompt_tokens_details.cached_tokens,
// as OpenAI, vLLM and llama-server send them; with none the field is absent.
func TestUsageCarriesCachedPromptTokens(t *testing.T) {
	b, err := json.Marshal(toUsage(&pb.Usage{InputTokens: 30, OutputTokens: 4, CachedInputTokens: 12}))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34,"prompt_tokens_details":{"cached_tokens":12}}`; string(b) != want {
		t.Errorf("usage %s, want %s", b, want)
	}
	b, _ = json.Marshal(toUsage(&pb.Usage{InputTokens: 30, OutputTokens: 4}))
	if want := `{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34}`; string(b) != want {
		t.Errorf("usage %s, want %s", b, want)
	}
}
