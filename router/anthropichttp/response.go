package anthropichttp

import (
	"bytes"
	"encoding/json"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// messageObject is a Messages API message (the unary answer, and the
// message of message_start).
type messageObject struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []contentBlock `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        *usage         `json:"usage"`
	Switchyard   *routeInfo     `json:"switchyard,omitempty"`
}

type contentBlock struct {
	Type  string          `json:"type"`
	Text  *string         `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// usage is Anthropic's: input_tokens excludes the prompt tokens read from
// the engine's prefix cache, which are cache_read_input_tokens.
type usage struct {
	InputTokens          int32 `json:"input_tokens"`
	OutputTokens         int32 `json:"output_tokens"`
	CacheReadInputTokens int32 `json:"cache_read_input_tokens"`
}

func toUsage(u *pb.Usage) *usage {
	if u == nil {
		return &usage{}
	}
	cached := min(u.GetCachedInputTokens(), u.GetInputTokens())
	return &usage{InputTokens: u.GetInputTokens() - cached, OutputTokens: u.GetOutputTokens(), CacheReadInputTokens: cached}
}

// stopReason maps the router's finish reason to Anthropic's.
func stopReason(f pb.FinishReason) *string {
	s := "end_turn"
	switch f {
	case pb.FinishReason_FINISH_REASON_LENGTH:
		s = "max_tokens"
	case pb.FinishReason_FINISH_REASON_STOP_SEQUENCE:
		s = "stop_sequence"
	case pb.FinishReason_FINISH_REASON_TOOL_CALLS:
		s = "tool_use"
	case pb.FinishReason_FINISH_REASON_CONTENT_FILTER:
		s = "refusal"
	}
	return &s
}

// toolUse is a tool_use block. The input is the model's arguments when they
// are a JSON object; arguments that are not (a call cut by max_tokens) are
// given as a JSON string, never dropped.
func toolUse(id, name, args string) contentBlock {
	in := json.RawMessage(bytes.TrimSpace([]byte(args)))
	if len(in) == 0 {
		in = json.RawMessage("{}")
	} else if in[0] != '{' || !json.Valid(in) {
		in, _ = json.Marshal(args)
	}
	return contentBlock{Type: "tool_use", ID: id, Name: name, Input: in}
}

// routeInfo is the route taken, as the "switchyard" extension field.
type routeInfo struct {
	Pool        string   `json:"pool"`
	Cloud       string   `json:"cloud"`
	Region      string   `json:"region"`
	Accelerator string   `json:"accelerator"`
	Attempts    int32    `json:"attempts"`
	PoolsTried  []string `json:"pools_tried,omitempty"`
	RequestID   string   `json:"request_id"`
}

func toRoute(r *pb.Route, id string) *routeInfo {
	if r == nil {
		return nil
	}
	return &routeInfo{Pool: r.GetPool(), Cloud: r.GetCloud(), Region: r.GetRegion(), Accelerator: r.GetAccelerator(),
		Attempts: r.GetAttempts(), PoolsTried: r.GetPoolsTried(), RequestID: id}
}
