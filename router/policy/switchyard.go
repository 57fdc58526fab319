package policy

import (
	"fmt"
	"math"
	"time"
)

// Switchyard is the default policy:
//
//  1. Affinity tiers: the caller's region, then its geography, then anywhere
//     the request may go.
//  2. A filling tier spills progressively: while its free share is above the
//     priority's reserve plus the spill band it keeps every call; between the
//     two a linearly shrinking share of calls ranks it behind the farther
//     tiers; at or under the reserve it keeps none (batch has the largest
//     reserve, so it spills earliest and interactive last). Spreading before a
//     tier is full keeps batches small, and decode fast, everywhere.
//  3. Inside a tier, pools are ordered by a weighted random draw on
//     score = weight × free fraction × nearness × preference × cost factor,
//     where the free fraction also honours the backend's own load report
//     (a pool that lost chips or holds a queue has less room than its
//     in-flight count says),
//     so operator weights shift traffic proportionally, live headroom
//     decides, and farther pools (by the latency table) rank lower.
//  4. Pools with no headroom or zero weight come last in their tier: the
//     router still tries them when everything else is full, since the view
//     can be a few milliseconds stale.
//  5. Deadline-aware: from the attempts it hears of (Feedback) it learns per
//     pool the time to first token against the uncached prompt and the time
//     per output token against the batch share a call joins (predict.go).
//     A call with a deadline predicts its completion (TTFT + max_tokens ×
//     TPOT at the batch it will decode in: the one it joins, relaxing to the
//     pool's usual batch over a long decode) on each pool: a tier none of whose
//     pools would meet the deadline spills behind a farther tier that has
//     one that would, and inside a tier a pool that would miss ranks behind
//     those that would not, and one that would meet it only narrowly (past
//     half the deadline) behind those with room (slackFactor). The spill
//     band never sends a call its tier would finish in time to farther tiers
//     all predicted to miss it. With or without a deadline, a pool keeps the
//     share of its score that the tier's fastest predicted TTFT is of its
//     own (ttftFactor), so long prompts go where they prefill soonest. Pools
//     with too few samples are taken on trust.
//  6. Prefix-cache affinity, as consistent hashing with bounded loads: a
//     call with prefix keys (Request.Prefix) goes first to the pool of its
//     tier remembered to hold the longest run of its leading blocks (an
//     approximate index fed by the pools that served each prompt), or, when
//     the prefix was seen before (or is a client's session key) but no pool
//     holding it qualifies, to the pool its first two blocks hash to
//     (rendezvous hashing) — either only while that pool's busy share after
//     taking the call stays within 1.25× the tier's mean or under half its
//     limit (the bound that keeps a hot prefix from piling onto one pool),
//     it has headroom and it
//     would meet the deadline. Otherwise the weighted draw decides.
type Switchyard struct {
	prefix PrefixIndex
	perf   perfTable
}

var (
	_ Policy    = (*Switchyard)(nil)
	_ Segmenter = (*Switchyard)(nil)
	_ Feedback  = (*Switchyard)(nil)
)

// PrefixLoadBound is the bound on a prefix-affine pool's load against the
// tier's mean (Mirrokni, Thorup, Zadimoghaddam: consistent hashing with
// bounded loads, c = 1.25).
const PrefixLoadBound = 1.25

// PrefixLoadFloor: a pool under this share of its limit after taking the
// call is within the bound whatever the tier's mean.
const PrefixLoadFloor = 0.5

// AttemptDone implements Feedback: a successful attempt teaches the pool's
// speed, and that it now holds the prompt's prefix blocks.
func (sy *Switchyard) AttemptDone(r AttemptResult) {
	if r.Outcome != OutcomeOK {
		return
	}
	sy.perf.record(r)
	sy.prefix.Record(r.Prefix, r.Pool)
}

// busyAfter is the share of p's limit in use once one more call joins.
func busyAfter(p *PoolView, ef float64) float64 {
	return math.Min(1, 1-ef+1/float64(max(p.Limit, 1)))
}

// candidateFree is c's free share, honouring the load report.
func candidateFree(c *Candidate, p *PoolView) float64 {
	if p.Reported != nil {
		return p.EffectiveFree()
	}
	return float64(c.Headroom) / float64(max(p.Limit, 1))
}

// meets predicts whether the call would finish on p within its deadline;
// known is false when there is no deadline or the pool has too few samples.
//
// The priority's latency targets (Env.Targets) count as the deadline does:
// a pool predicted over the TTFT or TPOT target misses.
func (sy *Switchyard) meets(req *Request, p *PoolView, ef float64, cachedShare float64, env *Env) (meets, known bool, pr prediction) {
	tgt := target(req, env)
	if (req.Deadline <= 0 || req.MaxTokens <= 0) && tgt == (Target{}) {
		return true, false, pr
	}
	pr = sy.predict(req, p, ef, cachedShare)
	meets, known = judge(req, pr, tgt)
	return meets, known, pr
}

// predict is the call's predicted TTFT and completion on p, joining its
// batch with free share ef; pr.ok is false while p has too few samples.
func (sy *Switchyard) predict(req *Request, p *PoolView, ef float64, cachedShare float64) prediction {
	uncached := int(float64(req.InputTokens) * (1 - cachedShare))
	return sy.perf.predict(p.Name, uncached, max(req.MaxTokens, 1), busyAfter(p, ef))
}

// judge is whether prediction pr meets the call's deadline (within
// deadlineMargin of it) and its priority's latency targets tgt; known is
// false when there is nothing to meet or no prediction.
func judge(req *Request, pr prediction, tgt Target) (meets, known bool) {
	if !pr.ok || ((req.Deadline <= 0 || req.MaxTokens <= 0) && tgt == (Target{})) {
		return true, false
	}
	ok := req.Deadline <= 0 || req.MaxTokens <= 0 || float64(pr.done) <= deadlineMargin*float64(req.Deadline)
	if tgt.TTFT > 0 && pr.ttft > tgt.TTFT {
		ok = false
	}
	if tgt.TPOT > 0 && pr.tpot > tgt.TPOT {
		ok = false
	}
	return ok, true
}

// target is the request's priority's latency target.
func target(req *Request, env *Env) Target {
	if env == nil || env.Targets == nil {
		return Target{}
	}
	return env.Targets[req.Priority]
}

func (*Switchyard) Name() string { return "switchyard" }

var _ LimitAdvisor = (*Switchyard)(nil)

// AdvisedLimit implements LimitAdvisor: a pool that reports it can run
// fewer sequences than its limit gets that many plus a quarter more (a short
// queue keeps its batch full), never more than the configured limit.
func (*Switchyard) AdvisedLimit(p *PoolView) int {
	r := p.Reported
	if r == nil || r.Capacity >= p.Limit {
		return p.Limit
	}
	return min(p.Limit, r.Capacity+(r.Capacity+3)/4)
}

// Rank implements Policy: the complete order (Segments drawn to the end).
func (sy *Switchyard) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) {
	d := Decision{Ranked: eligible, rand: env.Rand, scorer: sy, req: req, pools: pools, env: env}
	for i := range eligible {
		c := &eligible[i]
		p := &pools[c.Index]
		fr := c.Headroom
		if p.Reported != nil {
			fr = int(p.EffectiveFree()*float64(p.Limit) + 0.5)
		}
		d.tiers[c.Tier].Count++
		d.tiers[c.Tier].Limit += p.Limit
		d.tiers[c.Tier].Free += fr
	}
	sy.Segments(&d, req, pools, env)
	d.All()
}

// Segments implements Segmenter: the spill draw orders the tiers from the
// sums the filter made, and the tiers are laid out in place (already in
// order unless one spilled). Scores, and the weighted draw on them, come
// only for the tiers the router reaches, usually the first.
func (sy *Switchyard) Segments(d *Decision, req *Request, pools []PoolView, env *Env) {
	eligible := d.Ranked
	if len(eligible) == 0 {
		return
	}
	prio := req.Priority
	reserve := env.Reserve[prio]
	if req.Explain {
		// Reasons carry the scores: score every tier now.
		sy.Score(req, pools, eligible, 0, len(eligible), env)
	}
	tiers := d.Tiers()

	// Deadline predictions per tier, when the call has a deadline or its
	// priority has latency targets: whether some pool of the tier with
	// headroom is predicted to meet them (pools with too few samples are
	// taken on trust; a full pool does not count, since it is tried last and
	// the call would go to one that misses), whether any prediction is
	// known, whether a pool with room is known to meet them, and the
	// soonest predicted completion on a pool with headroom.
	deadlined := (req.Deadline > 0 && req.MaxTokens > 0) || target(req, env) != (Target{})
	var meetsAny, known, meetsRoom [3]bool
	best := [3]time.Duration{math.MaxInt64, math.MaxInt64, math.MaxInt64}
	if deadlined {
		for i := range eligible {
			c := &eligible[i]
			p := &pools[c.Index]
			ef := candidateFree(c, p)
			ok, k, pr := sy.meets(req, p, ef, 0, env)
			known[c.Tier] = known[c.Tier] || k
			meetsAny[c.Tier] = meetsAny[c.Tier] || (ok && c.Headroom > 0)
			meetsRoom[c.Tier] = meetsRoom[c.Tier] || (ok && k && ef > 0)
			if k && c.Headroom > 0 {
				best[c.Tier] = min(best[c.Tier], pr.done)
			}
		}
	}
	// farMisses: every farther tier with pools is known to miss the call's
	// deadline: none has a pool predicted to meet it, nor one with too few
	// samples to predict (those are taken on trust).
	farMisses := func(t Tier) bool {
		some := false
		for f := t + 1; f <= TierAnywhere; f++ {
			if tiers[f].Count == 0 {
				continue
			}
			if meetsAny[f] {
				return false
			}
			some = true
		}
		return some
	}

	// Progressive spill (Envoy's priority load with overprovisioning): a tier
	// keeps all its traffic while its free share is above reserve + band,
	// none at or under the reserve, and a linearly shrinking share in
	// between; the rest goes to farther tiers first. Batch has the largest
	// reserve, so it moves out first. The free share honours load reports,
	// so a region whose pools lost chips spills even while their in-flight
	// counts look low. A call the tier is predicted to finish within its
	// deadline does not spill to farther tiers all predicted to miss it
	// (a long call would trade a near slot for a certain timeout).
	var spilled [3]bool
	anySpilled := false
	for t := range TierAnywhere {
		ts := tiers[t]
		if ts.Count == 0 || ts.Limit <= 0 {
			continue
		}
		f := float64(ts.Free) / float64(ts.Limit)
		keep := 1.0
		if band := env.SpillBand; band > 0 {
			keep = math.Min(1, math.Max(0, (f-reserve)/band))
		} else if f <= reserve {
			keep = 0
		}
		if keep < 1 && env.Rand() >= keep {
			if deadlined && meetsRoom[t] && farMisses(t) {
				for i := 0; req.Explain && i < len(eligible); i++ {
					if eligible[i].Tier == t {
						eligible[i].Reason += fmt.Sprintf("; tier free %d/%d near the %s reserve %.0f%%: kept, every farther tier is predicted to miss the deadline", ts.Free, ts.Limit, prio, reserve*100)
					}
				}
				continue
			}
			spilled[t], anySpilled = true, true
			for i := 0; req.Explain && i < len(eligible); i++ {
				if eligible[i].Tier == t {
					eligible[i].Reason += fmt.Sprintf("; tier free %d/%d near the %s reserve %.0f%%: this call spilled behind farther tiers (tier keeps %.0f%% of calls)", ts.Free, ts.Limit, prio, reserve*100, keep*100)
				}
			}
		}
	}
	// Deadline: a kept tier none of whose pools would meet the call's
	// deadline spills behind a farther tier that has one that would.
	// A tier predicted to miss also spills behind a farther one whose best
	// pool would finish within the deadline and clearly sooner (by 10 %):
	// a long call then leaves a region whose batches are full for one where
	// it decodes faster, even when neither has the margin.
	if deadlined {
		for t := range TierAnywhere {
			if spilled[t] || tiers[t].Count == 0 || meetsAny[t] || !known[t] {
				continue
			}
			for f := t + 1; f <= TierAnywhere; f++ {
				sooner := req.Deadline > 0 && best[f] <= req.Deadline && float64(best[f]) < 0.9*float64(best[t])
				if tiers[f].Count > 0 && (meetsAny[f] || sooner) && !spilled[f] {
					spilled[t], anySpilled = true, true
					for i := 0; req.Explain && i < len(eligible); i++ {
						if eligible[i].Tier == t {
							eligible[i].Reason += fmt.Sprintf("; no pool of this tier is predicted to finish within the deadline (%s): spilled behind the %s tier", req.Deadline.Round(time.Millisecond), f)
						}
					}
					break
				}
			}
		}
	}
	// Visiting order: kept tiers nearest first, then spilled ones.
	var group, groups [3]int // tier -> group, group -> tier
	n := 0
	for _, sp := range [2]bool{false, true} {
		for t := range 3 {
			if tiers[t].Count > 0 && spilled[t] == sp {
				group[t], groups[n] = n, t
				n++
			}
		}
	}
	if anySpilled || !d.Grouped() {
		// Dutch-flag partition by group, in place.
		lo, mid, hi := 0, 0, len(eligible)-1
		for mid <= hi {
			switch group[eligible[mid].Tier] {
			case 0:
				eligible[lo], eligible[mid] = eligible[mid], eligible[lo]
				lo++
				mid++
			case 1:
				mid++
			default:
				eligible[mid], eligible[hi] = eligible[hi], eligible[mid]
				hi--
			}
		}
	}
	at := 0
	for g := range n {
		end := at + tiers[groups[g]].Count
		d.AddSegment(Segment{Start: at, End: end, Draw: true, Lazy: !req.Explain})
		at = end
	}
}

var _ Scorer = (*Switchyard)(nil)

// Score implements Scorer: score = weight × free fraction × nearness ×
// preference × cost factor, for eligible[start:end]; a pool predicted to
// miss the deadline keeps a five-hundredth of it, and every pool the share
// of it that its predicted TTFT is of the fastest one's; the prefix-affine pool, within
// the load bound, is taken first.
func (sy *Switchyard) Score(req *Request, pools []PoolView, eligible []Candidate, start, end int, env *Env) {
	sy.score(req, pools, eligible, start, end, env)
	if len(req.Prefix) > 0 && end-start > 1 {
		// Per tier: a segment is one tier, except when reasons are asked
		// for and every tier is scored at once.
		for t := TierRegion; t <= TierAnywhere; t++ {
			sy.affinity(req, pools, eligible[start:end], t, env)
		}
	}
}

// missFactor scales the score of a pool predicted to miss the deadline: low
// enough that a pool which meets it is drawn first even with a seventh of
// the room (a fuller pool that decodes faster), still above zero since the
// prediction is an average.
const missFactor = 0.002

// slackFull and slackFloor shape slackFactor.
const (
	slackFull  = 0.5 // predicted completion within this share of the deadline: full score
	slackFloor = 0.1 // the least a pool that meets the deadline keeps
)

// slackFactor scales the score of a pool predicted to meet the deadline by
// the slack it leaves: 1 while the predicted completion is within half the
// deadline, falling linearly to slackFloor at the margin (deadlineMargin)
// where the pool counts as missing it. Short calls, which finish far
// inside any deadline, are untouched; a long call prefers the pools where
// it decodes fastest, since a pool that meets the deadline only narrowly
// misses it when its batch grows after the call joins or the host stalls.
func slackFactor(done, deadline time.Duration) float64 {
	r := float64(done) / float64(deadline)
	if r <= slackFull {
		return 1
	}
	return math.Max(slackFloor, (deadlineMargin-r)/(deadlineMargin-slackFull))
}

// affinity gives the segment's prefix-affine pool a score that the weighted
// draw takes first, when it is within the load bound.
func (sy *Switchyard) affinity(req *Request, pools []PoolView, seg []Candidate, tier Tier, env *Env) {
	// The tier's load after this call, for the bound.
	var busy, limit float64
	for i := range seg {
		if seg[i].Tier != tier {
			continue
		}
		p := &pools[seg[i].Index]
		busy += float64(p.Limit) * (1 - candidateFree(&seg[i], p))
		limit += float64(p.Limit)
	}
	if limit <= 0 {
		return
	}
	// A pool may take the call while its busy slots after it stay within
	// ⌈1.25 × its share of the tier's load after the call⌉, or within
	// PrefixLoadFloor of its limit (at low load the bound's integer
	// granularity would scatter a prefix over idle pools for nothing).
	// It must also have headroom, and not be predicted to miss the call's
	// deadline even with the share of the prompt it holds already cached.
	within := func(c *Candidate, matched int) bool {
		if c.Tier != tier {
			return false
		}
		p := &pools[c.Index]
		ef := candidateFree(c, p)
		allowed := math.Max(math.Ceil(PrefixLoadBound*(busy+1)*float64(p.Limit)/limit-1e-9), math.Floor(PrefixLoadFloor*float64(p.Limit)))
		if ef <= 0 || c.Score <= 0 || float64(p.Limit)*(1-ef)+1 > allowed+1e-9 {
			return false
		}
		cached := 0.0 // a client's session key says nothing of how much is cached
		if !req.PrefixKeyed {
			cached = float64(matched) / float64(len(req.Prefix))
		}
		ok, _, _ := sy.meets(req, p, ef, cached, env)
		return ok
	}
	best, bestMatch := -1, 0
	for i := range seg {
		c := &seg[i]
		if c.Tier != tier {
			continue
		}
		m := sy.prefix.Matched(req.Prefix, pools[c.Index].Name)
		if m > bestMatch && within(c, m) {
			best, bestMatch = i, m
		}
	}
	how := "holds"
	key := req.Prefix[min(1, len(req.Prefix)-1)]
	if best < 0 && (req.PrefixKeyed || sy.prefix.Known(key)) {
		// A shared prefix (or session) with no remembered pool within the
		// bound: rendezvous hashing on the first two blocks, so calls
		// sharing them meet on one pool. A prefix never seen before is
		// likely unique: the weighted draw places it.
		var top uint64
		for i := range seg {
			c := &seg[i]
			if h := rendezvous(key, pools[c.Index].Name); within(c, 0) && (best < 0 || h > top) {
				best, top = i, h
			}
		}
		how = "hashes to"
	}
	if best < 0 {
		return
	}
	c := &seg[best]
	c.Score *= affinityBoost
	if req.Explain {
		if how == "holds" {
			c.Reason += fmt.Sprintf("; prefix affinity: remembered to hold %d of the prompt's %d leading blocks, load within %.2f× the tier's mean: taken first", bestMatch, len(req.Prefix), PrefixLoadBound)
		} else {
			c.Reason += fmt.Sprintf("; prefix affinity: the prompt's first blocks hash to this pool (no pool remembered), load within %.2f× the tier's mean: taken first", PrefixLoadBound)
		}
	}
}

// affinityBoost makes the weighted draw take the affine pool first (the
// others' scores are at most a few units).
const affinityBoost = 1e12

// rendezvous is the highest-random-weight hash of key and pool.
func rendezvous(key uint64, pool string) uint64 {
	h := key ^ 0x9e3779b97f4a7c15
	for i := 0; i < len(pool); i++ {
		h ^= uint64(pool[i])
		h *= 0x100000001b3
	}
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func (sy *Switchyard) score(req *Request, pools []PoolView, eligible []Candidate, start, end int, env *Env) {
	minCost, maxCost := costRange(pools, eligible, env)
	budget := math.Max(env.LatencyBudgetMillis, 1)
	tgt := target(req, env)
	var rtt RTTMemo
	// The fastest predicted TTFT per tier, for the TTFT factor applied
	// once every candidate's (Candidate.TTFT) is known.
	fastest := [3]time.Duration{math.MaxInt64, math.MaxInt64, math.MaxInt64} // per tier (a segment is one tier unless reasons score all)
	for i := start; i < end; i++ {
		c := &eligible[i]
		p := &pools[c.Index]
		c.RTTMs = rtt.RTT(env, req.CallerRegion, p.Region)
		near := 1.0
		if c.Tier != TierRegion && req.CallerRegion != "" {
			near = 1 / (1 + c.RTTMs/budget)
		}
		pref := 1.0
		if req.PreferredCloud != "" && p.Cloud == req.PreferredCloud {
			pref *= 2
		}
		if req.PreferredAccelerator != "" && p.Accelerator == req.PreferredAccelerator {
			pref *= 2
		}
		costF := 1.0
		if env.CostWeight > 0 && maxCost > minCost && (req.CallerRegion == "" || c.RTTMs <= env.LatencyBudgetMillis) {
			costF = math.Max(0.05, 1-env.CostWeight*(p.CostPerMillion-minCost)/(maxCost-minCost))
		}
		// The free fraction honours the backend's load report.
		ef := float64(c.Headroom) / float64(p.Limit) // eligible pools have a positive limit
		if p.Reported != nil {
			ef = p.EffectiveFree()
		}
		c.Score = p.Weight * ef * near * pref * costF
		pr := sy.predict(req, p, ef, 0)
		ok, known := judge(req, pr, tgt)
		if !ok {
			c.Score *= missFactor
		} else if known && req.Deadline > 0 {
			c.Score *= slackFactor(pr.done, req.Deadline)
		}
		if pr.ok && pr.ttft > 0 {
			c.TTFT = pr.ttft
			fastest[c.Tier] = min(fastest[c.Tier], c.TTFT)
		}
		if req.Explain {
			c.Reason = fmt.Sprintf("tier %s; headroom %d/%d; weight %g; score %.3f (order inside a tier is a weighted random draw on score)", c.Tier, c.Headroom, p.Limit, p.Weight, c.Score)
			if r := p.Reported; r != nil {
				c.Reason += fmt.Sprintf("; backend reports %d running, %d queued, capacity %d", r.Running, r.Queued, r.Capacity)
			}
			if known {
				verdict := "meets"
				if !ok {
					verdict = "would miss"
				}
				what := "the priority's latency targets"
				if req.Deadline > 0 {
					what = "the deadline " + req.Deadline.Round(time.Millisecond).String()
				}
				c.Reason += fmt.Sprintf("; predicted TTFT %s, %s per token, completion %s: %s %s", pr.ttft.Round(time.Millisecond), pr.tpot.Round(time.Microsecond), pr.done.Round(time.Millisecond), verdict, what)
			}
		}
	}
	// Time to first token: a pool keeps the share of its score that the
	// tier's fastest predicted TTFT is of its own, so a long prompt goes
	// where it prefills soonest (prefill rates differ by 6× across
	// accelerators) and short ones, whose TTFTs are alike, barely move.
	for i := start; i < end; i++ {
		c := &eligible[i]
		tt := c.TTFT
		if tt <= 0 || tt == fastest[c.Tier] {
			continue
		}
		f := ttftFactor(fastest[c.Tier], tt)
		c.Score *= f
		if req.Explain {
			c.Reason += fmt.Sprintf("; predicted TTFT %s against the tier's fastest %s: score ×%.2f", tt.Round(time.Millisecond), fastest[c.Tier].Round(time.Millisecond), f)
		}
	}
}

// ttftFactor is the share of its score a pool keeps for a predicted TTFT
// of tt when the fastest pool in the segment is predicted at fastest:
// fastest/tt.
func ttftFactor(fastest, tt time.Duration) float64 {
	return float64(fastest) / float64(tt)
}

func costRange(pools []PoolView, eligible []Candidate, env *Env) (lo, hi float64) {
	if env.CostWeight == 0 {
		return 0, 0
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, c := range eligible {
		v := pools[c.Index].CostPerMillion
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	return lo, hi
}
