package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/clock"
	"github.com/switchyard-dev/switchyard/internal/priority"
)

// teach feeds sy attempts on pool timed on a fake clock: TTFT ttft, then
// 100 tokens at perToken(busy), alternately at busy shares 0.2 and 0.9.
func teach(sy *Switchyard, pool string, ttft time.Duration, perToken func(busy float64) time.Duration) {
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	for i := range 2 * minPerfSamples {
		busy := 0.2
		if i%2 == 1 {
			busy = 0.9
		}
		start := fake.Now()
		fake.Advance(ttft)
		first := fake.Now().Sub(start)
		fake.Advance(99 * perToken(busy))
		sy.AttemptDone(AttemptResult{Pool: pool, Outcome: OutcomeOK, Duration: fake.Now().Sub(start), TTFT: first,
			InputTokens: 1000, OutputTokens: 100, Busy: busy})
	}
}

// Deadline-aware ranking: a nearby pool running a nearly full batch (decode
// slowed) would miss a long call's deadline; the farther pool that meets it
// goes first. A short call, or one without a deadline, stays near.
func TestDeadlineSpillsToAFartherPoolThatMeetsIt(t *testing.T) {
	sy := &Switchyard{}
	slowWhenFull := func(busy float64) time.Duration {
		return time.Duration(float64(5*time.Millisecond) + busy*float64(50*time.Millisecond))
	}
	teach(sy, "aws-use1", 100*time.Millisecond, slowWhenFull)
	teach(sy, "gcp-use4", 100*time.Millisecond, slowWhenFull)
	pools := []PoolView{pv("aws-use1", "us-east-1", "us", 10, 8), pv("gcp-use4", "us-east4", "us", 10, 1)}
	e := env(t)
	cases := []struct {
		name      string
		maxTokens int
		deadline  time.Duration
		first     string
	}{
		// near: busy 0.9 after joining → ~50 ms/token × 399 ≈ 20 s; far: busy 0.2 → ~15 ms × 399 ≈ 6 s.
		{"long call, 10s deadline", 400, 10 * time.Second, "gcp-use4"},
		{"long call, 60s deadline", 400, 60 * time.Second, "aws-use1"},
		{"short call, 10s deadline", 20, 10 * time.Second, "aws-use1"},
		{"no deadline", 400, 0, "aws-use1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: c.maxTokens, Deadline: c.deadline}
			for i := range 200 {
				d := Decide(sy, req, pools, e)
				if d.Ranked[0].Pool != c.first {
					t.Fatalf("draw %d: ranked %v, want %s first", i, names(d.Ranked), c.first)
				}
			}
			req.Explain = true
			d := Decide(sy, req, pools, e)
			if c.first == "gcp-use4" && !contains(d.Ranked[1].Reason, "would miss the deadline") {
				t.Errorf("the near pool's reason does not say it would miss: %q", d.Ranked[1].Reason)
			}
		})
	}
	// A pool with too few samples is taken on trust.
	fresh := &Switchyard{}
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 400, Deadline: 10 * time.Second}
	if d := Decide(fresh, req, pools, e); d.Ranked[0].Pool != "aws-use1" {
		t.Fatalf("untrained: ranked %v, want the near pool first", names(d.Ranked))
	}
}

// Neither tier has the margin, but the farther one finishes within the
// deadline and clearly sooner: the call spills to it.
func TestDeadlineSpillsToAClearlySoonerTier(t *testing.T) {
	sy := &Switchyard{}
	teach(sy, "aws-use1", 100*time.Millisecond, func(float64) time.Duration { return 50 * time.Millisecond }) // 400 tokens ≈ 20 s
	teach(sy, "gcp-use4", 100*time.Millisecond, func(float64) time.Duration { return 22 * time.Millisecond }) // ≈ 8.9 s: within 10 s, not within 8
	pools := []PoolView{pv("aws-use1", "us-east-1", "us", 10, 2), pv("gcp-use4", "us-east4", "us", 10, 2)}
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 400, Deadline: 10 * time.Second}
	e := env(t)
	for i := range 100 {
		if d := Decide(sy, req, pools, e); d.Ranked[0].Pool != "gcp-use4" {
			t.Fatalf("draw %d: ranked %v, want the sooner tier first", i, names(d.Ranked))
		}
	}
	// Both far beyond the deadline: the call stays near.
	req.Deadline = 5 * time.Second
	if d := Decide(sy, req, pools, e); d.Ranked[0].Pool != "aws-use1" {
		t.Fatalf("both miss: ranked %v, want the near pool first", names(d.Ranked))
	}
}

// Inside a tier, a pool predicted to miss ranks behind one that meets it.
func TestDeadlineOrdersInsideATier(t *testing.T) {
	sy := &Switchyard{}
	teach(sy, "a", 50*time.Millisecond, func(float64) time.Duration { return 60 * time.Millisecond }) // slow accelerator
	teach(sy, "b", 50*time.Millisecond, func(float64) time.Duration { return 10 * time.Millisecond })
	pools := []PoolView{pv("a", "us-east-1", "us", 10, 0), pv("b", "us-east-1", "us", 10, 5)}
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 200, Deadline: 10 * time.Second}
	e := env(t)
	n := 0
	for range 500 {
		if Decide(sy, req, pools, e).Ranked[0].Pool == "b" {
			n++
		}
	}
	// a: 60 ms × 199 ≈ 12 s misses; b: ≈ 2 s meets. b keeps its weighted draw
	// against a's five-hundredth: 0.5 / (0.5 + 0.002) ≈ 99.6 %.
	if n < 450 {
		t.Fatalf("b first in %d of 500 draws, want ≳ 96 %%", n)
	}
}

// Prefix affinity: calls sharing a prefix go to the pool that served it,
// and new prefixes hash to one pool, but never beyond the load bound.
func TestPrefixAffinityWithinTheLoadBound(t *testing.T) {
	e := env(t)
	sy := &Switchyard{}
	four := func(inflight ...int) []PoolView {
		var ps []PoolView
		for i, n := range inflight {
			ps = append(ps, pv(fmt.Sprintf("p%d", i), "us-east-1", "us", 10, n))
		}
		return ps
	}
	prefix := []uint64{11, 22, 33}
	sy.AttemptDone(AttemptResult{Pool: "p2", Outcome: OutcomeOK, Prefix: prefix})
	cases := []struct {
		name     string
		inflight []int
		prefix   []uint64
		want     string // "": not forced
	}{
		{"hit on an idle fleet", []int{0, 0, 0, 0}, prefix, "p2"},
		{"hit on a busier pool within 1.25× the mean", []int{3, 3, 3, 4}, prefix, "p2"},
		// mean after the call (10+1)/40 = 0.275; p2 after it 0.6 > 1.25 × 0.275.
		{"hit beyond the load bound", []int{1, 1, 5, 3}, prefix, ""},
		{"longer shared prefix still hits", []int{0, 0, 0, 0}, []uint64{11, 22, 33, 44}, "p2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pools := four(c.inflight...)
			req := &Request{Model: "m", CallerRegion: "us-east-1", Prefix: c.prefix}
			firsts := map[string]int{}
			for range 300 {
				firsts[Decide(sy, req, pools, e).Ranked[0].Pool]++
			}
			if c.want != "" && firsts[c.want] != 300 {
				t.Fatalf("first picks %v, want %s every time", firsts, c.want)
			}
			if c.want == "" && firsts["p2"] == 300 {
				t.Fatalf("first picks %v: the hit pool took every call beyond the bound", firsts)
			}
		})
	}
	// A session key with no pool remembered: calls carrying it hash to one
	// pool; a prefix seen before but held only by a pool beyond the bound
	// hashes the same way.
	a := &Request{Model: "m", CallerRegion: "us-east-1", Prefix: []uint64{SessionPrefix("s")}, PrefixKeyed: true}
	pools := four(0, 0, 0, 0)
	pa := Decide(&Switchyard{}, a, pools, e).Ranked[0].Pool
	for range 100 {
		if pb := Decide(&Switchyard{}, a, pools, e).Ranked[0].Pool; pb != pa {
			t.Fatalf("one session key went to %s and %s", pa, pb)
		}
	}
	busy := four(1, 1, 5, 3) // p2 holds the prefix but is beyond the bound
	r := &Request{Model: "m", CallerRegion: "us-east-1", Prefix: []uint64{11, 22, 99}}
	first := Decide(sy, r, busy, e).Ranked[0].Pool
	for range 100 {
		if got := Decide(sy, r, busy, e).Ranked[0].Pool; got != first || got == "p2" {
			t.Fatalf("shared prefix over the bound went to %s then %s (p2 is over the bound)", first, got)
		}
	}
	// A prefix never seen is placed by the weighted draw.
	seen := map[string]bool{}
	for range 200 {
		seen[Decide(sy, &Request{Model: "m", CallerRegion: "us-east-1", Prefix: []uint64{1234, 5678}}, pools, e).Ranked[0].Pool] = true
	}
	if len(seen) < 3 {
		t.Fatalf("a new prefix went only to %v", seen)
	}
	req := &Request{Model: "m", CallerRegion: "us-east-1", Prefix: prefix, Explain: true}
	d := Decide(sy, req, four(0, 0, 0, 0), e)
	if d.Ranked[0].Pool != "p2" || !contains(d.Ranked[0].Reason, "prefix affinity") {
		t.Fatalf("explained: %v %q", names(d.Ranked), d.Ranked[0].Reason)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// Priority targets: an interactive call whose TTFT target the near pool
// would miss goes to the farther pool that meets it; a standard call
// (no target) stays near.
func TestPriorityTTFTTargetSpills(t *testing.T) {
	sy := &Switchyard{}
	fast := func(float64) time.Duration { return 5 * time.Millisecond }
	teach(sy, "aws-use1", 500*time.Millisecond, fast)
	teach(sy, "gcp-use4", 100*time.Millisecond, fast)
	pools := []PoolView{pv("aws-use1", "us-east-1", "us", 10, 2), pv("gcp-use4", "us-east4", "us", 10, 2)}
	e := env(t)
	e.Targets = map[priority.Class]Target{priority.Interactive: {TTFT: 200 * time.Millisecond}}
	inter := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 50, Priority: priority.Interactive}
	std := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 50}
	for i := range 100 {
		if d := Decide(sy, inter, pools, e); d.Ranked[0].Pool != "gcp-use4" {
			t.Fatalf("draw %d: interactive ranked %v, want the pool within its TTFT target first", i, names(d.Ranked))
		}
		if d := Decide(sy, std, pools, e); d.Ranked[0].Pool != "aws-use1" {
			t.Fatalf("draw %d: standard ranked %v, want the near pool first", i, names(d.Ranked))
		}
	}
}

// Slack: inside a tier, a long call prefers the pool that meets its
// deadline with room over one that meets it only narrowly (a pool near the
// margin misses when its batch grows after the call joins, or the host
// stalls); a short call, far inside the deadline on both, is drawn on free
// share alone.
func TestDeadlineSlackOrdersInsideATier(t *testing.T) {
	sy := &Switchyard{}
	teach(sy, "narrow", 50*time.Millisecond, func(float64) time.Duration { return 37 * time.Millisecond }) // 200 tokens ≈ 7.4 s of 10
	teach(sy, "roomy", 50*time.Millisecond, func(float64) time.Duration { return 10 * time.Millisecond })  // ≈ 2 s of 10
	pools := []PoolView{pv("narrow", "us-east-1", "us", 10, 0), pv("roomy", "us-east-1", "us", 10, 0)}
	e := env(t)
	cases := []struct {
		name       string
		maxTokens  int
		minRoomy   int // of 1000 draws
		maxRoomy   int
		wantFactor float64 // narrow's slack factor
	}{
		// narrow: r ≈ 0.745, factor (0.8 − 0.745) / 0.3 ≈ 0.18 → roomy first ≈ 1 / 1.18 ≈ 85 %.
		{"long call", 200, 780, 920, 0.18},
		// 20 tokens: both finish within a tenth of the deadline.
		{"short call", 20, 430, 570, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: c.maxTokens, Deadline: 10 * time.Second}
			n := 0
			for range 1000 {
				if Decide(sy, req, pools, e).Ranked[0].Pool == "roomy" {
					n++
				}
			}
			if n < c.minRoomy || n > c.maxRoomy {
				t.Fatalf("roomy first in %d of 1000 draws, want %d..%d", n, c.minRoomy, c.maxRoomy)
			}
			req.Explain = true
			d := Decide(sy, req, pools, e)
			for _, cand := range d.Ranked {
				if cand.Pool == "narrow" {
					if got := cand.Score; got < c.wantFactor-0.03 || got > c.wantFactor+0.03 {
						t.Fatalf("narrow's score %.3f, want ≈ %.2f (free share 1 × slack factor)", got, c.wantFactor)
					}
				}
			}
		})
	}
	// The factor itself: full inside half the deadline, the floor at the margin.
	for _, c := range []struct {
		done time.Duration
		want float64
	}{{time.Second, 1}, {5 * time.Second, 1}, {6500 * time.Millisecond, 0.5}, {8 * time.Second, slackFloor}, {7900 * time.Millisecond, slackFloor}} {
		if got := slackFactor(c.done, 10*time.Second); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("slackFactor(%s of 10s) = %v, want %v", c.done, got, c.want)
		}
	}
}

// Spill band and deadline: a region in its spill band sends a share of its
// calls to farther tiers — but not a long call the region would finish in
// time while every farther tier is predicted to miss it (a slow accelerator
// far away). A short call, which the farther tier meets, still spills.
func TestSpillBandKeepsACallFartherTiersWouldMiss(t *testing.T) {
	sy := &Switchyard{}
	teach(sy, "aws-use1", 50*time.Millisecond, func(float64) time.Duration { return 10 * time.Millisecond }) // 400 tokens ≈ 4 s
	teach(sy, "gcp-euw4", 50*time.Millisecond, func(float64) time.Duration { return 40 * time.Millisecond }) // ≈ 16 s: misses
	// The region's free share 0.25: in the band (reserve 0.10, band 0.30),
	// it keeps (0.25 − 0.10) / 0.30 = half its calls.
	pools := []PoolView{pv("aws-use1", "us-east-1", "us", 100, 75), pv("gcp-euw4", "europe-west4", "eu", 100, 0)}
	e := env(t)
	e.SpillBand = 0.3
	cases := []struct {
		name       string
		maxTokens  int
		minNear    int // of 400 draws
		maxNear    int
		wantReason string
	}{
		{"long call stays", 400, 400, 400, "every farther tier is predicted to miss the deadline"},
		{"short call spills half the time", 20, 140, 260, "this call spilled behind farther tiers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: c.maxTokens, Deadline: 10 * time.Second}
			n := 0
			for range 400 {
				if Decide(sy, req, pools, e).Ranked[0].Pool == "aws-use1" {
					n++
				}
			}
			if n < c.minNear || n > c.maxNear {
				t.Fatalf("near pool first in %d of 400 draws, want %d..%d", n, c.minNear, c.maxNear)
			}
			req.Explain = true
			for range 50 {
				d := Decide(sy, req, pools, e)
				for _, cand := range d.Ranked {
					if cand.Pool == "aws-use1" && contains(cand.Reason, c.wantReason) {
						return
					}
				}
			}
			t.Fatalf("no explained decision says %q", c.wantReason)
		})
	}
	// Untrained, the farther tier is taken on trust: the long call spills as before.
	fresh := &Switchyard{}
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 400, Deadline: 10 * time.Second}
	far := 0
	for range 400 {
		if Decide(fresh, req, pools, e).Ranked[0].Pool == "gcp-euw4" {
			far++
		}
	}
	if far < 140 {
		t.Fatalf("untrained: far pool first in %d of 400 draws, want about half", far)
	}
}

// teachAt feeds sy attempts on pool timed on a fake clock: TTFT ttft(input
// tokens) for prompts of 500 and 4,000 tokens alternately, then tokens
// output tokens at perToken(busy), the busy shares taken in turn.
func teachAt(sy *Switchyard, pool string, ttft func(input int) time.Duration, perToken func(busy float64) time.Duration, tokens int, busies ...float64) {
	fake := clock.NewFake(time.Unix(1_700_000_000, 0))
	for i := range 4 * minPerfSamples {
		busy := busies[i%len(busies)]
		input := 500
		if i%2 == 1 {
			input = 4000
		}
		start := fake.Now()
		fake.Advance(ttft(input))
		first := fake.Now().Sub(start)
		fake.Advance(time.Duration(tokens-1) * perToken(busy))
		sy.AttemptDone(AttemptResult{Pool: pool, Outcome: OutcomeOK, Duration: fake.Now().Sub(start), TTFT: first,
			InputTokens: input, OutputTokens: tokens, Busy: busy})
	}
}

// simPrefill is a TTFT of 20 ms (network, queueing) plus the prompt at
// rate tokens per second, as the simulator prefills.
func simPrefill(rate float64) func(input int) time.Duration {
	return func(input int) time.Duration {
		return 20*time.Millisecond + time.Duration(float64(input)/rate*float64(time.Second))
	}
}

// simDecode is the simulator's decode model (backends/sim): base × (1 +
// 0.00959 × (batch − 1)) per token, for a pool of the given batch.
func simDecode(base time.Duration, batch int) func(busy float64) time.Duration {
	return func(busy float64) time.Duration {
		return time.Duration(float64(base) * (1 + 0.00959*(busy*float64(batch)-1)))
	}
}

// The call that failed the no-fault runs: one of the trace's longest answers
// (690 tokens, 10 s deadline) meets a region whose H100 pool's batch is
// momentarily small, while its usual batch is nearly full. At the batch it
// joins the H100 pool would finish in ~7.8 s; but the batch refills long
// before a 690-token decode ends, and at the usual one it takes over 10 s.
// The Trn2 pool, fuller but decoding faster, finishes in ~6.4 s: the call
// goes there. A short call still goes where there is room.
func TestLongCallAvoidsABatchThatRefills(t *testing.T) {
	sy := &Switchyard{}
	usual := []float64{0.85, 0.95} // both pools usually run nearly full
	teachAt(sy, "aws-use1-h100", simPrefill(22_606), simDecode(10450*time.Microsecond, 48), 200, usual...)
	teachAt(sy, "aws-use1-trn2", simPrefill(30_491), simDecode(6030*time.Microsecond, 64), 200, usual...)
	pools := []PoolView{pv("aws-use1-h100", "us-east-1", "us", 48, 9), pv("aws-use1-trn2", "us-east-1", "us", 64, 57)}
	e := env(t)
	cases := []struct {
		name      string
		maxTokens int
		want      string
		atLeast   int // of 400 draws
	}{
		{"690-token answer goes where it decodes in time", 690, "aws-use1-trn2", 380},
		{"40-token answer goes where there is room", 40, "aws-use1-h100", 300},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: c.maxTokens, Deadline: 10 * time.Second}
			n := 0
			for range 400 {
				if Decide(sy, req, pools, e).Ranked[0].Pool == c.want {
					n++
				}
			}
			if n < c.atLeast {
				req.Explain = true
				d := Decide(sy, req, pools, e)
				t.Fatalf("%s first in %d of 400 draws, want ≥ %d; reasons: %q / %q", c.want, n, c.atLeast, d.Ranked[0].Reason, d.Ranked[1].Reason)
			}
		})
	}
}

// Time to first token: inside a tier, a long prompt goes mostly to the pool
// that prefills it soonest, in proportion to the predicted TTFTs; a short
// prompt, predicted alike on both, is shared evenly.
func TestLongPromptPrefersTheFasterPrefill(t *testing.T) {
	sy := &Switchyard{}
	perToken := func(float64) time.Duration { return 10 * time.Millisecond }
	teachAt(sy, "fast", func(in int) time.Duration { return 10*time.Millisecond + time.Duration(in)*20*time.Microsecond }, perToken, 50, 0.5)
	teachAt(sy, "slow", func(in int) time.Duration { return 10*time.Millisecond + time.Duration(in)*100*time.Microsecond }, perToken, 50, 0.5)
	pools := []PoolView{pv("fast", "us-east-1", "us", 10, 2), pv("slow", "us-east-1", "us", 10, 2)}
	e := env(t)
	cases := []struct {
		name     string
		input    int
		lo, hi   int // draws of 1,000 with "fast" first
		deadline time.Duration
	}{
		// 8,000 tokens: fast 170 ms, slow 810 ms: slow keeps 0.21 of its score → fast first ≈ 83 %.
		{"8,000-token prompt", 8000, 780, 880, 0},
		{"8,000-token prompt with a deadline", 8000, 780, 880, 60 * time.Second},
		// 10 tokens: 10.2 against 11 ms → fast first ≈ 52 %.
		{"10-token prompt", 10, 450, 580, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: c.input, MaxTokens: 50, Deadline: c.deadline}
			n := 0
			for range 1000 {
				if Decide(sy, req, pools, e).Ranked[0].Pool == "fast" {
					n++
				}
			}
			if n < c.lo || n > c.hi {
				t.Fatalf("fast first in %d of 1,000 draws, want %d–%d", n, c.lo, c.hi)
			}
		})
	}
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 8000, MaxTokens: 50, Explain: true}
	d := Decide(sy, req, pools, e)
	for _, c := range d.Ranked {
		if c.Pool == "slow" && !contains(c.Reason, "against the tier's fastest") {
			t.Fatalf("the slow pool's reason does not give the TTFT factor: %q", c.Reason)
		}
	}
}

// The same call when the region's Trn2 pool, which would finish it in time,
// is full: the region has room only on the H100 pool, predicted to miss, so
// the call spills to the next tier, whose B200 pool meets the deadline. A
// full pool that would meet it does not hold the call in its tier (it is
// tried last, so the call would run on the pool that misses).
func TestFullPoolThatWouldMeetDoesNotHoldTheTier(t *testing.T) {
	sy := &Switchyard{}
	usual := []float64{0.85, 0.95}
	teachAt(sy, "aws-use1-h100", simPrefill(22_606), simDecode(10450*time.Microsecond, 48), 200, usual...)
	teachAt(sy, "aws-use1-trn2", simPrefill(30_491), simDecode(6030*time.Microsecond, 64), 200, usual...)
	teachAt(sy, "azure-eastus-b200", simPrefill(51_429), simDecode(4380*time.Microsecond, 32), 200, usual...)
	pools := []PoolView{
		pv("aws-use1-h100", "us-east-1", "us", 48, 36),
		pv("aws-use1-trn2", "us-east-1", "us", 64, 64),
		pv("azure-eastus-b200", "eastus", "us", 32, 16),
	}
	e := env(t)
	req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 5538, MaxTokens: 690, Deadline: 10 * time.Second}
	for i := range 200 {
		if d := Decide(sy, req, pools, e); d.Ranked[0].Pool != "azure-eastus-b200" {
			req.Explain = true
			d = Decide(sy, req, pools, e)
			t.Fatalf("draw %d: ranked %v, want azure-eastus-b200 first; reasons: %q", i, names(d.Ranked), d.Ranked[0].Reason)
		}
	}
	// A short call stays in the region, on the pool with room.
	short := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1000, MaxTokens: 40, Deadline: 10 * time.Second}
	if d := Decide(sy, short, pools, e); d.Ranked[0].Pool != "aws-use1-h100" {
		t.Fatalf("short call ranked %v, want aws-use1-h100 first", names(d.Ranked))
	}
}

// Prefix affinity never takes a call to a pool predicted to miss its
// deadline: the pool that holds the prompt's prefix decodes too slowly for
// a long answer, so the weighted draw places the call instead; a short
// answer still goes to the pool holding the prefix.
func TestPrefixAffinityYieldsToTheDeadline(t *testing.T) {
	sy := &Switchyard{}
	teachAt(sy, "slow", simPrefill(20_000), func(float64) time.Duration { return 30 * time.Millisecond }, 50, 0.5)
	teachAt(sy, "fast", simPrefill(20_000), func(float64) time.Duration { return 5 * time.Millisecond }, 50, 0.5)
	prefix := []uint64{11, 22, 33}
	sy.AttemptDone(AttemptResult{Pool: "slow", Outcome: OutcomeOK, Prefix: prefix})
	pools := []PoolView{pv("slow", "us-east-1", "us", 10, 2), pv("fast", "us-east-1", "us", 10, 2)}
	e := env(t)
	cases := []struct {
		name      string
		maxTokens int
		want      string
		atLeast   int // of 300 draws
	}{
		// slow: 400 × 30 ms = 12 s misses 10 s; fast: 2 s.
		{"long answer", 400, "fast", 295},
		{"short answer", 40, "slow", 300},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &Request{Model: "m", CallerRegion: "us-east-1", InputTokens: 1500, MaxTokens: c.maxTokens, Deadline: 10 * time.Second, Prefix: prefix}
			n := 0
			for range 300 {
				if Decide(sy, req, pools, e).Ranked[0].Pool == c.want {
					n++
				}
			}
			if n < c.atLeast {
				t.Fatalf("%s first in %d of 300 draws, want ≥ %d", c.want, n, c.atLeast)
			}
		})
	}
}
