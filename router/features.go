package router

import (
	"fmt"
	"strings"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// features are the optional backend capabilities a call needs
// (backends.Capabilities). A pool whose adapter lacks one is never sent the
// call: the dispatcher skips it, and when no pool serving the model is left
// the call is refused with INVALID_ARGUMENT naming the field, so nothing a
// client asked for is dropped in silence.
type features uint8

const (
	needTools features = 1 << iota
	needResponseFormat
	needLogprobs
	needEmbeddings
	needTopK
)

// requestFeatures is what req needs beyond plain generation.
func requestFeatures(req *pb.GenerateRequest) features {
	var f features
	if len(req.GetTools()) > 0 || req.GetToolChoice() != nil || req.ParallelToolCalls != nil {
		f |= needTools
	}
	for _, m := range req.GetMessages() {
		if m.GetRole() == "tool" || len(m.GetToolCalls()) > 0 {
			f |= needTools
		}
	}
	if t := req.GetResponseFormat().GetType(); t != "" && t != "text" {
		f |= needResponseFormat
	}
	if req.GetLogprobs() {
		f |= needLogprobs
	}
	if sp := req.GetSampling(); sp != nil && sp.TopK != nil {
		f |= needTopK
	}
	return f
}

// capsFeatures is what an adapter offers.
func capsFeatures(c backends.Capabilities) features {
	var f features
	if c.Tools {
		f |= needTools
	}
	if c.ResponseFormat {
		f |= needResponseFormat
	}
	if c.Logprobs {
		f |= needLogprobs
	}
	if c.Embeddings {
		f |= needEmbeddings
	}
	if !c.NoTopK {
		f |= needTopK
	}
	return f
}

// field names the request field of the first feature in f, for the error.
func (f features) field() string {
	switch {
	case f&needTools != 0:
		return "tools"
	case f&needResponseFormat != 0:
		return "response_format"
	case f&needLogprobs != 0:
		return "logprobs"
	case f&needEmbeddings != 0:
		return "model"
	case f&needTopK != 0:
		return "sampling.top_k"
	}
	return ""
}

func (f features) what() string {
	var s []string
	for _, x := range []struct {
		f    features
		name string
	}{{needTools, "tools"}, {needResponseFormat, "response_format"}, {needLogprobs, "logprobs"}, {needEmbeddings, "embeddings"}, {needTopK, "top_k"}} {
		if f&x.f != 0 {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, ", ")
}

// unsupported is the error when every pool serving the model lacks a
// feature the call needs (missing: what the last such pool lacked).
func unsupported(c *call, missing features, pool string) error {
	return invalid(missing.field(), "no pool serving model %q supports %s (pool %s's adapter does not pass it on; docs/backends.md lists what each server kind supports)", c.model, missing.what(), pool)
}

// errToolCallBroken is the end of a stream that broke after it began a tool
// call: arguments are never spliced from two pools.
func toolCallBroken(prog *progress, lastErr error) error {
	return fmt.Errorf("%w: stream broke in the middle of a tool call after %d tokens; a tool call is never continued on another pool: %w", errPoolFailed, prog.tokens, lastErr)
}
