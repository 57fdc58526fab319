package openaihttp_test

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// simEmbedFleet is two simulated pools, one in the US and one in the EU,
// serving an embedding model, beside a chat model.
const simEmbedFleet = `models:
  - {name: chat, max_input_tokens: 1000, max_output_tokens: 64}
  - {name: embed, kind: embedding, max_input_tokens: 512}
pools:
  - {name: sim-us, cloud: aws, region: us-east-1, accelerator: h100, models: [chat, embed], endpoints: [sim], limits: {max_concurrent: 4}}
  - {name: sim-eu, cloud: gcp, region: europe-west4, accelerator: h100, models: [chat, embed], endpoints: [sim], limits: {max_concurrent: 4}}
`

// openai-go gets two embeddings for two inputs, routed like completions
// (residency honoured, route headers), floats or base64.
func TestOpenAIGoEmbeddings(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{fleetYAML: simEmbedFleet})
	c := fd.sdk()
	ctx := ctxT(t, 20*time.Second)
	var httpResp *http.Response
	resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "embed", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello", "a second, longer input"}},
	}, option.WithHeader("X-Switchyard-Residency", "eu"), option.WithResponseInto(&httpResp))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || resp.Data[1].Index != 1 || len(resp.Data[0].Embedding) == 0 || resp.Usage.PromptTokens <= 0 || resp.Object != "list" {
		t.Fatalf("embeddings %s", resp.RawJSON())
	}
	if resp.Data[0].Embedding[0] == resp.Data[1].Embedding[0] && resp.Data[0].Embedding[1] == resp.Data[1].Embedding[1] {
		t.Fatal("two inputs got the same embedding")
	}
	if p := httpResp.Header.Get("X-Switchyard-Pool"); p != "sim-eu" {
		t.Fatalf("served by %q, want the EU pool", p)
	}

	// base64: the same vector as little-endian float32s.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fd.url+"/v1/embeddings",
		strings.NewReader(`{"model":"embed","input":"hello","encoding_format":"base64"}`))
	req.Header.Set("X-Switchyard-Residency", "eu")
	hr, err := fd.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	var b struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &b); err != nil || len(b.Data) != 1 {
		t.Fatalf("%s: %v", body, err)
	}
	raw, err := base64.StdEncoding.DecodeString(b.Data[0].Embedding)
	if err != nil || len(raw) != 4*len(resp.Data[0].Embedding) {
		t.Fatalf("base64 %q: %v", b.Data[0].Embedding, err)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(raw)); got != float32(resp.Data[0].Embedding[0]) {
		t.Fatalf("base64 first value %v, float %v", got, resp.Data[0].Embedding[0])
	}

	// Kinds are kept apart, and bad input names its field.
	for _, tc := range []struct {
		body, param string
	}{
		{`{"model":"chat","input":"x"}`, "model"},
		{`{"model":"embed","input":[1,2,3]}`, "input"},
		{`{"model":"embed","input":["ok",""]}`, "input"},
		{`{"model":"embed","input":"x","encoding_format":"int8"}`, "encoding_format"},
		{`{"model":"embed","input":"x","dimensions":0}`, "dimensions"},
		{`{"model":"embed","input":"x","truncate":true}`, "truncate"},
	} {
		hr, err := fd.client.Post(fd.url+"/v1/embeddings", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if hr.StatusCode != http.StatusBadRequest || !strings.Contains(string(out), `"param":"`+tc.param) {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.body, hr.StatusCode, out, tc.param)
		}
	}
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "embed", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Param != "model" {
		t.Fatalf("chat on an embedding model: %v", err)
	}
}

// A pool failing an embedding call is failed over like a completion.
func TestEmbeddingsFailOver(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{fleetYAML: simEmbedFleet})
	if _, err := fd.host.InjectFault(ctxT(t, 5*time.Second), faultOutage("sim-us")); err != nil {
		t.Fatal(err)
	}
	var httpResp *http.Response
	c := fd.sdk()
	resp, err := c.Embeddings.New(ctxT(t, 20*time.Second), openai.EmbeddingNewParams{
		Model: "embed", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
	}, option.WithHeader("X-Switchyard-Caller-Region", "us-east-1"), option.WithResponseInto(&httpResp))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || httpResp.Header.Get("X-Switchyard-Pool") != "sim-eu" {
		t.Fatalf("served by %q: %s", httpResp.Header.Get("X-Switchyard-Pool"), resp.RawJSON())
	}
}

// openai-go against the router in front of a real llama-server serving
// embeddings (--embeddings --pooling mean).
func TestOpenAIGoEmbeddingsOnLlamaServer(t *testing.T) {
	chat := startLlamaChat(t)
	emb := startLlamaEmbed(t)
	fd := startFrontDoor(t, doorOpts{fleetYAML: llamaFleet(chat, emb)})
	c := fd.sdk()
	resp, err := c.Embeddings.New(ctxT(t, 30*time.Second), openai.EmbeddingNewParams{
		Model: "tiny-embed", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello", "world, again"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || resp.Data[1].Index != 1 || len(resp.Data[0].Embedding) != len(resp.Data[1].Embedding) || len(resp.Data[0].Embedding) == 0 || resp.Usage.PromptTokens <= 0 {
		t.Fatalf("embeddings %s", resp.RawJSON())
	}
}
