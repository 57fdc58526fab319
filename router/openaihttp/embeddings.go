package openaihttp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"

	"github.com/switchyard-dev/switchyard/internal/httpedge"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/edgehttp"
)

// RPCEmbeddings is the rpc label of POST /v1/embeddings.
const RPCEmbeddings = "http_embeddings"

// embeddingRequest is the body of POST /v1/embeddings.
type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int64          `json:"dimensions"`
	User           string          `json:"user"`
}

var embeddingFields = []string{"model", "input", "encoding_format", "dimensions", "user"}

// embeddingInput accepts a string or an array of strings (token arrays are refused).
func embeddingInput(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badField("input", "required")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField("input", "not a valid JSON string")
		}
		return []string{s}, nil
	}
	var arr []string
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, badField("input", "must be a string or an array of strings (token arrays are not served: token ids differ between the pools' tokenizers)")
	}
	return arr, nil
}

// parseEmbedding turns an embeddings body and its headers into a request.
func parseEmbedding(body []byte, h http.Header) (*pb.EmbedRequest, bool, *parsed, error) {
	var er embeddingRequest
	if err := decodeJSON(body, &er); err != nil {
		return nil, false, nil, err
	}
	if err := checkFields(body, embeddingFields); err != nil {
		return nil, false, nil, err
	}
	in, err := embeddingInput(er.Input)
	if err != nil {
		return nil, false, nil, err
	}
	b64 := false
	switch er.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		return nil, false, nil, badField("encoding_format", "must be float or base64, got %s", quote(er.EncodingFormat))
	}
	// The routing headers, priority, request id and timeout, read as for completions.
	p, err := parseCommon(&commonRequest{Model: er.Model, User: er.User}, h, 1)
	if err != nil {
		return nil, false, nil, err
	}
	req := &pb.EmbedRequest{Model: er.Model, Input: in, Priority: p.req.GetPriority(), Routing: p.req.GetRouting(), RequestId: p.req.GetRequestId()}
	if er.Dimensions != nil {
		if *er.Dimensions < 1 || *er.Dimensions > math.MaxInt32 {
			return nil, false, nil, badField("dimensions", "must be at least 1, got %d", *er.Dimensions)
		}
		req.Dimensions = int32(*er.Dimensions)
	}
	return req, b64, p, nil
}

// embeddingList is the answer of POST /v1/embeddings.
type embeddingList struct {
	Object     string          `json:"object"`
	Data       []embeddingJSON `json:"data"`
	Model      string          `json:"model"`
	Usage      embeddingUsage  `json:"usage"`
	Switchyard *routeInfo      `json:"switchyard,omitempty"`
}

type embeddingJSON struct {
	Object    string `json:"object"`
	Index     int32  `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingUsage struct {
	PromptTokens int32 `json:"prompt_tokens"`
	TotalTokens  int32 `json:"total_tokens"`
}

// embeddings serves POST /v1/embeddings through Server.EmbedAs: the same
// authentication, routing, capacity and failover as completions.
func (h *Handler) embeddings(w http.ResponseWriter, r *http.Request) {
	ctx, span := h.startSpan(r, "/v1/embeddings")
	status := http.StatusOK
	defer func() { endSpan(span, status) }()
	fail := func(e *httpError) {
		status = e.status
		writeError(w, e)
	}
	caller := edgehttp.Caller(r.Header)
	if e := h.authenticate(ctx, caller); e != nil {
		fail(e)
		return
	}
	body, e := h.readBody(w, r)
	if e != nil {
		fail(e)
		return
	}
	httpedge.Trust(ctx)
	req, b64, p, err := parseEmbedding(body, r.Header)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			fail(fromFieldError(fe))
		} else {
			fail(newHTTPError(http.StatusBadRequest, typeInvalidRequest, "invalid_value", "", err.Error()))
		}
		return
	}
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	resp, err := h.opts.Router.EmbedAs(ctx, router.CallInfo{RPC: RPCEmbeddings, Caller: caller}, req)
	if err != nil {
		e := fromError(err, nil)
		if e.status == http.StatusBadRequest && e.body.Param != nil && *e.body.Param == "prompt" {
			e.body.Param = strp("input")
		}
		fail(e)
		return
	}
	hdr := w.Header()
	hdr.Set(HeaderRequestID, resp.GetRequestId())
	setRouteHeaders(hdr, resp.GetRoute())
	out := embeddingList{Object: "list", Model: req.GetModel(), Data: make([]embeddingJSON, 0, len(resp.GetEmbeddings())),
		Usage:      embeddingUsage{PromptTokens: resp.GetUsage().GetInputTokens(), TotalTokens: resp.GetUsage().GetInputTokens()},
		Switchyard: toRouteInfo(resp.GetRoute(), resp.GetRequestId())}
	for _, e := range resp.GetEmbeddings() {
		var v any = e.GetValues()
		if b64 {
			buf := make([]byte, 4*len(e.GetValues()))
			for i, f := range e.GetValues() {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(f))
			}
			v = base64.StdEncoding.EncodeToString(buf)
		}
		out.Data = append(out.Data, embeddingJSON{Object: "embedding", Index: e.GetIndex(), Embedding: v})
	}
	writeJSON(w, http.StatusOK, out)
}
