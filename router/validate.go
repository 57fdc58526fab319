package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/dispatch"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Request limits that do not depend on the model.
const (
	// maxMessages bounds a chat's turns.
	maxMessages = 1024
	// maxStopSequences and maxStopBytes bound sampling.stop, as OpenAI's API does.
	maxStopSequences = 4
	maxStopBytes     = 256
)

// chatRoles are the roles a chat message may take.
var chatRoles = []string{"system", "user", "assistant", "tool"}

// Bounds on function calling and structured output.
const (
	maxTools       = 128
	maxNameBytes   = 64       // tool, function, schema and participant names
	maxDescBytes   = 8 << 10  // a tool's description
	maxSchemaBytes = 64 << 10 // a tool's parameters or a response schema
	maxCallIDBytes = 256      // a tool call's id
	maxTopLogprobs = 20
)

// validateRequest checks a request against model m; errors name the field.
func validateRequest(req *pb.GenerateRequest, m config.Model) error {
	msgs := req.GetMessages()
	switch {
	case req.GetPrompt() == "" && len(msgs) == 0:
		return invalid("prompt", "one of prompt and messages is required")
	case req.GetPrompt() != "" && len(msgs) > 0:
		return invalid("messages", "give either prompt or messages, not both")
	case len(msgs) > maxMessages:
		return invalid("messages", "%d messages, at most %d", len(msgs), maxMessages)
	}
	if m.KindOrDefault() != config.KindChat {
		return invalid("model", "%q is an %s model: use Embed (POST /v1/embeddings)", m.Name, m.KindOrDefault())
	}
	for i, msg := range msgs {
		switch msg.GetRole() {
		case "system", "user", "assistant", "tool":
		default:
			return invalid(fmt.Sprintf("messages[%d].role", i), "%s is not one of %q", echo(msg.GetRole()), chatRoles)
		}
		if msg.GetContent() == "" && msg.GetRole() != "assistant" {
			return invalid(fmt.Sprintf("messages[%d].content", i), "must not be empty")
		}
		if err := validateMessageTools(i, msg); err != nil {
			return err
		}
	}
	if err := validateTools(req); err != nil {
		return err
	}
	if err := validateResponseFormat(req.GetResponseFormat()); err != nil {
		return err
	}
	if req.TopLogprobs != nil {
		if !req.GetLogprobs() {
			return invalid("top_logprobs", "only with logprobs true")
		}
		if n := req.GetTopLogprobs(); n < 0 || n > maxTopLogprobs {
			return invalid("top_logprobs", "must be in 0..%d, got %d", maxTopLogprobs, n)
		}
	}
	fields := []string{"prompt"}
	if len(msgs) > 0 {
		fields[0] = "messages"
	}
	if c := req.GetContinuation(); c != nil && c.GetGeneratedText() != "" {
		fields = append(fields, "continuation.generated_text")
	}
	if n := backends.InputBytes(req); n > m.MaxInputTokens*backends.BytesPerToken {
		return &dispatch.InvalidError{Fields: fields, Reason: fmt.Sprintf("%d bytes (~%d tokens) exceeds model %q max_input_tokens %d",
			n, backends.EstimateInputTokens(req), m.Name, m.MaxInputTokens)}
	}
	if mt := req.GetMaxTokens(); mt <= 0 || int(mt) > m.MaxOutputTokens {
		return invalid("max_tokens", "must be in 1..%d for model %q, got %d", m.MaxOutputTokens, m.Name, mt)
	}
	if err := validateSampling(req.GetSampling()); err != nil {
		return err
	}
	if _, ok := pb.Priority_name[int32(req.GetPriority())]; !ok {
		return invalid("priority", "unknown value %d", req.GetPriority())
	}
	if r := req.GetRouting().GetResidency(); !policy.ValidResidency(r) {
		return invalid("routing.residency", "%s is not one of %q", echo(r), policy.Residencies)
	}
	if k := req.GetRouting().GetPrefixKey(); len(k) > policy.MaxPrefixKeyBytes {
		return invalid("routing.prefix_key", "at most %d bytes, got %d", policy.MaxPrefixKeyBytes, len(k))
	}
	if err := dispatch.CheckRequestID("request_id", req.GetRequestId()); err != nil {
		return err
	}
	if c := req.GetContinuation(); c != nil && (c.GetGeneratedTokens() < 0 || c.GetGeneratedTokens() >= req.GetMaxTokens()) {
		return invalid("continuation.generated_tokens", "must be in 0..max_tokens-1, got %d", c.GetGeneratedTokens())
	}
	return nil
}

// validateMessageTools checks a message's tool fields: tool_calls only on
// assistant turns, tool_call_id required on (and only on) tool turns.
func validateMessageTools(i int, msg *pb.ChatMessage) error {
	at := func(f string) string { return fmt.Sprintf("messages[%d].%s", i, f) }
	if len(msg.GetName()) > maxNameBytes {
		return invalid(at("name"), "at most %d bytes, got %d", maxNameBytes, len(msg.GetName()))
	}
	switch {
	case msg.GetRole() == "tool" && msg.GetToolCallId() == "":
		return invalid(at("tool_call_id"), "required on a tool message")
	case msg.GetRole() != "tool" && msg.GetToolCallId() != "":
		return invalid(at("tool_call_id"), "only on a tool message")
	case len(msg.GetToolCallId()) > maxCallIDBytes:
		return invalid(at("tool_call_id"), "at most %d bytes", maxCallIDBytes)
	case len(msg.GetToolCalls()) > 0 && msg.GetRole() != "assistant":
		return invalid(at("tool_calls"), "only on an assistant message")
	case len(msg.GetToolCalls()) > maxTools:
		return invalid(at("tool_calls"), "%d calls, at most %d", len(msg.GetToolCalls()), maxTools)
	}
	for j, c := range msg.GetToolCalls() {
		f := func(name string) string { return at(fmt.Sprintf("tool_calls[%d].%s", j, name)) }
		if c.GetId() == "" || len(c.GetId()) > maxCallIDBytes {
			return invalid(f("id"), "must be 1..%d bytes", maxCallIDBytes)
		}
		if !validName(c.GetName()) {
			return invalid(f("name"), "must be 1..%d bytes of a-z, A-Z, 0-9, _ and -, got %s", maxNameBytes, echo(c.GetName()))
		}
	}
	return nil
}

// validateTools checks tools, tool_choice and parallel_tool_calls.
func validateTools(req *pb.GenerateRequest) error {
	tools := req.GetTools()
	if len(tools) > 0 && len(req.GetMessages()) == 0 {
		return invalid("tools", "only with messages (a chat)")
	}
	if len(tools) > maxTools {
		return invalid("tools", "%d tools, at most %d", len(tools), maxTools)
	}
	names := make(map[string]bool, len(tools))
	for i, t := range tools {
		f := func(name string) string { return fmt.Sprintf("tools[%d].%s", i, name) }
		if !validName(t.GetName()) {
			return invalid(f("name"), "must be 1..%d bytes of a-z, A-Z, 0-9, _ and -, got %s", maxNameBytes, echo(t.GetName()))
		}
		if names[t.GetName()] {
			return invalid(f("name"), "duplicate tool %q", t.GetName())
		}
		names[t.GetName()] = true
		if len(t.GetDescription()) > maxDescBytes {
			return invalid(f("description"), "at most %d bytes, got %d", maxDescBytes, len(t.GetDescription()))
		}
		if p := t.GetParametersJson(); p != "" {
			if err := jsonObject(p); err != nil {
				return invalid(f("parameters_json"), "%v", err)
			}
		}
	}
	tc := req.GetToolChoice()
	if tc != nil && tc.GetMode() != "" && len(tools) == 0 {
		return invalid("tool_choice", "only with tools")
	}
	switch tc.GetMode() {
	case "", "auto", "none", "required":
		if tc.GetFunctionName() != "" {
			return invalid("tool_choice.function_name", "only with mode function")
		}
	case "function":
		if !names[tc.GetFunctionName()] {
			return invalid("tool_choice.function_name", "%s is not one of the tools", echo(tc.GetFunctionName()))
		}
	default:
		return invalid("tool_choice.mode", "%s is not one of auto, none, required, function", echo(tc.GetMode()))
	}
	if req.ParallelToolCalls != nil && len(tools) == 0 {
		return invalid("parallel_tool_calls", "only with tools")
	}
	return nil
}

// validateResponseFormat checks response_format.
func validateResponseFormat(rf *pb.ResponseFormat) error {
	if rf == nil {
		return nil
	}
	switch rf.GetType() {
	case "", "text", "json_object":
		if rf.GetSchemaName() != "" || rf.GetSchemaJson() != "" || rf.Strict != nil {
			return invalid("response_format.schema_json", "only with type json_schema")
		}
	case "json_schema":
		if !validName(rf.GetSchemaName()) {
			return invalid("response_format.schema_name", "must be 1..%d bytes of a-z, A-Z, 0-9, _ and -, got %s", maxNameBytes, echo(rf.GetSchemaName()))
		}
		if err := jsonObject(rf.GetSchemaJson()); err != nil {
			return invalid("response_format.schema_json", "%v", err)
		}
	default:
		return invalid("response_format.type", "%s is not one of text, json_object, json_schema", echo(rf.GetType()))
	}
	return nil
}

// validName: 1..64 bytes of a-z, A-Z, 0-9, _ and - (OpenAI's rule for tool names).
func validName(s string) bool {
	if s == "" || len(s) > maxNameBytes {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// jsonObject checks s is a bounded JSON object.
func jsonObject(s string) error {
	if len(s) > maxSchemaBytes {
		return fmt.Errorf("at most %d bytes, got %d", maxSchemaBytes, len(s))
	}
	t := strings.TrimSpace(s)
	if t == "" || t[0] != '{' || !json.Valid([]byte(t)) {
		return errors.New("must be a JSON object")
	}
	return nil
}

// validateSampling checks the ranges OpenAI-compatible servers accept.
func validateSampling(sp *pb.SamplingParameters) error {
	if sp == nil {
		return nil
	}
	inRange := func(field string, v *float32, lo, hi float32, loOpen bool) error {
		if v == nil {
			return nil
		}
		x := *v
		if math.IsNaN(float64(x)) || x > hi || x < lo || (loOpen && x == lo) {
			open := "["
			if loOpen {
				open = "("
			}
			return invalid(field, "must be in %s%g, %g], got %g", open, lo, hi, x)
		}
		return nil
	}
	if err := inRange("sampling.temperature", sp.Temperature, 0, 2, false); err != nil {
		return err
	}
	if err := inRange("sampling.top_p", sp.TopP, 0, 1, true); err != nil {
		return err
	}
	if err := inRange("sampling.presence_penalty", sp.PresencePenalty, -2, 2, false); err != nil {
		return err
	}
	if err := inRange("sampling.frequency_penalty", sp.FrequencyPenalty, -2, 2, false); err != nil {
		return err
	}
	if sp.TopK != nil && *sp.TopK < 1 {
		return invalid("sampling.top_k", "must be at least 1 when set, got %d", *sp.TopK)
	}
	if len(sp.GetStop()) > maxStopSequences {
		return invalid("sampling.stop", "%d sequences, at most %d", len(sp.GetStop()), maxStopSequences)
	}
	for i, s := range sp.GetStop() {
		if s == "" || len(s) > maxStopBytes {
			return invalid(fmt.Sprintf("sampling.stop[%d]", i), "must be 1..%d bytes, got %d", maxStopBytes, len(s))
		}
	}
	return nil
}

// echo quotes client input for an error message, cut so an error never
// echoes unbounded input (dispatch.Echo).
func echo(s string) string { return dispatch.Echo(s) }

// invalid builds an error naming the request field at fault.
func invalid(field, format string, args ...any) error {
	return dispatch.Invalid(field, format, args...)
}
