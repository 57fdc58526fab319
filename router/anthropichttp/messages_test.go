package anthropichttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func weatherTool() anthropic.ToolUnionParam {
	return anthropic.ToolUnionParamOfTool(anthropic.ToolInputSchemaParam{
		Properties: map[string]any{"city": map[string]any{"type": "string"}}, Required: []string{"city"},
	}, "get_weather")
}

// anthropic-sdk-go: a text message with a system prompt, several turns and
// stop_sequences, then the same streamed, whose final message has a
// stop_reason and usage, with Anthropic's event sequence.
func TestAnthropicSDKTextMessageAndStream(t *testing.T) {
	d := startDoor(t, "", 0)
	c := d.sdk()
	ctx := ctxT(t, 20*time.Second)
	params := anthropic.MessageNewParams{
		Model: "llama-3.1-8b", MaxTokens: 12,
		System: []anthropic.TextBlockParam{{Text: "answer briefly"}},
		Messages: []anthropic.MessageParam{
			anthropic.NewUserMessage(anthropic.NewTextBlock("hello")),
			anthropic.NewAssistantMessage(anthropic.NewTextBlock("hi, what can I do?")),
			anthropic.NewUserMessage(anthropic.NewTextBlock("where is my call served?")),
		},
		StopSequences: []string{"\n\nHuman:"},
	}
	var hr *http.Response
	msg, err := c.Messages.New(ctx, params, option.WithResponseInto(&hr))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != "message" || msg.Role != "assistant" || len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text == "" {
		t.Fatalf("message %s", msg.RawJSON())
	}
	if msg.StopReason != anthropic.StopReasonMaxTokens || msg.Usage.OutputTokens != 12 || msg.Usage.InputTokens <= 0 || !strings.HasPrefix(msg.ID, "msg_") {
		t.Fatalf("stop %q usage %+v id %s", msg.StopReason, msg.Usage, msg.ID)
	}
	if hr.Header.Get("X-Switchyard-Pool") == "" || hr.Header.Get("Request-Id") == "" {
		t.Fatalf("headers %v", hr.Header)
	}

	s := c.Messages.NewStreaming(ctx, params)
	var acc anthropic.Message
	var events []string
	var text strings.Builder
	for s.Next() {
		ev := s.Current()
		events = append(events, ev.Type)
		if err := acc.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == "content_block_delta" {
			text.WriteString(ev.Delta.Text)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.StopReason != anthropic.StopReasonMaxTokens || acc.Usage.OutputTokens != 12 || acc.Usage.InputTokens <= 0 || acc.Content[0].Text != text.String() || text.Len() == 0 {
		t.Fatalf("final message %s", acc.RawJSON())
	}
	// (The SDK hands no ping events to the application.)
	seq := strings.Join(compact(events), ",")
	if seq != "message_start,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop" {
		t.Fatalf("event sequence %s", seq)
	}

	// On the wire: every event named, ping after message_start, the final
	// usage and stop_reason in message_delta.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/v1/messages", strings.NewReader(
		`{"model":"llama-3.1-8b","max_tokens":4,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var names []string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, n)
		}
	}
	if got := strings.Join(compact(names), ","); got != "message_start,ping,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop" ||
		resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || !strings.Contains(string(raw), `"stop_reason":"max_tokens"`) || !strings.Contains(string(raw), `"output_tokens":4`) {
		t.Fatalf("wire events %s:\n%s", got, raw)
	}
}

// compact collapses repeats (the deltas).
func compact(s []string) []string {
	var out []string
	for _, x := range s {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// A tool_use block with stop_reason tool_use, unary and streamed; the
// tool_result sent back gets a text answer.
func TestAnthropicSDKToolUse(t *testing.T) {
	d := startDoor(t, "", 0)
	c := d.sdk()
	ctx := ctxT(t, 20*time.Second)
	params := anthropic.MessageNewParams{
		Model: "llama-3.1-8b", MaxTokens: 64,
		Messages:   []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("weather in Paris?"))},
		Tools:      []anthropic.ToolUnionParam{weatherTool()},
		ToolChoice: anthropic.ToolChoiceUnionParam{OfAny: &anthropic.ToolChoiceAnyParam{}},
	}
	msg, err := c.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.StopReason != anthropic.StopReasonToolUse || len(msg.Content) != 1 {
		t.Fatalf("message %s", msg.RawJSON())
	}
	tu := msg.Content[0].AsToolUse()
	var in struct {
		City string `json:"city"`
	}
	if tu.Name != "get_weather" || tu.ID == "" || json.Unmarshal(tu.Input, &in) != nil || in.City == "" {
		t.Fatalf("tool_use %s", msg.Content[0].RawJSON())
	}

	s := c.Messages.NewStreaming(ctx, params)
	var acc anthropic.Message
	partial := 0
	for s.Next() {
		ev := s.Current()
		if err := acc.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == "content_block_delta" && ev.Delta.Type == "input_json_delta" {
			partial++
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.StopReason != anthropic.StopReasonToolUse || len(acc.Content) != 1 || acc.Content[0].Type != "tool_use" || partial < 2 {
		t.Fatalf("streamed %s (%d input_json_delta)", acc.RawJSON(), partial)
	}
	if err := json.Unmarshal(acc.Content[0].Input, &in); err != nil || in.City == "" {
		t.Fatalf("streamed input %s: %v", acc.Content[0].Input, err)
	}

	params.ToolChoice = anthropic.ToolChoiceUnionParam{OfAuto: &anthropic.ToolChoiceAutoParam{}}
	params.Messages = append(params.Messages, msg.ToParam(), anthropic.NewUserMessage(anthropic.NewToolResultBlock(tu.ID, "18C and sunny", false)))
	msg2, err := c.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg2.StopReason == anthropic.StopReasonToolUse || msg2.Content[0].Type != "text" {
		t.Fatalf("after the tool result: %s", msg2.RawJSON())
	}
}

// Errors come in Anthropic's shape and status; x-api-key is the tenant's key.
func TestAnthropicErrorsAndKeys(t *testing.T) {
	const key = "sk-tenant-acme"
	d := startDoor(t, string(demoWithTenant(key)), 0)
	ctx := ctxT(t, 20*time.Second)
	params := anthropic.MessageNewParams{Model: "llama-3.1-8b", MaxTokens: 3, Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}
	c := d.sdk(option.WithAPIKey("sk-wrong"))
	_, err := c.Messages.New(ctx, params)
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || !strings.Contains(apiErr.RawJSON(), `"type":"authentication_error"`) {
		t.Fatalf("wrong key: %v", err)
	}
	c = d.sdk(option.WithAPIKey(key))
	if _, err := c.Messages.New(ctx, params); err != nil {
		t.Fatalf("tenant key: %v", err)
	}
	bad := params
	bad.Model = "claude-nope"
	_, err = c.Messages.New(ctx, bad)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || !strings.Contains(apiErr.RawJSON(), `"type":"not_found_error"`) {
		t.Fatalf("unknown model: %v", err)
	}

	for _, tc := range []struct {
		name, version, body string
		status              int
		has                 string
	}{
		{"no anthropic-version", "", `{"model":"llama-3.1-8b","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, 400, "anthropic-version"},
		{"unknown anthropic-version", "2099-01-01", `{"model":"llama-3.1-8b","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, 400, "anthropic-version"},
		{"temperature under 2026-10-21", "2026-10-21", `{"model":"llama-3.1-8b","max_tokens":3,"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}`, 400, "temperature"},
		{"temperature, top_p, top_k under 2023-06-01", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"temperature":0.5,"top_p":0.9,"top_k":20,"messages":[{"role":"user","content":"hi"}]}`, 200, `"stop_reason":"max_tokens"`},
		{"temperature over 1", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}`, 400, "temperature"},
		{"no max_tokens", "2023-06-01", `{"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}]}`, 400, "max_tokens"},
		{"image block", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}`, 400, "messages.0.content.0.type"},
		{"thinking", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"hi"}]}`, 400, "thinking"},
		{"unknown field", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"frobnicate":1,"messages":[{"role":"user","content":"hi"}]}`, 400, "frobnicate"},
		{"too many stop_sequences (router's bound)", "2023-06-01", `{"model":"llama-3.1-8b","max_tokens":3,"stop_sequences":["a","b","c","d","e"],"messages":[{"role":"user","content":"hi"}]}`, 400, "stop_sequences"},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"/v1/messages", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Api-Key", key)
		if tc.version != "" {
			req.Header.Set("Anthropic-Version", tc.version)
		}
		resp, err := d.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(out), tc.has) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, resp.StatusCode, out, tc.status, tc.has)
		}
		if tc.status == 400 && !strings.Contains(string(out), `{"type":"error","error":{"type":"invalid_request_error"`) {
			t.Errorf("%s: not Anthropic's error shape: %s", tc.name, out)
		}
	}
}

func demoWithTenant(key string) []byte {
	return append(demoYAML(), "\ntenants:\n  - name: acme\n    api_key_sha256: ["+hashToken(key)+"]\n"...)
}

// A stream broken in the middle of a tool call ends with an error event.
func TestAnthropicToolUseBrokenMidStream(t *testing.T) {
	d := startDoor(t, "", 2)
	body := `{"model":"llama-3.3-70b","max_tokens":200,"stream":true,"tool_choice":{"type":"any"},
		"tools":[{"name":"search","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
		"messages":[{"role":"user","content":"look it up"}]}`
	req, _ := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodPost, d.url+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Switchyard-Caller-Region", "us-east-1")
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	deltas, killed, errEvent := 0, "", ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "event: content_block_delta") {
			deltas++
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"type":"error"`) {
			errEvent = line
		}
		if deltas == 5 && killed == "" {
			pools, err := d.host.SimStats(context.Background(), &pb.SimStatsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pools.GetPools() {
				if p.GetRunning() == 1 {
					killed = p.GetPool()
				}
			}
			if killed == "" {
				t.Fatal("no pool runs the stream")
			}
			if _, err := d.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: killed, Outage: true}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !strings.Contains(errEvent, "middle of a tool call") || !strings.Contains(errEvent, `"overloaded_error"`) {
		t.Fatalf("stream ended with %q after %d deltas", errEvent, deltas)
	}
}

// anthropic-sdk-go against the router in front of a real llama-server (an
// OpenAI-compatible server): the Messages call is translated to a chat
// completion and back, unary and streamed.
func TestAnthropicSDKOnLlamaServer(t *testing.T) {
	srv := llamatest.Start(t, llamatest.Options{Slots: 2})
	d := startDoor(t, llamaFleet(srv), 0)
	c := d.sdk()
	ctx := ctxT(t, 30*time.Second)
	params := anthropic.MessageNewParams{Model: "tiny", MaxTokens: 6,
		System:   []anthropic.TextBlockParam{{Text: "be terse"}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))}}
	msg, err := c.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.StopReason == "" || msg.Usage.OutputTokens <= 0 || msg.Usage.InputTokens <= 0 || len(msg.Content) != 1 {
		t.Fatalf("message %s", msg.RawJSON())
	}
	s := c.Messages.NewStreaming(ctx, params)
	var acc anthropic.Message
	for s.Next() {
		if err := acc.Accumulate(s.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.StopReason == "" || acc.Usage.OutputTokens <= 0 {
		t.Fatalf("streamed %s", acc.RawJSON())
	}
}
