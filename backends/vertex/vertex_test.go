package vertex

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	"github.com/switchyard-dev/switchyard/backends/internal/fakemodel"
	"github.com/switchyard-dev/switchyard/backends/vertex/vertextest"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

func build(t *testing.T, endpoint string, opts map[string]string, log *slog.Logger) backends.Backend {
	t.Helper()
	o := map[string]string{OptProject: "test-project", OptLocation: "us-east5", OptModelNames + ".claude": "claude-sonnet-4@20250514", OptThrottleBackoff: "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	b, err := New(backends.Spec{Pool: "vertex-use5", Endpoints: []string{endpoint}, MaxConcurrent: 8, Options: o}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func deadURL(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + lis.Addr().String()
	_ = lis.Close()
	return url
}

// On GKE with Workload Identity (or on GCE) Application Default
// Credentials come from the metadata server: with GCE_METADATA_HOST at the
// fake one (no key file, no gcloud file), the pool's token comes from it
// and Vertex accepts it. It is the package's first test: the metadata
// package decides once per process whether it runs on GCE, so no test may
// look for credentials on the metadata server before this one.
func TestVertexWorkloadIdentityFromTheMetadataServer(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", t.TempDir()) // no gcloud ADC file
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	t.Setenv("GCE_METADATA_HOST", fake.StartMetadata(t))
	b := build(t, fake.URL, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3})
	if err != nil || resp.GetUsage().GetOutputTokens() != 3 {
		t.Fatalf("with a metadata-server token: %+v %v", resp, err)
	}
	if fake.Granted.Load() == 0 || fake.BadAssertions.Load() != 0 || fake.Unauthorized.Load() != 0 {
		t.Fatalf("metadata server granted %d, refused %d; Vertex refused %d", fake.Granted.Load(), fake.BadAssertions.Load(), fake.Unauthorized.Load())
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
}

// The Anthropic-on-Vertex pool passes the backend contract against the
// local fake, with Application Default Credentials from
// GOOGLE_APPLICATION_CREDENTIALS: a service-account key whose JWT assertion
// the fake's token server verifies before it issues the tokens Vertex takes.
func TestVertexAnthropicContractWithADCServiceAccount(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{TokenDelay: 3 * time.Millisecond})
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", fake.ServiceAccountFile(t))
	full := vertextest.Start(t, vertextest.Options{})
	full.Throttle.Store(true)
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return build(t, fake.URL, nil, nil) },
		Model:         "claude",
		LongMaxTokens: 3000,
		Broken:        func(t *testing.T) backends.Backend { return build(t, deadURL(t), nil, nil) },
		Full: func(t *testing.T) backends.Backend {
			return build(t, full.URL, map[string]string{OptCredentialsFile: full.ServiceAccountFile(t)}, nil)
		},
		ClientFault:   &pb.GenerateRequest{Model: "claude", Prompt: strings.Repeat("overflow ", 2000), MaxTokens: 4},
		Deterministic: true,
	})
	if fake.Granted.Load() == 0 || fake.BadAssertions.Load() != 0 || fake.Unauthorized.Load() != 0 {
		t.Fatalf("token server granted %d, refused %d assertions; Vertex refused %d tokens", fake.Granted.Load(), fake.BadAssertions.Load(), fake.Unauthorized.Load())
	}
}

// Tokens are renewed before they expire, off the request path: with
// 3-second tokens renewed 2.5 s early, calls keep succeeding over several
// lifetimes (the first tokens expired at the fake long before the last
// call), and no call is refused for its token. A token server that starts
// refusing (a revoked key) fails the pool's health once the held token is
// due, and the pool heals when grants resume.
func TestVertexTokenRefreshBeforeExpiry(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{TokenTTL: 3 * time.Second})
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t), OptTokenRefresh: "50ms", OptTokenRefreshBefore: "2500ms"}, nil)
	ctx := ctxT(t, 30*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3}
	start := time.Now()
	testwait.For(t, 20*time.Second, "tokens renewed past two lifetimes with every call succeeding", func() bool {
		if _, err := b.Generate(ctx, req); err != nil {
			t.Fatalf("call after %s: %v", time.Since(start), err)
		}
		return time.Since(start) > 7*time.Second
	})
	if g := fake.Granted.Load(); g < 8 || fake.Unauthorized.Load() != 0 {
		t.Fatalf("%d tokens granted in %s, %d calls refused; want a renewal about every 0.5 s and none refused", g, time.Since(start), fake.Unauthorized.Load())
	}
	fake.RefuseGrants.Store(true)
	testwait.For(t, 10*time.Second, "the refused refresh failing the health check", func() bool { return b.Check(ctx) != nil })
	fake.RefuseGrants.Store(false)
	testwait.For(t, 10*time.Second, "the health check passing again", func() bool { return b.Check(ctx) == nil })
	if _, err := b.Generate(ctx, req); err != nil {
		t.Fatalf("after the token server recovered: %v", err)
	}
}

// A key the token server does not know (its assertion's signature fails)
// leaves the pool without a token: calls are UNAVAILABLE without reaching
// Vertex, the health check fails, and no key material reaches the log. A
// token Vertex refuses for the project (403) fails the pool once and holds
// it: the next call is not sent.
func TestVertexWrongCredentials(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	keyFile := fake.WrongKeyFile(t)
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: keyFile}, log)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3}
	if _, err := b.Generate(ctx, req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "token") {
		t.Fatalf("wrong key: %v, want UNAVAILABLE naming the token", err)
	}
	if fake.BadAssertions.Load() == 0 || fake.Unauthorized.Load() != 0 {
		t.Fatalf("token server refused %d assertions, Vertex saw %d calls; want refusals and no call", fake.BadAssertions.Load(), fake.Unauthorized.Load())
	}
	if err := b.Check(ctx); err == nil {
		t.Fatal("health check passed without a token")
	}
	key, _ := os.ReadFile(keyFile)
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal(key, &sa)
	body := strings.Split(sa.PrivateKey, "\n")[1]
	if strings.Contains(logs.String(), body) {
		t.Fatal("key material in the log")
	}
	if !strings.Contains(logs.String(), "token refresh failed") {
		t.Fatalf("the failing refresh was not logged:\n%s", logs.String())
	}

	other := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t), OptProject: "someone-elses"}, log)
	_, err := other.Generate(ctx, req)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refused the pool's credentials") {
		t.Fatalf("403: %v, want UNAVAILABLE naming refused credentials", err)
	}
	if _, err := other.Generate(ctx, req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "next try") {
		t.Fatalf("403 held: %v, want a local UNAVAILABLE", err)
	}
	if other.Check(ctx) == nil {
		t.Fatal("health check passed with refused credentials")
	}
}

// 429 RESOURCE_EXHAUSTED (Vertex quota) and 529 overloaded (Anthropic
// capacity) are shortages: RESOURCE_EXHAUSTED, no capacity reported, local
// refusals while backing off, service again once it recovers.
func TestVertexThrottlingIsAShortage(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t), OptThrottleBackoff: "300ms"}, nil)
	lr := b.(backends.LoadReporter)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3}
	for _, mode := range []string{"429", "529"} {
		fake.Throttle.Store(mode == "429")
		fake.Overloaded.Store(mode == "529")
		if err := b.GenerateStream(ctx, req, func(*pb.GenerateChunk) error { return nil }); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("%s: %v, want RESOURCE_EXHAUSTED", mode, err)
		}
		if l, _ := lr.Load(); l.Capacity != 0 {
			t.Fatalf("%s: load %+v while backing off", mode, l)
		}
		if _, err := b.Generate(ctx, req); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "backing off") {
			t.Fatalf("%s: during the back-off: %v", mode, err)
		}
		if err := b.Check(ctx); err != nil {
			t.Fatalf("%s: throttled pool failed its health check: %v", mode, err)
		}
		fake.Throttle.Store(false)
		fake.Overloaded.Store(false)
		testwait.For(t, 10*time.Second, "service after the back-off", func() bool { _, err := b.Generate(ctx, req); return err == nil })
		if l, _ := lr.Load(); l.Capacity != 8 {
			t.Fatalf("%s: load %+v after recovery", mode, l)
		}
	}
}

// A streamRawPredict answer cut mid-answer is UNAVAILABLE after the tokens
// sent; the continuation yields exactly the rest of the uncut answer.
func TestVertexStreamBrokenMidAnswerIsContinued(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t)}, nil)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", MaxTokens: 12, Messages: []*pb.ChatMessage{
		{Role: "system", Content: "Be terse."}, {Role: "user", Content: "Name railway parts."}}}
	whole := backendtest.Stream(t, ctx, b, req)
	fake.CutAfter.Store(4)
	var head strings.Builder
	var got int32
	err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error { head.WriteString(c.GetText()); got += c.GetTokens(); return nil })
	if status.Code(err) != codes.Unavailable || got != 4 {
		t.Fatalf("cut stream: %v after %d tokens", err, got)
	}
	fake.CutAfter.Store(0)
	rest := backendtest.Stream(t, ctx, b, &pb.GenerateRequest{Model: "claude", MaxTokens: 12, Messages: req.Messages,
		Continuation: &pb.Continuation{GeneratedText: head.String(), GeneratedTokens: got}})
	join := func(cs []*pb.GenerateChunk) string {
		var s strings.Builder
		for _, c := range cs {
			s.WriteString(c.GetText())
		}
		return s.String()
	}
	if head.String()+join(rest) != join(whole) || rest[len(rest)-1].GetUsage().GetOutputTokens() != 8 {
		t.Fatalf("continued %q + %q (%v), uncut %q", head.String(), join(rest), rest[len(rest)-1].GetUsage(), join(whole))
	}
}

// The Anthropic Messages body Vertex takes: anthropic_version
// vertex-2023-10-16, no model field (the model is in the rawPredict URL),
// system messages joined into system, consecutive turns joined, max_tokens
// less what was generated, sampling fields by their Anthropic names, and a
// continuation as a final assistant turn without trailing whitespace.
func TestAnthropicBodyOnVertex(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t)}, nil)
	ctx := ctxT(t, 20*time.Second)
	k, temp := int32(7), float32(0.2)
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 10,
		Sampling:     &pb.SamplingParameters{TopK: &k, Temperature: &temp, Stop: []string{"\n\nHuman:"}},
		Messages:     []*pb.ChatMessage{{Role: "system", Content: "One."}, {Role: "user", Content: "Hi."}, {Role: "system", Content: "Two."}, {Role: "user", Content: "More."}},
		Continuation: &pb.Continuation{GeneratedText: " frog\n", GeneratedTokens: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(fake.LastBody(), &body); err != nil {
		t.Fatal(err)
	}
	want := `{"anthropic_version":"vertex-2023-10-16","max_tokens":9,"messages":[{"content":"Hi.\n\nMore.","role":"user"},{"content":" frog","role":"assistant"}],"stop_sequences":["\n\nHuman:"],"system":"One.\n\nTwo.","temperature":0.2,"top_k":7}`
	if got, _ := json.Marshal(body); string(got) != want {
		t.Fatalf("body\n%s\nwant\n%s", got, want)
	}
	if wantText := fakemodel.Answer("system:One.\n\nTwo.\nuser:Hi.\n\nMore.", 1, 9); " "+resp.GetText() != wantText || resp.GetUsage().GetOutputTokens() != 9 ||
		resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("response %+v, want the text %q less its leading space", resp, wantText)
	}
	for _, m := range [][]*pb.ChatMessage{{{Role: "assistant", Content: "x"}}, {{Role: "user", Content: ""}}, {{Role: "function", Content: "x"}}} {
		if _, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 2, Messages: m}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "messages") {
			t.Fatalf("%v: %v, want INVALID_ARGUMENT naming messages", m, err)
		}
	}
}

// api: openai reaches a self-deployed model's OpenAI-compatible chat
// completions on its Vertex endpoint with the pool's token (the openai
// adapter, BearerTransport), unary and streamed; a prompt goes as one user
// turn; a throttled endpoint is a shortage there too.
func TestVertexOpenAICompatibleEndpoint(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	b := build(t, fake.URL, map[string]string{OptAPI: "openai", OptEndpointID: "1234567890", OptCredentialsFile: fake.ServiceAccountFile(t),
		OptModelNames + ".claude": "served-llama"}, nil)
	ctx := ctxT(t, 20*time.Second)
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 5})
	if err != nil || resp.GetUsage().GetOutputTokens() != 5 || resp.GetText() != fakemodel.Answer("user:hello", 0, 5) {
		t.Fatalf("unary: %+v %v", resp, err)
	}
	chunks := backendtest.Stream(t, ctx, b, &pb.GenerateRequest{Model: "claude", MaxTokens: 4, Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}})
	if chunks[len(chunks)-1].GetUsage().GetOutputTokens() != 4 {
		t.Fatalf("stream usage %v", chunks[len(chunks)-1].GetUsage())
	}
	if !strings.Contains(string(fake.LastBody()), `"model":"served-llama"`) || fake.Unauthorized.Load() != 0 {
		t.Fatalf("body %s, %d refused", fake.LastBody(), fake.Unauthorized.Load())
	}
	if err := b.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	fake.Throttle.Store(true)
	if _, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 5}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("throttled: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// Bad options fail at start, each named.
func TestVertexOptionsValidated(t *testing.T) {
	cases := []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{OptLocation: "us-east5"}, "option project: required"},
		{map[string]string{OptProject: "p"}, "option location: required"},
		{map[string]string{OptProject: "p", OptLocation: "us-east5", OptAPI: "palm"}, "option api"},
		{map[string]string{OptProject: "p", OptLocation: "us-east5", OptAPI: "openai"}, "option endpoint_id: required"},
		{map[string]string{OptProject: "p/../x", OptLocation: "us-east5"}, "option project"},
		{map[string]string{OptProject: "p", OptLocation: "us-east5", OptCredentialsFile: "/no/such/file"}, "option credentials_file"},
		{map[string]string{OptProject: "p", OptLocation: "us-east5", "api_key_env": "K"}, `unknown option "api_key_env"`},
		{map[string]string{OptProject: "p", OptLocation: "us-east5", OptModelNames + ".m": "a/b"}, "option model_names.m"},
	}
	for _, c := range cases {
		if _, err := New(backends.Spec{Pool: "p", Endpoints: []string{"default"}, Options: c.opts}, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.opts, err, c.want)
		}
	}
}

// Tools in the Anthropic body: tools with input_schema, tool_choice (auto,
// any, tool, none; parallel_tool_calls false as disable_parallel_tool_use),
// the model's tool_use answered as tool calls (whole, or streamed from
// input_json_delta pieces) with finish TOOL_CALLS, and the next turn's
// tool_use and tool_result blocks, which the fake pairs as the API does.
func TestAnthropicBodyToolsOnVertex(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	b := build(t, fake.URL, map[string]string{OptCredentialsFile: fake.ServiceAccountFile(t)}, nil)
	if !b.Capabilities().Tools {
		t.Fatal("the Anthropic pool does not claim tools")
	}
	ctx := ctxT(t, 20*time.Second)
	tools := []*pb.Tool{{Name: "lookup", Description: "Look a part up.", ParametersJson: `{"type":"object","properties":{"query":{"type":"string"}}}`}}
	ask := []*pb.ChatMessage{{Role: "user", Content: "What is a frog in a railway?"}}
	no := false
	req := &pb.GenerateRequest{Model: "claude", MaxTokens: 50, Messages: ask, Tools: tools, ToolChoice: &pb.ToolChoice{Mode: "required"}, ParallelToolCalls: &no}
	resp, err := b.Generate(ctx, req)
	if err != nil || len(resp.GetToolCalls()) != 1 || resp.ToolCalls[0].GetName() != "lookup" || resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS ||
		!json.Valid([]byte(resp.ToolCalls[0].GetArguments())) {
		t.Fatalf("tool call: %+v %v", resp, err)
	}
	if body := string(fake.LastBody()); !strings.Contains(body, `"tool_choice":{"type":"any","disable_parallel_tool_use":true}`) || !strings.Contains(body, `"input_schema":{"type":"object"`) {
		t.Fatalf("tools in body: %s", body)
	}
	chunks := backendtest.Stream(t, ctx, b, req)
	var args, id string
	for _, c := range chunks {
		for _, d := range c.GetToolCalls() {
			id += d.GetId()
			args += d.GetArguments()
		}
	}
	if id != resp.ToolCalls[0].GetId() || args != resp.ToolCalls[0].GetArguments() || chunks[len(chunks)-1].GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Fatalf("streamed call %q %q, unary %+v", id, args, resp.ToolCalls[0])
	}
	next := append(append([]*pb.ChatMessage{}, ask...),
		&pb.ChatMessage{Role: "assistant", Content: "Let me look.", ToolCalls: resp.ToolCalls},
		&pb.ChatMessage{Role: "tool", ToolCallId: resp.ToolCalls[0].GetId(), Content: "Where two rails cross."})
	after, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 4, Messages: next, Tools: tools, ToolChoice: &pb.ToolChoice{Mode: "none"}})
	if err != nil || after.GetText() == "" || len(after.GetToolCalls()) != 0 {
		t.Fatalf("after the result: %+v %v", after, err)
	}
	body := string(fake.LastBody())
	for _, want := range []string{`{"type":"tool_use","id":"toolu_fake1","name":"lookup","input":{"query":`, `{"type":"tool_result","tool_use_id":"toolu_fake1","content":"Where two rails cross."}`, `"tool_choice":{"type":"none"}`} {
		if !strings.Contains(body, want) {
			t.Fatalf("body lacks %s:\n%s", want, body)
		}
	}
	strict := true
	if _, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 4, Messages: ask, Tools: []*pb.Tool{{Name: "x", Strict: &strict}}}); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "tools[0].strict") {
		t.Fatalf("strict: %v, want INVALID_ARGUMENT naming tools[0].strict", err)
	}
}

// api: gemini passes the backend contract against the fake's
// generateContent / streamGenerateContent (server-sent events), with the
// same OAuth-verified tokens; Gemini claims no continuation.
func TestVertexGeminiContract(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{TokenDelay: 3 * time.Millisecond})
	key := fake.ServiceAccountFile(t)
	full := vertextest.Start(t, vertextest.Options{})
	full.Throttle.Store(true)
	gemini := func(url, keyFile string) func(t *testing.T) backends.Backend {
		return func(t *testing.T) backends.Backend {
			return build(t, url, map[string]string{OptAPI: "gemini", OptCredentialsFile: keyFile, OptModelNames + ".claude": "gemini-2.5-flash"}, nil)
		}
	}
	backendtest.Run(t, backendtest.Harness{
		New:           gemini(fake.URL, key),
		Model:         "claude",
		LongMaxTokens: 3000,
		Broken:        func(t *testing.T) backends.Backend { return gemini(deadURL(t), key)(t) },
		Full:          gemini(full.URL, full.ServiceAccountFile(t)),
		ClientFault:   &pb.GenerateRequest{Model: "claude", Prompt: strings.Repeat("overflow ", 2000), MaxTokens: 4},
	})
	if fake.Unauthorized.Load() != 0 {
		t.Fatalf("%d calls refused for their token", fake.Unauthorized.Load())
	}
}

// The generateContent body: system messages in systemInstruction, user and
// assistant turns as user and model contents, every sampling parameter in
// generationConfig; a stream cut mid-answer is UNAVAILABLE; a continuation
// is a shortage here (Gemini cannot continue a model turn), and
// continuation: on is refused for it at start.
func TestGeminiBodyOnVertex(t *testing.T) {
	fake := vertextest.Start(t, vertextest.Options{})
	key := fake.ServiceAccountFile(t)
	b := build(t, fake.URL, map[string]string{OptAPI: "gemini", OptCredentialsFile: key, OptModelNames + ".claude": "gemini-2.5-flash"}, nil)
	if b.Capabilities().Continuation || b.Capabilities().Tools {
		t.Fatalf("gemini capabilities %+v, want neither continuation nor tools", b.Capabilities())
	}
	ctx := ctxT(t, 20*time.Second)
	temp, seed, pp := float32(0.5), int64(7), float32(0.25)
	resp, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 6,
		Sampling: &pb.SamplingParameters{Temperature: &temp, Seed: &seed, PresencePenalty: &pp, Stop: []string{"END"}},
		Messages: []*pb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi."}, {Role: "assistant", Content: "Hello."}, {Role: "user", Content: "Name a part."}}})
	if err != nil || resp.GetUsage().GetOutputTokens() != 6 || resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH ||
		resp.GetText() != fakemodel.Answer("system:Be brief.\nuser:Hi.\nmodel:Hello.\nuser:Name a part.", 0, 6) {
		t.Fatalf("generateContent: %+v %v", resp, err)
	}
	var body map[string]any
	_ = json.Unmarshal(fake.LastBody(), &body)
	got, _ := json.Marshal(body)
	want := `{"contents":[{"parts":[{"text":"Hi."}],"role":"user"},{"parts":[{"text":"Hello."}],"role":"model"},{"parts":[{"text":"Name a part."}],"role":"user"}],` +
		`"generationConfig":{"maxOutputTokens":6,"presencePenalty":0.25,"seed":7,"stopSequences":["END"],"temperature":0.5},"systemInstruction":{"parts":[{"text":"Be brief."}]}}`
	if string(got) != want {
		t.Fatalf("body\n%s\nwant\n%s", got, want)
	}
	fake.CutAfter.Store(3)
	var sent int32
	err = b.GenerateStream(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "go on", MaxTokens: 10}, func(c *pb.GenerateChunk) error { sent += c.GetTokens(); return nil })
	if status.Code(err) != codes.Unavailable || sent != 3 {
		t.Fatalf("cut stream: %v after %d tokens", err, sent)
	}
	fake.CutAfter.Store(0)
	cont := &pb.GenerateRequest{Model: "claude", Prompt: "go on", MaxTokens: 10, Continuation: &pb.Continuation{GeneratedText: " switch yard", GeneratedTokens: 2}}
	if _, err := b.Generate(ctx, cont); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("continuation on gemini: %v, want RESOURCE_EXHAUSTED (another pool must continue)", err)
	}
	if _, err := New(backends.Spec{Pool: "p", Endpoints: []string{"default"}, Options: map[string]string{OptProject: "p", OptLocation: "us-central1", OptAPI: "gemini", OptContinuation: "on"}}, Options{}); err == nil || !strings.Contains(err.Error(), "option continuation") {
		t.Fatalf("continuation on for gemini: %v", err)
	}
}
