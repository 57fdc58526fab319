// Package backendtest is the contract every backends.Backend adapter
// passes (sim, grpc, openai): the last chunk alone carries usage and finish
// reason and the chunks' tokens add up to it, a cancelled or expired call
// returns promptly, a failing send stops the stream, errors come in the
// classes the router acts on, continuation works where it is claimed, and
// the backend is safe for concurrent use and fails cleanly after Close.
//
// An adapter's test calls Run with a Harness that builds its backends
// against real servers.
package backendtest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Harness tells the suite how to reach one adapter's backends.
type Harness struct {
	// New returns a working backend serving Model. The suite closes it.
	New func(t *testing.T) backends.Backend
	// Model to ask for.
	Model string
	// LongMaxTokens is a max_tokens the backend takes well over a second to
	// produce (cancellation is checked on it).
	LongMaxTokens int32
	// Broken returns a backend whose server fails (down, or in an outage):
	// its calls must be UNAVAILABLE, promptly, and Check must fail.
	Broken func(t *testing.T) backends.Backend
	// Full, when set, returns a backend whose server is out of room: calls
	// must be RESOURCE_EXHAUSTED (a shortage, never a failure).
	Full func(t *testing.T) backends.Backend
	// ClientFault is a request the backend must refuse as the client's
	// fault (INVALID_ARGUMENT), e.g. an input over the context window.
	ClientFault *pb.GenerateRequest
	// Deterministic: the same request with sampling temperature 0 and a
	// seed yields the same text, so a continuation's text can be checked
	// against the uncut answer. False checks token counts only.
	Deterministic bool
}

// Prompt bounds: how long a cancelled call may take to return.
const promptly = 3 * time.Second

// Run runs the contract.
func Run(t *testing.T, h Harness) {
	t.Run("final chunk carries usage and finish reason", func(t *testing.T) { finalChunk(t, h) })
	t.Run("cancellation returns promptly", func(t *testing.T) { cancellation(t, h) })
	t.Run("failing send stops the stream", func(t *testing.T) { sendError(t, h) })
	t.Run("error classes", func(t *testing.T) { errorClasses(t, h) })
	t.Run("continuation where claimed", func(t *testing.T) { continuation(t, h) })
	t.Run("concurrent use", func(t *testing.T) { concurrent(t, h) })
	t.Run("calls after close fail", func(t *testing.T) { afterClose(t, h) })
}

func newBackend(t *testing.T, f func(t *testing.T) backends.Backend) backends.Backend {
	t.Helper()
	b := f(t)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Stream runs a stream and checks the final chunk rule: every chunk before
// the last has neither usage nor finish reason, the last has both, and the
// chunks' tokens add up to its output tokens. It returns the chunks.
func Stream(t *testing.T, ctx context.Context, b backends.Backend, req *pb.GenerateRequest) []*pb.GenerateChunk {
	t.Helper()
	var chunks []*pb.GenerateChunk
	err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error {
		chunks = append(chunks, c)
		return nil
	})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(chunks) == 0 {
		t.Fatal("stream sent no chunk")
	}
	var tokens int32
	for i, c := range chunks {
		last := i == len(chunks)-1
		final := c.GetUsage() != nil || c.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED
		if final != last {
			t.Fatalf("chunk %d of %d: usage %v, finish %v: only the last chunk carries them, and it must", i, len(chunks), c.GetUsage(), c.GetFinishReason())
		}
		if c.GetTokens() < 0 {
			t.Fatalf("chunk %d: %d tokens", i, c.GetTokens())
		}
		tokens += c.GetTokens()
	}
	final := chunks[len(chunks)-1]
	if final.GetUsage() == nil || final.GetFinishReason() == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		t.Fatalf("final chunk %+v lacks usage or finish reason", final)
	}
	if tokens != final.GetUsage().GetOutputTokens() {
		t.Fatalf("chunks carry %d tokens, final usage says %d", tokens, final.GetUsage().GetOutputTokens())
	}
	return chunks
}

func text(chunks []*pb.GenerateChunk) string {
	var b strings.Builder
	for _, c := range chunks {
		b.WriteString(c.GetText())
	}
	return b.String()
}

func finalChunk(t *testing.T, h Harness) {
	b := newBackend(t, h.New)
	ctx := ctxFor(t, 30*time.Second)
	req := &pb.GenerateRequest{Model: h.Model, Prompt: "The contract says", MaxTokens: 8}
	chunks := Stream(t, ctx, b, req)
	if out := chunks[len(chunks)-1].GetUsage().GetOutputTokens(); out < 1 || out > req.MaxTokens {
		t.Fatalf("stream output %d tokens for max_tokens %d", out, req.MaxTokens)
	}
	resp, err := b.Generate(ctx, req)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	if resp.GetUsage() == nil || resp.GetUsage().GetOutputTokens() < 1 || resp.GetUsage().GetOutputTokens() > req.MaxTokens || resp.GetFinishReason() == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		t.Fatalf("unary %+v: want usage within max_tokens and a finish reason", resp)
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("check on a working backend: %v", err)
	}
}

// ctxErr says whether err reports the caller's own end.
func ctxErr(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	c := status.Code(err)
	return c == codes.Canceled || c == codes.DeadlineExceeded
}

func cancellation(t *testing.T, h Harness) {
	b := newBackend(t, h.New)
	req := &pb.GenerateRequest{Model: h.Model, Prompt: "Go on and on", MaxTokens: h.LongMaxTokens}

	ctx, cancel := context.WithCancel(ctxFor(t, 30*time.Second))
	var cancelledAt time.Time
	err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error {
		if cancelledAt.IsZero() {
			cancelledAt = time.Now()
			cancel()
		}
		return nil
	})
	if cancelledAt.IsZero() {
		t.Fatalf("stream ended before its first chunk: %v", err)
	}
	if took := time.Since(cancelledAt); !ctxErr(err) || took > promptly {
		t.Fatalf("cancelled stream returned %v after %s; want the context's error within %s", err, took, promptly)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer dcancel()
	start := time.Now()
	_, err = b.Generate(dctx, req)
	if took := time.Since(start); !ctxErr(err) || took > promptly {
		t.Fatalf("unary call past its deadline returned %v after %s; want the context's error within %s", err, took, promptly)
	}
}

func sendError(t *testing.T, h Harness) {
	b := newBackend(t, h.New)
	gone := errors.New("client went away")
	calls := 0
	start := time.Now()
	err := b.GenerateStream(ctxFor(t, 30*time.Second), &pb.GenerateRequest{Model: h.Model, Prompt: "Go on", MaxTokens: h.LongMaxTokens}, func(*pb.GenerateChunk) error {
		calls++
		return gone
	})
	if !errors.Is(err, gone) || calls != 1 || time.Since(start) > promptly+time.Second {
		t.Fatalf("send failed: stream returned %v after %d sends in %s; want send's error after 1", err, calls, time.Since(start))
	}
}

func errorClasses(t *testing.T, h Harness) {
	ctx := ctxFor(t, 30*time.Second)
	req := &pb.GenerateRequest{Model: h.Model, Prompt: "hello", MaxTokens: 4}
	if h.Broken != nil {
		b := newBackend(t, h.Broken)
		start := time.Now()
		if _, err := b.Generate(ctx, req); status.Code(err) != codes.Unavailable {
			t.Fatalf("broken backend: unary %v, want UNAVAILABLE", err)
		}
		err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error {
			if c.GetUsage() != nil {
				t.Errorf("broken backend sent a final chunk %+v", c)
			}
			return nil
		})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("broken backend: stream %v, want UNAVAILABLE", err)
		}
		if took := time.Since(start); took > promptly {
			t.Fatalf("broken backend took %s to fail", took)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := b.Check(cctx); err == nil {
			t.Fatal("check passed on a broken backend")
		}
	}
	if h.Full != nil {
		b := newBackend(t, h.Full)
		if _, err := b.Generate(ctx, req); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("full backend: %v, want RESOURCE_EXHAUSTED", err)
		}
	}
	if h.ClientFault != nil {
		b := newBackend(t, h.New)
		if _, err := b.Generate(ctx, h.ClientFault); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("client fault: unary %v, want INVALID_ARGUMENT", err)
		}
		if err := b.GenerateStream(ctx, h.ClientFault, func(*pb.GenerateChunk) error { return nil }); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("client fault: stream %v, want INVALID_ARGUMENT", err)
		}
	}
}

func continuation(t *testing.T, h Harness) {
	b := newBackend(t, h.New)
	if !b.Capabilities().Continuation {
		return // nothing claimed, nothing to check
	}
	ctx := ctxFor(t, 30*time.Second)
	zero, seed := float32(0), int64(42)
	base := &pb.GenerateRequest{Model: h.Model, Prompt: "Continue this story", MaxTokens: 10,
		Sampling: &pb.SamplingParameters{Temperature: &zero, Seed: &seed}}
	full := Stream(t, ctx, b, base)
	if out := full[len(full)-1].GetUsage().GetOutputTokens(); out != base.MaxTokens {
		t.Fatalf("uncut stream produced %d tokens, want %d (the continuation check needs a full-length answer)", out, base.MaxTokens)
	}
	var head []*pb.GenerateChunk
	var sent int32
	for _, c := range full {
		if sent >= 4 {
			break
		}
		head = append(head, c)
		sent += c.GetTokens()
	}
	cont := &pb.GenerateRequest{Model: h.Model, Prompt: base.Prompt, MaxTokens: base.MaxTokens, Sampling: base.Sampling,
		Continuation: &pb.Continuation{GeneratedText: text(head), GeneratedTokens: sent}}
	rest := Stream(t, ctx, b, cont)
	if out := rest[len(rest)-1].GetUsage().GetOutputTokens(); out != base.MaxTokens-sent {
		t.Fatalf("continuation after %d tokens produced %d, want the remaining %d", sent, out, base.MaxTokens-sent)
	}
	if h.Deterministic && text(head)+text(rest) != text(full) {
		t.Fatalf("continued text %q + %q differs from the uncut %q", text(head), text(rest), text(full))
	}
	resp, err := b.Generate(ctx, cont)
	if err != nil || resp.GetUsage().GetOutputTokens() != base.MaxTokens-sent {
		t.Fatalf("unary continuation: %+v %v", resp, err)
	}
}

func concurrent(t *testing.T, h Harness) {
	b := newBackend(t, h.New)
	ctx := ctxFor(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				req := &pb.GenerateRequest{Model: h.Model, Prompt: "concurrent call", MaxTokens: 6}
				if (g+i)%2 == 0 {
					if _, err := b.Generate(ctx, req); err != nil {
						errs <- err
					}
					continue
				}
				var tokens int32
				err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error { tokens += c.GetTokens(); return nil })
				if err != nil {
					errs <- err
				} else if tokens < 1 || tokens > 6 {
					errs <- errors.New("stream token count out of range")
				}
			}
			if lr, ok := b.(backends.LoadReporter); ok {
				_, _ = lr.Load()
			}
			_ = b.Capabilities()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent call: %v", err)
	}
}

func afterClose(t *testing.T, h Harness) {
	b := h.New(t)
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ctx := ctxFor(t, 10*time.Second)
	req := &pb.GenerateRequest{Model: h.Model, Prompt: "closed", MaxTokens: 2}
	if _, err := b.Generate(ctx, req); err == nil {
		t.Fatal("generate after close succeeded")
	}
	if err := b.GenerateStream(ctx, req, func(*pb.GenerateChunk) error { return nil }); err == nil {
		t.Fatal("stream after close succeeded")
	}
}
