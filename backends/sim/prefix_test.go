package sim

import (
	"context"
	"strings"
	"testing"

	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// blocks returns n distinct 512-token blocks of text, the i-th from seed c+i.
func blocks(c byte, n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat(string(rune('a'+(int(c)+i)%26)), cacheBlockBytes))
	}
	return b.String()
}

// The prefix cache: a prompt sharing leading blocks with an earlier one is
// charged prefill only after them, and says so in its usage (over the
// native gRPC service too); a prompt that differs in its first block shares
// nothing after it (the keys are chained); the cache stays within its bound.
func TestPrefixCache(t *testing.T) {
	p := newPool(t, Options{TimeScale: fast, MaxBatch: 4, PrefixCacheBlocks: 6})
	conn := serve(t, p, NewHost())
	inf := pb.NewInferenceClient(conn)
	ctx := context.Background()
	shared := blocks(0, 3)
	call := func(prompt string) *pb.Usage {
		t.Helper()
		resp, err := inf.Generate(ctx, req(prompt, 2))
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetUsage()
	}
	if u := call(shared + "first tail"); u.GetCachedInputTokens() != 0 {
		t.Fatalf("cold cache: %d cached", u.GetCachedInputTokens())
	}
	u := call(shared + "another tail")
	if u.GetCachedInputTokens() != 3*CacheBlockTokens || u.GetInputTokens() <= u.GetCachedInputTokens() {
		t.Fatalf("shared 3 blocks: usage %+v, want %d cached", u, 3*CacheBlockTokens)
	}
	// Same later blocks, different first block: nothing shared.
	if u := call(blocks(9, 1) + shared[cacheBlockBytes:]); u.GetCachedInputTokens() != 0 {
		t.Fatalf("different first block: %d cached", u.GetCachedInputTokens())
	}
	// Streams report it on the last chunk.
	var last *pb.GenerateChunk
	if err := p.GenerateStream(ctx, req(shared, 2), func(c *pb.GenerateChunk) error { last = c; return nil }); err != nil {
		t.Fatal(err)
	}
	if last.GetUsage().GetCachedInputTokens() != 3*CacheBlockTokens {
		t.Fatalf("stream usage %+v", last.GetUsage())
	}
	st := p.Stats()
	if st.CacheBlocks > 6 || st.CachedTokens != 6*CacheBlockTokens {
		t.Fatalf("stats: %d blocks (bound 6), %d cached tokens", st.CacheBlocks, st.CachedTokens)
	}
	// A pool with the cache off never reports cached tokens.
	off := newPool(t, Options{TimeScale: fast, PrefixCacheBlocks: -1})
	for range 2 {
		resp, err := off.Generate(ctx, req(shared, 2))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetUsage().GetCachedInputTokens() != 0 {
			t.Fatal("cache off, tokens cached")
		}
	}
}

// The LRU keeps the most recently used blocks.
func TestPrefixCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newPrefixCache(3)
	a, b := blockKeys(blocks(0, 2)), blockKeys(blocks(5, 2))
	if c.use(a) != 0 || c.use(a) != 2 {
		t.Fatal("a not cached")
	}
	c.use(b) // evicts a's first block (least recently used)
	if c.len() != 3 {
		t.Fatalf("%d blocks, bound 3", c.len())
	}
	if got := c.use(b); got != 2 {
		t.Fatalf("b: %d cached, want 2", got)
	}
	if got := c.use(a); got != 0 {
		t.Fatalf("a after eviction of its first block: %d leading blocks cached, want 0", got)
	}
}
