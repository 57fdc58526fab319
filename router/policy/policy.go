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
	"sort"
	"strings"
	"sync"

	"github.com/switchyard-dev/switchyard/backends/geo"
	pb "github.com/switchyard-dev/switchyard/proto/switchyard/v1"
)

// Request is what a policy knows of a call.
type Request struct {
	Model                string
	Priority             pb.Priority
	CallerRegion         string
	Residency            string // "", "eu", "us", ...
	PreferredCloud       string
	PreferredAccelerator string
	// Explain asks policies for human-readable reasons (ExplainRoute, logs);
	// off on the hot path, where reasons would cost allocations.
	Explain bool
}

// PoolView is a snapshot of one pool taken for one decision.
type PoolView struct {
	Name        string
	Cloud       string
	Region      string
	Geography   string
	Accelerator string
	Models      []string
	// Limit is the effective max concurrent requests (override applied).
	Limit    int
	InFlight int
	Weight   float64
	// CostPerMillion in USD per 1M tokens.
	CostPerMillion float64
	Drained        bool
	Ejected        bool
	Unhealthy      bool
	// Reported is the backend's own load report when a fresh one exists:
	// sequences running and queued, and how many it can run at once now.
	Reported *Reported
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

// Serves reports whether the pool serves model.
func (p *PoolView) Serves(model string) bool {
	for _, m := range p.Models {
		if m == model {
			return true
		}
	}
	return false
}

// Tier is a pool's distance class from the caller.
type Tier int

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

// Candidate is one pool's place in a decision.
type Candidate struct {
	// Index into the pools slice given to Rank.
	Index    int
	Pool     string
	Eligible bool
	// Reason explains the rank or why the pool was skipped.
	Reason   string
	Tier     Tier
	Headroom int
	Weight   float64
	Score    float64
	RTTMs    float64
}

// Decision is a ranking: Ranked in order of preference, Skipped with reasons.
type Decision struct {
	Policy  string
	Ranked  []Candidate
	Skipped []Candidate
}

// Env is what policies may consult besides the pools. Read-only, shared.
type Env struct {
	Latency *geo.Table
	// Reserve per priority: fraction of a tier's capacity kept back before
	// that priority spills to the next tier.
	Reserve map[pb.Priority]float64
	// SpillBand is the width of free share over which a tier's traffic
	// progressively spills above its reserve (0: spill all at once at the reserve).
	SpillBand float64
	// CostWeight in [0,1] and the latency budget inside which cost counts.
	CostWeight          float64
	LatencyBudgetMillis float64
	// Rand returns a float in [0,1); must be safe for concurrent use.
	Rand func() float64
}

// Policy orders eligible pools.
//
// Rank must not block, must be safe for concurrent use, must not keep
// references to pools or eligible after returning, and must return a
// permutation of eligible (every eligible candidate exactly once).
type Policy interface {
	Name() string
	Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) []Candidate
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
	for i := range pools {
		p := &pools[i]
		c := Candidate{Index: i, Pool: p.Name, Headroom: p.Headroom(), Weight: p.Weight, Tier: tierOf(req, p, env)}
		if env != nil && env.Latency != nil && req.CallerRegion != "" {
			c.RTTMs = env.Latency.RTTMillis(req.CallerRegion, p.Region)
		}
		switch {
		case !p.Serves(req.Model):
			c.Reason = fmt.Sprintf("does not serve model %q", req.Model)
		case req.Residency != "" && p.Geography != req.Residency:
			c.Reason = fmt.Sprintf("residency %q: pool is in %s (%s)", req.Residency, p.Geography, p.Region)
		case p.Drained:
			c.Reason = "drained by an operator"
		case p.Ejected:
			c.Reason = "ejected after failures (outlier detection)"
		case p.Unhealthy:
			c.Reason = "failing active health checks"
		case p.Limit <= 0:
			c.Reason = "capacity is zero (override)"
		default:
			c.Eligible = true
			eligible = append(eligible, c)
			continue
		}
		skipped = append(skipped, c)
	}
	return eligible, skipped
}

func tierOf(req *Request, p *PoolView, env *Env) Tier {
	if req.CallerRegion == "" {
		return TierAnywhere
	}
	if p.Region == req.CallerRegion {
		return TierRegion
	}
	var callerGeo string
	if env != nil && env.Latency != nil {
		callerGeo = env.Latency.Geography(req.CallerRegion)
	} else {
		callerGeo = geo.GeographyOf(req.CallerRegion)
	}
	if callerGeo != "" && callerGeo == p.Geography {
		return TierGeography
	}
	return TierAnywhere
}

// Decide filters and ranks.
func Decide(pol Policy, req *Request, pools []PoolView, env *Env) Decision {
	eligible, skipped := Filter(req, pools, env)
	ranked := pol.Rank(req, pools, eligible, env)
	if req.Explain {
		for i := range ranked {
			if ranked[i].Reason == "" {
				ranked[i].Reason = pol.Name()
			}
		}
	}
	return Decision{Policy: pol.Name(), Ranked: ranked, Skipped: skipped}
}

// Registry holds policies by name. Safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	policies map[string]Policy
}

// NewRegistry returns a registry with no policies.
func NewRegistry() *Registry { return &Registry{policies: map[string]Policy{}} }

// Register adds p under p.Name(); a duplicate name panics (a wiring bug).
func (r *Registry) Register(p Policy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.policies[p.Name()]; dup {
		panic("policy: " + p.Name() + " registered twice")
	}
	r.policies[p.Name()] = p
}

// Get returns the named policy.
func (r *Registry) Get(name string) (Policy, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.policies[name]
	if !ok {
		names := make([]string, 0, len(r.policies))
		for n := range r.policies {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("unknown policy %q (known: %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}

// Builtins returns a registry with every built-in policy: switchyard (the
// default), round_robin, random and least_request.
func Builtins() *Registry {
	r := NewRegistry()
	r.Register(&Switchyard{})
	r.Register(&RoundRobin{})
	r.Register(Random{})
	r.Register(LeastRequest{})
	return r
}
