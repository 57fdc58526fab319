package bedrock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/backendtest"
	"github.com/switchyard-dev/switchyard/backends/bedrock/bedrocktest"
	"github.com/switchyard-dev/switchyard/backends/internal/fakemodel"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// awsEnv gives the SDK's default chain the known test credentials through
// the environment, and nothing else to find (no shared files, no instance
// metadata).
func awsEnv(t *testing.T, id, secret string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", id)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func build(t *testing.T, url string, opts map[string]string, log *slog.Logger) *Backend {
	t.Helper()
	o := map[string]string{OptRegion: "us-east-1", OptModelNames + ".claude": "anthropic.claude-3-5-haiku-20241022-v1:0", OptThrottleBackoff: "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	b, err := New(backends.Spec{Pool: "bedrock-use1", Endpoints: []string{url}, MaxConcurrent: 8, Options: o}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
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

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The adapter passes the backend contract against the local Bedrock fake,
// every call signed by the SDK and its SigV4 signature verified by the fake;
// streams in the real event-stream encoding.
func TestBedrockContractAgainstSigV4VerifyingFake(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{TokenDelay: 3 * time.Millisecond})
	full := bedrocktest.Start(t, bedrocktest.Options{})
	full.Throttle.Store(true)
	backendtest.Run(t, backendtest.Harness{
		New:           func(t *testing.T) backends.Backend { return build(t, fake.URL, nil, nil) },
		Model:         "claude",
		LongMaxTokens: 3000,
		Broken:        func(t *testing.T) backends.Backend { return build(t, deadURL(t), nil, nil) },
		Full:          func(t *testing.T) backends.Backend { return build(t, full.URL, nil, nil) },
		ClientFault:   &pb.GenerateRequest{Model: "claude", Prompt: strings.Repeat("overflow ", 2000), MaxTokens: 4},
		Deterministic: true,
	})
	if fake.Calls.Load() == 0 || fake.BadSignatures.Load() != 0 {
		t.Fatalf("fake saw %d signed calls and %d bad signatures", fake.Calls.Load(), fake.BadSignatures.Load())
	}
}

// A wrong secret is caught by the fake's signature check: the call is
// UNAVAILABLE (a pool failure, so the router ejects the pool), sent once
// (no retry loop), the pool's health check fails while the refusal holds,
// and neither the secret nor the key id appear in the error or the log.
func TestBedrockWrongCredentialsFailThePoolOnceWithoutSecrets(t *testing.T) {
	const wrongSecret = "not-the-secret-0123456789abcdefghijklmnopq"
	awsEnv(t, bedrocktest.AccessKeyID, wrongSecret)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	var logs bytes.Buffer
	b := build(t, fake.URL, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := ctxT(t, 10*time.Second)
	_, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 4})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refused the pool's credentials") {
		t.Fatalf("wrong secret: %v, want UNAVAILABLE naming refused credentials", err)
	}
	if n := fake.BadSignatures.Load(); n != 1 {
		t.Fatalf("the fake refused %d signatures for one call, want exactly 1 (no retries)", n)
	}
	// Held: the next call fails at once without reaching Bedrock.
	err = b.GenerateStream(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 4}, func(*pb.GenerateChunk) error { return nil })
	if status.Code(err) != codes.Unavailable || fake.BadSignatures.Load() != 1 {
		t.Fatalf("second call: %v after %d refusals; want UNAVAILABLE without asking again", err, fake.BadSignatures.Load())
	}
	if err := b.Check(ctx); err == nil {
		t.Fatal("health check passed with refused credentials")
	}
	if strings.Count(logs.String(), "refused the pool's credentials") != 1 {
		t.Fatalf("want the refusal logged once, log:\n%s", logs.String())
	}
	for _, secret := range []string{wrongSecret, bedrocktest.SecretAccessKey} {
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Fatal("a secret reached an error or the log")
		}
	}
	// A 403 from an IAM policy (AccessDenied) is the same class.
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake.Deny.Store(true)
	b2 := build(t, fake.URL, nil, nil)
	if _, err := b2.Generate(ctx, &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 4}); status.Code(err) != codes.Unavailable {
		t.Fatalf("AccessDenied: %v, want UNAVAILABLE", err)
	}
}

// Throttling is a shortage, not an error: RESOURCE_EXHAUSTED, the pool
// reports no capacity and refuses locally while it backs off (the fake is
// not asked again), and serves again when the quota recovers.
func TestBedrockThrottlingIsAShortageAndRecovers(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	b := build(t, fake.URL, map[string]string{OptThrottleBackoff: "1s"}, nil) // long enough that the next call lands inside it on a busy machine
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 4}
	for _, mode := range []string{"ThrottlingException", "ServiceQuotaExceededException", "in-stream throttlingException"} {
		fake.Throttle.Store(mode == "ThrottlingException")
		fake.Quota.Store(mode == "ServiceQuotaExceededException")
		if mode == "in-stream throttlingException" {
			fake.ThrottleInStream.Store(2)
		}
		before := fake.Calls.Load()
		err := b.GenerateStream(ctx, req, func(*pb.GenerateChunk) error { return nil })
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("%s: %v, want RESOURCE_EXHAUSTED", mode, err)
		}
		if l, _ := b.Load(); l.Capacity != 0 {
			t.Fatalf("%s: load %+v while backing off, want no capacity", mode, l)
		}
		if _, err := b.Generate(ctx, req); status.Code(err) != codes.ResourceExhausted || fake.Calls.Load() != before+1 {
			t.Fatalf("%s: during the back-off: %v, fake asked %d times; want a local RESOURCE_EXHAUSTED", mode, err, fake.Calls.Load()-before)
		}
		if err := b.Check(ctx); err != nil {
			t.Fatalf("%s: a throttled pool failed its health check: %v", mode, err)
		}
		fake.Throttle.Store(false)
		fake.Quota.Store(false)
		fake.ThrottleInStream.Store(0)
		testwait.For(t, 10*time.Second, "the pool serving again after its back-off", func() bool {
			_, err := b.Generate(ctx, req)
			return err == nil
		})
		if l, _ := b.Load(); l.Capacity != 8 {
			t.Fatalf("%s: load %+v after recovery, want capacity 8", mode, l)
		}
	}
}

// A stream broken mid-answer (the connection drops) is UNAVAILABLE after
// the tokens sent, and the continuation (the answer so far as a trailing
// assistant turn) yields exactly the rest of the uncut answer.
func TestBedrockStreamBrokenMidAnswerIsContinued(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	b := build(t, fake.URL, nil, nil)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", MaxTokens: 12, Messages: []*pb.ChatMessage{
		{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Name the parts of a railway."}}}
	whole := backendtest.Stream(t, ctx, b, req)
	fake.CutAfter.Store(5)
	var head strings.Builder
	var got int32
	err := b.GenerateStream(ctx, req, func(c *pb.GenerateChunk) error {
		head.WriteString(c.GetText())
		got += c.GetTokens()
		return nil
	})
	if status.Code(err) != codes.Unavailable || got != 5 {
		t.Fatalf("cut stream: %v after %d tokens, want UNAVAILABLE after 5", err, got)
	}
	fake.CutAfter.Store(0)
	cont := &pb.GenerateRequest{Model: req.Model, MaxTokens: req.MaxTokens, Messages: req.Messages,
		Continuation: &pb.Continuation{GeneratedText: head.String(), GeneratedTokens: got}}
	rest := backendtest.Stream(t, ctx, b, cont)
	var all strings.Builder
	for _, c := range whole {
		all.WriteString(c.GetText())
	}
	var tail strings.Builder
	for _, c := range rest {
		tail.WriteString(c.GetText())
	}
	if head.String()+tail.String() != all.String() {
		t.Fatalf("continued %q + %q, uncut %q", head.String(), tail.String(), all.String())
	}
	if out := rest[len(rest)-1].GetUsage().GetOutputTokens(); out != 7 {
		t.Fatalf("continuation produced %d tokens, want the remaining 7", out)
	}
}

// The Converse body: system turns in system, consecutive turns of one role
// joined, max_tokens less what was generated, a continuation as a trailing
// assistant turn without trailing whitespace (and the model's leading space
// cut from the answer), top_k in additionalModelRequestFields, the pool's
// model id — an inference profile ARN, whose slashes the signature covers.
func TestBedrockConverseBody(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	arn := "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
	b := build(t, fake.URL, map[string]string{OptModelNames + ".claude": arn}, nil)
	ctx := ctxT(t, 10*time.Second)
	k := int32(5)
	temp := float32(0.5)
	req := &pb.GenerateRequest{Model: "claude", MaxTokens: 10, Sampling: &pb.SamplingParameters{TopK: &k, Temperature: &temp, Stop: []string{"END"}},
		Messages:     []*pb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi."}, {Role: "user", Content: "Name a part."}},
		Continuation: &pb.Continuation{GeneratedText: " points ", GeneratedTokens: 1}}
	resp, err := b.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Messages []struct {
			Role    string
			Content []struct{ Text string }
		}
		System          []struct{ Text string }
		InferenceConfig struct {
			MaxTokens     int
			Temperature   float64
			StopSequences []string
		}
		AdditionalModelRequestFields map[string]any
	}
	if err := json.Unmarshal(fake.LastBody(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.System) != 1 || body.System[0].Text != "Be brief." || len(body.Messages) != 2 ||
		body.Messages[0].Role != "user" || body.Messages[0].Content[0].Text != "Hi.\n\nName a part." ||
		body.Messages[1].Role != "assistant" || body.Messages[1].Content[0].Text != " points" {
		t.Fatalf("body %s", fake.LastBody())
	}
	if body.InferenceConfig.MaxTokens != 9 || body.InferenceConfig.Temperature != 0.5 || fmt.Sprint(body.InferenceConfig.StopSequences) != "[END]" ||
		fmt.Sprint(body.AdditionalModelRequestFields["top_k"]) != "5" {
		t.Fatalf("inference config / extra fields: %s", fake.LastBody())
	}
	if resp.GetUsage().GetOutputTokens() != 9 || resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH || strings.HasPrefix(resp.GetText(), " ") {
		t.Fatalf("response %+v", resp)
	}
	if want := fakemodel.Answer("system:Be brief.\nuser:Hi.\n\nName a part.", 1, 9); " "+resp.GetText() != want {
		t.Fatalf("continued text %q, want %q less its leading space", resp.GetText(), want)
	}
	if fake.BadSignatures.Load() != 0 {
		t.Fatal("the ARN model id broke the signature")
	}
	// A turn the client left empty or a role Bedrock lacks: the client's fault, named.
	for _, m := range [][]*pb.ChatMessage{{{Role: "user", Content: ""}}, {{Role: "function", Content: "x"}}, {{Role: "assistant", Content: "x"}}} {
		if _, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 2, Messages: m}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "messages") {
			t.Fatalf("messages %v: %v, want INVALID_ARGUMENT naming messages", m, err)
		}
	}
}

// top_k reaches a model that takes it (Anthropic's, or with the option on)
// and is refused by name for one that does not, never dropped; a pool none
// of whose models takes it tells the router so (NoTopK).
func TestBedrockTopKRefusedWhereTheModelTakesNone(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	k := int32(5)
	req := &pb.GenerateRequest{Model: "llama", MaxTokens: 4, Prompt: "hi", Sampling: &pb.SamplingParameters{TopK: &k}}
	metaOnly := map[string]string{OptModelNames + ".llama": "meta.llama3-70b-instruct-v1:0", OptModelNames + ".claude": "meta.llama3-8b-instruct-v1:0"}
	b := build(t, fake.URL, metaOnly, nil)
	if !b.Capabilities().NoTopK {
		t.Fatal("a pool serving only a Meta model says it can take top_k")
	}
	if _, err := b.Generate(ctxT(t, 10*time.Second), req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "sampling.top_k") {
		t.Fatalf("top_k on a Meta model: %v, want INVALID_ARGUMENT naming sampling.top_k", err)
	}
	metaOnly[OptTopK] = "on"
	on := build(t, fake.URL, metaOnly, nil)
	if on.Capabilities().NoTopK {
		t.Fatal("top_k: on, yet the pool says it takes none")
	}
	if _, err := on.Generate(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatalf("top_k with the option on: %v", err)
	}
	if !strings.Contains(string(fake.LastBody()), `"top_k":5`) {
		t.Fatalf("top_k not sent with the option on: %s", fake.LastBody())
	}
}

// Credentials come from the SDK's default chain (here a shared-config
// profile with credential_process) and are refreshed off the request path:
// after a rotation the background refresh picks the new ones up before a
// call needs them, and calls are signed with them.
func TestBedrockCredentialRefreshInTheBackground(t *testing.T) {
	awsEnv(t, "", "")
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	dir := t.TempDir()
	credFile := filepath.Join(dir, "creds.json")
	write := func(id, secret, token string) {
		// Expiring within the SDK cache's 5-minute window: every refresh asks again.
		b, _ := json.Marshal(map[string]any{"Version": 1, "AccessKeyId": id, "SecretAccessKey": secret, "SessionToken": token,
			"Expiration": time.Now().Add(4 * time.Minute).UTC().Format(time.RFC3339)})
		if err := os.WriteFile(credFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ASIAFIRSTKEY0000001", "first-secret", "first-token")
	fake.Allow(aws.Credentials{AccessKeyID: "ASIAFIRSTKEY0000001", SecretAccessKey: "first-secret", SessionToken: "first-token"})
	script := filepath.Join(dir, "creds.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat "+credFile+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("AWS_CONFIG_FILE"), []byte("[profile rotating]\ncredential_process = "+script+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := build(t, fake.URL, map[string]string{OptProfile: "rotating", OptCredentialRefresh: "50ms"}, nil)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3}
	if _, err := b.Generate(ctx, req); err != nil || fake.Used("ASIAFIRSTKEY0000001") != 1 {
		t.Fatalf("first credentials: %v", err)
	}
	// Rotate: the old key is revoked at the service, the new one is allowed.
	fake.Allow(aws.Credentials{AccessKeyID: "ASIASECONDKEY000002", SecretAccessKey: "second-secret", SessionToken: "second-token"})
	fake.Revoke("ASIAFIRSTKEY0000001")
	write("ASIASECONDKEY000002", "second-secret", "second-token")
	want := sha256.Sum256([]byte("ASIASECONDKEY000002\x00second-token"))
	testwait.For(t, 10*time.Second, "the background refresh holding the rotated credentials", func() bool {
		id := b.credID.Load()
		return id != nil && *id == want
	})
	if _, err := b.Generate(ctx, req); err != nil || fake.Used("ASIASECONDKEY000002") != 1 {
		t.Fatalf("after rotation: %v (second key used %d times)", err, fake.Used("ASIASECONDKEY000002"))
	}
	// A refresh that fails degrades this pool's health, nothing else; it
	// heals when the credentials come back.
	if err := os.WriteFile(credFile, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the failing refresh failing the health check", func() bool { return b.Check(ctx) != nil })
	write("ASIASECONDKEY000002", "second-secret", "second-token")
	testwait.For(t, 10*time.Second, "the health check passing again", func() bool { return b.Check(ctx) == nil })
}

// Bad options fail at start, each named; nothing touches the network.
func TestBedrockOptionsValidated(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	cases := []struct {
		endpoints []string
		opts      map[string]string
		want      string
	}{
		{[]string{"default"}, map[string]string{}, "option region: required"},
		{[]string{"default"}, map[string]string{OptRegion: "mars"}, "option region"},
		{[]string{"default"}, map[string]string{OptRegion: "us-east-1", "api_key_env": "X"}, `unknown option "api_key_env"`},
		{[]string{"default"}, map[string]string{OptRegion: "us-east-1", OptRoleARN: "role"}, "option role_arn"},
		{[]string{"default"}, map[string]string{OptRegion: "us-east-1", OptExternalID: "x"}, "option role_arn: required"},
		{[]string{"default"}, map[string]string{OptRegion: "us-east-1", OptRequestTimeout: "soon"}, "option request_timeout"},
		{[]string{"ftp://x"}, map[string]string{OptRegion: "us-east-1"}, `endpoint "ftp://x"`},
		{[]string{"default", "default"}, map[string]string{OptRegion: "us-east-1"}, "want one"},
		{[]string{"default"}, map[string]string{OptRegion: "us-east-1", OptProfile: "no-such-profile"}, "option profile"},
	}
	for _, c := range cases {
		_, err := New(backends.Spec{Pool: "p", Endpoints: c.endpoints, Options: c.opts}, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: %v, want an error containing %q", c.endpoints, c.opts, err, c.want)
		}
	}
	b, err := New(backends.Spec{Pool: "p", Endpoints: []string{"default"}, Options: map[string]string{OptRegion: "eu-central-1",
		OptRoleARN: "arn:aws:iam::123456789012:role/switchyard", OptExternalID: "ext"}}, Options{})
	if err != nil {
		t.Fatalf("valid options with a role: %v", err)
	}
	_ = b.Close()
}

// With role_arn the chain's credentials only call STS AssumeRole (the fake
// verifies that signature, the role and the external id); Bedrock is called
// with the role's temporary credentials, which the background refresh
// renews before they expire without a call asking for it. A wrong external
// id is refused by STS: the pool fails its health check and its calls.
func TestBedrockAssumeRoleRefreshedInTheBackground(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	fake.Revoke(bedrocktest.AccessKeyID) // only the role may call Bedrock
	const role = "arn:aws:iam::123456789012:role/switchyard-bedrock"
	// 5 min 1.5 s: inside the SDK cache's 5-minute window after 1.5 s, so it renews.
	sts := bedrocktest.StartSTS(t, fake, role, "ext-1", 5*time.Minute+1500*time.Millisecond)
	t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)
	b := build(t, fake.URL, map[string]string{OptRoleARN: role, OptExternalID: "ext-1", OptCredentialRefresh: "50ms"}, nil)
	ctx := ctxT(t, 20*time.Second)
	req := &pb.GenerateRequest{Model: "claude", Prompt: "hello", MaxTokens: 3}
	if _, err := b.Generate(ctx, req); err != nil {
		t.Fatalf("with the role's credentials: %v", err)
	}
	testwait.For(t, 10*time.Second, "the role's credentials renewed twice in the background", func() bool { return sts.Issued.Load() >= 3 })
	last := sts.Last()
	if _, err := b.Generate(ctx, req); err != nil || fake.BadSignatures.Load() != 0 || sts.Refused.Load() != 0 {
		t.Fatalf("after renewal: %v (%d bad signatures at Bedrock, %d refusals at STS)", err, fake.BadSignatures.Load(), sts.Refused.Load())
	}
	if fake.Used(last.AccessKeyID) == 0 && fake.Used(sts.Last().AccessKeyID) == 0 {
		t.Fatal("the call was not signed with the renewed credentials")
	}

	wrong := build(t, fake.URL, map[string]string{OptRoleARN: role, OptExternalID: "not-ext-1", OptCredentialRefresh: "50ms"}, nil)
	testwait.For(t, 10*time.Second, "the refused AssumeRole failing the health check", func() bool { return wrong.Check(ctx) != nil })
	if _, err := wrong.Generate(ctx, req); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "AWS credentials") {
		t.Fatalf("wrong external id: %v, want UNAVAILABLE naming the AWS credentials", err)
	}
}

// Tools through Converse: tools and tool_choice become toolConfig, the
// model's toolUse comes back as tool calls (whole, or streamed as deltas
// whose pieces join into the arguments) with finish TOOL_CALLS, and the
// next turn sends the assistant's calls as toolUse blocks and the results
// as toolResult blocks. What Converse cannot honour is refused by name.
func TestBedrockToolCalls(t *testing.T) {
	awsEnv(t, bedrocktest.AccessKeyID, bedrocktest.SecretAccessKey)
	fake := bedrocktest.Start(t, bedrocktest.Options{})
	b := build(t, fake.URL, nil, nil)
	if !b.Capabilities().Tools {
		t.Fatal("the bedrock adapter does not claim tools")
	}
	ctx := ctxT(t, 20*time.Second)
	tools := []*pb.Tool{{Name: "lookup", Description: "Look a part up.", ParametersJson: `{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}`}}
	ask := []*pb.ChatMessage{{Role: "user", Content: "What is a frog in a railway?"}}
	req := &pb.GenerateRequest{Model: "claude", MaxTokens: 50, Messages: ask, Tools: tools, ToolChoice: &pb.ToolChoice{Mode: "auto"}}
	resp, err := b.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetToolCalls()) != 1 || resp.ToolCalls[0].GetName() != "lookup" || resp.ToolCalls[0].GetId() == "" ||
		!json.Valid([]byte(resp.ToolCalls[0].GetArguments())) || resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Fatalf("unary tool call: %+v", resp)
	}
	if body := string(fake.LastBody()); !strings.Contains(body, `"toolConfig"`) || !strings.Contains(body, `"auto":{}`) || !strings.Contains(body, `"name":"lookup"`) {
		t.Fatalf("toolConfig missing from %s", body)
	}
	chunks := backendtest.Stream(t, ctx, b, req)
	var args strings.Builder
	var id, name string
	for _, c := range chunks {
		for _, d := range c.GetToolCalls() {
			if d.GetIndex() != 0 {
				t.Fatalf("tool call index %d", d.GetIndex())
			}
			id, name = id+d.GetId(), name+d.GetName()
			args.WriteString(d.GetArguments())
		}
	}
	if id != resp.ToolCalls[0].GetId() || name != "lookup" || args.String() != resp.ToolCalls[0].GetArguments() ||
		chunks[len(chunks)-1].GetFinishReason() != pb.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Fatalf("streamed call %q %q %q, unary %+v", id, name, args.String(), resp.ToolCalls[0])
	}
	// The result goes back: the model answers in text.
	next := append(append([]*pb.ChatMessage{}, ask...),
		&pb.ChatMessage{Role: "assistant", ToolCalls: resp.ToolCalls},
		&pb.ChatMessage{Role: "tool", ToolCallId: resp.ToolCalls[0].GetId(), Content: "A frog is where two rails cross."})
	after, err := b.Generate(ctx, &pb.GenerateRequest{Model: "claude", MaxTokens: 5, Messages: next, Tools: tools})
	if err != nil || after.GetText() == "" || len(after.GetToolCalls()) != 0 || after.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("after the tool result: %+v %v", after, err)
	}
	if body := string(fake.LastBody()); !strings.Contains(body, `"toolUse":{`) || !strings.Contains(body, `"toolResult":{`) {
		t.Fatalf("tool turns missing from %s", body)
	}
	forced := &pb.GenerateRequest{Model: "claude", MaxTokens: 50, Messages: ask, Tools: append(tools, &pb.Tool{Name: "other"}),
		ToolChoice: &pb.ToolChoice{Mode: "function", FunctionName: "other"}}
	if r, err := b.Generate(ctx, forced); err != nil || r.GetToolCalls()[0].GetName() != "other" || !strings.Contains(string(fake.LastBody()), `"tool":{"name":"other"}`) {
		t.Fatalf("forced tool: %+v %v", r, err)
	}
	no := false
	for _, bad := range []struct {
		req   *pb.GenerateRequest
		field string
	}{
		{&pb.GenerateRequest{Model: "claude", MaxTokens: 5, Messages: ask, Tools: tools, ParallelToolCalls: &no}, "parallel_tool_calls"},
		{&pb.GenerateRequest{Model: "claude", MaxTokens: 5, Messages: next}, "tools"},
		{&pb.GenerateRequest{Model: "claude", MaxTokens: 5, Messages: ask, Tools: []*pb.Tool{{Name: "x", ParametersJson: "{"}}}, "tools[0].parameters"},
	} {
		if _, err := b.Generate(ctx, bad.req); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), bad.field) {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT naming it", bad.field, err)
		}
	}
}
