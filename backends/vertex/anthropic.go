package vertex

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/managed"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Backend is a Vertex AI pool of an Anthropic publisher model. Safe for concurrent use.
type Backend struct {
	cfg    *poolConfig
	client *http.Client
	gate   *managed.Gate
	ref    *managed.Refresher
	log    *slog.Logger
	closed atomic.Bool
}

var (
	_ backends.Backend      = (*Backend)(nil)
	_ backends.LoadReporter = (*Backend)(nil)
)

// MessagesRequest is the Anthropic Messages body as Vertex takes it: no
// model field (the model is in the URL) and anthropic_version set.
type MessagesRequest struct {
	AnthropicVersion string      `json:"anthropic_version"`
	Messages         []Message   `json:"messages"`
	System           string      `json:"system,omitempty"`
	MaxTokens        int32       `json:"max_tokens"`
	Stream           bool        `json:"stream,omitempty"`
	Temperature      *float32    `json:"temperature,omitempty"`
	TopP             *float32    `json:"top_p,omitempty"`
	TopK             *int32      `json:"top_k,omitempty"`
	StopSequences    []string    `json:"stop_sequences,omitempty"`
	Tools            []ToolDef   `json:"tools,omitempty"`
	ToolChoice       *ToolChoice `json:"tool_choice,omitempty"`
}

// Message is one turn: one text block is sent as a plain string.
type Message struct {
	Role   string
	Blocks []Block
}

// Block is a content block: text, tool_use or tool_result.
type Block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   string          `json:"content,omitempty"`
}

// MarshalJSON writes the turn as the Messages API takes it.
func (m Message) MarshalJSON() ([]byte, error) {
	if len(m.Blocks) == 1 && m.Blocks[0].Type == "text" {
		return json.Marshal(struct {
			Content string `json:"content"`
			Role    string `json:"role"`
		}{m.Blocks[0].Text, m.Role})
	}
	return json.Marshal(struct {
		Content []Block `json:"content"`
		Role    string  `json:"role"`
	}{m.Blocks, m.Role})
}

// ToolDef is a tool the model may call.
type ToolDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// ToolChoice is auto, any, tool (with name) or none.
type ToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse *bool  `json:"disable_parallel_tool_use,omitempty"`
}

type built struct {
	body    []byte
	model   string
	field   string
	trimmed bool
	url     string
}

// build maps a request to the Messages body: system messages joined into
// system, consecutive turns of one role joined (the API wants them to
// alternate from the user's; a tool result is a user turn), an assistant's
// tool calls as tool_use blocks, a continuation as a trailing assistant
// turn without trailing whitespace, max_tokens less what was generated,
// tools and tool_choice (parallel_tool_calls false as
// disable_parallel_tool_use).
func (c *poolConfig) build(req *pb.GenerateRequest, stream bool) (*built, error) {
	cont := req.GetContinuation()
	maxTokens := req.GetMaxTokens() - max(cont.GetGeneratedTokens(), 0)
	if maxTokens < 1 {
		maxTokens = 1
	}
	out := &built{model: c.model(req.GetModel()), field: "prompt"}
	m := MessagesRequest{AnthropicVersion: c.version, MaxTokens: maxTokens, Stream: stream}
	add := func(role string, blocks ...Block) {
		if n := len(m.Messages); n > 0 && m.Messages[n-1].Role == role {
			last := &m.Messages[n-1]
			if prev := &last.Blocks[len(last.Blocks)-1]; len(blocks) == 1 && blocks[0].Type == "text" && prev.Type == "text" {
				prev.Text += "\n\n" + blocks[0].Text
				return
			}
			last.Blocks = append(last.Blocks, blocks...)
			return
		}
		m.Messages = append(m.Messages, Message{Role: role, Blocks: blocks})
	}
	text := func(s string) Block { return Block{Type: "text", Text: s} }
	var system []string
	if msgs := req.GetMessages(); len(msgs) > 0 {
		out.field = "messages"
		for i, msg := range msgs {
			switch msg.GetRole() {
			case "system":
				if msg.GetContent() != "" {
					system = append(system, msg.GetContent())
				}
			case "user":
				if msg.GetContent() == "" {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (the Messages API refuses empty turns)", i)
				}
				add("user", text(msg.GetContent()))
			case "assistant":
				var blocks []Block
				if msg.GetContent() != "" {
					blocks = append(blocks, text(msg.GetContent()))
				}
				for j, tc := range msg.GetToolCalls() {
					args := tc.GetArguments()
					if args == "" {
						args = "{}"
					}
					if !json.Valid([]byte(args)) {
						return nil, status.Errorf(codes.InvalidArgument, "messages[%d].tool_calls[%d].arguments: not JSON (the Messages API takes tool input as an object)", i, j)
					}
					blocks = append(blocks, Block{Type: "tool_use", ID: tc.GetId(), Name: tc.GetName(), Input: json.RawMessage(args)})
				}
				if len(blocks) == 0 {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (the Messages API refuses empty turns)", i)
				}
				add("assistant", blocks...)
			case "tool":
				add("user", Block{Type: "tool_result", ToolUseID: msg.GetToolCallId(), Content: msg.GetContent()})
			default:
				return nil, status.Errorf(codes.InvalidArgument, "messages[%d].role: %q is not system, user, assistant or tool", i, managed.Quote(msg.GetRole()))
			}
		}
		if len(m.Messages) == 0 || m.Messages[0].Role != "user" {
			return nil, status.Errorf(codes.InvalidArgument, "messages: the Messages API needs the first non-system turn to be the user's")
		}
	} else {
		if req.GetPrompt() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "prompt: empty")
		}
		add("user", text(req.GetPrompt()))
	}
	if g := cont.GetGeneratedText(); g != "" {
		add("assistant", text(g))
	}
	if last := &m.Messages[len(m.Messages)-1]; last.Role == "assistant" {
		if tb := &last.Blocks[len(last.Blocks)-1]; tb.Type == "text" {
			if t := strings.TrimRightFunc(tb.Text, unicode.IsSpace); t != tb.Text {
				tb.Text, out.trimmed = t, true
			}
			if tb.Text == "" {
				last.Blocks = last.Blocks[:len(last.Blocks)-1]
				if len(last.Blocks) == 0 {
					m.Messages = m.Messages[:len(m.Messages)-1]
				}
			}
		}
	}
	m.System = strings.Join(system, "\n\n")
	if sp := req.GetSampling(); sp != nil {
		m.Temperature, m.TopP, m.TopK, m.StopSequences = sp.Temperature, sp.TopP, sp.TopK, sp.GetStop()
	}
	for i, t := range req.GetTools() {
		if t.GetStrict() {
			return nil, status.Errorf(codes.InvalidArgument, "tools[%d].strict: cannot be honoured by Anthropic models on Vertex AI", i)
		}
		schema := t.GetParametersJson()
		if schema == "" {
			schema = `{"type":"object","properties":{}}`
		}
		if !json.Valid([]byte(schema)) {
			return nil, status.Errorf(codes.InvalidArgument, "tools[%d].parameters: not JSON", i)
		}
		m.Tools = append(m.Tools, ToolDef{Name: t.GetName(), Description: t.GetDescription(), InputSchema: json.RawMessage(schema)})
	}
	if len(m.Tools) > 0 {
		ch := req.GetToolChoice()
		switch ch.GetMode() {
		case "", "auto":
			m.ToolChoice = &ToolChoice{Type: "auto"}
		case "required":
			m.ToolChoice = &ToolChoice{Type: "any"}
		case "function":
			m.ToolChoice = &ToolChoice{Type: "tool", Name: ch.GetFunctionName()}
		case "none":
			m.ToolChoice = &ToolChoice{Type: "none"}
		default:
			return nil, status.Errorf(codes.InvalidArgument, "tool_choice.mode: %q is not auto, none, required or function", managed.Quote(ch.GetMode()))
		}
		if p := req.ParallelToolCalls; p != nil && !*p && m.ToolChoice.Type != "none" {
			disable := true
			m.ToolChoice.DisableParallelToolUse = &disable
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&m); err != nil {
		return nil, status.Errorf(codes.Internal, "pool %s: encode request: %v", c.pool, err)
	}
	out.body = buf.Bytes()
	return out, nil
}

func stop(r string) pb.FinishReason {
	switch r {
	case "max_tokens", "model_context_window_exceeded":
		return pb.FinishReason_FINISH_REASON_LENGTH
	case "stop_sequence":
		return pb.FinishReason_FINISH_REASON_STOP_SEQUENCE
	case "refusal":
		return pb.FinishReason_FINISH_REASON_CONTENT_FILTER
	case "tool_use":
		return pb.FinishReason_FINISH_REASON_TOOL_CALLS
	default: // end_turn, pause_turn
		return pb.FinishReason_FINISH_REASON_STOP
	}
}

// Load implements backends.LoadReporter.
func (b *Backend) Load() (backends.Load, bool) { return b.gate.Load() }

// Capabilities implements backends.Backend.
func (b *Backend) Capabilities() backends.Capabilities {
	return backends.Capabilities{Continuation: b.cfg.continuation, Tools: b.cfg.api == "anthropic"}
}

// Close stops the token refresh and closes idle connections.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.ref.Close()
	b.client.CloseIdleConnections()
	return nil
}

// Check implements backends.Backend: a token held and not refused, and the
// endpoint answering HTTP.
func (b *Backend) Check(ctx context.Context) error {
	if b.closed.Load() {
		return status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := b.gate.Health(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", b.cfg.pool, err)
	}
	if _, err := b.ref.Bearer(); err != nil {
		return status.Errorf(codes.Unavailable, "pool %s: %v", b.cfg.pool, err)
	}
	return probe(ctx, b.client, b.cfg)
}

type call struct {
	ctx      context.Context
	cancel   context.CancelFunc
	timedOut atomic.Bool
	resp     *http.Response
	in       *built
	done     func()
}

func (c *call) close() {
	if c.resp != nil {
		_ = c.resp.Body.Close()
	}
	c.cancel()
	c.done()
}

// maxErrorBody bounds an error response read.
const maxErrorBody = 64 << 10

// start sends the request; without error the response is 200 and the
// caller closes the call.
func (b *Backend) start(ctx context.Context, req *pb.GenerateRequest, stream bool) (*call, error) {
	if b.closed.Load() {
		return nil, status.Errorf(codes.Unavailable, "pool %s: backend closed", b.cfg.pool)
	}
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	var in *built
	var err error
	if b.cfg.api == "gemini" {
		in, err = b.cfg.buildGemini(req)
	} else {
		in, err = b.cfg.build(req, stream)
	}
	if err != nil {
		return nil, err
	}
	b.ref.WaitFirst(ctx)
	tok, err := b.ref.Bearer()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "pool %s: %v", b.cfg.pool, err)
	}
	done, err := b.gate.Admit()
	if err != nil {
		return nil, err
	}
	c := &call{in: in, done: done}
	c.ctx, c.cancel = context.WithCancel(ctx)
	t := time.AfterFunc(b.cfg.requestMax, func() { c.timedOut.Store(true); c.cancel() })
	context.AfterFunc(c.ctx, func() { t.Stop() })
	hreq, err := http.NewRequestWithContext(c.ctx, http.MethodPost, b.cfg.predictURL(in.model, stream), bytes.NewReader(in.body))
	if err != nil {
		c.close()
		return nil, status.Errorf(codes.Internal, "pool %s: build request: %v", b.cfg.pool, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if stream {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	hreq.Header.Set("Authorization", "Bearer "+tok)
	resp, err := b.client.Do(hreq)
	if err != nil {
		c.close()
		return nil, b.transportError(ctx, c, err, 0)
	}
	c.resp = resp
	if resp.StatusCode != http.StatusOK {
		err := b.httpError(resp, in)
		c.close()
		return nil, err
	}
	return c, nil
}

func (b *Backend) transportError(ctx context.Context, c *call, err error, sent int32) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if c.timedOut.Load() {
		return status.Errorf(codes.Unavailable, "pool %s: no answer within %s (or a stream silent for %s) after %d tokens", b.cfg.pool, b.cfg.requestMax, b.cfg.idleMax, sent)
	}
	return status.Errorf(codes.Unavailable, "pool %s: after %d tokens: %v", b.cfg.pool, sent, scrub(err))
}

// apiError reads both error shapes: Google's {"error":{"code","message","status"}}
// and Anthropic's {"type":"error","error":{"type","message"}}.
func apiError(body []byte) (kind, msg string) {
	var v struct {
		Error struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil {
		return "", managed.Quote(string(body))
	}
	kind = v.Error.Status
	if kind == "" {
		kind = v.Error.Type
	}
	return kind, managed.Quote(v.Error.Message)
}

// httpError classifies a non-200 answer: 429, RESOURCE_EXHAUSTED and
// Anthropic's overloaded (529) are shortages; 401/403 refused credentials;
// 400 and 404 the client's; anything else the pool's failure.
func (b *Backend) httpError(resp *http.Response, in *built) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	kind, msg := apiError(body)
	code := resp.StatusCode
	where := "pool " + b.cfg.pool
	switch {
	case code == http.StatusTooManyRequests || code == 529 || kind == "RESOURCE_EXHAUSTED" || kind == "overloaded_error" || kind == "rate_limit_error":
		back := b.gate.Throttled()
		return status.Errorf(codes.ResourceExhausted, "%s: Vertex AI out of quota or capacity (HTTP %d %s), backing off %s: %s", where, code, kind, back, msg)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		if b.gate.Denied() {
			b.log.Error("Vertex AI refused the pool's token: the pool fails until it changes (check roles/aiplatform.user on the project, the model enabled in Model Garden, and options project, location)",
				"pool", b.cfg.pool, "http_status", code, "status", kind)
		}
		return status.Errorf(codes.Unavailable, "%s: Vertex AI refused the pool's credentials (HTTP %d %s): %s", where, code, kind, msg)
	case code == http.StatusNotFound:
		return status.Errorf(codes.InvalidArgument, "model: %s does not serve it (model %s, HTTP 404): %s", where, managed.Quote(in.model), msg)
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge:
		l := strings.ToLower(msg)
		if strings.Contains(l, "too long") || strings.Contains(l, "context") || code == http.StatusRequestEntityTooLarge {
			return status.Errorf(codes.InvalidArgument, "%s: longer than the context window of %s (HTTP %d): %s", in.field, where, code, msg)
		}
		return status.Errorf(codes.InvalidArgument, "%s: rejected by %s (HTTP %d %s): %s", in.field, where, code, kind, msg)
	}
	return status.Errorf(codes.Unavailable, "%s: HTTP %d %s: %s", where, code, kind, msg)
}

// maxToolCalls bounds the tool calls one streamed answer may carry.
const maxToolCalls = 128

// maxResponseBody bounds a unary response; maxEvent one SSE line.
const (
	maxResponseBody = 16 << 20
	maxEvent        = 1 << 20
)

type usage struct {
	InputTokens  int32 `json:"input_tokens"`
	OutputTokens int32 `json:"output_tokens"`
}

// Generate implements backends.Backend with rawPredict (or Gemini's generateContent).
func (b *Backend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	if b.cfg.api == "gemini" {
		return b.generateGemini(ctx, req)
	}
	c, err := b.start(ctx, req, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	body, err := io.ReadAll(io.LimitReader(c.resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, b.transportError(ctx, c, err, 0)
	}
	var v struct {
		Content []struct {
			Type  string          `json:"type"`
			Text  string          `json:"text"`
			ID    string          `json:"id"`
			Name  string          `json:"name"`
			Input json.RawMessage `json:"input"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      *usage `json:"usage"`
	}
	if len(body) > maxResponseBody || json.Unmarshal(body, &v) != nil {
		return nil, status.Errorf(codes.Unavailable, "pool %s: response is not a Messages answer: %s", b.cfg.pool, managed.Quote(string(body)))
	}
	b.gate.Succeeded()
	var text strings.Builder
	var calls []*pb.ToolCall
	for _, cb := range v.Content {
		switch cb.Type {
		case "text":
			text.WriteString(cb.Text)
		case "tool_use":
			args := string(cb.Input)
			if args == "" {
				args = "{}"
			}
			calls = append(calls, &pb.ToolCall{Id: cb.ID, Name: cb.Name, Arguments: args})
		}
	}
	s := text.String()
	if c.in.trimmed {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	resp := &pb.GenerateResponse{Text: s, FinishReason: stop(v.StopReason), ToolCalls: calls}
	if u := v.Usage; u != nil && (u.InputTokens > 0 || u.OutputTokens > 0) {
		resp.Usage = &pb.Usage{InputTokens: max(u.InputTokens, 0), OutputTokens: max(u.OutputTokens, 0)}
	} else {
		resp.Usage = &pb.Usage{OutputTokens: int32(backends.EstimateTokens(s))}
	}
	return resp, nil
}

// streamEvent is the part of a Messages stream event the adapter reads.
type streamEvent struct {
	Type         string `json:"type"`
	Index        int    `json:"index"`
	ContentBlock *struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"content_block"`
	Message *struct {
		Usage *usage `json:"usage"`
	} `json:"message"`
	Delta *struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	Usage *usage `json:"usage"`
	Error *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// GenerateStream implements backends.Backend with streamRawPredict (SSE):
// each text delta a chunk of one token; the final chunk the rest of the
// output count, the usage (input from message_start, output from
// message_delta) and the stop reason. A stream that ends before
// message_stop is UNAVAILABLE; an overloaded error event a shortage.
func (b *Backend) GenerateStream(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
	if b.cfg.api == "gemini" {
		return b.streamGemini(ctx, req, send)
	}
	c, err := b.start(ctx, req, true)
	if err != nil {
		return err
	}
	defer c.close()
	idle := time.AfterFunc(b.cfg.idleMax, func() { c.timedOut.Store(true); c.cancel() })
	defer idle.Stop()
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEvent)
	toolIndex := map[int]int32{} // content block index -> tool call index
	var sent int32
	emit := func(out *pb.GenerateChunk) error {
		idle.Stop() // a slow client is not a silent service
		if err := send(out); err != nil {
			return err
		}
		idle.Reset(b.cfg.idleMax)
		sent += out.Tokens
		return nil
	}
	var (
		in, out       int32
		finish        pb.FinishReason
		stopped, trim = false, c.in.trimmed
	)
	for sc.Scan() {
		idle.Reset(b.cfg.idleMax)
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:"))
		if !ok {
			continue
		}
		var ev streamEvent
		if err := json.Unmarshal(bytes.TrimSpace(data), &ev); err != nil {
			return status.Errorf(codes.Unavailable, "pool %s: bad stream event: %s", b.cfg.pool, managed.Quote(string(data)))
		}
		switch ev.Type {
		case "message_start":
			if ev.Message != nil && ev.Message.Usage != nil {
				in = ev.Message.Usage.InputTokens
			}
		case "content_block_start":
			if cb := ev.ContentBlock; cb != nil && cb.Type == "tool_use" && len(toolIndex) < maxToolCalls {
				ti := int32(len(toolIndex))
				toolIndex[ev.Index] = ti
				if err := emit(&pb.GenerateChunk{Tokens: 1, ToolCalls: []*pb.ToolCallDelta{{Index: ti, Id: cb.ID, Name: cb.Name}}}); err != nil {
					return err
				}
			}
		case "content_block_delta":
			if ev.Delta != nil && ev.Delta.Type == "input_json_delta" {
				if ti, ok := toolIndex[ev.Index]; ok && ev.Delta.PartialJSON != "" {
					a := ev.Delta.PartialJSON
					if err := emit(&pb.GenerateChunk{Tokens: backends.DeltaTokens(len(a)), ToolCalls: []*pb.ToolCallDelta{{Index: ti, Arguments: a}}}); err != nil {
						return err
					}
				}
				continue
			}
			if ev.Delta == nil || ev.Delta.Type != "text_delta" {
				continue
			}
			t := ev.Delta.Text
			if trim {
				t = strings.TrimLeftFunc(t, unicode.IsSpace)
				trim = t == ""
			}
			if t == "" {
				continue
			}
			if err := emit(&pb.GenerateChunk{Text: t, Tokens: backends.DeltaTokens(len(t))}); err != nil {
				return err
			}
		case "message_delta":
			if ev.Delta != nil && ev.Delta.StopReason != "" {
				finish = stop(ev.Delta.StopReason)
			}
			if ev.Usage != nil {
				out = ev.Usage.OutputTokens
			}
		case "message_stop":
			stopped = true
		case "error":
			kind, msg := "", ""
			if ev.Error != nil {
				kind, msg = ev.Error.Type, managed.Quote(ev.Error.Message)
			}
			if kind == "overloaded_error" || kind == "rate_limit_error" {
				back := b.gate.Throttled()
				return status.Errorf(codes.ResourceExhausted, "pool %s: %s after %d tokens, backing off %s: %s", b.cfg.pool, kind, sent, back, msg)
			}
			return status.Errorf(codes.Unavailable, "pool %s: %s in stream after %d tokens: %s", b.cfg.pool, kind, sent, msg)
		}
		if stopped {
			break
		}
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if err := sc.Err(); err != nil && !stopped {
		return b.transportError(ctx, c, err, sent)
	}
	if !stopped {
		if c.timedOut.Load() {
			return status.Errorf(codes.Unavailable, "pool %s: stream silent for %s after %d tokens", b.cfg.pool, b.cfg.idleMax, sent)
		}
		return status.Errorf(codes.Unavailable, "pool %s: stream ended before message_stop after %d tokens", b.cfg.pool, sent)
	}
	b.gate.Succeeded()
	if finish == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		finish = pb.FinishReason_FINISH_REASON_STOP
	}
	final := &pb.GenerateChunk{FinishReason: finish}
	if in > 0 || out > 0 {
		final.Tokens = max(0, out-sent)
		final.Usage = &pb.Usage{InputTokens: max(in, 0), OutputTokens: max(out, sent)}
	} else {
		final.Usage = &pb.Usage{OutputTokens: sent}
	}
	return send(final)
}

// scrub keeps a transport error's network cause without the URL.
func scrub(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
