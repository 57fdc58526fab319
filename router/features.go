package router

import (
	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

// requestFeatures is what req needs beyond plain generation: the core never
// sends it to a pool whose adapter lacks one (dispatch.Features).
func requestFeatures(req *pb.GenerateRequest) dispatch.Features {
	var f dispatch.Features
	if len(req.GetTools()) > 0 || req.GetToolChoice() != nil || req.ParallelToolCalls != nil {
		f |= dispatch.NeedTools
	}
	for _, m := range req.GetMessages() {
		if m.GetRole() == "tool" || len(m.GetToolCalls()) > 0 {
			f |= dispatch.NeedTools
		}
	}
	if t := req.GetResponseFormat().GetType(); t != "" && t != "text" {
		f |= dispatch.NeedResponseFormat
	}
	if req.GetLogprobs() {
		f |= dispatch.NeedLogprobs
	}
	if sp := req.GetSampling(); sp != nil && sp.TopK != nil {
		f |= dispatch.NeedTopK
	}
	return f
}

// capsFeatures is what an adapter offers.
func capsFeatures(c backends.Capabilities) dispatch.Features {
	var f dispatch.Features
	if c.Tools {
		f |= dispatch.NeedTools
	}
	if c.ResponseFormat {
		f |= dispatch.NeedResponseFormat
	}
	if c.Logprobs {
		f |= dispatch.NeedLogprobs
	}
	if c.Embeddings {
		f |= dispatch.NeedEmbeddings
	}
	if !c.NoTopK {
		f |= dispatch.NeedTopK
	}
	return f
}
