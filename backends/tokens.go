package backends

import (
	"strings"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// EstimateTokens approximates the token count of text the way the whole
// project does (router validation, simulator, load-test prompt synthesis):
// one token per four bytes, at least one for non-empty text. Real tokenizers
// average 3.5–4.5 bytes per token on English and code.
func EstimateTokens(text string) int {
	if len(text) == 0 {
		return 0
	}
	return (len(text) + 3) / 4
}

// BytesPerToken is the ratio EstimateTokens assumes.
const BytesPerToken = 4

// PerMessageTokens is what each chat message costs beyond its content (role
// and separators in the chat template; OpenAI documents 3–4 per message).
const PerMessageTokens = 4

// EstimateInputTokens approximates the input of a request: the prompt, or
// every chat message's content plus PerMessageTokens each, plus the text of a
// continuation (it is sent to the pool as input too).
func EstimateInputTokens(req *pb.GenerateRequest) int {
	n := EstimateTokens(req.GetPrompt())
	for _, m := range req.GetMessages() {
		n += EstimateTokens(m.GetContent()) + PerMessageTokens
		for _, c := range m.GetToolCalls() {
			n += EstimateTokens(c.GetName()) + EstimateTokens(c.GetArguments())
		}
	}
	for _, t := range req.GetTools() {
		n += EstimateTokens(t.GetName()) + EstimateTokens(t.GetDescription()) + EstimateTokens(t.GetParametersJson())
	}
	n += EstimateTokens(req.GetResponseFormat().GetSchemaJson())
	return n + EstimateTokens(req.GetContinuation().GetGeneratedText())
}

// InputBytes is the size of the request's input text: prompt or messages'
// content (and assistant tool calls), tool declarations, a response schema,
// plus a continuation's text.
func InputBytes(req *pb.GenerateRequest) int {
	n := len(req.GetPrompt()) + len(req.GetContinuation().GetGeneratedText())
	for _, m := range req.GetMessages() {
		n += len(m.GetContent())
		for _, c := range m.GetToolCalls() {
			n += len(c.GetName()) + len(c.GetArguments())
		}
	}
	// Tool declarations and a response schema reach the model as input too.
	for _, t := range req.GetTools() {
		n += len(t.GetName()) + len(t.GetDescription()) + len(t.GetParametersJson())
	}
	n += len(req.GetResponseFormat().GetSchemaJson())
	return n
}

// PromptText flattens a chat into one prompt for adapters that only take
// plain text (the simulator, servers without a chat endpoint): one
// "role: content" line per message, then "assistant:" to cue the reply.
func PromptText(req *pb.GenerateRequest) string {
	if len(req.GetMessages()) == 0 {
		return req.GetPrompt()
	}
	var b strings.Builder
	for _, m := range req.GetMessages() {
		b.WriteString(m.GetRole())
		b.WriteString(": ")
		b.WriteString(m.GetContent())
		b.WriteByte('\n')
	}
	b.WriteString("assistant:")
	return b.String()
}
