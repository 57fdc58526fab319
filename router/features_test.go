package router

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/internal/grpccode"
)

func toolReq() *pb.GenerateRequest {
	return &pb.GenerateRequest{Model: "m", MaxTokens: 50, Messages: []*pb.ChatMessage{{Role: "user", Content: "weather?"}},
		Tools: []*pb.Tool{{Name: "get_weather", ParametersJson: `{"type":"object"}`}}}
}

var allCaps = backends.Capabilities{Tools: true, ResponseFormat: true, Logprobs: true}

// A stream that broke after a piece of a tool call reached the client ends
// with UNAVAILABLE saying so, and no other pool is asked to continue it;
// one that broke before any tool call continues on another pool as before.
func TestToolCallsUnderFault(t *testing.T) {
	t.Run("broken mid tool call", func(t *testing.T) {
		a := fake("a", true, step{tokens: 3, fail: codes.Unavailable, tool: true})
		b := fake("b", true, ok(2))
		a.caps, b.caps = allCaps, allCaps
		df := newDispatchFleet(t, "", fakePool{backend: a}, fakePool{backend: b})
		var pieces []string
		err := df.rt.CompleteStreamAs(tctx(t), CallInfo{RPC: "test"}, toolReq(), func(ch *pb.GenerateChunk) error {
			for _, d := range ch.GetToolCalls() {
				pieces = append(pieces, d.GetArguments())
			}
			return nil
		})
		if grpccode.Of(err) != codes.Unavailable || !strings.Contains(err.Error(), "middle of a tool call") {
			t.Fatalf("err %v, want UNAVAILABLE naming the broken tool call", err)
		}
		if len(pieces) != 3 {
			t.Fatalf("client got %d tool-call pieces, want the 3 sent before the break", len(pieces))
		}
		if b.ncalls() != 0 {
			t.Fatalf("pool b was asked to continue a tool call")
		}
	})
	t.Run("broken before any tool call continues", func(t *testing.T) {
		a := fake("a", true, failAfter(2, codes.Unavailable))
		b := fake("b", true, step{tokens: 2, tool: true})
		a.caps, b.caps = allCaps, allCaps
		df := newDispatchFleet(t, "", fakePool{backend: a}, fakePool{backend: b})
		var text strings.Builder
		calls := 0
		err := df.rt.CompleteStreamAs(tctx(t), CallInfo{RPC: "test"}, toolReq(), func(ch *pb.GenerateChunk) error {
			text.WriteString(ch.GetText())
			calls += len(ch.GetToolCalls())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if text.String() != "a0 a1 " || calls != 2 {
			t.Fatalf("client saw text %q and %d tool-call pieces, want a0 a1 and 2", text.String(), calls)
		}
		if got := b.calls[0].GetContinuation().GetGeneratedTokens(); got != 2 {
			t.Fatalf("b continued from %d tokens, want 2", got)
		}
	})
}

// A pool whose adapter lacks a feature the call uses is never sent it; when
// no pool serving the model has it, INVALID_ARGUMENT names the field.
func TestPoolsLackingAFeatureAreSkippedOrTheFieldRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   func() *pb.GenerateRequest
		field string
	}{
		{"tools", toolReq, "tools"},
		{"tool result turn", func() *pb.GenerateRequest {
			r := toolReq()
			r.Tools = nil
			r.Messages = append(r.Messages, &pb.ChatMessage{Role: "assistant", ToolCalls: []*pb.ToolCall{{Id: "c1", Name: "get_weather", Arguments: "{}"}}},
				&pb.ChatMessage{Role: "tool", ToolCallId: "c1", Content: "sunny"})
			return r
		}, "tools"},
		{"response_format", func() *pb.GenerateRequest {
			r := &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 5}
			r.ResponseFormat = &pb.ResponseFormat{Type: "json_object"}
			return r
		}, "response_format"},
		{"logprobs", func() *pb.GenerateRequest {
			r := &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 5}
			r.Logprobs = true
			return r
		}, "logprobs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fake("a", true, ok(2))
			b := fake("b", true, ok(2))
			b.caps = allCaps
			df := newDispatchFleet(t, "", fakePool{backend: a}, fakePool{backend: b})
			r := tc.req()
			r.Model = "m"
			resp, err := df.rt.CompleteAs(tctx(t), CallInfo{RPC: "test"}, r)
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetRoute().GetPool() != "b" || a.ncalls() != 0 {
				t.Fatalf("served by %s, a called %d times; want b only", resp.GetRoute().GetPool(), a.ncalls())
			}
			only := fake("a", true, ok(2))
			df = newDispatchFleet(t, "", fakePool{backend: only})
			_, err = df.rt.CompleteAs(tctx(t), CallInfo{RPC: "test"}, r)
			if grpccode.Of(err) != codes.InvalidArgument || fieldOf(err) != tc.field {
				t.Fatalf("err %v (field %q), want INVALID_ARGUMENT on %s", err, fieldOf(err), tc.field)
			}
			if only.ncalls() != 0 {
				t.Fatal("the pool lacking the feature was called")
			}
		})
	}
}

// fieldOf is the field err names first (a *dispatch.InvalidError's).
func fieldOf(err error) string {
	var inv *dispatch.InvalidError
	if errors.As(err, &inv) && len(inv.Fields) > 0 {
		return inv.Fields[0]
	}
	return ""
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A pool whose server has no top_k is never sent sampling.top_k; with no
// pool left, INVALID_ARGUMENT names it.
func TestTopKOnlyWherePassedOn(t *testing.T) {
	k := int32(20)
	r := &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 5, Sampling: &pb.SamplingParameters{TopK: &k}}
	a := fake("a", true, ok(2))
	a.caps.NoTopK = true
	b := fake("b", true, ok(2))
	df := newDispatchFleet(t, "", fakePool{backend: a}, fakePool{backend: b})
	resp, err := df.rt.CompleteAs(tctx(t), CallInfo{RPC: "test"}, r)
	if err != nil || resp.GetRoute().GetPool() != "b" || a.ncalls() != 0 {
		t.Fatalf("served by %s (%v), a called %d times", resp.GetRoute().GetPool(), err, a.ncalls())
	}
	only := fake("a", true, ok(2))
	only.caps.NoTopK = true
	df = newDispatchFleet(t, "", fakePool{backend: only})
	_, err = df.rt.CompleteAs(tctx(t), CallInfo{RPC: "test"}, r)
	if grpccode.Of(err) != codes.InvalidArgument || fieldOf(err) != "sampling.top_k" || only.ncalls() != 0 {
		t.Fatalf("err %v (field %q)", err, fieldOf(err))
	}
	// Without top_k the same pool serves.
	if _, err := df.rt.CompleteAs(tctx(t), CallInfo{RPC: "test"}, &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 5}); err != nil {
		t.Fatal(err)
	}
}
