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
	case pb.FinishReason_FINISH_REASON_TOOL_CALLS:
		return "tool_calls"
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
	Logprobs     *chatLogprobs   `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type assistantOutput struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"` // null when the answer is tool calls only
	Refusal   *string        `json:"refusal"`
	ToolCalls []toolCallJSON `json:"tool_calls,omitempty"`
}

// chatLogprobs is a chat choice's logprobs: {"content": [...]}.
type chatLogprobs struct {
	Content []tokenLogprob `json:"content"`
	Refusal []tokenLogprob `json:"refusal"`
}

type tokenLogprob struct {
	Token       string        `json:"token"`
	Logprob     float32       `json:"logprob"`
	Bytes       []int         `json:"bytes"`
	TopLogprobs []topLogprobJ `json:"top_logprobs"`
}

type topLogprobJ struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

func intBytes(b []byte) []int {
	if b == nil {
		return nil
	}
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}

// toChatLogprobs is OpenAI's chat logprobs for lp (nil when none).
func toChatLogprobs(lp []*pb.TokenLogprob) *chatLogprobs {
	if len(lp) == 0 {
		return nil
	}
	out := &chatLogprobs{Content: make([]tokenLogprob, 0, len(lp)), Refusal: []tokenLogprob{}}
	for _, t := range lp {
		e := tokenLogprob{Token: t.GetToken(), Logprob: t.GetLogprob(), Bytes: intBytes(t.GetBytes()), TopLogprobs: []topLogprobJ{}}
		for _, a := range t.GetTopLogprobs() {
			e.TopLogprobs = append(e.TopLogprobs, topLogprobJ{Token: a.GetToken(), Logprob: a.GetLogprob(), Bytes: intBytes(a.GetBytes())})
		}
		out.Content = append(out.Content, e)
	}
	return out
}

// textLogprobs is the completions endpoint's logprobs object.
type textLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// toTextLogprobs is OpenAI's completions logprobs for lp; offset is where
// the first token starts in the completion's text.
func toTextLogprobs(lp []*pb.TokenLogprob, offset int) *textLogprobs {
	if len(lp) == 0 {
		return nil
	}
	out := &textLogprobs{}
	for _, t := range lp {
		out.Tokens = append(out.Tokens, t.GetToken())
		out.TokenLogprobs = append(out.TokenLogprobs, t.GetLogprob())
		top := map[string]float32{}
		for _, a := range t.GetTopLogprobs() {
			top[a.GetToken()] = a.GetLogprob()
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(t.GetToken())
	}
	return out
}

// toToolCalls is OpenAI's tool_calls for a whole answer.
func toToolCalls(calls []*pb.ToolCall) []toolCallJSON {
	var out []toolCallJSON
	for _, c := range calls {
		out = append(out, toolCallJSON{ID: c.GetId(), Type: "function", Function: functionCall{Name: c.GetName(), Arguments: c.GetArguments()}})
	}
	return out
}

// toToolCallDeltas is OpenAI's streamed tool_calls: the first piece of a
// call carries id, type and name; later ones the index and arguments only.
func toToolCallDeltas(ds []*pb.ToolCallDelta) []toolCallJSON {
	var out []toolCallJSON
	for _, d := range ds {
		i := int(d.GetIndex())
		tc := toolCallJSON{Index: &i, ID: d.GetId(), Function: functionCall{Name: d.GetName(), Arguments: d.GetArguments()}}
		if d.GetId() != "" || d.GetName() != "" {
			tc.Type = "function"
		}
		out = append(out, tc)
	}
	return out
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
	Index        int           `json:"index"`
	Delta        delta         `json:"delta"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type delta struct {
	Role      string         `json:"role,omitempty"`
	Content   *string        `json:"content,omitempty"`
	ToolCalls []toolCallJSON `json:"tool_calls,omitempty"`
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
	Text         string        `json:"text"`
	Index        int           `json:"index"`
	Logprobs     *textLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
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
