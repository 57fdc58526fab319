package router_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/backends/openai/llamatest"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Prefix-cache affinity on real model servers: three llama-servers (five
// slots each, prompt caching on) as pools in one region behind a real
// switchyard. Calls from five conversations — each a distinct two-block
// prefix and a new tail — arrive interleaved, one at a time. The cached
// tokens the servers themselves report (usage.prompt_tokens_details.
// cached_tokens, read by the openai adapter) are summed per policy. Every
// server has room for every conversation, so what differs is how often a
// prefix is computed: the default sends a conversation back to the server
// that holds it (one miss per conversation: at most 20 of 25 calls hit);
// round robin rotates it over all three (one miss per conversation and
// server: at most 10 of 25). The comparison is deterministic: any placement
// of five conversations fits a server's five slots.
func TestRealServersPrefixAffinityRaisesServerCachedTokens(t *testing.T) {
	const groups, calls, slots = 5, 25, 5
	prefix := func(g int) string {
		// Distinct from the first byte, two 2 KiB blocks (the router's
		// prefix keys), about 900 of the model's tokens.
		return (fmt.Sprintf("conversation %d: ", g) + strings.Repeat(fmt.Sprintf("the pool in region %d serves the call %d ", g, g*7), 120))[:4096]
	}
	share := map[string]float64{}
	for _, policy := range []string{"switchyard", "round_robin"} {
		t.Run(policy, func(t *testing.T) {
			var pools []realPool
			for i := range 3 {
				// --cache-ram 0: the server's prompt cache is what its
				// slots hold. By default it also keeps up to 8 GiB of
				// prompts in host memory, which for this tiny model is every
				// prompt of the test; a 70B model's 900-token prompt takes
				// ~300 MB of KV cache, so a real server keeps far fewer.
				s := llamatest.Start(t, llamatest.Options{Slots: slots, CtxSize: slots * 2048, Args: []string{"--cache-ram", "0"}})
				pools = append(pools, realPool{name: fmt.Sprintf("aws-use1-%d", i), cloud: "aws", region: "us-east-1", limit: slots, url: s.URL})
			}
			f := startRealFleet(t, pools...)
			fl := *f.rt.Fleet()
			fl.Routing.Policy = policy
			if err := f.rt.Reload(&fl); err != nil {
				t.Fatal(err)
			}
			var in, cached int32
			for i := range calls {
				g := i % groups
				r := &pb.GenerateRequest{Model: "m", Prompt: prefix(g) + fmt.Sprintf(" question %d?", i), MaxTokens: 2,
					Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
				resp, err := f.client.Generate(ctxT(t, 30*time.Second), r)
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				u := resp.GetUsage()
				in += u.GetInputTokens()
				cached += u.GetCachedInputTokens()
			}
			share[policy] = float64(cached) / float64(in)
			t.Logf("%s: the servers reported %d of %d prompt tokens cached (%.3f)", policy, cached, in, share[policy])
		})
	}
	// Ideal: 0.8 × the prefix's share of each prompt against 0.4 ×: the
	// servers' slot choice (by prompt similarity) costs some hits.
	if sy, rr := share["switchyard"], share["round_robin"]; sy < 0.5 || sy < 1.5*rr {
		t.Fatalf("cached share of prompt tokens: switchyard %.3f, round robin %.3f: want switchyard ≥ 0.5 and ≥ 1.5× round robin", sy, rr)
	}
}
