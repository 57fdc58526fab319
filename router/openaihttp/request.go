package openaihttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Request headers that steer routing. Header names are case-insensitive.
const (
	HeaderCallerRegion         = "X-Switchyard-Caller-Region"
	HeaderResidency            = "X-Switchyard-Residency"
	HeaderPriority             = "X-Switchyard-Priority"
	HeaderPreferredCloud       = "X-Switchyard-Preferred-Cloud"
	HeaderPreferredAccelerator = "X-Switchyard-Preferred-Accelerator"
	HeaderTimeout              = "X-Switchyard-Timeout"
	// HeaderPrefixKey is an explicit prefix-cache affinity key (a session
	// or conversation id): RoutingHints.prefix_key, kept as sent.
	HeaderPrefixKey = "X-Switchyard-Prefix-Key"
	HeaderRequestID = "X-Request-Id"
)

// Response headers (and, for streams, trailers) that say where a call was served.
const (
	HeaderPool        = "X-Switchyard-Pool"
	HeaderCloud       = "X-Switchyard-Cloud"
	HeaderRegion      = "X-Switchyard-Region"
	HeaderAccelerator = "X-Switchyard-Accelerator"
	HeaderAttempts    = "X-Switchyard-Attempts"
	HeaderPoolsTried  = "X-Switchyard-Pools-Tried"
)

// routeHeaders are the route headers in the order they are declared as trailers.
var routeHeaders = []string{HeaderPool, HeaderCloud, HeaderRegion, HeaderAccelerator, HeaderAttempts, HeaderPoolsTried}

// Bounds on client-chosen values the router does not check itself.
const (
	maxHintBytes = 64 // a routing hint header
	// maxPrefixKeyBytes bounds X-Switchyard-Prefix-Key (routing.prefix_key's bound).
	maxPrefixKeyBytes = 256
	maxUserBytes      = 256 // the "user" field
	// maxTimeout bounds X-Switchyard-Timeout.
	maxTimeout = 10 * time.Minute
	// completionsDefaultMaxTokens is OpenAI's default max_tokens for /v1/completions.
	completionsDefaultMaxTokens = 16
)

// fieldError is a client error that names the request field (an OpenAI "param").
type fieldError struct {
	param string
	msg   string
}

func (e *fieldError) Error() string { return e.param + ": " + e.msg }

func badField(param, format string, args ...any) error {
	return &fieldError{param: param, msg: fmt.Sprintf(format, args...)}
}

// stopField is OpenAI's "stop": a string, an array of strings, or null.
type stopField []string

func (s *stopField) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopField{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return badField("stop", "must be a string or an array of strings")
	}
	*s = many
	return nil
}

// content is a chat message's content: a string, an array of content parts
// (only "text" parts are served), or null.
type content struct {
	text  string
	parts int // array form: number of parts; -1 for an unsupported part
	kind  string
}

func (c *content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*c = content{}
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.text)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return badField("messages", "a message's content must be a string, null or an array of content parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			c.parts, c.kind = -1, p.Type
			return nil
		}
		sb.WriteString(p.Text)
	}
	c.text, c.parts = sb.String(), len(parts)
	return nil
}

// chatMessage is one entry of "messages".
type chatMessage struct {
	Role       string         `json:"role"`
	Content    content        `json:"content"`
	Name       string         `json:"name"`
	ToolCalls  []toolCallJSON `json:"tool_calls"`
	ToolCallID string         `json:"tool_call_id"`
	// Refused when set (deprecated, or not served): never dropped.
	FunctionCall json.RawMessage `json:"function_call"`
	Audio        json.RawMessage `json:"audio"`
}

// toolCallJSON is a tool call: an assistant message's (request) or an answer's.
type toolCallJSON struct {
	Index    *int         `json:"index,omitempty"` // streamed pieces only
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// toolJSON is one entry of "tools".
type toolJSON struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// responseFormatJSON is "response_format".
type responseFormatJSON struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// commonRequest holds the fields chat and text completions share. A field
// outside the documented ones (docs/http.md) is refused with 400 naming it,
// as OpenAI's API refuses an unrecognized argument: nothing is dropped.
type commonRequest struct {
	Model               string         `json:"model"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   *int64         `json:"n"`
	MaxTokens           *int64         `json:"max_tokens"`
	MaxCompletionTokens *int64         `json:"max_completion_tokens"`
	Temperature         *float64       `json:"temperature"`
	TopP                *float64       `json:"top_p"`
	TopK                *int64         `json:"top_k"`
	Stop                stopField      `json:"stop"`
	Seed                *int64         `json:"seed"`
	PresencePenalty     *float64       `json:"presence_penalty"`
	FrequencyPenalty    *float64       `json:"frequency_penalty"`
	User                string         `json:"user"`
	ServiceTier         string         `json:"service_tier"`
	// Logprobs is a bool on chat completions and a count (0..5) on text completions.
	Logprobs       json.RawMessage     `json:"logprobs"`
	ResponseFormat *responseFormatJSON `json:"response_format"`
	// Known but not served: refused when set to anything but their default.
	LogitBias json.RawMessage `json:"logit_bias"`
}

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	commonRequest
	Messages          []chatMessage   `json:"messages"`
	Tools             []toolJSON      `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	TopLogprobs       *int64          `json:"top_logprobs"`
}

// Fields each endpoint takes (docs/http.md lists what happens to each); any
// other field of the body is refused with 400 naming it.
var (
	commonFields = []string{"model", "stream", "stream_options", "n", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed",
		"presence_penalty", "frequency_penalty", "user", "service_tier", "logprobs", "response_format", "logit_bias", "max_completion_tokens"}
	chatFields       = append(slices.Clone(commonFields), "messages", "tools", "tool_choice", "parallel_tool_calls", "top_logprobs")
	completionFields = append(slices.Clone(commonFields), "prompt", "best_of", "echo", "suffix")
	// notServed are OpenAI fields the router knows and cannot honour: each
	// gets its own 400 saying so.
	notServed = map[string]string{
		"functions":          "deprecated: use tools",
		"function_call":      "deprecated: use tool_choice",
		"audio":              "audio output is not served",
		"modalities":         "only text output is served",
		"prediction":         "predicted outputs are not served",
		"web_search_options": "web search is not served",
		"store":              "stored completions are not served",
		"metadata":           "stored completions are not served",
		"reasoning_effort":   "reasoning effort is not passed to model servers",
		"verbosity":          "verbosity is not passed to model servers",
		"prompt_cache_key":   "use the X-Switchyard-Prefix-Key header",
		"safety_identifier":  "not passed to model servers",
	}
)

// checkFields refuses a body field the endpoint does not take. A field
// whose value is null counts as absent.
func checkFields(body []byte, known []string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil // decodeJSON reports it
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if slices.Contains(known, k) || string(bytes.TrimSpace(fields[k])) == "null" {
			continue
		}
		if why := notServed[k]; why != "" {
			return badField(k, "%s", why)
		}
		return badField(quoteParam(k), "unrecognized request argument (docs/http.md lists the fields served)")
	}
	return nil
}

// quoteParam is a client's field name as an error's param, bounded.
func quoteParam(k string) string {
	if len(k) > maxHintBytes {
		return k[:maxHintBytes]
	}
	return k
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	commonRequest
	Prompt json.RawMessage `json:"prompt"`
	BestOf *int64          `json:"best_of"`
	Echo   bool            `json:"echo"`
	Suffix *string         `json:"suffix"`
}

// parsed is a request ready for the router.
type parsed struct {
	req          *pb.GenerateRequest
	stream       bool
	includeUsage bool
	// maxTokensParam is the field max_tokens came from, for error messages.
	maxTokensParam string
	timeout        time.Duration
}

// decodeJSON unmarshals body into v; a type mismatch names the field.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badField("body", "the request body is empty: expected a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// Fields of the embedded commonRequest carry its Go name.
			field := strings.TrimPrefix(te.Field, "commonRequest.")
			return badField(field, "expected %s, got JSON %s", te.Type, te.Value)
		}
		var fe *fieldError // from the custom decoders above (stop, content)
		if errors.As(err, &fe) {
			return fe
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return badField("body", "the request body is not valid JSON (at byte %d)", se.Offset)
		}
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "json: cannot unmarshal") {
			msg = msg[i+2:]
		}
		return badField("body", "%s", msg)
	}
	return nil
}

// parseChat turns a chat completions body and its headers into a request.
func parseChat(body []byte, h http.Header, defaultMaxTokens func(model string) int32) (*parsed, error) {
	var cr chatRequest
	if err := decodeJSON(body, &cr); err != nil {
		return nil, err
	}
	if err := checkFields(body, chatFields); err != nil {
		return nil, err
	}
	if len(cr.Messages) == 0 {
		return nil, badField("messages", "required: at least one message")
	}
	msgs := make([]*pb.ChatMessage, 0, len(cr.Messages))
	for i, m := range cr.Messages {
		at := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
		role := m.Role
		switch role {
		case "system", "user", "assistant", "tool":
		case "developer":
			// OpenAI's newer name for system instructions.
			role = "system"
		case "function":
			return nil, badField(at("role"), "function messages are deprecated: send the result as a tool message")
		default:
			return nil, badField(at("role"), "must be one of system, developer, user, assistant, tool, got %s", quote(m.Role))
		}
		if m.Content.parts < 0 {
			return nil, badField(at("content"), "content parts of type %s are not supported (only text)", quote(m.Content.kind))
		}
		if len(m.FunctionCall) > 0 && string(m.FunctionCall) != "null" {
			return nil, badField(at("function_call"), "deprecated: use tool_calls")
		}
		if len(m.Audio) > 0 && string(m.Audio) != "null" {
			return nil, badField(at("audio"), "audio is not served")
		}
		pm := &pb.ChatMessage{Role: role, Content: m.Content.text, Name: m.Name, ToolCallId: m.ToolCallID}
		for j, tc := range m.ToolCalls {
			if tc.Type != "" && tc.Type != "function" {
				return nil, badField(fmt.Sprintf("messages[%d].tool_calls[%d].type", i, j), "only function tool calls are served, got %s", quote(tc.Type))
			}
			pm.ToolCalls = append(pm.ToolCalls, &pb.ToolCall{Id: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		msgs = append(msgs, pm)
	}
	p, err := parseCommon(&cr.commonRequest, h, defaultMaxTokens(cr.Model))
	if err != nil {
		return nil, err
	}
	p.req.Messages = msgs
	if err := parseTools(&cr, p); err != nil {
		return nil, err
	}
	if err := parseLogprobs(cr.Logprobs, cr.TopLogprobs, true, p); err != nil {
		return nil, err
	}
	return p, nil
}

// parseTools reads tools, tool_choice and parallel_tool_calls; the router
// checks names, schemas and consistency.
func parseTools(cr *chatRequest, p *parsed) error {
	for i, t := range cr.Tools {
		if t.Type != "function" {
			return badField(fmt.Sprintf("tools[%d].type", i), "only function tools are served, got %s", quote(t.Type))
		}
		pt := &pb.Tool{Name: t.Function.Name, Description: t.Function.Description, Strict: t.Function.Strict}
		if raw := bytes.TrimSpace(t.Function.Parameters); len(raw) > 0 && string(raw) != "null" {
			pt.ParametersJson = string(raw)
		}
		p.req.Tools = append(p.req.Tools, pt)
	}
	if raw := bytes.TrimSpace(cr.ToolChoice); len(raw) > 0 && string(raw) != "null" {
		tc := &pb.ToolChoice{}
		if raw[0] == '"' {
			if err := json.Unmarshal(raw, &tc.Mode); err != nil {
				return badField("tool_choice", "not a valid JSON string")
			}
			if tc.Mode == "function" {
				return badField("tool_choice", "must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")
			}
		} else {
			var obj struct {
				Type     string `json:"type"`
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Type != "function" {
				return badField("tool_choice", "must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")
			}
			tc.Mode, tc.FunctionName = "function", obj.Function.Name
		}
		p.req.ToolChoice = tc
	}
	p.req.ParallelToolCalls = cr.ParallelToolCalls
	return nil
}

// parseLogprobs reads logprobs: a bool with top_logprobs on chat, a count
// of alternatives (0..5) on text completions.
func parseLogprobs(raw json.RawMessage, top *int64, chat bool, p *parsed) error {
	raw = bytes.TrimSpace(raw)
	if chat {
		var on bool
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &on); err != nil {
				return badField("logprobs", "must be a boolean")
			}
		}
		p.req.Logprobs = on
		if top != nil {
			if *top < 0 || *top > 20 {
				return badField("top_logprobs", "must be in 0..20, got %d", *top)
			}
			n := int32(*top)
			p.req.TopLogprobs = &n
		}
		return nil
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > 5 {
		return badField("logprobs", "must be an integer in 0..5 on text completions")
	}
	p.req.Logprobs = true
	if n > 0 {
		k := int32(n)
		p.req.TopLogprobs = &k
	}
	return nil
}

// parseResponseFormat reads response_format.
func parseResponseFormat(rf *responseFormatJSON, req *pb.GenerateRequest) error {
	if rf == nil {
		return nil
	}
	switch rf.Type {
	case "text":
		return nil
	case "json_object":
		req.ResponseFormat = &pb.ResponseFormat{Type: rf.Type}
	case "json_schema":
		js := rf.JSONSchema
		if js == nil {
			return badField("response_format.json_schema", "required with type json_schema")
		}
		if len(bytes.TrimSpace(js.Schema)) == 0 {
			return badField("response_format.json_schema.schema", "required")
		}
		if js.Description != "" {
			return badField("response_format.json_schema.description", "not passed to model servers: put it in the schema's own description")
		}
		req.ResponseFormat = &pb.ResponseFormat{Type: rf.Type, SchemaName: js.Name, SchemaJson: string(bytes.TrimSpace(js.Schema)), Strict: js.Strict}
	default:
		return badField("response_format.type", "must be text, json_object or json_schema, got %s", quote(rf.Type))
	}
	return nil
}

// parseCompletion turns a text completions body and its headers into a request.
func parseCompletion(body []byte, h http.Header) (*parsed, error) {
	var cr completionRequest
	if err := decodeJSON(body, &cr); err != nil {
		return nil, err
	}
	if err := checkFields(body, completionFields); err != nil {
		return nil, err
	}
	prompt, err := completionPrompt(cr.Prompt)
	if err != nil {
		return nil, err
	}
	if cr.BestOf != nil && *cr.BestOf != 1 {
		return nil, badField("best_of", "only best_of 1 is supported, got %d", *cr.BestOf)
	}
	if cr.Echo {
		return nil, badField("echo", "echo is not supported")
	}
	if cr.Suffix != nil && *cr.Suffix != "" {
		return nil, badField("suffix", "suffix is not supported")
	}
	p, err := parseCommon(&cr.commonRequest, h, completionsDefaultMaxTokens)
	if err != nil {
		return nil, err
	}
	p.req.Prompt = prompt
	if err := parseLogprobs(cr.Logprobs, nil, false, p); err != nil {
		return nil, err
	}
	return p, nil
}

// completionPrompt accepts a string or an array of exactly one string.
func completionPrompt(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", badField("prompt", "required")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badField("prompt", "not a valid JSON string")
		}
		return s, nil
	}
	var arr []string
	if err := json.Unmarshal(raw, &arr); err != nil {
		return "", badField("prompt", "must be a string or an array of one string (token arrays are not supported)")
	}
	if len(arr) != 1 {
		return "", badField("prompt", "an array prompt must hold exactly one string (one completion per request), got %d", len(arr))
	}
	return arr[0], nil
}

// parseCommon checks the shared fields and builds the request with its
// sampling parameters and routing hints. Ranges the router checks itself
// (temperature, top_p, penalties, stop, max_tokens against the model) are
// left to it, so both edges answer alike.
func parseCommon(c *commonRequest, h http.Header, defaultMaxTokens int32) (*parsed, error) {
	if c.N != nil && *c.N != 1 {
		return nil, badField("n", "only n 1 is supported (one choice per request), got %d", *c.N)
	}
	p := &parsed{stream: c.Stream, maxTokensParam: "max_tokens"}
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, badField("stream_options", "only allowed when stream is true")
		}
		p.includeUsage = c.StreamOptions.IncludeUsage
	}
	maxTokens := int64(defaultMaxTokens)
	switch {
	case c.MaxCompletionTokens != nil:
		maxTokens, p.maxTokensParam = *c.MaxCompletionTokens, "max_completion_tokens"
	case c.MaxTokens != nil:
		maxTokens = *c.MaxTokens
	}
	if maxTokens < math.MinInt32 || maxTokens > math.MaxInt32 {
		return nil, badField(p.maxTokensParam, "out of range: %d", maxTokens)
	}
	if len(c.User) > maxUserBytes {
		return nil, badField("user", "at most %d bytes, got %d", maxUserBytes, len(c.User))
	}
	if lb := bytes.TrimSpace(c.LogitBias); len(lb) > 0 && string(lb) != "null" && string(lb) != "{}" {
		return nil, badField("logit_bias", "not served: token ids differ between the pools' tokenizers")
	}
	req := &pb.GenerateRequest{Model: c.Model, MaxTokens: int32(maxTokens)}
	sp := &pb.SamplingParameters{Stop: c.Stop, Seed: c.Seed}
	var err error
	if sp.Temperature, err = float32Field("temperature", c.Temperature); err != nil {
		return nil, err
	}
	if sp.TopP, err = float32Field("top_p", c.TopP); err != nil {
		return nil, err
	}
	if sp.PresencePenalty, err = float32Field("presence_penalty", c.PresencePenalty); err != nil {
		return nil, err
	}
	if sp.FrequencyPenalty, err = float32Field("frequency_penalty", c.FrequencyPenalty); err != nil {
		return nil, err
	}
	if c.TopK != nil {
		if *c.TopK < 1 || *c.TopK > math.MaxInt32 {
			return nil, badField("top_k", "must be at least 1 when set, got %d", *c.TopK)
		}
		k := int32(*c.TopK)
		sp.TopK = &k
	}
	if sp.Temperature != nil || sp.TopP != nil || sp.TopK != nil || len(sp.Stop) > 0 || sp.Seed != nil || sp.PresencePenalty != nil || sp.FrequencyPenalty != nil {
		req.Sampling = sp
	}
	prio, err := priority(h.Get(HeaderPriority), c.ServiceTier)
	if err != nil {
		return nil, err
	}
	req.Priority = prio
	routing := &pb.RoutingHints{}
	for _, hint := range []struct {
		header string
		dst    *string
	}{
		{HeaderCallerRegion, &routing.CallerRegion},
		{HeaderResidency, &routing.Residency},
		{HeaderPreferredCloud, &routing.PreferredCloud},
		{HeaderPreferredAccelerator, &routing.PreferredAccelerator},
	} {
		v := strings.TrimSpace(h.Get(hint.header))
		if len(v) > maxHintBytes {
			return nil, badField(strings.ToLower(hint.header), "at most %d bytes, got %d", maxHintBytes, len(v))
		}
		*hint.dst = strings.ToLower(v)
	}
	if v := strings.TrimSpace(h.Get(HeaderPrefixKey)); v != "" {
		if len(v) > maxPrefixKeyBytes {
			return nil, badField(strings.ToLower(HeaderPrefixKey), "at most %d bytes, got %d", maxPrefixKeyBytes, len(v))
		}
		routing.PrefixKey = v
	}
	if routing.CallerRegion != "" || routing.Residency != "" || routing.PreferredCloud != "" || routing.PreferredAccelerator != "" || routing.PrefixKey != "" {
		req.Routing = routing
	}
	if err := parseResponseFormat(c.ResponseFormat, req); err != nil {
		return nil, err
	}
	req.RequestId = strings.TrimSpace(h.Get(HeaderRequestID))
	if v := strings.TrimSpace(h.Get(HeaderTimeout)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxTimeout {
			return nil, badField(strings.ToLower(HeaderTimeout), "must be a duration in (0, %s] such as 30s or 1500ms, got %s", maxTimeout, quote(v))
		}
		p.timeout = d
	}
	p.req = req
	return p, nil
}

// float32Field converts an optional JSON number; values beyond float32 are
// refused here rather than silently becoming infinities.
func float32Field(param string, v *float64) (*float32, error) {
	if v == nil {
		return nil, nil
	}
	if math.Abs(*v) > math.MaxFloat32 {
		return nil, badField(param, "out of range: %g", *v)
	}
	f := float32(*v)
	return &f, nil
}

// priority reads X-Switchyard-Priority, falling back on OpenAI's service_tier
// ("priority" is interactive, "flex" is batch, anything else standard).
func priority(header, tier string) (pb.Priority, error) {
	switch strings.ToLower(strings.TrimSpace(header)) {
	case "interactive":
		return pb.Priority_PRIORITY_INTERACTIVE, nil
	case "standard":
		return pb.Priority_PRIORITY_STANDARD, nil
	case "batch":
		return pb.Priority_PRIORITY_BATCH, nil
	case "":
	default:
		return 0, badField(strings.ToLower(HeaderPriority), "must be interactive, standard or batch, got %s", quote(header))
	}
	switch tier {
	case "priority":
		return pb.Priority_PRIORITY_INTERACTIVE, nil
	case "flex":
		return pb.Priority_PRIORITY_BATCH, nil
	}
	return pb.Priority_PRIORITY_UNSPECIFIED, nil
}

// quote quotes client input for an error message, cut to a few bytes so an
// error never grows with what the client sent.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
}
