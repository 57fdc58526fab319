package openai

import (
	"context"
	"encoding/json"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

var _ backends.Embedder = (*Backend)(nil)

// WireEmbeddingRequest is the body of /v1/embeddings. The adapter always
// asks for floats; base64 is the front door's encoding for its clients.
type WireEmbeddingRequest struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format,omitempty"`
	Dimensions     int32    `json:"dimensions,omitempty"`
}

// WireEmbeddingResponse is its answer.
type WireEmbeddingResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
	Usage *WireUsage `json:"usage"`
}

// Embed implements backends.Embedder: POST /v1/embeddings with the pool's
// model name, the inputs as an array and encoding_format float. A server
// kind without embeddings is refused here too (the router never sends it
// one: Capabilities().Embeddings is false).
func (b *Backend) Embed(ctx context.Context, req *pb.EmbedRequest) (*pb.EmbedResponse, error) {
	if !b.cfg.traits.embeddings {
		return nil, status.Errorf(codes.FailedPrecondition, "pool %s: its server (%s) does not serve embeddings", b.cfg.pool, b.cfg.server)
	}
	w := WireEmbeddingRequest{Model: b.cfg.serverModel(req.GetModel()), Input: req.GetInput(), EncodingFormat: "float", Dimensions: req.GetDimensions()}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "encode request: %v", err)
	}
	if b.closed.Load() {
		return nil, status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	c, err := b.send(ctx, &built{path: EmbeddingsPath, body: body, field: "input"}, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	raw, err := io.ReadAll(io.LimitReader(c.resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, b.transportError(ctx, c, err)
	}
	if len(raw) > maxResponseBody {
		return nil, status.Errorf(codes.Unavailable, "pool %s endpoint %s: response larger than %d bytes", b.cfg.pool, c.ep.name, maxResponseBody)
	}
	var r WireEmbeddingResponse
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Data) != len(req.GetInput()) {
		return nil, status.Errorf(codes.Unavailable, "pool %s endpoint %s: response is not %d embeddings: %s", b.cfg.pool, c.ep.name, len(req.GetInput()), quote(string(raw)))
	}
	c.ep.succeeded()
	resp := &pb.EmbedResponse{Embeddings: make([]*pb.Embedding, len(r.Data)), Usage: &pb.Usage{}}
	for _, d := range r.Data {
		if d.Index < 0 || d.Index >= len(r.Data) || resp.Embeddings[d.Index] != nil {
			return nil, status.Errorf(codes.Unavailable, "pool %s endpoint %s: embedding index %d out of order", b.cfg.pool, c.ep.name, d.Index)
		}
		resp.Embeddings[d.Index] = &pb.Embedding{Index: int32(d.Index), Values: d.Embedding}
	}
	if r.Usage != nil {
		resp.Usage.InputTokens = clampTokens(r.Usage.PromptTokens)
	}
	return resp, nil
}
