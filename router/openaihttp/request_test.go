package openaihttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity"
	"github.com/switchyard-dev/switchyard/router/dispatch"
)

func maxOut(string) int32 { return 2048 }

func TestParseChat(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		header map[string]string
		check  func(t *testing.T, p *parsed)
		param  string // wanted fieldError param; "-" for a field-less error
	}{
		{name: "minimal: defaults to the model's max output", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			if p.req.MaxTokens != 2048 || p.req.Sampling != nil || p.req.Routing != nil || p.stream || len(p.req.Messages) != 1 {
				t.Fatalf("%+v", p.req)
			}
		}},
		{name: "max_completion_tokens wins over max_tokens", body: `{"model":"m","max_tokens":5,"max_completion_tokens":7,"messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			if p.req.MaxTokens != 7 || p.maxTokensParam != "max_completion_tokens" {
				t.Fatalf("%d %s", p.req.MaxTokens, p.maxTokensParam)
			}
		}},
		{name: "sampling and stop as a string", body: `{"model":"m","temperature":0.5,"top_p":0.9,"seed":7,"stop":"END","presence_penalty":1,"frequency_penalty":-1,"top_k":40,"messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			sp := p.req.Sampling
			if sp.GetTemperature() != 0.5 || sp.GetTopP() != 0.9 || sp.GetSeed() != 7 || len(sp.Stop) != 1 || sp.Stop[0] != "END" || sp.GetPresencePenalty() != 1 || sp.GetFrequencyPenalty() != -1 || sp.GetTopK() != 40 {
				t.Fatalf("%+v", sp)
			}
		}},
		{name: "stop as an array, null fields", body: `{"model":"m","stop":["a","b"],"temperature":null,"n":null,"messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			if len(p.req.Sampling.GetStop()) != 2 || p.req.Sampling.Temperature != nil {
				t.Fatalf("%+v", p.req.Sampling)
			}
		}},
		{name: "developer role is system; text parts are joined; assistant null content", body: `{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"assistant","content":null},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`, check: func(t *testing.T, p *parsed) {
			m := p.req.Messages
			if m[0].Role != "system" || m[1].Content != "" || m[2].Content != "ab" {
				t.Fatalf("%+v", m)
			}
		}},
		{name: "stream with usage", body: `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			if !p.stream || !p.includeUsage {
				t.Fatal("stream options lost")
			}
		}},
		{name: "null and default values of fields not served are accepted", body: `{"model":"m","tools":null,"response_format":{"type":"text"},"logit_bias":{},"metadata":null,"messages":[{"role":"user","content":"hi","name":"bob"}]}`, check: func(t *testing.T, p *parsed) {
			if p.req.ResponseFormat != nil || p.req.Messages[0].Name != "bob" {
				t.Fatalf("%v", p.req)
			}
		}},
		{name: "headers become hints", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			header: map[string]string{HeaderCallerRegion: "US-East-1", HeaderResidency: "EU", HeaderPriority: "batch", HeaderPreferredCloud: "gcp", HeaderPreferredAccelerator: "tpu-v6e", HeaderRequestID: "abc", HeaderTimeout: "1500ms"},
			check: func(t *testing.T, p *parsed) {
				r := p.req.Routing
				if r.CallerRegion != "us-east-1" || r.Residency != "eu" || r.PreferredCloud != "gcp" || r.PreferredAccelerator != "tpu-v6e" || p.req.Priority != pb.Priority_PRIORITY_BATCH || p.req.RequestId != "abc" || p.timeout != 1500*time.Millisecond {
					t.Fatalf("%+v %v %v", r, p.req.Priority, p.timeout)
				}
			}},
		{name: "prefix key header is kept as sent", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			header: map[string]string{HeaderPrefixKey: " Session-42 "},
			check: func(t *testing.T, p *parsed) {
				if p.req.GetRouting().GetPrefixKey() != "Session-42" {
					t.Fatalf("routing %+v", p.req.Routing)
				}
			}},
		{name: "service_tier priority is interactive", body: `{"model":"m","service_tier":"priority","messages":[{"role":"user","content":"hi"}]}`, check: func(t *testing.T, p *parsed) {
			if p.req.Priority != pb.Priority_PRIORITY_INTERACTIVE {
				t.Fatal(p.req.Priority)
			}
		}},
		{name: "n 2", body: `{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}`, param: "n"},
		{name: "n 0", body: `{"model":"m","n":0,"messages":[{"role":"user","content":"hi"}]}`, param: "n"},
		{name: "no messages", body: `{"model":"m"}`, param: "messages"},
		{name: "function role", body: `{"model":"m","messages":[{"role":"function","content":"x"}]}`, param: "messages[0].role"},
		{name: "an unrecognized field is refused, named", body: `{"model":"m","some_future_field":1,"messages":[{"role":"user","content":"hi"}]}`, param: "some_future_field"},
		{name: "logit_bias is not served", body: `{"model":"m","logit_bias":{"1":2},"messages":[{"role":"user","content":"hi"}]}`, param: "logit_bias"},
		{name: "deprecated functions", body: `{"model":"m","functions":[{"name":"f"}],"messages":[{"role":"user","content":"hi"}]}`, param: "functions"},
		{name: "metadata", body: `{"model":"m","metadata":{"a":"b"},"messages":[{"role":"user","content":"hi"}]}`, param: "metadata"},
		{name: "non-function tool", body: `{"model":"m","tools":[{"type":"code_interpreter"}],"messages":[{"role":"user","content":"hi"}]}`, param: "tools[0].type"},
		{name: "bad tool_choice", body: `{"model":"m","tool_choice":{"type":"file_search"},"messages":[{"role":"user","content":"hi"}]}`, param: "tool_choice"},
		{name: "unknown response_format", body: `{"model":"m","response_format":{"type":"yaml"},"messages":[{"role":"user","content":"hi"}]}`, param: "response_format.type"},
		{name: "json_schema without schema", body: `{"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"x"}},"messages":[{"role":"user","content":"hi"}]}`, param: "response_format.json_schema.schema"},
		{name: "logprobs not a bool on chat", body: `{"model":"m","logprobs":3,"messages":[{"role":"user","content":"hi"}]}`, param: "logprobs"},
		{name: "top_logprobs over 20", body: `{"model":"m","logprobs":true,"top_logprobs":21,"messages":[{"role":"user","content":"hi"}]}`, param: "top_logprobs"},
		{name: "image part", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, param: "messages[0].content"},
		{name: "stream_options without stream", body: `{"model":"m","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, param: "stream_options"},
		{name: "max_tokens beyond int32", body: `{"model":"m","max_tokens":99999999999,"messages":[{"role":"user","content":"hi"}]}`, param: "max_tokens"},
		{name: "temperature beyond float32", body: `{"model":"m","temperature":1e300,"messages":[{"role":"user","content":"hi"}]}`, param: "temperature"},
		{name: "top_k 0", body: `{"model":"m","top_k":0,"messages":[{"role":"user","content":"hi"}]}`, param: "top_k"},
		{name: "wrong type names the field", body: `{"model":"m","seed":"x","messages":[{"role":"user","content":"hi"}]}`, param: "seed"},
		{name: "stop of numbers", body: `{"model":"m","stop":[1],"messages":[{"role":"user","content":"hi"}]}`, param: "stop"},
		{name: "content a number", body: `{"model":"m","messages":[{"role":"user","content":5}]}`, param: "messages"},
		{name: "long user", body: `{"model":"m","user":"` + strings.Repeat("u", 300) + `","messages":[{"role":"user","content":"hi"}]}`, param: "user"},
		{name: "bad priority header", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, header: map[string]string{HeaderPriority: "now"}, param: "x-switchyard-priority"},
		{name: "long hint", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, header: map[string]string{HeaderCallerRegion: strings.Repeat("r", 100)}, param: "x-switchyard-caller-region"},
		{name: "bad timeout", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, header: map[string]string{HeaderTimeout: "-1s"}, param: "x-switchyard-timeout"},
		{name: "empty body", body: ``, param: "body"},
		{name: "not an object", body: `[1,2]`, param: "body"},
		{name: "truncated", body: `{"model":"m",`, param: "body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range c.header {
				h.Set(k, v)
			}
			p, err := parseChat([]byte(c.body), h, maxOut)
			if c.param == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.check(t, p)
				return
			}
			var fe *fieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a field error, got %v", err)
			}
			want := c.param
			if want == "-" {
				want = ""
			}
			if fe.param != want {
				t.Fatalf("param %q, want %q (%v)", fe.param, want, err)
			}
			if len(fe.Error()) > 300 {
				t.Fatalf("error of %d bytes", len(fe.Error()))
			}
		})
	}
}

func TestParseCompletion(t *testing.T) {
	cases := []struct {
		body, param, prompt string
		maxTokens           int32
	}{
		{body: `{"model":"m","prompt":"hello"}`, prompt: "hello", maxTokens: 16},
		{body: `{"model":"m","prompt":["hello"],"max_tokens":3,"best_of":1,"echo":false}`, prompt: "hello", maxTokens: 3},
		{body: `{"model":"m","prompt":["a","b"]}`, param: "prompt"},
		{body: `{"model":"m","prompt":[1,2,3]}`, param: "prompt"},
		{body: `{"model":"m"}`, param: "prompt"},
		{body: `{"model":"m","prompt":"x","best_of":2}`, param: "best_of"},
		{body: `{"model":"m","prompt":"x","echo":true}`, param: "echo"},
		{body: `{"model":"m","prompt":"x","suffix":"y"}`, param: "suffix"},
		{body: `{"model":"m","prompt":"x","n":3}`, param: "n"},
	}
	for _, c := range cases {
		p, err := parseCompletion([]byte(c.body), http.Header{})
		if c.param != "" {
			var fe *fieldError
			if !errors.As(err, &fe) || fe.param != c.param {
				t.Errorf("%s: got %v, want param %s", c.body, err, c.param)
			}
			continue
		}
		if err != nil || p.req.Prompt != c.prompt || p.req.MaxTokens != c.maxTokens {
			t.Errorf("%s: %+v %v", c.body, p, err)
		}
	}
}

// TestParamFromBadRequest: the OpenAI "param" of a 400 comes from the
// field paths the router's *dispatch.InvalidError names, never from the
// message's words.
func TestParamFromBadRequest(t *testing.T) {
	chat := &parsed{req: &pb.GenerateRequest{Messages: []*pb.ChatMessage{{Role: "user", Content: "x"}}}, maxTokensParam: "max_completion_tokens"}
	text := &parsed{req: &pb.GenerateRequest{Prompt: "x"}, maxTokensParam: "max_tokens"}
	withFields := func(msg string, fields ...string) error {
		// Wrapped, as the router's layers may hand it on.
		return fmt.Errorf("admission: %w", &dispatch.InvalidError{Fields: fields, Reason: msg})
	}
	backend := func(msg string) error {
		return &dispatch.BackendError{Code: dispatch.CodeInvalid, Status: "InvalidArgument", Err: errors.New(msg)}
	}
	cases := []struct {
		name string
		err  error
		p    *parsed
		want string
	}{
		{"temperature", withFields("x", "sampling.temperature"), chat, "temperature"},
		{"top_p", withFields("x", "sampling.top_p"), chat, "top_p"},
		{"top_k", withFields("x", "sampling.top_k"), chat, "top_k"},
		{"penalties", withFields("x", "sampling.frequency_penalty"), text, "frequency_penalty"},
		{"one stop sequence", withFields("x", "sampling.stop[2]"), chat, "stop"},
		{"max_tokens as sent by a chat", withFields("x", "max_tokens"), chat, "max_completion_tokens"},
		{"max_tokens as sent by a completion", withFields("x", "max_tokens"), text, "max_tokens"},
		{"continuation tokens are max_tokens", withFields("x", "continuation.generated_tokens"), text, "max_tokens"},
		{"a message's role keeps its index", withFields("x", "messages[3].role"), chat, "messages[3].role"},
		{"prompt too long", withFields("x", "prompt"), text, "prompt"},
		{"no prompt in a chat is its messages", withFields("x", "prompt"), chat, "messages"},
		{"the first field counts", withFields("x", "prompt", "continuation.generated_text"), text, "prompt"},
		{"residency is a header", withFields("x", "routing.residency"), chat, "x-switchyard-residency"},
		{"priority is a header", withFields("x", "priority"), chat, "x-switchyard-priority"},
		{"request id is a header", withFields("x", "request_id"), chat, "x-request-id"},
		{"model", withFields("x", "model"), chat, "model"},
		{"a field the map lacks passes as is", withFields("x", "something.new"), chat, "something.new"},
		{"no parsed request", withFields("x", "max_tokens"), nil, "max_tokens"},
		{"an empty BadRequest", withFields("x"), chat, ""},
		// A refusal whose words name a field but which names none: not parsed.
		{"message only", backend("invalid argument: sampling.temperature: must be in [0, 2], got 3"), chat, ""},
		// A backend's refusal (context overflow) carries no field.
		{"backend refusal", backend("prompt: longer than the context window"), text, ""},
	}
	for _, c := range cases {
		e := fromError(c.err, c.p)
		got := ""
		if e.body.Param != nil {
			got = *e.body.Param
		}
		if e.status != 400 || got != c.want {
			t.Errorf("%s: %d param %q, want 400 param %q", c.name, e.status, got, c.want)
		}
	}
}

// TestFromStatusMapsCodes: the router's own errors, as its core returns
// them, get OpenAI's status, type and code, and a shortage its Retry-After.
func TestFromStatusMapsCodes(t *testing.T) {
	withRetry := func(d time.Duration) error {
		return &dispatch.ExhaustedError{Err: errors.New("no capacity"), RetryAfter: d}
	}
	cases := []struct {
		err        error
		status     int
		typ, code  string
		retryAfter string
	}{
		{dispatch.Invalid("max_tokens", "x"), 400, typeInvalidRequest, "invalid_value", ""},
		{&dispatch.UnknownModelError{Model: `"gpt-9"`}, 404, typeInvalidRequest, "model_not_found", ""},
		{&dispatch.UnauthenticatedError{Reason: "unknown API key"}, 401, typeInvalidRequest, "invalid_api_key", ""},
		{&dispatch.BackendError{Code: dispatch.CodePermissionDenied, Err: errors.New("no")}, 403, typeInvalidRequest, "permission_denied", ""},
		{fmt.Errorf("acquire: %w", capacity.ErrDuplicate), 409, typeInvalidRequest, "conflict", ""},
		{withRetry(2500 * time.Millisecond), 429, typeRateLimit, "rate_limit_exceeded", "3"},
		{withRetry(200 * time.Millisecond), 429, typeRateLimit, "rate_limit_exceeded", "1"},
		{&capacity.QuotaError{Scope: "tenant", Name: "small", Kind: "requests_per_minute"}, 429, typeRateLimit, "rate_limit_exceeded", "1"},
		{&dispatch.UnavailableError{Err: errors.New("no eligible pool")}, 503, typeServer, "service_unavailable", ""},
		{context.DeadlineExceeded, 504, typeTimeout, "deadline_exceeded", ""},
		{&dispatch.BackendError{Code: dispatch.CodeInternal, Status: "Internal", Err: errors.New("boom")}, 500, typeServer, "internal_error", ""},
		{context.Canceled, 499, typeInvalidRequest, "canceled", ""},
		{errors.New("not a status"), 500, typeServer, "internal_error", ""},
	}
	for _, c := range cases {
		e := fromError(c.err, nil)
		if e.status != c.status || e.body.Type != c.typ || e.body.Code == nil || *e.body.Code != c.code {
			t.Errorf("%v: got %d %s %v", c.err, e.status, e.body.Type, e.body.Code)
		}
		if c.retryAfter != "" && retryAfterSeconds(e.retryAfter) != c.retryAfter {
			t.Errorf("%v: Retry-After %s, want %s", c.err, retryAfterSeconds(e.retryAfter), c.retryAfter)
		}
	}
}

func TestDefaultMaxBodyBytes(t *testing.T) {
	if got := DefaultMaxBodyBytes(100 << 10); got != 400<<10 {
		t.Fatalf("got %d", got)
	}
}
