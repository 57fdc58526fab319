// Package policytest is the contract every routing policy passes: a policy
// only orders the eligible pools it is given (never ranks an ineligible one,
// never drops or duplicates one), whatever the fleet looks like, from many
// goroutines at once; a lazy policy (policy.Segmenter) gives a complete
// order through policy.Decide too. Run it from a test of the policy's
// package:
//
//	func TestContract(t *testing.T) {
//		policytest.Run(t, func() policy.Policy { return &MyPolicy{} })
//	}
package policytest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/geo"
	"github.com/switchyard-dev/switchyard/internal/priority"
	"github.com/switchyard-dev/switchyard/router/policy"
)

// Run runs the contract against policies made by newPolicy (one per subtest).
func Run(t *testing.T, newPolicy func() policy.Policy) {
	t.Helper()
	lat, err := geo.NewTable(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := func(seed uint64) *policy.Env {
		r := rand.New(rand.NewPCG(seed, seed+1))
		var mu sync.Mutex
		return &policy.Env{
			Latency:             lat,
			Reserve:             map[priority.Class]float64{priority.Interactive: 0.05, priority.Standard: 0.10, priority.Batch: 0.25},
			SpillBand:           0.3,
			CostWeight:          0.5,
			LatencyBudgetMillis: 60,
			Rand: func() float64 {
				mu.Lock()
				defer mu.Unlock()
				return r.Float64()
			},
		}
	}
	if newPolicy().Name() == "" {
		t.Fatal("Name() is empty: a policy is registered and chosen by its name")
	}

	t.Run("ranks a permutation of the eligible pools", func(t *testing.T) {
		pol, e := newPolicy(), env(1)
		for i := range 300 {
			pools := randomFleet(uint64(i))
			req := randomRequest(uint64(i))
			eligible, _ := policy.Filter(req, pools, e)
			ranked := slices.Clone(eligible)
			pol.Rank(req, pools, ranked, e)
			if err := samePools(eligible, ranked); err != nil {
				t.Fatalf("fleet %d, request %+v: Rank: %v", i, req, err)
			}
		}
	})

	t.Run("never ranks an ineligible pool", func(t *testing.T) {
		pol, e := newPolicy(), env(2)
		for i := range 300 {
			pools := randomFleet(uint64(i))
			req := randomRequest(uint64(i))
			d := policy.Decide(pol, req, pools, e)
			eligible, skipped := policy.Filter(req, pools, e)
			if err := samePools(eligible, d.Ranked); err != nil {
				t.Fatalf("fleet %d, request %+v: Decide: %v", i, req, err)
			}
			if len(d.Skipped) != len(skipped) {
				t.Fatalf("fleet %d: %d skipped, want %d", i, len(d.Skipped), len(skipped))
			}
			for _, c := range d.Ranked {
				p := pools[c.Index]
				if !p.Serves(req.Model) || p.Drained || p.Ejected || p.Unhealthy || p.Limit <= 0 || (req.Residency != "" && p.Geography != req.Residency) {
					t.Fatalf("fleet %d: ranked ineligible pool %s", i, p.Name)
				}
			}
		}
	})

	t.Run("no eligible pool", func(t *testing.T) {
		pol, e := newPolicy(), env(3)
		pools := randomFleet(7)
		d := policy.Decide(pol, &policy.Request{Model: "no-such-model", CallerRegion: "us-east-1"}, pools, e)
		if len(d.Ranked) != 0 {
			t.Fatalf("ranked %d pools for a model nobody serves", len(d.Ranked))
		}
		pol.Rank(&policy.Request{Model: "m"}, pools, nil, e)
	})

	t.Run("explains its order when asked", func(t *testing.T) {
		pol, e := newPolicy(), env(4)
		pools := randomFleet(11)
		req := &policy.Request{Model: "m", CallerRegion: "us-east-1", Explain: true}
		for _, c := range policy.Decide(pol, req, pools, e).Ranked {
			if c.Reason == "" {
				t.Fatalf("pool %s ranked without a reason on an explained request", c.Pool)
			}
		}
	})

	t.Run("safe for concurrent use", func(t *testing.T) {
		pol, e := newPolicy(), env(5)
		pools := randomFleet(13)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var d policy.Decision
				for i := range 200 {
					req := randomRequest(uint64(g*1000 + i))
					policy.DecideInto(&d, pol, req, pools, e)
					eligible, _ := policy.Filter(req, pools, e)
					if err := samePools(eligible, d.All()); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
}

// samePools reports how got differs from a permutation of want.
func samePools(want, got []policy.Candidate) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d candidates, want the %d eligible ones", len(got), len(want))
	}
	seen := map[int]bool{}
	for _, c := range want {
		seen[c.Index] = true
	}
	for _, c := range got {
		if !seen[c.Index] {
			return fmt.Errorf("pool %s (index %d) ranked twice or not eligible", c.Pool, c.Index)
		}
		delete(seen, c.Index)
	}
	return nil
}

var regions = []struct{ name, geo string }{
	{"us-east-1", "us"}, {"us-west-2", "us"}, {"us-central1", "us"}, {"eastus", "us"},
	{"westeurope", "eu"}, {"europe-west4", "eu"}, {"eu-west-1", "eu"}, {"asia-northeast1", "apac"},
}

// randomFleet is 1 to 40 pools in every state a pool can be in.
func randomFleet(seed uint64) []policy.PoolView {
	r := rand.New(rand.NewPCG(seed, 42))
	n := 1 + r.IntN(40)
	pools := make([]policy.PoolView, n)
	for i := range pools {
		reg := regions[r.IntN(len(regions))]
		limit := r.IntN(65)
		p := policy.PoolView{
			Name: fmt.Sprintf("p%d", i), Cloud: []string{"aws", "gcp", "azure"}[r.IntN(3)], Region: reg.name, Geography: reg.geo,
			Accelerator: []string{"h100", "trn2", "tpu-v6e"}[r.IntN(3)], Models: []string{"m"}, Limit: limit,
			InFlight: r.IntN(limit + 3), Weight: []float64{0, 0.5, 1, 3}[r.IntN(4)], CostPerMillion: r.Float64() * 3,
			Drained: r.IntN(8) == 0, Ejected: r.IntN(8) == 0, Unhealthy: r.IntN(8) == 0,
		}
		if r.IntN(6) == 0 {
			p.Models = []string{"other"}
		}
		if r.IntN(3) == 0 {
			p.Reported = &policy.Reported{Running: r.IntN(64), Queued: r.IntN(20), Capacity: r.IntN(70)}
		}
		pools[i] = p
	}
	return pools
}

func randomRequest(seed uint64) *policy.Request {
	r := rand.New(rand.NewPCG(seed, 7))
	req := &policy.Request{Model: "m", Priority: priority.All[r.IntN(priority.Classes)]}
	if r.IntN(4) > 0 {
		req.CallerRegion = regions[r.IntN(len(regions))].name
	}
	req.Residency = []string{"", "", "eu", "us"}[r.IntN(4)]
	if r.IntN(3) == 0 {
		req.PreferredCloud = "gcp"
	}
	return req
}
