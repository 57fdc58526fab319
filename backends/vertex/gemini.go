package vertex

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/internal/managed"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// GeminiRequest is the body of Gemini's generateContent on Vertex AI.
type GeminiRequest struct {
	Contents          []GeminiContent   `json:"contents"`
	SystemInstruction *GeminiContent    `json:"systemInstruction,omitempty"`
	GenerationConfig  *GenerationConfig `json:"generationConfig,omitempty"`
}

// GeminiContent is one turn (role user or model) or the system instruction (no role).
type GeminiContent struct {
	Role  string       `json:"role,omitempty"`
	Parts []GeminiPart `json:"parts"`
}

// GeminiPart is a text part.
type GeminiPart struct {
	Text string `json:"text"`
}

// GenerationConfig holds max_tokens and the sampling parameters; Gemini
// takes every one switchyard has.
type GenerationConfig struct {
	MaxOutputTokens  int32    `json:"maxOutputTokens"`
	Temperature      *float32 `json:"temperature,omitempty"`
	TopP             *float32 `json:"topP,omitempty"`
	TopK             *int32   `json:"topK,omitempty"`
	StopSequences    []string `json:"stopSequences,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	PresencePenalty  *float32 `json:"presencePenalty,omitempty"`
	FrequencyPenalty *float32 `json:"frequencyPenalty,omitempty"`
}

// buildGemini maps a request to generateContent: system messages to
// systemInstruction, user and assistant turns to user and model contents
// (consecutive turns of one role joined). Gemini does not continue a
// trailing model turn, so a continuation is refused as a shortage: the
// router moves the call to a pool that can and never holds it against this one.
func (c *poolConfig) buildGemini(req *pb.GenerateRequest) (*built, error) {
	if req.GetContinuation().GetGeneratedText() != "" {
		return nil, status.Errorf(codes.ResourceExhausted, "pool %s: gemini models cannot continue a broken stream; another pool must", c.pool)
	}
	out := &built{model: c.model(req.GetModel()), field: "prompt"}
	g := GeminiRequest{GenerationConfig: &GenerationConfig{MaxOutputTokens: max(req.GetMaxTokens(), 1)}}
	add := func(role, text string) {
		if n := len(g.Contents); n > 0 && g.Contents[n-1].Role == role {
			g.Contents[n-1].Parts[0].Text += "\n\n" + text
			return
		}
		g.Contents = append(g.Contents, GeminiContent{Role: role, Parts: []GeminiPart{{Text: text}}})
	}
	var system []string
	if msgs := req.GetMessages(); len(msgs) > 0 {
		out.field = "messages"
		for i, m := range msgs {
			switch m.GetRole() {
			case "system":
				if m.GetContent() != "" {
					system = append(system, m.GetContent())
				}
			case "user", "assistant":
				if m.GetContent() == "" {
					return nil, status.Errorf(codes.InvalidArgument, "messages[%d].content: empty (Gemini refuses empty parts)", i)
				}
				role := "user"
				if m.GetRole() == "assistant" {
					role = "model"
				}
				add(role, m.GetContent())
			default:
				return nil, status.Errorf(codes.InvalidArgument, "messages[%d].role: %q is not system, user or assistant", i, managed.Quote(m.GetRole()))
			}
		}
		if len(g.Contents) == 0 || g.Contents[0].Role != "user" {
			return nil, status.Errorf(codes.InvalidArgument, "messages: Gemini needs the first non-system turn to be the user's")
		}
	} else {
		if req.GetPrompt() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "prompt: empty")
		}
		add("user", req.GetPrompt())
	}
	if len(system) > 0 {
		g.SystemInstruction = &GeminiContent{Parts: []GeminiPart{{Text: strings.Join(system, "\n\n")}}}
	}
	if sp := req.GetSampling(); sp != nil {
		gc := g.GenerationConfig
		gc.Temperature, gc.TopP, gc.TopK, gc.StopSequences = sp.Temperature, sp.TopP, sp.TopK, sp.GetStop()
		gc.Seed, gc.PresencePenalty, gc.FrequencyPenalty = sp.Seed, sp.PresencePenalty, sp.FrequencyPenalty
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&g); err != nil {
		return nil, status.Errorf(codes.Internal, "pool %s: encode request: %v", c.pool, err)
	}
	out.body = buf.Bytes()
	return out, nil
}

// geminiResponse is the part of a GenerateContentResponse the adapter reads
// (a unary answer, or one server-sent event of a stream).
type geminiResponse struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text    string `json:"text"`
				Thought bool   `json:"thought"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata *struct {
		PromptTokenCount     int32 `json:"promptTokenCount"`
		CandidatesTokenCount int32 `json:"candidatesTokenCount"`
	} `json:"usageMetadata"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
}

func (r *geminiResponse) text() string {
	var b strings.Builder
	for _, c := range r.Candidates {
		for _, p := range c.Content.Parts {
			if !p.Thought {
				b.WriteString(p.Text)
			}
		}
		break // one candidate asked for
	}
	return b.String()
}

func (r *geminiResponse) finish() pb.FinishReason {
	if len(r.Candidates) == 0 {
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" {
			return pb.FinishReason_FINISH_REASON_CONTENT_FILTER
		}
		return pb.FinishReason_FINISH_REASON_UNSPECIFIED
	}
	switch r.Candidates[0].FinishReason {
	case "":
		return pb.FinishReason_FINISH_REASON_UNSPECIFIED
	case "MAX_TOKENS":
		return pb.FinishReason_FINISH_REASON_LENGTH
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY":
		return pb.FinishReason_FINISH_REASON_CONTENT_FILTER
	default: // STOP (a stop sequence too: Gemini does not tell them apart), OTHER, ...
		return pb.FinishReason_FINISH_REASON_STOP
	}
}

func (b *Backend) generateGemini(ctx context.Context, req *pb.GenerateRequest) (*pb.GenerateResponse, error) {
	c, err := b.start(ctx, req, false)
	if err != nil {
		return nil, err
	}
	defer c.close()
	body, err := io.ReadAll(io.LimitReader(c.resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, b.transportError(ctx, c, err, 0)
	}
	var v geminiResponse
	if len(body) > maxResponseBody || json.Unmarshal(body, &v) != nil {
		return nil, status.Errorf(codes.Unavailable, "pool %s: response is not a generateContent answer: %s", b.cfg.pool, managed.Quote(string(body)))
	}
	b.gate.Succeeded()
	text, finish := v.text(), v.finish()
	if finish == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		finish = pb.FinishReason_FINISH_REASON_STOP
	}
	resp := &pb.GenerateResponse{Text: text, FinishReason: finish}
	if u := v.UsageMetadata; u != nil && (u.PromptTokenCount > 0 || u.CandidatesTokenCount > 0) {
		resp.Usage = &pb.Usage{InputTokens: max(u.PromptTokenCount, 0), OutputTokens: max(u.CandidatesTokenCount, 0)}
	} else {
		resp.Usage = &pb.Usage{OutputTokens: int32(backends.EstimateTokens(text))}
	}
	return resp, nil
}

// streamGemini reads streamGenerateContent's server-sent events: each a
// GenerateContentResponse with the next text; the last carries the finish
// reason and the usage. A stream that ends without a finish reason is
// UNAVAILABLE.
func (b *Backend) streamGemini(ctx context.Context, req *pb.GenerateRequest, send func(*pb.GenerateChunk) error) error {
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
		sent    int32
		in, out int32
		finish  pb.FinishReason
	)
	for sc.Scan() {
		idle.Reset(b.cfg.idleMax)
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:"))
		if !ok {
			continue
		}
		var ev geminiResponse
		if err := json.Unmarshal(bytes.TrimSpace(data), &ev); err != nil {
			return status.Errorf(codes.Unavailable, "pool %s: bad stream event: %s", b.cfg.pool, managed.Quote(string(data)))
		}
		if t := ev.text(); t != "" {
			idle.Stop()
			chunk := &pb.GenerateChunk{Text: t, Tokens: backends.DeltaTokens(len(t))}
			if err := send(chunk); err != nil {
				return err
			}
			idle.Reset(b.cfg.idleMax)
			sent += chunk.Tokens
		}
		if u := ev.UsageMetadata; u != nil {
			in, out = u.PromptTokenCount, u.CandidatesTokenCount
		}
		if f := ev.finish(); f != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
			finish = f
		}
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if err := sc.Err(); err != nil {
		return b.transportError(ctx, c, err, sent)
	}
	if finish == pb.FinishReason_FINISH_REASON_UNSPECIFIED {
		if c.timedOut.Load() {
			return status.Errorf(codes.Unavailable, "pool %s: stream silent for %s after %d tokens", b.cfg.pool, b.cfg.idleMax, sent)
		}
		return status.Errorf(codes.Unavailable, "pool %s: stream ended without a finish reason after %d tokens", b.cfg.pool, sent)
	}
	b.gate.Succeeded()
	final := &pb.GenerateChunk{FinishReason: finish}
	if in > 0 || out > 0 {
		final.Tokens = max(0, out-sent)
		final.Usage = &pb.Usage{InputTokens: max(in, 0), OutputTokens: max(out, sent)}
	} else {
		final.Usage = &pb.Usage{OutputTokens: sent}
	}
	return send(final)
}
