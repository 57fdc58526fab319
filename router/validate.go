package router

import (
	"fmt"
	"math"
	"strings"

	"github.com/switchyard-dev/switchyard/backends"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Request limits that do not depend on the model.
const (
	// maxRequestIDLen bounds client-chosen request ids (they become Redis keys).
	maxRequestIDLen = 128
	// maxMessages bounds a chat's turns.
	maxMessages = 1024
	// maxStopSequences and maxStopBytes bound sampling.stop, as OpenAI's API does.
	maxStopSequences = 4
	maxStopBytes     = 256
	// maxEchoBytes bounds client input quoted back in an error.
	maxEchoBytes = 64
)

// chatRoles are the roles a chat message may take.
var chatRoles = []string{"system", "user", "assistant"}

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
	for i, msg := range msgs {
		switch msg.GetRole() {
		case "system", "user", "assistant":
		default:
			return invalid(fmt.Sprintf("messages[%d].role", i), "%s is not one of %q", echo(msg.GetRole()), chatRoles)
		}
		if msg.GetContent() == "" && msg.GetRole() != "assistant" {
			return invalid(fmt.Sprintf("messages[%d].content", i), "must not be empty")
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
		return &fieldError{fields: fields, reason: fmt.Sprintf("%d bytes (~%d tokens) exceeds model %q max_input_tokens %d",
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
	if len(req.GetRequestId()) > maxRequestIDLen || strings.ContainsAny(req.GetRequestId(), "{}\n\r ") {
		return invalid("request_id", "at most %d characters, no spaces or braces", maxRequestIDLen)
	}
	if c := req.GetContinuation(); c != nil && (c.GetGeneratedTokens() < 0 || c.GetGeneratedTokens() >= req.GetMaxTokens()) {
		return invalid("continuation.generated_tokens", "must be in 0..max_tokens-1, got %d", c.GetGeneratedTokens())
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

// echo quotes client input for an error message, cut to maxEchoBytes so an
// error never grows with what the client sent.
func echo(s string) string {
	if len(s) <= maxEchoBytes {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:maxEchoBytes], len(s))
}
