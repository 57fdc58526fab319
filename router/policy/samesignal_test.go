package policy

import (
	"math"
	"testing"
)

// envoy_locality: P0 (the caller's region) keeps every call while healthy;
// with half its capacity lost it keeps 50 × 1.4 = 70 % of first picks, the
// rest going to P1 (its geography).
func TestEnvoyLocalityPriorityLoad(t *testing.T) {
	pools := fleet() // us-east-1 is P0, the other US pools P1, EU P2
	e := env(t)
	req := &Request{Model: "m", CallerRegion: "us-east-1"}
	firstInRegion := func(pools []PoolView) float64 {
		n := 0
		const draws = 4000
		for range draws {
			d := Decide(EnvoyLocality{}, req, pools, e)
			if d.Ranked[0].Pool == "aws-use1" {
				n++
			}
		}
		return float64(n) / draws
	}
	if got := firstInRegion(pools); got != 1 {
		t.Fatalf("healthy P0: %.3f of first picks in the region, want all", got)
	}
	pools[0].Reported = &Reported{Capacity: 5}
	if got := firstInRegion(pools); math.Abs(got-0.70) > 0.03 {
		t.Fatalf("P0 at half capacity: %.3f of first picks in the region, want 0.70", got)
	}
	// Inside a level, least request by pool size: a pool twice the size with
	// the same calls in flight is drawn about twice as often.
	pools = []PoolView{pv("a", "us-east-1", "us", 20, 4), pv("b", "us-east-1", "us", 10, 4)}
	n := 0
	for range 3000 {
		if Decide(EnvoyLocality{}, req, pools, e).Ranked[0].Pool == "a" {
			n++
		}
	}
	if got := float64(n) / 3000; math.Abs(got-2.0/3) > 0.04 {
		t.Fatalf("a (weight 20/5) first in %.3f of draws, want 2/3 against b (10/5)", got)
	}
}

// gie: the queue and utilisation scores pick the idler pool; a pool that
// served the prompt's prefix wins on the prefix score (weight 3).
func TestGIEScores(t *testing.T) {
	e := env(t)
	g := &GIE{}
	pools := []PoolView{pv("a", "us-east-1", "us", 10, 8), pv("b", "us-east-1", "us", 10, 2)}
	pools[0].Reported = &Reported{Running: 8, Queued: 3, Capacity: 10}
	pools[1].Reported = &Reported{Running: 2, Capacity: 10}
	req := &Request{Model: "m", CallerRegion: "us-east-1", Prefix: []uint64{1, 2, 3, 4}}
	if d := Decide(g, req, pools, e); d.Ranked[0].Pool != "b" {
		t.Fatalf("ranked %v, want the idle pool b first", names(d.Ranked))
	}
	g.AttemptDone(AttemptResult{Pool: "a", Outcome: OutcomeOK, Prefix: req.Prefix})
	if d := Decide(g, req, pools, e); d.Ranked[0].Pool != "a" {
		t.Fatalf("ranked %v, want a (holds the whole prefix) first", names(d.Ranked))
	}
	// A failed attempt teaches nothing.
	g2 := &GIE{}
	g2.AttemptDone(AttemptResult{Pool: "a", Outcome: OutcomeFailure, Prefix: req.Prefix})
	if d := Decide(g2, req, pools, e); d.Ranked[0].Pool != "b" {
		t.Fatalf("after a failure on a: ranked %v, want b first", names(d.Ranked))
	}
}

// The prefix index: chained keys match only on shared leading blocks, it
// stays within its capacity, and it remembers the most recent pools.
func TestPrefixIndex(t *testing.T) {
	var h PrefixHasher
	key := func(s string) []uint64 {
		h.Reset(nil)
		h.WriteString(s)
		return append([]uint64(nil), h.Keys()...)
	}
	block := func(c byte) string {
		b := make([]byte, PrefixBlockBytes)
		for i := range b {
			b[i] = c
		}
		return string(b)
	}
	ab, ac, xb := key(block('a')+block('b')), key(block('a')+block('c')), key(block('x')+block('b'))
	if len(ab) != 2 || ab[0] != ac[0] || ab[1] == ac[1] || ab[1] == xb[1] {
		t.Fatalf("keys ab %v ac %v xb %v: want a shared first key only for the shared first block", ab, ac, xb)
	}
	if k := key(block('a')[:PrefixBlockBytes-1]); len(k) != 0 {
		t.Fatalf("a partial block has keys %v", k)
	}
	long := make([]byte, (MaxPrefixBlocks+5)*PrefixBlockBytes)
	if k := key(string(long)); len(k) != MaxPrefixBlocks {
		t.Fatalf("%d keys for a long prompt, want at most %d", len(k), MaxPrefixBlocks)
	}
	x := PrefixIndex{Capacity: 8}
	x.Record(ab, "p1")
	if x.Matched(ac, "p1") != 1 || x.Matched(ab, "p1") != 2 || x.Matched(ab, "p2") != 0 || x.Matched(xb, "p1") != 0 {
		t.Fatal("matches do not follow the shared leading blocks")
	}
	for i := range 20 {
		x.Record([]uint64{uint64(1000 + i)}, "p1")
	}
	if x.Len() != 8 || x.Matched(ab, "p1") != 0 {
		t.Fatalf("index holds %d keys (cap 8); old keys still matched: %d", x.Len(), x.Matched(ab, "p1"))
	}
	for _, p := range []string{"p1", "p2", "p3", "p4", "p5"} {
		x.Record(ab, p)
	}
	if x.Matched(ab, "p1") != 0 || x.Matched(ab, "p5") != 2 {
		t.Fatal("a key keeps the most recent pools")
	}
	if SessionPrefix("s1") == SessionPrefix("s2") || SessionPrefix("s1") != SessionPrefix("s1") {
		t.Fatal("session keys")
	}
}
