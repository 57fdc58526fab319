package anthropichttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/edgehttp"
)

// API versions (the anthropic-version header). 2026-10-21 (the SDKs' v2
// default) no longer takes temperature, top_p and top_k: like Anthropic's
// API, the front door refuses them under it.
const (
	Version20230601 = "2023-06-01"
	Version20261021 = "2026-10-21"
)

var versions = []string{"2023-01-01", Version20230601, Version20261021}

// messagesRequest is the body of POST /v1/messages.
type messagesRequest struct {
	Model         string          `json:"model"`
	MaxTokens     *int64          `json:"max_tokens"`
	Messages      []message       `json:"messages"`
	System        json.RawMessage `json:"system"`
	StopSequences []string        `json:"stop_sequences"`
	Stream        bool            `json:"stream"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int64          `json:"top_k"`
	Tools         []toolDef       `json:"tools"`
	ToolChoice    *toolChoice     `json:"tool_choice"`
	Metadata      *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
	OutputConfig *struct {
		Effort json.RawMessage `json:"effort"`
		Format *struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
	} `json:"output_config"`
}

// Fields POST /v1/messages takes; others are refused naming them
// (docs/anthropic.md says what happens to each).
var knownFields = []string{"model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k",
	"tools", "tool_choice", "metadata", "output_config"}

// notServed are Messages API fields the router knows and cannot honour.
var notServed = map[string]string{
	"thinking":           "extended thinking is not served",
	"container":          "containers are not served",
	"mcp_servers":        "MCP servers are not served",
	"service_tier":       "use the x-switchyard-priority header",
	"inference_geo":      "use the x-switchyard-residency header",
	"cache_control":      "explicit prompt caching is not served (model servers cache prefixes by themselves)",
	"speed":              "not passed to model servers",
	"diagnostics":        "not served",
	"context_management": "not served",
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// block is one content block of a message (or of system, or of a tool_result).
type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
	// Refused when set: never dropped.
	CacheControl json.RawMessage `json:"cache_control"`
	Citations    json.RawMessage `json:"citations"`
}

type toolDef struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
	Strict      *bool           `json:"strict"`
	// Refused when set.
	CacheControl        json.RawMessage `json:"cache_control"`
	EagerInputStreaming json.RawMessage `json:"eager_input_streaming"`
	DeferLoading        json.RawMessage `json:"defer_loading"`
	AllowedCallers      json.RawMessage `json:"allowed_callers"`
	InputExamples       json.RawMessage `json:"input_examples"`
}

type toolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse *bool  `json:"disable_parallel_tool_use"`
}

func set(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && string(t) != "null"
}

// parsed is a request ready for the router.
type parsed struct {
	req    *pb.GenerateRequest
	stream bool
	// toolNames are the request's tools (answers' tool_use blocks name them).
	version string
}

// parse turns a Messages body into a GenerateRequest: system first, then
// each message (a user turn's tool_result blocks become tool turns ahead of
// its text; an assistant turn's tool_use blocks its tool_calls).
func parse(body []byte, version string) (*parsed, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, edgehttp.Bad("body", "empty: expected a JSON object")
	}
	var mr messagesRequest
	if err := json.Unmarshal(body, &mr); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, edgehttp.Bad(te.Field, "expected %s, got JSON %s", te.Type, te.Value)
		}
		return nil, edgehttp.Bad("body", "not valid JSON")
	}
	if err := checkFields(body); err != nil {
		return nil, err
	}
	if mr.Model == "" {
		return nil, edgehttp.Bad("model", "Field required")
	}
	if mr.MaxTokens == nil {
		return nil, edgehttp.Bad("max_tokens", "Field required")
	}
	if *mr.MaxTokens < 1 || *mr.MaxTokens > math.MaxInt32 {
		return nil, edgehttp.Bad("max_tokens", "must be at least 1, got %d", *mr.MaxTokens)
	}
	if len(mr.Messages) == 0 {
		return nil, edgehttp.Bad("messages", "at least one message is required")
	}
	req := &pb.GenerateRequest{Model: mr.Model, MaxTokens: int32(*mr.MaxTokens)}
	if set(mr.System) {
		text, err := textOf(mr.System, "system")
		if err != nil {
			return nil, err
		}
		req.Messages = append(req.Messages, &pb.ChatMessage{Role: "system", Content: text})
	}
	for i, m := range mr.Messages {
		msgs, err := turn(i, m)
		if err != nil {
			return nil, err
		}
		req.Messages = append(req.Messages, msgs...)
	}
	sp := &pb.SamplingParameters{Stop: mr.StopSequences}
	if version == Version20261021 {
		for _, f := range []struct {
			name string
			set  bool
		}{{"temperature", mr.Temperature != nil}, {"top_p", mr.TopP != nil}, {"top_k", mr.TopK != nil}} {
			if f.set {
				return nil, edgehttp.Bad(f.name, "not accepted with anthropic-version %s (send anthropic-version %s to use it)", version, Version20230601)
			}
		}
	}
	if mr.Temperature != nil {
		if *mr.Temperature < 0 || *mr.Temperature > 1 {
			return nil, edgehttp.Bad("temperature", "must be in [0, 1], got %g", *mr.Temperature)
		}
		v := float32(*mr.Temperature)
		sp.Temperature = &v
	}
	if mr.TopP != nil {
		if *mr.TopP <= 0 || *mr.TopP > 1 {
			return nil, edgehttp.Bad("top_p", "must be in (0, 1], got %g", *mr.TopP)
		}
		v := float32(*mr.TopP)
		sp.TopP = &v
	}
	if mr.TopK != nil {
		if *mr.TopK < 1 || *mr.TopK > math.MaxInt32 {
			return nil, edgehttp.Bad("top_k", "must be at least 1, got %d", *mr.TopK)
		}
		v := int32(*mr.TopK)
		sp.TopK = &v
	}
	if sp.Temperature != nil || sp.TopP != nil || sp.TopK != nil || len(sp.Stop) > 0 {
		req.Sampling = sp
	}
	if err := tools(&mr, req); err != nil {
		return nil, err
	}
	if oc := mr.OutputConfig; oc != nil {
		if set(oc.Effort) {
			return nil, edgehttp.Bad("output_config.effort", "not passed to model servers")
		}
		if f := oc.Format; f != nil {
			if f.Type != "json_schema" || !set(f.Schema) {
				return nil, edgehttp.Bad("output_config.format", "must be {\"type\": \"json_schema\", \"schema\": {...}}")
			}
			req.ResponseFormat = &pb.ResponseFormat{Type: "json_schema", SchemaName: "output", SchemaJson: string(bytes.TrimSpace(f.Schema)), Strict: new(bool)}
			*req.ResponseFormat.Strict = true
		}
	}
	if mr.Metadata != nil && len(mr.Metadata.UserID) > 256 {
		return nil, edgehttp.Bad("metadata.user_id", "at most 256 bytes, got %d", len(mr.Metadata.UserID))
	}
	return &parsed{req: req, stream: mr.Stream, version: version}, nil
}

// checkFields refuses a top-level field the endpoint does not take.
func checkFields(body []byte) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return nil
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if slices.Contains(knownFields, k) || !set(fields[k]) {
			continue
		}
		if why := notServed[k]; why != "" {
			return edgehttp.Bad(k, "%s", why)
		}
		if len(k) > edgehttp.MaxHintBytes {
			k = k[:edgehttp.MaxHintBytes]
		}
		return edgehttp.Bad(k, "Extra inputs are not permitted")
	}
	return nil
}

// blocks reads content: a string (one text block) or an array of blocks.
func blocks(raw json.RawMessage, field string) ([]block, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, edgehttp.Bad(field, "not a valid JSON string")
		}
		return []block{{Type: "text", Text: s}}, nil
	}
	var bs []block
	if err := json.Unmarshal(raw, &bs); err != nil {
		return nil, edgehttp.Bad(field, "must be a string or an array of content blocks")
	}
	for i, b := range bs {
		if set(b.CacheControl) {
			return nil, edgehttp.Bad(fmt.Sprintf("%s.%d.cache_control", field, i), "explicit prompt caching is not served")
		}
		if set(b.Citations) {
			return nil, edgehttp.Bad(fmt.Sprintf("%s.%d.citations", field, i), "citations are not served")
		}
	}
	return bs, nil
}

// textOf joins text blocks (system, tool results); other block types are refused.
func textOf(raw json.RawMessage, field string) (string, error) {
	bs, err := blocks(raw, field)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	for i, b := range bs {
		if b.Type != "text" {
			return "", edgehttp.Bad(fmt.Sprintf("%s.%d.type", field, i), "only text blocks are served here, got %s", edgehttp.Quote(b.Type))
		}
		sb.WriteString(b.Text)
	}
	return sb.String(), nil
}

// turn translates one message.
func turn(i int, m message) ([]*pb.ChatMessage, error) {
	field := fmt.Sprintf("messages.%d.content", i)
	if !set(m.Content) {
		return nil, edgehttp.Bad(field, "Field required")
	}
	bs, err := blocks(m.Content, field)
	if err != nil {
		return nil, err
	}
	var out []*pb.ChatMessage
	var text strings.Builder
	var calls []*pb.ToolCall
	for j, b := range bs {
		at := fmt.Sprintf("%s.%d", field, j)
		switch {
		case b.Type == "text":
			text.WriteString(b.Text)
		case b.Type == "tool_result" && m.Role == "user":
			content := ""
			if set(b.Content) {
				if content, err = textOf(b.Content, at+".content"); err != nil {
					return nil, err
				}
			}
			if b.IsError {
				// OpenAI-shaped servers have no error flag on a tool turn: it is said in the content.
				content = "error: " + content
			}
			if content == "" {
				content = "(empty)"
			}
			out = append(out, &pb.ChatMessage{Role: "tool", ToolCallId: b.ToolUseID, Content: content})
		case b.Type == "tool_use" && m.Role == "assistant":
			args := "{}"
			if set(b.Input) {
				args = string(bytes.TrimSpace(b.Input))
			}
			calls = append(calls, &pb.ToolCall{Id: b.ID, Name: b.Name, Arguments: args})
		default:
			return nil, edgehttp.Bad(at+".type", "%s blocks are not served in a %s message", edgehttp.Quote(b.Type), edgehttp.Quote(m.Role))
		}
	}
	switch m.Role {
	case "user":
		if text.Len() > 0 || len(out) == 0 {
			out = append(out, &pb.ChatMessage{Role: "user", Content: text.String()})
		}
	case "assistant":
		out = append(out, &pb.ChatMessage{Role: "assistant", Content: text.String(), ToolCalls: calls})
	default:
		return nil, edgehttp.Bad(fmt.Sprintf("messages.%d.role", i), "must be user or assistant, got %s", edgehttp.Quote(m.Role))
	}
	return out, nil
}

// tools reads tools and tool_choice.
func tools(mr *messagesRequest, req *pb.GenerateRequest) error {
	for i, t := range mr.Tools {
		at := fmt.Sprintf("tools.%d", i)
		if t.Type != "" && t.Type != "custom" {
			return edgehttp.Bad(at+".type", "server tools (%s) are not served: only custom tools", edgehttp.Quote(t.Type))
		}
		for _, x := range []struct {
			name string
			raw  json.RawMessage
		}{{"cache_control", t.CacheControl}, {"eager_input_streaming", t.EagerInputStreaming}, {"defer_loading", t.DeferLoading},
			{"allowed_callers", t.AllowedCallers}, {"input_examples", t.InputExamples}} {
			if set(x.raw) {
				return edgehttp.Bad(at+"."+x.name, "not served")
			}
		}
		if !set(t.InputSchema) {
			return edgehttp.Bad(at+".input_schema", "Field required")
		}
		req.Tools = append(req.Tools, &pb.Tool{Name: t.Name, Description: t.Description, ParametersJson: string(bytes.TrimSpace(t.InputSchema)), Strict: t.Strict})
	}
	if tc := mr.ToolChoice; tc != nil {
		c := &pb.ToolChoice{}
		switch tc.Type {
		case "auto":
			c.Mode = "auto"
		case "any":
			c.Mode = "required"
		case "tool":
			c.Mode, c.FunctionName = "function", tc.Name
		case "none":
			c.Mode = "none"
		default:
			return edgehttp.Bad("tool_choice.type", "must be auto, any, tool or none, got %s", edgehttp.Quote(tc.Type))
		}
		req.ToolChoice = c
		if tc.DisableParallelToolUse != nil {
			p := !*tc.DisableParallelToolUse
			req.ParallelToolCalls = &p
		}
	}
	return nil
}
