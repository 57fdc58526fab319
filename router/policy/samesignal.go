package policy

import (
	"fmt"
	"math"
	"slices"

	"github.com/switchyard-dev/switchyard/internal/geo"
)

// Same-signal baselines: two policies modelled on what strong gateways do
// with the signals the default policy sees (load reports, in-flight counts,
// region tiers, prefix keys), so that comparisons with the default are fair
// and operators who want the familiar behaviour can pick it. Neither uses the
// default's limit advisor, spill reserves, weights or cost.

// GIE is the scorer of the Kubernetes Gateway API Inference Extension's
// endpoint picker (and llm-d's inference scheduler built on it), with the
// weights of its default scheduling profile: queue-scorer 1,
// kv-cache-utilization-scorer 1, prefix-cache-scorer 3, then the
// max-score-picker (ties broken at random). Sources:
// github.com/kubernetes-sigs/gateway-api-inference-extension,
// pkg/epp/scheduling/framework/plugins/scorer/queue.go and
// kvcache_utilization.go, .../plugins/multi/prefix/plugin.go (the
// approximate prefix-cache scorer) and .../plugins/picker/max_score_picker.go;
// the weights are those of the EndpointPickerConfig samples in its docs
// (queue-scorer 1, kv-cache-scorer 1, prefix-cache-scorer 3).
//
// Per pool, as the endpoint picker does per model server:
//   - queue: (max − queued) / (max − min) over the candidates (1 when all are
//     equal), queued from the pool's load report (vllm:num_requests_waiting's
//     counterpart; 0 without one);
//   - KV/utilisation: 1 − busy ÷ what the pool can run now (the report's
//     capacity when lower than its limit), the counterpart of
//     1 − vllm:kv_cache_usage_perc;
//   - prefix: the share of the request's prefix blocks the pool is remembered
//     to hold (an approximate index fed by the pools that served each prompt,
//     as the approximate prefix-cache scorer's LRU per server is);
//   - locality, weight 1: 1 in the caller's region, ½ in its geography, 0
//     elsewhere. The endpoint picker schedules inside one cluster, so this
//     term is the one addition, giving it the region signal the default has.
type GIE struct {
	index PrefixIndex
}

var (
	_ Policy   = (*GIE)(nil)
	_ Feedback = (*GIE)(nil)
)

// Weights of the inference extension's default profile (plus locality).
const (
	gieQueueWeight    = 1
	gieKVWeight       = 1
	giePrefixWeight   = 3
	gieLocalityWeight = 1
)

func (*GIE) Name() string { return "gie" }

// AttemptDone implements Feedback: a pool that served a prompt is
// remembered to hold its prefix blocks.
func (g *GIE) AttemptDone(r AttemptResult) {
	if r.Outcome == OutcomeOK {
		g.index.Record(r.Prefix, r.Pool)
	}
}

// Rank implements Policy: candidates by descending total score.
func (g *GIE) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) {
	if len(eligible) == 0 {
		return
	}
	minQ, maxQ := math.MaxInt, 0
	for _, c := range eligible {
		q := queued(&pools[c.Index])
		minQ, maxQ = min(minQ, q), max(maxQ, q)
	}
	for i := range eligible {
		c := &eligible[i]
		p := &pools[c.Index]
		q := queued(p)
		queue := 1.0
		if maxQ > minQ {
			queue = float64(maxQ-q) / float64(maxQ-minQ)
		}
		kv := 1 - busyShare(p)
		prefix := 0.0
		if len(req.Prefix) > 0 {
			prefix = float64(g.index.Matched(req.Prefix, p.Name)) / float64(len(req.Prefix))
		}
		loc := 0.0
		switch c.Tier {
		case TierRegion:
			loc = 1
		case TierGeography:
			loc = 0.5
		}
		if req.CallerRegion == "" {
			loc = 0
		}
		c.Score = gieQueueWeight*queue + gieKVWeight*kv + giePrefixWeight*prefix + gieLocalityWeight*loc
		if req.Explain {
			c.Reason = fmt.Sprintf("gie: score %.3f = queue %.2f + kv %.2f + 3×prefix %.2f + locality %.1f", c.Score, queue, kv, prefix, loc)
		}
	}
	// The max-score picker: the best first, ties at random; the rest follow
	// by score so the router can fall back.
	shuffle(eligible, env)
	slices.SortStableFunc(eligible, func(a, b Candidate) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return 0
	})
}

func shuffle(c []Candidate, env *Env) {
	for i := len(c) - 1; i > 0; i-- {
		j := int(env.Rand() * float64(i+1))
		c[i], c[j] = c[j], c[i]
	}
}

// queued is the pool's reported queue (0 without a report).
func queued(p *PoolView) int {
	if p.Reported == nil {
		return 0
	}
	return max(0, p.Reported.Queued)
}

// busyShare is the share of what the pool can run now that is in use, in [0, 1].
func busyShare(p *PoolView) float64 {
	limit, busy := p.Limit, p.InFlight
	if r := p.Reported; r != nil {
		limit = min(limit, r.Capacity)
		busy = max(busy, r.Running+r.Queued)
	}
	if limit <= 0 {
		return 1
	}
	return math.Min(1, float64(busy)/float64(limit))
}

// EnvoyLocality is Envoy's priority-level load balancing with its least
// request balancer inside a level. Sources: the Envoy docs, "Priority levels"
// and "Overprovisioning factor" (intro/arch_overview/upstream/load_balancing),
// and "Least request" (load_balancers.html#weighted-least-request);
// source/common/upstream/load_balancer_impl.cc (recalculatePerPriorityState).
//
//   - Priority levels are the region tiers: P0 the caller's region, P1 its
//     geography, P2 anywhere else.
//   - A level's health is its share of healthy capacity: a pool counts with
//     what it can run now (the load report's capacity, when lower than its
//     limit), a drained, ejected or unhealthy pool with nothing.
//   - Its health score is min(100, health% × 1.4), the overprovisioning
//     factor's default; P0 takes its score in percent of the calls, P1 the
//     next share up to its score, and so on; when the scores sum to less
//     than 100 the loads are scaled to 100 (Envoy's normalised degraded mode).
//   - Inside a level, weighted least request with active_request_bias 1:
//     each pool's weight is its size (limit) ÷ (in flight + 1), and the order
//     is a weighted random draw on those weights (Envoy's EDF scheduler picks
//     in the same proportions).
//
// Levels the draw did not pick follow in priority order, so the router can
// still fall back when the picked level is full.
type EnvoyLocality struct{}

var _ Policy = EnvoyLocality{}

// OverprovisioningFactor is Envoy's default, 140 %.
const OverprovisioningFactor = 1.4

func (EnvoyLocality) Name() string { return "envoy_locality" }

// Rank implements Policy.
func (EnvoyLocality) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) {
	if len(eligible) == 0 {
		return
	}
	// Health per level over every pool the request may use.
	var total, healthy [3]float64
	callerGeo := callerGeography(req, env)
	for i := range pools {
		p := &pools[i]
		if !p.Serves(req.Model) || (req.Residency != "" && p.Geography != req.Residency) {
			continue
		}
		t := tierOf(req, p, callerGeo)
		total[t] += float64(max(p.Limit, 0))
	}
	var present [3]bool
	for _, c := range eligible {
		p := &pools[c.Index]
		present[c.Tier] = true
		can := p.Limit
		if r := p.Reported; r != nil {
			can = min(can, max(r.Capacity, 0))
		}
		healthy[c.Tier] += float64(can)
	}
	var score [3]float64
	sum := 0.0
	for t := range 3 {
		if present[t] && total[t] > 0 {
			score[t] = math.Min(100, math.Round(100*healthy[t]/total[t]*OverprovisioningFactor))
			sum += score[t]
		}
	}
	var load [3]float64
	if sum > 0 {
		left := 100.0
		for t := range 3 {
			if sum < 100 {
				load[t] = 100 * score[t] / sum
			} else {
				load[t] = math.Min(left, score[t])
				left -= load[t]
			}
		}
	}
	// Draw the level, then lay out: the picked level, then the others in
	// priority order.
	pick := -1
	u := env.Rand() * 100
	for t := range 3 {
		if load[t] <= 0 {
			continue
		}
		if pick < 0 || u < load[t] {
			pick = t
			if u < load[t] {
				break
			}
		}
		u -= load[t]
	}
	rank := func(t Tier) int {
		if int(t) == pick {
			return -1
		}
		return int(t)
	}
	slices.SortStableFunc(eligible, func(a, b Candidate) int { return rank(a.Tier) - rank(b.Tier) })
	// Weighted least request inside each level.
	for i := range eligible {
		c := &eligible[i]
		p := &pools[c.Index]
		c.Score = float64(p.Limit) / float64(p.InFlight+1)
		if c.Headroom == 0 {
			c.Score = 0
		}
		if req.Explain {
			c.Reason = fmt.Sprintf("envoy_locality: priority P%d (load %.0f%%, health score %.0f); least request weight %d/(%d+1)", c.Tier, load[c.Tier], score[c.Tier], p.Limit, p.InFlight)
		}
	}
	for start := 0; start < len(eligible); {
		end := start
		for end < len(eligible) && eligible[end].Tier == eligible[start].Tier {
			end++
		}
		for k := start; k < end-1; k++ {
			drawNext(eligible[k:end], env.Rand)
		}
		start = end
	}
}

func callerGeography(req *Request, env *Env) string {
	if req.CallerRegion == "" {
		return ""
	}
	if env != nil && env.Latency != nil {
		return env.Latency.Geography(req.CallerRegion)
	}
	return geo.GeographyOf(req.CallerRegion)
}

// tierOf is p's tier for the request, as Filter computes it.
func tierOf(req *Request, p *PoolView, callerGeo string) Tier {
	switch {
	case req.CallerRegion == "":
		return TierAnywhere
	case eq(p.Region, req.CallerRegion):
		return TierRegion
	case callerGeo != "" && eq(callerGeo, p.Geography):
		return TierGeography
	}
	return TierAnywhere
}
