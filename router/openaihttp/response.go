package openaihttp

import (
	"net/http"
	"strconv"
	"strings"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens        int32          `json:"prompt_tokens"`
	CompletionTokens    int32          `json:"completion_tokens"`
	TotalTokens         int32          `json:"total_tokens"`
	PromptTokensDetails *promptDetails `json:"prompt_tokens_details,omitempty"`
}

// promptDetails is usage.prompt_tokens_details: the prompt tokens the
// serving engine took from its prefix cache.
type promptDetails struct {
	CachedTokens int32 `json:"cached_tokens"`
}

func toUsage(u *pb.Usage) *usage {
	if u == nil {
		return nil
	}
	out := &usage{PromptTokens: u.GetInputTokens(), CompletionTokens: u.GetOutputTokens(), TotalTokens: u.GetInputTokens() + u.GetOutputTokens()}
	if c := u.GetCachedInputTokens(); c > 0 {
		out.PromptTokensDetails = &promptDetails{CachedTokens: c}
	}
	return out
}

// routeInfo is the route taken, as the "switchyard" extension field of a
// response body and of a stream's finishing chunk (OpenAI's clients ignore
// fields they do not know and keep them for callers who look).
type routeInfo struct {
	Pool        string   `json:"pool"`
	Cloud       string   `json:"cloud"`
	Region      string   `json:"region"`
	Accelerator string   `json:"accelerator"`
	Attempts    int32    `json:"attempts"`
	PoolsTried  []string `json:"pools_tried,omitempty"`
	Policy      string   `json:"policy,omitempty"`
	RequestID   string   `json:"request_id"`
}

func toRouteInfo(r *pb.Route, requestID string) *routeInfo {
	if r == nil {
		return nil
	}
	return &routeInfo{Pool: r.GetPool(), Cloud: r.GetCloud(), Region: r.GetRegion(), Accelerator: r.GetAccelerator(),
		Attempts: r.GetAttempts(), PoolsTried: r.GetPoolsTried(), Policy: r.GetPolicy(), RequestID: requestID}
}

// setRouteHeaders writes the route as X-Switchyard-* headers (or trailers,
// when called after the body of a stream).
func setRouteHeaders(h http.Header, r *pb.Route) {
	if r == nil {
		return
	}
	h.Set(HeaderPool, r.GetPool())
	h.Set(HeaderCloud, r.GetCloud())
	h.Set(HeaderRegion, r.GetRegion())
	h.Set(HeaderAccelerator, r.GetAccelerator())
	h.Set(HeaderAttempts, strconv.Itoa(int(r.GetAttempts())))
	if len(r.GetPoolsTried()) > 0 {
		h.Set(HeaderPoolsTried, strings.Join(r.GetPoolsTried(), ","))
	}
}

// finishReason maps the router's finish reason to OpenAI's.
func finishReason(f pb.FinishReason) string {
	switch f {
	case pb.FinishReason_FINISH_REASON_LENGTH:
		return "length"
	case pb.FinishReason_FINISH_REASON_CONTENT_FILTER:
		return "content_filter"
	default: // STOP, STOP_SEQUENCE
		return "stop"
	}
}

// Chat completion object (object "chat.completion").
type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage"`
	SystemFingerprint *string      `json:"system_fingerprint"`
	Switchyard        *routeInfo   `json:"switchyard,omitempty"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      assistantOutput `json:"message"`
	Logprobs     *struct{}       `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type assistantOutput struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

// Chat completion chunk object (object "chat.completion.chunk").
type chatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	SystemFingerprint *string           `json:"system_fingerprint"`
	Choices           []chatChunkChoice `json:"choices"`
	// Usage is omitted (nil), null ((*usage)(nil)) or the usage: null on
	// every chunk when include_usage is set, filled on the extra last chunk,
	// whose choices are empty.
	Usage      any        `json:"usage,omitempty"`
	Switchyard *routeInfo `json:"switchyard,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// Text completion object (object "text_completion"), also each streamed chunk.
type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint *string      `json:"system_fingerprint"`
	Choices           []textChoice `json:"choices"`
	// Usage: as chatChunk.Usage; always set on a whole (unstreamed) completion.
	Usage      any        `json:"usage,omitempty"`
	Switchyard *routeInfo `json:"switchyard,omitempty"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// Model object and list.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}
