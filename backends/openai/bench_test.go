package openai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// benchStream is a 256-token vLLM-style chat stream served by a real HTTP
// server on loopback.
func benchStream(b *testing.B) *fake {
	var sb strings.Builder
	for i := range 256 {
		fmt.Fprintf(&sb, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok%d\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n", i)
	}
	sb.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n")
	sb.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":256}}\n\ndata: [DONE]\n\n")
	return newFake(b, sse([]byte(sb.String())))
}

// BenchmarkStreamThroughAdapter: a 256-token stream through the adapter
// (request building, SSE parsing, chunks) against the baseline of reading
// the same stream with a bare HTTP client and a line scanner, same server,
// same run: the ratio is the adapter's cost.
func BenchmarkStreamThroughAdapter(b *testing.B) {
	f := benchStream(b)
	be, err := New(backends.Spec{Pool: "bench", Endpoints: []string{f.URL}, MaxConcurrent: 4, Options: map[string]string{OptServer: "vllm", OptMetrics: "off"}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	req := &pb.GenerateRequest{Model: "m", Messages: chat("hi"), MaxTokens: 256}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var n int32
		if err := be.GenerateStream(context.Background(), req, func(c *pb.GenerateChunk) error { n += c.Tokens; return nil }); err != nil || n != 256 {
			b.Fatalf("%d tokens, %v", n, err)
		}
	}
}

func BenchmarkStreamBareHTTPBaseline(b *testing.B) {
	f := benchStream(b)
	client := &http.Client{}
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":256,"stream":true}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(f.URL+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		n := 0
		for sc.Scan() {
			if bytes.HasPrefix(sc.Bytes(), []byte("data: ")) {
				n++
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != 259 {
			b.Fatalf("%d events", n)
		}
	}
}

// BenchmarkStreamBareHTTPDecodeBaseline also decodes every event into a
// generic map (what any client must do), the fair floor for the adapter.
func BenchmarkStreamBareHTTPDecodeBaseline(b *testing.B) {
	f := benchStream(b)
	client := &http.Client{}
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":256,"stream":true}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(f.URL+"/v1/chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		n := 0
		for sc.Scan() {
			if data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: ")); ok && !bytes.Equal(data, []byte("[DONE]")) {
				var v map[string]any
				if err := json.Unmarshal(data, &v); err != nil {
					b.Fatal(err)
				}
				n++
			}
		}
		resp.Body.Close()
		if n != 258 {
			b.Fatalf("%d events", n)
		}
	}
}
