package router_test

// A mixed fleet behind a real switchyard on loopback: a self-hosted
// llama-server pool and managed Bedrock and Vertex AI pools (local fakes
// that verify SigV4 and OAuth tokens, driven by the clouds' SDKs) serving
// one model name, each under its own provider's name.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/backends"
	"github.com/switchyard-dev/switchyard/backends/bedrock"
	"github.com/switchyard-dev/switchyard/backends/bedrock/bedrocktest"
	"github.com/switchyard-dev/switchyard/backends/openai"
	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	"github.com/switchyard-dev/switchyard/backends/vertex"
	"github.com/switchyard-dev/switchyard/backends/vertex/vertextest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router"
	"github.com/switchyard-dev/switchyard/router/config"
	"github.com/switchyard-dev/switchyard/router/routertest"
)

// The demo fleet file router/testdata/mixed-fleet.yaml routes around a
// throttling Bedrock pool: while Bedrock answers ThrottlingException every
// call is served by Vertex AI or the llama-server pool without an error
// reaching the client, Bedrock is asked again only as its back-off runs
// out, it is never ejected (throttling is a shortage, not a failure), and
// traffic comes back to it when its quota does.
func TestMixedFleetRoutesAroundAThrottlingBedrockPool(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", bedrocktest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", bedrocktest.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "aws-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "aws-credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	llama := llamatest.Start(t, llamatest.Options{Slots: 2})
	aws := bedrocktest.Start(t, bedrocktest.Options{})
	gcp := vertextest.Start(t, vertextest.Options{})
	src, err := os.ReadFile(filepath.Join("testdata", "mixed-fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.NewReplacer("{{BEDROCK_URL}}", aws.URL, "{{VERTEX_URL}}", gcp.URL,
		"{{VERTEX_KEY_FILE}}", gcp.ServiceAccountFile(t), "{{LLAMA_URL}}", llama.URL).Replace(string(src))
	fleet, err := config.Parse([]byte(yaml), "mixed-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg := backends.NewRegistry()
	openai.Register(reg, openai.Options{})
	bedrock.Register(reg, bedrock.Options{})
	vertex.Register(reg, vertex.Options{})
	r := routertest.Start(t, routertest.Options{Router: router.Options{Fleet: fleet, Backends: reg,
		AdminTokens: []config.AdminToken{{Name: "view", Role: "viewer", SHA256: router.HashToken("view-secret")}}}})
	f := &realFleet{rt: r.Server, client: r.Inference, admin: r.Admin}

	ctx := ctxT(t, 90*time.Second)
	call := func(i int) (pool string, tried []string) {
		r := &pb.GenerateRequest{Model: "chat", MaxTokens: 6, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"},
			Messages: []*pb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Name a part of a railway."}}}
		if i%2 == 0 {
			resp, err := f.client.Generate(ctx, r)
			if err != nil || resp.GetUsage().GetOutputTokens() < 1 {
				t.Fatalf("call %d failed for the client: %v %v", i, resp, err)
			}
			return resp.GetRoute().GetPool(), resp.GetRoute().GetPoolsTried()
		}
		_, tokens, last, err := stream(ctx, f.client, r)
		if err != nil || tokens < 1 {
			t.Fatalf("stream %d failed for the client: %d tokens, %v", i, tokens, err)
		}
		return last.GetRoute().GetPool(), last.GetRoute().GetPoolsTried()
	}
	for i := range 4 {
		if pool, _ := call(i); pool != "bedrock-use1" {
			t.Fatalf("with quota: call %d served by %s, want the nearest pool bedrock-use1", i, pool)
		}
	}
	if aws.BadSignatures.Load() != 0 || aws.Calls.Load() < 4 {
		t.Fatalf("bedrock fake: %d calls, %d bad signatures", aws.Calls.Load(), aws.BadSignatures.Load())
	}

	aws.Throttle.Store(true)
	before, start := aws.Calls.Load(), time.Now()
	served := map[string]int{}
	movedOn, triedBedrock := false, 0
	for i := range 12 {
		pool, tried := call(i)
		if pool == "bedrock-use1" {
			t.Fatalf("throttled: call %d served by bedrock-use1", i)
		}
		served[pool]++
		if len(tried) > 1 && tried[0] == "bedrock-use1" {
			movedOn = true
			triedBedrock++
		}
	}
	if !movedOn && aws.Calls.Load() == before {
		t.Fatal("no call was offered to the throttling pool: the test did not exercise throttling")
	}
	// Asked about once per back-off (500 ms doubling to 2 s), not once per call.
	if n, most := aws.Calls.Load()-before, 2+int64(time.Since(start)/(500*time.Millisecond)); n < 1 || n > most {
		t.Fatalf("the throttling pool was asked %d times in %s, want 1 to %d", n, time.Since(start), most)
	}
	// The policy sees the pool's load report (no capacity while it backs
	// off) and stops offering it calls, as for a pool that lost chips.
	if most := 2 + int(time.Since(start)/(500*time.Millisecond)); triedBedrock > most {
		t.Fatalf("%d of 12 calls were offered to the throttling pool first in %s, want at most %d: the policy did not shift traffic", triedBedrock, time.Since(start), most)
	}
	if served["vertex-use4"]+served["llama-usw2"] != 12 || gcp.Unauthorized.Load() != 0 {
		t.Fatalf("served while Bedrock throttled: %v (vertex refused %d tokens)", served, gcp.Unauthorized.Load())
	}
	t.Logf("while Bedrock throttled: served %v; %d of 12 calls tried Bedrock first; Bedrock asked %d times in %s", served, triedBedrock, aws.Calls.Load()-before, time.Since(start).Round(time.Millisecond))
	if p := f.pools(t)["bedrock-use1"]; p.Ejected {
		t.Fatal("the throttling pool was ejected: throttling must be a shortage, not a failure")
	}

	aws.Throttle.Store(false)
	eventually(t, 15*time.Second, "traffic back on bedrock-use1 once its quota returns", func() bool {
		pool, _ := call(0)
		return pool == "bedrock-use1"
	})
	f.idle(t)
}
