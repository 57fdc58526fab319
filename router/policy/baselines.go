package policy

import (
	"sort"
	"sync/atomic"
)

// The baseline policies other gateways ship, kept so a load test can compare
// them with the default on the same traffic. They obey the same hard rules
// (eligibility) but ignore affinity, weights, reserves and cost.

// RoundRobin rotates through the eligible pools.
type RoundRobin struct{ next atomic.Uint64 }

var _ Policy = (*RoundRobin)(nil)

func (*RoundRobin) Name() string { return "round_robin" }

func (r *RoundRobin) Rank(req *Request, _ []PoolView, eligible []Candidate, _ *Env) []Candidate {
	n := len(eligible)
	if n == 0 {
		return nil
	}
	start := int(r.next.Add(1) % uint64(n))
	out := make([]Candidate, 0, n)
	out = append(out, eligible[start:]...)
	out = append(out, eligible[:start]...)
	for i := 0; req.Explain && i < len(out); i++ {
		out[i].Reason = "round_robin: rotation"
	}
	return out
}

// Random orders eligible pools uniformly at random.
type Random struct{}

var _ Policy = Random{}

func (Random) Name() string { return "random" }

func (Random) Rank(req *Request, _ []PoolView, eligible []Candidate, env *Env) []Candidate {
	out := append([]Candidate(nil), eligible...)
	for i := len(out) - 1; i > 0; i-- {
		j := int(env.Rand() * float64(i+1))
		out[i], out[j] = out[j], out[i]
	}
	for i := 0; req.Explain && i < len(out); i++ {
		out[i].Reason = "random"
	}
	return out
}

// LeastRequest is power of two choices: of two random eligible pools, the one
// with fewer requests in flight goes first; the rest follow by in-flight count.
type LeastRequest struct{}

var _ Policy = LeastRequest{}

func (LeastRequest) Name() string { return "least_request" }

func (LeastRequest) Rank(req *Request, pools []PoolView, eligible []Candidate, env *Env) []Candidate {
	out := append([]Candidate(nil), eligible...)
	n := len(out)
	if n == 0 {
		return out
	}
	inflight := func(c Candidate) int { return pools[c.Index].InFlight }
	if n >= 2 {
		a := int(env.Rand() * float64(n))
		b := int(env.Rand() * float64(n-1))
		if b >= a {
			b++
		}
		if inflight(out[b]) < inflight(out[a]) {
			a = b
		}
		out[0], out[a] = out[a], out[0]
	}
	rest := out[1:]
	sort.SliceStable(rest, func(i, j int) bool { return inflight(rest[i]) < inflight(rest[j]) })
	if req.Explain {
		out[0].Reason = "least_request: fewer in flight of two random choices"
		for i := range rest {
			rest[i].Reason = "least_request: fallback by in-flight count"
		}
	}
	return out
}
