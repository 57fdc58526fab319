package policy

import (
	"fmt"
	"math"

	"github.com/switchyard-dev/switchyard/internal/priority"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
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
type Switchyard struct{}

var (
	_ Policy    = (*Switchyard)(nil)
	_ Segmenter = (*Switchyard)(nil)
)

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
	if prio == pb.Priority_PRIORITY_UNSPECIFIED {
		prio = pb.Priority_PRIORITY_STANDARD
	}
	reserve := env.Reserve[prio]
	if req.Explain {
		// Reasons carry the scores: score every tier now.
		sy.Score(req, pools, eligible, 0, len(eligible), env)
	}
	tiers := d.Tiers()

	// Progressive spill (Envoy's priority load with overprovisioning): a tier
	// keeps all its traffic while its free share is above reserve + band,
	// none at or under the reserve, and a linearly shrinking share in
	// between; the rest goes to farther tiers first. Batch has the largest
	// reserve, so it moves out first. The free share honours load reports,
	// so a region whose pools lost chips spills even while their in-flight
	// counts look low.
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
			spilled[t], anySpilled = true, true
			for i := 0; req.Explain && i < len(eligible); i++ {
				if eligible[i].Tier == t {
					eligible[i].Reason += fmt.Sprintf("; tier free %d/%d near the %s reserve %.0f%%: this call spilled behind farther tiers (tier keeps %.0f%% of calls)", ts.Free, ts.Limit, priority.Name(prio), reserve*100, keep*100)
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
// preference × cost factor, for eligible[start:end].
func (*Switchyard) Score(req *Request, pools []PoolView, eligible []Candidate, start, end int, env *Env) {
	minCost, maxCost := costRange(pools, eligible, env)
	budget := math.Max(env.LatencyBudgetMillis, 1)
	var rtt RTTMemo
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
		if req.Explain {
			c.Reason = fmt.Sprintf("tier %s; headroom %d/%d; weight %g; score %.3f (order inside a tier is a weighted random draw on score)", c.Tier, c.Headroom, p.Limit, p.Weight, c.Score)
			if r := p.Reported; r != nil {
				c.Reason += fmt.Sprintf("; backend reports %d running, %d queued, capacity %d", r.Running, r.Queued, r.Capacity)
			}
		}
	}
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
