package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	openaisdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// The fleet `make realfleet` serves (deploy/realfleet/fleet.yaml), with three
// real llama-servers on the ports the test gives them, answers the README's
// client session: a unary call from us-east-1 served in us-east-1, an EU-only
// stream served in the EU, and a chat.
func TestRealFleetServesTheReadmeSession(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "deploy", "realfleet", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fleet := string(src)
	for i, port := range []string{"8081", "8082", "8083"} {
		s := llamatest.Start(t, llamatest.Options{Slots: 2})
		if !strings.Contains(fleet, "127.0.0.1:"+port) {
			t.Fatalf("fleet.yaml has no pool on port %s (pool %d)", port, i)
		}
		fleet = strings.Replace(fleet, "http://127.0.0.1:"+port, s.URL, 1)
	}
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(fleet), 0o600); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := lis.Addr().String()
	_ = lis.Close()
	addr, stop := startRouter(t, "--config", path, "--http-listen", httpAddr)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("router: %v", err)
		}
	}()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewInferenceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp, err := c.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hello world", MaxTokens: 8, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Route.GetPool() != "aws-use1-llama" || resp.Usage.GetOutputTokens() != 8 || resp.Text == "" {
		t.Fatalf("unary from us-east-1: %+v", resp)
	}
	s, err := c.GenerateStream(ctx, &pb.GenerateRequest{Model: "llama-3.1-8b", Prompt: "hello", MaxTokens: 20, Routing: &pb.RoutingHints{Residency: "eu"}})
	if err != nil {
		t.Fatal(err)
	}
	var tokens int32
	var last *pb.GenerateChunk
	for {
		ch, err := s.Recv()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatal(err)
			}
			break
		}
		tokens += ch.Tokens
		last = ch
	}
	if tokens != 20 || last.GetRoute().GetPool() != "azure-weu-llama" || last.GetFinishReason() != pb.FinishReason_FINISH_REASON_LENGTH {
		t.Fatalf("EU stream: %d tokens, last %+v", tokens, last)
	}
	chat, err := c.Generate(ctx, &pb.GenerateRequest{Model: "llama-3.3-70b", MaxTokens: 6, Routing: &pb.RoutingHints{CallerRegion: "us-central1"},
		Messages: []*pb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "What is a switchyard?"}},
		Sampling: &pb.SamplingParameters{Temperature: ptrTo[float32](0.7), Stop: []string{"\n\n"}}})
	if err != nil {
		t.Fatal(err)
	}
	if chat.Route.GetPool() != "gcp-usc1-llama" || chat.Usage.GetOutputTokens() < 1 {
		t.Fatalf("chat from us-central1: %s", fmt.Sprint(chat))
	}

	// The whole real path: the OpenAI SDK, switchyard's HTTP front door, the
	// openai adapter, llama-server.
	sdk := openaisdk.NewClient(option.WithBaseURL("http://"+httpAddr+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	comp, err := sdk.Chat.Completions.New(ctx, openaisdk.ChatCompletionNewParams{
		Model:     "llama-3.3-70b",
		Messages:  []openaisdk.ChatCompletionMessageParamUnion{openaisdk.UserMessage("where is my call served?")},
		MaxTokens: openaisdk.Int(7),
	}, option.WithHeader("X-Switchyard-Residency", "eu"))
	if err != nil {
		t.Fatalf("OpenAI SDK through the front door: %v", err)
	}
	if comp.Usage.CompletionTokens != 7 || len(comp.Choices) != 1 || comp.Choices[0].Message.Content == "" || !strings.Contains(comp.RawJSON(), `"pool":"azure-weu-llama"`) {
		t.Fatalf("SDK chat completion: %s", comp.RawJSON())
	}
}

func ptrTo[T any](v T) *T { return &v }
