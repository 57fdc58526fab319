package router_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/internal/testwait"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
)

func usEU() []*simPool {
	return []*simPool{
		{name: "aws-use1", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4},
		{name: "gcp-usc1", cloud: "gcp", region: "us-central1", accel: "tpu-v6e", limit: 4},
		{name: "azure-weu", cloud: "azure", region: "westeurope", accel: "h100", limit: 4, models: []string{"m", "other"}},
	}
}

func TestGenerateAndStreamFillTheRoute(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	resp, err := f.client.Generate(ctx, req("us-east-1", 16))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetRoute()
	if r.GetPool() != "aws-use1" || r.GetCloud() != "aws" || r.GetRegion() != "us-east-1" || r.GetAccelerator() != "h100" || r.GetAttempts() != 1 {
		t.Fatalf("route %v: want aws-use1 (caller's region) in one attempt", r)
	}
	if resp.GetUsage().GetOutputTokens() != 16 || resp.GetRequestId() == "" || resp.GetText() == "" {
		t.Fatalf("response %v", resp)
	}
	text, tokens, last, err := stream(ctx, f.client, req("westeurope", 24))
	if err != nil {
		t.Fatal(err)
	}
	if tokens != 24 || last.GetUsage().GetOutputTokens() != 24 || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("stream: %d tokens, final %v", tokens, last)
	}
	if last.GetRoute().GetPool() != "azure-weu" || text == "" {
		t.Fatalf("stream route %v: want azure-weu", last.GetRoute())
	}
	models, err := f.client.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil || len(models.Models) != 2 || len(models.Models[0].Placements) != 3 {
		t.Fatalf("ListModels: %v %v", models, err)
	}
}

func TestBadRequestsGetClearStatuses(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	long := strings.Repeat("x", 1000*4+1)
	chat := []*pb.ChatMessage{{Role: "user", Content: "hi"}}
	cases := []struct {
		name  string
		req   *pb.GenerateRequest
		code  codes.Code
		field string
	}{
		{"unknown model", &pb.GenerateRequest{Model: "nope", Prompt: "p", MaxTokens: 1}, codes.NotFound, "nope"},
		{"no model", &pb.GenerateRequest{Prompt: "p", MaxTokens: 1}, codes.InvalidArgument, "model"},
		{"empty prompt", &pb.GenerateRequest{Model: "m", MaxTokens: 1}, codes.InvalidArgument, "prompt"},
		{"zero max_tokens", &pb.GenerateRequest{Model: "m", Prompt: "p"}, codes.InvalidArgument, "max_tokens"},
		{"max_tokens over the model limit", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 501}, codes.InvalidArgument, "max_tokens"},
		{"oversized prompt", &pb.GenerateRequest{Model: "m", Prompt: long, MaxTokens: 1}, codes.InvalidArgument, "prompt"},
		{"unknown residency", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Routing: &pb.RoutingHints{Residency: "mars"}}, codes.InvalidArgument, "routing.residency"},
		{"bad priority", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Priority: 9}, codes.InvalidArgument, "priority"},
		{"bad request id", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, RequestId: "a b"}, codes.InvalidArgument, "request_id"},
		{"prompt and messages", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Messages: []*pb.ChatMessage{{Role: "user", Content: "hi"}}}, codes.InvalidArgument, "messages"},
		{"bad role", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: []*pb.ChatMessage{{Role: "root", Content: "hi"}}}, codes.InvalidArgument, "messages[0].role"},
		{"oversized chat", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: []*pb.ChatMessage{{Role: "user", Content: long}}}, codes.InvalidArgument, "messages"},
		{"temperature out of range", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Sampling: &pb.SamplingParameters{Temperature: proto.Float32(3)}}, codes.InvalidArgument, "sampling.temperature"},
		{"oversized continuation", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 2, Continuation: &pb.Continuation{GeneratedText: long, GeneratedTokens: 1}}, codes.InvalidArgument, "continuation.generated_text"},
		{"tools with a prompt", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Tools: []*pb.Tool{{Name: "f"}}}, codes.InvalidArgument, "tools"},
		{"bad tool name", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, Tools: []*pb.Tool{{Name: "no spaces"}}}, codes.InvalidArgument, "tools[0].name"},
		{"tool parameters not an object", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, Tools: []*pb.Tool{{Name: "f", ParametersJson: "[1]"}}}, codes.InvalidArgument, "tools[0].parameters_json"},
		{"tool_choice without tools", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, ToolChoice: &pb.ToolChoice{Mode: "auto"}}, codes.InvalidArgument, "tool_choice"},
		{"tool_choice unknown mode", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, Tools: []*pb.Tool{{Name: "f"}}, ToolChoice: &pb.ToolChoice{Mode: "always"}}, codes.InvalidArgument, "tool_choice.mode"},
		{"tool_choice names no tool", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, Tools: []*pb.Tool{{Name: "f"}}, ToolChoice: &pb.ToolChoice{Mode: "function", FunctionName: "g"}}, codes.InvalidArgument, "tool_choice.function_name"},
		{"parallel_tool_calls without tools", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: chat, ParallelToolCalls: proto.Bool(false)}, codes.InvalidArgument, "parallel_tool_calls"},
		{"tool turn without its call id", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: []*pb.ChatMessage{{Role: "tool", Content: "42"}}}, codes.InvalidArgument, "messages[0].tool_call_id"},
		{"tool calls on a user turn", &pb.GenerateRequest{Model: "m", MaxTokens: 1, Messages: []*pb.ChatMessage{{Role: "user", Content: "x", ToolCalls: []*pb.ToolCall{{Id: "1", Name: "f"}}}}}, codes.InvalidArgument, "messages[0].tool_calls"},
		{"unknown response_format", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, ResponseFormat: &pb.ResponseFormat{Type: "yaml"}}, codes.InvalidArgument, "response_format.type"},
		{"json_schema without a schema", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, ResponseFormat: &pb.ResponseFormat{Type: "json_schema", SchemaName: "s"}}, codes.InvalidArgument, "response_format.schema_json"},
		{"top_logprobs without logprobs", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, TopLogprobs: proto.Int32(2)}, codes.InvalidArgument, "top_logprobs"},
		{"top_logprobs over 20", &pb.GenerateRequest{Model: "m", Prompt: "p", MaxTokens: 1, Logprobs: true, TopLogprobs: proto.Int32(21)}, codes.InvalidArgument, "top_logprobs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.Generate(ctx, c.req)
			if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.field) {
				t.Fatalf("unary: got %v, want %v naming %q", err, c.code, c.field)
			}
			// INVALID_ARGUMENT names the field in an errdetails.BadRequest too.
			if c.code == codes.InvalidArgument && !slices.Contains(violations(err), c.field) {
				t.Fatalf("unary: BadRequest fields %q, want %q among them", violations(err), c.field)
			}
			_, _, _, err = stream(ctx, f.client, c.req)
			if status.Code(err) != c.code {
				t.Fatalf("stream: got %v, want %v", err, c.code)
			}
			if c.code == codes.InvalidArgument && !slices.Contains(violations(err), c.field) {
				t.Fatalf("stream: BadRequest fields %q, want %q among them", violations(err), c.field)
			}
		})
	}
}

// violations are the field paths of err's errdetails.BadRequest, in order.
func violations(err error) []string {
	var out []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField())
			}
		}
	}
	return out
}

func TestUnknownModelErrorDoesNotEchoALongName(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	_, err := f.client.Generate(ctx, &pb.GenerateRequest{Model: strings.Repeat("z", 1<<20), Prompt: "p", MaxTokens: 1})
	if status.Code(err) != codes.NotFound || len(status.Convert(err).Message()) > 200 {
		t.Fatalf("1 MiB model name: %v (%d bytes of message), want a short NOT_FOUND", status.Code(err), len(status.Convert(err).Message()))
	}
}

func TestChatMessagesAreServedAndCounted(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	r := &pb.GenerateRequest{Model: "m", MaxTokens: 4, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"},
		Messages: []*pb.ChatMessage{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello there"}},
		Sampling: &pb.SamplingParameters{Temperature: proto.Float32(0.2), Stop: []string{"\n"}}}
	resp, err := f.client.Generate(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetText() == "" || resp.GetUsage().GetInputTokens() == 0 {
		t.Fatalf("chat call: %v, want text and usage", resp)
	}
	_, _, last, err := stream(ctx, f.client, r)
	if err != nil {
		t.Fatal(err)
	}
	// The simulator counts the chat it was sent, flattened ("system: be
	// brief\nuser: hello there\nassistant:"), as 4 bytes a token; the client
	// is told the backend's count, unary and streamed alike.
	want := int32(backends.EstimateTokens(backends.PromptText(r)))
	if got := last.GetUsage().GetInputTokens(); got != want || resp.GetUsage().GetInputTokens() != want {
		t.Fatalf("input tokens: stream %d, unary %d, want the simulator's count %d", got, resp.GetUsage().GetInputTokens(), want)
	}
}

func TestDeadlineShorterThanTheWork(t *testing.T) {
	slow := &simPool{name: "slow", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4, timeScale: 1}
	f := startFleet(t, fleetOpts{}, slow)
	ctx := ctxT(t, 150*time.Millisecond)
	_, err := f.client.Generate(ctx, req("us-east-1", 400)) // ~400 decode steps of ~15ms: seconds of work
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
	}
	ctx = ctxT(t, 150*time.Millisecond)
	_, _, _, err = stream(ctx, f.client, req("us-east-1", 400))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stream: got %v, want DEADLINE_EXCEEDED", err)
	}
}

func TestFailoverWhenAPoolIsKilled(t *testing.T) {
	pools := usEU()
	f := startFleet(t, fleetOpts{}, pools...)
	ctx := ctxT(t, 20*time.Second)
	f.pools["aws-use1"].kill()
	for i := 0; i < 10; i++ {
		resp, err := f.client.Generate(ctx, req("us-east-1", 8))
		if err != nil {
			t.Fatalf("call %d failed although other pools are up: %v", i, err)
		}
		if p := resp.GetRoute().GetPool(); p == "aws-use1" {
			t.Fatalf("call %d served by the killed pool", i)
		}
		_, _, last, err := stream(ctx, f.client, req("us-east-1", 8))
		if err != nil {
			t.Fatalf("stream %d failed although other pools are up: %v", i, err)
		}
		// Same geography first: us-central1 before westeurope.
		if p := last.GetRoute().GetPool(); p != "gcp-usc1" {
			t.Fatalf("stream %d went to %s, want gcp-usc1 (next closest)", i, p)
		}
	}
}

func TestResidencyIsHard(t *testing.T) {
	f := startFleet(t, fleetOpts{}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	eu := req("us-east-1", 8)
	eu.Routing.Residency = "eu"
	resp, err := f.client.Generate(ctx, eu)
	if err != nil || resp.GetRoute().GetPool() != "azure-weu" {
		t.Fatalf("EU request from a US caller: %v %v, want azure-weu", resp.GetRoute(), err)
	}
	f.pools["azure-weu"].kill()
	_, err = f.client.Generate(ctx, eu)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "azure-weu") {
		t.Fatalf("EU request with every EU pool down: %v, want UNAVAILABLE naming the EU pool", err)
	}
	for _, name := range []string{"aws-use1", "gcp-usc1"} {
		if n := f.pools[name].pool.Stats().Served; n != 0 {
			t.Fatalf("US pool %s served %d EU requests", name, n)
		}
	}
}

func TestStreamContinuesOnAnotherPoolWhenAPoolDiesMidStream(t *testing.T) {
	a := &simPool{name: "a", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4, timeScale: 5}
	b := &simPool{name: "b", cloud: "gcp", region: "us-central1", accel: "h100", limit: 4, timeScale: 50}
	f := startFleet(t, fleetOpts{}, a, b)
	ctx := ctxT(t, 20*time.Second)
	s, err := f.client.GenerateStream(ctx, req("us-east-1", 120))
	if err != nil {
		t.Fatal(err)
	}
	var tokens int32
	var text strings.Builder
	var last *pb.GenerateChunk
	broke := false
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream failed after %d tokens: %v", tokens, err)
		}
		tokens += ch.Tokens
		text.WriteString(ch.Text)
		last = ch
		if tokens >= 20 && !broke {
			broke = true
			if err := a.pool.SetFault(&pb.Fault{Outage: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tokens != 120 || last.GetUsage().GetOutputTokens() != 120 {
		t.Fatalf("got %d tokens (usage %v), want all 120", tokens, last.GetUsage())
	}
	r := last.GetRoute()
	if r.GetPool() != "b" || len(r.GetPoolsTried()) != 2 || r.GetAttempts() != 2 {
		t.Fatalf("route %v: want continued on b after a", r)
	}
	if !strings.HasSuffix(text.String(), " ") || strings.Count(text.String(), " ") != 120 {
		t.Fatalf("text has %d words, want 120", strings.Count(text.String(), " "))
	}
}

// TestStreamOnRouteNamesEachAttemptsPool: CallInfo.OnRoute
// names the pool of each attempt before that attempt's first chunk reaches
// send — the first pool before any token, the second when the stream is
// continued on it — and the final chunk's route agrees.
func TestStreamOnRouteNamesEachAttemptsPool(t *testing.T) {
	a := &simPool{name: "a", cloud: "aws", region: "us-east-1", accel: "h100", limit: 4, timeScale: 5}
	b := &simPool{name: "b", cloud: "gcp", region: "us-central1", accel: "tpu-v6e", limit: 4, timeScale: 50}
	f := startFleet(t, fleetOpts{}, a, b)
	var events []string // "route POOL attempts tried" and "tokens N" in the order they happened
	var routes []*pb.Route
	var tokens int32
	var last *pb.GenerateChunk
	info := router.CallInfo{RPC: "test", OnRoute: func(r *pb.Route) {
		routes = append(routes, r)
		events = append(events, fmt.Sprintf("route %s %d %s", r.GetPool(), r.GetAttempts(), strings.Join(r.GetPoolsTried(), ",")))
	}}
	err := f.rt.CompleteStreamAs(ctxT(t, 20*time.Second), info, req("us-east-1", 120), func(ch *pb.GenerateChunk) error {
		tokens += ch.Tokens
		last = ch
		events = append(events, fmt.Sprintf("tokens %d", tokens))
		if tokens >= 20 && !a.pool.Fault().GetOutage() {
			if err := a.pool.SetFault(&pb.Fault{Outage: true}); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || events[0] != "route a 1 a" {
		t.Fatalf("events %q: want the route of a first, then one more", events)
	}
	if r := routes[0]; r.GetCloud() != "aws" || r.GetRegion() != "us-east-1" || r.GetAccelerator() != "h100" {
		t.Fatalf("first route %v", r)
	}
	second := slices.Index(events, "route b 2 a,b")
	if second < 0 || !strings.HasPrefix(events[second-1], "tokens ") || routes[1].GetRegion() != "us-central1" || routes[1].GetAccelerator() != "tpu-v6e" {
		t.Fatalf("events %q: want b's route after a's tokens", events)
	}
	if fin := last.GetRoute(); tokens != 120 || fin.GetPool() != "b" || fin.GetAttempts() != 2 {
		t.Fatalf("%d tokens, final route %v", tokens, fin)
	}
}

func TestNoHeadroomWaitsThenResourceExhaustedWithRetryInfo(t *testing.T) {
	one := &simPool{name: "one", cloud: "aws", region: "us-east-1", accel: "h100", limit: 1, timeScale: 1}
	f := startFleet(t, fleetOpts{}, one)
	ctx := ctxT(t, 20*time.Second)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = f.client.Generate(ctx, req("us-east-1", 200)) }() // holds the only slot for seconds
	testwait.For(t, 5*time.Second, "the long call running in the only slot", func() bool { return one.pool.Stats().Running > 0 })
	start := time.Now()
	_, err := f.client.Generate(ctx, req("us-east-1", 8))
	waited := time.Since(start)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED", err)
	}
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		if x, ok := d.(*errdetails.RetryInfo); ok {
			ri = x
		}
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("no RetryInfo in %v", st.Details())
	}
	if waited < 250*time.Millisecond {
		t.Fatalf("refused after %v: the call should wait up to queue_max_wait (300ms) first", waited)
	}
	if hw := one.pool.Stats().MaxRunningSeen; hw > 1 {
		t.Fatalf("pool ran %d at once, limit 1", hw)
	}
	f.rt.Close()
	wg.Wait()
}

func TestRouterRegionIsTheDefaultCallerRegion(t *testing.T) {
	f := startFleet(t, fleetOpts{region: "westeurope"}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	for i := 0; i < 5; i++ {
		resp, err := f.client.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "no hints", MaxTokens: 4})
		if err != nil || resp.GetRoute().GetPool() != "azure-weu" {
			t.Fatalf("call without caller_region on a westeurope router: %v %v, want azure-weu", resp.GetRoute(), err)
		}
	}
	// An explicit caller region still wins.
	resp, err := f.client.Generate(ctx, req("us-east-1", 4))
	if err != nil || resp.GetRoute().GetPool() != "aws-use1" {
		t.Fatalf("explicit caller region: %v %v", resp.GetRoute(), err)
	}
}

func TestPoolThatLostChipsGetsNoMoreThanItCanRun(t *testing.T) {
	shrunk := &simPool{name: "shrunk", cloud: "aws", region: "us-east-1", accel: "h100", limit: 16, timeScale: 2}
	other := &simPool{name: "other", cloud: "gcp", region: "us-east4", accel: "h100", limit: 16, timeScale: 2}
	f := startFleet(t, fleetOpts{queueWait: "10s"}, shrunk, other)
	// The pool lost three quarters of its chips: it can run 4 at once.
	if err := shrunk.pool.SetFault(&pb.Fault{CapacityLoss: 0.75}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	// Prime a load report.
	if _, err := f.client.Generate(ctx, req("us-east-1", 2)); err != nil {
		t.Fatal(err)
	}
	shrunk.pool.ResetHighWater()
	otherBefore := other.pool.Stats().Served
	var wg sync.WaitGroup
	// More calls than the two pools can run: some wait in the router's queue.
	const calls = 26
	errs := make(chan error, calls)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.client.Generate(ctx, req("us-east-1", 60))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("call failed: %v", err)
		}
	}
	// The shrunk pool never held more than its one-call queue allowance
	// waiting: calls beyond what it can run waited in the router for the next
	// free slot anywhere (without load reports it would have taken every call
	// the healthy pool could not, and queued them itself).
	if q := shrunk.pool.Stats().MaxQueuedSeen; q > 1 {
		t.Fatalf("the shrunk pool queued %d calls, want at most 1", q)
	}
	if n := other.pool.Stats().Served - otherBefore; n < 15 {
		t.Fatalf("the healthy pool served only %d of %d calls", n, calls)
	}
}

func TestTenantsNeedAKnownAPIKeyAndKeepToTheirBudget(t *testing.T) {
	tenants := "tenants:\n  - {name: acme, api_key_sha256: [" + router.HashToken("acme-key") + "], requests_per_minute: 3}\n"
	f := startFleet(t, fleetOpts{topLevel: tenants}, usEU()...)
	ctx := ctxT(t, 10*time.Second)
	if _, err := f.client.Generate(ctx, req("us-east-1", 4)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no API key: %v, want UNAUTHENTICATED", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "x-api-key", "wrong")
	if _, err := f.client.Generate(bad, req("us-east-1", 4)); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "unknown API key") {
		t.Fatalf("unknown API key: %v, want UNAUTHENTICATED", err)
	}
	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer acme-key")
	for i := 0; i < 3; i++ {
		if _, err := f.client.Generate(good, req("us-east-1", 4)); err != nil {
			t.Fatalf("call %d within the tenant's budget: %v", i, err)
		}
	}
	_, err := f.client.Generate(good, req("us-east-1", 4))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "acme") || !strings.Contains(st.Message(), "requests_per_minute") {
		t.Fatalf("4th call in a minute: %v, want RESOURCE_EXHAUSTED naming the tenant budget", err)
	}
	var retry bool
	for _, d := range st.Details() {
		_, retry = d.(*errdetails.RetryInfo)
	}
	if !retry {
		t.Fatal("quota refusal without RetryInfo")
	}
}

func TestTenantQuotaRefusesWithoutWaiting(t *testing.T) {
	tenants := "tenants:\n  - {name: acme, api_key_sha256: [" + router.HashToken("acme-key") + "], requests_per_minute: 1}\n"
	f := startFleet(t, fleetOpts{topLevel: tenants, queueWait: "5s"}, usEU()...)
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), "x-api-key", "acme-key")
	if _, err := f.client.Generate(ctx, req("us-east-1", 4)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := f.client.Generate(ctx, req("us-east-1", 4))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the tenant budget: %v", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("refusal took %v: a spent tenant budget must not wait in the queue (max wait 5s)", waited)
	}
}
