package policy

import (
	"slices"
	"sync/atomic"
)

// The baseline policies other gateways ship, kept so a load test can compare
// them with the default on the same traffic. They obey the same hard rules
// (eligibility) but ignore affinity, weights, reserves and cost.

// RoundRobin rotates through the eligible pools.
type RoundRobin struct{ next atomic.Uint64 }

var _ Policy = (*RoundRobin)(nil)

func (*RoundRobin) Name() string { return "round_robin" }

func (r *RoundRobin) Rank(req *Request, _ []PoolView, eligible []Candidate, _ *Env) {
	n := len(eligible)
	if n == 0 {
		return
	}
	start := int(r.next.Add(1) % uint64(n))
	// Rotate left by start, in place.
	slices.Reverse(eligible[:start])
	slices.Reverse(eligible[start:])
	slices.Reverse(eligible)
	for i := 0; req.Explain && i < n; i++ {
		eligible[i].Reason = "round_robin: rotation"
	}
}

// Random orders eligible pools uniformly at random.
type Random struct{}

var _ Policy = Random{}

func (Random) Name() string { return "random" }

func (Random) Rank(req *Request, _ []PoolView, eligible []Candidate, env *Env) {
	for i := len(eligible) - 1; i > 0; i-- {
		j := int(env.Rand() * float64(i+1))
		eligible[i], eligible[j] = eligible[j], eligible[i]
	}
	for i := 0; req.Explain && i < len(eligible); i++ {
		eligible[i].Reason = "random"
	}
}

// LeastRequest is power of two choices: of two random eligible pools, the one
// with fewer requests in flight goes first; the rest follow by in-flight count.
type LeastRequest struct{}

var _ Policy = LeastRequest{}

func (LeastRequest) Name() string { return "least_request" }

func (LeastRequest) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) {
	n := len(eligible)
	if n == 0 {
		return
	}
	if n >= 2 {
		a := int(env.Rand() * float64(n))
		b := int(env.Rand() * float64(n-1))
		if b >= a {
			b++
		}
		if pools[eligible[b].Index].InFlight < pools[eligible[a].Index].InFlight {
			a = b
		}
		eligible[0], eligible[a] = eligible[a], eligible[0]
	}
	rest := eligible[1:]
	slices.SortStableFunc(rest, func(x, y Candidate) int { return pools[x.Index].InFlight - pools[y.Index].InFlight })
	if req.Explain {
		eligible[0].Reason = "least_request: fewer in flight of two random choices"
		for i := range rest {
			rest[i].Reason = "least_request: fallback by in-flight count"
		}
	}
}
