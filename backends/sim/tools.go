package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// A simulated pool answers a chat that offers tools with a tool call when
// the model must or may call one: tool_choice "required" or a named
// function always; "auto" (or none given) unless the last turn is a tool
// result, so a conversation that sent results back gets a text answer;
// "none" never. The tool is the named one, else the first. The arguments
// are a JSON object with a value for each property of the tool's schema
// (strings of synthetic words sized to the call's max_tokens, numbers 1,
// booleans true), streamed in pieces of one token (4 bytes) as OpenAI-style
// servers stream them. A call whose arguments do not fit max_tokens ends
// with LENGTH and the arguments cut, as a real server's would.

// toolCall is the call a plan makes instead of text.
type toolCall struct {
	id, name, args string
}

// simTool picks the tool call for req, or nil for a text answer.
func simTool(req *pb.GenerateRequest, key uint64, maxTokens int) *toolCall {
	tools := req.GetTools()
	if len(tools) == 0 || len(req.GetMessages()) == 0 {
		return nil
	}
	tc := req.GetToolChoice()
	msgs := req.GetMessages()
	last := msgs[len(msgs)-1].GetRole()
	var pick *pb.Tool
	switch tc.GetMode() {
	case "none":
		return nil
	case "required":
		pick = tools[0]
	case "function":
		for _, t := range tools {
			if t.GetName() == tc.GetFunctionName() {
				pick = t
			}
		}
		if pick == nil {
			pick = tools[0]
		}
	default: // auto
		if last == "tool" {
			return nil
		}
		pick = tools[0]
	}
	return &toolCall{id: fmt.Sprintf("call_%016x", key), name: pick.GetName(), args: simArguments(pick.GetParametersJson(), key, maxTokens)}
}

// simArguments builds an arguments object for a JSON schema's properties.
func simArguments(schema string, key uint64, maxTokens int) string {
	var s struct {
		Properties map[string]struct {
			Type any `json:"type"`
		} `json:"properties"`
	}
	_ = json.Unmarshal([]byte(schema), &s) // a schema the router let through; anything else gets {}
	names := make([]string, 0, len(s.Properties))
	strs := 0
	for n, p := range s.Properties {
		names = append(names, n)
		if p.Type == "string" {
			strs++
		}
	}
	sort.Strings(names)
	// Each string gets an equal share of the tokens left after the framing.
	per := 1
	if strs > 0 {
		per = max(1, min(256, (maxTokens-2-4*len(names))/strs))
	}
	args := make(map[string]any, len(names))
	for i, n := range names {
		switch s.Properties[n].Type {
		case "string":
			var b strings.Builder
			for j := range per {
				b.WriteString(word(key+uint64(i), j))
			}
			args[n] = strings.TrimSpace(b.String())
		case "integer", "number":
			args[n] = 1
		case "boolean":
			args[n] = true
		case "array":
			args[n] = []any{}
		case "object":
			args[n] = map[string]any{}
		default:
			args[n] = nil
		}
	}
	out, _ := json.Marshal(args) // map keys come out sorted
	return string(out)
}

// toolTokens is how many one-token pieces args makes.
func toolTokens(args string) int {
	return max(1, (len(args)+backends.BytesPerToken-1)/backends.BytesPerToken)
}

// toolPiece is the text of tokens [from, to) of the call's arguments.
func toolPiece(args string, from, to int) string {
	lo, hi := min(from*backends.BytesPerToken, len(args)), min(to*backends.BytesPerToken, len(args))
	return args[lo:hi]
}

// Embed implements backends.Embedder: one deterministic unit vector of
// EmbeddingDimensions (or the request's dimensions) per input, derived from
// the model and the input, after the prefill time of the inputs on the
// pool's accelerator. Faults apply as to generation.
func (p *Pool) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	if req == nil || len(req.GetInput()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "input is required")
	}
	if len(p.models) > 0 {
		if _, ok := p.models[req.GetModel()]; !ok {
			return nil, status.Errorf(codes.NotFound, "pool %s: model %q is not served here", p.name, req.GetModel())
		}
	}
	dims := int(req.GetDimensions())
	if dims <= 0 {
		dims = EmbeddingDimensions
	}
	dims = min(dims, EmbeddingDimensions)
	tokens := 0
	for _, in := range req.GetInput() {
		tokens += backends.EstimateTokens(in)
	}
	brk, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.release()
	_, slow := p.step()
	if err := p.waitUntil(ctx, p.opts.Clock.Now().Add(p.scaled(p.prof.PrefillTime(tokens), ModelSizeFactor(req.GetModel())*slow)), brk); err != nil {
		return nil, err
	}
	resp := &pb.EmbedResponse{Usage: &pb.Usage{InputTokens: clamp32(tokens)}, Route: p.route(), RequestId: req.GetRequestId()}
	for i, in := range req.GetInput() {
		key := hash64(uint64(p.opts.Seed), req.GetModel(), in)
		v := make([]float32, dims)
		var norm float64
		for j := range v {
			x := hash64(key, fmt.Sprint(j))
			v[j] = float32(int64(x%2001)-1000) / 1000
			norm += float64(v[j]) * float64(v[j])
		}
		if norm > 0 {
			n := float32(math.Sqrt(norm))
			for j := range v {
				v[j] /= n
			}
		}
		resp.Embeddings = append(resp.Embeddings, &pb.Embedding{Index: int32(i), Values: v})
	}
	p.countServed()
	return resp, nil
}

// EmbeddingDimensions is the length of a simulated embedding.
const EmbeddingDimensions = 16

var _ backends.Embedder = (*Pool)(nil)
