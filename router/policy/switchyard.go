package policy

import (
	"fmt"
	"math"
	"sort"

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

var _ Policy = (*Switchyard)(nil)

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

// Rank implements Policy.
func (*Switchyard) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) []Candidate {
	if len(eligible) == 0 {
		return nil
	}
	prio := req.Priority
	if prio == pb.Priority_PRIORITY_UNSPECIFIED {
		prio = pb.Priority_PRIORITY_STANDARD
	}
	reserve := env.Reserve[prio]
	minCost, maxCost := costRange(pools, eligible, env)

	var tiers [3][]Candidate
	for _, c := range eligible {
		p := &pools[c.Index]
		near := 1.0
		if c.Tier != TierRegion && req.CallerRegion != "" {
			near = 1 / (1 + c.RTTMs/math.Max(env.LatencyBudgetMillis, 1))
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
		free := p.EffectiveFree()
		c.Score = p.Weight * free * near * pref * costF
		if req.Explain {
			c.Reason = fmt.Sprintf("tier %s; headroom %d/%d; weight %g; score %.3f (order inside a tier is a weighted random draw on score)", c.Tier, c.Headroom, p.Limit, p.Weight, c.Score)
			if r := p.Reported; r != nil {
				c.Reason += fmt.Sprintf("; backend reports %d running, %d queued, capacity %d", r.Running, r.Queued, r.Capacity)
			}
		}
		tiers[c.Tier] = append(tiers[c.Tier], c)
	}

	out := make([]Candidate, 0, len(eligible))
	var spilled []Candidate
	for t := range tiers {
		group := tiers[t]
		if len(group) == 0 {
			continue
		}
		orderTier(group, env)
		// The tier's free capacity honours load reports, so a region whose
		// pools lost chips spills even while their in-flight counts look low.
		limit, free := 0, 0
		for _, c := range group {
			p := &pools[c.Index]
			limit += p.Limit
			free += int(p.EffectiveFree()*float64(p.Limit) + 0.5)
		}
		if Tier(t) != TierAnywhere && limit > 0 {
			// Progressive spill (Envoy's priority load with overprovisioning):
			// a tier keeps all its traffic while its free share is above
			// reserve + band, none at or under the reserve, and a linearly
			// shrinking share in between; the rest goes to farther tiers
			// first. Batch has the largest reserve, so it moves out first.
			f := float64(free) / float64(limit)
			keep := 1.0
			if band := env.SpillBand; band > 0 {
				keep = math.Min(1, math.Max(0, (f-reserve)/band))
			} else if f <= reserve {
				keep = 0
			}
			if keep < 1 && env.Rand() >= keep {
				for i := 0; req.Explain && i < len(group); i++ {
					group[i].Reason += fmt.Sprintf("; tier free %d/%d near the %s reserve %.0f%%: this call spilled behind farther tiers (tier keeps %.0f%% of calls)", free, limit, priorityName(prio), reserve*100, keep*100)
				}
				spilled = append(spilled, group...)
				continue
			}
		}
		out = append(out, group...)
	}
	return append(out, spilled...)
}

// orderTier sorts a tier in place: a weighted random draw (Efraimidis–Spirakis
// keys u^(1/score)) among pools with a positive score, then the rest by headroom.
func orderTier(group []Candidate, env *Env) {
	keys := make([]float64, len(group))
	for i, c := range group {
		if c.Score > 0 {
			u := env.Rand()
			if u <= 0 {
				u = 1e-12
			}
			keys[i] = 1 + math.Pow(u, 1/c.Score) // > 1: always ahead of zero-score pools
		} else {
			keys[i] = float64(c.Headroom) / (1 + float64(c.Headroom)) // in [0,1)
		}
	}
	idx := make([]int, len(group))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] > keys[idx[b]] })
	sorted := make([]Candidate, len(group))
	for i, j := range idx {
		sorted[i] = group[j]
	}
	copy(group, sorted)
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

func priorityName(p pb.Priority) string {
	switch p {
	case pb.Priority_PRIORITY_INTERACTIVE:
		return "interactive"
	case pb.Priority_PRIORITY_BATCH:
		return "batch"
	default:
		return "standard"
	}
}
