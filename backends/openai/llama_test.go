package openai

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newLlama builds the adapter for one or more real llama-servers.
func newLlama(t *testing.T, opts map[string]string, servers ...*llamatest.Server) *Backend {
	t.Helper()
	o := map[string]string{OptServer: "llamacpp", OptModelNames + ".tiny": llamatest.Alias, OptMetricsInterval: "50ms"}
	for k, v := range opts {
		o[k] = v
	}
	var eps []string
	for _, s := range servers {
		eps = append(eps, s.URL)
	}
	b, err := New(backends.Spec{Pool: "llama", Endpoints: eps, MaxConcurrent: 4, Options: o}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func chat(text string) []*pb.ChatMessage {
	return []*pb.ChatMessage{{Role: "system", Content: "You are terse."}, {Role: "user", Content: text}}
}

// collect runs a stream and returns its chunks.
func collect(ctx context.Context, b backends.Backend, req *pb.GenerateRequest) ([]*pb.GenerateChunk, error) {
	var chunks []*pb.GenerateChunk
	err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error {
		chunks = append(chunks, c)
		return nil
	})
	return chunks, err
}

// The adapter against a real llama-server: prompts and chats, unary and
// streamed; the streamed chunks' tokens add up to the server's usage and the
// last chunk alone carries usage and finish reason.
func TestLlamaServerUnaryAndStream(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 2})
	b := newLlama(t, nil, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	wrong := newLlama(t, map[string]string{OptModelNames + ".tiny": "llama-3-405b"}, srv)
	if err := wrong.Check(ctx); err == nil || !strings.Contains(err.Error(), `does not list "llama-3-405b"`) {
		t.Fatalf("check with a model the server does not serve: %v", err)
	}
	for _, req := range []*pb.GenerateRequest{
		{Model: "tiny", Prompt: "Once upon a time", MaxTokens: 12},
		{Model: "tiny", Messages: chat("Tell me a story."), MaxTokens: 12, Sampling: &pb.SamplingParameters{Temperature: ptr[float32](0.5), Seed: ptr[int64](7), TopK: ptr[int32](20), Stop: []string{"\n\n\n\n"}}},
	} {
		name := "prompt"
		if len(req.Messages) > 0 {
			name = "messages"
		}
		resp, err := b.Generate(ctx, req)
		if err != nil {
			t.Fatalf("%s: generate: %v", name, err)
		}
		if resp.Usage.GetOutputTokens() != 12 || resp.Usage.GetInputTokens() < 2 || resp.Text == "" || resp.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH {
			t.Fatalf("%s: unary %+v", name, resp)
		}
		chunks, err := collect(ctx, b, req)
		if err != nil {
			t.Fatalf("%s: stream: %v", name, err)
		}
		var tokens int32
		var text strings.Builder
		for i, c := range chunks {
			last := i == len(chunks)-1
			if (c.Usage != nil || c.FinishReason != pb.FinishReason_FINISH_REASON_UNSPECIFIED) != last {
				t.Fatalf("%s: chunk %d of %d: usage %v finish %v", name, i, len(chunks), c.Usage, c.FinishReason)
			}
			tokens += c.Tokens
			text.WriteString(c.Text)
		}
		final := chunks[len(chunks)-1]
		if tokens != 12 || final.Usage.OutputTokens != 12 || final.Usage.InputTokens != resp.Usage.InputTokens || final.FinishReason != pb.FinishReason_FINISH_REASON_LENGTH || text.Len() == 0 {
			t.Fatalf("%s: stream of %d chunks: %d tokens, final %+v, text %q", name, len(chunks), tokens, final, text.String())
		}
	}
	// A scrape taken after the calls shows the server's two slots, none busy.
	after := time.Now()
	var l backends.Load
	var ok bool
	if !testwait.Until(10*time.Second, func() bool {
		l, ok = b.Load()
		return ok && l.At.After(after) && l.Capacity == 2 && l.Running == 0
	}) {
		t.Fatalf("load after the calls: %+v %v (want capacity 2 from /props, nothing running)", l, ok)
	}
}

func ptr[T any](v T) *T { return &v }

// A prompt longer than the server's context window is the client's fault
// and says so, naming the prompt; for a chat, the messages.
func TestLlamaServerContextOverflowIsInvalidArgument(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 256})
	b := newLlama(t, nil, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	long := strings.Repeat("hello world ", 400)
	_, err := b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: long, MaxTokens: 4})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "prompt: longer than the context window") {
		t.Fatalf("unary overflow: %v", err)
	}
	_, err = collect(ctx, b, &pb.GenerateRequest{Model: "tiny", Messages: chat(long), MaxTokens: 4})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "messages: longer than the context window") {
		t.Fatalf("stream overflow: %v", err)
	}
	if n := b.eps.list()[0].outstanding.Load(); n != 0 {
		t.Fatalf("outstanding %d after the calls", n)
	}
}

// Continuation on a real server: a prompt continues from prompt + text, a
// chat from a trailing assistant turn (llama.cpp continues it as a prefill);
// only the remaining tokens are generated and only the new text returned.
func TestLlamaServerContinuation(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 1})
	b := newLlama(t, nil, srv)
	if !b.Capabilities().Continuation {
		t.Fatal("llamacpp pools must claim continuation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seed := &pb.SamplingParameters{Temperature: ptr[float32](0), Seed: ptr[int64](1)}
	for _, base := range []*pb.GenerateRequest{
		{Model: "tiny", Prompt: "The quick brown fox", MaxTokens: 10, Sampling: seed},
		{Model: "tiny", Messages: chat("Say something."), MaxTokens: 10, Sampling: seed},
	} {
		full, err := collect(ctx, b, base)
		if err != nil {
			t.Fatal(err)
		}
		var head strings.Builder
		for _, c := range full[:4] {
			head.WriteString(c.Text)
		}
		req := &pb.GenerateRequest{Model: base.Model, Prompt: base.Prompt, Messages: base.Messages, MaxTokens: 10, Sampling: seed,
			Continuation: &pb.Continuation{GeneratedText: head.String(), GeneratedTokens: 4}}
		rest, err := b.Generate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if rest.Usage.OutputTokens != 6 || strings.HasPrefix(rest.Text, head.String()) || rest.Text == "" {
			t.Fatalf("continuation of %q: %+v", head.String(), rest)
		}
		if rest.Usage.InputTokens <= full[len(full)-1].Usage.InputTokens {
			t.Fatalf("continuation input %d tokens, not more than the original %d: the generated text was not sent", rest.Usage.InputTokens, full[len(full)-1].Usage.InputTokens)
		}
	}
}

// A server killed mid-stream is a pool failure (UNAVAILABLE), never a
// silently short stream; a server with all its slots busy shows it in the
// load report before calls queue there.
func TestLlamaServerKilledMidStreamAndBusySlots(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 4096})
	b := newLlama(t, nil, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	busy := make(chan struct{})
	got := 0
	errc := make(chan error, 1)
	go func() {
		errc <- b.GenerateStream(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: "go on", MaxTokens: 3000}, func(c *pb.GenerateChunk) error {
			got++
			if got == 5 {
				close(busy)
			}
			return nil
		})
	}()
	<-busy
	var l backends.Load
	var ok bool
	if !testwait.Until(10*time.Second, func() bool {
		l, ok = b.Load()
		return ok && l.Running == 1 && l.Capacity == 1
	}) {
		t.Fatalf("busy server's load never showed 1 running of 1: %+v %v", l, ok)
	}
	srv.Kill()
	err := <-errc
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream from a killed server: %v (after %d chunks)", err, got)
	}
	if _, err := b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: "x", MaxTokens: 2}); status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a dead server: %v", err)
	}
	if err := b.Check(ctx); err == nil {
		t.Fatal("check passed on a dead server")
	}
}

// A real llama-server with prompt caching (its default) reports the prompt
// tokens it took from its cache as usage.prompt_tokens_details.cached_tokens:
// the adapter carries them as Usage.CachedInputTokens, unary and streamed.
func TestLlamaServerReportsCachedPromptTokens(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 1024})
	b := newLlama(t, nil, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prompt := strings.Repeat("the same long prefix ", 40)
	first, err := b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: prompt, MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if first.Usage.GetCachedInputTokens() != 0 {
		t.Fatalf("first call: %d cached tokens of %d, want none", first.Usage.GetCachedInputTokens(), first.Usage.GetInputTokens())
	}
	again, err := b.Generate(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: prompt, MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if c, in := again.Usage.GetCachedInputTokens(), again.Usage.GetInputTokens(); c < in/2 || c > in {
		t.Fatalf("same prompt again: %d cached of %d prompt tokens, want most of them", c, in)
	}
	chunks, err := collect(ctx, b, &pb.GenerateRequest{Model: "tiny", Prompt: prompt + "and a new tail", MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	u := chunks[len(chunks)-1].Usage
	if c := u.GetCachedInputTokens(); c < again.Usage.GetInputTokens()/2 || c >= u.GetInputTokens() {
		t.Fatalf("stream sharing the prefix: %d cached of %d prompt tokens", c, u.GetInputTokens())
	}
}

// A pool of two real llama-servers: prompts sharing their leading blocks go
// to the same server (endpoint affinity within the load bound), so every
// call after the first finds the shared prefix in that server's cache.
func TestLlamaServerEndpointAffinityKeepsThePrefixCached(t *testing.T) {
	a := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 4096})
	b := llamatest.Start(t, llamatest.Options{Slots: 1, CtxSize: 4096})
	be := newLlama(t, nil, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prefix := strings.Repeat("the same long shared prefix ", 160) // > two 2 KiB blocks
	for i := range 6 {
		resp, err := be.Generate(ctx, &pb.GenerateRequest{Model: "tiny", Prompt: prefix + "tail " + strings.Repeat("x", i+1), MaxTokens: 2})
		if err != nil {
			t.Fatal(err)
		}
		u := resp.GetUsage()
		if i > 0 && u.GetCachedInputTokens() < u.GetInputTokens()/2 {
			t.Fatalf("call %d: %d of %d prompt tokens cached: the shared prefix went to a server without it", i, u.GetCachedInputTokens(), u.GetInputTokens())
		}
	}
}
