package openaihttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/openaihttp"
)

func (fd *frontDoor) sdk(opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(fd.url + "/v1/"), option.WithAPIKey("unused"), option.WithHTTPClient(fd.client), option.WithMaxRetries(0),
	}, opts...)...)
}

// route is the "switchyard" extension field of a body or a finishing chunk.
type route struct {
	Pool        string   `json:"pool"`
	Region      string   `json:"region"`
	Cloud       string   `json:"cloud"`
	Accelerator string   `json:"accelerator"`
	Attempts    int      `json:"attempts"`
	PoolsTried  []string `json:"pools_tried"`
	RequestID   string   `json:"request_id"`
}

func routeOf(t *testing.T, raw string) route {
	t.Helper()
	var v struct {
		Switchyard *route `json:"switchyard"`
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil || v.Switchyard == nil {
		t.Fatalf("no switchyard route in %s (%v)", raw, err)
	}
	return *v.Switchyard
}

func TestOpenAIGoChatCompletion(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	c := fd.sdk()
	var resp *http.Response
	cc, err := c.Chat.Completions.New(ctxT(t, 20*time.Second), openai.ChatCompletionNewParams{
		Model: "llama-3.1-8b",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("answer briefly"),
			openai.UserMessage("where is my call served?"),
		},
		MaxTokens:   openai.Int(12),
		Temperature: openai.Float(0.2),
		TopP:        openai.Float(0.9),
		Seed:        openai.Int(7),
		User:        openai.String("user-42"),
		Stop:        openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n"}},
	}, option.WithHeader("X-Switchyard-Caller-Region", "us-east-1"), option.WithHeader("X-Request-Id", "sdk-chat-1"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Choices) != 1 || cc.Choices[0].Message.Content == "" || cc.Choices[0].Message.Role != "assistant" {
		t.Fatalf("choices %+v", cc.Choices)
	}
	if cc.Object != "chat.completion" || cc.ID != "chatcmpl-sdk-chat-1" || cc.Model != "llama-3.1-8b" || cc.Created == 0 {
		t.Fatalf("object %q id %q model %q created %d", cc.Object, cc.ID, cc.Model, cc.Created)
	}
	if cc.Choices[0].FinishReason != "length" {
		t.Fatalf("finish reason %q, want length", cc.Choices[0].FinishReason)
	}
	u := cc.Usage
	if u.CompletionTokens != 12 || u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Fatalf("usage %+v does not add up (want 12 completion tokens)", u)
	}
	h := resp.Header
	if h.Get("X-Switchyard-Pool") == "" || h.Get("X-Switchyard-Cloud") == "" || h.Get("X-Switchyard-Accelerator") == "" || h.Get("X-Switchyard-Attempts") != "1" {
		t.Fatalf("route headers missing: %v", h)
	}
	if r := h.Get("X-Switchyard-Region"); r != "us-east-1" {
		t.Fatalf("served in %q, want the caller's region us-east-1", r)
	}
	if h.Get("X-Request-Id") != "sdk-chat-1" {
		t.Fatalf("x-request-id %q", h.Get("X-Request-Id"))
	}
	if r := routeOf(t, cc.RawJSON()); r.Pool != h.Get("X-Switchyard-Pool") || r.RequestID != "sdk-chat-1" {
		t.Fatalf("body route %+v vs header pool %q", r, h.Get("X-Switchyard-Pool"))
	}
}

func TestOpenAIGoChatStreamEUResidencyStaysInEU(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	c := fd.sdk()
	for i := range 6 {
		var resp *http.Response
		s := c.Chat.Completions.NewStreaming(ctxT(t, 20*time.Second), openai.ChatCompletionNewParams{
			Model:         "llama-3.3-70b",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("hello %d", i))},
			MaxTokens:     openai.Int(20),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, option.WithHeader("X-Switchyard-Residency", "eu"), option.WithHeader("X-Switchyard-Caller-Region", "us-east-1"), option.WithResponseInto(&resp))
		var acc openai.ChatCompletionAccumulator
		var text strings.Builder
		var fin route
		var finish string
		chunks, usageChunks := 0, 0
		for s.Next() {
			ch := s.Current()
			acc.AddChunk(ch)
			chunks++
			if ch.Object != "chat.completion.chunk" || !strings.HasPrefix(ch.ID, "chatcmpl-") {
				t.Fatalf("chunk object %q id %q", ch.Object, ch.ID)
			}
			if len(ch.Choices) == 0 {
				usageChunks++
				if ch.Usage.CompletionTokens != 20 || ch.Usage.TotalTokens != ch.Usage.PromptTokens+20 || ch.Usage.PromptTokens <= 0 {
					t.Fatalf("usage chunk %+v", ch.Usage)
				}
				continue
			}
			text.WriteString(ch.Choices[0].Delta.Content)
			if ch.Choices[0].FinishReason != "" {
				finish = ch.Choices[0].FinishReason
				fin = routeOf(t, ch.RawJSON())
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if usageChunks != 1 || finish != "length" || chunks < 4 {
			t.Fatalf("usage chunks %d, finish %q, chunks %d", usageChunks, finish, chunks)
		}
		if text.String() == "" || acc.Choices[0].Message.Content != text.String() {
			t.Fatalf("text %q, accumulated %q", text.String(), acc.Choices[0].Message.Content)
		}
		if acc.Usage.CompletionTokens != 20 {
			t.Fatalf("accumulated usage %+v", acc.Usage)
		}
		if !euRegions[fin.Region] {
			t.Fatalf("call %d with residency eu served in %s (%s)", i, fin.Region, fin.Pool)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("stream headers %v", resp.Header)
		}
		// No failover here: the route headers (the pool of the first token)
		// are the final route.
		if h := resp.Header; h.Get("X-Switchyard-Pool") != fin.Pool || h.Get("X-Switchyard-Region") != fin.Region || h.Get("X-Switchyard-Attempts") != "1" {
			t.Fatalf("stream route headers %v, final route %+v", h, fin)
		}
	}
}

func TestOpenAIGoTextCompletionsStreamedAndNot(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	c := fd.sdk()
	ctx := ctxT(t, 20*time.Second)
	var resp *http.Response
	comp, err := c.Completions.New(ctx, openai.CompletionNewParams{
		Model:     "llama-3.1-8b",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
		MaxTokens: openai.Int(9),
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if comp.Object != "text_completion" || len(comp.Choices) != 1 || comp.Choices[0].Text == "" || comp.Choices[0].FinishReason != "length" {
		t.Fatalf("completion %s", comp.RawJSON())
	}
	if comp.Usage.CompletionTokens != 9 || comp.Usage.TotalTokens != comp.Usage.PromptTokens+9 {
		t.Fatalf("usage %+v", comp.Usage)
	}
	if resp.Header.Get("X-Switchyard-Pool") == "" {
		t.Fatalf("no route headers: %v", resp.Header)
	}

	s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:         "llama-3.1-8b",
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
		MaxTokens:     openai.Int(9),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var text strings.Builder
	var got int64
	for s.Next() {
		ch := s.Current()
		if ch.Object != "text_completion" {
			t.Fatalf("chunk %s", ch.RawJSON())
		}
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Text)
		} else {
			got = ch.Usage.CompletionTokens
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() == "" || got != 9 {
		t.Fatalf("streamed %q, usage %d completion tokens", text.String(), got)
	}
}

func TestCurlStreamAndUnaryWithRouteHeadersAndTrailers(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	body := `{"model":"llama-3.1-8b","stream":true,"stream_options":{"include_usage":true},"max_tokens":8,
		"messages":[{"role":"user","content":"hello"}],"tools":[]}`
	out := curl(t, "-N", "-i", "--raw", fd.url+"/v1/chat/completions",
		"-H", "Content-Type: application/json", "-H", "Authorization: Bearer anything",
		"-H", "x-switchyard-residency: eu", "-d", body)
	for _, want := range []string{"HTTP/1.1 200", "text/event-stream", `"object":"chat.completion.chunk"`, `"delta":{"role":"assistant","content":""}`,
		`"finish_reason":"length"`, `"choices":[],"usage":{"prompt_tokens":`, `"completion_tokens":8`, "data: [DONE]", "X-Switchyard-Pool:", "X-Switchyard-Region:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("curl stream output lacks %q:\n%s", want, out)
		}
	}
	// The route comes as headers before the first event (the pool sending
	// the first token) and again as trailers after the last (the final route).
	head, tail, _ := strings.Cut(out, "data: ")
	if !strings.Contains(head, "X-Switchyard-Pool: ") || !strings.Contains(head, "X-Switchyard-Attempts: 1") {
		t.Fatalf("no route headers before the events:\n%s", head)
	}
	if _, trailers, _ := strings.Cut(tail, "data: [DONE]"); !strings.Contains(trailers, "X-Switchyard-Pool: ") || !strings.Contains(trailers, "X-Switchyard-Region: ") {
		t.Fatalf("route should arrive as trailers after the events:\n%s", out)
	}
	// Every data line is JSON or [DONE]; the usage chunk is the last JSON one.
	var lastJSON string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if d, ok := strings.CutPrefix(line, "data: "); ok && d != "[DONE]" {
			if !json.Valid([]byte(d)) {
				t.Fatalf("event is not JSON: %q", d)
			}
			lastJSON = d
		}
	}
	if !strings.Contains(lastJSON, `"choices":[]`) {
		t.Fatalf("last chunk %s is not the usage chunk", lastJSON)
	}

	// Unary, over h2c with prior knowledge.
	out = curl(t, "-i", "--http2-prior-knowledge", fd.url+"/v1/chat/completions", "-H", "Content-Type: application/json",
		"-H", "x-switchyard-caller-region: westeurope", "-d", `{"model":"llama-3.1-8b","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	for _, want := range []string{"HTTP/2 200", "x-switchyard-pool: azure-weu-h100", "x-switchyard-region: westeurope", "x-switchyard-attempts: 1", `"object":"chat.completion"`, `"total_tokens":`} {
		if !strings.Contains(out, want) {
			t.Fatalf("curl h2c output lacks %q:\n%s", want, out)
		}
	}

	out = curl(t, fd.url+"/v1/models")
	var ml struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object string
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &ml); err != nil || ml.Object != "list" || len(ml.Data) != 3 || ml.Data[0].Object != "model" {
		t.Fatalf("models %s (%v)", out, err)
	}
}

func TestErrorsHaveOpenAIShapeAndStatus(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{})
	chat := func(extra string) string {
		return `{"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}]` + extra + `}`
	}
	cases := []struct {
		name, path, body string
		header           [2]string
		status           int
		typ, code, param string
	}{
		{"n 2", "/v1/chat/completions", chat(`,"n":2`), [2]string{}, 400, "invalid_request_error", "invalid_value", "n"},
		{"temperature", "/v1/chat/completions", chat(`,"temperature":3`), [2]string{}, 400, "invalid_request_error", "invalid_value", "temperature"},
		{"max_tokens over the model's", "/v1/chat/completions", chat(`,"max_tokens":999999`), [2]string{}, 400, "invalid_request_error", "invalid_value", "max_tokens"},
		{"max_completion_tokens", "/v1/chat/completions", chat(`,"max_completion_tokens":0`), [2]string{}, 400, "invalid_request_error", "invalid_value", "max_completion_tokens"},
		{"stop count", "/v1/chat/completions", chat(`,"stop":["a","b","c","d","e"]`), [2]string{}, 400, "invalid_request_error", "invalid_value", "stop"},
		{"bad role", "/v1/chat/completions", `{"model":"llama-3.1-8b","messages":[{"role":"robot","content":"hi"}]}`, [2]string{}, 400, "invalid_request_error", "invalid_value", "messages[0].role"},
		{"type mismatch", "/v1/chat/completions", chat(`,"max_tokens":"ten"`), [2]string{}, 400, "invalid_request_error", "invalid_value", "max_tokens"},
		{"bad residency", "/v1/chat/completions", chat(``), [2]string{"X-Switchyard-Residency", "mars"}, 400, "invalid_request_error", "invalid_value", "x-switchyard-residency"},
		{"bad priority", "/v1/chat/completions", chat(``), [2]string{"X-Switchyard-Priority", "urgent"}, 400, "invalid_request_error", "invalid_value", "x-switchyard-priority"},
		{"not json", "/v1/chat/completions", `{"model":`, [2]string{}, 400, "invalid_request_error", "invalid_value", "body"},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, [2]string{}, 404, "invalid_request_error", "model_not_found", "model"},
		{"prompt array", "/v1/completions", `{"model":"llama-3.1-8b","prompt":["a","b"]}`, [2]string{}, 400, "invalid_request_error", "invalid_value", "prompt"},
		{"completion prompt too long", "/v1/completions", `{"model":"llama-3.1-8b","prompt":"` + strings.Repeat("x", 40000) + `"}`, [2]string{}, 400, "invalid_request_error", "invalid_value", "prompt"},
		{"too large", "/v1/completions", `{"model":"llama-3.1-8b","prompt":"` + strings.Repeat("x", int(openaihttp.DefaultMaxBodyBytes(fd.rt.RecvLimit(0)))) + `"}`, [2]string{}, 413, "invalid_request_error", "request_too_large", ""},
		{"unknown path", "/v1/images/generations", `{}`, [2]string{}, 404, "invalid_request_error", "unknown_url", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, fd.url+c.path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			if c.header[0] != "" {
				req.Header.Set(c.header[0], c.header[1])
			}
			client := fd.client
			if c.status == http.StatusRequestEntityTooLarge {
				// The front door answers 413 from Content-Length without
				// reading the body and closes the connection: a client still
				// writing the body may see the reset before the answer. A
				// client sending this much waits for the go-ahead.
				req.Header.Set("Expect", "100-continue")
				tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
				defer tr.CloseIdleConnections()
				client = &http.Client{Transport: tr}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var eb struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			b, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(b, &eb); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			param := ""
			if eb.Error.Param != nil {
				param = *eb.Error.Param
			}
			if resp.StatusCode != c.status || eb.Error.Type != c.typ || eb.Error.Code == nil || *eb.Error.Code != c.code || param != c.param || eb.Error.Message == "" {
				t.Fatalf("status %d body %s; want %d type %s code %s param %q", resp.StatusCode, b, c.status, c.typ, c.code, c.param)
			}
			if len(eb.Error.Message) > 600 {
				t.Fatalf("error message of %d bytes echoes too much input", len(eb.Error.Message))
			}
		})
	}

	// The SDK sees the same as an *openai.Error.
	sdk := fd.sdk()
	_, err := sdk.Chat.Completions.New(ctxT(t, 10*time.Second), openai.ChatCompletionNewParams{
		Model: "llama-3.1-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, N: openai.Int(3),
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "n" || apiErr.Type != "invalid_request_error" {
		t.Fatalf("sdk error %v", err)
	}
}

func TestTenantKeysFromAuthorizationBearer(t *testing.T) {
	const key = "sk-tenant-acme"
	fd := startFrontDoor(t, doorOpts{extraYAML: "\ntenants:\n  - name: acme\n    api_key_sha256: [" + router.HashToken(key) + "]\n"})
	for _, k := range []string{"", "sk-wrong"} {
		sdk := fd.sdk(option.WithAPIKey(k))
		_, err := sdk.Chat.Completions.New(ctxT(t, 10*time.Second), openai.ChatCompletionNewParams{
			Model: "llama-3.1-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(3),
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" {
			t.Fatalf("key %q: %v", k, err)
		}
	}
	out := curl(t, "-s", "-o", "/dev/null", "-w", "%{http_code}", fd.url+"/v1/models")
	if out != "401" {
		t.Fatalf("models without a key: %s", out)
	}
	// X-Api-Key works as Authorization: Bearer does (the router reads both).
	for k, want := range map[string]string{key: "200", "sk-wrong": "401"} {
		if out := curl(t, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Api-Key: "+k, fd.url+"/v1/models/llama-3.1-8b"); out != want {
			t.Fatalf("model with X-Api-Key %s: %s, want %s", k, out, want)
		}
	}
	sdk := fd.sdk(option.WithAPIKey(key))
	cc, err := sdk.Chat.Completions.New(ctxT(t, 10*time.Second), openai.ChatCompletionNewParams{
		Model: "llama-3.1-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(3),
	})
	if err != nil || cc.Usage.CompletionTokens != 3 {
		t.Fatalf("tenant call: %v", err)
	}
}

// TestFullFleetGives429WithRetryAfter fills every pool (an operator override
// of one slot each, then one long stream per pool) and checks that the next
// call, streamed or not, gets 429 with Retry-After once the wait queue gives up.
func TestFullFleetGives429WithRetryAfter(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 1})
	pools := fd.inFlight(t)
	for name := range pools {
		if _, err := fd.admin.SetCapacityOverride(fd.adminCtx(t), &pb.SetCapacityOverrideRequest{Pool: name, Limit: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c := fd.sdk()
	for i := range len(pools) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("long %d", i))}, MaxTokens: openai.Int(2000),
			})
			for s.Next() {
			}
			_ = s.Close()
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	fd.waitInFlight(t, int32(len(pools)), 10*time.Second)

	var resp *http.Response
	start := time.Now()
	_, err := c.Chat.Completions.New(ctxT(t, 20*time.Second), openai.ChatCompletionNewParams{
		Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one more")}, MaxTokens: openai.Int(5),
	}, option.WithResponseInto(&resp))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Type != "rate_limit_error" || apiErr.Code != "rate_limit_exceeded" {
		t.Fatalf("want 429 rate_limit_error, got %v", err)
	}
	if ra, err := strconv.Atoi(apiErr.Response.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", apiErr.Response.Header.Get("Retry-After"))
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("429 after %s: the call should have waited in the queue first", waited)
	}

	// A stream refused before its first token gets the status too (curl -N).
	out := curl(t, "-N", "-i", fd.url+"/v1/chat/completions", "-H", "Content-Type: application/json",
		"-d", `{"model":"llama-3.3-70b","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"and another"}]}`)
	if !strings.Contains(out, "HTTP/1.1 429") || !strings.Contains(out, "Retry-After: ") || !strings.Contains(out, `"type":"rate_limit_error"`) {
		t.Fatalf("stream on a full fleet:\n%s", out)
	}
	cancel()
	wg.Wait()
	fd.waitInFlight(t, 0, 10*time.Second)
}

// TestClientDisconnectFreesTheSlot: a client that goes away mid-stream or
// mid-call cancels the upstream call and its slot is released.
func TestClientDisconnectFreesTheSlot(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 1})
	c := fd.sdk()

	// Streaming: read the first chunk, then hang up.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a very long answer")}, MaxTokens: openai.Int(2000),
	})
	if !s.Next() {
		t.Fatalf("no first chunk: %v", s.Err())
	}
	if n := total(fd.inFlight(t)); n != 1 {
		t.Fatalf("in flight %d while streaming, want 1", n)
	}
	cancel()
	_ = s.Close()
	fd.waitInFlight(t, 0, 5*time.Second)

	// Unary: the client gives up while the completion is generated.
	uctx, ucancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Chat.Completions.New(uctx, openai.ChatCompletionNewParams{
			Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("another long one")}, MaxTokens: openai.Int(2000),
		})
		done <- err
	}()
	fd.waitInFlight(t, 1, 5*time.Second)
	ucancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("unary after cancel: %v", err)
	}
	fd.waitInFlight(t, 0, 5*time.Second)
}

// TestPoolKilledMidStreamIsContinued: the pool serving a stream goes down
// after tokens were sent; the router continues the completion on another pool
// and the client sees one whole, well-formed stream.
func TestPoolKilledMidStreamIsContinued(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 2})
	c := fd.sdk()
	var httpResp *http.Response
	const maxTokens = 60
	s := c.Chat.Completions.NewStreaming(ctxT(t, 30*time.Second), openai.ChatCompletionNewParams{
		Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a story")}, MaxTokens: openai.Int(maxTokens),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithHeader("X-Switchyard-Caller-Region", "us-east-1"), option.WithResponseInto(&httpResp))
	var text strings.Builder
	var fin route
	var completion int64
	chunks, killed := 0, ""
	for s.Next() {
		ch := s.Current()
		chunks++
		if len(ch.Choices) == 0 {
			completion = ch.Usage.CompletionTokens
			continue
		}
		text.WriteString(ch.Choices[0].Delta.Content)
		if ch.Choices[0].FinishReason != "" {
			fin = routeOf(t, ch.RawJSON())
		}
		if chunks == 5 {
			for name, n := range fd.inFlight(t) {
				if n == 1 {
					killed = name
				}
			}
			if killed == "" {
				t.Fatal("no pool has the stream in flight")
			}
			if _, err := fd.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: killed, Outage: true}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("the client noticed: %v", err)
	}
	if completion != maxTokens {
		t.Fatalf("completion tokens %d, want %d", completion, maxTokens)
	}
	if fin.Attempts != 2 || len(fin.PoolsTried) != 2 || fin.PoolsTried[0] != killed || fin.Pool == killed {
		t.Fatalf("route %+v, killed %s", fin, killed)
	}
	// The headers named the pool that sent the first token; the finishing
	// chunk names the one that finished. (The SDK stops reading at [DONE],
	// so the trailers are not read here; the curl and h2c tests read them.)
	if h := httpResp.Header; h.Get("X-Switchyard-Pool") != killed || h.Get("X-Switchyard-Attempts") != "1" {
		t.Fatalf("route headers %v, want pool %s attempt 1", h, killed)
	}
	if len(strings.Fields(text.String())) < maxTokens/2 {
		t.Fatalf("text %q too short for %d tokens", text.String(), maxTokens)
	}
	fd.waitInFlight(t, 0, 5*time.Second)
}

// TestStreamThatCannotBeContinuedEndsWithAnErrorEvent: every EU pool goes
// down mid-stream of an EU-only call; the stream ends with an SSE error
// event, never silently.
func TestStreamThatCannotBeContinuedEndsWithAnErrorEvent(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 2})
	req, _ := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodPost, fd.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama-3.3-70b","stream":true,"max_tokens":80,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Switchyard-Residency", "eu")
	resp, err := fd.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	var events []string
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events = append(events, d)
		if len(events) == 3 {
			for _, p := range []string{"aws-euw1-trn3", "gcp-euw4-tpu-v5e", "azure-weu-h100"} {
				if _, err := fd.host.InjectFault(context.Background(), &pb.InjectFaultRequest{Fault: &pb.Fault{Pool: p, Outage: true}}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	last := events[len(events)-1]
	var eb struct {
		Error struct {
			Message, Type string
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(last), &eb); err != nil || eb.Error.Type != "server_error" || eb.Error.Message == "" {
		t.Fatalf("last event %q is not an error event (events: %d)", last, len(events))
	}
	for _, e := range events {
		if e == "[DONE]" {
			t.Fatal("a failed stream must not end with [DONE]")
		}
	}
	fd.waitInFlight(t, 0, 5*time.Second)
}

// TestNoEligiblePoolIs503AndDeadlineIs504: every EU pool drained for an
// EU-only call is 503; a call whose X-Switchyard-Timeout passes is 504.
func TestNoEligiblePoolIs503AndDeadlineIs504(t *testing.T) {
	fd := startFrontDoor(t, doorOpts{timeScale: 1})
	c := fd.sdk()
	params := openai.ChatCompletionNewParams{
		Model: "llama-3.3-70b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long answer")}, MaxTokens: openai.Int(500),
	}

	_, err := c.Chat.Completions.New(ctxT(t, 10*time.Second), params, option.WithHeader("X-Switchyard-Timeout", "150ms"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 504 || apiErr.Type != "timeout_error" {
		t.Fatalf("want 504, got %v", err)
	}
	fd.waitInFlight(t, 0, 5*time.Second)

	for _, p := range []string{"aws-euw1-trn3", "gcp-euw4-tpu-v5e", "azure-weu-h100"} {
		if _, err := fd.admin.Drain(fd.adminCtx(t), &pb.DrainRequest{Pool: p, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.Chat.Completions.New(ctxT(t, 10*time.Second), params, option.WithHeader("X-Switchyard-Residency", "eu"))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Type != "server_error" || apiErr.Code != "service_unavailable" {
		t.Fatalf("want 503, got %v", err)
	}
	// The same call without the residency limit is served (in the US).
	params.MaxTokens = openai.Int(3)
	var resp *http.Response
	if _, err := c.Chat.Completions.New(ctxT(t, 10*time.Second), params, option.WithResponseInto(&resp)); err != nil || euRegions[resp.Header.Get("X-Switchyard-Region")] {
		t.Fatalf("unrestricted call: %v, region %q", err, resp.Header.Get("X-Switchyard-Region"))
	}
}

// TestTenantBudgetSpentIs429WithRetryAfter: a tenant over its requests per
// minute is refused at once with 429 and Retry-After.
func TestTenantBudgetSpentIs429WithRetryAfter(t *testing.T) {
	const key = "sk-tenant-small"
	fd := startFrontDoor(t, doorOpts{extraYAML: "\ntenants:\n  - name: small\n    api_key_sha256: [" + router.HashToken(key) + "]\n    requests_per_minute: 2\n"})
	c := fd.sdk(option.WithAPIKey(key))
	params := openai.ChatCompletionNewParams{Model: "llama-3.1-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(2)}
	for range 2 {
		if _, err := c.Chat.Completions.New(ctxT(t, 10*time.Second), params); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err := c.Chat.Completions.New(ctxT(t, 10*time.Second), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Response.Header.Get("Retry-After") == "" {
		t.Fatalf("third call in a minute: %v", err)
	}
	if ra, err := strconv.Atoi(apiErr.Response.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", apiErr.Response.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a spent budget should be refused at once, took %s", d)
	}
}
