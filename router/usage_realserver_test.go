package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// promptTokens asks a llama-server directly how many prompt tokens it counts
// for the request's prompt or chat (its usage.prompt_tokens).
func promptTokens(ctx context.Context, t *testing.T, base string, r *pb.GenerateRequest) int32 {
	t.Helper()
	body := map[string]any{"model": llamatest.Alias, "max_tokens": 1}
	path := "/v1/completions"
	if len(r.GetMessages()) > 0 {
		path = "/v1/chat/completions"
		var msgs []map[string]string
		for _, m := range r.GetMessages() {
			msgs = append(msgs, map[string]string{"role": m.GetRole(), "content": m.GetContent()})
		}
		body["messages"] = msgs
	} else {
		body["prompt"] = r.GetPrompt()
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Usage struct {
			PromptTokens int32 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("llama-server %s: %d %v", path, resp.StatusCode, err)
	}
	return out.Usage.PromptTokens
}

// The input tokens a client is told, through a real switchyard to a real
// llama-server, are the server's own prompt_tokens for that prompt or chat,
// unary and streamed — not the router's 4-bytes-a-token estimate, which
// differs for both requests here.
func TestRealServerInputTokensAreTheServersCount(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 2})
	f := startRealFleet(t, realPool{name: "llama-use1", cloud: "aws", region: "us-east-1", limit: 2, url: srv.URL})
	ctx := ctxT(t, 60*time.Second)
	for _, r := range []*pb.GenerateRequest{
		{Model: "m", Prompt: "Switchyards sort freight cars onto trains; a hump yard uses gravity.", MaxTokens: 4},
		chatReq("us-east-1", 4),
	} {
		name := "prompt"
		if len(r.Messages) > 0 {
			name = "messages"
		}
		want := promptTokens(ctx, t, srv.URL, r)
		if est := int32(backends.EstimateInputTokens(r)); want == est || want < 2 {
			t.Fatalf("%s: the server counts %d prompt tokens, the estimate is %d: pick input they disagree on", name, want, est)
		}
		resp, err := f.client.Generate(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetUsage().GetInputTokens(); got != want {
			t.Errorf("%s, unary: input tokens %d, the server counts %d", name, got, want)
		}
		_, _, last, err := stream(ctx, f.client, r)
		if err != nil {
			t.Fatal(err)
		}
		if got := last.GetUsage().GetInputTokens(); got != want || last.GetUsage().GetOutputTokens() != 4 {
			t.Errorf("%s, stream: usage %v, want %d input tokens (the server's count) and 4 output", name, last.GetUsage(), want)
		}
	}
	f.idle(t)
}
