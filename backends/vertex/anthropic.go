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
	AnthropicVersion string    `json:"anthropic_version"`
	Messages         []Message `json:"messages"`
	System           string    `json:"system,omitempty"`
	MaxTokens        int32     `json:"max_tokens"`
	Stream           bool      `json:"stream,omitempty"`
	Temperature      *float32  `json:"temperature,omitempty"`
	TopP             *float32  `json:"top_p,omitempty"`
	TopK             *int32    `json:"top_k,omitempty"`
	StopSequences    []string  `json:"stop_sequences,omitempty"`
}

// Message is one turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type built struct {
	body    []byte
	model   string
	field   string
	trimmed bool
}

// build maps a request to the Messages body: system messages joined into
// system, consecutive turns of one role joined (the API wants them to
// alternate from the user's), a continuation as a trailing assistant turn
// without trailing whitespace, max_tokens less what was generated.
func (c *poolConfig) build(req *pb.GenerateRequest, stream bool) (*built, error) {
	cont := req.GetContinuation()
	maxTokens := req.GetMaxTokens() - max(cont.GetGeneratedTokens(), 0)
	if maxTokens < 1 {
		maxTokens = 1
	}
	out := &built{model: c.model(req.GetModel()), field: "prompt"}
	m := MessagesRequest{AnthropicVersion: c.version, MaxTokens: maxTokens, Stream: stream}
	turn := func(role, text string) {
		if n := len(m.Messages); n > 0 && m.Messages[n-1].Role == role {
			m.Messages[n-1].Content += "\n\n" + text
			return
		}
		m.Messages = append(m.Messages, Message{Role: role, Content: text})
	}
	var system []string
	if msgs := req.GetMessages(); len(msgs) > 0 {
		out.field = "messages"
		for i, msg := range msgs {
			switch msg.GetRole() {
			case "system":
				if msg.GetContent() != "" {
					system = append(system, msg.GetContent())
				}
			case "user", "assistant":
				if msg.GetContent() == "" {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (the Messages API refuses empty turns)", i)
				}
				turn(msg.GetRole(), msg.GetContent())
			default:
				return nil, status.Errorf(codes.InvalidArgument, "messages[%d].role: %q is not system, user or assistant", i, managed.Quote(msg.GetRole()))
			}
		}
		if len(m.Messages) == 0 || m.Messages[0].Role != "user" {
			return nil, status.Errorf(codes.InvalidArgument, "messages: the Messages API needs the first non-system turn to be the user's")
		}
	} else {
		if req.GetPrompt() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "prompt: empty")
		}
		turn("user", req.GetPrompt())
	}
	if g := cont.GetGeneratedText(); g != "" {
		turn("assistant", g)
	}
	if last := &m.Messages[len(m.Messages)-1]; last.Role == "assistant" {
		if t := strings.TrimRightFunc(last.Content, unicode.IsSpace); t != last.Content {
			last.Content, out.trimmed = t, true
		}
		if last.Content == "" {
			m.Messages = m.Messages[:len(m.Messages)-1]
		}
	}
	m.System = strings.Join(system, "\n\n")
	if sp := req.GetSampling(); sp != nil {
		m.Temperature, m.TopP, m.TopK, m.StopSequences = sp.Temperature, sp.TopP, sp.TopK, sp.GetStop()
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
	default: // end_turn, tool_use, pause_turn
		return pb.FinishReason_FINISH_REASON_STOP
	}
}

// Load implements backends.LoadReporter.
func (b *Backend) Load() (backends.Load, bool) { return b.gate.Load() }

// Capabilities implements backends.Backend.
func (b *Backend) Capabilities() backends.Capabilities {
	return backends.Capabilities{Continuation: b.cfg.continuation}
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
	in, err := b.cfg.build(req, stream)
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

// maxResponseBody bounds a unary response; maxEvent one SSE line.
const (
	maxResponseBody = 16 << 20
	maxEvent        = 1 << 20
)

type usage struct {
	InputTokens  int32 `json:"input_tokens"`
	OutputTokens int32 `json:"output_tokens"`
}

// Generate implements backends.Backend with rawPredict.
func (b *Backend) Generate(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
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
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      *usage `json:"usage"`
	}
	if len(body) > maxResponseBody || json.Unmarshal(body, &v) != nil {
		return nil, status.Errorf(codes.Unavailable, "pool %s: response is not a Messages answer: %s", b.cfg.pool, managed.Quote(string(body)))
	}
	b.gate.Succeeded()
	var text strings.Builder
	for _, cb := range v.Content {
		if cb.Type == "text" {
			text.WriteString(cb.Text)
		}
	}
	s := text.String()
	if c.in.trimmed {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	resp := &pb.GenerateResponse{Text: s, FinishReason: stop(v.StopReason)}
	if u := v.Usage; u != nil && (u.InputTokens > 0 || u.OutputTokens > 0) {
		resp.Usage = &pb.Usage{InputTokens: max(u.InputTokens, 0), OutputTokens: max(u.OutputTokens, 0)}
	} else {
		resp.Usage = &pb.Usage{OutputTokens: int32(backends.EstimateTokens(s))}
	}
	return resp, nil
}

// streamEvent is the part of a Messages stream event the adapter reads.
type streamEvent struct {
	Type    string `json:"type"`
	Message *struct {
		Usage *usage `json:"usage"`
	} `json:"message"`
	Delta *struct {
		Type       string `json:"type"`
		Text       string `json:"text"`
		StopReason string `json:"stop_reason"`
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
	c, err := b.start(ctx, req, true)
	if err != nil {
		return err
	}
	defer c.close()
	idle := time.AfterFunc(b.cfg.idleMax, func() { c.timedOut.Store(true); c.cancel() })
	defer idle.Stop()
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEvent)
	var (
		sent          int32
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
		case "content_block_delta":
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
			idle.Stop()
			if err := send(&pb.GenerateChunk{Text: t, Tokens: 1}); err != nil {
				return err
			}
			idle.Reset(b.cfg.idleMax)
			sent++
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
