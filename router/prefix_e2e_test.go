package router_test

import (
	"strings"
	"testing"
	"time"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Prefix-cache affinity end to end: a router running the default policy in
// front of four real simulated pools in one region sends calls that share
// their first 2 KiB block to the pool that served it, and that pool's
// prefix cache serves the block (usage.cached_input_tokens, passed through
// to the client); with round robin the same calls spread and miss.
func TestPrefixAffinityKeepsSharedPrefixesCached(t *testing.T) {
	for _, c := range []struct {
		policy   string
		wantHits int // calls after the first that find the block cached, at least
	}{
		{"switchyard", 9},
		{"round_robin", 0},
	} {
		t.Run(c.policy, func(t *testing.T) {
			var pools []*simPool
			for _, n := range []string{"a", "b", "c", "d"} {
				pools = append(pools, &simPool{name: "aws-" + n, cloud: "aws", region: "us-east-1", accel: "h100", limit: 8, timeScale: 1000})
			}
			tf := startFleet(t, fleetOpts{policy: c.policy}, pools...)
			shared := strings.Repeat("a shared system prompt block ", 80)[:2048]
			var first string
			hits, same := 0, 0
			for i := range 10 {
				r := &pb.GenerateRequest{Model: "m", Prompt: shared + strings.Repeat("tail ", 10+i), MaxTokens: 2,
					Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
				resp, err := tf.client.Generate(ctxT(t, 10*time.Second), r)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = resp.GetRoute().GetPool()
					continue
				}
				if resp.GetRoute().GetPool() == first {
					same++
				}
				if resp.GetUsage().GetCachedInputTokens() == 512 {
					hits++
				}
			}
			if c.wantHits > 0 && (hits < c.wantHits || same < c.wantHits) {
				t.Fatalf("%d of 9 calls found the shared block cached, %d went to %s: want all", hits, same, first)
			}
			if c.wantHits > 0 {
				// A stream's last chunk carries the cached count too.
				r := &pb.GenerateRequest{Model: "m", Prompt: shared + "streamed tail", MaxTokens: 2, Routing: &pb.RoutingHints{CallerRegion: "us-east-1"}}
				_, _, last, err := stream(ctxT(t, 10*time.Second), tf.client, r)
				if err != nil {
					t.Fatal(err)
				}
				if last.GetUsage().GetCachedInputTokens() != 512 || last.GetRoute().GetPool() != first {
					t.Fatalf("stream: usage %+v on %s, want 512 cached on %s", last.GetUsage(), last.GetRoute().GetPool(), first)
				}
			}
			if c.wantHits == 0 && hits == 9 {
				t.Fatalf("round robin: all 9 calls found the block cached (the comparison shows nothing)")
			}
		})
	}
}
