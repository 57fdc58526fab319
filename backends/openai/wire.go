package openai

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The wire format of OpenAI-compatible servers, exported so every client of
// one in this module (this adapter, the load tester's front-door client)
// sends the same bodies and reads the same answers.

// Endpoint paths, relative to an API base that ends in /v1.
const (
	CompletionsPath     = "/completions"
	ChatCompletionsPath = "/chat/completions"
	EmbeddingsPath      = "/embeddings"
)

// WireMessage is one chat turn on the wire.
type WireMessage struct {
	Role       string         `json:"role"`
	Content    string         `json:"content"`
	Name       string         `json:"name,omitempty"`
	ToolCalls  []WireToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

// WireToolCall is a tool call: an assistant message's, an answer's, or a
// streamed piece of one (with Index; later pieces carry only arguments).
type WireToolCall struct {
	Index    *int             `json:"index,omitempty"`
	ID       string           `json:"id,omitempty"`
	Type     string           `json:"type,omitempty"`
	Function WireFunctionCall `json:"function"`
}

// WireFunctionCall is a tool call's function name and JSON arguments.
type WireFunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// WireTool is one entry of a request's tools.
type WireTool struct {
	Type     string       `json:"type"`
	Function WireFunction `json:"function"`
}

// WireFunction is a tool's function declaration.
type WireFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// WireResponseFormat is a request's response_format.
type WireResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema *WireJSONSchema `json:"json_schema,omitempty"`
}

// WireJSONSchema is response_format.json_schema.
type WireJSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict *bool           `json:"strict,omitempty"`
}

// StreamOptions is a streamed request's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// WireRequest is the body of /v1/completions and /v1/chat/completions. Fields
// a server does not know are left out where it would reject them.
type WireRequest struct {
	Model                string         `json:"model"`
	Prompt               *string        `json:"prompt,omitempty"`
	Messages             []WireMessage  `json:"messages,omitempty"`
	MaxTokens            int32          `json:"max_tokens,omitempty"`
	MaxCompletionTokens  int32          `json:"max_completion_tokens,omitempty"`
	Stream               bool           `json:"stream,omitempty"`
	StreamOptions        *StreamOptions `json:"stream_options,omitempty"`
	Temperature          *float32       `json:"temperature,omitempty"`
	TopP                 *float32       `json:"top_p,omitempty"`
	TopK                 *int32         `json:"top_k,omitempty"`
	Stop                 []string       `json:"stop,omitempty"`
	Seed                 *int64         `json:"seed,omitempty"`
	PresencePenalty      *float32       `json:"presence_penalty,omitempty"`
	FrequencyPenalty     *float32       `json:"frequency_penalty,omitempty"`
	ContinueFinalMessage *bool          `json:"continue_final_message,omitempty"`
	AddGenerationPrompt  *bool          `json:"add_generation_prompt,omitempty"`

	Tools             []WireTool          `json:"tools,omitempty"`
	ToolChoice        any                 `json:"tool_choice,omitempty"` // "auto", "none", "required" or {"type":"function",...}
	ParallelToolCalls *bool               `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *WireResponseFormat `json:"response_format,omitempty"`
	// Logprobs is a bool on /chat/completions and the number of
	// alternatives (0..5) on /completions.
	Logprobs    any    `json:"logprobs,omitempty"`
	TopLogprobs *int32 `json:"top_logprobs,omitempty"`
}

// NewWireRequest is the standard body for req and the path it goes to: the
// prompt to CompletionsPath, the messages to ChatCompletionsPath, with the
// request's model name, max_tokens, sampling parameters and, for a stream,
// stream_options.include_usage. A continuation is not applied: how a
// server continues is the adapter's choice (see poolConfig.build).
func NewWireRequest(req *pb.GenerateRequest, stream bool) (*WireRequest, string) {
	w := &WireRequest{Model: req.GetModel(), MaxTokens: req.GetMaxTokens(), Stream: stream}
	if stream {
		w.StreamOptions = &StreamOptions{IncludeUsage: true}
	}
	if sp := req.GetSampling(); sp != nil {
		w.Temperature, w.TopP, w.TopK, w.Seed = sp.Temperature, sp.TopP, sp.TopK, sp.Seed
		w.PresencePenalty, w.FrequencyPenalty = sp.PresencePenalty, sp.FrequencyPenalty
		w.Stop = sp.GetStop()
	}
	if rf := req.GetResponseFormat(); rf != nil && rf.GetType() != "" && rf.GetType() != "text" {
		w.ResponseFormat = &WireResponseFormat{Type: rf.GetType()}
		if rf.GetType() == "json_schema" {
			w.ResponseFormat.JSONSchema = &WireJSONSchema{Name: rf.GetSchemaName(), Schema: rawJSON(rf.GetSchemaJson()), Strict: rf.Strict}
		}
	}
	msgs := req.GetMessages()
	if len(msgs) == 0 {
		p := req.GetPrompt()
		w.Prompt = &p
		if req.GetLogprobs() {
			w.Logprobs = req.GetTopLogprobs()
		}
		return w, CompletionsPath
	}
	if req.GetLogprobs() {
		yes := true
		w.Logprobs, w.TopLogprobs = &yes, req.TopLogprobs
	}
	for _, t := range req.GetTools() {
		w.Tools = append(w.Tools, WireTool{Type: "function", Function: WireFunction{
			Name: t.GetName(), Description: t.GetDescription(), Parameters: rawJSON(t.GetParametersJson()), Strict: t.Strict,
		}})
	}
	if tc := req.GetToolChoice(); tc != nil && tc.GetMode() != "" {
		if tc.GetMode() == "function" {
			w.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": tc.GetFunctionName()}}
		} else {
			w.ToolChoice = tc.GetMode()
		}
	}
	w.ParallelToolCalls = req.ParallelToolCalls
	w.Messages = make([]WireMessage, 0, len(msgs)+1) // room for a continuation's turn
	for _, m := range msgs {
		wm := WireMessage{Role: m.GetRole(), Content: m.GetContent(), Name: m.GetName(), ToolCallID: m.GetToolCallId()}
		for _, c := range m.GetToolCalls() {
			wm.ToolCalls = append(wm.ToolCalls, WireToolCall{ID: c.GetId(), Type: "function", Function: WireFunctionCall{Name: c.GetName(), Arguments: c.GetArguments()}})
		}
		w.Messages = append(w.Messages, wm)
	}
	return w, ChatCompletionsPath
}

// rawJSON is JSON text as a raw message (nil when empty; the router checked it is JSON).
func rawJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// Encode is the JSON body (HTML characters not escaped).
func (w *WireRequest) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// built is a request ready to send.
type built struct {
	path string // "/completions" or "/chat/completions", under the endpoint's base
	body []byte
	// prefill is the trailing assistant text the server continues; servers
	// that echo it at the start of a unary reply have it cut off.
	prefill string
	// field names the client's input in errors: "prompt" or "messages".
	field string
	// affinity is the request's prefix key for endpoint choice (0: none).
	affinity uint64
}

// build turns a switchyard request into the server's request: the standard
// body (NewWireRequest) with the pool's model name, what its server kind
// accepts, and a continuation the way that server continues. A
// continuation asks for the remaining tokens only, after the text already
// delivered.
func (c *poolConfig) build(req *pb.GenerateRequest, stream bool) (*built, error) {
	cont := req.GetContinuation()
	genText := cont.GetGeneratedText()
	maxTokens := req.GetMaxTokens() - max(cont.GetGeneratedTokens(), 0)
	if maxTokens < 1 {
		maxTokens = 1
	}
	w, path := NewWireRequest(req, stream)
	w.Model, w.MaxTokens = c.serverModel(req.GetModel()), maxTokens
	if !c.traits.topK {
		w.TopK = nil
	}
	b := &built{path: path, field: "prompt"}
	msgs := req.GetMessages()
	switch {
	case len(msgs) == 0:
		p := req.GetPrompt() + genText
		w.Prompt = &p
	case genText != "" && c.traits.chatContinue == continueCompletion:
		// No chat continue option: the flattened chat on the completions endpoint.
		p := flatten(msgs) + genText
		w.Prompt, w.Messages, b.path, b.field = &p, nil, CompletionsPath, "messages"
	default:
		b.field = "messages"
		if c.traits.maxCompletionTokens {
			w.MaxCompletionTokens, w.MaxTokens = maxTokens, 0
		}
		last := &w.Messages[len(w.Messages)-1]
		trailing := last.Role == "assistant"
		if genText != "" {
			if c.traits.chatContinue == continueNone {
				// Not this pool's fault and not the client's: like a full pool,
				// the router moves on to one that can (and never ejects this one).
				return nil, status.Errorf(codes.ResourceExhausted, "pool %s: its server (%s) cannot continue a chat; another pool must", c.pool, c.server)
			}
			if trailing {
				last.Content += genText
			} else {
				w.Messages = append(w.Messages, WireMessage{Role: "assistant", Content: genText})
				trailing = true
			}
		}
		if trailing && c.traits.chatContinue != continueNone {
			b.prefill = w.Messages[len(w.Messages)-1].Content
			if c.traits.chatContinue == continueFlag {
				yes, no := true, false
				w.ContinueFinalMessage, w.AddGenerationPrompt = &yes, &no
			}
		}
	}
	if genText != "" {
		b.field += " + continuation.generated_text"
	}
	body, err := w.Encode()
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "encode request: %v", err)
	}
	b.body = body
	return b, nil
}

// flatten is backends.PromptText for a chat that may end in an assistant
// turn: that turn is left open for the model to continue.
func flatten(msgs []*pb.ChatMessage) string {
	n := len(msgs)
	if n == 0 || msgs[n-1].GetRole() != "assistant" {
		return backends.PromptText(&pb.GenerateRequest{Messages: msgs})
	}
	var b strings.Builder
	for _, m := range msgs[:n-1] {
		b.WriteString(m.GetRole() + ": " + m.GetContent() + "\n")
	}
	b.WriteString("assistant: " + msgs[n-1].GetContent())
	return b.String()
}

// WireUsage is the usage object; servers send it on the unary response and,
// with stream_options.include_usage, on the last stream chunk (ollama sends a
// zero usage on every chunk before the real one).
type WireUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	// PromptTokensDetails.CachedTokens is how many prompt tokens the server
	// took from its prefix cache (OpenAI, vLLM, SGLang; llama-server with
	// prompt caching on).
	PromptTokensDetails *WirePromptDetails `json:"prompt_tokens_details,omitempty"`
}

// WirePromptDetails is usage.prompt_tokens_details.
type WirePromptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// Proto is the usage as switchyard's, each count clamped to 0..MaxInt32
// (cached tokens to the prompt's).
func (u *WireUsage) Proto() *pb.Usage {
	out := &pb.Usage{InputTokens: clampTokens(u.PromptTokens), OutputTokens: clampTokens(u.CompletionTokens)}
	if d := u.PromptTokensDetails; d != nil {
		out.CachedInputTokens = min(clampTokens(d.CachedTokens), out.InputTokens)
	}
	return out
}

// WireDelta is a chat choice's message (unary) or delta (stream).
type WireDelta struct {
	Content   *string        `json:"content"`
	ToolCalls []WireToolCall `json:"tool_calls"`
}

// WireChoice is one choice of either endpoint, whole or streamed.
type WireChoice struct {
	Text         *string    `json:"text"`
	Message      *WireDelta `json:"message"`
	Delta        *WireDelta `json:"delta"`
	FinishReason *string    `json:"finish_reason"`
	// StopReason is vLLM's: the stop string (or token id) that ended the output.
	StopReason json.RawMessage `json:"stop_reason"`
	// MatchedStop is SGLang's equivalent.
	MatchedStop json.RawMessage `json:"matched_stop"`
	// Logprobs: {"content": [...]} on chat, or the completions endpoint's
	// {"tokens", "token_logprobs", "top_logprobs"} (see ParseLogprobs).
	Logprobs json.RawMessage `json:"logprobs"`
}

// ToolCalls are a chat choice's tool calls (whole, or a stream's pieces).
func (c *WireChoice) ToolCalls() []WireToolCall {
	switch {
	case c.Message != nil:
		return c.Message.ToolCalls
	case c.Delta != nil:
		return c.Delta.ToolCalls
	}
	return nil
}

// wireTokenLogprob is one entry of a chat choice's logprobs.content.
type wireTokenLogprob struct {
	Token       string  `json:"token"`
	Logprob     float64 `json:"logprob"`
	Bytes       []int   `json:"bytes"`
	TopLogprobs []struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
		Bytes   []int   `json:"bytes"`
	} `json:"top_logprobs"`
}

// maxLogprobEntries bounds the log probabilities read from one choice.
const maxLogprobEntries = 1 << 16

// ParseLogprobs reads a choice's logprobs in either format; nil when there are none.
func ParseLogprobs(raw json.RawMessage) []*pb.TokenLogprob {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var v struct {
		Content       []wireTokenLogprob   `json:"content"`
		Tokens        []string             `json:"tokens"`
		TokenLogprobs []float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	var out []*pb.TokenLogprob
	for i, e := range v.Content {
		if i >= maxLogprobEntries {
			break
		}
		lp := &pb.TokenLogprob{Token: e.Token, Logprob: float32(e.Logprob), Bytes: intBytes(e.Bytes, e.Token)}
		for _, t := range e.TopLogprobs {
			lp.TopLogprobs = append(lp.TopLogprobs, &pb.TopLogprob{Token: t.Token, Logprob: float32(t.Logprob), Bytes: intBytes(t.Bytes, t.Token)})
		}
		out = append(out, lp)
	}
	for i, tok := range v.Tokens {
		if i >= maxLogprobEntries {
			break
		}
		lp := &pb.TokenLogprob{Token: tok, Bytes: []byte(tok)}
		if i < len(v.TokenLogprobs) {
			lp.Logprob = float32(v.TokenLogprobs[i])
		}
		if i < len(v.TopLogprobs) {
			for t, l := range v.TopLogprobs[i] {
				lp.TopLogprobs = append(lp.TopLogprobs, &pb.TopLogprob{Token: t, Logprob: float32(l), Bytes: []byte(t)})
			}
			sort.Slice(lp.TopLogprobs, func(a, b int) bool { return lp.TopLogprobs[a].Logprob > lp.TopLogprobs[b].Logprob })
		}
		out = append(out, lp)
	}
	return out
}

// intBytes is a token's bytes from their JSON array, or the token's UTF-8.
func intBytes(b []int, token string) []byte {
	if b == nil {
		return []byte(token)
	}
	out := make([]byte, len(b))
	for i, x := range b {
		out[i] = byte(x)
	}
	return out
}

// Proto is the call as switchyard's.
func (t *WireToolCall) Proto() *pb.ToolCall {
	return &pb.ToolCall{Id: t.ID, Name: t.Function.Name, Arguments: t.Function.Arguments}
}

// Content is the choice's text: a completion's text, a chat message's or a
// chat delta's content.
func (c *WireChoice) Content() string {
	switch {
	case c.Text != nil:
		return *c.Text
	case c.Message != nil && c.Message.Content != nil:
		return *c.Message.Content
	case c.Delta != nil && c.Delta.Content != nil:
		return *c.Delta.Content
	}
	return ""
}

// wireResponse is a unary response or one stream chunk.
type wireResponse struct {
	Choices []WireChoice    `json:"choices"`
	Usage   *WireUsage      `json:"usage"`
	Error   json.RawMessage `json:"error"`
	// Object "error" with Message is vLLM's error event inside a stream.
	Object  string `json:"object"`
	Message string `json:"message"`
}

func (r *wireResponse) isError() bool {
	return (len(r.Error) > 0 && string(r.Error) != "null") || r.Object == "error"
}

// Finish maps a server's finish reason: OpenAI's stop, length and
// content_filter; TGI's eos_token and stop_sequence; a vLLM stop_reason or
// SGLang matched_stop string means a stop sequence ended the output. No
// finish reason (a chunk before the last) is UNSPECIFIED.
func (c *WireChoice) Finish() pb.FinishReason {
	if c.FinishReason == nil {
		return pb.FinishReason_FINISH_REASON_UNSPECIFIED
	}
	switch *c.FinishReason {
	case "length", "max_tokens", "model_length":
		return pb.FinishReason_FINISH_REASON_LENGTH
	case "content_filter":
		return pb.FinishReason_FINISH_REASON_CONTENT_FILTER
	case "stop_sequence":
		return pb.FinishReason_FINISH_REASON_STOP_SEQUENCE
	case "tool_calls", "function_call":
		return pb.FinishReason_FINISH_REASON_TOOL_CALLS
	case "stop":
		if isJSONString(c.StopReason) || isJSONString(c.MatchedStop) {
			return pb.FinishReason_FINISH_REASON_STOP_SEQUENCE
		}
	}
	return pb.FinishReason_FINISH_REASON_STOP
}

func isJSONString(raw json.RawMessage) bool {
	return len(raw) > 1 && raw[0] == '"'
}

func clampTokens(n int64) int32 {
	return int32(min(max(n, 0), math.MaxInt32))
}
