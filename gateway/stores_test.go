package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
	"github.com/switchyard-dev/switchyard/router/capacity/redistest"
)

// One fleet file, two regions, each pool's budget homed in its region's
// Redis: the router (leased counting, the default) keeps each pool's blocks
// in its own home, given by url (us) or by an environment variable (eu), and
// --redis is the default home of the pools in no store's region.
func TestCapacityStoresByRegion(t *testing.T) {
	us, eu, def := redistest.StartServer(t), redistest.StartServer(t), redistest.StartServer(t)
	for _, s := range []*redistest.Server{us, eu, def} {
		if err := redistest.Establish(s.Addr(), ""); err != nil {
			t.Fatal(err)
		}
	}
	backend := startBackend(t, constBackend{})
	t.Setenv("SWITCHYARD_TEST_EU_REDIS", eu.URL())
	fleet := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(fleet, fmt.Appendf(nil, `models:
  - {name: m, max_input_tokens: 4096, max_output_tokens: 64}
pools:
  - {name: use1, cloud: aws, region: us-east-1, accelerator: h100, models: [m], endpoints: ["%[1]s"], limits: {max_concurrent: 8}}
  - {name: euw1, cloud: aws, region: eu-west-1, accelerator: h100, models: [m], endpoints: ["%[1]s"], limits: {max_concurrent: 8}}
  - {name: apne1, cloud: aws, region: ap-northeast-1, accelerator: h100, models: [m], endpoints: ["%[1]s"], limits: {max_concurrent: 8}}
capacity:
  stores:
    - {name: us, url: "%[2]s", regions: [us-east-1]}
    - {name: eu, url_env: SWITCHYARD_TEST_EU_REDIS, regions: [eu-west-1]}
`, backend, us.URL()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startRouter(t, "--config", fleet, "--redis", def.URL(), "--block-refresh", "100ms")
	cl := pb.NewInferenceClient(dial(t, addr))
	for _, region := range []string{"us-east-1", "eu-west-1", "ap-northeast-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cl.Generate(ctx, &pb.GenerateRequest{Model: "m", Prompt: "hi", MaxTokens: 2, Routing: &pb.RoutingHints{CallerRegion: region}})
		cancel()
		if err != nil {
			t.Fatalf("call from %s: %v", region, err)
		}
		if got := resp.GetRoute().GetRegion(); got != region {
			t.Fatalf("call from %s served in %s", region, got)
		}
	}
	for _, c := range []struct {
		srv  *redistest.Server
		pool string
	}{{us, "use1"}, {eu, "euw1"}, {def, "apne1"}} {
		for _, other := range []string{"use1", "euw1", "apne1"} {
			n, err := redistest.Do(c.srv.Addr(), "EXISTS", "sy:{pool:"+other+"}:blocks")
			if err != nil {
				t.Fatal(err)
			}
			want := other == c.pool
			if has := strings.Contains(n, "1"); has != want {
				t.Errorf("the %s store holds pool %s's blocks: %v, want %v", c.pool, other, has, want)
			}
		}
	}
}
