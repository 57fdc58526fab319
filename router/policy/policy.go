// Package policy ranks the pools a request may go to. Eligibility (model
// served, residency, drained, ejected, unhealthy) is a hard filter shared by
// every policy; policies only order the eligible pools. The router then walks
// the ranking, taking capacity in the first pool that has it.
//
// Policies are registered by name in a Registry (never from init()), and the
// active one can be switched at run time.
package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
	"unsafe"

	"github.com/switchyard-dev/switchyard/internal/geo"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/internal/registry"
)

// Request is what a policy knows of a call.
type Request struct {
	Model                string
	Priority             priority.Class
	CallerRegion         string
	Residency            string // "", "eu", "us", ...
	PreferredCloud       string
	PreferredAccelerator string
	// Prefix holds the prompt's prefix keys (prefix.go): the chained keys of
	// its leading blocks, or the one key of an explicit prefix (session) key.
	// Empty for prompts shorter than a block. Policies must not modify it.
	Prefix []uint64
	// PrefixKeyed: Prefix is the one key of the client's explicit prefix key.
	PrefixKeyed bool
	// InputTokens is the router's estimate of the prompt; MaxTokens the
	// most the call may generate.
	InputTokens, MaxTokens int
	// Deadline is the time the call has left when it is ranked (0: no deadline).
	Deadline time.Duration
	// Explain asks policies for human-readable reasons (ExplainRoute, logs);
	// off on the hot path, where reasons would cost allocations.
	Explain bool
}

// PoolView is a snapshot of one pool taken for one decision.
//
// Field order is deliberate: what every decision reads for every pool comes
// first, so a fleet's views are read in fewer cache lines (BenchmarkDecide).
type PoolView struct {
	Name      string
	Region    string
	Geography string
	Models    []string
	// Limit is the effective max concurrent requests (override applied).
	Limit    int
	InFlight int
	Weight   float64
	// Reported is the backend's own load report when a fresh one exists:
	// sequences running and queued, and how many it can run at once now.
	Reported  *Reported
	Drained   bool
	Ejected   bool
	Unhealthy bool

	Cloud       string
	Accelerator string
	// CostPerMillion in USD per 1M tokens.
	CostPerMillion float64
}

// Reported is a backend's fresh load report (see backends.Load).
type Reported struct{ Running, Queued, Capacity int }

// EffectiveFree is the share of the pool's limit the policy may still use:
// with a load report, a pool that can run fewer sequences than its limit
// (it lost chips) or holds a queue has less room than its in-flight count
// says.
func (p *PoolView) EffectiveFree() float64 {
	if p.Limit <= 0 {
		return 0
	}
	free := float64(p.Headroom())
	if r := p.Reported; r != nil {
		busy := max(p.InFlight, r.Running+r.Queued)
		free = math.Min(free, float64(min(p.Limit, r.Capacity)-busy))
	}
	return math.Max(0, free) / float64(p.Limit)
}

// Headroom is how many more requests the pool can take now (never negative).
func (p *PoolView) Headroom() int { return max(0, p.Limit-p.InFlight) }

// EffectiveLimit is how many calls the pool can run at once as far as the
// router knows: its limit (configured, or an operator's override), or the
// capacity its backend's fresh load report gives when that is smaller (it
// lost chips, or it is full). Operators see this figure (Admin, console,
// metrics); admission counts against Limit.
func (p *PoolView) EffectiveLimit() int {
	if r := p.Reported; r != nil && r.Capacity < p.Limit {
		return max(r.Capacity, 0)
	}
	return p.Limit
}

// EffectiveHeadroom is EffectiveLimit less what is busy: the calls in
// flight, or the backend's running and queued calls when it reports more.
func (p *PoolView) EffectiveHeadroom() int {
	busy := p.InFlight
	if r := p.Reported; r != nil {
		busy = max(busy, r.Running+r.Queued)
	}
	return max(0, p.EffectiveLimit()-busy)
}

// Serves reports whether the pool serves model.
func (p *PoolView) Serves(model string) bool {
	for _, m := range p.Models {
		if eq(m, model) {
			return true
		}
	}
	return false
}

// eq is a == b, comparing the strings' addresses before their bytes: the
// router hands policies the fleet config's own strings (one per name), so
// on the hot path equal strings are usually the same string.
func eq(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// Tier is a pool's distance class from the caller.
type Tier uint8

const (
	TierRegion    Tier = iota // same region as the caller
	TierGeography             // same geography
	TierAnywhere              // anywhere the request may go
)

func (t Tier) String() string {
	switch t {
	case TierRegion:
		return "region"
	case TierGeography:
		return "geography"
	default:
		return "anywhere"
	}
}

// SkipReason says why a pool is not eligible (SkipNone: it is).
type SkipReason uint8

const (
	SkipNone         SkipReason = iota
	SkipModel                   // does not serve the model
	SkipResidency               // outside the request's residency
	SkipDrained                 // drained by an operator
	SkipEjected                 // ejected after failures
	SkipUnhealthy               // failing active health checks
	SkipZeroCapacity            // an override set its capacity to zero
)

// Candidate is one pool's place in a decision.
type Candidate struct {
	// Index into the pools slice given to Rank.
	Index    int
	Headroom int
	Weight   float64
	Score    float64
	// RTTMs is the caller's estimated round trip to the pool; set by
	// policies that use it (the default policy), 0 otherwise.
	RTTMs float64
	// TTFT is the pool's predicted time to first token for the call; set by
	// policies that predict it (the default policy), 0 otherwise or while
	// the pool has too few samples.
	TTFT time.Duration
	Pool string
	// Reason explains the rank or why the pool was skipped; filled only when
	// the request asks for reasons (Request.Explain).
	Reason   string
	Tier     Tier
	Eligible bool
	// Skip is why a skipped pool was skipped.
	Skip SkipReason
}

// Describe renders why a skipped candidate was skipped.
func (c *Candidate) Describe(req *Request) string {
	if c.Reason != "" {
		return c.Reason
	}
	return c.Skip.describe(req, "", "")
}

func (s SkipReason) describe(req *Request, geography, region string) string {
	switch s {
	case SkipModel:
		return fmt.Sprintf("does not serve model %q", req.Model)
	case SkipResidency:
		if geography == "" {
			return fmt.Sprintf("residency %q: pool is outside it", req.Residency)
		}
		return fmt.Sprintf("residency %q: pool is in %s (%s)", req.Residency, geography, region)
	case SkipDrained:
		return "drained by an operator"
	case SkipEjected:
		return "ejected after failures (outlier detection)"
	case SkipUnhealthy:
		return "failing active health checks"
	case SkipZeroCapacity:
		return "capacity is zero (override)"
	}
	return ""
}

// Segment is a stretch [Start, End) of a ranking. In a Draw segment the
// order is a weighted random draw on Candidate.Score (pools with a positive
// score first, each next one drawn with probability proportional to its
// score; then the rest by headroom); otherwise the segment is already in
// order.
type Segment struct {
	Start, End int
	Draw       bool
	// Lazy: the policy (a Scorer) scores the segment's candidates only when
	// the router first reaches it.
	Lazy bool
}

// Decision is a ranking: Ranked in order of preference, Skipped with
// reasons. A decision made by DecideInto may still be lazy: walk it with
// Next (the router usually takes the first candidate and stops), or call All
// for the complete order.
type Decision struct {
	Policy  string
	Ranked  []Candidate
	Skipped []Candidate

	// Lazy ordering state.
	segs   []Segment
	seg    int // current segment
	next   int // Ranked[:next] are in final order
	rand   func() float64
	scorer Scorer
	req    *Request
	pools  []PoolView
	env    *Env
	// seen[i] == epoch: pool i is already in Ranked (permutation check).
	seen  []uint32
	epoch uint32
	// class[i] is pool i's skip reason << 2 | tier, for one decision.
	class   []uint8
	tiers   [3]TierStats
	grouped bool
}

// Next returns the next candidate in order of preference, or nil when none
// is left. It orders as it goes: a candidate is drawn only when asked for.
func (d *Decision) Next() *Candidate {
	for d.seg < len(d.segs) {
		sg := d.segs[d.seg]
		if d.next < sg.Start {
			d.next = sg.Start
		}
		if d.next >= sg.End {
			d.seg++
			continue
		}
		if sg.Lazy {
			d.segs[d.seg].Lazy = false
			if d.scorer != nil {
				d.scorer.Score(d.req, d.pools, d.Ranked, sg.Start, sg.End, d.env)
			}
		}
		if sg.Draw {
			drawNext(d.Ranked[d.next:sg.End], d.rand)
		}
		d.next++
		return &d.Ranked[d.next-1]
	}
	return nil
}

// Reset rewinds Next to the first candidate; the order drawn so far stays.
func (d *Decision) Reset() { d.seg, d.next = 0, 0 }

// All completes the order and returns Ranked.
func (d *Decision) All() []Candidate {
	for d.Next() != nil {
	}
	d.Reset()
	return d.Ranked
}

// drawNext moves the candidate to take next to rest[0]: among positive
// scores, one drawn with probability proportional to its score (the whole
// order is then the weighted random permutation Efraimidis–Spirakis keys
// give, at a cost paid only for the positions the router reaches); with none
// left, the one with the most headroom.
func drawNext(rest []Candidate, rnd func() float64) {
	if len(rest) < 2 {
		return
	}
	total := 0.0
	for i := range rest {
		if s := rest[i].Score; s > 0 {
			total += s
		}
	}
	pick := 0
	if total > 0 {
		u := rnd() * total
		for i := range rest {
			if s := rest[i].Score; s > 0 {
				pick = i
				if u < s {
					break
				}
				u -= s
			}
		}
	} else {
		best := -1
		for i := range rest {
			if rest[i].Headroom > best {
				best, pick = rest[i].Headroom, i
			}
		}
	}
	if pick > 0 {
		rest[0], rest[pick] = rest[pick], rest[0]
	}
}

// Env is what policies may consult besides the pools. Read-only, shared.
type Env struct {
	Latency *geo.Table
	// Reserve per priority: fraction of a tier's capacity kept back before
	// that priority spills to the next tier.
	Reserve map[priority.Class]float64
	// SpillBand is the width of free share over which a tier's traffic
	// progressively spills above its reserve (0: spill all at once at the reserve).
	SpillBand float64
	// CostWeight in [0,1] and the latency budget inside which cost counts.
	CostWeight          float64
	LatencyBudgetMillis float64
	// Rand returns a float in [0,1); must be safe for concurrent use.
	Rand func() float64
	// Targets per priority: the TTFT and TPOT a call of that priority should
	// see (zero: none).
	Targets map[priority.Class]Target
}

// Target is a latency target (zero fields: none).
type Target struct{ TTFT, TPOT time.Duration }

// Policy orders eligible pools.
//
// Rank reorders eligible in place into the policy's order of preference: it
// must not add, drop or duplicate candidates (Decide checks, and falls back to
// the eligible order when a policy breaks this). It must not block, must be
// safe for concurrent use, and must not keep references to pools or eligible
// after returning. It may set Score and Reason on candidates.
// router/policy/policytest is the contract suite every policy runs.
type Policy interface {
	Name() string
	Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env)
}

// Segmenter is implemented by policies that can order lazily: Segments
// reorders eligible in place like Rank and returns segments covering it in
// order, some of them to be ordered by a weighted draw only when the router
// gets that far (it usually takes the first candidate). Appending to segs
// (its capacity is reused across calls) keeps a decision free of
// allocations. The rules of Rank apply.
type Segmenter interface {
	Segments(d *Decision, req *Request, pools []PoolView, env *Env)
}

// TierStats sums the eligible pools of one tier: how many, their limits,
// and their free capacity (headroom, or less where a load report says so:
// PoolView.EffectiveFree).
type TierStats struct{ Count, Limit, Free int }

// Tiers returns the eligible pools' sums per tier.
func (d *Decision) Tiers() [3]TierStats { return d.tiers }

// Grouped reports whether Ranked holds the candidates grouped by tier, in
// tier order (DecideInto hands a Segmenter them so).
func (d *Decision) Grouped() bool { return d.grouped }

// AddSegment appends the next segment of the order (Segmenter).
func (d *Decision) AddSegment(s Segment) { d.segs = append(d.segs, s) }

// Scorer is implemented by Segmenter policies that return Lazy segments:
// Score sets Score (and Reason) on eligible[start:end], the candidates of
// one segment, when the router first reaches it. eligible is the whole
// ranking (a score may depend on the other candidates). The rules of Rank
// apply.
type Scorer interface {
	Score(req *Request, pools []PoolView, eligible []Candidate, start, end int, env *Env)
}

// Feedback is implemented by policies that learn from outcomes (the way
// grpc-go's PickResult.Done and the inference extension's post-response
// hooks do). The router calls AttemptDone once per attempt, after its slot
// was released, on the call's goroutine. It must not block and must be safe
// for concurrent use.
type Feedback interface {
	AttemptDone(r AttemptResult)
}

// Outcome is how an attempt ended, as far as a policy cares.
type Outcome uint8

const (
	OutcomeOK       Outcome = iota
	OutcomeShortage         // the pool was full or over quota
	OutcomeFailure          // a real failure (unavailable, reset, attempt timeout)
	OutcomeNeutral          // the client's fault, or the client left: says nothing about the pool
)

// AttemptResult is one attempt's outcome on one pool.
type AttemptResult struct {
	Pool    string
	Outcome Outcome
	// Duration is how long the backend call took.
	Duration time.Duration
	// TTFT is the time to the backend's first chunk (0 for unary calls and
	// for attempts that got none).
	TTFT time.Duration
	// InputTokens, OutputTokens and CachedTokens are the attempt's usage
	// (cached: prompt tokens the backend took from its prefix cache).
	InputTokens, OutputTokens, CachedTokens int
	// Busy is the pool's share of its limit in use when the attempt began,
	// the attempt included.
	Busy float64
	// Prefix is the request's prefix keys (Request.Prefix); not to be modified.
	Prefix []uint64
}

// LimitAdvisor is implemented by policies that cap a pool's concurrency
// below its configured limit from what the pool reports about itself (it
// lost chips). The router takes the smaller of the two when it reserves a
// slot, so calls wait in the router's queue for the next free slot anywhere
// instead of in a shrunken pool's own queue. Must not block.
type LimitAdvisor interface {
	AdvisedLimit(p *PoolView) int
}

// Residencies are the residency values a request may carry.
var Residencies = []string{"", "eu", "us", "apac"}

// ValidResidency reports whether r is a known residency constraint.
func ValidResidency(r string) bool {
	for _, v := range Residencies {
		if v == r {
			return true
		}
	}
	return false
}

// Filter splits pools into eligible candidates and skipped ones with the
// hard rules every policy obeys.
func Filter(req *Request, pools []PoolView, env *Env) (eligible, skipped []Candidate) {
	var d Decision
	d.filter(req, pools, env, false)
	return d.Ranked, d.Skipped
}

// filter fills d.Ranked with the eligible candidates and d.Skipped with the
// rest, reusing their capacity. With byTier the eligible candidates come
// grouped by tier (caller's region, geography, anywhere; pool order inside a
// tier), so a tiered policy lays them out without moving any.
func (d *Decision) filter(req *Request, pools []PoolView, env *Env, byTier bool) {
	d.Ranked, d.Skipped = d.Ranked[:0], d.Skipped[:0]
	d.tiers, d.grouped = [3]TierStats{}, byTier
	callerGeo := ""
	if req.CallerRegion != "" {
		if env != nil && env.Latency != nil {
			callerGeo = env.Latency.Geography(req.CallerRegion)
		} else {
			callerGeo = geo.GeographyOf(req.CallerRegion)
		}
	}
	if cap(d.class) < len(pools) {
		d.class = make([]uint8, len(pools))
	}
	class := d.class[:len(pools)]
	var count [3]int
	for i := range pools {
		p := &pools[i]
		skip := SkipNone
		switch {
		case !p.Serves(req.Model):
			skip = SkipModel
		case req.Residency != "" && p.Geography != req.Residency:
			skip = SkipResidency
		case p.Drained:
			skip = SkipDrained
		case p.Ejected:
			skip = SkipEjected
		case p.Unhealthy:
			skip = SkipUnhealthy
		case p.Limit <= 0:
			skip = SkipZeroCapacity
		}
		tier := TierAnywhere
		if req.CallerRegion != "" {
			switch {
			case eq(p.Region, req.CallerRegion):
				tier = TierRegion
			case callerGeo != "" && eq(callerGeo, p.Geography):
				tier = TierGeography
			}
		}
		class[i] = uint8(skip)<<2 | uint8(tier)
		if skip == SkipNone {
			count[tier]++
			fr := p.Headroom()
			if p.Reported != nil {
				fr = int(p.EffectiveFree()*float64(p.Limit) + 0.5)
			}
			d.tiers[tier].Limit += p.Limit
			d.tiers[tier].Free += fr
		} else {
			d.Skipped = append(d.Skipped, Candidate{Index: i, Pool: p.Name, Headroom: p.Headroom(), Weight: p.Weight, Tier: tier, Skip: skip})
			if req.Explain {
				d.Skipped[len(d.Skipped)-1].Reason = skip.describe(req, p.Geography, p.Region)
			}
		}
	}
	for t := range d.tiers {
		d.tiers[t].Count = count[t]
	}
	n := count[0] + count[1] + count[2]
	if cap(d.Ranked) < n {
		d.Ranked = make([]Candidate, 0, n+n/4)
	}
	d.Ranked = d.Ranked[:n]
	// Each candidate is written once, in its place.
	at := [3]int{0, n, n}
	if byTier {
		at = [3]int{0, count[0], count[0] + count[1]}
	}
	next := 0
	for i, cl := range class {
		if cl>>2 != uint8(SkipNone) {
			continue
		}
		tier := Tier(cl & 3)
		j := next
		if byTier {
			j = at[tier]
			at[tier]++
		} else {
			next++
		}
		p := &pools[i]
		// Field by field: a composite literal would be copied in whole.
		c := &d.Ranked[j]
		c.Index, c.Headroom, c.Weight, c.Score, c.RTTMs, c.TTFT = i, p.Headroom(), p.Weight, 0, 0, 0
		c.Pool, c.Reason, c.Tier, c.Eligible, c.Skip = p.Name, "", tier, true, SkipNone
	}
}

// RTTMemo remembers the caller's round trip per pool region for one
// decision: a fleet has few regions, and a latency-table lookup hashes two
// strings. The zero value is ready; keep it on the stack.
type RTTMemo struct {
	n    int
	regs [16]string
	ms   [16]float64
}

// RTT returns env's round trip from caller to region (0 without a table).
func (m *RTTMemo) RTT(env *Env, caller, region string) float64 {
	if env == nil || env.Latency == nil || caller == "" {
		return 0
	}
	// Region strings of one fleet are usually the same string (the router
	// interns them): compare the pointers first, the bytes only on a miss.
	for i := 0; i < m.n; i++ {
		if len(m.regs[i]) == len(region) && unsafe.StringData(m.regs[i]) == unsafe.StringData(region) {
			return m.ms[i]
		}
	}
	for i := 0; i < m.n; i++ {
		if m.regs[i] == region {
			return m.ms[i]
		}
	}
	ms := env.Latency.RTTMillis(caller, region)
	if m.n < len(m.regs) {
		m.regs[m.n], m.ms[m.n] = region, ms
		m.n++
	}
	return ms
}

// Decide filters and ranks, and returns the complete order.
func Decide(pol Policy, req *Request, pools []PoolView, env *Env) Decision {
	var d Decision
	DecideInto(&d, pol, req, pools, env)
	d.All()
	return d
}

// DecideInto filters and ranks into d, reusing its buffers: with a Decision
// kept across calls and a Segmenter policy, a decision allocates nothing.
// The order may still be lazy: walk it with d.Next, or call d.All.
func DecideInto(d *Decision, pol Policy, req *Request, pools []PoolView, env *Env) {
	sg, lazy := pol.(Segmenter)
	d.filter(req, pools, env, lazy)
	d.Policy = pol.Name()
	d.seg, d.next = 0, 0
	d.rand = rand.Float64
	if env != nil && env.Rand != nil {
		d.rand = env.Rand
	}
	n := len(d.Ranked)
	d.scorer, d.req, d.pools, d.env = nil, req, pools, env
	if sc, ok := pol.(Scorer); ok {
		d.scorer = sc
	}
	d.segs = d.segs[:0]
	if lazy {
		sg.Segments(d, req, pools, env)
	} else {
		pol.Rank(req, pools, d.Ranked, env)
		d.segs = append(d.segs[:0], Segment{Start: 0, End: len(d.Ranked)})
	}
	if !d.valid(n, len(pools)) {
		// The policy broke its contract: rank nothing it made up, lose no pool.
		d.filter(req, pools, env, false)
		d.segs = append(d.segs[:0], Segment{Start: 0, End: len(d.Ranked)})
	}
	if req.Explain {
		for i := range d.Ranked {
			if d.Ranked[i].Reason == "" {
				d.Ranked[i].Reason = d.Policy
			}
		}
	}
}

// valid reports whether Ranked is still a permutation of the n eligible
// candidates and the segments cover it in order.
func (d *Decision) valid(n, pools int) bool {
	if len(d.Ranked) != n {
		return false
	}
	if cap(d.seen) < pools {
		d.seen = make([]uint32, pools)
	}
	seen := d.seen[:pools]
	d.epoch++
	if d.epoch == 0 { // wrapped: start the stamps over
		clear(d.seen[:cap(d.seen)])
		d.epoch = 1
	}
	for i := range d.Ranked {
		c := &d.Ranked[i]
		if c.Index < 0 || c.Index >= pools || seen[c.Index] == d.epoch || !c.Eligible {
			return false
		}
		seen[c.Index] = d.epoch
	}
	at := 0
	for _, sg := range d.segs {
		if sg.Start != at || sg.End < sg.Start {
			return false
		}
		at = sg.End
	}
	return at == n
}

// Registry holds policies by name. Safe for concurrent use.
type Registry struct {
	policies *registry.Registry[Policy]
}

// NewRegistry returns a registry with no policies.
func NewRegistry() *Registry { return &Registry{policies: registry.New[Policy]("policy:")} }

// Register adds p under p.Name(); a duplicate name panics (a wiring bug).
func (r *Registry) Register(p Policy) { r.policies.Register(p.Name(), p) }

// Get returns the named policy.
func (r *Registry) Get(name string) (Policy, error) {
	p, ok := r.policies.Get(name)
	if !ok {
		return nil, fmt.Errorf("unknown policy %q (known: %s)", name, strings.Join(r.Names(), ", "))
	}
	return p, nil
}

// Names lists the registered policies, sorted.
func (r *Registry) Names() []string { return r.policies.Names() }

// Builtins returns a registry with every built-in policy: switchyard (the
// default), round_robin, random, least_request, and the same-signal
// baselines gie and envoy_locality.
func Builtins() *Registry {
	r := NewRegistry()
	r.Register(&Switchyard{})
	r.Register(&RoundRobin{})
	r.Register(Random{})
	r.Register(LeastRequest{})
	r.Register(&GIE{})
	r.Register(EnvoyLocality{})
	return r
}
