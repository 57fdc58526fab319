package openai

import (
	"bytes"
	"encoding/json"
	"math"
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
)

// WireMessage is one chat turn on the wire.
type WireMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
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
	msgs := req.GetMessages()
	if len(msgs) == 0 {
		p := req.GetPrompt()
		w.Prompt = &p
		return w, CompletionsPath
	}
	w.Messages = make([]WireMessage, 0, len(msgs)+1) // room for a continuation's turn
	for _, m := range msgs {
		w.Messages = append(w.Messages, WireMessage{Role: m.GetRole(), Content: m.GetContent()})
	}
	return w, ChatCompletionsPath
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
}

// Proto is the usage as switchyard's, each count clamped to 0..MaxInt32.
func (u *WireUsage) Proto() *pb.Usage {
	return &pb.Usage{InputTokens: clampTokens(u.PromptTokens), OutputTokens: clampTokens(u.CompletionTokens)}
}

// WireDelta is a chat choice's message (unary) or delta (stream).
type WireDelta struct {
	Content *string `json:"content"`
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
